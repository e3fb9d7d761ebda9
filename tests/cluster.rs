//! Gateway and workers over a real nats-server (JetStream, file store in a
//! temp dir), as separate processes of the real binary, with tiny.en and
//! real speech: load spread over workers, a worker killed mid-job, a poison
//! job, a NATS outage, and the async job API.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::{cluster_config, gateway, poll_job, submit_job, wait_for, wait_ready, worker, Nats, Webhooks};
use common::{client, concat_corpus, corpus, jfk_wav, post_file, wer, JFK_TEXT};
use serde_json::{json, Value};

/// Short clips of the corpus (under 12 s), as (path, reference).
fn short_clips() -> Vec<(std::path::PathBuf, String)> {
    corpus()
        .into_iter()
        .filter(|(p, _)| std::fs::metadata(p).map(|m| m.len() < 12 * 32_000 + 1_000).unwrap_or(false))
        .collect()
}

#[test]
fn three_workers_answer_100_requests_once_each() {
    let nats = Nats::start();
    let config = cluster_config(&nats, json!({}));
    let workers: Vec<_> = (0..3).map(|_| worker(config.clone())).collect();
    let gw = gateway(config);
    wait_ready(&gw, Duration::from_secs(60));
    let clips = short_clips();
    assert!(clips.len() >= 10, "need short clips");
    let jobs: Vec<(std::path::PathBuf, String)> = (0..100).map(|i| clips[i % clips.len()].clone()).collect();
    let jobs = Arc::new(Mutex::new(jobs.into_iter().enumerate().collect::<Vec<_>>()));
    let answers = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let (jobs, answers, url) = (jobs.clone(), answers.clone(), gw.url.clone());
            std::thread::spawn(move || loop {
                let Some((i, (path, reference))) = jobs.lock().unwrap().pop() else { break };
                let name = path.file_name().unwrap().to_str().unwrap().to_string();
                let (status, body) = post_file(&format!("{url}/transcribe"), "audio_file", &name, std::fs::read(&path).unwrap());
                answers.lock().unwrap().push((i, status, body, reference));
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
    let answers = answers.lock().unwrap();
    assert_eq!(answers.len(), 100);
    let mut pairs = Vec::new();
    for (i, status, body, reference) in answers.iter() {
        assert_eq!(*status, 200, "request {i}: {body}");
        pairs.push((reference.clone(), body["text"].as_str().unwrap_or_default().to_string()));
    }
    let w = wer(&pairs);
    assert!(w <= 0.08, "WER over the 100 answers {w:.4}");
    // Every job ran exactly once, and more than one worker took part.
    let done: Vec<f64> = workers.iter().map(|w| w.metric("whisper_serve_jobs_done_total")).collect();
    assert_eq!(done.iter().sum::<f64>(), 100.0, "jobs done per worker: {done:?}");
    assert!(done.iter().filter(|&&n| n > 0.0).count() > 1, "one worker did everything: {done:?}");
    let (_, health) = gw.get_json("/health");
    assert_eq!(health["workers_serving_model"], 3, "{health}");
    // The gateway's /v1/stats: its own requests, the workers as replicas,
    // and their decode steps from the heartbeats (within a few beats).
    let started = std::time::Instant::now();
    let stats = loop {
        let (s, stats) = gw.get_json("/v1/stats");
        assert_eq!(s, 200);
        let replicas_done: u64 = stats["load"]["replicas"].as_array().map_or(0, |r| r.iter().filter_map(|w| w["jobs_done"].as_u64()).sum());
        if replicas_done == 100 || started.elapsed() > Duration::from_secs(10) {
            break stats;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(stats["mode"], "gateway");
    assert_eq!(stats["totals"]["requests"], 100, "{stats}");
    assert_eq!(stats["totals"]["errors"], 0, "{stats}");
    assert_eq!(stats["load"]["replicas"].as_array().map(Vec::len), Some(3), "{stats}");
    assert_eq!(stats["model"]["device"], "cpu");
    assert!(stats["load"]["queue_depth"].is_u64(), "{stats}");
    // Every request needs at least one window: windows decoded (size x steps) >= 100.
    let windows: u64 = stats["batch_sizes"].as_object().map_or(0, |b| {
        b.iter().map(|(size, n)| size.parse::<u64>().unwrap_or(0) * n.as_u64().unwrap_or(0)).sum()
    });
    assert!(windows >= 100, "decode steps seen from the workers' heartbeats: {stats}");
    eprintln!("WER {w:.4}; jobs per worker {done:?}");
}

#[test]
fn a_worker_killed_mid_job_loses_nothing() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let (long, bounds) = concat_corpus(dir.path(), 60.0);
    let hooks = Webhooks::start();
    let config = cluster_config(&nats, json!({"cluster": {"ack_wait_s": 3}, "jobs": {"webhook_allow_hosts": ["127.0.0.1"]}}));
    let a = worker(config.clone());
    let b = worker(config.clone());
    let gw = gateway(config);
    wait_ready(&gw, Duration::from_secs(60));
    let (status, job) = submit_job(&gw.url, &long, &[("callback_url", &hooks.url)]);
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    // Whichever worker took it: kill it while it runs.
    let busy = wait_for("a worker to start the job", Duration::from_secs(30), || {
        [&a, &b].into_iter().position(|w| w.metric("whisper_serve_running") > 0.0)
    });
    let (victim, survivor) = if busy == 0 { (&a, &b) } else { (&b, &a) };
    poll_job(&gw.url, &id, &["running"], Duration::from_secs(10));
    victim.signal("-9");
    // A synchronous request meanwhile still gets one answer.
    let (s, body) = post_file(&format!("{}/transcribe", gw.url), "audio_file", "jfk.wav", std::fs::read(jfk_wav()).unwrap());
    assert_eq!(s, 200, "{body}");
    let done = poll_job(&gw.url, &id, &["completed", "failed"], Duration::from_secs(180));
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["attempts"], 2, "redelivered once: {done}");
    let text = done["result"]["text"].as_str().unwrap_or_default().to_string();
    let reference: Vec<String> = bounds.iter().map(|(_, r)| r.clone()).collect();
    let w = wer(&[(reference.join(" "), text)]);
    assert!(w <= 0.1, "WER {w:.4} of the redelivered job");
    assert!(survivor.metric("whisper_serve_jobs_done_total") >= 2.0, "the survivor finished it");
    // One webhook, not two.
    let hook = hooks.next(Duration::from_secs(20)).expect("a webhook");
    let v: Value = serde_json::from_slice(&hook.body).unwrap();
    assert_eq!(v["id"], id.as_str());
    assert!(hooks.next(Duration::from_secs(5)).is_none(), "a second webhook for one job");
}

/// Publishes a job message whose audio is not in the object store, as a
/// broken gateway (or an expired upload) would leave it.
fn publish_poison(nats_url: &str, id: &str) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = async_nats::connect(nats_url).await.expect("nats");
        let js = async_nats::jetstream::new(client);
        let request = whisper_serve::jobs::JobRequest {
            decode: Default::default(),
            response_format: Default::default(),
            granularities: Default::default(),
            model: "tiny.en".into(),
            callback_url: None,
            filename: Some("poison.wav".into()),
            request_id: "poison".into(),
            owner: whisper_serve::jobs::ANONYMOUS.into(),
        };
        let record = whisper_serve::jobs::JobRecord::new(id.to_string(), request.clone());
        let kv = js.get_key_value("whisper-jobs").await.expect("jobs bucket");
        kv.put(id, serde_json::to_vec(&record).unwrap().into()).await.expect("record");
        let msg = whisper_serve::cluster::JobMessage { id: id.into(), sync: false, request, audio_bytes: 1000, created_at_ms: record.created_at_ms };
        js.publish("whisper.jobs.tiny_en", serde_json::to_vec(&msg).unwrap().into()).await.unwrap().await.expect("ack");
    });
}

