//! Logs end to end: the real binary writing its log file, rotated with
//! Python's names, one access line per request, and transcript text only
//! with `logging.log_transcripts`.
//!
//! The tests marked "access" need `telemetry::access::access_log` layered in
//! the HTTP stack (src/server/http.rs); until it is, they fail.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// Words of the JFK clip that must not reach a log unless asked for.
const TRANSCRIPT_WORDS: [&str; 2] = ["Americans", "fellow"];

fn backup(path: &Path, n: usize) -> PathBuf {
    PathBuf::from(format!("{}.{n}", path.display()))
}

/// The log file and its backups that exist, newest file first.
fn log_files(path: &Path) -> Vec<PathBuf> {
    std::iter::once(path.to_path_buf()).chain((1..10).map(|n| backup(path, n))).filter(|p| p.exists()).collect()
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Every line of the log, oldest first.
fn all_lines(path: &Path) -> Vec<String> {
    let mut files = log_files(path);
    files.reverse();
    files.iter().flat_map(|f| read(f).lines().map(str::to_string).collect::<Vec<_>>()).collect()
}

/// Sends a request; returns its status and the `x-request-id` it was given.
fn send(req: reqwest::blocking::RequestBuilder) -> (u16, String) {
    let r = req.send().expect("request");
    let id = r.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let status = r.status().as_u16();
    let _ = r.bytes();
    assert!(!id.is_empty(), "no x-request-id on the response");
    (status, id)
}

fn transcribe(server: &Server) -> (u16, String) {
    let bytes = std::fs::read(jfk_wav()).expect("read jfk.wav");
    let part = reqwest::blocking::multipart::Part::bytes(bytes).file_name("jfk.wav");
    let form = reqwest::blocking::multipart::Form::new().part("audio_file", part);
    send(client().post(format!("{}/transcribe", server.url)).multipart(form))
}

/// Stops the server the graceful way, so the log writer flushes.
fn stop(mut server: Server) {
    server.signal("-TERM");
    server.wait_exit(Duration::from_secs(60));
}

fn start(dir: &Path, logging: Value, env: &[(&str, &str)]) -> (Server, PathBuf) {
    let path = dir.join("logs/whisper_service.log");
    let mut log = json!({"level": "INFO", "file": path});
    common::merge_json(&mut log, logging);
    (Server::start_env(test_config(json!({ "logging": log })), env), path)
}

fn assert_no_transcript(path: &Path) {
    for f in log_files(path) {
        let text = read(&f);
        for w in TRANSCRIPT_WORDS {
            assert!(!text.contains(w), "transcript word {w:?} in {}:\n{text}", f.display());
        }
    }
}

/// Rotation at `max_bytes` with `backup_count` backups, from application
/// lines alone (the engine's DEBUG lines, which also carry the transcript
/// field, hidden here).
#[test]
fn log_file_rotates_by_size_and_keeps_backup_count() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, path) = start(
        dir.path(),
        json!({"max_bytes": 2000, "backup_count": 2}),
        &[("RUST_LOG", "info,whisper_serve=debug")],
    );
    // About 1 kB of DEBUG lines per transcription: the limit is passed
    // four times or more.
    for _ in 0..8 {
        let (status, _) = transcribe(&server);
        assert_eq!(status, 200);
    }
    stop(server);
    assert!(path.exists(), "no log file");
    assert!(backup(&path, 1).exists() && backup(&path, 2).exists(), "backups .1 and .2 expected: {:?}", log_files(&path));
    assert!(!backup(&path, 3).exists(), "backup_count 2 keeps no .3");
    for f in log_files(&path) {
        let text = read(&f);
        // Python's rule: rotate before a line that would reach max_bytes.
        assert!(text.len() < 2000, "{} has {} bytes", f.display(), text.len());
        assert!(text.ends_with('\n'), "{} ends mid-line", f.display());
        for line in text.lines() {
            assert!(line.starts_with("20"), "a line cut in two in {}: {line:?}", f.display());
        }
    }
    assert!(read(&path).contains("stopped"), "the last lines are flushed at shutdown");
    assert!(all_lines(&path).iter().any(|l| l.contains("text=[redacted]")), "the engine's window lines hide their text");
    assert_no_transcript(&path);
}

