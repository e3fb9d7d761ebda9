//! Voice-activity detection: faster-whisper's `vad_filter`.
//!
//! Before decoding, the non-speech parts of the audio are cut out (so Whisper
//! neither hallucinates on long silences/noise nor spends time on them), the
//! speech is decoded as one concatenated signal, and every timestamp is then
//! mapped back to the original timeline with [`TimeMap`].
//!
//! faster-whisper scores 32 ms windows with Silero VAD (an ONNX network). We do
//! not ship an ONNX runtime, so the per-frame decision here is our own:
//!
//! 1. **WebRTC VAD** (the `webrtc-vad` crate, which bundles libfvad's C code)
//!    in "quality" mode classifies each 30 ms frame of 16-bit 16 kHz audio.
//!    It is a GMM over sub-band energies, good at telling speech from silence
//!    and from quiet backgrounds, but it calls loud stationary noise speech
//!    (60 s of white noise at amplitude 0.1 is 100 % "voice") and always
//!    reports the first few frames of a stream as speech.
//! 2. An **energy gate** vetoes a frame unless its log-energy is at least
//!    [`GATE_DB`] above the local noise floor (the 10th percentile of frame
//!    energies within about ±8 s) and above [`ABS_FLOOR_DB`] dBFS. Stationary
//!    noise never rises 3 dB over its own 10th percentile (a 30 ms frame of
//!    white noise has a log-energy spread of about 0.3 dB), speech does.
//! 3. The binary decisions are **smoothed** into a per-frame "speech
//!    probability": the fraction of voiced frames in a centred 7-frame
//!    (210 ms) window. [`VadOptions::threshold`] applies to that fraction, so
//!    the default 0.5 is a majority vote; like faster-whisper, speech ends only
//!    below `threshold - 0.15`.
//!
//! From those probabilities on, the logic is a port of faster-whisper's
//! `get_speech_timestamps` (min speech, min silence, max speech split at the
//! last silence of more than 98 ms, padding that never overlaps neighbours),
//! `collect_chunks` (without `max_duration`) and `SpeechTimestampsMap`.

use std::ops::Range;

/// Sample rate everything here works at.
pub const SAMPLE_RATE: usize = 16_000;
/// One decision frame: 30 ms at 16 kHz (WebRTC VAD accepts 10, 20 or 30 ms).
pub const FRAME: usize = 480;
/// Energy-gate margin over the local noise floor, dB.
pub const GATE_DB: f32 = 3.0;
/// Frames quieter than this (dBFS, RMS) are never speech (digital silence,
/// dither).
pub const ABS_FLOOR_DB: f32 = -70.0;
/// Half-width of the smoothing window, frames (7 frames = 210 ms in all).
const SMOOTH_RADIUS: usize = 3;
/// Noise floor: percentile of frame energies...
const FLOOR_PERCENTILE: f32 = 0.10;
/// ...over ± this many frames (≈ 8 s)...
const FLOOR_RADIUS: usize = 267;
/// ...computed once per block of this many frames (≈ 1 s).
const FLOOR_BLOCK: usize = 33;

/// Options of the VAD filter, with faster-whisper's (Silero's) defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct VadOptions {
    /// Speech threshold on the smoothed per-frame score in 0..=1: the
    /// fraction of voiced 30 ms frames (WebRTC VAD and energy gate both
    /// agreeing) in the 210 ms around a frame. A frame at or above it starts
    /// (or continues) speech; speech ends only when the score falls below
    /// `max(threshold - 0.15, 0.01)` for `min_silence_duration_ms`.
    /// Default 0.5 (a majority vote). Lower finds more speech.
    pub threshold: f32,
    /// Speech chunks shorter than this are dropped. Default 250.
    pub min_speech_duration_ms: u32,
    /// Chunks longer than this are split at the last silence of more than
    /// 98 ms, else just before the limit. Default infinity.
    pub max_speech_duration_s: f32,
    /// Silences shorter than this do not end a chunk. Default 2000.
    pub min_silence_duration_ms: u32,
    /// Each chunk is padded by this much on both sides (gaps shorter than
    /// twice the pad are split half-and-half instead). Default 400.
    pub speech_pad_ms: u32,
}

