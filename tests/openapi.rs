//! The API reference: `/openapi.json` is a valid OpenAPI 3.1 document,
//! every route the router serves is in it and every documented route is
//! served, and the fields of real answers are all described.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};

use common::*;
use serde_json::{json, Value};

fn fetch_doc(server: &Server) -> Value {
    let (status, doc) = server.get_json("/openapi.json");
    assert_eq!(status, 200);
    doc
}

fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in ["get", "post", "put", "delete", "patch"] {
            if item.get(method).is_some() {
                ops.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    ops
}

#[test]
fn the_document_is_valid_openapi_3_1() {
    let server = Server::start(test_config(json!({})));
    let doc = fetch_doc(&server);
    assert_eq!(doc["openapi"], "3.1.0");
    let (ok, said) = validate(&doc);
    assert!(ok, "{said}");
    // A broken document is refused by the same check (it can fail).
    let mut broken = doc.clone();
    broken["paths"]["/v1/stats"]["get"]["responses"] = json!("nothing");
    assert!(!validate(&broken).0, "the validator accepted a broken document");
}

/// Runs openapi-spec-validator on `doc`: (valid, what it printed).
fn validate(doc: &Value) -> (bool, String) {
    let mut child = Command::new(python())
        .args([repo().join("tests/support/validate_openapi.py").to_str().expect("path"), "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python with openapi-spec-validator (scripts/test.sh installs it)");
    child.stdin.take().expect("stdin").write_all(doc.to_string().as_bytes()).expect("write");
    let out = child.wait_with_output().expect("validator");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// Every documented operation is served: none answers with the router's
/// fallback ("no route") or 405, with a path parameter filled in.
#[test]
fn every_documented_route_is_served() {
    let server = Server::start(test_config(json!({})));
    let doc = fetch_doc(&server);
    let ops = operations(&doc);
    assert!(ops.len() >= 18, "too few operations: {ops:?}");
    let client = reqwest::blocking::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    for (method, path) in &ops {
        let concrete = path.replace("{id}", "no-such-job").replace("{file}", "style.css");
        let concrete = if path == "/docs/{file}" { "/docs/swagger-ui.css".to_string() } else { concrete };
        let url = format!("{}{concrete}", server.url);
        let r = match method.as_str() {
            "GET" => client.get(&url).send(),
            "DELETE" => client.delete(&url).send(),
            // An empty multipart form: the route answers "missing field", not "no route".
            _ => client.post(&url).multipart(reqwest::blocking::multipart::Form::new().text("x", "y")).send(),
        }
        .expect("request");
        let status = r.status().as_u16();
        let body = r.text().unwrap_or_default();
        assert_ne!(status, 405, "{method} {path}: {body}");
        assert!(!body.contains("no route for"), "{method} {path} is documented but not served: {status} {body}");
        if path == "/v1/realtime" {
            // A WebSocket handshake is expected: a plain GET is told so.
            assert_eq!(status, 400, "{method} {path}: {body}");
            assert!(body.contains("intent"), "{body}");
        } else if method == "GET" && !path.contains('{') && path != "/docs" {
            assert_eq!(status, 200, "{method} {path}: {body}");
        }
    }
}

/// Routes are added only through `routes!` (documented by construction):
/// a plain `.route(` anywhere in the sources would serve a route the
/// document does not have. The exceptions: the test-fault route, and a
/// cluster worker's probe port, which serves the documented probe paths.
#[test]
fn no_route_bypasses_the_document() {
    let mut offenders = Vec::new();
    let mut stack = vec![repo().join("src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("read");
                // Unit tests build their own small routers.
                let code = text.split("#[cfg(test)]").next().unwrap_or("");
                for (i, line) in code.lines().enumerate() {
                    let probe = ["HEALTH_PATH", "LIVENESS_PATH", "METRICS_PATH"].iter().any(|p| line.contains(p));
                    let comment = line.trim_start().starts_with("//");
                    if line.contains(".route(") && !line.contains("/__test/panic") && !probe && !comment {
                        offenders.push(format!("{}:{}: {}", path.display(), i + 1, line.trim()));
                    }
                }
            }
        }
    }
    assert!(offenders.is_empty(), "routes outside the OpenAPI document:\n{}", offenders.join("\n"));
}

/// The schema a `$ref` or inline schema stands for.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r.rsplit('/').next().expect("ref name");
            resolve(doc, &doc["components"]["schemas"][name])
        }
        None => schema,
    }
}