fn dead_letters(nats_url: &str) -> Vec<(String, Option<String>)> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = async_nats::connect(nats_url).await.expect("nats");
        let js = async_nats::jetstream::new(client);
        let mut stream = js.get_stream("WHISPER_DEAD").await.expect("dead-letter stream");
        let n = stream.info().await.expect("info").state.messages;
        let first = stream.cached_info().state.first_sequence;
        let mut out = Vec::new();
        for seq in first..first + n {
            if let Ok(m) = stream.get_raw_message(seq).await {
                let job: whisper_serve::cluster::JobMessage = serde_json::from_slice(&m.payload).expect("job message");
                let reason = m.headers.get(whisper_serve::cluster::DEAD_REASON_HEADER).map(|v| v.to_string());
                out.push((job.id, reason));
            }
        }
        out
    })
}

#[test]
fn a_poison_job_fails_after_max_deliver_and_is_dead_lettered() {
    let nats = Nats::start();
    let config = cluster_config(&nats, json!({"cluster": {"max_deliver": 3}}));
    let w = worker(config.clone());
    let gw = gateway(config);
    wait_ready(&gw, Duration::from_secs(60));
    let id = whisper_serve::jobs::new_id();
    publish_poison(&nats.url(), &id);
    let job = poll_job(&gw.url, &id, &["failed", "completed"], Duration::from_secs(60));
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["attempts"], 3, "{job}");
    assert!(job["error"]["message"].as_str().unwrap_or_default().contains("audio"), "{job}");
    let dead = dead_letters(&nats.url());
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].0, id);
    assert!(dead[0].1.is_some(), "the dead letter says why");
    let health = wait_for("health to count the dead letter", Duration::from_secs(5), || {
        let (_, h) = gw.get_json("/health");
        (h["dead_letters"] == 1).then_some(h)
    });
    assert_eq!(health["pending_jobs"], 0, "{health}");
    // The worker is fine afterwards.
    let (s, body) = post_file(&format!("{}/transcribe", gw.url), "audio_file", "jfk.wav", std::fs::read(jfk_wav()).unwrap());
    assert_eq!(s, 200, "{body}");
    assert!(w.metric("whisper_serve_jobs_done_total") >= 1.0);
}

