//! Server VAD for a live stream: the shared VAD's per-frame speech score
//! (`crate::vad`, the one behind `vad_filter`) computed over a rolling
//! context as audio arrives, and turns cut from it with OpenAI's
//! `server_vad` settings (threshold, prefix padding, silence duration).

use super::protocol::ServerVad;
use crate::vad::{speech_probs, FRAME};

/// Audio the score is computed over: the shared VAD's noise floor looks
/// about 8 s around a frame.
const CONTEXT_FRAMES: usize = 267;
/// Frames the smoothed score needs after a frame before it is final.
const LOOKAHEAD_FRAMES: usize = 3;
/// Frames scored at once: scoring the context costs the same for one new
/// frame as for several.
const BATCH_FRAMES: usize = 4;

/// What the detector saw in the audio just pushed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TurnEvent {
    /// Speech began at this sample (padding included).
    Started { at: u64 },
    /// Speech ended at `speech_end`; the turn's audio, the silence that
    /// ended it included, ends at `at`.
    Stopped { at: u64, speech_end: u64 },
}

pub struct Detector {
    vad: ServerVad,
    /// The last CONTEXT_FRAMES frames of audio (and the part of a frame).
    context: Vec<f32>,
    /// Absolute frame index of `context[0]`.
    context_frame: u64,
    /// Next frame to decide on.
    next_frame: u64,
    speaking: bool,
    /// Frames below the end threshold since the last speech frame.
    quiet_frames: u64,
}

impl Detector {
    pub fn new(vad: ServerVad) -> Self {
        Detector { vad, context: Vec::new(), context_frame: 0, next_frame: 0, speaking: false, quiet_frames: 0 }
    }

    pub fn speaking(&self) -> bool {
        self.speaking
    }

    /// A manual commit or a clear ends the turn without the VAD.
    pub fn reset_turn(&mut self) {
        self.speaking = false;
        self.quiet_frames = 0;
    }

    /// Feeds 16 kHz samples; returns the turn boundaries they reveal.
    pub fn push(&mut self, samples: &[f32]) -> Vec<TurnEvent> {
        self.context.extend_from_slice(samples);
        let mut events = Vec::new();
        let whole = (self.context.len() / FRAME) as u64;
        let decidable = (self.context_frame + whole).saturating_sub(LOOKAHEAD_FRAMES as u64);
        if decidable < self.next_frame + BATCH_FRAMES as u64 {
            return events;
        }
        let probs = speech_probs(&self.context[..whole as usize * FRAME]);
        let start_threshold = self.vad.threshold;
        let end_threshold = (self.vad.threshold - 0.15).max(0.01);
        let silence_frames = (self.vad.silence_duration_ms as u64).div_ceil(30).max(1);
        let pad_samples = self.vad.prefix_padding_ms as u64 * 16;
        for f in self.next_frame..decidable {
            let p = probs[(f - self.context_frame) as usize];
            if !self.speaking {
                if p >= start_threshold {
                    self.speaking = true;
                    self.quiet_frames = 0;
                    events.push(TurnEvent::Started { at: (f * FRAME as u64).saturating_sub(pad_samples) });
                }
            } else if p < end_threshold {
                self.quiet_frames += 1;
                if self.quiet_frames >= silence_frames {
                    self.speaking = false;
                    let at = (f + 1) * FRAME as u64;
                    events.push(TurnEvent::Stopped { at, speech_end: at - self.quiet_frames * FRAME as u64 });
                }
            } else {
                self.quiet_frames = 0;
            }
        }
        self.next_frame = decidable;
        // Keep CONTEXT_FRAMES frames before the next undecided one.
        let keep_from = self.next_frame.saturating_sub(CONTEXT_FRAMES as u64).max(self.context_frame);
        let drop = ((keep_from - self.context_frame) as usize * FRAME).min(self.context.len());
        self.context.drain(..drop);
        self.context_frame = keep_from;
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Speech-like audio: a voiced buzz (harmonics of 140 Hz) with a
    /// syllable rhythm, which WebRTC's VAD calls speech.
    fn voiced(seconds: f64) -> Vec<f32> {
        (0..(seconds * 16_000.0) as usize)
            .map(|i| {
                let t = i as f32 / 16_000.0;
                let env = 0.5 + 0.5 * (t * 2.0 * std::f32::consts::PI * 4.0).sin().abs();
                let s: f32 = (1..12).map(|h| (t * 2.0 * std::f32::consts::PI * 140.0 * h as f32).sin() / h as f32).sum();
                0.2 * env * s
            })
            .collect()
    }

    #[test]
    fn a_turn_starts_with_speech_and_stops_after_the_silence() {
        let mut d = Detector::new(ServerVad { silence_duration_ms: 500, ..ServerVad::default() });
        let mut audio = vec![0.0f32; 16_000];
        audio.extend(voiced(2.0));
        audio.extend(vec![0.0f32; 32_000]);
        let mut events = Vec::new();
        for chunk in audio.chunks(1600) {
            events.extend(d.push(chunk));
        }
        assert_eq!(events.len(), 2, "{events:?}");
        let TurnEvent::Started { at: start } = events[0] else { panic!("{events:?}") };
        let TurnEvent::Stopped { at: stop, speech_end } = events[1] else { panic!("{events:?}") };
        // Padding (300 ms) before an onset near 1 s; the stop 0.5 s of quiet after the end at 3 s.
        assert!((11_000..=13_500).contains(&start), "{start}");
        assert!((3.4 * 16_000.0) as u64 <= stop && stop <= (3.9 * 16_000.0) as u64, "{stop}");
        assert_eq!(stop - speech_end, 17 * 480, "the 500 ms of quiet, in 30 ms frames");
        assert!((2.8 * 16_000.0) as u64 <= speech_end && speech_end <= (3.4 * 16_000.0) as u64, "{speech_end}");
        assert!(!d.speaking());
    }

    #[test]
    fn silence_alone_starts_no_turn() {
        let mut d = Detector::new(ServerVad::default());
        let events: Vec<_> = vec![0.0f32; 16_000 * 5].chunks(480).flat_map(|c| d.push(c)).collect();
        assert!(events.is_empty());
    }
}