/// Every key of `value` is a property of `schema` (following refs, arrays,
/// oneOf/anyOf/allOf and nullable types), recursively; collects the misses.
fn undocumented(doc: &Value, schema: &Value, value: &Value, at: &str, misses: &mut Vec<String>) {
    let schema = resolve(doc, schema);
    for key in ["oneOf", "anyOf", "allOf"] {
        if let Some(alts) = schema.get(key).and_then(Value::as_array) {
            // Fits if some alternative (or, for allOf, the union) describes it.
            let mut best: Option<Vec<String>> = None;
            for alt in alts {
                let mut m = Vec::new();
                undocumented(doc, alt, value, at, &mut m);
                if best.as_ref().is_none_or(|b| m.len() < b.len()) {
                    best = Some(m);
                }
            }
            misses.extend(best.unwrap_or_default());
            return;
        }
    }
    match value {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").is_some_and(|a| a != &Value::Bool(false));
            for (k, v) in map {
                match props.and_then(|p| p.get(k)) {
                    Some(s) => undocumented(doc, s, v, &format!("{at}.{k}"), misses),
                    None if additional => {}
                    None => misses.push(format!("{at}.{k}")),
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, v) in items.iter().enumerate().take(3) {
                    undocumented(doc, s, v, &format!("{at}[{i}]"), misses);
                }
            }
        }
        _ => {}
    }
}

/// The schema of `method path`'s `status` answer as JSON.
fn response_schema<'a>(doc: &'a Value, method: &str, path: &str, status: u16) -> &'a Value {
    let op = &doc["paths"][path][method];
    let content = &op["responses"][status.to_string()]["content"]["application/json"];
    assert!(content.is_object(), "{method} {path} documents no JSON {status} answer");
    &content["schema"]
}

fn check(doc: &Value, method: &str, path: &str, status: u16, body: &Value) {
    let mut misses = Vec::new();
    undocumented(doc, response_schema(doc, method, path, status), body, "$", &mut misses);
    assert!(misses.is_empty(), "{method} {path} {status}: fields not in the document: {misses:?}\n{body}");
}

