//! The upload path of the transcription routes: a multipart body through
//! axum's `Multipart`, `api::read_upload` and `options::from_fields`.
//! Errors are fine; panics and out-of-bounds accepted options are bugs.
#![no_main]

use libfuzzer_sys::fuzz_target;

mod harness;

fuzz_target!(|data: &[u8]| {
    harness::fuzz_one(|| harness::upload_options(data));
});