#[test]
fn a_nats_outage_answers_503_fast_and_recovers() {
    let mut nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let (long, _) = concat_corpus(dir.path(), 25.0);
    // One transcription at a time, so the async jobs queue up.
    let config = cluster_config(&nats, json!({"batching": {"max_batch_size": 1}}));
    let _w = worker(config.clone());
    let gw = gateway(config);
    wait_ready(&gw, Duration::from_secs(60));
    let ids: Vec<String> = (0..3)
        .map(|_| {
            let (s, job) = submit_job(&gw.url, &long, &[]);
            assert_eq!(s, 202, "{job}");
            job["id"].as_str().unwrap().to_string()
        })
        .collect();
    nats.stop();
    let outage = Instant::now();
    let mut answered = 0;
    while outage.elapsed() < Duration::from_secs(10) {
        let t = Instant::now();
        let part = reqwest::blocking::multipart::Part::bytes(std::fs::read(jfk_wav()).unwrap()).file_name("jfk.wav");
        let form = reqwest::blocking::multipart::Form::new().part("audio_file", part);
        let r = client().post(format!("{}/transcribe", gw.url)).multipart(form).send().expect("request");
        let took = t.elapsed();
        assert_eq!(r.status().as_u16(), 503, "during the outage");
        assert!(r.headers().get("retry-after").is_some(), "Retry-After on 503");
        let body: Value = r.json().expect("JSON body");
        assert_eq!(body["success"], false, "{body}");
        assert!(took < Duration::from_secs(1), "503 took {took:?}");
        answered += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(answered >= 5);
    nats.spawn();
    // Recovers by itself: later requests succeed.
    let body = wait_for("a request to succeed after the outage", Duration::from_secs(60), || {
        let (s, body) = post_file(&format!("{}/transcribe", gw.url), "audio_file", "jfk.wav", std::fs::read(jfk_wav()).unwrap());
        (s == 200).then_some(body)
    });
    assert_eq!(wer(&[(JFK_TEXT.into(), body["text"].as_str().unwrap().into())]), 0.0, "{body}");
    for id in &ids {
        let job = poll_job(&gw.url, id, &["completed", "failed"], Duration::from_secs(240));
        assert_eq!(job["status"], "completed", "{job}");
    }
}

#[test]
fn the_async_job_api_over_nats() {
    let nats = Nats::start();
    let hooks = Webhooks::start();
    let secret = "test-secret";
    let config = cluster_config(&nats, json!({"jobs": {"webhook_secret": secret, "webhook_allow_hosts": ["127.0.0.1"]}}));
    // No worker yet: jobs wait in JetStream.
    let gw = gateway(config.clone());
    let (s, queued) = wait_for("the gateway to reach NATS", Duration::from_secs(30), || {
        let r = submit_job(&gw.url, &jfk_wav(), &[]);
        (r.0 != 503 && r.0 != 0).then_some(r)
    });
    assert_eq!(s, 202, "{queued}");
    assert_eq!(queued["status"], "queued");
    let cancelled_id = queued["id"].as_str().unwrap().to_string();
    let r = client().delete(format!("{}/v1/jobs/{cancelled_id}", gw.url)).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().unwrap();
    assert_eq!(v["status"], "cancelled");
    let (s, _) = gw.get_json("/v1/jobs/not-a-job");
    assert_eq!(s, 404);

    let w = worker(config);
    wait_ready(&gw, Duration::from_secs(60));
    let (s, job) = submit_job(&gw.url, &jfk_wav(), &[("callback_url", &hooks.url), ("response_format", "verbose_json")]);
    assert_eq!(s, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    let done = poll_job(&gw.url, &id, &["completed", "failed"], Duration::from_secs(60));
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(wer(&[(JFK_TEXT.into(), done["result"]["text"].as_str().unwrap().into())]), 0.0, "{done}");
    assert!(done["result"]["segments"].as_array().is_some_and(|s| !s.is_empty()), "verbose_json result");
    assert!((done["audio_seconds"].as_f64().unwrap() - 11.0).abs() < 0.1);

    let hook = hooks.next(Duration::from_secs(20)).expect("a webhook");
    let ts: i64 = hook.header(whisper_serve::jobs::webhook::TIMESTAMP_HEADER).expect("timestamp").parse().unwrap();
    let sig = hook.header(whisper_serve::jobs::webhook::SIGNATURE_HEADER).expect("signature");
    assert!(whisper_serve::jobs::webhook::verify(secret.as_bytes(), ts, &hook.body, sig), "signature verifies");
    assert!(!whisper_serve::jobs::webhook::verify(b"other", ts, &hook.body, sig));
    let v: Value = serde_json::from_slice(&hook.body).unwrap();
    assert_eq!(v["id"], id.as_str());
    assert_eq!(v["status"], "completed");

    // The cancelled job stayed cancelled, and never ran.
    let (_, c) = gw.get_json(&format!("/v1/jobs/{cancelled_id}"));
    assert_eq!(c["status"], "cancelled", "{c}");
    assert_eq!(w.metric("whisper_serve_jobs_done_total"), 1.0);
    // The gateway's stats count the async job's completion (with its audio)
    // and the cancelled one, as they were written by the worker and gateway.
    let (_, stats) = gw.get_json("/v1/stats");
    let recent = stats["recent"].as_array().expect("recent");
    let finished: Vec<u64> = recent.iter().filter(|r| r["method"] == "JOB").filter_map(|r| r["status"].as_u64()).collect();
    assert!(finished.contains(&200) && finished.contains(&499), "{stats}");
    assert!((stats["totals"]["audio_seconds"].as_f64().unwrap_or(0.0) - 11.0).abs() < 0.1, "{stats}");
    // Listing, newest first, paged.
    let (s, page) = gw.get_json("/v1/jobs?limit=1");
    assert_eq!(s, 200);
    assert_eq!(page["data"][0]["id"], id.as_str(), "{page}");
    assert_eq!(page["has_more"], true);
    let next = page["next"].as_str().unwrap();
    let (_, page2) = gw.get_json(&format!("/v1/jobs?limit=1&after={next}"));
    assert_eq!(page2["data"][0]["id"], cancelled_id.as_str(), "{page2}");
    assert_eq!(page2["has_more"], false);
    // Cancelling a finished job is a conflict.
    let r = client().delete(format!("{}/v1/jobs/{id}", gw.url)).send().unwrap();
    assert_eq!(r.status().as_u16(), 409);
}

#[test]
fn cluster_status_prints_the_workers() {
    let nats = Nats::start();
    let config = cluster_config(&nats, json!({}));
    let _w = worker(config.clone());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
    let out = std::process::Command::new(common::bin()).args(["cluster", "status", "--config"]).arg(&path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("workers serving tiny.en: 1"), "{text}");
    assert!(text.contains("worker-"), "{text}");
    assert!(text.contains("dead letters: 0"), "{text}");
}

#[test]
fn queued_jobs_survive_a_gateway_restart_and_sigterm_drains_a_worker() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let (long, _) = concat_corpus(dir.path(), 30.0);
    let config = cluster_config(&nats, json!({}));
    // Jobs queued with no worker; the gateway is killed outright.
    let gw = gateway(config.clone());
    let queued: Vec<String> = (0..2)
        .map(|_| {
            let (s, job) = wait_for("the gateway to take a job", Duration::from_secs(30), || {
                let r = submit_job(&gw.url, &long, &[]);
                (r.0 != 503 && r.0 != 0).then_some(r)
            });
            assert_eq!(s, 202, "{job}");
            job["id"].as_str().unwrap().to_string()
        })
        .collect();
    gw.signal("-9");
    drop(gw);
    let gw = gateway(config.clone());
    let mut a = worker(config.clone());
    wait_ready(&gw, Duration::from_secs(60));
    // SIGTERM while both run: the worker finishes them, then exits 0.
    wait_for("the worker to run both jobs", Duration::from_secs(30), || (a.metric("whisper_serve_running") >= 2.0).then_some(()));
    a.signal("-TERM");
    let status = a.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "worker exit {status:?}");
    for id in &queued {
        let job = poll_job(&gw.url, id, &["completed", "failed"], Duration::from_secs(10));
        assert_eq!(job["status"], "completed", "{job}");
        assert_eq!(job["attempts"], 1, "finished by the worker that was stopping: {job}");
    }
    // A worker that cannot finish within shutdown_timeout_s hands its job back.
    let dir2 = tempfile::tempdir().unwrap();
    let (longer, _) = concat_corpus(dir2.path(), 240.0);
    let mut b = worker(merged(&config, json!({"server": {"shutdown_timeout_s": 1}})));
    let (_, job) = submit_job(&gw.url, &longer, &[]);
    let id = job["id"].as_str().unwrap().to_string();
    poll_job(&gw.url, &id, &["running"], Duration::from_secs(30));
    b.signal("-TERM");
    assert!(b.wait_exit(Duration::from_secs(20)).success());
    let _c = worker(config);
    let job = poll_job(&gw.url, &id, &["completed", "failed"], Duration::from_secs(120));
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["attempts"], 2, "{job}");
}

