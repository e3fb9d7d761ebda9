//! Opus as browsers record it: WebM (Chrome and Firefox MediaRecorder) and
//! Ogg (`.opus`, `.ogg`), decoded in-process with libopus. The files are
//! made on the fly from jfk.wav with ffmpeg's libopus encoder; without
//! ffmpeg these tests fail on purpose rather than skip.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use whisper_serve::audio::{decode, AudioError, SAMPLE_RATE};

const LIMIT_S: f64 = 14_400.0;
const JFK_SECONDS: f64 = 11.0;

/// jfk.wav through `ffmpeg … ARGS out.NAME`: the new file's bytes.
fn encode(name: &str, args: &[&str]) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join(name);
    let src = jfk_wav();
    let mut a = vec!["-y", "-loglevel", "error", "-i", src.to_str().expect("utf-8 path")];
    a.extend_from_slice(args);
    a.push(out.to_str().expect("utf-8 path"));
    tool("ffmpeg", &a);
    std::fs::read(&out).expect("ffmpeg output")
}

/// WebM as Chrome's MediaRecorder writes it: a live stream whose Segment
/// and Clusters have the "unknown" size, with no Cues and no Duration.
/// ffmpeg's live mode gives the rest; the Cluster sizes are rewritten here.
fn chrome_webm() -> Vec<u8> {
    let out = Command::new("ffmpeg")
        .args(["-loglevel", "error", "-i"])
        .arg(jfk_wav())
        .args(["-c:a", "libopus", "-ar", "48000", "-ac", "1", "-f", "webm", "-live", "1", "-"])
        .output()
        .expect("ffmpeg is needed by this test (apt-get install ffmpeg)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let live = out.stdout;
    const UNKNOWN: [u8; 8] = [0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];
    let segment = live.windows(4).position(|w| w == [0x18, 0x53, 0x80, 0x67]).expect("Segment");
    let (_, size_len) = vint(&live, segment + 4);
    let mut webm = live[..segment + 4].to_vec();
    webm.extend_from_slice(&UNKNOWN);
    let mut at = segment + 4 + size_len;
    let mut clusters = 0;
    while at < live.len() {
        let id_len = live[at].leading_zeros() as usize + 1;
        let (size, size_len) = vint(&live, at + id_len);
        let data = at + id_len + size_len;
        let end = (data + size as usize).min(live.len());
        let id = &live[at..at + id_len];
        webm.extend_from_slice(id);
        if id == [0x1F, 0x43, 0xB6, 0x75] {
            webm.extend_from_slice(&UNKNOWN);
            clusters += 1;
        } else {
            webm.extend_from_slice(&live[at + id_len..data]);
        }
        webm.extend_from_slice(&live[data..end]);
        at = end;
    }
    assert!(clusters > 5, "{clusters} clusters");
    webm
}

/// An EBML variable-length integer at `at`: (value, length in bytes).
fn vint(b: &[u8], at: usize) -> (u64, usize) {
    let len = b[at].leading_zeros() as usize + 1;
    let mut v = u64::from(b[at] & 0xFFu8.checked_shr(len as u32).unwrap_or(0));
    for i in 1..len {
        v = (v << 8) | u64::from(b[at + i]);
    }
    (v, len)
}

/// The browser-like files, each with the name it is uploaded under.
fn browser_files() -> Vec<(&'static str, Vec<u8>)> {
    let opus = |ch: &'static str| vec!["-c:a", "libopus", "-ar", "48000", "-ac", ch];
    vec![
        ("mono.webm", encode("x.webm", &opus("1"))),
        ("stereo.webm", encode("x.webm", &opus("2"))),
        ("mono.opus", encode("x.opus", &opus("1"))),
        ("stereo.opus", encode("x.opus", &opus("2"))),
        // Ogg/Opus named .ogg, encoded from 16 kHz (the OpusHead says so;
        // Opus still decodes at 48 kHz).
        ("jfk.ogg", encode("x.ogg", &["-c:a", "libopus"])),
        ("chrome.webm", chrome_webm()),
    ]
}


fn seconds(samples: &[f32]) -> f64 {
    samples.len() as f64 / f64::from(SAMPLE_RATE)
}

#[test]
fn browser_opus_decodes_to_the_right_length_in_time() {
    let reference = decode(&std::fs::read(jfk_wav()).expect("jfk.wav"), LIMIT_S).expect("jfk.wav decodes");
    for (name, bytes) in browser_files() {
        let out = decode(&bytes, LIMIT_S).unwrap_or_else(|e| panic!("{name}: {e}"));
        // WebM keeps the last frame's encoder padding (symphonia 0.5 does
        // not expose Matroska's DiscardPadding): 13.5 ms here.
        let dur = seconds(&out);
        assert!((dur - JFK_SECONDS).abs() <= 0.05, "{name}: {dur} s");
        assert!(out.iter().all(|s| (-1.0..=1.0).contains(s)), "{name}: sample out of range");
        // Pre-skip dropped: the speech lines up with jfk.wav at lag 0 (a
        // missed 312-sample pre-skip would show as a lag of 104).
        let (best_lag, best) = (-160..=160)
            .map(|lag| (lag, common::ncc(&out, &reference, lag)))
            .fold((0, f64::MIN), |m, x| if x.1 > m.1 { x } else { m });
        assert!(best_lag.abs() <= 1, "{name}: best lag {best_lag} samples");
        assert!(best > 0.95, "{name}: correlation {best}");
    }
}

#[test]
fn the_duration_limit_applies_while_decoding_and_to_declared_lengths() {
    for name in ["x.webm", "x.opus"] {
        let bytes = encode(name, &["-c:a", "libopus"]);
        match decode(&bytes, 5.0) {
            Err(AudioError::TooLong { seconds, limit_s }) => {
                assert!(seconds > 5.0 && seconds <= 11.1, "{name}: {seconds}");
                assert_eq!(limit_s, 5.0);
            }
            other => panic!("{name}: expected TooLong, got {other:?}"),
        }
    }
    // An Ogg file whose last page claims 10 hours is refused from its
    // header, before anything is decoded.
    let forged = ogg_claiming_hours(&encode("x.opus", &["-c:a", "libopus"]), 10.0);
    let t = Instant::now();
    let r = decode(&forged, LIMIT_S);
    assert!(t.elapsed() < Duration::from_millis(200), "took {:?}", t.elapsed());
    match r {
        Err(AudioError::TooLong { seconds, .. }) => assert!((seconds - 36_000.0).abs() < 1.0, "{seconds}"),
        other => panic!("expected TooLong, got {other:?}"),
    }
}

/// Sets the granule position of the last Ogg page to `hours` at 48 kHz,
/// with a valid page checksum.
fn ogg_claiming_hours(ogg: &[u8], hours: f64) -> Vec<u8> {
    let mut ogg = ogg.to_vec();
    let last = ogg.windows(4).rposition(|w| w == b"OggS").expect("an Ogg page");
    assert_ne!(ogg[last + 5] & 4, 0, "the last page has the end-of-stream flag");
    let granule = (hours * 3600.0 * 48_000.0) as u64;
    ogg[last + 6..last + 14].copy_from_slice(&granule.to_le_bytes());
    ogg[last + 22..last + 26].fill(0);
    let crc = ogg_crc(&ogg[last..]);
    ogg[last + 22..last + 26].copy_from_slice(&crc.to_le_bytes());
    ogg
}

/// Ogg's page CRC: CRC-32, polynomial 0x04C11DB7, MSB first, no reflection.
fn ogg_crc(page: &[u8]) -> u32 {
    page.iter().fold(0u32, |mut crc, &b| {
        crc ^= u32::from(b) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 { (crc << 1) ^ 0x04C1_1DB7 } else { crc << 1 };
        }
        crc
    })
}

