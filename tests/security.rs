//! Production hardening, end to end with the real binary: API keys, rate
//! limits and quotas, error shapes for everything, panics, slow clients,
//! TLS, and SIGTERM with requests in flight.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{client, jfk_wav, post_file, test_config, Server};
use serde_json::{json, Value};

const KEY_A: &str = "sk-test-alice-0123456789";
const KEY_B: &str = "sk-test-bob-9876543210";

fn keyed(extra: Value) -> Value {
    let mut c = test_config(json!({"auth": {"api_keys": [{"id": "alice", "key": KEY_A}, {"id": "bob", "key": KEY_B}]}}));
    common::merge_json(&mut c, extra);
    c
}

/// POSTs jfk.wav to `path` with extra headers; returns status, headers, JSON.
fn send(url: &str, path: &str, field: &str, headers: &[(&str, &str)]) -> (u16, reqwest::header::HeaderMap, Value) {
    let part = reqwest::blocking::multipart::Part::bytes(std::fs::read(jfk_wav()).unwrap()).file_name("jfk.wav");
    let mut form = reqwest::blocking::multipart::Form::new().part(field.to_string(), part);
    if path.starts_with("/v1/") {
        form = form.text("model", "whisper-1");
    }
    let mut req = client().post(format!("{url}{path}")).multipart(form);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().expect("request");
    let status = r.status().as_u16();
    let h = r.headers().clone();
    (status, h, r.json().unwrap_or(Value::Null))
}

#[test]
fn keys_are_required_checked_and_never_logged() {
    let logs = tempfile::tempdir().unwrap();
    let log_file = logs.path().join("service.log");
    let server = Server::start(keyed(json!({"logging": {"level": "INFO", "file": log_file}})));
    // Original route, original shape.
    let (s, h, body) = send(&server.url, "/transcribe", "audio_file", &[]);
    assert_eq!(s, 401, "{body}");
    assert_eq!(body["success"], false);
    assert!(body["error"].as_str().unwrap().contains("API key"), "{body}");
    assert_eq!(h.get("www-authenticate").unwrap(), "Bearer");
    let (s, _, _) = send(&server.url, "/transcribe", "audio_file", &[("authorization", "Bearer sk-wrong-key-000000")]);
    assert_eq!(s, 401);
    // OpenAI routes, OpenAI's shape.
    let (s, _, body) = send(&server.url, "/v1/audio/transcriptions", "file", &[("x-api-key", "sk-wrong-key-000000")]);
    assert_eq!(s, 401, "{body}");
    assert_eq!(body["error"]["type"], "authentication_error", "{body}");
    assert_eq!(body["error"]["code"], "invalid_api_key");
    // Right keys, both header forms.
    let (s, _, body) = send(&server.url, "/transcribe", "audio_file", &[("authorization", &format!("Bearer {KEY_A}"))]);
    assert_eq!(s, 200, "{body}");
    let (s, _, body) = send(&server.url, "/v1/audio/transcriptions", "file", &[("x-api-key", KEY_B)]);
    assert_eq!(s, 200, "{body}");
    assert!(body["text"].as_str().unwrap().contains("ask not"));
    // Probes stay open.
    let (s, _) = server.get_json("/health");
    assert_eq!(s, 200);
    // The official SDK with api_key.
    let script = format!(
        "from openai import OpenAI\nc = OpenAI(base_url='{}/v1', api_key='{KEY_A}')\nprint(c.audio.transcriptions.create(model='whisper-1', file=open('{}', 'rb')).text)\n\
         import openai\ntry:\n    OpenAI(base_url='{}/v1', api_key='nope-nope-nope').models.list()\nexcept openai.AuthenticationError:\n    print('refused')\n",
        server.url,
        jfk_wav().display(),
        server.url
    );
    let out = std::process::Command::new(common::python()).args(["-c", &script]).output().expect("python");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("ask not") && text.contains("refused"), "{text}");
    drop(server);
    // No key in any log file; failed attempts are there with the client address.
    let mut all = String::new();
    for e in std::fs::read_dir(logs.path()).unwrap() {
        all.push_str(&std::fs::read_to_string(e.unwrap().path()).unwrap_or_default());
    }
    assert!(!all.is_empty());
    for k in [KEY_A, KEY_B, "sk-wrong-key-000000", "nope-nope-nope"] {
        assert!(!all.contains(k), "a key in the logs");
    }
    assert!(all.contains("authentication failed") && all.contains("127.0.0.1"), "failed attempts logged");
    assert!(all.contains("alice") && all.contains("bob"), "access lines name the key id");
}

