//! Voice-activity detection: faster-whisper's `vad_filter`.
//!
//! Before decoding, the non-speech parts of the audio are cut out (so Whisper
//! neither hallucinates on long silences/noise nor spends time on them), the
//! speech is decoded as one concatenated signal, and every timestamp is then
//! mapped back to the original timeline with [`TimeMap`]. The same detector
//! gives the decoder its second opinion on windows Whisper calls silent
//! (`engine::decode`) and cuts the turns of realtime sessions
//! (`realtime::turns`).
//!
//! Two detectors score the audio window by window ([`Detector`], chosen by
//! the config's `vad.engine` at start-up, one per process):
//!
//! - [`silero`] (the default): Silero VAD v6, the model and the feeding of
//!   faster-whisper 1.2.1, run on tract; 512-sample (32 ms) windows. Its
//!   speech segments match faster-whisper's `get_speech_timestamps` (see
//!   tests/vad_silero.rs).
//! - [`webrtc`]: WebRTC's VAD behind an energy gate, smoothed; 30 ms frames.
//!   No model; kept for `vad.engine: "webrtc"`.
//!
//! From the per-window probabilities on, both share a port of
//! faster-whisper 1.2.1's `get_speech_timestamps` ([`chunks_from_probs`]:
//! min speech, min silence, max speech split at the last silence of more
//! than 98 ms, padding that never overlaps neighbours), `collect_chunks`
//! without `max_duration` ([`collect`]) and `SpeechTimestampsMap`
//! ([`TimeMap`]).

pub mod silero;
pub mod webrtc;

#[cfg(test)]
mod tests;

use std::ops::Range;
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};

pub use crate::config::{VadConfig, VadEngine};
use silero::{SileroError, SileroModel, SileroStream};
use webrtc::WebRtcStream;

/// Sample rate everything here works at.
pub const SAMPLE_RATE: usize = 16_000;

/// Options of the VAD filter; the default is faster-whisper 1.2.1's
/// `VadOptions()`, which `WhisperModel.transcribe(vad_filter=True)` uses.
#[derive(Debug, Clone, PartialEq)]
pub struct VadOptions {
    /// A window whose speech probability is at or above this starts (or
    /// continues) speech. Default 0.5.
    pub threshold: f32,
    /// Speech ends only when the probability falls below this for
    /// `min_silence_duration_ms`. Default (None) `max(threshold - 0.15, 0.01)`.
    pub neg_threshold: Option<f32>,
    /// Speech chunks this short or shorter are dropped. Default 0.
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
            neg_threshold: None,
            min_speech_duration_ms: 0,
            max_speech_duration_s: f32::INFINITY,
            min_silence_duration_ms: 2000,
            speech_pad_ms: 400,
        }
    }
}

impl VadOptions {
    /// The probability below which speech ends.
    pub fn end_threshold(&self) -> f32 {
        // In f64 and then rounded, as numpy compares a float32 probability
        // with Python's float `max(threshold - 0.15, 0.01)`.
        self.neg_threshold.unwrap_or(((self.threshold as f64 - 0.15).max(0.01)) as f32)
    }
}

/// A request's `vad_parameters`: faster-whisper's dict of VAD options, each
/// one optional, laid over the detector's defaults. Fields left out are not
/// serialised, so a job without them reads the same in older workers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VadParameters {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub neg_threshold: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_speech_duration_ms: Option<u32>,
    /// None: no limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_speech_duration_s: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_silence_duration_ms: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speech_pad_ms: Option<u32>,
}

/// The keys [`VadParameters::parse`] accepts.
pub const VAD_PARAMETER_NAMES: &[&str] = &[
    "threshold",
    "neg_threshold",
    "min_speech_duration_ms",
    "max_speech_duration_s",
    "min_silence_duration_ms",
    "speech_pad_ms",
];

/// Longest duration option accepted (ms): an hour of padding or silence
/// means nothing more than an hour does.
const MAX_MS: u64 = 3_600_000;

