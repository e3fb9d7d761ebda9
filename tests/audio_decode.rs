//! Decodes real speech in every format the service should accept. Files
//! other than the two reference ones are made on the fly with `sox` and
//! `ffmpeg`; without them these tests fail on purpose rather than skip.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use whisper_serve::audio::{decode, AudioError, SAMPLE_RATE};

const LIMIT_S: f64 = 14_400.0;
const JFK_SECONDS: f64 = 11.0;

fn speech(rel: &str) -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/speech")).join(rel)
}

use common::jfk_wav;

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn seconds(samples: &[f32]) -> f64 {
    samples.len() as f64 / f64::from(SAMPLE_RATE)
}


/// Best correlation within ±`max_lag_s`, for codecs that may shift the signal a little.
fn best_ncc(a: &[f32], b: &[f32], max_lag_s: f64) -> f64 {
    let max_lag = (max_lag_s * f64::from(SAMPLE_RATE)) as isize;
    (-max_lag..=max_lag)
        .map(|lag| common::ncc(a, b, lag))
        .fold(f64::MIN, f64::max)
}

/// Runs `sox` or `ffmpeg`; a missing tool is a test failure with a hint.
fn run(tool: &str, args: &[&str]) {
    let out = Command::new(tool).args(args).output().unwrap_or_else(|e| {
        panic!("`{tool}` is needed by this test but could not be run ({e}); install sox and ffmpeg, e.g. `apt-get install sox ffmpeg`")
    });
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Converts jfk.wav with `tool`, returning the new file's bytes.
fn transcode(tool: &str, name: &str, options: &[&str]) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("temp dir");
    let dst = dir.path().join(name);
    let src = jfk_wav();
    let (src, dst_s) = (
        src.to_str().expect("utf-8 path"),
        dst.to_str().expect("utf-8 path"),
    );
    let args: Vec<&str> = match tool {
        "sox" => [&[src][..], options, &[dst_s]].concat(),
        _ => [
            &["-hide_banner", "-loglevel", "error", "-y", "-i", src][..],
            options,
            &[dst_s],
        ]
        .concat(),
    };
    run(tool, &args);
    read(&dst)
}

fn reference() -> Vec<f32> {
    decode(&read(&jfk_wav()), LIMIT_S).expect("jfk.wav decodes")
}

/// Decodes `bytes` and checks it is the JFK speech, 11 s long.
fn check_jfk(label: &str, bytes: &[u8], tolerance_s: f64, max_lag_s: f64, min_ncc: f64) {
    let out = decode(bytes, LIMIT_S).unwrap_or_else(|e| panic!("{label}: {e}"));
    let dur = seconds(&out);
    assert!((dur - JFK_SECONDS).abs() <= tolerance_s, "{label}: {dur} s");
    let c = best_ncc(&out, &reference(), max_lag_s);
    assert!(c > min_ncc, "{label}: correlation {c}");
    assert!(
        out.iter().all(|s| (-1.0..=1.0).contains(s)),
        "{label}: sample out of range"
    );
}

#[test]
fn jfk_wav_and_flac_agree_in_length_and_timing() {
    let wav = reference();
    let flac =
        decode(&read(&speech("jfk_openai_whisper/jfk.flac")), LIMIT_S).expect("jfk.flac decodes");
    for (label, x) in [("wav", &wav), ("flac", &flac)] {
        assert!(
            (seconds(x) - JFK_SECONDS).abs() <= 0.05,
            "{label}: {} s",
            seconds(x)
        );
    }
    // Lag 0 only: a resampler delay would show up here.
    let c = common::ncc(&flac, &wav, 0);
    assert!(
        c > 0.9,
        "wav vs 44.1 kHz stereo flac correlation at lag 0: {c}"
    );
}

#[test]
fn mp3_decodes() {
    check_jfk(
        "mp3",
        &transcode("ffmpeg", "x.mp3", &["-c:a", "libmp3lame"]),
        0.1,
        0.05,
        0.8,
    );
}

#[test]
fn ogg_vorbis_decodes() {
    check_jfk(
        "ogg",
        &transcode("ffmpeg", "x.ogg", &["-c:a", "libvorbis"]),
        0.1,
        0.05,
        0.8,
    );
}

#[test]
fn m4a_aac_decodes_without_priming_delay() {
    // Lag 0 only: AAC's 1024 priming frames must be cut using the MP4 edit
    // list, or the speech would start 64 ms late.
    check_jfk(
        "m4a",
        &transcode("ffmpeg", "x.m4a", &["-c:a", "aac"]),
        0.1,
        0.0,
        0.8,
    );
}

#[test]
fn flac_decodes() {
    check_jfk("flac", &transcode("sox", "x.flac", &[]), 0.1, 0.0, 0.8);
}

#[test]
fn wav_variants_decode() {
    for (label, options) in [
        ("24-bit", &["-b", "24"][..]),
        ("float32", &["-e", "floating-point", "-b", "32"][..]),
        ("8-bit", &["-e", "unsigned-integer", "-b", "8"][..]),
        ("48 kHz stereo", &["-r", "48000", "-c", "2"][..]),
    ] {
        check_jfk(label, &transcode("sox", "x.wav", options), 0.1, 0.0, 0.8);
    }
}

