//! Nothing accepted is lost or run twice: a job accepted while the model
//! loads runs once with one webhook; a job that keeps killing the process
//! ends failed after `jobs.max_attempts`; a SIGKILL right after the 202
//! loses nothing; a cut-off upload leaves no file; the audio quota counts
//! jobs; a cancel that lands during a cluster job sends no "completed".

mod common;

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use common::cluster::{cluster_config, gateway, poll_job, submit_job, wait_for, wait_ready, worker, Nats, Webhooks};
use common::{client, concat_corpus, jfk_wav, test_config, Server};
use serde_json::{json, Value};

fn local(jobs_dir: &Path, extra: Value) -> Value {
    let mut c = test_config(json!({
        "deployment": {"num_replicas": 1, "cpu_per_replica": 2},
        "jobs": {"dir": jobs_dir, "webhook_allow_hosts": ["127.0.0.1"]},
    }));
    common::merge_json(&mut c, extra);
    c
}

/// The webhooks that arrive within `quiet` of each other, up to `limit`.
fn hooks_for(hooks: &Webhooks, id: &str, limit: Duration, quiet: Duration) -> Vec<Value> {
    let mut got = Vec::new();
    let start = Instant::now();
    let mut wait = limit;
    while let Some(h) = hooks.next(wait) {
        let body: Value = serde_json::from_slice(&h.body).unwrap_or(Value::Null);
        if body["id"] == id {
            got.push(body);
        }
        wait = quiet;
        if start.elapsed() > limit + quiet {
            break;
        }
    }
    got
}

fn audio_files(jobs_dir: &Path) -> Vec<String> {
    std::fs::read_dir(jobs_dir.join("audio"))
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

#[test]
fn a_job_accepted_while_the_model_loads_runs_once() {
    let jobs = tempfile::tempdir().unwrap();
    let hooks = Webhooks::start();
    // Not waiting for /health: the job goes in while the model loads.
    let server = Server::start_role("serve", local(jobs.path(), json!({})), &[], false);
    let (s, health) = server.get_json("/health");
    let (s_job, v) = submit_job(&server.url, &jfk_wav(), &[("callback_url", &hooks.url)]);
    assert_eq!(s_job, 202, "{v}");
    assert_ne!((s, &health["status"]), (200, &json!("healthy")), "the model had loaded already; the test proves nothing: {health}");
    let id = v["id"].as_str().unwrap().to_string();
    let done = poll_job(&server.url, &id, &["completed", "failed"], Duration::from_secs(120));
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["attempts"], 1, "started more than once: {done}");
    let got = hooks_for(&hooks, &id, Duration::from_secs(20), Duration::from_secs(5));
    assert_eq!(got.len(), 1, "one webhook, got {}: {got:?}", got.len());
    assert_eq!(got[0]["status"], "completed");
}

#[test]
fn a_job_that_keeps_killing_the_process_ends_failed_after_max_attempts() {
    let jobs = tempfile::tempdir().unwrap();
    let audio = tempfile::tempdir().unwrap();
    let poison = audio.path().join("abort-process.wav");
    std::fs::copy(jfk_wav(), &poison).unwrap();
    let hooks = Webhooks::start();
    let config = local(jobs.path(), json!({"jobs": {"max_attempts": 2}}));
    let env = [("WHISPER_SERVE_TEST_FAULTS", "1")];
    let mut server = Server::start_env(config.clone(), &env);
    let (s, v) = submit_job(&server.url, &poison, &[("callback_url", &hooks.url)]);
    assert_eq!(s, 202, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    // Attempt 1 takes the process down; the restart runs attempt 2, which
    // takes it down again.
    assert!(!server.wait_exit(Duration::from_secs(60)).success());
    let mut server = Server::start_role("serve", config.clone(), &env, false);
    assert!(!server.wait_exit(Duration::from_secs(120)).success());
    // The third start gives up on it: failed, with the reason and a webhook.
    let server = Server::start_env(config, &env);
    let (s, v) = server.get_json(&format!("/v1/jobs/{id}"));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"], "failed", "{v}");
    assert_eq!(v["error"]["code"], "job_interrupted", "{v}");
    assert_eq!(v["attempts"], 2, "{v}");
    let got = hooks_for(&hooks, &id, Duration::from_secs(20), Duration::from_secs(3));
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["status"], "failed");
    // And the server works on.
    let (s, v) = submit_job(&server.url, &jfk_wav(), &[]);
    assert_eq!(s, 202, "{v}");
    let done = poll_job(&server.url, v["id"].as_str().unwrap(), &["completed", "failed"], Duration::from_secs(120));
    assert_eq!(done["status"], "completed", "{done}");
}

#[test]
fn sigkill_right_after_202_loses_nothing() {
    let jobs = tempfile::tempdir().unwrap();
    let config = local(jobs.path(), json!({}));
    let server = Server::start(config.clone());
    let (s, v) = submit_job(&server.url, &jfk_wav(), &[]);
    assert_eq!(s, 202, "{v}");
    server.signal("-9");
    drop(server);
    let id = v["id"].as_str().unwrap().to_string();
    let server = Server::start(config);
    let done = poll_job(&server.url, &id, &["completed", "failed"], Duration::from_secs(120));
    assert_eq!(done["status"], "completed", "{done}");
    assert!(done["result"]["text"].as_str().unwrap_or_default().to_lowercase().contains("country"), "{done}");
}

