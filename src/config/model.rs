//! The `model`, `deployment`, `engine` and `batching` sections: which model
//! runs where, how many replicas, how the engine computes and how requests
//! are batched; with the names they accept, their defaults and checks.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{bad, one_of, quoted, ConfigError};

/// Model names `model.size` accepts (besides a path to a model folder).
pub const MODEL_SIZES: &[&str] = &[
    "tiny", "tiny.en", "base", "base.en", "small", "small.en", "medium", "medium.en",
    "large-v1", "large-v2", "large-v3", "large", "turbo",
];

/// Device names `model.device` accepts.
pub const DEVICES: &[&str] = &["auto", "cpu", "cuda"];
/// CTranslate2 compute types `engine.compute_type` accepts.
pub const COMPUTE_TYPES: &[&str] = &[
    "auto", "default", "int8", "int8_float16", "int8_float32", "int8_bfloat16", "int16",
    "float16", "bfloat16", "float32",
];
/// Values `deployment.mode` accepts when given.
pub const DEPLOYMENT_MODES: &[&str] = &["local", "cluster"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    Auto,
    Cpu,
    Cuda,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// A model name (tiny, base.en, large-v3, turbo, ...) or a path to a
    /// CTranslate2 model folder.
    pub size: String,
    pub device: DeviceKind,
    pub model_dir: PathBuf,
    /// File extensions accepted by upload name, with the dot (".wav").
    pub supported_formats: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeploymentConfig {
    pub num_replicas: u32,
    pub cpu_per_replica: f64,
    pub gpu_per_replica: f64,
    /// Accepted for compatibility with the original file: "local" runs the
    /// engine in-process (the only mode of `serve`).
    pub mode: Option<String>,
    /// Accepted for compatibility: caps requests in flight (queued + running)
    /// like Ray Serve's setting; `limits.max_queue` applies as well.
    pub max_concurrent_queries: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// auto (int8 on CPU, float16 on CUDA), int8, int8_float16, int8_float32,
    /// int8_bfloat16, int16, float16, bfloat16, float32, default.
    pub compute_type: String,
    /// Threads per replica; 0 = derived from the deployment section.
    pub threads_per_replica: u32,
    /// Freed memory (MB) the C allocator keeps for reuse; 0 = glibc's defaults.
    pub reuse_memory_mb: u32,
    /// Where `whisper-serve cuda pull` puts NVIDIA's libraries and where
    /// the engine looks for them; null = `cuda` beside `model.model_dir`.
    pub cuda_dir: Option<PathBuf>,
}

/// Dynamic batching in each replica: windows of up to `max_batch_size`
/// requests are decoded together; an idle replica waits up to
/// `max_wait_ms` after a first request for others to join.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchingConfig {
    pub max_batch_size: usize,
    pub max_wait_ms: u64,
    /// The same two on a CUDA device: measured separately, as the costs
    /// differ (the engine's decoder step there grows with the batch).
    pub gpu_max_batch_size: usize,
    pub gpu_max_wait_ms: u64,
    /// Short requests waiting at one replica share one 30 s window.
    pub pack_short_clips: bool,
    /// Requests up to this long are packed.
    pub pack_max_seconds: f64,
    /// Silence between packed requests.
    pub pack_gap_ms: u64,
}

