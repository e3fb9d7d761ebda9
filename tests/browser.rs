//! The pages in a real browser: headless Chromium (Debian's `chromium`)
//! driven by playwright-core (`tests/browser/run.mjs`; `scripts/test.sh`
//! installs both) against the real binary and model. Each scenario fails on
//! any console error, page error or request to another host; screenshots at
//! phone and desktop sizes go to `target/browser/`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::{json, Value};

fn out_dir() -> PathBuf {
    let dir = repo().join("target/browser");
    std::fs::create_dir_all(&dir).expect("target/browser");
    dir
}

/// Runs one scenario of run.mjs; returns what it observed.
fn scenario(name: &str, server: &Server, audio: &Path, key: Option<&str>) -> Value {
    let driver = repo().join("tests/browser/run.mjs");
    assert!(
        repo().join("tests/browser/node_modules/playwright-core").is_dir(),
        "playwright-core is missing: run scripts/test.sh (npm ci --prefix tests/browser)"
    );
    let out = out_dir();
    let status = Command::new("node")
        .arg(&driver)
        .args([name, &server.url])
        .arg(&out)
        .env("AUDIO_FILE", audio)
        .env("API_KEY", key.unwrap_or(""))
        .status()
        .expect("node (scripts/test.sh installs Node.js, chromium and playwright-core)");
    let report: Value = serde_json::from_slice(&std::fs::read(out.join(format!("{name}.json"))).expect("the scenario's report"))
        .expect("report json");
    assert!(status.success(), "scenario {name} failed: {}\n{report:#}", report["error"]);
    assert_eq!(report["ok"], true, "{report:#}");
    for list in ["console", "pageErrors", "foreignRequests"] {
        let entries = report[list].as_array().cloned().unwrap_or_default();
        // With keys on, the page learns that it needs one from a single 401
        // (before uploading anything), which Chromium logs as a failed load.
        let expected_401 = |e: &Value| {
            (name == "auth" || name == "live_auth")
                && list == "console"
                && e["text"].as_str().is_some_and(|t| t.contains("status of 401"))
        };
        let unexpected: Vec<_> = entries.iter().filter(|e| !expected_401(e)).collect();
        assert!(unexpected.is_empty(), "{name}: {list} not empty: {unexpected:?}");
        assert!(entries.len() - unexpected.len() <= 1, "{name}: more than one 401: {entries:?}");
    }
    for size in ["phone", "desktop"] {
        let shots: Vec<_> = std::fs::read_dir(&out)
            .expect("out dir")
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .filter(|f| f.starts_with(&format!("{name}-")) && f.ends_with(&format!("-{size}.png")))
            .collect();
        assert!(!shots.is_empty(), "{name}: no {size} screenshot in {}", out.display());
    }
    report
}

