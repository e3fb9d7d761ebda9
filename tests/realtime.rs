//! Realtime transcription sessions (`GET /v1/realtime?intent=transcription`)
//! end to end: the real binary on port 0 with the real model, driven by the
//! official OpenAI Python SDK (tests/support/realtime_check.py), plus the
//! handshake's refusals (keys, quota, config) checked over plain HTTP.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const KEY_A: &str = "sk-test-alice-0123456789";
const KEY_B: &str = "sk-test-bob-9876543210";
fn keyed(extra: Value) -> Value {
    let mut c = test_config(json!({"auth": {"api_keys": [{"id": "alice", "key": KEY_A}, {"id": "bob", "key": KEY_B}]}}));
    merge_json(&mut c, extra);
    c
}

/// The JFK reference (../shared/speech/jfk_whisper_cpp/refs.tsv).
fn jfk_reference() -> String {
    let refs = std::fs::read_to_string(speech().join("jfk_whisper_cpp/refs.tsv")).expect("refs.tsv");
    refs.lines()
        .find_map(|l| l.strip_prefix("jfk.wav\t"))
        .map(str::to_string)
        .unwrap_or_else(|| JFK_TEXT.to_string())
}

/// Runs a scenario that must pass; returns its JSON report.
fn passes(server: &Server, scenario: &str, extra: &[&str]) -> Value {
    let run = common::realtime::check(server, scenario, extra);
    assert!(
        run.ok,
        "realtime_check.py {scenario} failed after {:.1}s\n--- stdout\n{}\n--- stderr\n{}",
        run.elapsed.as_secs_f64(),
        run.stdout,
        run.stderr
    );
    run.report()
}

/// The transcripts of a report, each checked against the JFK reference
/// with Whisper's normaliser (tests/support/wer.py).
fn assert_jfk_transcripts(report: &Value, n: usize) {
    let transcripts: Vec<String> =
        report["transcripts"].as_array().unwrap_or(&vec![]).iter().filter_map(|t| t.as_str().map(str::to_string)).collect();
    assert_eq!(transcripts.len(), n, "{report}");
    let reference = jfk_reference();
    for t in &transcripts {
        let w = wer(&[(reference.clone(), t.clone())]);
        assert!(w <= 0.1, "WER {w:.3} > 0.1 for {t:?} (reference {reference:?})\n{report}");
    }
}