#[test]
fn an_upload_cut_off_by_the_client_leaves_no_file() {
    let jobs = tempfile::tempdir().unwrap();
    let server = Server::start(local(jobs.path(), json!({})));
    let addr = server.url.trim_start_matches("http://").to_string();
    let audio = std::fs::read(jfk_wav()).unwrap();
    let boundary = "XyZbOuNdArY";
    let head = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\n");
    let total = head.len() + audio.len() + 64;
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    write!(s, "POST /v1/jobs HTTP/1.1\r\nHost: {addr}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {total}\r\n\r\n").unwrap();
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&audio[..audio.len() / 2]).unwrap();
    s.flush().unwrap();
    // The server is writing the upload now; then the client goes away.
    wait_for("the upload to reach the disk", Duration::from_secs(10), || (!audio_files(jobs.path()).is_empty()).then_some(()));
    drop(s);
    wait_for("the partial upload to be removed", Duration::from_secs(10), || audio_files(jobs.path()).is_empty().then_some(()));
    let (_, page) = server.get_json("/v1/jobs");
    assert_eq!(page["data"], json!([]), "{page}");
    // Files left by a crash with no job row are swept at start.
    let stray = jobs.path().join("audio").join(format!("{}.part", uuid::Uuid::new_v4()));
    std::fs::write(&stray, b"half an upload").unwrap();
    drop(server);
    let _server = Server::start(local(jobs.path(), json!({})));
    assert!(!stray.exists(), "a stray upload survived the restart");
}

#[test]
fn the_audio_quota_counts_jobs_and_refuses_once_spent() {
    let jobs = tempfile::tempdir().unwrap();
    const KEY: &str = "quota-key-0001";
    let server = Server::start(local(jobs.path(), json!({
        "auth": {"api_keys": [{"id": "q", "key": KEY}]},
        // JFK is 11 s: one job spends the 10 s day. A request carries at most 60 s.
        "rate_limit": {"audio_seconds_per_day": 10},
        "limits": {"max_audio_seconds": 60},
    })));
    let submit = || {
        let part = reqwest::blocking::multipart::Part::bytes(std::fs::read(jfk_wav()).unwrap()).file_name("a.wav");
        let form = reqwest::blocking::multipart::Form::new().part("file", part);
        let r = client().post(format!("{}/v1/jobs", server.url)).bearer_auth(KEY).multipart(form).send().unwrap();
        (r.status().as_u16(), r.json::<Value>().unwrap_or(Value::Null))
    };
    let (s, first) = submit();
    assert_eq!(s, 202, "{first}");
    // While it runs, it could use the rest of the day: the next waits.
    let (s, busy) = submit();
    assert_eq!(s, 429, "{busy}");
    assert_eq!(busy["error"]["code"], "quota_busy", "{busy}");
    let id = first["id"].as_str().unwrap();
    wait_for("the job to finish", Duration::from_secs(120), || {
        let r = client().get(format!("{}/v1/jobs/{id}", server.url)).bearer_auth(KEY).send().ok()?;
        let v: Value = r.json().ok()?;
        (v["status"] == "completed").then_some(())
    });
    // Its 11 s spent the day: the next job is refused, reading is not.
    let (s, spent) = submit();
    assert_eq!(s, 429, "{spent}");
    assert_eq!(spent["error"]["code"], "quota_exceeded", "{spent}");
    let r = client().get(format!("{}/v1/jobs/{id}", server.url)).bearer_auth(KEY).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

#[test]
fn a_cancel_during_a_cluster_job_sends_no_completed_callback() {
    let nats = Nats::start();
    let audio = tempfile::tempdir().unwrap();
    let (long, _) = concat_corpus(audio.path(), 120.0);
    let hooks = Webhooks::start();
    let cfg = cluster_config(&nats, json!({"jobs": {"webhook_allow_hosts": ["127.0.0.1"]}, "batching": {"max_batch_size": 1}}));
    let _w = worker(cfg.clone());
    let gw = gateway(cfg);
    wait_ready(&gw, Duration::from_secs(120));
    let (s, v) = submit_job(&gw.url, &long, &[("callback_url", &hooks.url)]);
    assert_eq!(s, 202, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    poll_job(&gw.url, &id, &["running"], Duration::from_secs(60));
    let r = client().delete(format!("{}/v1/jobs/{id}", gw.url)).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // Long enough for the worker to finish the 2-minute file had it not stopped.
    let got = hooks_for(&hooks, &id, Duration::from_secs(40), Duration::from_secs(40));
    assert!(got.iter().all(|h| h["status"] != "completed"), "a completed callback after the cancel: {got:?}");
    let (_, v) = gw.get_json(&format!("/v1/jobs/{id}"));
    assert_eq!(v["status"], "cancelled", "{v}");
}
