//! Jobs belong to the key that made them: another key reads, lists and
//! cancels nothing of them (404, as if they did not exist), an admin key
//! sees all, in `serve` and through a gateway alike; `/v1/stats` lists a
//! caller's own requests only.

mod common;

use std::path::Path;
use std::time::Duration;

use common::cluster::{cluster_config, gateway, wait_for, wait_ready, worker, Nats};
use common::{client, jfk_wav, test_config, Server};
use serde_json::{json, Value};

const ALICE: &str = "alice-key-0001";
const BOB: &str = "bob-key-00002";
const ROOT: &str = "root-key-00003";

fn keys() -> Value {
    json!({"auth": {"api_keys": [
        {"id": "alice", "key": ALICE},
        {"id": "bob", "key": BOB},
        {"id": "root", "key": ROOT, "role": "admin"},
    ]}})
}

fn submit(url: &str, key: &str, path: &Path, fields: &[(&str, &str)]) -> (u16, Value) {
    let part = reqwest::blocking::multipart::Part::bytes(std::fs::read(path).expect("audio")).file_name("a.wav");
    let mut form = reqwest::blocking::multipart::Form::new().part("file", part);
    for (k, v) in fields {
        form = form.text(k.to_string(), v.to_string());
    }
    let r = client().post(format!("{url}/v1/jobs")).bearer_auth(key).multipart(form).send().expect("submit");
    (r.status().as_u16(), r.json().unwrap_or(Value::Null))
}

fn call(method: reqwest::Method, url: &str, key: Option<&str>) -> (u16, Value) {
    let mut r = client().request(method, url);
    if let Some(k) = key {
        r = r.bearer_auth(k);
    }
    let r = r.send().expect("request");
    (r.status().as_u16(), r.json().unwrap_or(Value::Null))
}

fn get(url: &str, key: Option<&str>) -> (u16, Value) {
    call(reqwest::Method::GET, url, key)
}

fn listed(url: &str, key: &str) -> Vec<String> {
    let (s, page) = get(&format!("{url}/v1/jobs?limit=100"), Some(key));
    assert_eq!(s, 200, "{page}");
    page["data"].as_array().expect("data").iter().map(|j| j["id"].as_str().unwrap_or_default().to_string()).collect()
}

fn assert_not_found(status: u16, body: &Value) {
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "job_not_found", "{body}");
}

/// The whole rule, against a server (serve or gateway) at `url`.
fn check_ownership(url: &str) {
    let (s, a) = submit(url, ALICE, &jfk_wav(), &[]);
    assert_eq!(s, 202, "{a}");
    let a_id = a["id"].as_str().expect("id").to_string();
    // A random (v4) UUID: nothing to walk from one id to the next.
    assert_eq!(uuid::Uuid::parse_str(&a_id).expect("uuid").get_version_num(), 4, "{a_id}");
    let (s, b) = submit(url, BOB, &jfk_wav(), &[]);
    assert_eq!(s, 202, "{b}");
    let b_id = b["id"].as_str().expect("id").to_string();

    let job = |id: &str| format!("{url}/v1/jobs/{id}");
    // Bob cannot read, list or cancel Alice's job: 404, like a job that does not exist.
    let (s, e) = get(&job(&a_id), Some(BOB));
    assert_not_found(s, &e);
    let (s_missing, e_missing) = get(&job(&uuid::Uuid::new_v4().to_string()), Some(BOB));
    assert_not_found(s_missing, &e_missing);
    assert_eq!(e["error"]["type"], e_missing["error"]["type"]);
    let (s, e) = call(reqwest::Method::DELETE, &job(&a_id), Some(BOB));
    assert_not_found(s, &e);
    assert_eq!(listed(url, BOB), vec![b_id.clone()]);
    // Alice's id as Bob's paging cursor tells him nothing.
    let (s, page) = get(&format!("{url}/v1/jobs?after={a_id}"), Some(BOB));
    assert_eq!(s, 200, "{page}");
    assert_eq!(page["data"], json!([]), "{page}");

    // Each owner sees its own; the admin sees both.
    let done = wait_for("alice's job to finish", Duration::from_secs(120), || {
        let (s, v) = get(&job(&a_id), Some(ALICE));
        (s == 200 && v["status"] == "completed").then_some(v)
    });
    assert!(done["result"]["text"].as_str().unwrap_or_default().to_lowercase().contains("country"), "{done}");
    assert_eq!(listed(url, ALICE), vec![a_id.clone()]);
    let all = listed(url, ROOT);
    assert!(all.contains(&a_id) && all.contains(&b_id), "{all:?}");
    let (s, v) = get(&job(&b_id), Some(ROOT));
    assert_eq!(s, 200, "{v}");
    // Bob's own cancel works (or his job is final already: 409, never 404).
    let (s, v) = call(reqwest::Method::DELETE, &job(&b_id), Some(BOB));
    assert!(s == 200 || s == 409, "{s} {v}");
    // Alice's job is still hers, untouched by Bob's attempt.
    let (s, v) = get(&job(&a_id), Some(ALICE));
    assert_eq!((s, v["status"].as_str()), (200, Some("completed")), "{v}");
}

