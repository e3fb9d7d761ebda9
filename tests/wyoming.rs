//! The Wyoming listener (`server.wyoming_port`), driven by the `wyoming`
//! Python package's own client, as Home Assistant drives it, and by raw
//! sockets for what a broken or hostile client sends.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::cluster::{cluster_config, worker, Nats};
use common::*;
use serde_json::{json, Value};

/// A `serve` process with a Wyoming listener; killed on drop (the shared
/// one exits when the test binary does: its stdin closes).
struct WyServer {
    child: Child,
    url: String,
    wyoming: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for WyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `test_config` with a Wyoming listener on any free port, and `overrides`.
fn wyoming_config(overrides: Value) -> Value {
    let mut config = test_config(json!({"server": {"wyoming_port": 0}}));
    merge_json(&mut config, overrides);
    config
}

fn config_file(dir: &tempfile::TempDir, mut config: Value) -> std::path::PathBuf {
    if config.pointer("/jobs/dir").is_none() {
        merge_json(&mut config, json!({"jobs": {"dir": dir.path().join("jobs")}}));
    }
    let path = dir.path().join("config.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&config).expect("json")).expect("write config");
    path
}

/// Starts `whisper-serve <role>` with `config`, reads both addresses it
/// prints (HTTP first, then Wyoming), then waits for /health.
fn spawn(role: &str, config: Value) -> WyServer {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = config_file(&dir, config);
    let mut child = Command::new(bin())
        .args([role, "--config"])
        .arg(&path)
        .env("WHISPER_SERVE_EXIT_ON_STDIN_EOF", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start whisper-serve");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let (mut url, mut wyoming) = (None, None);
    for line in lines.by_ref() {
        let line = line.expect("read stdout");
        if let Some(a) = line.strip_prefix("listening on ") {
            url = Some(format!("http://{a}"));
        } else if let Some(a) = line.strip_prefix("wyoming listening on ") {
            wyoming = Some(a.parse().expect("a socket address"));
        }
        if url.is_some() && wyoming.is_some() {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let server = WyServer {
        child,
        url: url.expect("no HTTP address printed"),
        wyoming: wyoming.expect("no Wyoming address printed"),
        _dir: dir,
    };
    let start = Instant::now();
    loop {
        if client().get(format!("{}/health", server.url)).send().is_ok_and(|r| r.status() == 200) {
            return server;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "not healthy within 120 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn start(overrides: Value) -> WyServer {
    spawn("serve", wyoming_config(overrides))
}

/// One server for the tests that need nothing special.
fn shared() -> &'static WyServer {
    static SERVER: OnceLock<WyServer> = OnceLock::new();
    SERVER.get_or_init(|| start(json!({})))
}

fn check(server: &WyServer, args: &[&str]) -> Value {
    let mut cmd = Command::new(python());
    cmd.arg(repo().join("tests/support/wyoming_check.py"))
        .arg(args[0])
        .arg(server.wyoming.ip().to_string())
        .arg(server.wyoming.port().to_string())
        .args(&args[1..]);
    let run = run_limited(cmd, Duration::from_secs(300));
    assert!(run.ok, "wyoming_check.py {args:?} failed (needs the `wyoming` package, tests/support/requirements.txt):\n{}\n{}", run.stdout, run.stderr);
    run.report()
}

fn normalised(text: &str) -> String {
    let t: String = text.to_lowercase().chars().map(|c| if c.is_alphanumeric() || c == ' ' { c } else { ' ' }).collect();
    t.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn assert_jfk(report: &Value) {
    assert!(report["error"].is_null(), "{report}");
    let text = report["text"].as_str().unwrap_or_else(|| panic!("no transcript: {report}"));
    assert!(normalised(text).contains("ask not what your country can do for you"), "{report}");
}

fn jfk() -> String {
    jfk_wav().to_str().expect("utf-8 path").to_string()
}

#[test]
fn describe_lists_the_asr_program_and_its_models() {
    let r = check(shared(), &["describe"]);
    let asr = &r["asr"][0];
    assert_eq!(asr["name"], "whisper-serve", "{r}");
    assert_eq!(asr["installed"], true);
    assert_eq!(asr["supports_transcript_streaming"], true);
    assert!(asr["version"].is_string() && asr["attribution"]["url"].is_string(), "{r}");
    let models = asr["models"].as_array().expect("models");
    let tiny = models.iter().find(|m| m["name"] == "tiny.en").unwrap_or_else(|| panic!("tiny.en not listed: {r}"));
    // English-only: Home Assistant offers only the languages listed.
    assert_eq!(tiny["languages"], json!(["en"]), "{r}");
    assert_eq!(tiny["installed"], true);
    assert!(tiny["attribution"]["name"].is_string() && tiny["description"].is_string(), "{r}");
}

#[test]
fn jfk_in_1k_chunks_is_transcribed() {
    let r = check(shared(), &["transcribe", &jfk(), "--chunk-bytes", "1024", "--language", "en"]);
    assert_jfk(&r);
    assert_eq!(r["language"], "en", "{r}");
    eprintln!("audio-stop -> transcript: {:.3} s", r["latency_s"].as_f64().unwrap_or(f64::NAN));
}

#[test]
fn audio_without_transcribe_or_audio_start_is_transcribed_and_a_connection_carries_several() {
    // Chunks carry their own format: the audio-start may be left out.
    let r = check(shared(), &["transcribe", &jfk(), "--no-transcribe", "--no-audio-start", "--repeat", "2", "--chunk-bytes", "4096"]);
    for run in r["runs"].as_array().expect("runs") {
        assert_jfk(run);
    }
}

#[test]
fn eight_khz_stereo_is_resampled_and_mixed_down() {
    let dir = tempfile::tempdir().expect("temp dir");
    let wav = dir.path().join("jfk-8k-stereo.wav");
    tool("sox", &[&jfk(), "-r", "8000", "-c", "2", wav.to_str().expect("utf-8")]);
    let r = check(shared(), &["transcribe", wav.to_str().expect("utf-8"), "--chunk-bytes", "1024"]);
    assert_eq!(r["format"], json!({"rate": 8000, "width": 2, "channels": 2}));
    assert_jfk(&r);
}

#[test]
fn the_transcript_streams_as_start_chunks_transcript_stop() {
    let r = check(shared(), &["transcribe", &jfk(), "--chunk-bytes", "3200"]);
    assert_jfk(&r);
    let types: Vec<&str> = r["types"].as_array().expect("types").iter().filter_map(Value::as_str).collect();
    assert_eq!(types.first(), Some(&"transcript-start"), "{r}");
    assert_eq!(&types[types.len() - 2..], ["transcript", "transcript-stop"], "{r}");
    assert!(types[1..types.len() - 2].iter().all(|t| *t == "transcript-chunk") && types.len() > 3, "{r}");
    let joined: String = r["chunks"].as_array().expect("chunks").iter().filter_map(Value::as_str).collect();
    assert_eq!(joined, r["text"].as_str().expect("text"), "{r}");
}

/// Sends `bytes` on a fresh connection and expects the server to close it
/// (EOF, or a reset when it closed with our bytes unread) within 10 s;
/// returns what it answered before closing.
fn closed_after(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    // The server may close before taking all of it.
    let _ = s.write_all(bytes);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the server did not close the connection after {:?}...: {e}", String::from_utf8_lossy(&bytes[..bytes.len().min(80)])),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn malformed_events_close_the_connection_and_the_server_carries_on() {
    let server = shared();
    let addr = server.wyoming;
    let answer = closed_after(addr, b"this is not json\n");
    assert!(answer.contains("\"error\"") && answer.contains("bad_event"), "{answer}");
    // A header line far over the 64 KiB cap, with no newline.
    closed_after(addr, &vec![b'{'; 200 * 1024]);
    closed_after(addr, b"{\"type\":\"audio-chunk\",\"data\":{\"rate\":16000,\"width\":2,\"channels\":1},\"payload_length\":-1}\n");
    let answer = closed_after(addr, b"{\"type\":\"audio-chunk\",\"data\":{\"rate\":16000,\"width\":2,\"channels\":1},\"payload_length\":99999999999}\n");
    assert!(answer.contains("upload_too_large"), "{answer}");
    closed_after(addr, b"{\"type\":\"describe\",\"data_length\":5000000000}\n");
    closed_after(addr, b"{\"type\":\"audio-start\",\"data\":{\"rate\":16000,\"width\":9,\"channels\":1}}\n");
    // Half an event, then silence: the read deadline is not needed, the
    // close is (EOF from our side).
    {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.write_all(b"{\"type\":\"audio-chunk\",\"payload_length\":100}\nabc").expect("write");
    }
    let r = client().get(format!("{}/health", server.url)).send().expect("health");
    assert_eq!(r.status(), 200);
    let r = check(server, &["transcribe", &jfk()]);
    assert_jfk(&r);
}

#[test]
fn idle_clients_are_closed_and_limits_are_errors() {
    let server = start(json!({"server": {"wyoming_timeout_s": 1}, "limits": {"max_audio_seconds": 5}}));
    let start = Instant::now();
    let answer = closed_after(server.wyoming, b"");
    assert!(start.elapsed() < Duration::from_secs(5), "idle connection kept {:?}", start.elapsed());
    assert!(answer.is_empty(), "{answer}");
    // jfk.wav is 11 s: over the 5 s limit while it arrives.
    let r = check(&server, &["transcribe", &jfk(), "--chunk-bytes", "8000"]);
    assert_eq!(r["error"]["code"], "audio_too_long", "{r}");
    assert!(r["text"].is_null(), "{r}");
}

/// Runs `serve` with `overrides` and returns its exit status and stderr,
/// or None if it is still up after `limit` (then it is killed).
fn exits(overrides: Value, limit: Duration) -> (Option<std::process::ExitStatus>, String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = config_file(&dir, wyoming_config(overrides));
    let mut child = Command::new(bin())
        .args(["serve", "--config"])
        .arg(&path)
        .env("WHISPER_SERVE_EXIT_ON_STDIN_EOF", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start whisper-serve");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break Some(s);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status, out_reader.join().unwrap_or_default(), reader.join().unwrap_or_default())
}

#[test]
fn a_public_wyoming_host_with_keys_required_is_refused_at_start() {
    let keys = json!({"auth": {"api_keys": ["a-test-key-0123456789"]}, "server": {"wyoming_host": "0.0.0.0"}});
    let (status, _, stderr) = exits(keys.clone(), Duration::from_secs(60));
    let status = status.expect("the server should refuse to start");
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("server.wyoming_host") && stderr.contains("wyoming_allow_unauthenticated"), "{stderr}");
    // With the operator's consent it starts.
    let mut allowed = keys;
    merge_json(&mut allowed, json!({"server": {"wyoming_allow_unauthenticated": true}}));
    let (status, stdout, stderr) = exits(allowed, Duration::from_secs(5));
    assert!(status.is_none(), "exited: {stderr}");
    assert!(stdout.contains("wyoming listening on 0.0.0.0:"), "{stdout}");
}

#[test]
fn a_gateway_transcribes_wyoming_on_its_workers() {
    let nats = Nats::start();
    let config = cluster_config(&nats, json!({}));
    let _worker = worker(config.clone());
    let mut gw_config = config;
    merge_json(&mut gw_config, json!({"server": {"wyoming_port": 0}}));
    // Healthy once it sees the worker.
    let gw = spawn("gateway", gw_config);
    let r = check(&gw, &["transcribe", &jfk(), "--chunk-bytes", "2048"]);
    assert_jfk(&r);
    // The worker's progress comes back over NATS as transcript chunks.
    let joined: String = r["chunks"].as_array().expect("chunks").iter().filter_map(Value::as_str).collect();
    assert_eq!(joined, r["text"].as_str().expect("text"), "{r}");
    assert_eq!(r["types"].as_array().and_then(|t| t.last()), Some(&json!("transcript-stop")), "{r}");
}

#[test]
fn sigterm_mid_utterance_answers_it_then_exits() {
    let mut server = start(json!({}));
    let pid = server.child.id().to_string();
    let r = check(&server, &["transcribe", &jfk(), "--chunk-bytes", "2048", "--term-pid", &pid]);
    assert_jfk(&r);
    let start = Instant::now();
    let status = loop {
        if let Some(s) = server.child.try_wait().expect("wait") {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "the server did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
}
