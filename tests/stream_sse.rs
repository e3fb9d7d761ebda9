//! `stream=true` on OpenAI's transcription routes, read by the official
//! `openai` Python SDK's streaming parser (`tests/support/sse_check.py`):
//! the real binary, real models and real speech, in `serve` and in a
//! cluster (gateway + worker over a real nats-server).

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::cluster::{cluster_config, gateway, wait_ready, worker, Nats};
use common::*;
use serde_json::{json, Value};

/// Runs sse_check.py against `base` (…/v1) with `file` and `args`.
fn sdk_stream(base: &str, file: &Path, args: &[&str]) -> Value {
    let out = Command::new(python())
        .arg(repo().join("tests/support/sse_check.py"))
        .arg(base)
        .arg(file)
        .args(args)
        .output()
        .expect("python with the openai SDK (tests/support/requirements.txt)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "sse_check.py failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("sse_check.py printed no JSON ({e}): {stdout}"))
}

fn deltas(r: &Value) -> Vec<(f64, String)> {
    r["deltas"]
        .as_array()
        .expect("deltas")
        .iter()
        .map(|d| (d["t"].as_f64().unwrap(), d["delta"].as_str().unwrap().to_string()))
        .collect()
}

/// A stream that ended well: 200 as events, deltas in order, then one
/// done event whose text the deltas concatenate to exactly. Returns the
/// deltas and the text.
fn assert_streamed(r: &Value) -> (Vec<(f64, String)>, String) {
    assert_eq!(r["status"], 200, "{r}");
    assert!(r["content_type"].as_str().is_some_and(|c| c.starts_with("text/event-stream")), "{r}");
    assert!(r["error"].is_null(), "{r}");
    let events: Vec<&str> = r["events"].as_array().unwrap().iter().map(|e| e.as_str().unwrap()).collect();
    assert_eq!(events.last(), Some(&"transcript.text.done"), "{r}");
    assert_eq!(events.iter().filter(|e| **e == "transcript.text.done").count(), 1, "{r}");
    let text = r["done"]["text"].as_str().expect("done.text").to_string();
    let d = deltas(r);
    let joined: String = d.iter().map(|(_, s)| s.as_str()).collect();
    assert_eq!(joined, text, "the deltas do not add up to the text");
    (d, text)
}

/// A stream as `assert_streamed` checks it, whose text came window by
/// window: more than one delta, the first before `within` of the time to
/// `done`. Returns the text.
fn assert_streamed_early(r: &Value, within: f64) -> String {
    let (d, text) = assert_streamed(r);
    let t_done = r["t_done"].as_f64().unwrap();
    eprintln!("{} deltas at {:?} s; done at {t_done:.2} s", d.len(), d.iter().map(|(t, _)| (t * 100.0).round() / 100.0).collect::<Vec<_>>());
    // Text after the first window, not at the end.
    assert!(d.len() > 1, "one delta only: {r}");
    assert!(d[0].0 < within * t_done, "first delta at {:.2} s, done at {t_done:.2} s", d[0].0);
    text
}

/// The audio's length in seconds (16-bit mono 16 kHz WAV written by sox).
fn wav_seconds(path: &Path) -> f64 {
    (std::fs::metadata(path).unwrap().len() - 44) as f64 / 32_000.0
}

#[test]
fn the_sdk_streams_a_long_file_window_by_window() {
    let tmp = tempfile::tempdir().unwrap();
    let (file, bounds) = concat_corpus(tmp.path(), 180.0);
    let reference: Vec<&str> = bounds.iter().map(|(_, r)| r.as_str()).collect();
    let server = Server::start(test_config(json!({})));
    let r = sdk_stream(&format!("{}/v1", server.url), &file, &[]);
    let text = assert_streamed_early(&r, 0.6);
    let w = wer(&[(reference.join(" "), text.clone())]);
    assert!(w <= 0.15, "WER {w:.3}: {text}");
    // OpenAI's usage for Whisper: seconds of audio.
    let usage = &r["done"]["usage"];
    assert_eq!(usage["type"], "duration", "{r}");
    assert_eq!(usage["seconds"].as_f64(), Some(wav_seconds(&file).ceil()), "{r}");
    // The transcript is the one the plain answer gives.
    let (s, plain) = post_file_v1(&server, "/v1/audio/transcriptions", &[("model", "whisper-1")], &file);
    assert_eq!(s, 200, "{plain}");
    assert_eq!(plain["text"].as_str(), Some(text.as_str()));
}

/// POSTs `file` with form `fields` to `path`: (status, JSON or text).
fn post_file_v1(server: &Server, path: &str, fields: &[(&str, &str)], file: &Path) -> (u16, Value) {
    let (status, _, body) = post_raw(server, path, fields, file.file_name().unwrap().to_str().unwrap(), std::fs::read(file).unwrap());
    (status, serde_json::from_str(&body).unwrap_or(Value::String(body)))
}

