//! Several models in one server (and one cluster): each request answered
//! by the model it names, loaded on first use, unloaded when idle past
//! `models.ttl_s` or evicted past `models.max_loaded`; what cannot be
//! loaded is a documented error and the server stays healthy.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::cluster::{cluster_config, gateway, wait_for, worker, Nats};
use common::*;
use serde_json::{json, Value};

/// A model folder of its own for the test: links to the pulled tiny.en and
/// base, `base-copy` (base again, under another name: a third model) and
/// `broken` (a model whose weights are garbage).
fn model_folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let real = model_dir();
    for m in ["tiny.en", "base"] {
        assert!(real.join(m).join("model.bin").is_file(), "{m} is not pulled to {}", real.display());
        std::os::unix::fs::symlink(real.join(m), dir.path().join(m)).unwrap();
    }
    std::os::unix::fs::symlink(real.join("base"), dir.path().join("base-copy")).unwrap();
    let broken = dir.path().join("broken");
    std::fs::create_dir(&broken).unwrap();
    for f in ["config.json", "tokenizer.json", "vocabulary.txt"] {
        std::fs::copy(real.join("base").join(f), broken.join(f)).unwrap();
    }
    std::fs::write(broken.join("model.bin"), vec![7u8; 4096]).unwrap();
    dir
}

fn spanish(dir: &Path) -> PathBuf {
    let out = dir.join("es.wav");
    let ok = std::process::Command::new("espeak-ng")
        .args(["-v", "es", "-w", out.to_str().unwrap(), "Buenos días, ¿cómo está usted hoy? Hace buen tiempo, y vamos a pasear."])
        .status()
        .expect("espeak-ng")
        .success();
    assert!(ok);
    out
}

fn transcribe(url: &str, path: &Path, model: &str) -> (u16, Value, Option<String>) {
    let form = reqwest::blocking::multipart::Form::new()
        .text("model", model.to_string())
        .text("response_format", "verbose_json")
        .file("file", path)
        .unwrap();
    let r = client().post(format!("{url}/v1/audio/transcriptions")).multipart(form).send().expect("request");
    let status = r.status().as_u16();
    let retry = r.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_string);
    (status, r.json().unwrap_or(Value::Null), retry)
}

fn model_states(server: &Server) -> Vec<Value> {
    let (s, body) = server.get_json("/v1/models");
    assert_eq!(s, 200, "{body}");
    body["data"].as_array().cloned().unwrap_or_default()
}

fn state_of(server: &Server, id: &str) -> Option<Value> {
    model_states(server).into_iter().find(|m| m["id"] == id)
}

fn rss_mb(server: &Server) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    let kb: f64 = status.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok()).unwrap();
    kb / 1024.0
}

fn call(method: reqwest::Method, server: &Server, path: &str) -> (u16, Value) {
    let r = client().request(method, format!("{}{path}", server.url)).send().expect("request");
    (r.status().as_u16(), r.json().unwrap_or(Value::Null))
}

#[test]
fn two_models_answer_each_with_its_own_engine_and_the_idle_one_unloads() {
    let models = model_folder();
    let tmp = tempfile::tempdir().unwrap();
    let es = spanish(tmp.path());
    let server = Server::start(test_config(json!({
        "model": {"model_dir": models.path()},
        "models": {"ttl_s": 4, "max_loaded": 3},
        // Requests arriving together are batched, so models mixed in one
        // batch would show as answers in the wrong language.
        "batching": {"max_batch_size": 4, "max_wait_ms": 300},
    })));
    let listed = model_states(&server);
    let ids: Vec<&str> = listed.iter().filter_map(|m| m["id"].as_str()).collect();
    assert_eq!(&ids[..2], ["whisper-1", "tiny.en"], "{listed:?}");
    assert_eq!(state_of(&server, "tiny.en").unwrap()["state"], "loaded");
    assert_eq!(state_of(&server, "base").unwrap()["state"], "available");
    assert!(ids.contains(&"base-copy") && ids.contains(&"broken"), "{listed:?}");
    let before = rss_mb(&server);

    // The first request for base loads it (its cold start is measured).
    let cold = Instant::now();
    let (s, body, _) = transcribe(&server.url, &es, "base");
    let cold_s = cold.elapsed().as_secs_f64();
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["language"], "spanish", "{body}");
    let loaded = state_of(&server, "base").unwrap();
    assert_eq!(loaded["state"], "loaded", "{loaded}");
    let loaded_rss = rss_mb(&server);
    eprintln!("cold base request {cold_s:.2} s (load {} s); RSS {before:.0} -> {loaded_rss:.0} MB", loaded["load_s"]);

    // Both models at once: each request answered by the model it named.
    let jfk = jfk_wav();
    let mut handles = Vec::new();
    for (path, model) in [(&es, "base"), (&jfk, "tiny.en"), (&es, "base"), (&jfk, "whisper-1"), (&es, "Systran/faster-whisper-base")] {
        let (url, path, model) = (server.url.clone(), path.clone(), model.to_string());
        handles.push(std::thread::spawn(move || {
            let (status, body, _) = transcribe(&url, &path, &model);
            (model, status, body)
        }));
    }
    for h in handles {
        let (model, status, body) = h.join().unwrap();
        assert_eq!(status, 200, "{model}: {body}");
        if model.contains("base") {
            assert_eq!(body["language"], "spanish", "{model}: {body}");
        } else {
            assert_eq!(body["language"], "english", "{model}: {body}");
            assert!(body["text"].as_str().unwrap_or_default().contains("ask not what your country can do for you"), "{body}");
        }
    }

    // An async job names its model too.
    let (s, job) = common::cluster::submit_job(&server.url, &es, &[("model", "base"), ("response_format", "verbose_json")]);
    assert_eq!(s, 202, "{job}");
    let done = common::cluster::poll_job(&server.url, job["id"].as_str().unwrap(), &["completed", "failed"], Duration::from_secs(120));
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["result"]["language"], "spanish", "{done}");

    // Idle past models.ttl_s: unloaded, and its memory given back.
    let unloaded_in = Instant::now();
    wait_for("base to unload", Duration::from_secs(30), || (state_of(&server, "base").unwrap()["state"] == "available").then_some(()));
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_mb(&server);
    eprintln!("base unloaded {:.1} s after the TTL began; RSS {loaded_rss:.0} -> {after:.0} MB", unloaded_in.elapsed().as_secs_f64());
    assert!(loaded_rss - after > 50.0, "RSS {before:.0} -> {loaded_rss:.0} loaded -> {after:.0} unloaded");
    assert_eq!(state_of(&server, "tiny.en").unwrap()["state"], "loaded", "the default model stays");
    let (s, body) = server.get_json("/health");
    assert_eq!(s, 200, "{body}");
}

