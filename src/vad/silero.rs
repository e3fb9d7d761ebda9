//! Silero VAD v6 as faster-whisper 1.2.1 runs it, on tract.
//!
//! The model is `faster_whisper/assets/silero_vad_v6.onnx` from the
//! faster-whisper 1.2.1 wheel, fetched and checked by `build.rs` and compiled
//! into the binary (`vad.silero_model` loads another file instead). It takes
//! a batch of 576-sample rows (a 512-sample window after the previous
//! window's last 64 samples) and an LSTM state `h`, `c`; the batch axis is the
//! LSTM's time axis, so one call scores consecutive windows and hands back
//! the state for the next call.
//!
//! Why tract and not ONNX Runtime: tract is pure Rust, compiled into the
//! binary like everything else, so the server stays one file with nothing
//! to install or load at run time (ONNX Runtime is a C++ shared library of
//! its own, per platform, found and `dlopen`ed at start-up, and a second
//! thread pool beside CTranslate2's). The v6 graph needs only Conv, LSTM,
//! Pad, Relu, Reshape, Sigmoid, Slice, Sqrt, Squeeze and arithmetic, all of
//! which tract implements; unlike v5 it has no `If` over the sample rate.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tract_onnx::prelude::*;

/// Samples scored at once at 16 kHz.
pub const WINDOW: usize = 512;
/// Samples of the previous window fed before each window.
pub const CONTEXT: usize = 64;
const ROW: usize = CONTEXT + WINDOW;
/// Size of each of the LSTM's `h` and `c`.
const STATE: usize = 128;
/// Windows per model call. faster-whisper's `encoder_batch_size` is
/// 10 000; the state is carried from call to call either way, so the
/// probabilities are the same, and 1024 holds about 40 MB of activations
/// per call instead of about 180 MB, at the same speed.
const BATCH: usize = 1024;

/// The model of the faster-whisper 1.2.1 wheel (see `build.rs`).
pub static BUILT_IN: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/silero_vad_v6.onnx"));

#[derive(Debug, thiserror::Error)]
pub enum SileroError {
    #[error("cannot read the Silero VAD model {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not an ONNX file tract runs, or not one with Silero's inputs and outputs.
    #[error("cannot load the Silero VAD model {from}: {message}")]
    Load { from: String, message: String },
    #[error("Silero VAD inference failed: {0}")]
    Run(String),
}

/// A loaded model: immutable, shared by every caller.
pub struct SileroModel {
    plan: Arc<TypedRunnableModel>,
}

impl std::fmt::Debug for SileroModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SileroModel")
    }
}

/// The LSTM state carried from one call to the next.
#[derive(Debug, Clone)]
pub struct State {
    h: Vec<f32>,
    c: Vec<f32>,
}

impl Default for State {
    fn default() -> Self {
        State { h: vec![0.0; STATE], c: vec![0.0; STATE] }
    }
}

impl SileroModel {
    /// The model compiled into the binary.
    pub fn built_in() -> Result<Self, SileroError> {
        Self::from_bytes(BUILT_IN, "built into the binary")
    }

    /// A model file (`vad.silero_model`).
    pub fn from_file(path: &Path) -> Result<Self, SileroError> {
        let bytes = std::fs::read(path).map_err(|source| SileroError::Read { path: path.to_path_buf(), source })?;
        Self::from_bytes(&bytes, &path.display().to_string())
    }

    /// Loads, optimises and test-runs a model, so that a file that is not a
    /// Silero VAD fails here (at start-up) and not on the first request.
    pub fn from_bytes(bytes: &[u8], from: &str) -> Result<Self, SileroError> {
        let load = |message: String| SileroError::Load { from: from.to_string(), message };
        let model = tract_onnx::onnx()
            .model_for_read(&mut std::io::Cursor::new(bytes))
            .map_err(|e| load(format!("{e:#}")))?;
        let (inputs, outputs) = (model.input_outlets().map_or(0, |o| o.len()), model.output_outlets().map_or(0, |o| o.len()));
        if inputs != 3 || outputs != 3 {
            return Err(load(format!(
                "expected 3 inputs (input, h, c) and 3 outputs (speech_probs, hn, cn), found {inputs} and {outputs}"
            )));
        }
        let plan = model
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(|e| load(format!("{e:#}")))?;
        let me = SileroModel { plan };
        let probe = me.run(&[0.0; ROW], &mut State::default()).map_err(|e| load(e.to_string()))?;
        if probe.len() != 1 || !(0.0..=1.0).contains(&probe[0]) {
            return Err(load(format!("one window of silence gave {probe:?}, not one probability")));
        }
        Ok(me)
    }

