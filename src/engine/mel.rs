//! Whisper's log-mel spectrogram, computed as openai-whisper's
//! `log_mel_spectrogram` does: 400-point STFT (periodic Hann, centred with
//! reflect padding), hop 160, power spectrum, Slaney mel filters (librosa's
//! defaults), log10 clamped at 1e-10 and at max - 8, then (x + 4) / 4.
//!
//! As in openai-whisper's `transcribe`, the audio is followed by 30 s of
//! silence before the transform (so the STFT of the last frames sees
//! silence, not a reflection), and each window holds only content frames,
//! zero-padded to 3000 after the normalisation (`pad_or_trim`).

use std::sync::Arc;

use realfft::{RealFftPlanner, RealToComplex};

pub const N_FFT: usize = 400;
pub const HOP: usize = 160;
pub const SAMPLE_RATE: usize = 16_000;
/// Frames in one 30 s window.
pub const N_FRAMES: usize = 3000;
pub const N_SAMPLES: usize = N_FRAMES * HOP;

/// A log-mel spectrogram, row-major `[n_mels][n_frames]`.
#[derive(Debug, Clone)]
pub struct Mel {
    pub n_mels: usize,
    pub n_frames: usize,
    pub data: Vec<f32>,
}

impl Mel {
    /// Copies `len` frames from `start` into `out` (`[n_mels][frames]`),
    /// zero-padded to a full window of `frames` (Whisper's is N_FRAMES) as
    /// openai-whisper's `pad_or_trim` does.
    pub fn window_into(&self, start: usize, len: usize, frames: usize, out: &mut Vec<f32>) {
        out.clear();
        out.reserve(self.n_mels * frames);
        let from = start.min(self.n_frames);
        let to = (start + len.min(frames)).min(self.n_frames);
        for m in 0..self.n_mels {
            let row = &self.data[m * self.n_frames..(m + 1) * self.n_frames];
            out.extend_from_slice(&row[from..to]);
            out.extend(std::iter::repeat_n(0.0, frames - (to - from)));
        }
    }
}

/// Computes log-mel features; holds the FFT plan and filters, so build one
/// per engine and reuse it.
pub struct MelExtractor {
    n_mels: usize,
    fft: Arc<dyn RealToComplex<f32>>,
    window: Vec<f32>,
    /// Each mel filter's non-zero weights and the FFT bin they start at
    /// (a filter spans a few bins, so this skips ~95 % of a dense product).
    filters: Vec<(usize, Vec<f32>)>,
}

impl MelExtractor {
    pub fn new(n_mels: usize) -> Self {
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(N_FFT);
        let window = (0..N_FFT)
            .map(|n| (0.5 - 0.5 * (2.0 * std::f64::consts::PI * n as f64 / N_FFT as f64).cos()) as f32)
            .collect();
        let n_bins = N_FFT / 2 + 1;
        let dense = mel_filters(SAMPLE_RATE, N_FFT, n_mels);
        let filters = dense
            .chunks(n_bins)
            .map(|row| {
                let first = row.iter().position(|&w| w != 0.0).unwrap_or(0);
                let last = row.iter().rposition(|&w| w != 0.0).map_or(first, |i| i + 1);
                (first, row[first..last].to_vec())
            })
            .collect();
        Self { n_mels, fft, window, filters }
    }

    pub fn n_mels(&self) -> usize {
        self.n_mels
    }

    /// Features of `audio` followed by `pad_samples` of silence.
    pub fn compute(&self, audio: &[f32], pad_samples: usize) -> Mel {
        let n_bins = N_FFT / 2 + 1;
        let total = audio.len() + pad_samples;
        let sample = |i: usize| if i < audio.len() { audio[i] } else { 0.0 };
        // torch.stft(center=True) reflect-pads N_FFT/2 on each side; the
        // last frame is then dropped, leaving total / HOP frames.
        let half = N_FFT / 2;
        let reflect = |i: isize| -> f32 {
            let n = total as isize;
            if n <= 1 {
                return sample(0);
            }
            let mut j = i;
            if j < 0 {
                j = -j;
            }
            if j >= n {
                j = 2 * (n - 1) - j;
            }
            sample(j.clamp(0, n - 1) as usize)
        };
        let n_frames = total / HOP;
        // Frames whose window lies wholly in the silence padding have zero
        // power: they are the log floor, with no transform needed. Only the
        // max matters from them, and silence never raises it.
        let live_frames = n_frames.min(audio.len().div_ceil(HOP) + half / HOP + 1);
        let silent = 1e-10f32.log10();
        let mut data = vec![silent; self.n_mels * n_frames];
        let mut max = f32::NEG_INFINITY;
        let mut power = vec![0f32; n_bins];
        let mut input = self.fft.make_input_vec();
        let mut spectrum = self.fft.make_output_vec();
        let mut scratch = self.fft.make_scratch_vec();
        for f in 0..live_frames {
            let start = (f * HOP) as isize - half as isize;
            for (k, x) in input.iter_mut().enumerate() {
                *x = reflect(start + k as isize) * self.window[k];
            }
            // The plan's sizes match the buffers it made, so this cannot fail.
            if self.fft.process_with_scratch(&mut input, &mut spectrum, &mut scratch).is_err() {
                continue;
            }
            for (p, c) in power.iter_mut().zip(&spectrum) {
                *p = c.norm_sqr();
            }
            for (m, (first, weights)) in self.filters.iter().enumerate() {
                let e: f32 = weights.iter().zip(&power[*first..]).map(|(w, p)| w * p).sum();
                let v = e.max(1e-10).log10();
                max = max.max(v);
                data[m * n_frames + f] = v;
            }
        }
        if live_frames < n_frames {
            max = max.max(silent);
        }
        let floor = max - 8.0;
        for v in &mut data {
            *v = (v.max(floor) + 4.0) / 4.0;
        }
        Mel { n_mels: self.n_mels, n_frames, data }
    }
}

