//! What each fuzz target does with one input, shared by the cargo-fuzz
//! targets (`fuzz/fuzz_targets/*.rs`, nightly) and the corpus replay test
//! (`tests/fuzz_replay.rs`, stable): the test includes this file with
//! `#[path = ...] mod harness;`, so it may only use crates that the service
//! itself depends on (no `arbitrary`, no `libfuzzer-sys`).
//!
//! Errors from the code under test are fine; a panic out of these functions
//! is a bug, and so is a broken invariant (checked with `assert!`).
#![allow(dead_code)]

use std::collections::HashSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, Once};

use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Request};
use whisper_serve::audio::{self, SAMPLE_RATE};
use whisper_serve::config::LimitsConfig;
use whisper_serve::engine::DecodeOptions;

// --- audio_decode -----------------------------------------------------------

/// The duration limit the `audio_decode` target decodes under.
pub const MAX_SECONDS: f64 = 60.0;

/// `whisper_serve::audio::decode` on arbitrary bytes. Returns the number of
/// 16 kHz samples decoded, or the error's text.
pub fn audio_decode(data: &[u8]) -> Result<usize, String> {
    match audio::decode(data, MAX_SECONDS) {
        Ok(samples) => {
            assert!(!samples.is_empty(), "Ok with no samples");
            // The limit is enforced while decoding; rounding at each change
            // of sample rate may add a little.
            let most = (MAX_SECONDS + 1.0) * f64::from(SAMPLE_RATE);
            assert!(
                samples.len() as f64 <= most,
                "{} samples is over the {MAX_SECONDS} s limit",
                samples.len()
            );
            assert!(
                samples.iter().all(|s| (-1.0..=1.0).contains(s)),
                "sample outside [-1, 1]"
            );
            Ok(samples.len())
        }
        Err(e) => Err(e.to_string()),
    }
}

// --- upload_options ---------------------------------------------------------

/// The boundary of the multipart bodies: the request's Content-Type is
/// `multipart/form-data; boundary=X`.
pub const BOUNDARY: &str = "X";

/// Field names the structured mode picks from (index = low 4 bits of a
/// part's tag byte); the last entry means "name from the input".
const NAMES: [&str; 16] = [
    "file",
    "model",
    "language",
    "response_format",
    "temperature",
    "timestamp_granularities[]",
    "timestamp_granularities",
    "beam_size",
    "best_of",
    "patience",
    "length_penalty",
    "prompt",
    "task",
    "word_timestamps",
    "condition_on_previous_text",
    "",
];