    /// Scores `rows` (whole rows of [`CONTEXT`] + [`WINDOW`] samples) in
    /// order, carrying `state` through them.
    fn run(&self, rows: &[f32], state: &mut State) -> Result<Vec<f32>, SileroError> {
        let n = rows.len() / ROW;
        let err = |e: TractError| SileroError::Run(format!("{e:#}"));
        let input = Tensor::from_shape(&[n, ROW], &rows[..n * ROW]).map_err(err)?;
        let h = Tensor::from_shape(&[1, 1, STATE], &state.h).map_err(err)?;
        let c = Tensor::from_shape(&[1, 1, STATE], &state.c).map_err(err)?;
        let out = self.plan.run(tvec![input.into(), h.into(), c.into()]).map_err(err)?;
        let read = |i: usize| -> Result<Vec<f32>, SileroError> {
            let t = out.get(i).ok_or_else(|| SileroError::Run(format!("the model gave no output {i}")))?;
            Ok(t.to_plain_array_view::<f32>().map_err(err)?.iter().copied().collect())
        };
        let probs = read(0)?;
        let (h, c) = (read(1)?, read(2)?);
        if probs.len() != n || h.len() != STATE || c.len() != STATE {
            return Err(SileroError::Run(format!(
                "outputs of {} probabilities and states of {} and {} for {n} windows",
                probs.len(),
                h.len(),
                c.len()
            )));
        }
        state.h = h;
        state.c = c;
        Ok(probs)
    }

    /// One speech probability per [`WINDOW`] samples of `audio`, as
    /// faster-whisper's `get_speech_timestamps` computes them: the audio is
    /// zero-padded by `512 - len % 512` samples (a whole extra window when
    /// the length is a multiple of 512), the first window's context is
    /// zeros, the last window's own last 64 samples are zeroed (its
    /// `SileroVADModel.__call__` writes the context's zeros through a numpy
    /// view into the audio), and the windows go through the model in order,
    /// in batches, with the LSTM state carried between them.
    pub fn probs(&self, audio: &[f32]) -> Result<Vec<f32>, SileroError> {
        let n = audio.len() / WINDOW + 1;
        let zeroed_from = n * WINDOW - CONTEXT;
        // The padded, zeroed audio, read in place rather than copied.
        let sample = |i: usize| if i < audio.len() && i < zeroed_from { finite(audio[i]) } else { 0.0 };
        let mut state = State::default();
        let mut probs = Vec::with_capacity(n);
        let mut rows = Vec::with_capacity(BATCH.min(n) * ROW);
        for first in (0..n).step_by(BATCH) {
            rows.clear();
            for w in first..(first + BATCH).min(n) {
                // The first window's context is zeros.
                let from = (w * WINDOW).saturating_sub(CONTEXT);
                rows.extend(std::iter::repeat_n(0.0, from + CONTEXT - w * WINDOW));
                rows.extend((from..(w + 1) * WINDOW).map(sample));
            }
            probs.extend(self.run(&rows, &mut state)?);
        }
        Ok(probs)
    }
}

/// A NaN or infinity would poison the LSTM state for the rest of the audio.
fn finite(x: f32) -> f32 {
    if x.is_finite() {
        x
    } else {
        0.0
    }
}

/// Silero over a live stream: each whole window is scored as it arrives,
/// with the same context and state rule as [`SileroModel::probs`], so the
/// probabilities equal those of the audio scored at once (but for the
/// padded last window, which a stream never has).
pub struct SileroStream {
    model: Arc<SileroModel>,
    state: State,
    /// The last [`CONTEXT`] samples of the last window scored (on the heap:
    /// a stream lives inside a session's state).
    context: Vec<f32>,
    /// Samples of the next, incomplete window.
    pending: Vec<f32>,
}

impl SileroStream {
    pub fn new(model: Arc<SileroModel>) -> Self {
        SileroStream { model, state: State::default(), context: vec![0.0; CONTEXT], pending: Vec::with_capacity(WINDOW) }
    }

    /// Feeds samples; returns the probabilities of the windows they complete.
    /// A model error (which a model that passed its load-time run does not
    /// give) is logged and scores those windows 0: the stream goes on.
    pub fn push(&mut self, samples: &[f32]) -> Vec<f32> {
        self.pending.extend(samples.iter().map(|&x| finite(x)));
        let whole = self.pending.len() / WINDOW;
        if whole == 0 {
            return Vec::new();
        }
        let mut rows = Vec::with_capacity(whole * ROW);
        for w in 0..whole {
            if w == 0 {
                rows.extend_from_slice(&self.context);
            } else {
                rows.extend_from_slice(&self.pending[w * WINDOW - CONTEXT..w * WINDOW]);
            }
            rows.extend_from_slice(&self.pending[w * WINDOW..(w + 1) * WINDOW]);
        }
        self.context.copy_from_slice(&self.pending[whole * WINDOW - CONTEXT..whole * WINDOW]);
        self.pending.drain(..whole * WINDOW);
        self.model.run(&rows, &mut self.state).unwrap_or_else(|e| {
            tracing::error!(error = %e, "Silero VAD failed on a stream; its windows count as silence");
            vec![0.0; whole]
        })
    }
}