impl Default for BatchingConfig {
    fn default() -> Self {
        Self { max_batch_size: 4, max_wait_ms: 10, gpu_max_batch_size: 4, gpu_max_wait_ms: 20,
            pack_short_clips: false, pack_max_seconds: 12.0, pack_gap_ms: 2000 }
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            size: "base".into(),
            device: DeviceKind::Auto,
            model_dir: PathBuf::from("models"),
            supported_formats: [".wav", ".mp3", ".m4a", ".ogg", ".flac", ".webm", ".opus"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }
}

impl Default for DeploymentConfig {
    fn default() -> Self {
        Self {
            // Measured on 2 cores (BENCHMARKS.md): two single-threaded
            // replicas, each batching, clear the most audio per second.
            num_replicas: 2,
            cpu_per_replica: 1.0,
            gpu_per_replica: 0.0,
            mode: None,
            max_concurrent_queries: None,
        }
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self { compute_type: "auto".into(), threads_per_replica: 0, reuse_memory_mb: 256, cuda_dir: None }
    }
}

impl ModelConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let size = self.size.as_str();
        let looks_like_path =
            size.contains('/') || size.contains('\\') || size.starts_with('.') || size.starts_with('~');
        if !MODEL_SIZES.contains(&size) && !looks_like_path {
            return bad(
                "model.size",
                &quoted(size),
                &format!("one of {}, or a path to a model folder", one_of(MODEL_SIZES)),
            );
        }
        // model.device: the DeviceKind enum already restricts it to DEVICES.
        if self.supported_formats.is_empty() {
            return bad("model.supported_formats", &"[]", "at least one extension such as \".wav\"");
        }
        for f in &self.supported_formats {
            let ok = f.strip_prefix('.').is_some_and(|rest| {
                !rest.is_empty() && rest.chars().all(|c| c.is_ascii_alphanumeric())
            });
            if !ok {
                return bad(
                    "model.supported_formats",
                    &quoted(f),
                    "an extension with its dot, such as \".wav\"",
                );
            }
        }
        Ok(())
    }
}

impl DeploymentConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let d = self;
        if d.num_replicas < 1 {
            return bad("deployment.num_replicas", &d.num_replicas, "1 or more");
        }
        if !(d.cpu_per_replica.is_finite() && d.cpu_per_replica > 0.0) {
            return bad("deployment.cpu_per_replica", &d.cpu_per_replica, "a number > 0");
        }
        if !(d.gpu_per_replica.is_finite() && d.gpu_per_replica >= 0.0) {
            return bad("deployment.gpu_per_replica", &d.gpu_per_replica, "a number >= 0");
        }
        if let Some(mode) = &d.mode {
            if !DEPLOYMENT_MODES.contains(&mode.as_str()) {
                return bad("deployment.mode", &quoted(mode), &one_of(DEPLOYMENT_MODES));
            }
        }
        if d.max_concurrent_queries == Some(0) {
            return bad("deployment.max_concurrent_queries", &0, "1 or more, or null");
        }
        Ok(())
    }
}

impl EngineConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !COMPUTE_TYPES.contains(&self.compute_type.as_str()) {
            return bad("engine.compute_type", &quoted(&self.compute_type), &one_of(COMPUTE_TYPES));
        }
        Ok(())
    }
}

impl BatchingConfig {
    /// The CPU batch size, checked before the cluster, jobs, telemetry,
    /// auth and rate-limit sections.
    pub(super) fn validate_basic(&self) -> Result<(), ConfigError> {
        if !(1..=64).contains(&self.max_batch_size) {
            return bad("batching.max_batch_size", &self.max_batch_size, "1-64");
        }
        Ok(())
    }

    /// The rest, checked after the server's connection limits (see
    /// [`super::Config::validate`] for the order).
    pub(super) fn validate_rest(&self) -> Result<(), ConfigError> {
        if !(1..=256).contains(&self.gpu_max_batch_size) {
            return bad("batching.gpu_max_batch_size", &self.gpu_max_batch_size, "1-256");
        }
        let p = self.pack_max_seconds;
        if !(p.is_finite() && p > 0.0 && p <= 29.0) {
            return bad("batching.pack_max_seconds", &p, "a number in (0, 29]");
        }
        if self.pack_gap_ms > 10_000 {
            return bad("batching.pack_gap_ms", &self.pack_gap_ms, "0-10000");
        }
        if self.gpu_max_wait_ms > 10_000 {
            return bad("batching.gpu_max_wait_ms", &self.gpu_max_wait_ms, "0-10000");
        }
        if self.max_wait_ms > 10_000 {
            return bad("batching.max_wait_ms", &self.max_wait_ms, "0-10000");
        }
        Ok(())
    }
}