#[test]
fn opus_heads_that_cannot_be_decoded_are_refused() {
    let webm = encode("x.webm", &["-c:a", "libopus", "-ac", "2"]);
    let head = webm.windows(8).position(|w| w == b"OpusHead").expect("CodecPrivate");
    // Channel mapping family 2 (ambisonics): valid Opus, but not decoded.
    let mut ambisonic = webm.clone();
    ambisonic[head + 18] = 2;
    match decode(&ambisonic, LIMIT_S) {
        Err(e @ AudioError::Unsupported(_)) => assert!(e.to_string().contains("Opus"), "{e}"),
        other => panic!("expected Unsupported, got {other:?}"),
    }
    // Family 0 with 3 channels does not exist: a damaged file.
    let mut damaged = webm.clone();
    damaged[head + 9] = 3;
    let r = decode(&damaged, LIMIT_S);
    assert!(matches!(r, Err(AudioError::Corrupt(_))), "{r:?}");
}

#[test]
fn long_opus_decodes_fast() {
    // 17 × jfk.wav = 187 s of stereo Opus.
    let bytes = {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = dir.path().join("long.webm");
        let src = jfk_wav();
        tool(
            "ffmpeg",
            &[
                "-y", "-loglevel", "error", "-stream_loop", "16", "-i", src.to_str().expect("utf-8"),
                "-c:a", "libopus", "-ar", "48000", "-ac", "2", out.to_str().expect("utf-8"),
            ],
        );
        std::fs::read(&out).expect("long.webm")
    };
    let t = Instant::now();
    let out = decode(&bytes, LIMIT_S).expect("decodes");
    let took = t.elapsed();
    eprintln!("187 s of 48 kHz stereo Opus decoded and resampled in {took:?}");
    assert!((seconds(&out) - 187.0).abs() < 0.05, "{} s", seconds(&out));
    if !cfg!(debug_assertions) {
        assert!(took.as_secs_f64() < 2.0, "took {took:?}");
    }
}

