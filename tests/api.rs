//! The original API end to end: real binary, real model, real speech.

mod common;

use std::path::PathBuf;

use common::*;
use serde_json::{json, Value};

fn assert_jfk(body: &Value) {
    assert_eq!(body["success"], true, "{body}");
    let wer = wer(&[(JFK_TEXT.to_string(), body["text"].as_str().unwrap_or_default().to_string())]);
    assert!(wer <= 0.05, "JFK transcribed as {:?} (WER {wer})", body["text"]);
}

fn assert_error(status: u16, body: &Value, expected: u16) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["success"], false, "{body}");
    assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{body}");
    for key in ["text", "latency", "word_count", "gpu_memory"] {
        assert!(body.get(key).is_some(), "error body lacks {key}: {body}");
    }
}

#[test]
fn transcribes_jfk_with_the_original_response_shape() {
    let server = Server::start(test_config(json!({})));
    let (status, body) = transcribe_file(&server, &jfk_wav());
    assert_eq!(status, 200, "{body}");
    assert_jfk(&body);
    assert_eq!(body["word_count"], body["text"].as_str().unwrap_or_default().split_whitespace().count());
    assert!(body["latency"].as_f64().is_some_and(|l| l > 0.0));
    assert_eq!(body["gpu_memory"], 0.0);
    assert_eq!(body["error"], Value::Null);
    let health: Value = client().get(format!("{}/health", server.url)).send().unwrap().json().unwrap();
    assert_eq!(health, json!({"status": "healthy"}));
}

/// Every format users send gives the JFK sentence.
#[test]
fn every_format_gives_the_jfk_sentence() {
    let server = Server::start(test_config(json!({})));
    let tmp = tempfile::tempdir().unwrap();
    let src = jfk_wav();
    let src = src.to_str().unwrap();
    let out = |name: &str| tmp.path().join(name).to_str().unwrap().to_string();
    let mut files: Vec<PathBuf> = vec![jfk_wav(), speech().join("jfk_openai_whisper/jfk.flac")];
    for (name, args) in [
        ("s24.wav", vec!["-b", "24"]),
        ("f32.wav", vec!["-e", "floating-point", "-b", "32"]),
        ("s16_44k_stereo.wav", vec!["-r", "44100", "-c", "2"]),
        ("jfk.flac", vec![]),
    ] {
        let mut a = vec![src];
        let o = out(name);
        a.extend(args.iter().copied());
        a.push(&o);
        tool("sox", &a);
        files.push(o.into());
    }
    for (name, codec) in [("jfk.mp3", "libmp3lame"), ("jfk.ogg", "libvorbis"), ("jfk.m4a", "aac")] {
        let o = out(name);
        tool("ffmpeg", &["-y", "-loglevel", "error", "-i", src, "-c:a", codec, &o]);
        files.push(o.into());
    }
    for f in files {
        let (status, body) = transcribe_file(&server, &f);
        assert_eq!(status, 200, "{}: {body}", f.display());
        assert_jfk(&body);
    }
}

