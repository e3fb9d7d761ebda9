//! The service's configuration: the original `config.json` schema (sections
//! `server`, `model`, `deployment`, `logging`) plus new sections with
//! compiled-in defaults, so an unchanged original file keeps working.
//!
//! Layers, later wins: defaults < file < `WHISPER_SERVE__<SECTION>__<KEY>`
//! environment variables < command-line flags (host, port).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Model names `model.size` accepts (besides a path to a model folder).
pub const MODEL_SIZES: &[&str] = &[
    "tiny", "tiny.en", "base", "base.en", "small", "small.en", "medium", "medium.en",
    "large-v1", "large-v2", "large-v3", "large", "turbo",
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub model: ModelConfig,
    pub deployment: DeploymentConfig,
    pub logging: LoggingConfig,
    pub limits: LimitsConfig,
    pub engine: EngineConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    /// true: the replicas share all `num_cpus` between them (threads per
    /// replica = num_cpus / num_replicas); false: each gets `cpu_per_replica`.
    pub dedicated_cpu: bool,
    /// CPU cores the service may use; 0 = every core of the machine.
    pub num_cpus: u32,
}

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
pub struct LoggingConfig {
    /// DEBUG, INFO, WARNING, ERROR, CRITICAL (Python's names; case-insensitive).
    pub level: String,
    /// Python `logging` format string; see README for how it maps.
    pub format: String,
    /// Log file, written in addition to the console; empty/null = none.
    pub file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub max_upload_mb: u64,
    pub max_audio_seconds: f64,
    /// Jobs waiting for an engine replica; a full queue answers 503.
    pub max_queue: usize,
    pub request_timeout_s: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// auto (int8 on CPU, float16 on CUDA), int8, int8_float16, int8_float32,
    /// int8_bfloat16, int16, float16, bfloat16, float32, default.
    pub compute_type: String,
    /// Threads per replica; 0 = derived from the deployment section.
    pub threads_per_replica: u32,
    pub beam_size: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerConfig::default(),
            model: ModelConfig::default(),
            deployment: DeploymentConfig::default(),
            logging: LoggingConfig::default(),
            limits: LimitsConfig::default(),
            engine: EngineConfig::default(),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self { host: "0.0.0.0".into(), port: 8000, dedicated_cpu: false, num_cpus: 0 }
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            size: "base".into(),
            device: DeviceKind::Auto,
            model_dir: PathBuf::from("models"),
            supported_formats: [".wav", ".mp3", ".m4a", ".ogg", ".flac"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }
}

impl Default for DeploymentConfig {
    fn default() -> Self {
        Self {
            num_replicas: 1,
            cpu_per_replica: 2.0,
            gpu_per_replica: 0.0,
            mode: None,
            max_concurrent_queries: None,
        }
    }
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            level: "INFO".into(),
            format: "%(asctime)s - %(name)s - %(levelname)s - %(message)s".into(),
            file: None,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self { max_upload_mb: 100, max_audio_seconds: 14400.0, max_queue: 256, request_timeout_s: 600 }
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self { compute_type: "auto".into(), threads_per_replica: 0, beam_size: 5 }
    }
}