/// POSTs a form and returns (status, content type, body).
fn post_raw(server: &Server, path: &str, fields: &[(&str, &str)], name: &str, bytes: Vec<u8>) -> (u16, String, String) {
    let mut form = reqwest::blocking::multipart::Form::new();
    for (k, v) in fields {
        form = form.text(k.to_string(), v.to_string());
    }
    form = form.part("file", reqwest::blocking::multipart::Part::bytes(bytes).file_name(name.to_string()));
    let r = client().post(format!("{}{path}", server.url)).multipart(form).send().expect("request");
    let status = r.status().as_u16();
    let ct = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    (status, ct, r.text().unwrap_or_default())
}

#[test]
fn translations_and_text_format_stream_too() {
    let tmp = tempfile::tempdir().unwrap();
    let es = tmp.path().join("es.wav");
    tool("espeak-ng", &["-v", "es", "-w", es.to_str().unwrap(), "Buenos días, ¿cómo está usted hoy? Hace buen tiempo."]);
    let server = Server::start(test_config(json!({"model": {"size": "base"}})));
    let base = format!("{}/v1", server.url);
    let r = sdk_stream(&base, &es, &["--translate"]);
    let (_, text) = assert_streamed(&r);
    let lower = text.to_lowercase();
    assert!(lower.contains("good morning") && lower.contains("how are you"), "{r}");
    // `response_format=text` streams the same events.
    let r = sdk_stream(&base, &jfk_wav(), &["--response-format", "text", "--language", "en"]);
    let (_, text) = assert_streamed(&r);
    assert!(text.contains("ask not what your country"), "{r}");
}

/// A WAV of the whole corpus, twice (about 10 minutes, ~22 windows).
fn ten_minutes(dir: &Path) -> PathBuf {
    let (once, _) = concat_corpus(dir, f64::INFINITY);
    let twice = dir.join("twice.wav");
    tool("sox", &[once.to_str().unwrap(), once.to_str().unwrap(), twice.to_str().unwrap()]);
    twice
}

/// An error after the answer started (here: `limits.request_timeout_s`
/// passing while a long file is decoded) is an error event in OpenAI's
/// shape, which the SDK raises as an `APIError`, and the stream ends.
#[test]
fn an_error_after_the_stream_started_arrives_as_an_error_event() {
    let tmp = tempfile::tempdir().unwrap();
    let file = ten_minutes(tmp.path());
    // The timeout must fall after the first window and before the last;
    // how long a window takes depends on the machine and its load, so a
    // timeout that passes before any text (a 504 before the stream) is
    // tried again, longer.
    let mut timeout_s = 3;
    let r = loop {
        let server = Server::start(test_config(json!({"limits": {"request_timeout_s": timeout_s}})));
        let r = sdk_stream(&format!("{}/v1", server.url), &file, &[]);
        if r["status"] == 504 && !r["error_after_start"].as_bool().unwrap() {
            assert_eq!(r["error"]["body"]["code"], "timeout", "{r}");
            assert!(timeout_s < 100, "no text within {timeout_s} s: {r}");
            timeout_s *= 3;
            continue;
        }
        // The server carries on.
        let (s, b) = post_file_v1(&server, "/v1/audio/transcriptions", &[("model", "whisper-1")], &jfk_wav());
        assert_eq!(s, 200, "{b}");
        break r;
    };
    assert_eq!(r["status"], 200, "{r}");
    assert!(r["content_type"].as_str().is_some_and(|c| c.starts_with("text/event-stream")), "{r}");
    assert!(!deltas(&r).is_empty(), "{r}");
    assert!(r["error_after_start"].as_bool().unwrap(), "{r}");
    assert!(r["done"].is_null(), "{r}");
    let e = &r["error"]["body"];
    assert_eq!(e["code"], "timeout", "{r}");
    assert_eq!(e["type"], "server_error", "{r}");
    assert!(e["message"].as_str().is_some_and(|m| m.contains("timed out")), "{r}");
    assert!(e.get("param").is_some(), "{r}");
}

fn assert_json_error(status: u16, ct: &str, body: &str, expected: u16, code: &str, param: Option<&str>) {
    assert_eq!(status, expected, "{body}");
    assert!(ct.starts_with("application/json"), "{ct}: {body}");
    let v: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    assert_eq!(v["error"]["code"], code, "{body}");
    if let Some(p) = param {
        assert_eq!(v["error"]["param"], p, "{body}");
    }
}