impl Default for VadOptions {
    fn default() -> Self {
        VadOptions {
            threshold: 0.5,
            min_speech_duration_ms: 250,
            max_speech_duration_s: f32::INFINITY,
            min_silence_duration_ms: 2000,
            speech_pad_ms: 400,
        }
    }
}

/// Speech chunks of 16 kHz mono audio, as sample ranges, sorted,
/// non-overlapping (adjacent chunks may touch).
pub fn speech_chunks(audio: &[f32], opts: &VadOptions) -> Vec<Range<usize>> {
    if audio.is_empty() {
        return Vec::new();
    }
    let probs = speech_probs(audio);
    chunks_from_probs(&probs, audio.len(), opts)
}

/// Per-frame (30 ms, [`FRAME`] samples; the last frame zero-padded) speech
/// score in 0..=1, the quantity [`VadOptions::threshold`] applies to.
pub fn speech_probs(audio: &[f32]) -> Vec<f32> {
    let n_frames = audio.len().div_ceil(FRAME);
    let mut vad = webrtc_vad::Vad::new_with_rate_and_mode(
        webrtc_vad::SampleRate::Rate16kHz,
        webrtc_vad::VadMode::Quality,
    );
    let mut energy_db = Vec::with_capacity(n_frames);
    let mut webrtc = Vec::with_capacity(n_frames);
    let mut buf = [0i16; FRAME];
    for frame in audio.chunks(FRAME) {
        let mut sum = 0.0f64;
        for (o, &x) in buf.iter_mut().zip(frame) {
            let x = if x.is_finite() { x.clamp(-1.0, 1.0) } else { 0.0 };
            sum += (x as f64) * (x as f64);
            *o = (x * 32767.0).round() as i16;
        }
        buf[frame.len()..].fill(0);
        energy_db.push((10.0 * (sum / FRAME as f64 + 1e-10).log10()) as f32);
        // A 480-sample frame is always a valid length.
        webrtc.push(vad.is_voice_segment(&buf).unwrap_or(false));
    }

    let floor = noise_floor(&energy_db);
    let voiced: Vec<bool> = (0..n_frames)
        .map(|i| {
            webrtc[i]
                && energy_db[i] >= ABS_FLOOR_DB
                && energy_db[i] >= floor[i / FLOOR_BLOCK] + GATE_DB
        })
        .collect();

    // Centred moving average; frames outside the audio count as unvoiced.
    let window = (2 * SMOOTH_RADIUS + 1) as f32;
    let mut prefix = Vec::with_capacity(n_frames + 1);
    prefix.push(0u32);
    for &v in &voiced {
        prefix.push(prefix.last().unwrap() + v as u32);
    }
    (0..n_frames)
        .map(|i| {
            let lo = i.saturating_sub(SMOOTH_RADIUS);
            let hi = (i + SMOOTH_RADIUS + 1).min(n_frames);
            (prefix[hi] - prefix[lo]) as f32 / window
        })
        .collect()
}

/// Local noise floor (dB) per block of [`FLOOR_BLOCK`] frames: the
/// [`FLOOR_PERCENTILE`] of frame energies within ±[`FLOOR_RADIUS`] frames of
/// the block's centre.
fn noise_floor(energy_db: &[f32]) -> Vec<f32> {
    let n = energy_db.len();
    let mut scratch = Vec::with_capacity(2 * FLOOR_RADIUS + FLOOR_BLOCK);
    (0..n.div_ceil(FLOOR_BLOCK))
        .map(|b| {
            let centre = b * FLOOR_BLOCK + FLOOR_BLOCK / 2;
            let lo = centre.saturating_sub(FLOOR_RADIUS);
            let hi = (centre + FLOOR_RADIUS + 1).min(n);
            scratch.clear();
            scratch.extend_from_slice(&energy_db[lo..hi]);
            let k = ((scratch.len() - 1) as f32 * FLOOR_PERCENTILE) as usize;
            *scratch
                .select_nth_unstable_by(k, |a, b| a.total_cmp(b))
                .1
        })
        .collect()
}