fn merged(base: &Value, over: Value) -> Value {
    let mut c = base.clone();
    common::merge_json(&mut c, over);
    c
}

#[test]
fn existing_streams_with_other_settings_are_reported_not_changed() {
    let nats = Nats::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
        js.create_stream(async_nats::jetstream::stream::Config {
            name: "WHISPER_JOBS".into(),
            subjects: vec!["whisper.jobs.>".into()],
            retention: async_nats::jetstream::stream::RetentionPolicy::Limits,
            ..Default::default()
        })
        .await
        .unwrap();
    });
    let config = cluster_config(&nats, json!({"logging": {"level": "INFO"}}));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
    let out = std::process::Command::new(common::bin()).args(["cluster", "status", "--config"]).arg(&path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(log.contains("exists with other settings") && log.contains("WHISPER_JOBS"), "{log}");
    let retention = rt.block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
        js.get_stream("WHISPER_JOBS").await.unwrap().cached_info().config.retention
    });
    assert_eq!(retention, async_nats::jetstream::stream::RetentionPolicy::Limits, "left as it was");
}

#[test]
fn a_transcript_bigger_than_a_nats_message_is_kept_whole() {
    // A server taking messages of 32 KB at most: a 4-minute verbose_json
    // record is bigger, so its transcript goes to the object store.
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("nats.conf");
    std::fs::write(&conf, "max_payload: 32768\n").unwrap();
    let nats = Nats::start_with(&["-c", conf.to_str().unwrap()]);
    let (long, bounds) = concat_corpus(dir.path(), 240.0);
    let config = cluster_config(&nats, json!({}));
    let _w = worker(config.clone());
    let gw = gateway(config);
    wait_ready(&gw, Duration::from_secs(60));
    let (s, job) = submit_job(&gw.url, &long, &[("response_format", "verbose_json")]);
    assert_eq!(s, 202, "{job}");
    let id = job["id"].as_str().unwrap();
    let done = poll_job(&gw.url, id, &["completed", "failed"], Duration::from_secs(240));
    assert_eq!(done["status"], "completed", "{}", &done.to_string()[..500.min(done.to_string().len())]);
    // The record in the bucket points at the transcript instead of holding it.
    let stored: Value = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
        let kv = js.get_key_value("whisper-jobs").await.unwrap();
        serde_json::from_slice(&kv.get(id).await.unwrap().expect("record")).unwrap()
    });
    assert_eq!(stored["transcript"], Value::Null, "spilled");
    assert_eq!(stored["transcript_object"], format!("result-{id}").as_str());
    let reference: Vec<String> = bounds.iter().map(|(_, r)| r.clone()).collect();
    let w = wer(&[(reference.join(" "), done["result"]["text"].as_str().unwrap().to_string())]);
    assert!(w <= 0.1, "WER {w:.4}");
    // The synchronous route too.
    let (s, body) = post_file(&format!("{}/v1/audio/transcriptions", gw.url), "file", "long.wav", std::fs::read(&long).unwrap());
    assert_eq!(s, 400, "model is required on /v1: {body}");
    let part = reqwest::blocking::multipart::Part::bytes(std::fs::read(&long).unwrap()).file_name("long.wav");
    let form = reqwest::blocking::multipart::Form::new().part("file", part).text("model", "whisper-1").text("response_format", "verbose_json");
    let r = client().post(format!("{}/v1/audio/transcriptions", gw.url)).multipart(form).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().unwrap();
    assert!(v["segments"].as_array().is_some_and(|s| s.len() > 10), "whole transcript");
}