#[test]
fn the_cap_evicts_the_idle_model_and_what_cannot_load_is_a_clear_error() {
    let models = model_folder();
    let tmp = tempfile::tempdir().unwrap();
    let (long, _) = concat_corpus(tmp.path(), 60.0);
    let server = Server::start(test_config(json!({
        "model": {"model_dir": models.path()},
        "models": {"ttl_s": -1, "max_loaded": 2},
        "limits": {"max_audio_seconds": 600},
    })));
    // Preloaded by hand; the default model cannot be unloaded.
    let (s, body) = call(reqwest::Method::POST, &server, "/v1/models/base/load");
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["state"], "loaded", "{body}");
    let (s, body) = call(reqwest::Method::DELETE, &server, "/v1/models/tiny.en/load");
    assert_eq!(s, 409, "{body}");
    assert_eq!(body["error"]["code"], "conflict", "{body}");

    // A third model: base (idle, least recently used) makes room.
    let (s, body, _) = transcribe(&server.url, &jfk_wav(), "base-copy");
    assert_eq!(s, 200, "{body}");
    assert_eq!(state_of(&server, "base-copy").unwrap()["state"], "loaded");
    assert_eq!(state_of(&server, "base").unwrap()["state"], "available", "not evicted");

    // Not here and not downloadable (models.pull_on_demand is off): 404
    // naming the models present.
    let (s, body, _) = transcribe(&server.url, &jfk_wav(), "small");
    assert_eq!(s, 404, "{body}");
    assert_eq!(body["error"]["code"], "model_not_found", "{body}");
    let msg = body["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("tiny.en") && msg.contains("base-copy"), "{msg}");
    for path in ["../tiny.en", "/etc"] {
        let (s, body, _) = transcribe(&server.url, &jfk_wav(), path);
        assert_eq!(s, 404, "{path}: {body}");
    }

    // base-copy busy with a long file: it cannot be unloaded (409), and a
    // fourth model cannot load until it is idle (503 + Retry-After).
    let (url, long_path) = (server.url.clone(), long.clone());
    let busy = std::thread::spawn(move || transcribe(&url, &long_path, "base-copy"));
    wait_for("base-copy to be in use", Duration::from_secs(30), || {
        (state_of(&server, "base-copy").unwrap()["in_use"].as_u64() == Some(1)).then_some(())
    });
    let (s, body) = call(reqwest::Method::DELETE, &server, "/v1/models/base-copy/load");
    assert_eq!(s, 409, "{body}");
    let (s, body, retry) = transcribe(&server.url, &jfk_wav(), "base");
    assert_eq!(s, 503, "{body}");
    assert!(retry.is_some_and(|r| r.parse::<u64>().is_ok()), "no Retry-After: {body}");
    assert!(body["error"]["message"].as_str().unwrap_or_default().contains("models.max_loaded"), "{body}");
    let (s, body, _) = busy.join().unwrap();
    assert_eq!(s, 200, "{body}");

    // Idle now: unloaded by hand.
    let (s, body) = call(reqwest::Method::DELETE, &server, "/v1/models/base-copy/load");
    assert_eq!(s, 200, "{body}");
    assert_eq!(state_of(&server, "base-copy").unwrap()["state"], "available");

    // A model whose weights do not load: 503 saying so, the server healthy.
    let (s, body, _) = transcribe(&server.url, &jfk_wav(), "broken");
    assert_eq!(s, 503, "{body}");
    assert!(body["error"]["message"].as_str().unwrap_or_default().contains("cannot be loaded"), "{body}");
    assert_eq!(state_of(&server, "broken").unwrap()["state"], "available");
    let (s, _) = server.get_json("/health");
    assert_eq!(s, 200);
    let (s, body, _) = transcribe(&server.url, &jfk_wav(), "whisper-1");
    assert_eq!(s, 200, "{body}");
}