#[test]
fn other_containers_and_codecs_decode() {
    for (name, codec) in [
        ("x.m4a", "alac"),
        ("x.mka", "flac"),
        ("x.webm", "libvorbis"),
        ("x.aiff", "pcm_s16be"),
        ("x.caf", "pcm_s16le"),
        ("x.wav", "adpcm_ms"),
    ] {
        let bytes = transcode("ffmpeg", name, &["-c:a", codec, "-ar", "44100", "-ac", "2"]);
        check_jfk(&format!("{name} ({codec})"), &bytes, 0.1, 0.05, 0.8);
    }
}

#[test]
fn wav_streamed_to_a_pipe_decodes() {
    // ffmpeg writing WAV to stdout leaves the sizes at 0xFFFFFFFF.
    let dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-i"])
        .arg(jfk_wav())
        .args(["-f", "wav", "-"])
        .current_dir(dir.path())
        .output()
        .expect("ffmpeg is needed by this test; install sox and ffmpeg");
    assert!(out.status.success());
    check_jfk("piped wav", &out.stdout, 0.05, 0.0, 0.99);
}

#[test]
fn truncated_mp3_decodes_the_part_that_is_there() {
    let mp3 = transcode("ffmpeg", "x.mp3", &["-c:a", "libmp3lame"]);
    let cut = &mp3[..mp3.len() * 4 / 10];
    let dur = seconds(&decode(cut, LIMIT_S).expect("a truncated mp3 still decodes"));
    assert!((dur - 0.4 * JFK_SECONDS).abs() < 0.5, "{dur} s");

    let r = decode(&mp3[..300], LIMIT_S);
    assert!(r.is_err(), "300 bytes of mp3: {r:?}");
}

#[test]
fn opus_decodes_without_pre_skip_delay() {
    // Lag 0 only: the encoder's pre-skip (6.5 ms) must be dropped. More
    // Opus cases (WebM, stereo, damaged files, the server) are in
    // tests/opus_decode.rs.
    for name in ["x.opus", "x.webm"] {
        check_jfk(
            name,
            &transcode("ffmpeg", name, &["-c:a", "libopus"]),
            0.05,
            0.0,
            0.8,
        );
    }
}

#[test]
fn random_megabytes_are_unrecognised() {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let bytes: Vec<u8> = (0..2 * 1024 * 1024)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    let r = decode(&bytes, LIMIT_S);
    assert!(matches!(r, Err(AudioError::Unrecognised(_))), "{r:?}");
}

#[test]
fn three_minute_file_decodes_fast() {
    // 44.1 kHz stereo FLAC, the costliest common case: decode + downmix + resample.
    let dir = tempfile::tempdir().expect("temp dir");
    let dst = dir.path().join("long.flac");
    let src = speech("jfk_openai_whisper/jfk.flac");
    let (src, dst_s) = (src.to_str().expect("utf-8"), dst.to_str().expect("utf-8"));
    // jfk.flac is 11 s: 17 copies make 187 s.
    run("sox", &[&[src; 17][..], &[dst_s]].concat());
    let bytes = read(&dst);

    let t = Instant::now();
    let out = decode(&bytes, LIMIT_S).expect("decodes");
    let took = t.elapsed();
    eprintln!("187 s of 44.1 kHz stereo FLAC decoded and resampled in {took:?}");
    assert!((seconds(&out) - 187.0).abs() < 0.05, "{} s", seconds(&out));
    if !cfg!(debug_assertions) {
        assert!(took.as_secs_f64() < 1.0, "took {took:?}");
    }
    // The same file against a limit shorter than it.
    assert!(matches!(
        decode(&bytes, 60.0),
        Err(AudioError::TooLong { .. })
    ));
}

#[test]
fn absurd_table_sizes_are_refused_not_allocated() {
    // symphonia 0.5 would reserve entry_count × 12 bytes (~50 GB) for this
    // and abort the process; the size guard must refuse it first.
    let mut m4a = transcode("ffmpeg", "x.m4a", &["-c:a", "aac"]);
    for table in [&b"stsc"[..], b"stts", b"stsz", b"stco"] {
        let mut bytes = m4a.clone();
        let at = bytes
            .windows(4)
            .position(|w| w == table)
            .expect("table present");
        let count_at = at + 8 + if table == b"stsz" { 4 } else { 0 };
        bytes[count_at..count_at + 4].copy_from_slice(&0xFFFF_FFF0u32.to_be_bytes());
        let r = decode(&bytes, LIMIT_S);
        assert!(
            matches!(r, Err(AudioError::Corrupt(_))),
            "{:?}: {r:?}",
            std::str::from_utf8(table)
        );
    }
    m4a.truncate(m4a.len() / 2);
    assert!(decode(&m4a, LIMIT_S).is_err());
}