fn recent_ids(url: &str, key: Option<&str>) -> Vec<String> {
    let (s, v) = get(&format!("{url}/v1/stats?recent=50"), key);
    assert_eq!(s, 200, "{v}");
    v["recent"].as_array().expect("recent").iter().map(|r| r["request_id"].as_str().unwrap_or_default().to_string()).collect()
}

/// `jobs.max_queued_per_key: 1`: a key with a job waiting is refused
/// another (429 `too_many_jobs`), another key is not, and the key may
/// submit again once its job has ended.
fn check_backlog_limit(url: &str, long: &Path) {
    let (s, a) = submit(url, ALICE, long, &[]);
    assert_eq!(s, 202, "{a}");
    let (s, e) = submit(url, ALICE, &jfk_wav(), &[]);
    assert_eq!(s, 429, "{e}");
    assert_eq!(e["error"]["code"], "too_many_jobs", "{e}");
    let (s, b) = submit(url, BOB, &jfk_wav(), &[]);
    assert_eq!(s, 202, "another key has its own backlog: {b}");
    let id = a["id"].as_str().unwrap();
    wait_for("alice's job to end", Duration::from_secs(120), || {
        let (_, v) = get(&format!("{url}/v1/jobs/{id}"), Some(ALICE));
        (v["status"] == "completed").then_some(())
    });
    let again = wait_for("alice's backlog to clear", Duration::from_secs(20), || {
        let (s, v) = submit(url, ALICE, &jfk_wav(), &[]);
        (s == 202).then_some(v)
    });
    assert_eq!(again["status"], "queued", "{again}");
}

fn one_job_each() -> Value {
    let mut c = keys();
    common::merge_json(&mut c, json!({"jobs": {"max_queued_per_key": 1}}));
    c
}

#[test]
fn serve_limits_each_keys_backlog() {
    let dir = tempfile::tempdir().unwrap();
    let (long, _) = common::concat_corpus(dir.path(), 30.0);
    let server = Server::start(test_config(one_job_each()));
    check_backlog_limit(&server.url, &long);
}

#[test]
fn gateway_limits_each_keys_backlog() {
    let dir = tempfile::tempdir().unwrap();
    let (long, _) = common::concat_corpus(dir.path(), 30.0);
    let nats = Nats::start();
    let mut cfg = cluster_config(&nats, json!({}));
    common::merge_json(&mut cfg, one_job_each());
    let _w = worker(cfg.clone());
    let gw = gateway(cfg);
    wait_ready(&gw, Duration::from_secs(120));
    check_backlog_limit(&gw.url, &long);
}

#[test]
fn serve_jobs_belong_to_their_key() {
    let server = Server::start(test_config(keys()));
    check_ownership(&server.url);

    // /v1/stats: open (no metrics key asked), but its list of recent
    // requests shows a caller only its own; nothing without a key.
    let transcribe = |key: &str| {
        let part = reqwest::blocking::multipart::Part::bytes(std::fs::read(jfk_wav()).unwrap()).file_name("a.wav");
        let form = reqwest::blocking::multipart::Form::new().part("file", part).text("model", "whisper-1");
        let r = client().post(format!("{}/v1/audio/transcriptions", server.url)).bearer_auth(key).multipart(form).send().unwrap();
        assert_eq!(r.status().as_u16(), 200);
        r.headers()["x-request-id"].to_str().unwrap().to_string()
    };
    let alices = transcribe(ALICE);
    let bobs = transcribe(BOB);
    let mine = recent_ids(&server.url, Some(ALICE));
    assert!(mine.contains(&alices) && !mine.contains(&bobs), "{mine:?}");
    let all = recent_ids(&server.url, Some(ROOT));
    assert!(all.contains(&alices) && all.contains(&bobs), "{all:?}");
    assert!(recent_ids(&server.url, None).is_empty());
}

#[test]
fn gateway_jobs_belong_to_their_key() {
    let nats = Nats::start();
    let mut cfg = cluster_config(&nats, json!({}));
    common::merge_json(&mut cfg, keys());
    let _w = worker(cfg.clone());
    let gw = gateway(cfg);
    wait_ready(&gw, Duration::from_secs(120));
    check_ownership(&gw.url);
}

#[test]
fn without_keys_every_caller_is_the_same_anonymous_owner() {
    let server = Server::start(test_config(json!({})));
    let (s, v) = common::cluster::submit_job(&server.url, &jfk_wav(), &[]);
    assert_eq!(s, 202, "{v}");
    let id = v["id"].as_str().unwrap();
    let (s, v) = server.get_json(&format!("/v1/jobs/{id}"));
    assert_eq!(s, 200, "{v}");
    let (_, page) = server.get_json("/v1/jobs");
    assert_eq!(page["data"][0]["id"], id, "{page}");
}