#[test]
fn bad_input_gets_the_right_status_and_the_server_stays_healthy() {
    let server = Server::start(test_config(json!({})));
    let url = format!("{}/transcribe", server.url);
    let tmp = tempfile::tempdir().unwrap();

    // Random bytes named .wav
    let noise: Vec<u8> = (0..200_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let (s, b) = post_file(&url, "audio_file", "noise.wav", noise);
    assert_error(s, &b, 400);

    // A truncated MP3 (only its first 300 bytes: no complete frame).
    let mp3 = tmp.path().join("jfk.mp3");
    tool("ffmpeg", &["-y", "-loglevel", "error", "-i", jfk_wav().to_str().unwrap(), mp3.to_str().unwrap()]);
    let bytes = std::fs::read(&mp3).unwrap();
    let (s, b) = post_file(&url, "audio_file", "cut.mp3", bytes[..300].to_vec());
    assert_error(s, &b, 400);
    // Cut at 60 %: what is there is transcribed, as ffmpeg-based servers do.
    let (s, b) = post_file(&url, "audio_file", "cut.mp3", bytes[..bytes.len() * 6 / 10].to_vec());
    assert_eq!(s, 200, "{b}");
    assert!(b["text"].as_str().unwrap_or_default().contains("fellow Americans"), "{b}");

    // Empty file, a text file, no audio_file field.
    let (s, b) = post_file(&url, "audio_file", "empty.wav", vec![]);
    assert_error(s, &b, 400);
    let (s, b) = post_file(&url, "audio_file", "notes.txt", b"hello there".to_vec());
    assert_error(s, &b, 400);
    assert!(b["error"].as_str().unwrap_or_default().contains(".txt"), "{b}");
    let (s, b) = post_file(&url, "file", "jfk.wav", std::fs::read(jfk_wav()).unwrap());
    assert_error(s, &b, 400);
    assert!(b["error"].as_str().unwrap_or_default().contains("audio_file"), "{b}");

    // 150 MB upload against the 100 MB default limit.
    let big = tmp.path().join("big.wav");
    std::fs::write(&big, vec![0u8; 150 * 1024 * 1024]).unwrap();
    let (s, b) = curl_post(&url, "audio_file", &big);
    assert_error(s, &b, 413);

    // Valid headers claiming hours of audio: WAV and FLAC.
    let mut wav = std::fs::read(jfk_wav()).unwrap()[..4096].to_vec();
    let data = wav.windows(4).position(|w| w == b"data").unwrap();
    let claimed: u32 = 0xF000_0000; // 35 hours of 16 kHz 16-bit mono
    wav[data + 4..data + 8].copy_from_slice(&claimed.to_le_bytes());
    let riff = claimed + data as u32; // RIFF size: everything after its 8-byte header
    wav[4..8].copy_from_slice(&riff.to_le_bytes());
    let (s, b) = post_file(&url, "audio_file", "hours.wav", wav);
    assert_error(s, &b, 413);
    // A real FLAC file whose STREAMINFO claims 2^36 - 1 samples (days).
    let mut flac = std::fs::read(speech().join("jfk_openai_whisper/jfk.flac")).unwrap();
    assert_eq!(&flac[..4], b"fLaC");
    let field = u64::from_be_bytes(flac[18..26].try_into().unwrap()) | 0xF_FFFF_FFFF;
    flac[18..26].copy_from_slice(&field.to_be_bytes());
    let (s, b) = post_file(&url, "audio_file", "hours.flac", flac);
    assert_error(s, &b, 413);

    // Still healthy, still transcribing.
    let health = client().get(format!("{}/health", server.url)).send().unwrap();
    assert_eq!(health.status(), 200);
    let (s, b) = transcribe_file(&server, &jfk_wav());
    assert_eq!(s, 200);
    assert_jfk(&b);
}

fn concurrent(server: &Server, n: usize) -> Vec<(u16, Value, Option<String>)> {
    let bytes = std::fs::read(jfk_wav()).unwrap();
    let url = format!("{}/transcribe", server.url);
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let (bytes, url) = (bytes.clone(), url.clone());
            std::thread::spawn(move || {
                let part = reqwest::blocking::multipart::Part::bytes(bytes).file_name("jfk.wav");
                let form = reqwest::blocking::multipart::Form::new().part("audio_file", part);
                let r = client().post(&url).multipart(form).send().expect("request");
                let retry = r.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_string);
                let status = r.status().as_u16();
                (status, r.json::<Value>().unwrap_or(Value::Null), retry)
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn thirty_two_concurrent_requests_on_two_replicas_all_succeed() {
    let server = Server::start(test_config(json!({"deployment": {"num_replicas": 2, "cpu_per_replica": 1}})));
    let results = concurrent(&server, 32);
    for (status, body, _) in &results {
        assert_eq!(*status, 200, "{body}");
        assert_jfk(body);
    }
}

#[test]
fn a_full_queue_answers_503_with_retry_after_and_the_rest_succeed() {
    let server = Server::start(test_config(json!({"limits": {"max_queue": 2}})));
    let results = concurrent(&server, 12);
    let ok = results.iter().filter(|r| r.0 == 200).count();
    let full: Vec<_> = results.iter().filter(|r| r.0 == 503).collect();
    assert_eq!(ok + full.len(), results.len(), "only 200 and 503 expected: {results:?}");
    assert!(!full.is_empty(), "12 requests against 1 replica and a queue of 2 must overflow");
    assert!(ok >= 3, "the queued requests must succeed: {ok}");
    for (status, body, retry) in &full {
        assert_error(*status, body, 503);
        assert!(retry.as_deref().and_then(|r| r.parse::<u64>().ok()).is_some(), "no Retry-After");
    }
    for (status, body, _) in results.iter().filter(|r| r.0 == 200) {
        assert_eq!(*status, 200);
        assert_jfk(body);
    }
}

#[test]
fn sigterm_finishes_the_request_in_flight_then_exits() {
    let tmp = tempfile::tempdir().unwrap();
    // A minute of distinct speech: a few seconds of work on this model.
    // (JFK three times over would repeat its text, trip Whisper's
    // compression-ratio check and leave the words to temperature sampling.)
    let (long, bounds) = concat_corpus(tmp.path(), 60.0);
    let mut server = Server::start(test_config(json!({})));
    let url = format!("{}/transcribe", server.url);
    let bytes = std::fs::read(&long).unwrap();
    let request = std::thread::spawn(move || post_file(&url, "audio_file", "long.wav", bytes));
    std::thread::sleep(std::time::Duration::from_millis(400));
    let killed = std::process::Command::new("kill").args(["-TERM", &server.pid().to_string()]).status().unwrap();
    assert!(killed.success());
    let (status, body) = request.join().unwrap();
    assert_eq!(status, 200, "the request in flight was dropped: {body}");
    // All of it, not the first windows only: tiny.en's corpus WER is ~6 %;
    // a minute with one window missing would be over 30 %.
    let reference = bounds.iter().map(|b| b.1.as_str()).collect::<Vec<_>>().join(" ");
    let w = wer(&[(reference, body["text"].as_str().unwrap_or_default().to_string())]);
    assert!(w <= 0.2, "WER {w:.3} against the clips' references: {body}");
    let exit = server.wait_exit(std::time::Duration::from_secs(30));
    assert!(exit.success(), "exit status {exit:?}");
}