fn assert_error(status: u16, body: &Value, expected: u16, what: &str) {
    assert_eq!(status, expected, "{what}: {body}");
    assert_eq!(body["success"], false, "{what}: {body}");
    assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{what}: {body}");
    for key in ["text", "latency", "word_count", "gpu_memory"] {
        assert!(body.get(key).is_some(), "{what}: error body lacks {key}: {body}");
    }
}

fn assert_jfk(status: u16, body: &Value, what: &str) {
    assert_eq!(status, 200, "{what}: {body}");
    assert_eq!(body["success"], true, "{what}: {body}");
    let text = body["text"].as_str().unwrap_or_default().to_string();
    let w = wer(&[(JFK_TEXT.to_string(), text.clone())]);
    assert_eq!(w, 0.0, "{what}: transcribed as {text:?}");
}

#[test]
fn browser_uploads_transcribe_and_damaged_ones_are_refused() {
    let server = Server::start(test_config(json!({})));
    let url = format!("{}/transcribe", server.url);
    let files = browser_files();

    for (name, bytes) in &files {
        let (status, body) = post_file(&url, "audio_file", name, bytes.clone());
        assert_jfk(status, &body, name);
    }

    let mut garbage_state = 0x2545_F491u32;
    let mut garbage = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                garbage_state = garbage_state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (garbage_state >> 24) as u8
            })
            .collect()
    };
    for (name, bytes) in files.iter().filter(|(n, _)| ["mono.webm", "stereo.opus", "chrome.webm"].contains(n)) {
        // Nothing decodable: the first 100 bytes, or garbage over the headers.
        let (s, b) = post_file(&url, "audio_file", name, bytes[..100].to_vec());
        assert_error(s, &b, 400, &format!("{name} cut to 100 bytes"));
        let mut headless = bytes.clone();
        headless[..400].copy_from_slice(&garbage(400));
        let (s, b) = post_file(&url, "audio_file", name, headless);
        assert_error(s, &b, 400, &format!("{name} with garbage over its headers"));

        // Cut in half: like a truncated MP3 (tests/api.rs), what is there
        // is transcribed, as ffmpeg-based servers do.
        let (s, b) = post_file(&url, "audio_file", name, bytes[..bytes.len() / 2].to_vec());
        assert_eq!(s, 200, "{name} cut in half: {b}");
        let text = b["text"].as_str().unwrap_or_default();
        assert!(text.contains("fellow Americans") && !text.contains("for your country"), "{name} cut in half: {b}");

        // Garbage in the middle: Ogg loses the damaged pages and decodes
        // the rest; the WebM size guard refuses the file when the garbage
        // reads as an element larger than the file. Either way a client
        // error or a transcript, never a server error.
        let mut damaged = bytes.clone();
        let mid = damaged.len() / 2;
        damaged[mid..mid + 2000].copy_from_slice(&garbage(2000));
        let (s, b) = post_file(&url, "audio_file", name, damaged);
        if s == 200 {
            assert!(b["text"].as_str().unwrap_or_default().contains("fellow Americans"), "{name} damaged: {b}");
        } else {
            assert_error(s, &b, 400, &format!("{name} with garbage in the middle"));
        }
    }

    // A header claiming 10 hours: refused before decoding, as for WAV/FLAC.
    let (_, opus) = files.iter().find(|(n, _)| *n == "mono.opus").expect("mono.opus");
    let (s, b) = post_file(&url, "audio_file", "hours.opus", ogg_claiming_hours(opus, 10.0));
    assert_error(s, &b, 413, "an Ogg page claiming 10 hours");

    // Still healthy, still transcribing.
    let health = client().get(format!("{}/health", server.url)).send().expect("GET /health");
    assert_eq!(health.status(), 200);
    let (_, webm) = &files[0];
    let (status, body) = post_file(&url, "audio_file", "again.webm", webm.clone());
    assert_jfk(status, &body, "a valid upload after the damaged ones");
}
