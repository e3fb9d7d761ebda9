//! Realtime sessions (`GET /v1/realtime?intent=transcription`) under abuse:
//! the real binary on port 0 with tiny.en and real speech, driven by
//! tests/support/realtime_abuse.py (a raw `websockets` client, and a
//! hand-made WebSocket for the client that stops reading). Each bound of
//! the `realtime` section is pushed past: the session limit, a client that
//! does not read, one that sends faster than real time, one that goes
//! quiet, SIGTERM mid-turn, and over-size events.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::realtime::jfk_pcm24;
use common::*;
use serde_json::{json, Value};

/// The longest any scenario may take; past it the script is killed and
/// the test fails with what it printed.
const SCRIPT_LIMIT: Duration = Duration::from_secs(240);

/// realtime_abuse.py SCENARIO against `url`, killed after SCRIPT_LIMIT.
fn abuse(scenario: &str, url: &str, args: &[&str]) -> Value {
    common::realtime::abuse(scenario, url, args, SCRIPT_LIMIT)
}

fn jfk_wer(transcript: &str) -> f64 {
    wer(&[(JFK_TEXT.to_string(), transcript.to_string())])
}

fn health(server: &Server) -> u16 {
    client().get(format!("{}/health", server.url)).send().map(|r| r.status().as_u16()).unwrap_or(0)
}

/// The server still takes a session and transcribes a whole turn (sent
/// flat out and committed).
fn still_serves(server: &Server, pcm: &Path, what: &str) {
    let r = abuse("transcribe", &server.url, &["--pcm", pcm.to_str().unwrap(), "--mode", "manual"]);
    let text = r["transcript"].as_str().unwrap_or_else(|| panic!("no transcript from a new session {what}: {r}"));
    let w = jfk_wer(text);
    assert!(w <= 0.2, "a new session {what} transcribed {text:?} (WER {w:.3}): {r}");
    assert_eq!(r["close_code"], 1000, "the close the client started, {what}: {r}");
}

fn realtime_config(realtime: Value) -> Value {
    test_config(json!({"realtime": realtime}))
}

#[test]
fn forty_sessions_over_the_limit_are_refused_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let pcm = jfk_pcm24(dir.path());
    let server = Server::start(realtime_config(json!({"max_sessions": 4})));
    let r = abuse("limit", &server.url, &["--pcm", pcm.to_str().unwrap(), "--n", "44"]);
    assert_eq!(r["other"], json!([]), "connections neither accepted nor refused: {r}");
    assert_eq!(r["accepted"], 4, "sessions accepted at realtime.max_sessions = 4: {r}");
    assert_eq!(r["refused"], 40, "{r}");
    let codes = r["refused_codes"].as_array().unwrap();
    assert!(codes.iter().all(|c| c == "session_limit_reached"), "refusals' error codes: {r}");
    let closes = r["refused_closes"].as_array().unwrap();
    assert!(closes.iter().all(|c| c == 1013), "refusals' close codes (1013 expected): {r}");
    assert_eq!(r["usable"], 4, "every accepted session answers session.update: {r}");
    assert_eq!(r["accepted_open_until_closed"], 4, "an accepted session was closed under its client: {r}");
    let text = r["transcript"].as_str().unwrap_or_else(|| panic!("an accepted session transcribed nothing: {r}"));
    let w = jfk_wer(text);
    assert!(w <= 0.2, "transcript {text:?} (WER {w:.3}): {r}");
    assert_eq!(r["health"], 200, "/health during the burst: {r}");
    assert_eq!(r["after_close_first_event"], "session.created", "a session once the 4 closed: {r}");
    assert_eq!(r["after_close_updated"], true, "{r}");
    assert_eq!(health(&server), 200);
    // Every place given back.
    wait_gauge(&server, "whisper_serve_realtime_sessions", 0.0);
}

