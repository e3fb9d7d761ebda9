//! Server VAD for a live stream: the process's detector (`crate::vad`, the
//! one behind `vad_filter`; Silero unless `vad.engine` says otherwise)
//! scoring windows as audio arrives, and turns cut from its probabilities
//! with OpenAI's `server_vad` settings (threshold, prefix padding, silence
//! duration). Silero scores each 32 ms window as soon as it is whole, from
//! its carried LSTM state; WebRTC's score needs a rolling context and a few
//! frames of lookahead (`vad::webrtc::WebRtcStream`).

use super::protocol::ServerVad;
use crate::vad::Stream;

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
    stream: Stream,
    /// Samples per probability.
    window: u64,
    /// Absolute index of the next window to decide on.
    next_window: u64,
    speaking: bool,
    /// Windows below the end threshold since the last speech window.
    quiet_windows: u64,
}

impl Detector {
    /// With the process's detector.
    pub fn new(vad: ServerVad) -> Self {
        Self::with(vad, crate::vad::detector())
    }

    pub fn with(vad: ServerVad, detector: &crate::vad::Detector) -> Self {
        let stream = detector.stream();
        let window = stream.window() as u64;
        Detector { vad, stream, window, next_window: 0, speaking: false, quiet_windows: 0 }
    }

    pub fn speaking(&self) -> bool {
        self.speaking
    }

    /// A manual commit or a clear ends the turn without the VAD.
    pub fn reset_turn(&mut self) {
        self.speaking = false;
        self.quiet_windows = 0;
    }

    /// Feeds 16 kHz samples; returns the turn boundaries they reveal.
    pub fn push(&mut self, samples: &[f32]) -> Vec<TurnEvent> {
        let mut events = Vec::new();
        let probs = self.stream.push(samples);
        let window = self.window;
        let start_threshold = self.vad.threshold;
        let end_threshold = (self.vad.threshold - 0.15).max(0.01);
        let silence_windows = (self.vad.silence_duration_ms as u64 * 16).div_ceil(window).max(1);
        let pad_samples = self.vad.prefix_padding_ms as u64 * 16;
        for p in probs {
            let w = self.next_window;
            self.next_window += 1;
            if !self.speaking {
                if p >= start_threshold {
                    self.speaking = true;
                    self.quiet_windows = 0;
                    events.push(TurnEvent::Started { at: (w * window).saturating_sub(pad_samples) });
                }
            } else if p < end_threshold {
                self.quiet_windows += 1;
                if self.quiet_windows >= silence_windows {
                    self.speaking = false;
                    let at = (w + 1) * window;
                    events.push(TurnEvent::Stopped { at, speech_end: at - self.quiet_windows * window });
                }
            } else {
                self.quiet_windows = 0;
            }
        }
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

    fn jfk() -> Vec<f32> {
        let bytes = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/speech/jfk_whisper_cpp/jfk.wav"))
            .or_else(|_| std::fs::read("/work/shared/speech/jfk_whisper_cpp/jfk.wav"))
            .expect("jfk.wav");
        crate::audio::decode(&bytes, f64::INFINITY).expect("decode jfk.wav")
    }

    fn silero() -> crate::vad::Detector {
        crate::vad::Detector::from_config(&crate::vad::VadConfig::default()).expect("built-in Silero")
    }

    fn run(d: &mut Detector, audio: &[f32]) -> Vec<TurnEvent> {
        audio.chunks(1600).flat_map(|c| d.push(c)).collect()
    }

    #[test]
    fn a_turn_starts_with_speech_and_stops_after_the_silence() {
        let vad = ServerVad { silence_duration_ms: 500, ..ServerVad::default() };
        let mut d = Detector::with(vad, &crate::vad::Detector::WebRtc);
        let mut audio = vec![0.0f32; 16_000];
        audio.extend(voiced(2.0));
        audio.extend(vec![0.0f32; 32_000]);
        let events = run(&mut d, &audio);
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
    fn a_silero_turn_spans_the_speech() {
        // jfk.wav's pauses are about 1.1 s; its speech runs from about
        // 0.3 s to about 10.5 s, here after 1 s of silence and before 3 s more.
        let vad = ServerVad { silence_duration_ms: 1500, ..ServerVad::default() };
        let mut d = Detector::with(vad, &silero());
        let mut audio = vec![0.0f32; 16_000];
        audio.extend(jfk());
        audio.extend(vec![0.0f32; 48_000]);
        let events = run(&mut d, &audio);
        assert_eq!(events.len(), 2, "{events:?}");
        let TurnEvent::Started { at: start } = events[0] else { panic!("{events:?}") };
        let TurnEvent::Stopped { at: stop, speech_end } = events[1] else { panic!("{events:?}") };
        assert!((0.9 * 16_000.0) as u64 <= start && start <= (1.3 * 16_000.0) as u64, "{start}");
        assert_eq!(stop - speech_end, 47 * 512, "the 1500 ms of quiet, in 32 ms windows");
        assert!((11.0 * 16_000.0) as u64 <= speech_end && speech_end <= (12.0 * 16_000.0) as u64, "{speech_end}");
        assert!(!d.speaking());
    }

    #[test]
    fn silence_alone_starts_no_turn() {
        for detector in [silero(), crate::vad::Detector::WebRtc] {
            let mut d = Detector::with(ServerVad::default(), &detector);
            let events: Vec<_> = vec![0.0f32; 16_000 * 5].chunks(480).flat_map(|c| d.push(c)).collect();
            assert!(events.is_empty());
        }
    }
}