#[test]
fn rate_limits_and_daily_quotas() {
    let server = Server::start(keyed(json!({"rate_limit": {"requests_per_minute": 60, "burst": 3, "audio_seconds_per_day": 15}})));
    let models = |key: &str| {
        let r = client().get(format!("{}/v1/models", server.url)).bearer_auth(key).send().unwrap();
        (r.status().as_u16(), r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string()), r.json::<Value>().unwrap_or(Value::Null))
    };
    for _ in 0..3 {
        assert_eq!(models(KEY_A).0, 200);
    }
    let (s, retry, body) = models(KEY_A);
    assert_eq!(s, 429, "{body}");
    assert_eq!(body["error"]["type"], "rate_limit_error", "{body}");
    assert_eq!(retry.as_deref(), Some("1"));
    assert_eq!(models(KEY_B).0, 200, "another key has its own bucket");
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(models(KEY_A).0, 200, "a token back after a second");
    // 15 s of audio a day: jfk.wav is 11 s; the second request may start
    // (11 < 15), the third may not.
    let auth = format!("Bearer {KEY_B}");
    for _ in 0..2 {
        let (s, _, body) = send(&server.url, "/transcribe", "audio_file", &[("authorization", &auth)]);
        assert_eq!(s, 200, "{body}");
    }
    std::thread::sleep(Duration::from_millis(1100));
    let (s, h, body) = send(&server.url, "/transcribe", "audio_file", &[("authorization", &auth)]);
    assert_eq!(s, 429, "{body}");
    assert!(body["error"].as_str().unwrap().contains("quota"), "{body}");
    assert!(h.get("retry-after").is_some());
    let (s, _, body) = send(&server.url, "/transcribe", "audio_file", &[("authorization", &format!("Bearer {KEY_A}"))]);
    assert_eq!(s, 200, "the other key still transcribes: {body}");
}

#[test]
fn every_error_is_in_the_route_familys_shape() {
    let server = Server::start_env(test_config(json!({})), &[("WHISPER_SERVE_TEST_FAULTS", "1")]);
    let c = client();
    // Not multipart at all, and multipart without a boundary.
    let r = c.post(format!("{}/transcribe", server.url)).body("hello").send().unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let b: Value = r.json().expect("JSON");
    assert_eq!(b["success"], false, "{b}");
    let r = c.post(format!("{}/v1/audio/transcriptions", server.url)).header("content-type", "multipart/form-data").body("x").send().unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let b: Value = r.json().expect("JSON");
    assert_eq!(b["error"]["type"], "invalid_request_error", "{b}");
    // Unknown routes and wrong methods.
    let r = c.get(format!("{}/nope", server.url)).send().unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let b: Value = r.json().expect("JSON");
    assert_eq!(b["success"], false, "{b}");
    let r = c.get(format!("{}/v1/nope", server.url)).send().unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let b: Value = r.json().expect("JSON");
    assert_eq!(b["error"]["code"], "not_found", "{b}");
    let r = c.get(format!("{}/transcribe", server.url)).send().unwrap();
    assert_eq!(r.status().as_u16(), 405);
    assert!(r.headers().get("allow").is_some(), "Allow kept");
    let b: Value = r.json().expect("JSON");
    assert_eq!(b["success"], false, "{b}");
    let r = c.delete(format!("{}/v1/audio/transcriptions", server.url)).send().unwrap();
    assert_eq!(r.status().as_u16(), 405);
    let b: Value = r.json().expect("JSON");
    assert_eq!(b["error"]["code"], "method_not_allowed", "{b}");
    // A panic inside a handler: 500 in shape, with the request id; server fine.
    let r = c.get(format!("{}/__test/panic", server.url)).header("x-request-id", "panic-req-1").send().unwrap();
    assert_eq!(r.status().as_u16(), 500);
    assert_eq!(r.headers().get("x-request-id").unwrap(), "panic-req-1");
    let b: Value = r.json().expect("JSON");
    assert_eq!(b["success"], false, "{b}");
    let (s, body) = post_file(&format!("{}/transcribe", server.url), "audio_file", "jfk.wav", std::fs::read(jfk_wav()).unwrap());
    assert_eq!(s, 200, "still serving after the panic: {body}");
}

