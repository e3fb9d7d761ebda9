use super::*;

const SR: usize = SAMPLE_RATE;

fn secs(s: f64) -> usize {
    (s * SR as f64) as usize
}

/// Deterministic uniform noise in [-amp, amp].
fn noise(n: usize, amp: f32, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32 * amp
        })
        .collect()
}

/// Speech-like for WebRTC's GMM: a gliding 110-180 Hz harmonic series (to
/// 3.5 kHz, 1/k roll-off), amplitude-modulated at a 4 Hz syllable rate.
/// (Silero, trained on speech, is not fooled by it: its tests use jfk.wav.)
fn babble(n: usize, amp: f32) -> Vec<f32> {
    let mut phase = 0.0f64;
    (0..n)
        .map(|i| {
            let t = i as f64 / SR as f64;
            let f0 = 145.0 + 35.0 * (2.0 * std::f64::consts::PI * 0.7 * t).sin();
            phase += 2.0 * std::f64::consts::PI * f0 / SR as f64;
            let mut x = 0.0;
            let mut k = 1;
            while (k as f64) * f0 < 3500.0 {
                x += (k as f64 * phase).sin() / k as f64;
                k += 1;
            }
            let env = 0.55 - 0.45 * (2.0 * std::f64::consts::PI * 4.0 * t).cos();
            (x * env * 0.4) as f32 * amp
        })
        .collect()
}

pub(crate) fn jfk() -> Vec<f32> {
    let bytes = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/speech/jfk_whisper_cpp/jfk.wav"))
        .or_else(|_| std::fs::read("/work/shared/speech/jfk_whisper_cpp/jfk.wav"))
        .expect("jfk.wav");
    crate::audio::decode(&bytes, f64::INFINITY).expect("decode jfk.wav")
}

fn silero() -> Detector {
    Detector::from_config(&VadConfig::default()).expect("built-in Silero")
}

fn check_well_formed(chunks: &[Range<usize>], len: usize) {
    for c in chunks {
        assert!(c.start < c.end && c.end <= len, "{c:?} in {len}");
    }
    for w in chunks.windows(2) {
        assert!(w[0].end <= w[1].start, "overlap: {:?} {:?}", w[0], w[1]);
    }
}

fn show(chunks: &[Range<usize>]) -> Vec<(f64, f64)> {
    chunks.iter().map(|c| (c.start as f64 / SR as f64, c.end as f64 / SR as f64)).collect()
}

// ---- get_speech_timestamps from given probabilities, by hand ----

fn opts(min_silence_ms: u32, pad_ms: u32) -> VadOptions {
    VadOptions { min_silence_duration_ms: min_silence_ms, speech_pad_ms: pad_ms, ..VadOptions::default() }
}

#[test]
fn vad_timestamps_by_hand() {
    // 20 windows of 512 (10240 samples). Speech from window 2; window 6 is
    // between the two thresholds (neither starts nor ends anything); silence
    // from window 9, which ends speech once it has lasted 100 ms (1600
    // samples): at window 13 (13*512 - 9*512 = 2048; window 12 gives 1536).
    let mut p = vec![0.1f32; 20];
    p[2..6].fill(0.8);
    p[6] = 0.4;
    p[7..9].fill(0.6);
    let o = opts(100, 30);
    // Start 2*512 - 480 (30 ms pad) = 544, end 9*512 + 480 = 5088.
    assert_eq!(chunks_from_probs(&p, 512, 10240, &o), vec![544..5088]);
    // No pad, and the audio's own length is what the last chunk ends at.
    assert_eq!(chunks_from_probs(&p, 512, 10240, &opts(100, 0)), vec![1024..4608]);
    // Speech that never ends runs to the end of the audio (not of the windows).
    let mut q = vec![0.1f32; 20];
    q[2..].fill(0.9);
    assert_eq!(chunks_from_probs(&q, 512, 10_000, &opts(100, 30)), vec![544..10_000]);
}