fn wait_gauge(server: &Server, name: &str, want: f64) {
    let start = Instant::now();
    loop {
        let v = server.metric(name);
        if v == want {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{name} is {v}, expected {want}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/<pid>/status");
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok()).expect("VmRSS")
}

#[test]
fn a_client_that_stops_reading_is_cut_off_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let pcm = jfk_pcm24(dir.path());
    let server = Server::start(realtime_config(json!({"max_pending_events": 16})));
    // Warm the engine first, so that its buffers are not taken for growth.
    still_serves(&server, &pcm, "before the flood");
    let pid = server.pid().to_string();
    // The control: a client that reads all along, sending invalid events at
    // a steady pace (2 every 2 ms), is answered every one and kept.
    let r = abuse("flood", &server.url, &["--pid", &pid, "--n", "2000", "--batch", "2", "--pace-ms", "2", "--read"]);
    assert_eq!(r["sent_events"], 2000, "a reading client could not send: {r}");
    assert_eq!(r["still_open"], true, "a client that reads was cut off: {r}");
    let read = r["read_while_sending"]["bytes"].as_u64().unwrap_or(0);
    assert!(read >= 2000 * 300, "a reading client got {read} bytes of events for 2000 invalid events: {r}");
    assert_eq!(server.metric("whisper_serve_realtime_cut_off_total"), 0.0, "a reading client counted as cut off: {r}");
    // The same with a receive buffer shrunk to a few KB and never read: once
    // the socket's buffers and 16 pending events are full, it is cut off.
    // Uncut, 300k events (~45 MB in) would queue ~130 MB of `error` events.
    let before = rss_kb(server.pid());
    let r = abuse("flood", &server.url, &["--pid", &pid, "--n", "300000", "--batch", "4", "--pace-ms", "1", "--rcvbuf", "4096"]);
    assert!(r["handshake"].as_str().unwrap_or("").contains("101"), "{r}");
    let cut = server.metric("whisper_serve_realtime_cut_off_total");
    assert!(cut >= 1.0, "whisper_serve_realtime_cut_off_total = {cut}: {r}");
    // The client sees its connection gone: its sends fail, and reading what
    // was left ends (EOF or reset), rather than an open socket.
    assert!(r["send_error"].is_string(), "the flood was never refused ({} events sent): {r}", r["sent_events"]);
    let read_end = r["read_end"].as_str().unwrap_or("");
    assert!(!read_end.starts_with("timeout"), "the connection is still open after the cut: {r}");
    let (base, peak) = (r["rss_base_kb"].as_u64().unwrap(), r["rss_peak_kb"].as_u64().unwrap());
    let grown_mb = peak.saturating_sub(base) as f64 / 1024.0;
    assert!(grown_mb <= 100.0, "server RSS grew {grown_mb:.1} MB over the flood ({base} → {peak} kB): {r}");
    eprintln!(
        "cut off after {} events; RSS before {before} kB, flood peak {peak} kB (+{grown_mb:.1} MB), after {} kB",
        r["sent_events"],
        rss_kb(server.pid())
    );
    assert_eq!(health(&server), 200);
    wait_gauge(&server, "whisper_serve_realtime_sessions", 0.0);
    still_serves(&server, &pcm, "after the flood");
}

#[test]
fn a_client_faster_than_real_time_overflows_and_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let pcm = jfk_pcm24(dir.path());
    let server = Server::start(realtime_config(json!({"max_lag_s": 5})));
    // jfk ×10 (110 s of continuous speech) as fast as the socket takes it.
    let r = abuse("overflow", &server.url, &["--pcm", pcm.to_str().unwrap(), "--repeat", "10"]);
    assert_eq!(r["configured"], true, "{r}");
    let errors = r["errors"].as_array().unwrap();
    assert!(errors.iter().any(|e| e == "buffer_overflow"), "no buffer_overflow error event: {r}");
    assert_eq!(r["close_code"], 1008, "close after the overflow: {r}");
    // Closed well before it was all sent, and soon after 5 s of audio.
    let sent = r["audio_s_sent"].as_f64().unwrap();
    assert!(sent < r["audio_s_total"].as_f64().unwrap(), "all the audio was taken: {r}");
    assert!(r["error_after_s"].as_f64().is_some_and(|t| t < 30.0), "{r}");
    assert!(server.metric("whisper_serve_realtime_overflows_total") >= 1.0);
    assert_eq!(health(&server), 200);
    wait_gauge(&server, "whisper_serve_realtime_sessions", 0.0);
    // A short turn: the whole of a manual turn counts against max_lag_s
    // until it is decoded, so 11 s of JFK would be over 5 s by itself.
    let r = abuse("transcribe", &server.url, &["--pcm", pcm.to_str().unwrap(), "--mode", "manual", "--seconds", "3.5"]);
    let text = r["transcript"].as_str().unwrap_or_else(|| panic!("no transcript from a new session after the overflow: {r}"));
    assert!(text.to_lowercase().contains("fellow americans"), "a new session after the overflow transcribed {text:?}: {r}");
}

