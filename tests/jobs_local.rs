//! The async job API of `serve` (no NATS): submit, poll, cancel, list,
//! signed webhooks, and jobs that survive a restart of the server.

mod common;

use std::time::Duration;

use common::cluster::{poll_job, submit_job, Webhooks};
use common::{client, concat_corpus, jfk_wav, test_config, wer, Server, JFK_TEXT};
use serde_json::{json, Value};

fn local_config(jobs_dir: &std::path::Path, extra: Value) -> Value {
    let mut c = test_config(json!({
        "deployment": {"num_replicas": 1, "cpu_per_replica": 2},
        // One transcription at a time, so later jobs wait in the queue.
        "batching": {"max_batch_size": 1},
        "jobs": {"dir": jobs_dir, "webhook_secret": "s3cret", "webhook_allow_hosts": ["127.0.0.1"]},
    }));
    common::merge_json(&mut c, extra);
    c
}

#[test]
fn jobs_run_cancel_list_and_call_back() {
    let jobs = tempfile::tempdir().unwrap();
    let audio = tempfile::tempdir().unwrap();
    let (long, _) = concat_corpus(audio.path(), 40.0);
    let hooks = Webhooks::start();
    let server = Server::start(local_config(jobs.path(), json!({})));

    let (s, first) = submit_job(&server.url, &long, &[("callback_url", &hooks.url), ("response_format", "srt")]);
    assert_eq!(s, 202, "{first}");
    let first_id = first["id"].as_str().unwrap().to_string();
    let (s, second) = submit_job(&server.url, &jfk_wav(), &[]);
    assert_eq!(s, 202, "{second}");
    let second_id = second["id"].as_str().unwrap().to_string();
    // The second waits behind the first: cancel it while queued.
    let (_, now) = server.get_json(&format!("/v1/jobs/{second_id}"));
    assert_eq!(now["status"], "queued", "{now}");
    let r = client().delete(format!("{}/v1/jobs/{second_id}", server.url)).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);

    let done = poll_job(&server.url, &first_id, &["completed", "failed"], Duration::from_secs(120));
    assert_eq!(done["status"], "completed", "{done}");
    let srt = done["result"].as_str().expect("srt as text");
    assert!(srt.starts_with("1\n00:00:00,"), "{srt}");
    let hook = hooks.next(Duration::from_secs(20)).expect("webhook");
    let ts: i64 = hook.header("X-Whisper-Timestamp").unwrap().parse().unwrap();
    assert!(whisper_serve::jobs::webhook::verify(b"s3cret", ts, &hook.body, hook.header("X-Whisper-Signature").unwrap()));
    let (_, cancelled) = server.get_json(&format!("/v1/jobs/{second_id}"));
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    assert_eq!(cancelled["result"], Value::Null);

    let (_, page) = server.get_json("/v1/jobs?limit=1");
    assert_eq!(page["data"][0]["id"], second_id.as_str(), "newest first: {page}");
    let (_, page2) = server.get_json(&format!("/v1/jobs?limit=5&after={}", page["next"].as_str().unwrap()));
    assert_eq!(page2["data"][0]["id"], first_id.as_str());
    assert_eq!(page2["has_more"], false);
    // Bad input to the job routes, in OpenAI's error shape.
    let (s, e) = server.get_json("/v1/jobs/../../etc");
    assert!(s == 404, "{s} {e}");
    let (s, e) = submit_job(&server.url, &jfk_wav(), &[("callback_url", "ftp://example.invalid/x")]);
    assert_eq!(s, 400, "{e}");
    assert_eq!(e["error"]["param"], "callback_url");
    let (s, e) = server.get_json("/v1/jobs?limit=0");
    assert_eq!(s, 400, "{e}");
}

#[test]
fn queued_jobs_survive_a_restart() {
    let jobs = tempfile::tempdir().unwrap();
    let audio = tempfile::tempdir().unwrap();
    let (long, _) = concat_corpus(audio.path(), 40.0);
    let config = local_config(jobs.path(), json!({}));
    let server = Server::start(config.clone());
    let (_, a) = submit_job(&server.url, &long, &[]);
    let (_, b) = submit_job(&server.url, &jfk_wav(), &[]);
    let (a, b) = (a["id"].as_str().unwrap().to_string(), b["id"].as_str().unwrap().to_string());
    let (_, now) = server.get_json(&format!("/v1/jobs/{b}"));
    assert_eq!(now["status"], "queued", "{now}");
    // Killed outright, with one job running and one queued.
    server.signal("-9");
    drop(server);
    let server = Server::start(config);
    for id in [&a, &b] {
        let job = poll_job(&server.url, id, &["completed", "failed"], Duration::from_secs(120));
        assert_eq!(job["status"], "completed", "{job}");
    }
    let (_, job_b) = server.get_json(&format!("/v1/jobs/{b}"));
    assert_eq!(wer(&[(JFK_TEXT.into(), job_b["result"]["text"].as_str().unwrap().into())]), 0.0, "{job_b}");
    // The audio files are gone once the jobs are done.
    let left = std::fs::read_dir(jobs.path().join("audio")).unwrap().count();
    assert_eq!(left, 0, "audio files left behind");
}