/// Lower case, letters and spaces only.
fn words(text: &str) -> String {
    let t: String = text.to_lowercase().chars().map(|c| if c.is_alphanumeric() { c } else { ' ' }).collect();
    t.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn assert_jfk(text: &str) {
    let w = wer(&[(JFK_TEXT.to_string(), text.to_string())]);
    assert!(w <= 0.1, "not the JFK sentence (WER {w:.3}): {text}");
}

/// SRT cues: (start s, end s, text); panics on anything malformed.
fn parse_srt(srt: &str) -> Vec<(f64, f64, String)> {
    let time = |s: &str| -> f64 {
        let (hms, ms) = s.trim().split_once(',').expect("hh:mm:ss,mmm");
        let p: Vec<f64> = hms.split(':').map(|x| x.parse().expect("number")).collect();
        assert_eq!(p.len(), 3, "{s}");
        p[0] * 3600.0 + p[1] * 60.0 + p[2] + ms.parse::<f64>().expect("ms") / 1000.0
    };
    let mut cues = Vec::new();
    for (i, block) in srt.replace("\r\n", "\n").split("\n\n").filter(|b| !b.trim().is_empty()).enumerate() {
        let mut lines = block.lines();
        assert_eq!(lines.next().map(str::trim), Some((i + 1).to_string().as_str()), "cue number in {block:?}");
        let (a, b) = lines.next().and_then(|l| l.split_once(" --> ")).expect("a time line");
        let text = lines.collect::<Vec<_>>().join(" ");
        assert!(!text.trim().is_empty(), "empty cue {block:?}");
        cues.push((time(a), time(b), text));
    }
    cues
}

#[test]
fn upload_through_the_page_transcribes_plays_and_downloads() {
    let server = Server::start(test_config(json!({})));
    let r = scenario("upload", &server, &jfk_wav(), None);
    assert_jfk(r["transcript"].as_str().expect("transcript"));
    assert!(r["segments"].as_u64().expect("segments") >= 1, "{r}");
    assert_eq!(r["progressSeen"], true, "no upload progress shown: {r}");
    let statuses: Vec<&str> = r["statusesSeen"].as_array().expect("statuses").iter().filter_map(Value::as_str).collect();
    assert_eq!(statuses.last(), Some(&"completed"), "{statuses:?}");
    assert_eq!(r["played"], true, "clicking a segment did not play it: {}", r["playback"]);

    let cues = parse_srt(r["srt"].as_str().expect("srt"));
    assert!(!cues.is_empty());
    assert!(cues.windows(2).all(|w| w[0].1 <= w[1].0 + 1e-6) && cues.iter().all(|c| c.0 < c.1), "{cues:?}");
    assert!(cues.last().expect("cue").1 <= 11.5, "{cues:?}");
    let srt_text = cues.iter().map(|c| c.2.as_str()).collect::<Vec<_>>().join(" ");
    assert_eq!(words(&srt_text), words(r["transcript"].as_str().expect("transcript")));
    assert!(r["vtt"].as_str().expect("vtt").starts_with("WEBVTT"));
    assert_eq!(words(r["txt"].as_str().expect("txt")), words(r["transcript"].as_str().expect("t")));
    let json: Value = serde_json::from_str(r["json"].as_str().expect("json")).expect("the json download parses");
    assert!(json["segments"].as_array().is_some_and(|s| !s.is_empty()), "{json}");
}

#[test]
fn recording_from_the_microphone_is_transcribed() {
    let server = Server::start(test_config(json!({})));
    // Chromium feeds this file as the microphone (--use-file-for-fake-audio-capture).
    let r = scenario("record", &server, &jfk_wav(), None);
    let up = &r["uploaded"];
    // Chromium records WebM/Opus: this is the Opus path end to end.
    assert!(up.to_string().contains("webm"), "not a WebM upload: {up}");
    assert!(r["recordingBytes"].as_u64().expect("bytes") > 10_000, "{r}");
    // Five seconds of JFK: the first words.
    let heard = words(r["transcript"].as_str().expect("transcript"));
    assert!(heard.contains("fellow american"), "{heard}");
}

/// JFK with silence around it (0.5 s before, 2.5 s after), so that server
/// VAD ends the turn (the live scenarios play it once, then silence; with
/// LOOP_AUDIO=1 the file loops, and Stop commits the turn then open).
fn padded_jfk(dir: &Path) -> PathBuf {
    let out = dir.join("jfk-padded.wav");
    tool("sox", &[jfk_wav().to_str().unwrap(), out.to_str().unwrap(), "pad", "0.5", "2.5"]);
    out
}

/// What every live scenario must have seen; returns the final turns' text.
fn check_live(r: &Value) -> Vec<String> {
    assert_eq!(r["panels"]["hash"], "#live", "{r:#}");
    let update = &r["ws"]["sessionUpdate"]["session"];
    assert_eq!(update["audio"]["input"]["format"], json!({"type": "audio/pcm", "rate": 24000}), "{update}");
    assert_eq!(update["audio"]["input"]["turn_detection"]["type"], "server_vad", "{update}");
    // 100 ms of 24 kHz pcm16 per append, sent at the pace it is heard.
    let sizes = r["ws"]["appendBytes"].as_object().expect("appendBytes");
    assert_eq!(sizes.keys().collect::<Vec<_>>(), ["4800"], "append sizes: {sizes:?}");
    let (sent, wall) = (r["audioSecondsSent"].as_f64().expect("audio s"), r["wallSeconds"].as_f64().expect("wall s"));
    assert!(wall > 5.0 && (sent / wall - 1.0).abs() < 0.15, "{sent} s of audio sent in {wall} s");

    let types: Vec<&str> = r["receivedTypes"].as_array().expect("types").iter().filter_map(Value::as_str).collect();
    for t in [
        "session.created",
        "session.updated",
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.completed",
    ] {
        assert!(types.contains(&t), "never received {t}: {types:?}");
    }
    // Stop may commit a turn the VAD has just ended itself: that one error is harmless.
    let errors: Vec<&Value> = r["ws"]["received"]
        .as_array()
        .expect("received")
        .iter()
        .filter(|e| e["type"] == "error" && e["error"]["code"] != "input_audio_buffer_commit_empty")
        .collect();
    assert!(errors.is_empty(), "error events: {errors:?}");
    assert_eq!(r["statusAfterStop"]["status"], "stopped", "{r:#}");
    assert_eq!(r["wsClosedAfterStop"], true);
    assert_eq!(r["micStopped"], true);

    // The page shows each completed transcript as its turn's final text.
    let finals: Vec<String> =
        r["finals"].as_array().expect("finals").iter().map(|f| f.as_str().unwrap_or("").to_string()).collect();
    let completed: Vec<&str> = r["completed"]
        .as_array()
        .expect("completed")
        .iter()
        .filter_map(|c| c["transcript"].as_str())
        .filter(|t| !t.trim().is_empty())
        .collect();
    assert!(!finals.is_empty() && finals.len() <= completed.len(), "finals {finals:?}, completed {completed:?}");
    for (f, c) in finals.iter().zip(&completed) {
        assert_eq!(f.trim(), c.trim(), "the page's final text is not the completed transcript");
    }
    finals
}

/// The first final turns, joined until they hold as many words as the JFK
/// sentence (server VAD may cut it at a pause): the microphone loops the
/// file, so later turns repeat it.
fn first_sentence(finals: &[String]) -> String {
    let want = words(JFK_TEXT).split(' ').count();
    let mut joined = String::new();
    for f in finals {
        joined = format!("{joined} {f}");
        if words(&joined).split(' ').count() + 2 >= want {
            break;
        }
    }
    joined.trim().to_string()
}

#[test]
fn live_mode_streams_the_microphone_and_shows_text_as_it_is_committed() {
    let server = Server::start(test_config(json!({})));
    let dir = tempfile::tempdir().expect("temp dir");
    let r = scenario("live", &server, &padded_jfk(dir.path()), None);
    assert_eq!(r["askedForKey"], false, "{r:#}");
    let finals = check_live(&r);
    assert_jfk(&first_sentence(&finals));
    // While the turn was open the page showed the partial indicator, styled
    // apart from the text.
    assert_eq!(r["partialSeen"], true, "{r:#}");
    assert_eq!(r["partialStyle"], "italic", "{r:#}");
    // The first turn's text grew with each delta as it came (how many come
    // before the turn ends depends on the server's speed), and the
    // completed transcript then replaced it.
    let list = |v: &Value| -> Vec<String> {
        v.as_array().expect("a list").iter().map(|x| x.as_str().unwrap_or("").to_string()).collect()
    };
    let deltas = list(&r["firstTurnDeltas"]);
    let growth = list(&r["firstTurnGrowth"]);
    assert!(!deltas.is_empty(), "no delta for the first turn: {r:#}");
    let expected: Vec<String> = (1..=deltas.len()).map(|n| deltas[..n].concat()).collect();
    assert_eq!(growth, expected, "the text shown did not grow delta by delta");
    eprintln!(
        "live: {} deltas for the first turn, {} before its speech stopped; finals {finals:?}",
        deltas.len(),
        r["firstTurnDeltasBeforeStop"]
    );
}

#[test]
fn live_mode_with_keys_asks_once_and_sends_the_key_as_a_subprotocol() {
    let key = "browser-live-key-123456";
    let server = Server::start(test_config(json!({"auth": {"api_keys": [key]}})));
    let dir = tempfile::tempdir().expect("temp dir");
    let r = scenario("live_auth", &server, &padded_jfk(dir.path()), Some(key));
    assert_eq!(r["askedForKey"], true, "{r:#}");
    let finals = check_live(&r);
    assert_jfk(&first_sentence(&finals));
}

#[test]
fn dashboard_shows_requests_as_they_happen() {
    let server = Server::start(test_config(json!({"deployment": {"num_replicas": 2}})));
    let r = scenario("dashboard", &server, &jfk_wav(), None);
    let num = |v: &Value| v.as_str().and_then(|s| s.trim().parse::<f64>().ok()).or_else(|| v.as_f64()).unwrap_or(-1.0);
    let before = num(&r["before"]["requests"]);
    let after = num(&r["after"]["requests"]);
    assert!(after >= before + 3.0, "counter did not follow the 3 requests: {before} -> {after}\n{r:#}");
    assert_ne!(r["before"]["rps"], r["after"]["rps"], "the requests chart did not change: {r:#}");
    assert_eq!(r["replicaRows"], 2, "{r:#}");
    assert!(r["recentRows"].as_u64().unwrap_or(0) >= 3, "{r:#}");
    assert_eq!(r["info"]["info-model"].as_str().map(str::trim), Some("tiny.en"), "{r:#}");
    // And /v1/stats agrees with what the page showed.
    let (_, stats) = server.get_json("/v1/stats");
    assert!(stats["totals"]["requests"].as_f64().expect("requests") >= after, "{stats}");
}

#[test]
fn docs_page_lists_every_route() {
    let server = Server::start(test_config(json!({})));
    let r = scenario("docs", &server, &jfk_wav(), None);
    let (_, doc) = server.get_json("/openapi.json");
    let shown: std::collections::BTreeSet<(String, String)> = r["operations"]
        .as_array()
        .expect("operations")
        .iter()
        .map(|o| (o["method"].as_str().unwrap_or("").to_uppercase(), o["path"].as_str().unwrap_or("").to_string()))
        .collect();
    let mut missing = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in ["get", "post", "delete"] {
            if item.get(method).is_some() && !shown.contains(&(method.to_uppercase(), path.clone())) {
                missing.push(format!("{method} {path}"));
            }
        }
    }
    assert!(missing.is_empty(), "routes not shown on /docs: {missing:?}\nshown: {shown:?}");
    assert_eq!(r["expanded"], true);
}

#[test]
fn with_keys_the_page_asks_once_and_keeps_the_key_for_the_session_only() {
    let key = "browser-key-123456";
    // Stats keyed too, so the dashboard must reuse the stored key.
    let server = Server::start(test_config(json!({"auth": {"api_keys": [key], "metrics_requires_key": true}})));
    let r = scenario("auth", &server, &jfk_wav(), Some(key));
    assert_eq!(r["askedForKey"], true, "{r:#}");
    assert_jfk(r["transcript"].as_str().expect("transcript"));
    assert_eq!(r["storage"]["sessionKeyMatches"], true, "{r:#}");
    assert_eq!(r["storage"]["localStorageLength"], 0, "{r:#}");
    assert_eq!(r["storage"]["cookie"], "", "{r:#}");
    assert_eq!(r["dashboardAskedAgain"], false, "{r:#}");
    assert_eq!(r["dashboardModel"].as_str().map(str::trim), Some("tiny.en"));
}