fn hz_to_mel(f: f64) -> f64 {
    let f_sp = 200.0 / 3.0;
    let (min_log_hz, min_log_mel) = (1000.0, 1000.0 / f_sp);
    let logstep = (6.4f64).ln() / 27.0;
    if f >= min_log_hz {
        min_log_mel + (f / min_log_hz).ln() / logstep
    } else {
        f / f_sp
    }
}

fn mel_to_hz(m: f64) -> f64 {
    let f_sp = 200.0 / 3.0;
    let (min_log_hz, min_log_mel) = (1000.0, 1000.0 / f_sp);
    let logstep = (6.4f64).ln() / 27.0;
    if m >= min_log_mel {
        min_log_hz * ((m - min_log_mel) * logstep).exp()
    } else {
        m * f_sp
    }
}

/// librosa.filters.mel(sr, n_fft, n_mels) with its defaults (Slaney scale
/// and area normalisation), which is what Whisper's mel_filters.npz holds.
fn mel_filters(sr: usize, n_fft: usize, n_mels: usize) -> Vec<f32> {
    let n_bins = n_fft / 2 + 1;
    let fft_freqs: Vec<f64> = (0..n_bins).map(|i| i as f64 * sr as f64 / n_fft as f64).collect();
    let (lo, hi) = (hz_to_mel(0.0), hz_to_mel(sr as f64 / 2.0));
    let mel_f: Vec<f64> = (0..n_mels + 2)
        .map(|i| mel_to_hz(lo + (hi - lo) * i as f64 / (n_mels + 1) as f64))
        .collect();
    let mut out = vec![0f32; n_mels * n_bins];
    for m in 0..n_mels {
        let (f0, f1, f2) = (mel_f[m], mel_f[m + 1], mel_f[m + 2]);
        let enorm = 2.0 / (f2 - f0);
        for (b, &f) in fft_freqs.iter().enumerate() {
            let lower = (f - f0) / (f1 - f0);
            let upper = (f2 - f) / (f2 - f1);
            out[m * n_bins + b] = (lower.min(upper).max(0.0) * enorm) as f32;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_count_matches_whisper() {
        let ex = MelExtractor::new(80);
        let mel = ex.compute(&vec![0.0; N_SAMPLES], 0);
        assert_eq!(mel.n_frames, N_FRAMES);
        assert_eq!(mel.data.len(), 80 * N_FRAMES);
    }

    #[test]
    fn silence_is_flat_and_tone_peaks_in_its_band() {
        let ex = MelExtractor::new(80);
        let tone: Vec<f32> = (0..SAMPLE_RATE)
            .map(|i| (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / SAMPLE_RATE as f32).sin() * 0.5)
            .collect();
        let mel = ex.compute(&tone, SAMPLE_RATE);
        // In the middle of the tone the loudest band is the one around 1 kHz.
        let f = 50;
        let col: Vec<f32> = (0..80).map(|m| mel.data[m * mel.n_frames + f]).collect();
        let peak = col.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i).unwrap_or(0);
        let centre_hz = mel_to_hz(hz_to_mel(0.0) + (hz_to_mel(8000.0) - hz_to_mel(0.0)) * (peak + 1) as f64 / 81.0);
        assert!((centre_hz - 1000.0).abs() < 120.0, "peak band centre {centre_hz} Hz");
        // The padded second is silence: clamped to max - 8, i.e. (max-8+4)/4.
        let max = mel.data.iter().copied().fold(f32::MIN, f32::max);
        let tail = mel.data[10 * mel.n_frames + mel.n_frames - 10];
        assert!((tail - (max - 2.0)).abs() < 1e-4);
    }

    #[test]
    fn slaney_filters_match_librosa_values() {
        // librosa.filters.mel(sr=16000, n_fft=400, n_mels=80)[0, 1] and [79].sum(),
        // as faster-whisper computes them
        let f = mel_filters(16000, 400, 80);
        assert!((f[1] - 0.024_862_3).abs() < 1e-5, "{}", f[1]);
        let last: f32 = f[79 * 201..80 * 201].iter().sum();
        assert!((last - 0.024_925).abs() < 1e-5, "{last}");
    }

    #[test]
    fn window_is_zero_padded() {
        let ex = MelExtractor::new(80);
        let mel = ex.compute(&vec![0.1; 1000], 0);
        let mut w = Vec::new();
        mel.window_into(0, 6, N_FRAMES, &mut w);
        assert_eq!(w[6], 0.0);
        assert_eq!(w.len(), 80 * N_FRAMES);
    }
}