#[test]
fn a_quiet_client_is_closed_at_the_idle_timeout() {
    let server = Server::start(realtime_config(json!({"idle_timeout_s": 2})));
    let r = abuse("idle", &server.url, &["--wait", "20"]);
    assert_eq!(r["configured"], true, "{r}");
    assert_eq!(r["errors"], json!(["idle_timeout"]), "{r}");
    assert_eq!(r["close_code"], 1000, "{r}");
    let after = r["close_after_quiet_s"].as_f64().unwrap_or(f64::INFINITY);
    assert!((1.8..=6.0).contains(&after), "closed {after} s after the client went quiet (idle_timeout_s = 2): {r}");
    assert_eq!(health(&server), 200);
}

#[test]
fn sigterm_mid_turn_finishes_the_turn_then_closes_1001() {
    let dir = tempfile::tempdir().unwrap();
    let pcm = jfk_pcm24(dir.path());
    let mut server = Server::start(realtime_config(json!({})));
    let pid = server.pid().to_string();
    // The turn is open (10 s of silence would end it) when SIGTERM comes, 6 s in.
    let r = abuse("sigterm", &server.url, &["--pcm", pcm.to_str().unwrap(), "--kill-pid", &pid, "--kill-at", "6"]);
    assert_eq!(r["configured"], true, "{r}");
    assert!(r["killed_at"].is_number(), "{r}");
    assert_eq!(r["speech_started"], 1, "{r}");
    let completed = r["completed_after_kill"].as_array().unwrap();
    assert_eq!(completed.len(), 1, "the open turn's `completed` after SIGTERM: {r}");
    let text = completed[0].as_str().unwrap();
    assert!(text.split_whitespace().count() >= 5, "the turn's transcript {text:?}: {r}");
    // The first 6 s of JFK, more or less.
    let lower = text.to_lowercase();
    assert!(lower.contains("fellow americans") || lower.contains("ask not"), "transcript {text:?}: {r}");
    assert_eq!(r["close_code"], 1001, "{r}");
    let closed_at = r["closed_at"].as_f64().unwrap();
    let completed_at = r["completed_at"][0].as_f64().unwrap();
    assert!(completed_at <= closed_at, "completed after the close: {r}");
    let status = server.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "the server's exit after SIGTERM: {status:?}");
}

#[test]
fn oversize_events_are_refused_and_oversize_frames_close_1009() {
    let dir = tempfile::tempdir().unwrap();
    let pcm = jfk_pcm24(dir.path());
    // 1 MB events; frames up to 2 MB + 64 KB are read and refused.
    let server = Server::start(realtime_config(json!({"max_event_mb": 1})));
    let r = abuse("oversize", &server.url, &["--pcm", pcm.to_str().unwrap(), "--mid-mb", "1.5", "--big-mb", "3"]);
    assert_eq!(r["configured"], true, "{r}");
    assert_eq!(r["mid_error"], "event_too_large", "a 1.5 MB event: {r}");
    let text = r["transcript_after_mid"].as_str().unwrap_or_else(|| panic!("the session did not go on after the 1.5 MB event: {r}"));
    let w = jfk_wer(text);
    assert!(w <= 0.2, "transcript after the refused event {text:?} (WER {w:.3}): {r}");
    assert_eq!(r["open_before_big"], true, "{r}");
    assert_eq!(r["close_code"], 1009, "a 3 MB frame: {r}");
    assert!(r["close_after_big_s"].as_f64().is_some_and(|t| t < 10.0), "{r}");
    assert_eq!(health(&server), 200);
    wait_gauge(&server, "whisper_serve_realtime_sessions", 0.0);
}