/// faster-whisper's `get_speech_timestamps` from the per-frame scores on:
/// one score per [`FRAME`] samples of audio `audio_len` samples long.
pub fn chunks_from_probs(probs: &[f32], audio_len: usize, opts: &VadOptions) -> Vec<Range<usize>> {
    let sr = SAMPLE_RATE as f64;
    let window = FRAME as i64;
    let threshold = opts.threshold;
    let neg_threshold = (threshold - 0.15).max(0.01);
    let min_speech_samples = sr * opts.min_speech_duration_ms as f64 / 1000.0;
    let speech_pad_samples = (SAMPLE_RATE as i64) * opts.speech_pad_ms as i64 / 1000;
    let max_speech_samples = sr * opts.max_speech_duration_s as f64
        - window as f64
        - 2.0 * speech_pad_samples as f64;
    let min_silence_samples = sr * opts.min_silence_duration_ms as f64 / 1000.0;
    let min_silence_samples_at_max_speech = sr * 98.0 / 1000.0;
    let audio_len = audio_len as i64;

    let mut triggered = false;
    let mut speeches: Vec<(i64, i64)> = Vec::new();
    // `current_speech` in Python: a start, and whether it exists.
    let mut current: Option<i64> = None;
    let mut temp_end: i64 = 0;
    let mut prev_end: i64 = 0;
    let mut next_start: i64 = 0;

    for (i, &p) in probs.iter().enumerate() {
        let pos = window * i as i64;
        if p >= threshold && temp_end != 0 {
            temp_end = 0;
            if next_start < prev_end {
                next_start = pos;
            }
        }
        if p >= threshold && !triggered {
            triggered = true;
            current = Some(pos);
            continue;
        }
        if triggered {
            let start = current.unwrap_or(0);
            if (pos - start) as f64 > max_speech_samples {
                if prev_end != 0 {
                    speeches.push((start, prev_end));
                    current = None;
                    // Previously reached silence and is still not speech.
                    if next_start < prev_end {
                        triggered = false;
                    } else {
                        current = Some(next_start);
                    }
                    prev_end = 0;
                    next_start = 0;
                    temp_end = 0;
                } else {
                    speeches.push((start, pos));
                    current = None;
                    prev_end = 0;
                    next_start = 0;
                    temp_end = 0;
                    triggered = false;
                    continue;
                }
            }
        }
        if p < neg_threshold && triggered {
            if temp_end == 0 {
                temp_end = pos;
            }
            // Avoid cutting in a very short silence.
            if (pos - temp_end) as f64 > min_silence_samples_at_max_speech {
                prev_end = temp_end;
            }
            if ((pos - temp_end) as f64) < min_silence_samples {
                continue;
            }
            let start = current.unwrap_or(0);
            if (temp_end - start) as f64 > min_speech_samples {
                speeches.push((start, temp_end));
            }
            current = None;
            prev_end = 0;
            next_start = 0;
            temp_end = 0;
            triggered = false;
            continue;
        }
    }
    if let Some(start) = current {
        if (audio_len - start) as f64 > min_speech_samples {
            speeches.push((start, audio_len));
        }
    }

    // Padding: never past the audio, never into a neighbour.
    let n = speeches.len();
    for i in 0..n {
        if i == 0 {
            speeches[0].0 = (speeches[0].0 - speech_pad_samples).max(0);
        }
        if i != n - 1 {
            let silence = speeches[i + 1].0 - speeches[i].1;
            if silence < 2 * speech_pad_samples {
                speeches[i].1 += silence.div_euclid(2);
                speeches[i + 1].0 = (speeches[i + 1].0 - silence.div_euclid(2)).max(0);
            } else {
                speeches[i].1 = (speeches[i].1 + speech_pad_samples).min(audio_len);
                speeches[i + 1].0 = (speeches[i + 1].0 - speech_pad_samples).max(0);
            }
        } else {
            speeches[i].1 = (speeches[i].1 + speech_pad_samples).min(audio_len);
        }
    }
    speeches
        .into_iter()
        .map(|(s, e)| (s.max(0) as usize)..(e.clamp(0, audio_len) as usize))
        .filter(|r| r.start < r.end)
        .collect()
}

/// The speech-only audio and the map back to the original timeline.
pub fn collect(audio: &[f32], chunks: &[Range<usize>]) -> (Vec<f32>, TimeMap) {
    let mut out = Vec::with_capacity(chunks.iter().map(|c| c.len()).sum());
    for c in chunks {
        let end = c.end.min(audio.len());
        let start = c.start.min(end);
        out.extend_from_slice(&audio[start..end]);
    }
    (out, TimeMap::new(chunks))
}