/// What fails before the first text keeps the plain JSON error and its
/// status, however late it is found (the engine refusing the options).
#[test]
fn errors_before_the_stream_keep_their_json_status() {
    let server = Server::start(test_config(json!({})));
    let jfk = std::fs::read(jfk_wav()).unwrap();
    let stream = ("stream", "true");
    let (s, ct, b) = post_raw(&server, "/v1/audio/transcriptions", &[("model", "whisper-1"), stream, ("response_format", "verbose_json")], "jfk.wav", jfk.clone());
    assert_json_error(s, &ct, &b, 400, "invalid_param", Some("stream"));
    for f in ["srt", "vtt"] {
        let (s, ct, b) = post_raw(&server, "/v1/audio/transcriptions", &[("model", "whisper-1"), stream, ("response_format", f)], "jfk.wav", jfk.clone());
        assert_json_error(s, &ct, &b, 400, "invalid_param", Some("stream"));
    }
    let (s, ct, b) = post_raw(&server, "/v1/audio/transcriptions", &[("model", "whisper-1"), ("stream", "perhaps")], "jfk.wav", jfk.clone());
    assert_json_error(s, &ct, &b, 400, "invalid_param", Some("stream"));
    let garbage: Vec<u8> = (0..50_000u32).map(|i| (i.wrapping_mul(2654435761) >> 7) as u8).collect();
    let (s, ct, b) = post_raw(&server, "/v1/audio/transcriptions", &[("model", "whisper-1"), stream], "x.wav", garbage);
    assert_json_error(s, &ct, &b, 400, "invalid_audio", Some("file"));
    let (s, ct, b) = post_raw(&server, "/v1/audio/transcriptions", &[("model", "gpt-7"), stream], "jfk.wav", jfk.clone());
    assert_json_error(s, &ct, &b, 404, "model_not_found", Some("model"));
    let (s, ct, b) = post_raw(&server, "/v1/audio/transcriptions", &[("model", "whisper-1"), stream], "jfk.wav", Vec::new());
    assert_json_error(s, &ct, &b, 400, "empty_file", None);
    // Refused by the engine once queued (an English-only model cannot
    // translate), still before any text: a plain 400.
    let (s, ct, b) = post_raw(&server, "/v1/audio/translations", &[("model", "whisper-1"), stream], "jfk.wav", jfk);
    assert_json_error(s, &ct, &b, 400, "invalid_param", None);
    // The SDK sees these as the usual API errors, raised by `create`.
    let r = sdk_stream(&format!("{}/v1", server.url), &jfk_wav(), &["--response-format", "verbose_json"]);
    assert_eq!(r["status"], 400, "{r}");
    assert!(!r["error_after_start"].as_bool().unwrap(), "{r}");
    assert_eq!(r["error"]["body"]["param"], "stream", "{r}");
}

/// A client that goes away mid-stream: the rest of the file is not
/// decoded (the pool drops work nobody waits for).
#[test]
fn a_client_that_leaves_mid_stream_stops_the_work() {
    let tmp = tempfile::tempdir().unwrap();
    let (file, _) = concat_corpus(tmp.path(), 180.0);
    let server = Server::start(test_config(json!({})));
    let form = reqwest::blocking::multipart::Form::new()
        .text("model", "whisper-1")
        .text("stream", "true")
        .part("file", reqwest::blocking::multipart::Part::bytes(std::fs::read(&file).unwrap()).file_name("long.wav"));
    let mut resp = client().post(format!("{}/v1/audio/transcriptions", server.url)).multipart(form).send().expect("request");
    assert_eq!(resp.status(), 200);
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while !seen.contains("transcript.text.delta") {
        let n = resp.read(&mut buf).expect("read the stream");
        assert!(n > 0, "the stream ended before any delta: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(seen.starts_with("data: {"), "{seen}");
    drop(resp);
    let left = Instant::now();
    while server.metric("whisper_serve_running") > 0.0 {
        assert!(left.elapsed() < Duration::from_secs(120), "the work went on after the client left");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(server.metric("whisper_serve_jobs_done_total"), 0.0, "the abandoned file was decoded to the end");
}

/// In a cluster, the worker's progress reaches the gateway's client as it
/// is decoded, over NATS.
#[test]
fn a_gateway_streams_its_workers_progress() {
    let tmp = tempfile::tempdir().unwrap();
    let (file, bounds) = concat_corpus(tmp.path(), 120.0);
    let nats = Nats::start();
    let config = cluster_config(&nats, json!({}));
    let _worker = worker(config.clone());
    let gw = gateway(config);
    wait_ready(&gw, Duration::from_secs(60));
    let r = sdk_stream(&format!("{}/v1", gw.url), &file, &[]);
    let text = assert_streamed_early(&r, 0.8);
    let reference: Vec<&str> = bounds.iter().map(|(_, r)| r.as_str()).collect();
    let w = wer(&[(reference.join(" "), text.clone())]);
    assert!(w <= 0.15, "WER {w:.3}: {text}");
    assert_eq!(r["done"]["usage"]["seconds"].as_f64(), Some(wav_seconds(&file).ceil()), "{r}");
}