#[test]
fn a_slow_client_is_cut_off_and_delays_no_one() {
    let server = Server::start(test_config(json!({"server": {"body_timeout_s": 3}})));
    let addr = server.url.trim_start_matches("http://").to_string();
    let slow = std::thread::spawn(move || {
        let mut s = TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let head = "POST /transcribe HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=XX\r\nContent-Length: 100000\r\n\r\n";
        s.write_all(head.as_bytes()).unwrap();
        let started = Instant::now();
        let mut reply = Vec::new();
        // One byte a second until the server answers or closes.
        let mut reader = s.try_clone().unwrap();
        reader.set_nonblocking(true).unwrap();
        for _ in 0..15 {
            if s.write_all(b"-").is_err() {
                break;
            }
            std::thread::sleep(Duration::from_secs(1));
            let mut buf = [0u8; 4096];
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    reply.extend_from_slice(&buf[..n]);
                    break;
                }
                Err(_) => {}
            }
        }
        (started.elapsed(), String::from_utf8_lossy(&reply).into_owned())
    });
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    let (s, body) = post_file(&format!("{}/transcribe", server.url), "audio_file", "jfk.wav", std::fs::read(jfk_wav()).unwrap());
    assert_eq!(s, 200, "{body}");
    assert!(t.elapsed() < Duration::from_secs(3), "a normal request was held up: {:?}", t.elapsed());
    let (took, reply) = slow.join().unwrap();
    assert!(took < Duration::from_secs(8), "cut off after {took:?}");
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains("\"success\":false"), "{reply}");
    let (s, _) = server.get_json("/health");
    assert_eq!(s, 200);
}

#[test]
fn https_with_a_certificate_made_here() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let server = Server::start_role("serve", test_config(json!({"server": {"tls_cert": cert_path, "tls_key": key_path}})), &[], false);
    let port = server.url.rsplit(':').next().unwrap().to_string();
    let https = format!("https://localhost:{port}");
    let tls_client = reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let healthy = (0..600).any(|_| {
        let ok = tls_client.get(format!("{https}/health")).send().is_ok_and(|r| r.status() == 200);
        if !ok {
            std::thread::sleep(Duration::from_millis(100));
        }
        ok
    });
    assert!(healthy, "no healthy HTTPS server");
    let part = reqwest::blocking::multipart::Part::bytes(std::fs::read(jfk_wav()).unwrap()).file_name("jfk.wav");
    let r = tls_client.post(format!("{https}/transcribe")).multipart(reqwest::blocking::multipart::Form::new().part("audio_file", part)).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // Plain HTTP to the TLS port fails cleanly, and the server carries on.
    let plain = client().get(format!("http://127.0.0.1:{port}/health")).timeout(Duration::from_secs(15)).send();
    assert!(plain.is_err() || plain.is_ok_and(|r| r.status() != 200), "plain HTTP must not be served");
    assert_eq!(tls_client.get(format!("{https}/health")).send().unwrap().status().as_u16(), 200);
}

#[test]
fn sigterm_answers_the_requests_in_flight_then_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let (long, _) = common::concat_corpus(dir.path(), 20.0);
    let mut server = Server::start(test_config(json!({})));
    let url = server.url.clone();
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let (url, long) = (url.clone(), long.clone());
            std::thread::spawn(move || post_file(&format!("{url}/transcribe"), "audio_file", "long.wav", std::fs::read(long).unwrap()))
        })
        .collect();
    let started = Instant::now();
    while server.metric("whisper_serve_running") + server.metric("whisper_serve_queue_length") < 3.0 {
        assert!(started.elapsed() < Duration::from_secs(20), "the requests never arrived");
        std::thread::sleep(Duration::from_millis(20));
    }
    server.signal("-TERM");
    for t in threads {
        let (s, body) = t.join().unwrap();
        assert_eq!(s, 200, "{body}");
        assert!(body["text"].as_str().unwrap().len() > 50);
    }
    let status = server.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "exit {status:?}");
}