/// Maps times in the collected (speech-only) audio back to the original
/// audio: faster-whisper's `SpeechTimestampsMap`, without its rounding to
/// 0.01 s (round when formatting).
#[derive(Debug, Clone, PartialEq)]
pub struct TimeMap {
    chunks: Vec<Range<usize>>,
    /// End of each chunk, in samples of the collected audio.
    chunk_end_sample: Vec<usize>,
    /// Silence removed before each chunk, seconds.
    total_silence_before: Vec<f64>,
}

impl TimeMap {
    /// The map for `chunks` (sorted, non-overlapping sample ranges).
    pub fn new(chunks: &[Range<usize>]) -> TimeMap {
        let mut previous_end = 0usize;
        let mut silent = 0usize;
        let mut chunk_end_sample = Vec::with_capacity(chunks.len());
        let mut total_silence_before = Vec::with_capacity(chunks.len());
        for c in chunks {
            silent += c.start.saturating_sub(previous_end);
            previous_end = c.end;
            chunk_end_sample.push(c.end - silent);
            total_silence_before.push(silent as f64 / SAMPLE_RATE as f64);
        }
        TimeMap { chunks: chunks.to_vec(), chunk_end_sample, total_silence_before }
    }

    /// The speech chunks (sample ranges of the original audio).
    pub fn chunks(&self) -> &[Range<usize>] {
        &self.chunks
    }

    /// Length of the collected audio, seconds.
    pub fn speech_duration(&self) -> f64 {
        self.chunk_end_sample.last().copied().unwrap_or(0) as f64 / SAMPLE_RATE as f64
    }

    /// Original time (s) of a time (s) in the collected audio. `is_end`: a
    /// time exactly at a chunk join belongs to the earlier chunk's end (as
    /// faster-whisper's `get_original_time(..., is_end=True)`); otherwise to
    /// the later chunk's start. Times past the end extend the last chunk.
    /// With no chunks, the identity.
    pub fn original_time(&self, t: f64, is_end: bool) -> f64 {
        if self.chunk_end_sample.is_empty() {
            return t;
        }
        self.total_silence_before[self.chunk_index(t, is_end)] + t
    }

    fn chunk_index(&self, t: f64, is_end: bool) -> usize {
        // Rounded rather than truncated, so 0.02 * k lands on its sample.
        let sample = (t * SAMPLE_RATE as f64).round().max(0.0) as usize;
        if is_end {
            if let Some(i) = self.chunk_end_sample.iter().position(|&e| e == sample) {
                return i;
            }
        }
        self.chunk_end_sample
            .partition_point(|&e| e <= sample)
            .min(self.chunk_end_sample.len() - 1)
    }
}

#[cfg(test)]
mod tests {
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

    /// Speech-like: a gliding 110-180 Hz harmonic series (to 3.5 kHz, 1/k
    /// roll-off), amplitude-modulated at a 4 Hz syllable rate.
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

