//! `whisper_serve::audio::decode` on arbitrary bytes: no panic out of it,
//! no hang, no unbounded allocation (run with `-timeout` and
//! `-rss_limit_mb`), and accepted audio within the duration limit.
#![no_main]

use libfuzzer_sys::fuzz_target;

mod harness;

fuzz_target!(|data: &[u8]| {
    harness::fuzz_one(|| harness::audio_decode(data));
});
