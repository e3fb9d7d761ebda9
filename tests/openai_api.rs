//! The OpenAI-compatible API, driven by the official `openai` Python SDK.

mod common;

use std::process::Command;

use common::*;
use serde_json::{json, Value};

fn sdk_check(base: &str, args: &[&str]) -> String {
    let out = Command::new(python())
        .arg(repo().join("tests/support/openai_check.py"))
        .arg(base)
        .args(args)
        .output()
        .expect("python with the openai SDK (tests/support/requirements.txt)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "openai_check.py failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

#[test]
fn the_openai_sdk_gets_every_response_format() {
    let server = Server::start(test_config(json!({})));
    let out = sdk_check(&format!("{}/v1", server.url), &[jfk_wav().to_str().unwrap(), "--expect", "ask not what your country"]);
    eprintln!("{out}");
}

#[test]
fn the_openai_sdk_translates_with_a_multilingual_model() {
    let tmp = tempfile::tempdir().unwrap();
    let es = tmp.path().join("es.wav");
    tool("espeak-ng", &["-v", "es", "-w", es.to_str().unwrap(), "Buenos días, ¿cómo está usted hoy? Hace buen tiempo."]);
    let server = Server::start(test_config(json!({"model": {"size": "base"}})));
    let out = sdk_check(
        &format!("{}/v1", server.url),
        &[jfk_wav().to_str().unwrap(), "--expect", "ask not what your country", "--translate-file", es.to_str().unwrap()],
    );
    let lower = out.to_lowercase();
    assert!(lower.contains("good morning") && lower.contains("how are you"), "{out}");
}

fn post_v1(server: &Server, fields: &[(&str, &str)], file: Option<(&str, Vec<u8>)>) -> (u16, Value) {
    let mut form = reqwest::blocking::multipart::Form::new();
    for (k, v) in fields {
        form = form.text(k.to_string(), v.to_string());
    }
    if let Some((name, bytes)) = file {
        form = form.part("file", reqwest::blocking::multipart::Part::bytes(bytes).file_name(name.to_string()));
    }
    let r = client().post(format!("{}/v1/audio/transcriptions", server.url)).multipart(form).send().expect("request");
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

fn assert_openai_error(status: u16, body: &Value, expected: u16, param: Option<&str>) {
    assert_eq!(status, expected, "{body}");
    let e = &body["error"];
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    assert!(e["type"].is_string() && e["code"].is_string(), "{body}");
    assert!(e.get("param").is_some(), "{body}");
    if let Some(p) = param {
        assert_eq!(e["param"], p, "{body}");
    }
}

#[test]
fn v1_errors_use_openai_shape() {
    let server = Server::start(test_config(json!({})));
    let jfk = std::fs::read(jfk_wav()).unwrap();
    let (s, b) = post_v1(&server, &[("model", "whisper-1")], None);
    assert_openai_error(s, &b, 400, Some("file"));
    let garbage: Vec<u8> = (0..50_000u32).map(|i| (i.wrapping_mul(2654435761) >> 7) as u8).collect();
    let (s, b) = post_v1(&server, &[("model", "whisper-1")], Some(("x.wav", garbage)));
    assert_openai_error(s, &b, 400, Some("file"));
    let (s, b) = post_v1(&server, &[("model", "gpt-7")], Some(("jfk.wav", jfk.clone())));
    assert_openai_error(s, &b, 404, Some("model"));
    let (s, b) = post_v1(&server, &[("model", "whisper-1"), ("response_format", "xml")], Some(("jfk.wav", jfk.clone())));
    assert_openai_error(s, &b, 400, Some("response_format"));
    // And the happy path, with the served model's own name.
    let (s, b) = post_v1(&server, &[("model", "tiny.en")], Some(("jfk.wav", jfk)));
    assert_eq!(s, 200, "{b}");
    assert!(b["text"].as_str().unwrap_or_default().contains("fellow Americans"), "{b}");
    let models: Value = client().get(format!("{}/v1/models", server.url)).send().unwrap().json().unwrap();
    let ids: Vec<&str> = models["data"].as_array().unwrap().iter().filter_map(|m| m["id"].as_str()).collect();
    assert!(ids.contains(&"whisper-1") && ids.contains(&"tiny.en"), "{models}");
}