/// A WebSocket handshake for `path_query`, over a plain TCP connection:
/// its status, headers (lowercased names) and body (JSON when it is).
fn handshake(server: &Server, path_query: &str, headers: &[(&str, &str)]) -> (u16, Vec<(String, String)>, Value) {
    let addr = server.url.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!(
        "GET {path_query} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).expect("send handshake");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).expect("read the handshake's answer");
        assert!(n > 0, "connection closed before an answer: {:?}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.lines();
    let status: u16 = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|c| c.parse().ok()).expect("status line");
    let hdrs: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    if status == 101 {
        return (status, hdrs, Value::Null);
    }
    let len: usize = hdrs.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let n = s.read(&mut chunk).expect("read the body");
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&body).into_owned();
    (status, hdrs, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// OpenAI's error shape: {"error": {"message", "type", "param", "code"}}.
fn assert_openai_error(status: u16, body: &Value, expected: u16, code: &str) {
    assert_eq!(status, expected, "{body}");
    let e = &body["error"];
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    assert!(e["type"].is_string(), "{body}");
    assert!(e.get("param").is_some(), "{body}");
    assert_eq!(e["code"], code, "{body}");
}

const REALTIME: &str = "/v1/realtime?intent=transcription";

/// The scenarios that stream at real time run one at a time: two of them
/// side by side (with two servers on a small host) would mostly measure
/// each other.
static STREAMING: Mutex<()> = Mutex::new(());
/// An engine slower than this on jfk.wav (11 s) cannot decode an open turn
/// often enough for LocalAgreement to commit words before the turn ends.
const SLOW_ENGINE_S: f64 = 3.0;

/// Seconds the engine takes for jfk.wav now (a plain request; it also
/// warms the engine up).
fn engine_seconds(server: &Server) -> f64 {
    let t = Instant::now();
    let (s, body) = transcribe_file(server, &jfk_wav());
    assert_eq!(s, 200, "{body}");
    t.elapsed().as_secs_f64()
}

/// Runs a real-time scenario (ga, beta, two_turns): `turns` completed
/// transcripts of JFK, each with WER <= 0.1, and interim deltas before the
/// first turn completes, unless the host is too loaded to decode faster
/// than real time (then said loudly, not failed).
fn streams(server: &Server, scenario: &str, turns: usize) -> Value {
    let _one = STREAMING.lock().unwrap_or_else(|e| e.into_inner());
    engine_seconds(server); // a first decode can be slower
    let before = engine_seconds(server);
    let report = passes(server, scenario, &["--expect", &jfk_reference(), "--min-early-deltas", "0"]);
    assert_jfk_transcripts(&report, turns);
    let early = report["early_deltas"].as_u64().expect("early_deltas in the report");
    if early < 2 {
        // The turn's last decode (commit to completed) is about a decode of
        // jfk.wav too: the engine's speed while the session ran.
        let last = report["final_s"].as_f64().unwrap_or(0.0);
        let after = engine_seconds(server);
        let slowest = before.max(after).max(last);
        assert!(
            slowest > SLOW_ENGINE_S,
            "{early} deltas came before the first turn's `completed`, though the engine was fast (jfk.wav in \
             {before:.1}s before and {after:.1}s after, the turn's last decode {last:.1}s): interim text is missing\n{report}"
        );
        eprintln!(
            "WARNING: {scenario}: only {early} interim deltas, not checked: the host is loaded (jfk.wav in \
             {before:.1}s before and {after:.1}s after, the turn's last decode {last:.1}s; over {SLOW_ENGINE_S}s)"
        );
    }
    report
}

#[test]
fn ga_client_streams_deltas_then_the_transcript_and_counts_the_turn() {
    let server = Server::start(test_config(json!({})));
    let before = server.metric("whisper_serve_realtime_turns_total");
    let report = streams(&server, "ga", 1);
    assert!(report["deltas"].as_u64().unwrap_or(0) >= 1, "{report}");
    // The turn is counted once the session has sent it.
    let start = Instant::now();
    loop {
        let after = server.metric("whisper_serve_realtime_turns_total");
        if after >= before + 1.0 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "whisper_serve_realtime_turns_total {before} -> {after}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(server.metric("whisper_serve_realtime_audio_seconds_total") >= 10.0);
}

#[test]
fn beta_client_streams_deltas_then_the_transcript() {
    // And the steps on a 15 s encoder window (jfk.wav fits in it).
    let server = Server::start(test_config(json!({"realtime": {"step_window_s": 15}})));
    streams(&server, "beta", 1);
}

#[test]
fn manual_commit_transcribes_the_buffer() {
    let server = Server::start(test_config(json!({})));
    let report = passes(&server, "manual", &["--expect", &jfk_reference()]);
    assert_jfk_transcripts(&report, 1);
}

#[test]
fn two_turns_separated_by_silence_are_two_items() {
    let server = Server::start(test_config(json!({})));
    streams(&server, "two_turns", 2);
    assert!(server.metric("whisper_serve_realtime_turns_total") >= 2.0);
}

#[test]
fn bad_events_get_error_events_and_the_session_goes_on() {
    let server = Server::start(test_config(json!({})));
    let report = passes(&server, "bad_events", &[]);
    let codes: Vec<&str> = report["errors"].as_array().expect("errors").iter().filter_map(Value::as_str).collect();
    for code in ["session_not_configured", "event_too_large", "input_audio_buffer_commit_empty"] {
        assert!(codes.contains(&code), "no {code} error event: {report}");
    }
    assert!(codes.len() >= 6, "six bad events, six error events: {report}");
    // Still serving after all that.
    assert_eq!(server.get_json("/health").0, 200);
}

#[test]
fn keys_guard_the_handshake() {
    let server = Server::start(keyed(json!({})));
    // No key: refused before the upgrade, in OpenAI's shape.
    let (s, h, body) = handshake(&server, REALTIME, &[]);
    assert_openai_error(s, &body, 401, "invalid_api_key");
    assert_eq!(header(&h, "www-authenticate"), Some("Bearer"));
    let (s, _, body) = handshake(&server, REALTIME, &[("Authorization", "Bearer sk-wrong-key-000000")]);
    assert_openai_error(s, &body, 401, "invalid_api_key");
    // A key in a header upgrades (X-API-Key as well as Bearer).
    let (s, h, body) = handshake(&server, REALTIME, &[("X-API-Key", KEY_B)]);
    assert_eq!(s, 101, "{body} {h:?}");
    // The SDK sends `Authorization: Bearer`.
    let report = passes(&server, "manual", &["--api-key", KEY_A, "--expect", &jfk_reference()]);
    assert_jfk_transcripts(&report, 1);
    // A browser names its key in a subprotocol beside `realtime`; a wrong
    // one (or none) is refused 401.
    let report = passes(&server, "subprotocol", &["--api-key", KEY_B]);
    assert_eq!(report["subprotocol"], "realtime", "{report}");
    // The same over plain HTTP: the selected subprotocol is `realtime`,
    // never the one carrying the key.
    let (s, h, _) =
        handshake(&server, REALTIME, &[("Sec-WebSocket-Protocol", &format!("realtime, openai-insecure-api-key.{KEY_A}"))]);
    assert_eq!(s, 101, "{h:?}");
    assert_eq!(header(&h, "sec-websocket-protocol"), Some("realtime"), "{h:?}");
    let (s, _, body) =
        handshake(&server, REALTIME, &[("Sec-WebSocket-Protocol", "realtime, openai-insecure-api-key.sk-wrong-key-000000")]);
    assert_openai_error(s, &body, 401, "invalid_api_key");
}

#[test]
fn disabled_wrong_intent_and_the_openapi_document() {
    let server = Server::start(test_config(json!({})));
    // Not a transcription session: 400 in OpenAI's shape, naming `intent`.
    let (s, _, body) = handshake(&server, "/v1/realtime", &[]);
    assert_openai_error(s, &body, 400, "invalid_param");
    assert_eq!(body["error"]["param"], "intent", "{body}");
    let (s, _, body) = handshake(&server, "/v1/realtime?intent=conversation", &[]);
    assert_openai_error(s, &body, 400, "invalid_param");
    // The right intent upgrades.
    let (s, h, body) = handshake(&server, REALTIME, &[]);
    assert_eq!(s, 101, "{body} {h:?}");
    // A plain GET (no upgrade) is a 400 too, not a hang or a 500.
    let r = client().get(format!("{}{REALTIME}", server.url)).send().expect("request");
    assert_eq!(r.status().as_u16(), 400);
    // The document lists the route.
    let (s, doc) = server.get_json("/openapi.json");
    assert_eq!(s, 200);
    assert!(doc["paths"]["/v1/realtime"]["get"].is_object(), "/v1/realtime not in /openapi.json: {:?}", doc["paths"].as_object().map(|p| p.keys().collect::<Vec<_>>()));
    drop(server);

    let server = Server::start(test_config(json!({"realtime": {"enabled": false}})));
    let (s, _, body) = handshake(&server, REALTIME, &[]);
    assert_openai_error(s, &body, 404, "not_found");
}

#[test]
fn the_daily_audio_quota_ends_the_session_and_refuses_the_next() {
    let server = Server::start(keyed(json!({"rate_limit": {"audio_seconds_per_day": 5}})));
    // Within the quota at the handshake; JFK's 11 s turn spends it: the
    // transcript, then an `error` event quota_exceeded and a close (1008).
    let report = passes(&server, "quota", &["--api-key", KEY_A]);
    assert_eq!(report["errors"], json!(["quota_exceeded"]), "{report}");
    assert_jfk_transcripts(&report, 1);
    // The key's next session is refused at the handshake.
    let (s, h, body) = handshake(&server, REALTIME, &[("Authorization", &format!("Bearer {KEY_A}"))]);
    assert_openai_error(s, &body, 429, "quota_exceeded");
    assert!(header(&h, "retry-after").is_some_and(|v| v.parse::<u64>().is_ok()), "{h:?}");
    // Another key has its own day.
    let (s, h, body) = handshake(&server, REALTIME, &[("Authorization", &format!("Bearer {KEY_B}"))]);
    assert_eq!(s, 101, "{body} {h:?}");
}