#[test]
fn vad_neg_threshold_decides_where_speech_ends() {
    let mut p = vec![0.4f32; 20];
    p[..2].fill(0.1);
    p[2..6].fill(0.8);
    // Default neg_threshold 0.35: 0.4 is still speech, to the end.
    assert_eq!(chunks_from_probs(&p, 512, 10240, &opts(100, 30)), vec![544..10240]);
    // 0.45: speech ends at window 6 (3072), decided 1600 samples later.
    let o = VadOptions { neg_threshold: Some(0.45), ..opts(100, 30) };
    assert_eq!(chunks_from_probs(&p, 512, 10240, &o), vec![544..3552]);
    assert_eq!(VadOptions::default().end_threshold(), 0.35);
    assert_eq!(VadOptions { threshold: 0.1, ..VadOptions::default() }.end_threshold(), 0.01);
}

#[test]
fn vad_min_speech_is_strictly_longer() {
    // Three windows of speech: 1536 samples, 96 ms.
    let mut p = vec![0.0f32; 40];
    p[10..13].fill(1.0);
    let keep = VadOptions { min_speech_duration_ms: 95, ..opts(100, 0) };
    assert_eq!(chunks_from_probs(&p, 512, 40 * 512, &keep), vec![5120..6656]);
    let drop = VadOptions { min_speech_duration_ms: 96, ..opts(100, 0) };
    assert!(chunks_from_probs(&p, 512, 40 * 512, &drop).is_empty());
}

#[test]
fn vad_padding_splits_short_gaps_half_and_half() {
    // Speech 1024..2048 and 3072..4096: a 1024-sample gap, under twice the
    // 40 ms (640-sample) pad, so each side takes 512 of it.
    let mut p = vec![0.0f32; 30];
    p[2..4].fill(1.0);
    p[6..8].fill(1.0);
    let o = opts(30, 40);
    let chunks = chunks_from_probs(&p, 512, 30 * 512, &o);
    assert_eq!(chunks, vec![384..2560, 2560..4736]);
    // A wide gap: both sides padded by the full 640.
    let mut p = vec![0.0f32; 30];
    p[2..4].fill(1.0);
    p[10..12].fill(1.0);
    assert_eq!(chunks_from_probs(&p, 512, 30 * 512, &o), vec![384..2688, 4480..6784]);
}

#[test]
fn vad_max_speech_splits_at_a_silence_or_at_the_limit() {
    // max 1 s: max_speech_samples = 16000 - 512 - 0 = 15488 (30.25 windows).
    let o = VadOptions { max_speech_duration_s: 1.0, ..opts(2000, 0) };
    // Continuous speech over 100 windows: cut just past the limit, at
    // window 31, 62, 93 (each piece restarts at its cut).
    let p = vec![1.0f32; 100];
    let chunks = chunks_from_probs(&p, 512, 100 * 512, &o);
    assert_eq!(chunks, vec![0..15872, 16384..32256, 32768..48640, 49152..51200]);
    // A silence of 5 windows at 20..25 (its fifth window is 2048 samples
    // past its start, over 98 ms; four would not be): the cut goes there,
    // and the next chunk starts at the next speech window.
    let mut p = vec![1.0f32; 60];
    p[20..25].fill(0.0);
    let chunks = chunks_from_probs(&p, 512, 60 * 512, &o);
    assert_eq!(chunks[0], 0..10240, "{chunks:?}");
    assert_eq!(chunks[1].start, 25 * 512, "{chunks:?}");
}

#[test]
fn vad_no_probabilities_no_speech() {
    assert!(chunks_from_probs(&[], 512, 0, &VadOptions::default()).is_empty());
    assert!(chunks_from_probs(&[0.0; 50], 512, 50 * 512, &VadOptions::default()).is_empty());
}

// ---- vad_parameters ----

