//! The model-free detector (`vad.engine: "webrtc"`): WebRTC's VAD behind an
//! adaptive energy gate, smoothed into a per-frame score.
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
//!    (210 ms) window, so a threshold of 0.5 is a majority vote.

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

/// Per-frame ([`FRAME`] samples; the last frame zero-padded) speech score
/// in 0..=1.
pub fn probs(audio: &[f32]) -> Vec<f32> {
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
    let mut total = 0u32;
    prefix.push(total);
    for &v in &voiced {
        total += v as u32;
        prefix.push(total);
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

/// Audio a stream's score is computed over: the noise floor looks about
/// 8 s around a frame.
const CONTEXT_FRAMES: usize = FLOOR_RADIUS;
/// Frames the smoothed score needs after a frame before it is final.
const LOOKAHEAD_FRAMES: usize = SMOOTH_RADIUS;
/// Frames scored at once: scoring the context costs the same for one new
/// frame as for several.
const BATCH_FRAMES: usize = 4;

/// The score over a live stream: recomputed over a rolling context as audio
/// arrives, each frame handed out once its smoothing window is complete.
#[derive(Debug, Default)]
pub struct WebRtcStream {
    /// The last CONTEXT_FRAMES frames of audio (and the part of a frame).
    context: Vec<f32>,
    /// Absolute frame index of `context[0]`.
    context_frame: u64,
    /// Next frame to hand out.
    next_frame: u64,
}

impl WebRtcStream {
    /// Feeds samples; returns the scores of the frames now final, in order.
    pub fn push(&mut self, samples: &[f32]) -> Vec<f32> {
        self.context.extend_from_slice(samples);
        let whole = (self.context.len() / FRAME) as u64;
        let decidable = (self.context_frame + whole).saturating_sub(LOOKAHEAD_FRAMES as u64);
        if decidable < self.next_frame + BATCH_FRAMES as u64 {
            return Vec::new();
        }
        let all = probs(&self.context[..whole as usize * FRAME]);
        let from = (self.next_frame - self.context_frame) as usize;
        let to = (decidable - self.context_frame) as usize;
        let out = all[from..to].to_vec();
        self.next_frame = decidable;
        // Keep CONTEXT_FRAMES frames before the next undecided one.
        let keep_from = self.next_frame.saturating_sub(CONTEXT_FRAMES as u64).max(self.context_frame);
        let drop = ((keep_from - self.context_frame) as usize * FRAME).min(self.context.len());
        self.context.drain(..drop);
        self.context_frame = keep_from;
        out
    }
}