#[test]
fn loading_and_unloading_take_an_admin_key() {
    let models = model_folder();
    let server = Server::start(test_config(json!({
        "model": {"model_dir": models.path()},
        "auth": {"api_keys": [{"id": "alice", "key": "alice-key-123"}, {"id": "root", "key": "root-key-456", "role": "admin"}]},
    })));
    let send = |method: reqwest::Method, key: &str| {
        let r = client().request(method, format!("{}/v1/models/base/load", server.url)).bearer_auth(key).send().unwrap();
        (r.status().as_u16(), r.json::<Value>().unwrap_or(Value::Null))
    };
    let (s, body) = send(reqwest::Method::POST, "alice-key-123");
    assert_eq!(s, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden", "{body}");
    let (s, body) = send(reqwest::Method::POST, "root-key-456");
    assert_eq!(s, 200, "{body}");
    let (s, _) = send(reqwest::Method::DELETE, "alice-key-123");
    assert_eq!(s, 403);
    let (s, body) = send(reqwest::Method::DELETE, "root-key-456");
    assert_eq!(s, 200, "{body}");
}

#[test]
fn a_cluster_routes_each_model_to_its_workers() {
    let nats = Nats::start();
    let tmp = tempfile::tempdir().unwrap();
    let es = spanish(tmp.path());
    let config = cluster_config(&nats, json!({}));
    let _tiny = worker(config.clone());
    let mut base_config = config.clone();
    merge_json(&mut base_config, json!({"model": {"size": "base"}}));
    let _base = worker(base_config);
    let gw = gateway(config);
    common::cluster::wait_ready(&gw, Duration::from_secs(60));
    wait_for("both models in /v1/models", Duration::from_secs(30), || {
        let states = model_states(&gw);
        let loaded = |id: &str| states.iter().any(|m| m["id"] == id && m["state"] == "loaded");
        (loaded("tiny.en") && loaded("base")).then_some(())
    });
    let (s, body, _) = transcribe(&gw.url, &es, "Systran/faster-whisper-base");
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["language"], "spanish", "{body}");
    let (s, body, _) = transcribe(&gw.url, &jfk_wav(), "whisper-1");
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["language"], "english", "{body}");
    let (s, job) = common::cluster::submit_job(&gw.url, &es, &[("model", "base"), ("response_format", "verbose_json")]);
    assert_eq!(s, 202, "{job}");
    let done = common::cluster::poll_job(&gw.url, job["id"].as_str().unwrap(), &["completed", "failed"], Duration::from_secs(120));
    assert_eq!(done["result"]["language"], "spanish", "{done}");
    // No worker serves small: 404 naming the models the workers serve.
    let (s, body, _) = transcribe(&gw.url, &jfk_wav(), "small");
    assert_eq!(s, 404, "{body}");
    let msg = body["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("base") && msg.contains("tiny.en"), "{msg}");
    let (s, body) = call(reqwest::Method::POST, &gw, "/v1/models/small/load");
    assert_eq!(s, 409, "{body}");
}

#[test]
fn a_realtime_session_is_transcribed_by_the_model_it_names() {
    let models = model_folder();
    let server = Server::start(test_config(json!({
        "model": {"model_dir": models.path()},
        "models": {"ttl_s": -1},
    })));
    assert_eq!(state_of(&server, "base").expect("base listed")["state"], "available");
    // The official SDK, a manual commit of jfk.wav, `transcription.model`
    // naming base: the model loads for the session's decode.
    let run = common::realtime::check(&server, "manual", &["--model", "base", "--expect", JFK_TEXT]);
    assert!(run.ok, "realtime_check.py manual --model base\n{}\n{}", run.stdout, run.stderr);
    let report = run.report();
    let transcripts = report["transcripts"].as_array().cloned().unwrap_or_default();
    assert_eq!(transcripts.len(), 1, "{report}");
    let text = transcripts[0].as_str().unwrap_or_default();
    assert!(wer(&[(JFK_TEXT.to_string(), text.to_string())]) <= 0.1, "{text}");
    let base = state_of(&server, "base").expect("base listed");
    assert_eq!(base["state"], "loaded", "the session's model was not loaded: {base}");
    assert_eq!(state_of(&server, "tiny.en").unwrap()["state"], "loaded", "the default stays");
}
