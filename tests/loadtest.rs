//! `whisper-serve loadtest` end to end: the real binary against a real
//! server (tiny.en), against a closed port, and with bad arguments.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;
use serde_json::{json, Value};

fn loadtest(url: &str, out: &Path, extra: &[&str]) -> Output {
    Command::new(bin())
        .arg("loadtest")
        .arg(url)
        .arg("--audio")
        .arg(jfk_wav())
        .args(["--levels", "1,2", "--per-level", "3", "--out"])
        .arg(out)
        .args(extra)
        .output()
        .expect("run whisper-serve loadtest")
}

fn report(out: &Path) -> Value {
    let text = std::fs::read_to_string(out.join("loadtest.json")).expect("loadtest.json");
    serde_json::from_str(&text).expect("valid JSON")
}

fn levels(report: &Value) -> &Vec<Value> {
    report["levels"].as_array().expect("levels array")
}

#[test]
fn loadtest_measures_a_real_server_and_compares_with_the_previous_run() {
    let server = Server::start(test_config(json!({})));
    let dir = tempfile::tempdir().unwrap();

    let first = loadtest(&server.url, dir.path(), &[]);
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(first.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&first.stderr));
    assert!(stdout.contains("| concurrency | avg latency (s) | p95 latency (s) |"), "{stdout}");

    let r = report(dir.path());
    assert_eq!(r["endpoint"], "transcribe");
    let duration = r["files"][0]["duration_s"].as_f64().unwrap();
    assert!((duration - 11.0).abs() < 0.1, "jfk.wav is 11 s, got {duration}");
    let lv = levels(&r);
    assert_eq!(lv.len(), 2);
    for (level, c) in lv.iter().zip([1, 2]) {
        assert_eq!(level["concurrency"], c);
        assert_eq!(level["requests"], 3);
        assert_eq!(level["errors"], 0, "{level}");
        let (avg, p95) = (level["avg_latency_s"].as_f64().unwrap(), level["p95_latency_s"].as_f64().unwrap());
        assert!(avg > 0.0 && p95 >= avg, "{level}");
        assert!(level["audio_s_per_s"].as_f64().unwrap() > 0.0, "{level}");
        assert!(level["avg_latency_change_pct"].is_null(), "nothing to compare with yet: {level}");
    }

    let md = std::fs::read_to_string(dir.path().join("loadtest.md")).unwrap();
    assert!(md.contains("| concurrency | avg latency (s) | p95 latency (s) | error rate | req/s | audio s/s | change vs previous |"));
    assert!(md.contains(&server.url), "{md}");
    let svg = std::fs::read_to_string(dir.path().join("loadtest.svg")).unwrap();
    assert!(svg.starts_with("<svg") || svg.starts_with("<?xml"), "{}", &svg[..svg.len().min(200)]);
    // Axes are polylines too; the data series are the coloured ones.
    assert!(svg.contains("<polyline") && svg.contains("stroke=\"#0000FF\""), "no avg latency line drawn");
    assert!(svg.contains("\n2\n</text>"), "x axis not labelled with the levels");

    // The second run finds the first one's JSON in --out and compares.
    let second = loadtest(&server.url, dir.path(), &[]);
    let stdout = String::from_utf8_lossy(&second.stdout);
    assert!(second.status.success(), "{stdout}");
    let rows: Vec<&str> = stdout.lines().filter(|l| l.starts_with("| 1 |") || l.starts_with("| 2 |")).collect();
    assert_eq!(rows.len(), 2, "{stdout}");
    for row in rows {
        assert!(row.contains("latency ") && row.contains("%, audio s/s "), "no change shown: {row}");
    }
    for level in levels(&report(dir.path())) {
        assert!(level["avg_latency_change_pct"].is_number(), "{level}");
    }
}

#[test]
fn loadtest_reports_every_request_failing_against_a_closed_port() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let out = loadtest(&format!("http://127.0.0.1:{port}"), dir.path(), &["--timeout", "10"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r = report(dir.path());
    for level in levels(&r) {
        assert_eq!(level["error_rate"], 1.0, "{level}");
        assert_eq!(level["audio_s_per_s"], 0.0, "{level}");
        assert!(level["first_error"].as_str().is_some_and(|e| !e.is_empty()), "{level}");
    }
    assert!(String::from_utf8_lossy(&out.stdout).contains("| 100.0% |"));
}

#[test]
fn loadtest_usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| Command::new(bin()).arg("loadtest").args(args).output().unwrap().status.code();
    let jfk = jfk_wav();
    let jfk = jfk.to_str().unwrap();
    let out = dir.path().to_str().unwrap();
    let not_audio = repo().join("Cargo.toml");
    assert_eq!(run(&["not a url", "--audio", jfk, "--out", out]), Some(2));
    assert_eq!(run(&["http://127.0.0.1:9", "--out", out]), Some(2), "no audio");
    assert_eq!(run(&["http://127.0.0.1:9", "--audio", "/nonexistent.wav", "--out", out]), Some(2));
    assert_eq!(run(&["http://127.0.0.1:9", "--audio", not_audio.to_str().unwrap(), "--out", out]), Some(2));
    assert_eq!(run(&["http://127.0.0.1:9", "--audio", jfk, "--levels", "0", "--out", out]), Some(2));
    assert!(!dir.path().join("loadtest.json").exists());
}
