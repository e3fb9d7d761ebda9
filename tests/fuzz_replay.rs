//! Replays the fuzzing corpus (`fuzz/corpus/<target>/`) and every input
//! that once crashed a target (`fuzz/regressions/<target>/`) through the
//! same harness the cargo-fuzz targets run (`fuzz/fuzz_targets/harness.rs`),
//! on stable: no input may panic or take more than a few seconds. See
//! fuzz/README.md for running the fuzzers themselves.

#[path = "../fuzz/fuzz_targets/harness.rs"]
mod harness;

use std::fmt::Debug;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Generous for files of a few KB in release mode (they take milliseconds),
/// tight enough to notice a decoder spinning.
const PER_INPUT: Duration = Duration::from_secs(5);

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// Every file under `fuzz/{corpus,regressions}/<target>/`, sorted, and
/// under the folder `FUZZ_REPLAY_<TARGET>` names if set (e.g.
/// `FUZZ_REPLAY_AUDIO_DECODE=/tmp/fuzz-audio`: a fuzzing run's corpus,
/// replayed with release-build arithmetic).
fn inputs(target: &str) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = ["corpus", "regressions"]
        .iter()
        .map(|kind| fuzz_dir().join(kind).join(target))
        .collect();
    dirs.extend(
        std::env::var_os(format!("FUZZ_REPLAY_{}", target.to_uppercase())).map(PathBuf::from),
    );
    let mut files = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        files.extend(
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file() && p.file_name().is_none_or(|n| n != ".gitkeep")),
        );
    }
    files.sort();
    files
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(non-string panic)".into())
}

/// Runs every input of `target`, fails listing each that panicked or was
/// slow, and returns each file name with its result.
fn replay<T: Debug>(
    target: &str,
    run: fn(&[u8]) -> Result<T, String>,
) -> Vec<(String, Result<T, String>)> {
    let files = inputs(target);
    assert!(
        !files.is_empty(),
        "no inputs under fuzz/corpus/{target} or fuzz/regressions/{target}"
    );
    let mut failures = Vec::new();
    let mut results = Vec::new();
    for path in &files {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let started = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| run(&data)));
        let took = started.elapsed();
        let shown = path.strip_prefix(fuzz_dir()).unwrap_or(path).display();
        match outcome {
            Err(p) => failures.push(format!("{shown}: panicked: {}", panic_message(&*p))),
            Ok(_) if took > PER_INPUT => {
                failures.push(format!("{shown}: took {took:?} (limit {PER_INPUT:?})"))
            }
            Ok(r) => {
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                results.push((name, r));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} {target} inputs failed:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
    results
}

fn result_of<'a, T>(
    results: &'a [(String, Result<T, String>)],
    name: &str,
) -> &'a Result<T, String> {
    &results
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("seed {name} is missing from the corpus"))
        .1
}

#[test]
fn audio_decode_inputs_never_panic_or_hang() {
    let results = replay("audio_decode", harness::audio_decode);
    // The seeds still reach every container and codec the service decodes:
    // each of these must decode (a change of encoder or decoder that breaks
    // one would otherwise silently shrink what the fuzzer explores).
    for seed in [
        "wav_s16_8k.wav",
        "wav_s16_16k.wav",
        "wav_u8_8k.wav",
        "wav_f32_stereo_11k.wav",
        "wav_alaw.wav",
        "wav_mulaw.wav",
        "wav_adpcm_ima.wav",
        "wav_adpcm_ms.wav",
        "wav_streamed_pipe.wav",
        "flac_8k.flac",
        "mp3_8k.mp3",
        "mp3_id3.mp3",
        "mp3_stereo_44k.mp3",
        "ogg_vorbis_8k.ogg",
        "ogg_flac.oga",
        "m4a_aac_8k.m4a",
        "m4a_alac_8k.m4a",
        "mp4_aac.mp4",
        "mp4_fragmented.mp4",
        "mp4_flac.mp4",
        "mp4_mp3.mp4",
        "mov_pcm.mov",
        "aac_adts.aac",
        "aiff_s16.aiff",
        "aifc_f32.aifc",
        "caf_pcm.caf",
        "mkv_flac.mkv",
        "mka_aac.mka",
        "webm_vorbis.webm",
        "trunc_wav.wav",
    ] {
        let r = result_of(&results, seed);
        assert!(matches!(r, Ok(n) if *n > 0), "{seed}: {r:?}");
    }
    // Opus decodes where libopus is linked in, else is refused by name.
    for seed in ["ogg_opus.opus", "webm_opus.webm"] {
        let r = result_of(&results, seed);
        assert!(
            matches!(r, Ok(n) if *n > 0) || matches!(r, Err(e) if e.contains("Opus")),
            "{seed}: {r:?}"
        );
    }
    // Regression inputs named `decodes_*` are audio that once failed (a
    // caught panic became an error): they must decode now.
    for (name, r) in &results {
        if name.starts_with("decodes_") {
            assert!(matches!(r, Ok(n) if *n > 0), "{name}: {r:?}");
        }
    }
}

#[test]
fn upload_options_inputs_never_panic_or_hang() {
    let results = replay("upload_options", harness::upload_options);
    // The seeds reach `options::from_fields`, both accepting and refusing.
    for seed in [
        "openai_typical.multipart",
        "original_transcribe.multipart",
        "every_field.multipart",
        "response_formats.multipart",
        "file_without_filename.multipart",
        "structured_mode.bin",
    ] {
        let r = result_of(&results, seed);
        assert!(r.is_ok(), "{seed}: {r:?}");
    }
    for (seed, error) in [
        ("bad_values.multipart", "beam_size"),
        ("unknown_field.multipart", "colour"),
        ("missing_file.multipart", "file"),
    ] {
        let r = result_of(&results, seed);
        assert!(matches!(r, Err(e) if e.contains(error)), "{seed}: {r:?}");
    }
}

#[test]
fn structured_mode_frames_every_part() {
    // tag 0x32 = "language" with a filename and a Content-Type.
    let body = harness::structured_body(&[0x32, 2, b'e', b'n', 0x0F, 1, b'u', 1, b'v']);
    let text = String::from_utf8(body).unwrap();
    assert_eq!(
        text,
        "--X\r\nContent-Disposition: form-data; name=\"language\"; filename=\"audio.wav\"\r\n\
         Content-Type: application/octet-stream\r\n\r\nen\r\n\
         --X\r\nContent-Disposition: form-data; name=\"u\"\r\n\r\nv\r\n--X--\r\n"
    );
}