impl VadParameters {
    pub fn is_empty(&self) -> bool {
        *self == VadParameters::default()
    }

    /// Parses a JSON object such as `{"threshold": 0.6, "speech_pad_ms":
    /// 200}`. The error says what is wrong in words, quoting the client's
    /// text only through [`crate::error::echo`].
    pub fn parse(text: &str) -> Result<VadParameters, String> {
        use crate::error::echo;
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|_| format!("`{}` is not a JSON object", echo(text)))?;
        let serde_json::Value::Object(map) = value else {
            return Err(format!("`{}` is not a JSON object", echo(text)));
        };
        let mut p = VadParameters::default();
        for (key, v) in &map {
            let probability = || match v.as_f64() {
                Some(x) if (0.0..=1.0).contains(&x) => Ok(x as f32),
                _ => Err(format!("{key}: `{}` is not a number from 0 to 1", echo(&v.to_string()))),
            };
            let ms = || match v.as_f64() {
                Some(x) if x.fract() == 0.0 && (0.0..=MAX_MS as f64).contains(&x) => Ok(x as u32),
                _ => Err(format!("{key}: `{}` is not a whole number of ms from 0 to {MAX_MS}", echo(&v.to_string()))),
            };
            match key.as_str() {
                "threshold" => p.threshold = Some(probability()?),
                "neg_threshold" => p.neg_threshold = Some(probability()?),
                "min_speech_duration_ms" => p.min_speech_duration_ms = Some(ms()?),
                "min_silence_duration_ms" => p.min_silence_duration_ms = Some(ms()?),
                "speech_pad_ms" => p.speech_pad_ms = Some(ms()?),
                "max_speech_duration_s" => {
                    p.max_speech_duration_s = match v {
                        serde_json::Value::Null => None,
                        _ => match v.as_f64() {
                            Some(x) if x > 0.0 && x <= MAX_MS as f64 / 1000.0 => Some(x as f32),
                            _ => {
                                return Err(format!(
                                    "{key}: `{}` is not a number of seconds in (0, {}] or null (no limit)",
                                    echo(&v.to_string()),
                                    MAX_MS / 1000
                                ))
                            }
                        },
                    }
                }
                other => {
                    return Err(format!(
                        "`{}` is not a VAD option (expected {})",
                        echo(other),
                        VAD_PARAMETER_NAMES.join(", ")
                    ))
                }
            }
        }
        p.validate()?;
        Ok(p)
    }

    /// Checks the combination (each value's range is checked by
    /// [`VadParameters::parse`]; this also guards values from a job or the
    /// config).
    pub fn validate(&self) -> Result<(), String> {
        let threshold = self.threshold.unwrap_or(VadOptions::default().threshold);
        if !(0.0..=1.0).contains(&threshold) {
            return Err(format!("threshold: {threshold} is not from 0 to 1"));
        }
        if let Some(neg) = self.neg_threshold {
            if !(0.0..=threshold).contains(&neg) {
                return Err(format!("neg_threshold: {neg} is not from 0 to the threshold ({threshold})"));
            }
        }
        if self.max_speech_duration_s.is_some_and(|s| !(s > 0.0 && s.is_finite())) {
            return Err("max_speech_duration_s: not a positive number of seconds".into());
        }
        Ok(())
    }

    /// `base` with these values laid over it.
    pub fn apply(&self, base: &VadOptions) -> VadOptions {
        VadOptions {
            threshold: self.threshold.unwrap_or(base.threshold),
            neg_threshold: self.neg_threshold.or(base.neg_threshold),
            min_speech_duration_ms: self.min_speech_duration_ms.unwrap_or(base.min_speech_duration_ms),
            max_speech_duration_s: self.max_speech_duration_s.unwrap_or(base.max_speech_duration_s),
            min_silence_duration_ms: self.min_silence_duration_ms.unwrap_or(base.min_silence_duration_ms),
            speech_pad_ms: self.speech_pad_ms.unwrap_or(base.speech_pad_ms),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VadError {
    #[error("vad.silero_model: {0}")]
    Model(#[source] SileroError),
    #[error("the built-in Silero VAD model: {0}")]
    BuiltIn(#[source] SileroError),
}

/// Start-up (`server::run`, the worker's `run`) reports a model that does
/// not load like the engine's own load errors, naming the file.
impl From<VadError> for crate::server::ServerError {
    fn from(e: VadError) -> Self {
        crate::server::ServerError::Engine(crate::engine::EngineError::BadOption(e.to_string()))
    }
}

/// A voice activity detector. Cheap to clone: the Silero model is shared.
#[derive(Debug, Clone)]
pub enum Detector {
    Silero(Arc<SileroModel>),
    WebRtc,
}

impl Detector {
    /// The detector `vad` configures; loads (and test-runs) the Silero model.
    pub fn from_config(vad: &VadConfig) -> Result<Detector, VadError> {
        Ok(match (vad.engine, &vad.silero_model) {
            (VadEngine::Webrtc, _) => Detector::WebRtc,
            (VadEngine::Silero, Some(path)) => {
                Detector::Silero(Arc::new(SileroModel::from_file(path).map_err(VadError::Model)?))
            }
            (VadEngine::Silero, None) => Detector::Silero(Arc::new(SileroModel::built_in().map_err(VadError::BuiltIn)?)),
        })
    }

    pub fn engine(&self) -> VadEngine {
        match self {
            Detector::Silero(_) => VadEngine::Silero,
            Detector::WebRtc => VadEngine::Webrtc,
        }
    }

    /// Samples per probability.
    pub fn window(&self) -> usize {
        match self {
            Detector::Silero(_) => silero::WINDOW,
            Detector::WebRtc => webrtc::FRAME,
        }
    }

    /// The options a request's `vad_parameters` are laid over: Silero's are
    /// faster-whisper's; the WebRTC score, a smoothed vote, keeps the 250 ms
    /// minimum speech it was tuned with (a click is not speech).
    pub fn defaults(&self) -> VadOptions {
        match self {
            Detector::Silero(_) => VadOptions::default(),
            Detector::WebRtc => VadOptions { min_speech_duration_ms: 250, ..VadOptions::default() },
        }
    }

    /// One speech probability per [`Detector::window`] samples (the last
    /// window zero-padded). Silero's errors are returned as such.
    pub fn probs(&self, audio: &[f32]) -> Result<Vec<f32>, SileroError> {
        match self {
            Detector::Silero(m) => m.probs(audio),
            Detector::WebRtc => Ok(webrtc::probs(audio)),
        }
    }

    /// Speech chunks of 16 kHz mono audio with `params` over this detector's
    /// defaults.
    pub fn speech_chunks(&self, audio: &[f32], params: &VadParameters) -> Vec<Range<usize>> {
        self.speech_chunks_with(audio, &params.apply(&self.defaults()))
    }

    /// Speech chunks of 16 kHz mono audio, as sample ranges, sorted,
    /// non-overlapping (adjacent chunks may touch).
    pub fn speech_chunks_with(&self, audio: &[f32], opts: &VadOptions) -> Vec<Range<usize>> {
        match self.probs(audio) {
            Ok(probs) => chunks_from_probs(&probs, self.window(), audio.len(), opts),
            Err(e) => {
                // Cannot happen with a model that passed its load-time run;
                // a VAD answer is still better than failing the request.
                tracing::error!(error = %e, "Silero VAD failed; using the WebRTC VAD for this audio");
                chunks_from_probs(&webrtc::probs(audio), webrtc::FRAME, audio.len(), opts)
            }
        }
    }

    /// A scorer for a live stream.
    pub fn stream(&self) -> Stream {
        match self {
            Detector::Silero(m) => Stream::Silero(SileroStream::new(m.clone())),
            Detector::WebRtc => Stream::WebRtc(WebRtcStream::default()),
        }
    }
}

/// Per-window probabilities of a live stream, as audio arrives.
pub enum Stream {
    Silero(SileroStream),
    WebRtc(WebRtcStream),
}

impl Stream {
    /// Samples per probability.
    pub fn window(&self) -> usize {
        match self {
            Stream::Silero(_) => silero::WINDOW,
            Stream::WebRtc(_) => webrtc::FRAME,
        }
    }

    /// Feeds samples; returns the probabilities of the windows now final,
    /// in order (Silero's at once, WebRTC's a few frames later).
    pub fn push(&mut self, samples: &[f32]) -> Vec<f32> {
        match self {
            Stream::Silero(s) => s.push(samples),
            Stream::WebRtc(s) => s.push(samples),
        }
    }
}

static DETECTOR: OnceLock<Detector> = OnceLock::new();

/// Chooses the process's detector from the config; at start-up, before
/// any request. A Silero model that is missing or does not load is an
/// error naming the file.
pub fn init(vad: &VadConfig) -> Result<(), VadError> {
    let detector = Detector::from_config(vad)?;
    let engine = detector.engine();
    if DETECTOR.set(detector).is_err() {
        tracing::warn!(engine = engine.as_str(), "the VAD was chosen before; keeping it");
    }
    Ok(())
}

/// The process's detector: the configured one, or Silero with the built-in
/// model where [`init`] was not called (the CLI, tests).
pub fn detector() -> &'static Detector {
    DETECTOR.get_or_init(|| {
        Detector::from_config(&VadConfig::default()).unwrap_or_else(|e| {
            tracing::error!(error = %e, "using the WebRTC VAD");
            Detector::WebRtc
        })
    })
}

/// [`Detector::speech_chunks`] of the process's detector.
pub fn speech_chunks(audio: &[f32], params: &VadParameters) -> Vec<Range<usize>> {
    detector().speech_chunks(audio, params)
}

/// faster-whisper's `get_speech_timestamps` from the probabilities on: one
/// probability per `window` samples of audio `audio_len` samples long.
pub fn chunks_from_probs(probs: &[f32], window: usize, audio_len: usize, opts: &VadOptions) -> Vec<Range<usize>> {
    let sr = SAMPLE_RATE as f64;
    let window = window as i64;
    let threshold = opts.threshold;
    let neg_threshold = opts.end_threshold();
    let min_speech_samples = sr * opts.min_speech_duration_ms as f64 / 1000.0;
    // Whole samples at 16 kHz (16 a ms), as in Python.
    let speech_pad_samples = (SAMPLE_RATE as i64) * opts.speech_pad_ms as i64 / 1000;
    let max_speech_samples =
        sr * opts.max_speech_duration_s as f64 - window as f64 - 2.0 * speech_pad_samples as f64;
    let min_silence_samples = sr * opts.min_silence_duration_ms as f64 / 1000.0;
    let min_silence_samples_at_max_speech = sr * 98.0 / 1000.0;
    let audio_len = audio_len as i64;

    let mut triggered = false;
    let mut speeches: Vec<(i64, i64)> = Vec::new();
    // `current_speech` in Python: its start, if it has one.
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
            chunk_end_sample.push(c.end.saturating_sub(silent));
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
        self.original_time_in(t, self.chunk_index(t, is_end))
    }

    /// Original time of `t` taken as a time in chunk `chunk` (faster-whisper
    /// maps both ends of a word through the chunk of its middle).
    pub fn original_time_in(&self, t: f64, chunk: usize) -> f64 {
        self.total_silence_before.get(chunk).copied().unwrap_or(0.0) + t
    }

    /// faster-whisper's `get_chunk_index`: the sample is truncated, as its
    /// `int(time * sampling_rate)` is.
    pub fn chunk_index(&self, t: f64, is_end: bool) -> usize {
        let sample = (t * SAMPLE_RATE as f64).max(0.0) as usize;
        if is_end {
            if let Some(i) = self.chunk_end_sample.iter().position(|&e| e == sample) {
                return i;
            }
        }
        self.chunk_end_sample
            .partition_point(|&e| e <= sample)
            .min(self.chunk_end_sample.len().saturating_sub(1))
    }
}