/// Access: one line per request with its id, route and status; no
/// transcript, no query string, no key. Needs `access_log` wired.
#[test]
fn access_lines_carry_request_id_route_and_status() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, path) = start(dir.path(), json!({"max_bytes": 2000, "backup_count": 2}), &[]);
    let mut health = Vec::new();
    for _ in 0..20 {
        let (status, id) = send(client().get(format!("{}/health?probe=secret-query", server.url)).header("x-api-key", "not-a-real-key"));
        assert_eq!(status, 200);
        health.push(id);
    }
    let mut transcribed = Vec::new();
    for _ in 0..3 {
        let (status, id) = transcribe(&server);
        assert_eq!(status, 200);
        transcribed.push(id);
    }
    stop(server);
    let lines = all_lines(&path);
    let access: Vec<&String> = lines.iter().filter(|l| l.contains(" - whisper_serve::access - INFO - access ")).collect();
    assert!(!access.is_empty(), "no access lines in the log (is access_log wired?)");
    // 23 access lines of about 250 bytes: rotated three times or more.
    assert!(backup(&path, 2).exists() && !backup(&path, 3).exists(), "{:?}", log_files(&path));
    for line in &access {
        assert!(!line.contains("secret-query") && !line.contains("not-a-real-key"), "{line}");
        assert_eq!(line.matches("request_id=").count(), 1, "the request span's fields are not repeated: {line}");
        let id = field(line, "request_id");
        if line.contains("route=/transcribe ") {
            assert!(transcribed.contains(&id), "{id} is not a transcription's id: {line}");
            assert!(line.contains(" method=POST ") && line.contains(" status=200 "), "{line}");
            assert!(field(line, "audio_s").starts_with("11."), "{line}");
            assert!(field(line, "upload_bytes").parse::<u64>().is_ok_and(|b| b > 300_000), "{line}");
            assert!(line.contains(" client=127.0.0.1"), "{line}");
        } else {
            assert!(line.contains(" route=/health status=200 "), "{line}");
            assert!(health.contains(&id), "{id} is not a health check's id: {line}");
        }
    }
    // The newest lines are kept: every transcription's line is there, once.
    for id in &transcribed {
        let n = access.iter().filter(|l| l.contains(&format!("request_id={id} "))).count();
        assert_eq!(n, 1, "access lines for {id}");
    }
    assert_no_transcript(&path);
}

/// The value of `key=value` in a text line ("" if absent).
fn field(line: &str, key: &str) -> String {
    line.split(' ')
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .unwrap_or_default()
        .to_string()
}

/// With `log_transcripts`, the access line (here in JSON) has the text.
/// Needs `access_log` wired.
#[test]
fn transcript_in_access_line_only_when_asked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, path) = start(dir.path(), json!({"format": "json", "log_transcripts": true}), &[]);
    let (status, id) = transcribe(&server);
    assert_eq!(status, 200);
    stop(server);
    let lines = all_lines(&path);
    let access: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .filter(|v| v["target"] == "whisper_serve::access")
        .collect();
    let line = access
        .iter()
        .find(|v| v["fields"]["request_id"] == id.as_str())
        .unwrap_or_else(|| panic!("no access line for {id} (is access_log wired?) in {lines:#?}"));
    let f = &line["fields"];
    assert_eq!(f["message"], "access");
    assert_eq!(f["route"], "/transcribe");
    assert_eq!(f["status"], 200);
    assert!(f["latency_ms"].as_f64().is_some_and(|ms| ms > 0.0), "{line}");
    assert!(f["text"].as_str().is_some_and(|t| t.contains("fellow Americans")), "{line}");
}

/// The new keys load, have Python's defaults, and bad values name the key.
#[test]
fn rotation_keys_load_and_validate() {
    use whisper_serve::config::Config;
    let c = Config::from_sources(None, Vec::new()).expect("defaults");
    assert_eq!((c.logging.rotation.as_str(), c.logging.max_bytes, c.logging.backup_count), ("size", 10_485_760, 5));
    assert!(!c.logging.log_transcripts);
    let c = Config::from_sources(
        Some(r#"{"logging": {"rotation": "daily", "backup_count": 7, "log_transcripts": true}}"#),
        vec![("WHISPER_SERVE__LOGGING__MAX_BYTES".to_string(), "0".to_string())],
    )
    .expect("daily");
    assert_eq!((c.logging.rotation.as_str(), c.logging.max_bytes, c.logging.backup_count), ("daily", 0, 7));
    assert!(c.logging.log_transcripts);
    for (bad, key) in [
        (r#"{"logging": {"rotation": "hourly"}}"#, "logging.rotation"),
        (r#"{"logging": {"max_bytes": -1}}"#, "max_bytes"),
        (r#"{"logging": {"backup_count": "five"}}"#, "backup_count"),
        (r#"{"logging": {"log_transcripts": "yes"}}"#, "log_transcripts"),
    ] {
        let err = Config::from_sources(Some(bad), Vec::new()).expect_err(bad).to_string();
        assert!(err.contains(key), "{bad}: {err}");
    }
}