#[test]
fn vad_parameters_parse_and_apply() {
    let p = VadParameters::parse(
        r#"{"threshold": 0.6, "neg_threshold": 0.3, "min_speech_duration_ms": 250, "max_speech_duration_s": 30,
            "min_silence_duration_ms": 500.0, "speech_pad_ms": 0}"#,
    )
    .expect("all keys");
    let o = p.apply(&VadOptions::default());
    assert_eq!(
        o,
        VadOptions {
            threshold: 0.6,
            neg_threshold: Some(0.3),
            min_speech_duration_ms: 250,
            max_speech_duration_s: 30.0,
            min_silence_duration_ms: 500,
            speech_pad_ms: 0,
        }
    );
    // Partial: the rest from the base; null max = no limit.
    let p = VadParameters::parse(r#"{"speech_pad_ms": 100, "max_speech_duration_s": null}"#).expect("partial");
    let base = silero().defaults();
    assert_eq!(p.apply(&base), VadOptions { speech_pad_ms: 100, ..base });
    assert!(VadParameters::parse("{}").expect("empty").is_empty());
    assert_eq!(Detector::WebRtc.defaults().min_speech_duration_ms, 250);
}

#[test]
fn vad_parameters_refuse_bad_values() {
    for (text, says) in [
        ("", "not a JSON object"),
        ("[0.5]", "not a JSON object"),
        ("threshold=0.5", "not a JSON object"),
        (r#"{"threshold": 1.5}"#, "threshold"),
        (r#"{"threshold": "high"}"#, "threshold"),
        (r#"{"neg_threshold": -0.1}"#, "neg_threshold"),
        (r#"{"threshold": 0.3, "neg_threshold": 0.4}"#, "neg_threshold"),
        (r#"{"speech_pad_ms": -1}"#, "speech_pad_ms"),
        (r#"{"speech_pad_ms": 12.5}"#, "speech_pad_ms"),
        (r#"{"min_silence_duration_ms": 1e12}"#, "min_silence_duration_ms"),
        (r#"{"max_speech_duration_s": 0}"#, "max_speech_duration_s"),
        (r#"{"max_speech_duration_s": "inf"}"#, "max_speech_duration_s"),
        (r#"{"window_size_samples": 512}"#, "not a VAD option"),
    ] {
        let err = VadParameters::parse(text).expect_err(text);
        assert!(err.contains(says), "{text}: {err}");
    }
    // Quoted back only in part, never with control characters.
    let err = VadParameters::parse(&format!("{{\"{}\n\": 1}}", "x".repeat(500))).expect_err("long key");
    assert!(err.len() < 300 && !err.contains('\n'), "{err}");
}

#[test]
fn vad_parameters_serialise_only_what_is_set() {
    assert_eq!(serde_json::to_string(&VadParameters::default()).expect("json"), "{}");
    let p = VadParameters { threshold: Some(0.6), ..VadParameters::default() };
    let text = serde_json::to_string(&p).expect("json");
    assert_eq!(text, r#"{"threshold":0.6}"#);
    assert_eq!(serde_json::from_str::<VadParameters>(&text).expect("back"), p);
}

// ---- the time map (faster-whisper's SpeechTimestampsMap) ----

#[test]
fn vad_time_map_is_monotonic_and_handles_joins() {
    let chunks = vec![secs(1.0)..secs(3.0), secs(3.0)..secs(4.0), secs(10.0)..secs(12.5)];
    let map = TimeMap::new(&chunks);
    assert!((map.speech_duration() - 5.5).abs() < 1e-9);
    for is_end in [false, true] {
        let mut last = f64::NEG_INFINITY;
        for k in 0..=7000 {
            let t = k as f64 * 0.001;
            let o = map.original_time(t, is_end);
            assert!(o >= last, "{t} ({is_end}): {o} < {last}");
            assert!(o >= t + 1.0 - 1e-9);
            last = o;
        }
    }
    assert!((map.original_time(0.0, false) - 1.0).abs() < 1e-9);
    assert!((map.original_time(1.5, false) - 2.5).abs() < 1e-9);
    // Join of chunks 2 and 3 at collected 3.0 s (original 4.0 / 10.0).
    assert!((map.original_time(3.0, true) - 4.0).abs() < 1e-9);
    assert!((map.original_time(3.0, false) - 10.0).abs() < 1e-9);
    assert!((map.original_time(3.5, true) - 10.5).abs() < 1e-9);
    // Past the end: extends the last chunk.
    assert!((map.original_time(6.0, false) - 13.0).abs() < 1e-9);
    // No chunks: identity.
    assert_eq!(TimeMap::new(&[]).original_time(2.5, true), 2.5);
    let (a, m) = collect(&[0.5; 100], &[]);
    assert!(a.is_empty());
    assert_eq!(m.original_time(1.0, false), 1.0);
}

#[test]
fn vad_time_map_truncates_like_python() {
    // A chunk ends at collected sample 32160 (2.01 s); 2.01 * 16000 is
    // 32159.999999999996, which Python's int() makes 32159: still the first
    // chunk, for a start as for an end.
    let map = TimeMap::new(&[0..32_160, 40_000..50_000]);
    assert_eq!(map.chunk_index(2.01, false), 0);
    assert_eq!(map.chunk_index(2.01, true), 0);
    assert_eq!(map.chunk_index(2.02, false), 1);
    let silence = (40_000.0 - 32_160.0) / 16_000.0;
    assert!((map.original_time(2.02, false) - (2.02 + silence)).abs() < 1e-9);
    // A word's ends both go through the chunk of its middle: a word from
    // 1.9 s to 2.06 s (middle 1.98) stays in the first chunk.
    let chunk = map.chunk_index((1.9 + 2.06) / 2.0, false);
    assert_eq!(chunk, 0);
    assert!((map.original_time_in(2.06, chunk) - 2.06).abs() < 1e-9);
}

// ---- Silero on audio ----

#[test]
fn vad_silero_silence_and_quiet_noise_have_no_speech() {
    let d = silero();
    let o = d.defaults();
    assert!(d.speech_chunks_with(&vec![0.0f32; secs(60.0)], &o).is_empty());
    assert!(d.speech_chunks_with(&[], &o).is_empty());
    for (amp, seed) in [(0.01, 1), (0.003, 2)] {
        let chunks = d.speech_chunks_with(&noise(secs(30.0), amp, seed), &o);
        assert!(chunks.is_empty(), "noise {amp}: {:?}", show(&chunks));
    }
}

#[test]
fn vad_silero_jfk_is_one_chunk_covering_the_speech() {
    let audio = jfk();
    let chunks = silero().speech_chunks_with(&audio, &VadOptions::default());
    check_well_formed(&chunks, audio.len());
    assert_eq!(chunks.len(), 1, "{:?}", show(&chunks));
    assert!(chunks[0].start <= secs(0.3), "{:?}", show(&chunks));
    assert!(chunks[0].end >= secs(10.5), "{:?}", show(&chunks));
}

fn jfk_gap_jfk(d: &Detector, gap: Vec<f32>) {
    let speech = jfk();
    let gap_len = gap.len();
    let mut audio = speech.clone();
    audio.extend(gap);
    audio.extend(&speech);
    let chunks = d.speech_chunks(&audio, &VadParameters::default());
    check_well_formed(&chunks, audio.len());
    assert_eq!(chunks.len(), 2, "{:?}", show(&chunks));
    let second = speech.len() + gap_len;
    assert!(chunks[0].start <= secs(0.3), "{:?}", show(&chunks));
    assert!(chunks[0].end >= secs(10.5) && chunks[0].end < secs(13.0), "{:?}", show(&chunks));
    assert!(chunks[1].start >= second - secs(2.0), "{:?}", show(&chunks));
    assert!(chunks[1].start <= second + secs(0.3), "{:?}", show(&chunks));
    assert!(chunks[1].end >= second + secs(10.5), "{:?}", show(&chunks));

    let (collected, map) = collect(&audio, &chunks);
    assert_eq!(collected.len(), chunks.iter().map(|c| c.len()).sum::<usize>());
    assert!(collected.len() < secs(30.0), "collected {} s", collected.len() as f64 / SR as f64);
    assert_eq!(&collected[..chunks[0].len()], &audio[chunks[0].clone()]);
    assert!((map.speech_duration() - collected.len() as f64 / SR as f64).abs() < 1e-9);

    // 1 s into the second chunk of the collected audio.
    let t = chunks[0].len() as f64 / SR as f64 + 1.0;
    let orig = map.original_time(t, false);
    assert!(orig >= 31.0, "{t} -> {orig}");
    assert!((orig - (chunks[1].start as f64 / SR as f64 + 1.0)).abs() < 1e-9);
    let o = map.original_time(1.0, false);
    assert!((o - (1.0 + chunks[0].start as f64 / SR as f64)).abs() < 1e-9);
}

#[test]
fn vad_jfk_silence_gap_jfk_is_two_chunks() {
    for d in [silero(), Detector::WebRtc] {
        jfk_gap_jfk(&d, vec![0.0; secs(20.0)]);
    }
}

#[test]
fn vad_jfk_noise_gap_jfk_is_two_chunks() {
    for d in [silero(), Detector::WebRtc] {
        jfk_gap_jfk(&d, noise(secs(20.0), 0.003, 11));
    }
}

#[test]
fn vad_silero_stream_gives_the_probabilities_of_the_whole() {
    let Detector::Silero(model) = silero() else { panic!("silero") };
    let audio = jfk();
    let whole = model.probs(&audio).expect("probs");
    let mut stream = silero().stream();
    assert_eq!(stream.window(), 512);
    let mut got = Vec::new();
    // Odd pushes: part windows, several windows, single samples.
    let mut at = 0;
    for (k, n) in [100usize, 1, 2000, 511, 7, 4096].iter().cycle().enumerate() {
        if at >= audio.len() || k > 10_000 {
            break;
        }
        let end = (at + n).min(audio.len());
        got.extend(stream.push(&audio[at..end]));
        at = end;
    }
    // The whole has one more window: the padded tail a stream never has.
    assert_eq!(got.len(), audio.len() / 512);
    for (i, (a, b)) in got.iter().zip(&whole).enumerate() {
        assert!((a - b).abs() < 1e-4, "window {i}: {a} vs {b}");
    }
}

// ---- WebRTC on audio (synthetic speech fools it, as intended) ----

#[test]
fn vad_webrtc_low_white_noise_has_no_speech() {
    for (amp, seed) in [(0.01, 1), (0.003, 2), (0.1, 3)] {
        let chunks = Detector::WebRtc.speech_chunks(&noise(secs(60.0), amp, seed), &VadParameters::default());
        assert!(chunks.is_empty(), "noise {amp}: {:?}", show(&chunks));
    }
}

#[test]
fn vad_webrtc_synthetic_bursts_between_silences() {
    let mut audio = vec![0.0f32; secs(2.0)];
    audio.extend(babble(secs(3.0), 0.3));
    audio.extend(vec![0.0; secs(5.0)]);
    audio.extend(babble(secs(2.0), 0.3));
    audio.extend(vec![0.0; secs(3.0)]);
    let d = Detector::WebRtc;
    let chunks = d.speech_chunks(&audio, &VadParameters::default());
    check_well_formed(&chunks, audio.len());
    assert_eq!(chunks.len(), 2, "{:?}", show(&chunks));
    let (a, b) = (&chunks[0], &chunks[1]);
    assert!(a.start >= secs(1.4) && a.start <= secs(2.0), "{:?}", show(&chunks));
    assert!(a.end >= secs(5.2) && a.end <= secs(5.8), "{:?}", show(&chunks));
    assert!(b.start >= secs(9.4) && b.start <= secs(10.0), "{:?}", show(&chunks));
    assert!(b.end >= secs(12.2) && b.end <= secs(12.8), "{:?}", show(&chunks));
    // A loud 100 ms burst is dropped by the 250 ms minimum.
    let mut click = vec![0.0f32; secs(10.0)];
    click[secs(4.0)..secs(4.1)].copy_from_slice(&babble(secs(0.1), 0.8));
    click[secs(4.0)..secs(4.1)].iter_mut().zip(noise(secs(0.1), 0.5, 5)).for_each(|(x, n)| *x += n);
    assert!(d.speech_chunks(&click, &VadParameters::default()).is_empty());
}

#[test]
fn vad_webrtc_stream_matches_its_rolling_score() {
    let audio: Vec<f32> = [vec![0.0; secs(1.0)], babble(secs(2.0), 0.3), vec![0.0; secs(2.0)]].concat();
    let mut stream = Detector::WebRtc.stream();
    assert_eq!(stream.window(), 480);
    let got: Vec<f32> = audio.chunks(1600).flat_map(|c| stream.push(c)).collect();
    let whole = webrtc::probs(&audio);
    // Within the rolling context (8 s) the score is the same as over the whole.
    assert!(got.len() + 3 + 4 >= whole.len() && got.len() <= whole.len(), "{} of {}", got.len(), whole.len());
    assert_eq!(&got[..], &whole[..got.len()]);
}

#[test]
fn vad_webrtc_one_hour_is_fast() {
    let mut audio = noise(secs(3600.0), 0.01, 9);
    let burst = babble(secs(3.0), 0.3);
    for k in 0..60 {
        let at = secs(60.0 * k as f64 + 10.0);
        audio[at..at + burst.len()].iter_mut().zip(&burst).for_each(|(x, b)| *x += b);
    }
    let t = std::time::Instant::now();
    let chunks = Detector::WebRtc.speech_chunks(&audio, &VadParameters::default());
    let el = t.elapsed();
    check_well_formed(&chunks, audio.len());
    assert_eq!(chunks.len(), 60, "{:?}", &show(&chunks)[..chunks.len().min(5)]);
    if !cfg!(debug_assertions) {
        assert!(el.as_secs_f64() < 2.0, "1 h took {el:?}");
    }
}

/// Cost per audio minute, Silero vs WebRTC (`cargo test --release --lib
/// vad_bench -- --ignored --nocapture`).
#[test]
#[ignore]
fn vad_bench_cost_per_audio_minute() {
    let minutes = 10usize;
    let speech = jfk();
    let mut audio = Vec::with_capacity(secs(60.0 * minutes as f64));
    let mut seed = 1;
    while audio.len() < secs(60.0 * minutes as f64) {
        audio.extend(&speech);
        audio.extend(noise(secs(9.0), 0.005, seed));
        seed += 1;
    }
    let sil = silero();
    for (name, d) in [("silero", &sil), ("webrtc", &Detector::WebRtc)] {
        let _ = d.speech_chunks(&audio[..secs(20.0)], &VadParameters::default());
        let t = std::time::Instant::now();
        let chunks = d.speech_chunks(&audio, &VadParameters::default());
        let el = t.elapsed().as_secs_f64();
        eprintln!(
            "{name}: {:.1} ms per audio minute ({minutes} min in {el:.2} s, one thread; {} chunks)",
            el * 1000.0 / minutes as f64,
            chunks.len()
        );
    }
    let t = std::time::Instant::now();
    let _ = silero();
    eprintln!("silero model load: {:.1} ms", t.elapsed().as_secs_f64() * 1000.0);
}
