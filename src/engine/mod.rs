//! The speech recogniser: CTranslate2's Whisper driven through its low-level
//! calls (encode, generate, detect_language), with our own features and
//! long-form decoding. All calls block: run them on worker threads, never on
//! the async runtime.

mod decode;
pub mod pack;
pub mod mel;
pub mod tokenizer;
mod words;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ct2::sys::{self as ct2, ComputeType, Device, Whisper};
pub use decode::{step, DecodeOptions, Decoding, Task};
pub use words::Word;
use mel::MelExtractor;
use tokenizer::Tokenizer;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot load the model at {path}: {message}")]
    Load { path: String, message: String },
    #[error("device cuda asked for, but no usable CUDA GPU was found{0}")]
    NoCuda(String),
    #[error("unknown compute type `{0}`")]
    ComputeType(String),
    #[error("inference failed: {0}")]
    Inference(String),
    #[error("{0}")]
    BadOption(String),
}

/// Seed of CTranslate2's random generators (temperature fallback).
const SAMPLING_SEED: u32 = 42;

/// Where and how to run the model.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub cuda: bool,
    /// A CTranslate2 compute type name (int8, float16, ...), already resolved from "auto".
    pub compute_type: String,
    pub threads_per_replica: usize,
    /// Replicas share one copy of the weights per device (the ct2rs fork
    /// loads a device's replicas with `num_replicas_per_device`; repeated
    /// device indices would each get a copy).
    pub num_replicas: usize,
    /// The CUDA device of each replica (see `gpu::placement`); ignored on CPU.
    pub device_indices: Vec<i32>,
}

/// Makes glibc's malloc keep up to `mb` of freed memory for reuse, for the
/// whole process. A process-wide setting, so the CLI makes it once, before
/// the async runtime starts any thread (threads pick their arena at birth);
/// an embedding program calls it itself at start-up. By default glibc serves every block over 32 MB with a
/// fresh mmap and gives heap tops back at once. CTranslate2's encoder
/// allocates and frees its attention scores (54 MB a window for tiny) in
/// every layer, so each window paid ~13k page faults and the unmapping:
/// 40 % of the encoder's time (BENCHMARKS.md). Here big blocks come from the
/// heap and heap tops under `mb` stay mapped. One arena for every thread:
/// measured at concurrency 16, 160 ms of encoder a window against 213 ms
/// with glibc's arena per thread (the HTTP side's small blocks stay in
/// glibc's per-thread caches). The cost: memory the encoder once used stays
/// with the process (bounded by the batch's peak) until
/// [`release_freed_memory`].
pub fn reuse_freed_memory(mb: usize) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if mb > 0 {
        let bytes = i32::try_from(mb.saturating_mul(1 << 20)).unwrap_or(i32::MAX);
        // SAFETY: mallopt only changes allocator parameters; it is
        // thread-safe and these values are within its documented ranges.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
            libc::mallopt(libc::M_MMAP_MAX, 0);
            libc::mallopt(libc::M_TRIM_THRESHOLD, bytes);
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = mb;
}

/// Hands the free pages of the heap back to the OS (glibc's malloc_trim),
/// whatever [`reuse_freed_memory`] asked to keep: for moments when that
/// memory will not be needed soon, such as the model loader's scratch
/// buffers (~110 MB for tiny) once the model is loaded.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages; always safe to call.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// CUDA devices visible to this process (0 without the driver or a GPU;
/// CUDA_VISIBLE_DEVICES applies). `gpu::use_cuda` loads the libraries first.
pub fn cuda_device_count() -> usize {
    std::panic::catch_unwind(|| ct2::get_device_count(Device::CUDA))
        .map(|n| n.max(0) as usize)
        .unwrap_or(0)
}

fn compute_type(name: &str) -> Result<ComputeType, EngineError> {
    Ok(match name {
        "default" => ComputeType::DEFAULT,
        "auto" => ComputeType::AUTO,
        "float32" => ComputeType::FLOAT32,
        "int8" => ComputeType::INT8,
        "int8_float32" => ComputeType::INT8_FLOAT32,
        "int8_float16" => ComputeType::INT8_FLOAT16,
        "int8_bfloat16" => ComputeType::INT8_BFLOAT16,
        "int16" => ComputeType::INT16,
        "float16" => ComputeType::FLOAT16,
        "bfloat16" => ComputeType::BFLOAT16,
        other => return Err(EngineError::ComputeType(other.to_string())),
    })
}

/// One transcribed stretch of audio, as openai-whisper reports it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Segment {
    pub id: usize,
    /// Frame offset (10 ms units) of the 30 s window it was decoded in.
    pub seek: usize,
    pub start: f64,
    pub end: f64,
    pub text: String,
    pub tokens: Vec<u32>,
    pub temperature: f32,
    pub avg_logprob: f32,
    pub compression_ratio: f32,
    pub no_speech_prob: f32,
    /// Word timings, when asked for (`word_timestamps`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub words: Vec<Word>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Transcript {
    pub text: String,
    pub segments: Vec<Segment>,
    pub language: String,
    pub language_probability: f32,
    /// Seconds of audio.
    pub duration: f64,
}