    fn jfk() -> Vec<f32> {
        let bytes = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/speech/jfk_whisper_cpp/jfk.wav"
        ))
        .or_else(|_| std::fs::read("/work/shared/speech/jfk_whisper_cpp/jfk.wav"))
        .expect("jfk.wav");
        crate::audio::decode(&bytes, f64::INFINITY).expect("decode jfk.wav")
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
        chunks
            .iter()
            .map(|c| (c.start as f64 / SR as f64, c.end as f64 / SR as f64))
            .collect()
    }

    #[test]
    fn vad_digital_silence_has_no_speech() {
        let audio = vec![0.0f32; secs(60.0)];
        assert!(speech_chunks(&audio, &VadOptions::default()).is_empty());
        assert!(speech_chunks(&[], &VadOptions::default()).is_empty());
    }

    #[test]
    fn vad_low_white_noise_has_no_speech() {
        for (amp, seed) in [(0.01, 1), (0.003, 2), (0.1, 3)] {
            let audio = noise(secs(60.0), amp, seed);
            let chunks = speech_chunks(&audio, &VadOptions::default());
            assert!(chunks.is_empty(), "noise {amp}: {:?}", show(&chunks));
        }
    }

    #[test]
    fn vad_synthetic_bursts_between_silences() {
        let mut audio = vec![0.0f32; secs(2.0)];
        audio.extend(babble(secs(3.0), 0.3));
        audio.extend(vec![0.0; secs(5.0)]);
        audio.extend(babble(secs(2.0), 0.3));
        audio.extend(vec![0.0; secs(3.0)]);
        let chunks = speech_chunks(&audio, &VadOptions::default());
        check_well_formed(&chunks, audio.len());
        assert_eq!(chunks.len(), 2, "{:?}", show(&chunks));
        // Padded by 0.4 s, give or take a frame or two of detection.
        let (a, b) = (&chunks[0], &chunks[1]);
        assert!(a.start >= secs(1.4) && a.start <= secs(2.0), "{:?}", show(&chunks));
        assert!(a.end >= secs(5.2) && a.end <= secs(5.8), "{:?}", show(&chunks));
        assert!(b.start >= secs(9.4) && b.start <= secs(10.0), "{:?}", show(&chunks));
        assert!(b.end >= secs(12.2) && b.end <= secs(12.8), "{:?}", show(&chunks));

        // The same over low noise instead of silence.
        let mut noisy = audio.clone();
        for (x, n) in noisy.iter_mut().zip(noise(audio.len(), 0.003, 7)) {
            *x += n;
        }
        let chunks = speech_chunks(&noisy, &VadOptions::default());
        check_well_formed(&chunks, noisy.len());
        assert_eq!(chunks.len(), 2, "{:?}", show(&chunks));
        assert!(chunks[0].start >= secs(1.4) && chunks[1].end <= secs(12.8), "{:?}", show(&chunks));
    }

    #[test]
    fn vad_jfk_is_one_chunk_covering_the_speech() {
        let audio = jfk();
        let chunks = speech_chunks(&audio, &VadOptions::default());
        check_well_formed(&chunks, audio.len());
        assert_eq!(chunks.len(), 1, "{:?}", show(&chunks));
        assert!(chunks[0].start <= secs(0.3), "{:?}", show(&chunks));
        assert!(chunks[0].end >= secs(10.5), "{:?}", show(&chunks));
    }

    fn jfk_gap_jfk(gap: Vec<f32>) {
        let speech = jfk();
        let gap_len = gap.len();
        let mut audio = speech.clone();
        audio.extend(gap);
        audio.extend(&speech);
        let chunks = speech_chunks(&audio, &VadOptions::default());
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
        // First chunk: unchanged offset (it starts at 0 or its padded start).
        let o = map.original_time(1.0, false);
        assert!((o - (1.0 + chunks[0].start as f64 / SR as f64)).abs() < 1e-9);
    }

    #[test]
    fn vad_jfk_silence_gap_jfk_is_two_chunks() {
        jfk_gap_jfk(vec![0.0; secs(20.0)]);
    }

    #[test]
    fn vad_jfk_noise_gap_jfk_is_two_chunks() {
        jfk_gap_jfk(noise(secs(20.0), 0.003, 11));
    }

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

    fn probs_with(len_s: f64, speech: &[(f64, f64)]) -> (Vec<f32>, usize) {
        let len = secs(len_s);
        let frames = len.div_ceil(FRAME);
        let probs = (0..frames)
            .map(|i| {
                let t = (i * FRAME) as f64 / SR as f64;
                if speech.iter().any(|&(a, b)| t >= a && t < b) { 1.0 } else { 0.0 }
            })
            .collect();
        (probs, len)
    }

    #[test]
    fn vad_min_speech_drops_a_100ms_click() {
        // At the decision level...
        let (probs, len) = probs_with(10.0, &[(3.0, 3.1), (6.0, 7.0)]);
        let chunks = chunks_from_probs(&probs, len, &VadOptions::default());
        assert_eq!(chunks.len(), 1, "{:?}", show(&chunks));
        assert!(chunks[0].start >= secs(5.5));
        let keep = VadOptions { min_speech_duration_ms: 0, ..Default::default() };
        assert_eq!(chunks_from_probs(&probs, len, &keep).len(), 2);
        // ...and end to end: a loud 100 ms burst in silence.
        let mut audio = vec![0.0f32; secs(10.0)];
        audio[secs(4.0)..secs(4.1)].copy_from_slice(&babble(secs(0.1), 0.8));
        audio[secs(4.0)..secs(4.1)].iter_mut().zip(noise(secs(0.1), 0.5, 5)).for_each(|(x, n)| *x += n);
        assert!(speech_chunks(&audio, &VadOptions::default()).is_empty());
    }

    #[test]
    fn vad_padding_never_overlaps() {
        // Gaps of 0.3 s (< 2 * pad: split half-and-half) and 0.9 s, with a
        // short min_silence so they stay separate.
        let (probs, len) = probs_with(10.0, &[(0.2, 2.0), (2.3, 4.0), (4.9, 6.0), (9.8, 10.0)]);
        let opts = VadOptions { min_silence_duration_ms: 100, min_speech_duration_ms: 0, ..Default::default() };
        let chunks = chunks_from_probs(&probs, len, &opts);
        check_well_formed(&chunks, len);
        assert_eq!(chunks.len(), 4, "{:?}", show(&chunks));
        assert_eq!(chunks[0].start, 0);
        assert_eq!(chunks[3].end, len);
        // Split gap: the chunks touch (or leave one odd sample).
        assert!(chunks[1].start - chunks[0].end <= 1);
        // Wide gap (0.9 s): both sides padded by 0.4 s, 0.1 s left between.
        let left = (chunks[2].start - chunks[1].end) as f64 / SR as f64;
        assert!((left - 0.1).abs() < 0.07, "{:?}", show(&chunks));
        // End to end with lots of short pauses.
        let mut audio = Vec::new();
        for k in 0..10 {
            audio.extend(babble(secs(0.6 + 0.1 * k as f64), 0.3));
            audio.extend(vec![0.0; secs(0.2 + 0.15 * k as f64)]);
        }
        let chunks = speech_chunks(&audio, &opts);
        check_well_formed(&chunks, audio.len());
        assert!(chunks.len() >= 5, "{:?}", show(&chunks));
    }

    #[test]
    fn vad_max_speech_splits() {
        let (probs, len) = probs_with(60.0, &[(1.0, 20.0), (20.5, 50.0)]);
        let opts = VadOptions { max_speech_duration_s: 30.0, ..Default::default() };
        let chunks = chunks_from_probs(&probs, len, &opts);
        check_well_formed(&chunks, len);
        for c in &chunks {
            assert!(c.len() <= secs(30.0), "{:?}", show(&chunks));
        }
        // Split at the 0.5 s silence, not mid-speech (the gap is under twice
        // the pad, so the two chunks share it half-and-half).
        assert!(chunks.len() >= 2, "{:?}", show(&chunks));
        assert!((chunks[0].end as f64 / SR as f64 - 20.25).abs() < 0.05, "{:?}", show(&chunks));
        assert!(chunks[1].start - chunks[0].end <= 1);
        // Continuous speech: split just before the limit.
        let (probs, len) = probs_with(100.0, &[(0.0, 100.0)]);
        let chunks = chunks_from_probs(&probs, len, &opts);
        check_well_formed(&chunks, len);
        assert!(chunks.len() >= 4, "{:?}", show(&chunks));
        for c in &chunks {
            assert!(c.len() <= secs(30.0), "{:?}", show(&chunks));
        }
    }

    #[test]
    fn vad_one_hour_is_fast() {
        let mut audio = noise(secs(3600.0), 0.01, 9);
        let burst = babble(secs(3.0), 0.3);
        for k in 0..60 {
            let at = secs(60.0 * k as f64 + 10.0);
            audio[at..at + burst.len()].iter_mut().zip(&burst).for_each(|(x, b)| *x += b);
        }
        let t = std::time::Instant::now();
        let chunks = speech_chunks(&audio, &VadOptions::default());
        let el = t.elapsed();
        check_well_formed(&chunks, audio.len());
        assert_eq!(chunks.len(), 60, "{:?}", &show(&chunks)[..chunks.len().min(5)]);
        if !cfg!(debug_assertions) {
            assert!(el.as_secs_f64() < 2.0, "1 h took {el:?}");
        }
        eprintln!("1 h of audio: {el:?}");
    }
}
