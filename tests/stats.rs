//! `GET /v1/stats`: the dashboard's numbers after known requests.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn post(server: &Server, path: &str, field: &str, bytes: Vec<u8>, fields: &[(&str, &str)], request_id: &str) -> u16 {
    let mut form = reqwest::blocking::multipart::Form::new()
        .part(field.to_string(), reqwest::blocking::multipart::Part::bytes(bytes).file_name("a.wav"));
    for (k, v) in fields {
        form = form.text(k.to_string(), v.to_string());
    }
    client()
        .post(format!("{}{path}", server.url))
        .header("x-request-id", request_id)
        .multipart(form)
        .send()
        .expect("post")
        .status()
        .as_u16()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 0.05
}

#[test]
fn stats_count_known_requests_and_nothing_else() {
    let server = Server::start(test_config(json!({"deployment": {"num_replicas": 2}})));
    let jfk = std::fs::read(jfk_wav()).expect("jfk.wav");
    let (_, before) = server.get_json("/v1/stats");
    assert_eq!(before["object"], "stats");
    assert_eq!(before["totals"]["requests"], 0, "{before}");
    assert_eq!(before["mode"], "serve");
    assert_eq!(before["model"]["name"], "tiny.en");
    assert_eq!(before["model"]["device"], "cpu");
    assert!(before["model"]["compute_type"].is_string());
    assert_eq!(before["load"]["replicas"].as_array().map(Vec::len), Some(2));
    assert_eq!(before["series"]["points"].as_array().map(Vec::len), Some(300));

    assert_eq!(post(&server, "/transcribe", "audio_file", jfk.clone(), &[], "req-one"), 200);
    assert_eq!(post(&server, "/v1/audio/transcriptions", "file", jfk.clone(), &[("model", "whisper-1")], "req-two"), 200);
    assert_eq!(post(&server, "/v1/audio/transcriptions", "file", b"not audio at all".to_vec(), &[("model", "whisper-1")], "req-bad"), 400);
    assert_eq!(post(&server, "/v1/jobs", "file", jfk.clone(), &[], "req-job"), 202);
    // None of these count: probes, pages, job polling, stats polling, unknown routes.
    for path in ["/health", "/", "/dashboard", "/v1/jobs", "/v1/models", "/metrics", "/nope"] {
        let _ = client().get(format!("{}{path}", server.url)).send().expect("get");
    }
    let started = Instant::now();
    let stats = loop {
        let (s, stats) = server.get_json("/v1/stats?window_s=120&recent=10");
        assert_eq!(s, 200);
        if stats["totals"]["jobs_finished"] == 1 {
            break stats;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "the job never finished: {stats}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let t = &stats["totals"];
    assert_eq!(t["requests"], 4, "{stats}");
    assert_eq!(t["errors"], 1, "{stats}");
    // Three transcriptions of jfk.wav (11 s): two sync, one job.
    let audio = t["audio_seconds"].as_f64().expect("audio");
    assert!(close(audio, 33.0), "audio_seconds {audio}");
    let now = &stats["now"];
    assert_eq!(now["requests"], 4);
    assert!(close(now["error_rate"].as_f64().expect("rate"), 0.25));
    let (p50, p95) = (now["p50_ms"].as_f64().expect("p50"), now["p95_ms"].as_f64().expect("p95"));
    assert!(p50 > 0.0 && p95 >= p50, "{now}");
    assert!(now["requests_per_s"].as_f64().expect("rps") > 0.0);
    assert_eq!(stats["window"]["window_s"], 120);
    assert_eq!(stats["series"]["points"].as_array().map(Vec::len), Some(60));

    // The series adds up to the totals.
    let points = stats["series"]["points"].as_array().expect("points");
    let sum = |k: &str| points.iter().map(|p| p[k].as_f64().unwrap_or(0.0)).sum::<f64>();
    assert_eq!(sum("requests"), 4.0);
    assert_eq!(sum("errors"), 1.0);
    assert!(close(sum("audio_seconds"), 33.0));
    assert!(points.iter().any(|p| p["queue_depth"].is_u64()), "no sampled queue depth: {stats}");

    // Decode steps were counted, by batch size.
    let steps: u64 = stats["batch_sizes"].as_object().expect("batch sizes").values().filter_map(Value::as_u64).sum();
    assert!(steps >= 3, "{stats}");
    assert_eq!(sum("batch_steps") as u64, steps);

    // The recent list: ids, routes and statuses, newest first; no transcript.
    let recent = stats["recent"].as_array().expect("recent");
    let find = |id: &str, method: &str| recent.iter().find(|r| r["request_id"] == id && r["method"] == method).cloned();
    let one = find("req-one", "POST").expect("req-one listed");
    assert_eq!((one["route"].as_str(), one["status"].as_u64()), (Some("/transcribe"), Some(200)));
    assert!(close(one["audio_seconds"].as_f64().expect("audio"), 11.0));
    assert_eq!(find("req-bad", "POST").expect("req-bad")["status"], 400);
    assert_eq!(find("req-job", "POST").expect("job post")["status"], 202);
    assert_eq!(find("req-job", "JOB").expect("job done")["status"], 200);
    assert_eq!(recent.len(), 5);
    let text = stats.to_string().to_lowercase();
    assert!(!text.contains("fellow americans") && !text.contains("your country"), "a transcript leaked: {stats}");

    // Parameters out of range: 400 in OpenAI's shape.
    for q in ["window_s=1", "window_s=601", "recent=51"] {
        let (s, body) = server.get_json(&format!("/v1/stats?{q}"));
        assert_eq!(s, 400, "{q}");
        assert_eq!(body["error"]["code"], "invalid_param", "{body}");
    }
}

#[test]
fn stats_need_a_key_only_with_metrics_requires_key() {
    let open = Server::start(test_config(json!({"auth": {"api_keys": ["key-one-12345"]}})));
    assert_eq!(open.get_json("/v1/stats").0, 200);
    let keyed = Server::start(test_config(json!({"auth": {"api_keys": ["key-one-12345"], "metrics_requires_key": true}})));
    let (s, body) = keyed.get_json("/v1/stats");
    assert_eq!(s, 401);
    assert_eq!(body["error"]["code"], "invalid_api_key", "{body}");
    let r = client().get(format!("{}/v1/stats", keyed.url)).bearer_auth("key-one-12345").send().expect("get");
    assert_eq!(r.status().as_u16(), 200);
}