pub struct Engine {
    whisper: Whisper,
    tokenizer: Tokenizer,
    /// The model's tokenizer.json, for encoding prompts (BPE); None when
    /// the folder has none.
    encoder: Option<tokenizers::Tokenizer>,
    mel: MelExtractor,
    multilingual: bool,
    model_path: PathBuf,
    cuda: bool,
    compute_type: String,
    /// The CUDA device of each replica (empty on CPU).
    device_indices: Vec<i32>,
}

impl Engine {
    pub fn load(path: &Path, opts: &EngineOptions) -> Result<Self, EngineError> {
        let load_err = |message: String| EngineError::Load { path: path.display().to_string(), message };
        if opts.cuda && cuda_device_count() == 0 {
            return Err(EngineError::NoCuda(" (no device visible; see docs/gpu.md)".into()));
        }
        let tokenizer = Tokenizer::from_model_dir(path).map_err(|e| load_err(e.to_string()))?;
        let encoder = tokenizers::Tokenizer::from_file(path.join("tokenizer.json")).ok();
        let replicas = opts.num_replicas.max(1);
        let device_indices: Vec<i32> = if opts.cuda { opts.device_indices.clone() } else { vec![0; replicas] };
        let config = ct2::Config {
            device: if opts.cuda { Device::CUDA } else { Device::CPU },
            compute_type: compute_type(&opts.compute_type)?,
            device_indices: device_indices.clone(),
            tensor_parallel: false,
            num_threads_per_replica: opts.threads_per_replica,
            max_queued_batches: 0,
            cpu_core_offset: -1,
        };
        // Temperature fallback samples; a fixed seed makes the same audio
        // give the same text from one run of the server to the next.
        ct2::set_random_seed(SAMPLING_SEED);
        let whisper = Whisper::new(path, config).map_err(|e| load_err(e.to_string()))?;
        let multilingual = whisper.is_multilingual();
        let mel = MelExtractor::new(whisper.n_mels());
        release_freed_memory();
        Ok(Self { whisper, tokenizer, encoder, mel, multilingual, model_path: path.to_path_buf(), cuda: opts.cuda, compute_type: opts.compute_type.clone(), device_indices: if opts.cuda { device_indices.clone() } else { Vec::new() } })
    }

    pub fn is_multilingual(&self) -> bool {
        self.multilingual
    }

    pub fn model_path(&self) -> &Path {
        &self.model_path
    }

    pub fn is_cuda(&self) -> bool {
        self.cuda
    }

    /// The CUDA device replica `replica` runs on (None on CPU).
    pub fn device_of(&self, replica: usize) -> Option<usize> {
        self.device_indices.get(replica).map(|&d| d as usize)
    }

    /// The CUDA devices in use, each once.
    pub fn devices(&self) -> Vec<usize> {
        let mut d: Vec<usize> = self.device_indices.iter().map(|&d| d as usize).collect();
        d.sort_unstable();
        d.dedup();
        d
    }

    /// `cuda` or `cpu`.
    pub fn device(&self) -> &'static str {
        if self.cuda { "cuda" } else { "cpu" }
    }

    /// The CTranslate2 compute type in use (`int8`, `float16`, ...).
    pub fn compute_type(&self) -> &str {
        &self.compute_type
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Token ids of `text`, without special tokens.
    pub fn encode_text(&self, text: &str) -> Result<Vec<u32>, EngineError> {
        let encoder = self
            .encoder
            .as_ref()
            .ok_or_else(|| EngineError::BadOption("this model folder has no tokenizer.json to encode a prompt".into()))?;
        let enc = encoder.encode(text, false).map_err(|e| EngineError::BadOption(format!("cannot encode the prompt: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// The encoder output of a batch of windows. On CPU the windows go
    /// through one at a time (a batch's attention scores fall out of cache:
    /// 282 ms a window for a batch of 4 against 158 ms alone); a GPU takes
    /// the batch at once. The upstream bindings of the source build lack
    /// the one-at-a-time call and encode the batch.
    pub(crate) fn encode_batch(&self, features: &ct2::StorageView) -> Result<ct2::StorageView<'static>, EngineError> {
        #[cfg(feature = "wheel")]
        let encoded = if self.cuda { self.whisper.encode(features, false) } else { self.whisper.encode_each(features, false) };
        #[cfg(not(feature = "wheel"))]
        let encoded = self.whisper.encode(features, false);
        encoded.map_err(|e| EngineError::Inference(e.to_string()))
    }

    /// Window `index` of a CPU batch's encoder output, as a batch of one.
    pub(crate) fn encoded_item(&self, encoded: &ct2::StorageView, index: usize) -> Result<ct2::StorageView<'static>, EngineError> {
        #[cfg(feature = "wheel")]
        return self.whisper.encoded_item(encoded, index).map_err(|e| EngineError::Inference(e.to_string()));
        #[cfg(not(feature = "wheel"))]
        return Err(EngineError::Inference(format!("window {index} of {encoded:?}: not in the source build's bindings")));
    }

    /// Transcribes 16 kHz mono samples of any length, alone.
    pub fn transcribe(&self, audio: Vec<f32>, opts: &DecodeOptions) -> Result<Transcript, EngineError> {
        decode::transcribe(self, audio, opts)
    }
}