#[test]
fn keys_file_reloads_on_sighup_cors_and_keyed_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.json");
    std::fs::write(&keys, format!(r#"[{{"id": "carol", "key": "{KEY_A}"}}]"#)).unwrap();
    let server = Server::start(test_config(json!({
        "auth": {"api_keys_file": keys, "metrics_requires_key": true},
        "server": {"cors_origins": ["https://app.example.com"]},
    })));
    let models = |key: &str| client().get(format!("{}/v1/models", server.url)).bearer_auth(key).send().unwrap().status().as_u16();
    assert_eq!(models(KEY_A), 200);
    assert_eq!(models(KEY_B), 401);
    // Metrics need a key here; health does not.
    assert_eq!(client().get(format!("{}/metrics", server.url)).send().unwrap().status().as_u16(), 401);
    assert_eq!(client().get(format!("{}/metrics", server.url)).bearer_auth(KEY_A).send().unwrap().status().as_u16(), 200);
    assert_eq!(server.get_json("/health").0, 200);
    // Swap the keys and send SIGHUP.
    std::fs::write(&keys, format!(r#"[{{"id": "dave", "key": "{KEY_B}"}}]"#)).unwrap();
    server.signal("-HUP");
    let swapped = (0..50).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        models(KEY_B) == 200
    });
    assert!(swapped, "the new key works after SIGHUP");
    assert_eq!(models(KEY_A), 401, "the old key no longer does");
    // A broken file on reload keeps the keys in force.
    std::fs::write(&keys, "not json").unwrap();
    server.signal("-HUP");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(models(KEY_B), 200);
    // CORS: a preflight from an allowed origin, without a key.
    let r = client()
        .request(reqwest::Method::OPTIONS, format!("{}/v1/audio/transcriptions", server.url))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization")
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(r.headers().get("access-control-allow-origin").unwrap(), "https://app.example.com");
    let r = client().get(format!("{}/v1/models", server.url)).header("origin", "https://evil.example.com").bearer_auth(KEY_B).send().unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none(), "other origins get no CORS grant");
}

#[test]
fn connections_over_the_limit_wait_and_idle_ones_are_closed() {
    let server = Server::start(test_config(json!({"server": {"max_connections": 1, "header_timeout_s": 2}})));
    let addr = server.url.trim_start_matches("http://").to_string();
    // One idle connection takes the only place until the header timeout closes it.
    let mut idle = TcpStream::connect(&addr).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    let r = client().get(format!("{}/health", server.url)).send().unwrap();
    let waited = t.elapsed();
    assert_eq!(r.status().as_u16(), 200);
    assert!(waited >= Duration::from_millis(1500), "served while the limit was reached ({waited:?})");
    assert!(waited < Duration::from_secs(8), "{waited:?}");
    // The idle connection was closed by the server.
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 16];
    assert!(matches!(idle.read(&mut buf), Ok(0) | Err(_)), "idle connection still open");
}

#[test]
fn the_tls_certificate_reloads_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let first = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(&cert_path, first.cert.pem()).unwrap();
    std::fs::write(&key_path, first.signing_key.serialize_pem()).unwrap();
    let server = Server::start_role("serve", test_config(json!({"server": {"tls_cert": cert_path, "tls_key": key_path}})), &[], false);
    let port = server.url.rsplit(':').next().unwrap().to_string();
    let trusting = |pem: &str| {
        reqwest::blocking::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    };
    let health = |c: &reqwest::blocking::Client| c.get(format!("https://localhost:{port}/health")).send().map(|r| r.status().as_u16());
    let old = trusting(&first.cert.pem());
    assert!((0..600).any(|_| {
        let ok = health(&old).is_ok_and(|s| s == 200);
        if !ok {
            std::thread::sleep(Duration::from_millis(100));
        }
        ok
    }));
    let second = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(&cert_path, second.cert.pem()).unwrap();
    std::fs::write(&key_path, second.signing_key.serialize_pem()).unwrap();
    server.signal("-HUP");
    let new = trusting(&second.cert.pem());
    let swapped = (0..50).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        health(&new).is_ok_and(|s| s == 200)
    });
    assert!(swapped, "the new certificate is served after SIGHUP");
    // A new connection (the old client's pooled one keeps its session).
    assert!(health(&trusting(&first.cert.pem())).is_err(), "the old certificate is gone");
}