/// The upload path of the transcription routes: the input becomes a
/// multipart body, read by axum's `Multipart` extractor, then
/// `api::read_upload(form, "file", 1)` and `options::from_fields` with the
/// default decoding options and limits. Returns a summary of what was
/// accepted, or the error's text.
///
/// Input: a first byte 0 selects the structured mode (see
/// [`structured_body`]), which always yields well-framed parts; anything
/// else is the raw request body.
pub fn upload_options(data: &[u8]) -> Result<String, String> {
    let body = match data.split_first() {
        Some((0, rest)) => structured_body(rest),
        _ => data.to_vec(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime");
    runtime.block_on(upload_and_options(body))
}

async fn upload_and_options(body: Vec<u8>) -> Result<String, String> {
    let request = Request::builder()
        .method("POST")
        .uri("/v1/audio/transcriptions")
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(Body::from(body))
        .expect("a valid request");
    let form = Multipart::from_request(request, &())
        .await
        .map_err(|e| e.body_text())?;
    let limits = LimitsConfig { max_upload_mb: 1, ..LimitsConfig::default() };
    let upload = whisper_serve::api::read_upload(form, "file", &limits)
        .await
        .map_err(|e| e.to_string())?;
    assert!(upload.bytes.len() as u64 <= limits.max_upload_mb * 1024 * 1024);
    assert!(upload.fields.iter().all(|(_, v)| v.len() <= limits.max_field_bytes));

    let defaults = DecodeOptions::default();
    let o = whisper_serve::options::from_fields(&upload.fields, &defaults, &limits, None)
        .map_err(|e| e.to_string())?;
    // What the engine relies on: every accepted value is within bounds.
    let d = &o.decode;
    let beam_max = limits.max_beam_size.max(defaults.beam_size);
    let best_of_max = limits.max_best_of.max(defaults.best_of);
    assert!(
        (1..=beam_max).contains(&d.beam_size),
        "beam_size {}",
        d.beam_size
    );
    assert!(
        (1..=best_of_max).contains(&d.best_of),
        "best_of {}",
        d.best_of
    );
    assert!(!d.temperatures.is_empty(), "no temperatures");
    assert!(
        d.temperatures.iter().all(|t| (0.0..=1.0).contains(t)),
        "temperatures {:?}",
        d.temperatures
    );
    assert!(
        d.patience > 0.0 && d.patience <= 10.0,
        "patience {}",
        d.patience
    );
    assert!(
        (0.0..=10.0).contains(&d.length_penalty),
        "length_penalty {}",
        d.length_penalty
    );
    assert!(!o.granularities.word || d.word_timestamps);
    if let Some(lang) = &d.language {
        assert!(!lang.is_empty() && lang.trim() == lang, "language {lang:?}");
    }
    Ok(format!(
        "{} file bytes, {} fields, {:?}, {:?}",
        upload.bytes.len(),
        upload.fields.len(),
        o.response_format,
        d.language
    ))
}

/// A well-framed multipart body from the input, read as parts:
/// `tag, len, value[len]`, where the tag's low 4 bits pick the field name
/// from [`NAMES`] (15: `len2, name[len2]` precede the value), bit 4 adds a
/// `filename`, bit 5 a part `Content-Type`. A short read ends the input.
pub fn structured_body(mut input: &[u8]) -> Vec<u8> {
    fn take<'a>(input: &mut &'a [u8], n: usize) -> &'a [u8] {
        let (head, tail) = input.split_at(n.min(input.len()));
        *input = tail;
        head
    }
    let mut body = Vec::new();
    while let [tag, ..] = *input {
        input = &input[1..];
        let custom;
        let name = match usize::from(tag & 0x0F) {
            15 => {
                let n = take(&mut input, 1).first().copied().unwrap_or(0);
                custom = String::from_utf8_lossy(take(&mut input, n.into())).into_owned();
                custom.as_str()
            }
            i => NAMES[i],
        };
        let n = take(&mut input, 1).first().copied().unwrap_or(0);
        let value = take(&mut input, n.into());
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        body.extend_from_slice(
            format!("Content-Disposition: form-data; name=\"{name}\"").as_bytes(),
        );
        if tag & 0x10 != 0 {
            body.extend_from_slice(b"; filename=\"audio.wav\"");
        }
        body.extend_from_slice(b"\r\n");
        if tag & 0x20 != 0 {
            body.extend_from_slice(b"Content-Type: application/octet-stream\r\n");
        }
        body.extend_from_slice(b"\r\n");
        body.extend_from_slice(value);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

// --- for the fuzz targets ---------------------------------------------------

/// Runs one fuzz input. `audio::decode` turns a panic inside a decoder into
/// an error on purpose, so by default a panic in a third-party crate (under
/// `.cargo/registry/`) that the code under test catches is not a crash:
/// each distinct location is printed once, to see what the decoders trip
/// over. A panic anywhere else (whisper-serve's own code, even if caught),
/// one escaping `f`, or a broken invariant aborts: a crash for libFuzzer.
/// With `FUZZ_STRICT_PANICS=1` in the environment every panic aborts, as
/// libfuzzer-sys does by default.
pub fn fuzz_one<T>(f: impl FnOnce() -> T) {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        if std::env::var_os("FUZZ_STRICT_PANICS").is_some() {
            return;
        }
        static SEEN: Mutex<Option<HashSet<String>>> = Mutex::new(None);
        std::panic::set_hook(Box::new(|info| {
            let (file, line) = info.location().map_or(("", 0), |l| (l.file(), l.line()));
            if !file.contains(".cargo/registry/") {
                eprintln!("[harness] panic outside third-party code: {info}");
                std::process::abort();
            }
            let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
            if seen
                .get_or_insert_with(HashSet::new)
                .insert(format!("{file}:{line}"))
            {
                eprintln!("[harness] first panic at this location (caught): {info}");
            }
        }));
    });
    if catch_unwind(AssertUnwindSafe(f)).is_err() {
        eprintln!("[harness] the panic above escaped the code under test");
        std::process::abort();
    }
}