#[test]
fn real_answers_have_only_documented_fields() {
    let server = Server::start(test_config(json!({})));
    let doc = fetch_doc(&server);
    let jfk = std::fs::read(jfk_wav()).expect("jfk.wav");
    let client = client();
    let form = |fields: &[(&str, &str)]| {
        let mut f = reqwest::blocking::multipart::Form::new()
            .part("file", reqwest::blocking::multipart::Part::bytes(jfk.clone()).file_name("jfk.wav"));
        for (k, v) in fields {
            f = f.text(k.to_string(), v.to_string());
        }
        f
    };
    let post = |path: &str, form: reqwest::blocking::multipart::Form| {
        let r = client.post(format!("{}{path}", server.url)).multipart(form).send().expect("post");
        (r.status().as_u16(), r.json::<Value>().unwrap_or(Value::Null))
    };

    let (s, verbose) = post("/v1/audio/transcriptions", form(&[("model", "whisper-1"), ("response_format", "verbose_json"),
        ("timestamp_granularities[]", "word"), ("timestamp_granularities[]", "segment")]));
    assert_eq!(s, 200);
    check(&doc, "post", "/v1/audio/transcriptions", 200, &verbose);
    let (s, plain) = post("/v1/audio/transcriptions", form(&[("model", "whisper-1")]));
    assert_eq!(s, 200);
    check(&doc, "post", "/v1/audio/transcriptions", 200, &plain);
    let (s, err) = post("/v1/audio/transcriptions", form(&[("model", "whisper-1"), ("temperature", "9")]));
    assert_eq!(s, 400);
    check(&doc, "post", "/v1/audio/transcriptions", 400, &err);

    let original = client.post(format!("{}/transcribe", server.url))
        .multipart(reqwest::blocking::multipart::Form::new()
            .part("audio_file", reqwest::blocking::multipart::Part::bytes(jfk.clone()).file_name("jfk.wav")))
        .send().expect("post");
    assert_eq!(original.status().as_u16(), 200);
    check(&doc, "post", "/transcribe", 200, &original.json().expect("json"));

    let (s, job) = post("/v1/jobs", form(&[("response_format", "verbose_json")]));
    assert_eq!(s, 202);
    check(&doc, "post", "/v1/jobs", 202, &job);
    let id = job["id"].as_str().expect("id").to_string();
    let done = loop {
        let (s, j) = server.get_json(&format!("/v1/jobs/{id}"));
        assert_eq!(s, 200);
        if j["status"] == "completed" {
            break j;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    check(&doc, "get", "/v1/jobs/{id}", 200, &done);
    let (s, list) = server.get_json("/v1/jobs?limit=5");
    assert_eq!(s, 200);
    check(&doc, "get", "/v1/jobs", 200, &list);
    let (s, missing) = server.get_json("/v1/jobs/nope");
    assert_eq!(s, 404);
    check(&doc, "get", "/v1/jobs/{id}", 404, &missing);
    for (path, status) in [("/v1/models", 200), ("/v1/stats", 200), ("/health", 200)] {
        let (s, body) = server.get_json(path);
        assert_eq!(s, status, "{path}");
        check(&doc, "get", path, status, &body);
    }

    // The check can fail: a field the document lacks is found.
    let mut extra = verbose.clone();
    extra["segments"][0]["surprise"] = json!(1);
    let mut misses = Vec::new();
    undocumented(&doc, response_schema(&doc, "post", "/v1/audio/transcriptions", 200), &extra, "$", &mut misses);
    assert_eq!(misses, vec!["$.segments[0].surprise".to_string()]);
}

#[test]
fn docs_page_and_document_need_no_key_and_name_no_other_host() {
    let server = Server::start(test_config(json!({"auth": {"api_keys": ["key-12345678"]}})));
    let doc = fetch_doc(&server);
    // API routes carry the key requirement; pages and probes do not.
    assert!(doc["paths"]["/v1/jobs"]["post"]["security"].is_array());
    assert!(doc["paths"]["/health"]["get"].get("security").is_none());
    let client = client();
    for path in ["/docs/", "/docs/swagger-initializer.js", "/", "/dashboard", "/assets/app.js"] {
        let r = client.get(format!("{}{path}", server.url)).send().expect("get");
        assert_eq!(r.status().as_u16(), 200, "{path}");
        let text = r.text().expect("text");
        if path == "/docs/swagger-initializer.js" {
            assert!(text.contains("/openapi.json"), "{text}");
            let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
            assert!(compact.contains("\"validatorUrl\":\"none\""), "the validator would call swagger.io: {text}");
        }
    }
    let (s, _) = server.get_json("/v1/models");
    assert_eq!(s, 401, "the API itself still needs the key");
}

#[test]
fn web_ui_off_serves_the_api_only() {
    let server = Server::start(test_config(json!({"server": {"web_ui": false}})));
    for path in ["/", "/dashboard", "/assets/app.js", "/docs/", "/openapi.json"] {
        assert_eq!(server.get_json(path).0, 404, "{path}");
    }
    assert_eq!(server.get_json("/v1/models").0, 200);
    assert_eq!(server.get_json("/v1/stats").0, 200);
}
