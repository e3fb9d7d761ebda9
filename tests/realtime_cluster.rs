//! Realtime sessions through a cluster gateway (a real nats-server, a
//! gateway and workers as separate processes of the real binary, tiny.en,
//! real speech), driven by tests/support/realtime_abuse.py: a session
//! pinned to a worker transcribes live, and one whose worker is SIGKILLed
//! mid-stream is told `worker_lost` and closed while the gateway carries on.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::cluster::{cluster_config, gateway, wait_for, wait_ready, worker, Nats};
use common::realtime::jfk_pcm24;
use common::*;
use serde_json::{json, Value};

const SCRIPT_LIMIT: Duration = Duration::from_secs(180);

/// realtime_abuse.py SCENARIO against `url`, killed after SCRIPT_LIMIT.
fn abuse(scenario: &str, url: &str, args: &[&str]) -> Value {
    common::realtime::abuse(scenario, url, args, SCRIPT_LIMIT)
}

fn alive(pid: u32) -> bool {
    Command::new("kill").args(["-0", &pid.to_string()]).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// A live session at real time (server VAD) that must transcribe jfk.
fn assert_transcribes_live(gw: &Server, pcm: &Path, what: &str) -> Value {
    let r = abuse("transcribe", &gw.url, &["--pcm", pcm.to_str().unwrap(), "--mode", "vad", "--speed", "1"]);
    assert_eq!(r["created"], true, "{what}: no session.created: {r}");
    let text = r["transcript"].as_str().unwrap_or_else(|| panic!("{what}: no completed transcript: {r}"));
    let w = wer(&[(JFK_TEXT.to_string(), text.to_string())]);
    assert!(w <= 0.1, "{what}: WER {w:.3} for {text:?}: {r}");
    assert!(r["deltas"].as_u64().unwrap_or(0) >= 1, "{what}: no delta: {r}");
    assert_eq!(r["deltas_joined"], r["transcript"], "{what}: the deltas join to the transcript: {r}");
    assert_eq!(r["errors"], json!([]), "{what}: {r}");
    assert_eq!(r["open_at_end"], true, "{what}: {r}");
    // The client's own close is answered (1000, not a dropped connection).
    assert_eq!(r["close_code"], 1000, "{what}: the close the client started: {r}");
    r
}

#[test]
fn a_session_through_the_gateway_transcribes_live() {
    let dir = tempfile::tempdir().unwrap();
    let pcm = jfk_pcm24(dir.path());
    let nats = Nats::start();
    let config = cluster_config(&nats, json!({}));
    let w = worker(config.clone());
    let gw = gateway(config);
    wait_ready(&gw, Duration::from_secs(60));
    assert_transcribes_live(&gw, &pcm, "through the gateway");
    // The session ran on the worker, and both sides let it go.
    assert!(w.metric("whisper_serve_realtime_turns_total") >= 1.0, "the worker counted no realtime turn");
    wait_for("the gateway's session count to drop to 0", Duration::from_secs(10), || {
        (gw.metric("whisper_serve_realtime_sessions") == 0.0).then_some(())
    });
}

#[test]
fn a_worker_killed_under_its_session_is_reported_and_the_gateway_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let pcm = jfk_pcm24(dir.path());
    let nats = Nats::start();
    let config = cluster_config(&nats, json!({}));
    let a = worker(config.clone());
    let gw = gateway(config.clone());
    wait_ready(&gw, Duration::from_secs(60));
    let pid = a.pid().to_string();
    // Speech at real time; the worker is SIGKILLed 4 s in.
    let r = abuse("transcribe", &gw.url, &["--pcm", pcm.to_str().unwrap(), "--mode", "vad", "--speed", "1", "--kill-pid", &pid, "--kill-at", "4", "--kill-signal", "KILL"]);
    assert_eq!(r["created"], true, "{r}");
    assert!(r["killed_at"].is_number(), "{r}");
    let errors = r["errors"].as_array().unwrap();
    assert!(errors.iter().any(|e| e == "worker_lost"), "no worker_lost error event: {r}");
    assert_eq!(r["close_code"], 1011, "close after the worker was lost: {r}");
    let close_after = r["close_after_kill_s"].as_f64().unwrap_or(f64::INFINITY);
    // The gateway takes 3 s of silence for a dead worker.
    assert!(close_after <= 8.0, "closed {close_after} s after the worker died: {r}");
    // The gateway is fine.
    assert!(alive(gw.pid()), "the gateway died");
    let live = client().get(format!("{}/health/live", gw.url)).send().map(|r| r.status().as_u16()).unwrap_or(0);
    assert_eq!(live, 200, "the gateway's /health/live");
    // With no worker, a new session is refused at once with an error event.
    let r = abuse("transcribe", &gw.url, &["--pcm", pcm.to_str().unwrap(), "--mode", "vad", "--speed", "1"]);
    assert_eq!(r["created"], false, "a session with no worker: {r}");
    assert_eq!(r["first_event"], "error", "{r}");
    assert!(r["open_s"].as_f64().is_some_and(|t| t < 15.0), "a refusal that took its time: {r}");
    assert_eq!(r["close_code"], 1013, "{r}");
    eprintln!("with no worker: {} (close {})", r["errors"], r["close_code"]);
    // A new worker: a new session is taken and transcribes a whole turn.
    let b = worker(config);
    let r = wait_for("a session through the gateway to be taken again", Duration::from_secs(60), || {
        let r = abuse("transcribe", &gw.url, &["--pcm", pcm.to_str().unwrap(), "--mode", "manual"]);
        (r["created"] == true).then_some(r)
    });
    let text = r["transcript"].as_str().unwrap_or_else(|| panic!("a session on the new worker transcribed nothing: {r}"));
    let w = wer(&[(JFK_TEXT.to_string(), text.to_string())]);
    assert!(w <= 0.1, "a session on the new worker: WER {w:.3} for {text:?}: {r}");
    assert!(b.metric("whisper_serve_realtime_turns_total") >= 1.0, "the new worker counted no realtime turn");
    assert!(alive(gw.pid()), "the gateway died");
}
