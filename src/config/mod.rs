//! The service's configuration: the original `config.json` schema (sections
//! `server`, `model`, `deployment`, `logging`) plus new sections with
//! compiled-in defaults, so an unchanged original file keeps working.
//!
//! Layers, later wins: defaults < file < `WHISPER_SERVE__<SECTION>__<KEY>`
//! environment variables < command-line flags (host, port).
//!
//! The file is found by [`Config::load`]: an explicit path (`--config`), else
//! `$WHISPER_SERVE_CONFIG`, else `./config.json` if it exists, else the
//! built-in defaults alone. The layers are merged as JSON values and then
//! deserialised once, so a type error names its key path
//! (`config.json: server.port: invalid type: string "x", expected u16`);
//! [`Config::validate`] then checks the values. See `docs/configuration.md`.

use std::path::{Path, PathBuf};

mod cluster;
mod layers;
mod limits;
mod logging;
mod model;
mod models;
mod realtime;
mod security;
mod server;
mod telemetry;
mod vad;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

pub use cluster::{ClusterConfig, JobsConfig, StorageKind};
pub use limits::LimitsConfig;
pub use logging::{LoggingConfig, LOG_LEVELS};
pub use model::{
    BatchingConfig, DeploymentConfig, DeviceKind, EngineConfig, ModelConfig, COMPUTE_TYPES, DEPLOYMENT_MODES,
    DEVICES, MODEL_SIZES,
};
pub use models::ModelsConfig;
pub use realtime::RealtimeConfig;
pub use security::{check_entry, ApiKeyEntry, AuthConfig, KeyRole, RateLimitConfig};
pub use server::ServerConfig;
pub use telemetry::TelemetryConfig;
pub use vad::{VadConfig, VadEngine};

use crate::engine::DecodeOptions;
use layers::{check_known_keys, env_layer, env_pairs, merge, precheck, Origins};
use serde_json::Value;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub model: ModelConfig,
    pub deployment: DeploymentConfig,
    pub logging: LoggingConfig,
    pub limits: LimitsConfig,
    pub engine: EngineConfig,
    /// Server-wide decoding defaults (openai-whisper's `transcribe`
    /// options), which requests may override within `limits.max_*`.
    pub decoding: DecodeOptions,
    pub batching: BatchingConfig,
    /// Gateway and workers over NATS JetStream (`gateway`, `worker`).
    pub cluster: ClusterConfig,
    /// Asynchronous jobs (`/v1/jobs`), in both modes.
    pub jobs: JobsConfig,
    /// API keys.
    pub auth: AuthConfig,
    /// Request rates and audio quotas per key.
    pub rate_limit: RateLimitConfig,
    /// OpenTelemetry traces (metrics need no settings).
    pub telemetry: TelemetryConfig,
    /// Live transcription sessions (`GET /v1/realtime`).
    pub realtime: RealtimeConfig,
    /// Models besides `model.size`, loaded on demand.
    pub models: ModelsConfig,
    /// Voice activity detection (`vad_filter`, realtime turns).
    pub vad: VadConfig,
}

/// Environment variable naming the config file when no explicit path is given.
pub const CONFIG_PATH_ENV: &str = "WHISPER_SERVE_CONFIG";
/// Prefix of the per-key overrides: `WHISPER_SERVE__<SECTION>__<KEY>`.
pub const ENV_PREFIX: &str = "WHISPER_SERVE__";
/// Label used for the origin of a value when the file has no path
/// ([`Config::from_sources`]).
const FILE_LABEL: &str = "config file";
/// Label of values that come from [`Config::validate`] on a bare `Config`.
const BARE_LABEL: &str = "config";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A path given explicitly (`--config`) or by `$WHISPER_SERVE_CONFIG`
    /// does not exist.
    #[error("config file {} (from {via}) does not exist", .path.display())]
    NotFound { path: PathBuf, via: String },
    /// Invalid JSON, a value of the wrong type, or an unknown key. `origin`
    /// is the file (or environment variable) the value came from; `key` the
    /// dotted key path (empty for a JSON syntax error).
    #[error("{origin}: {}{message}", key_prefix(.key))]
    Parse { origin: String, key: String, message: String },
    /// A value of the right type but out of range.
    #[error("{origin}: {key}: {reason}")]
    Invalid { origin: String, key: String, reason: String },
    /// A `WHISPER_SERVE__...` variable that names no section/key.
    #[error("environment variable {var}: {reason}")]
    UnknownEnvVar { var: String, reason: String },
}

fn key_prefix(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!("{key}: ")
    }
}

impl ConfigError {
    /// The dotted key path the error is about, if any.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Parse { key, .. } | ConfigError::Invalid { key, .. } if !key.is_empty() => {
                Some(key)
            }
            _ => None,
        }
    }

    fn invalid(key: &str, reason: impl Into<String>) -> Self {
        ConfigError::Invalid { origin: BARE_LABEL.into(), key: key.into(), reason: reason.into() }
    }

    /// Replaces the placeholder origin of a validation error with the layer
    /// the offending value came from.
    fn with_origin(self, origins: &Origins) -> Self {
        match self {
            ConfigError::Invalid { key, reason, .. } => {
                ConfigError::Invalid { origin: origins.lookup(&key), key, reason }
            }
            other => other,
        }
    }
}

/// A value out of range: `key: invalid value V (expected E)`.
fn bad(key: &str, value: &dyn std::fmt::Display, expected: &str) -> Result<(), ConfigError> {
    Err(ConfigError::invalid(key, format!("invalid value {value} (expected {expected})")))
}

fn one_of(list: &[&str]) -> String {
    list.join(", ")
}

/// A string value as an error message shows it: `"huge"`.
fn quoted(s: &str) -> String {
    format!("{s:?}")
}

impl Config {
    /// Loads the configuration.
    ///
    /// The file is `explicit` if given, else `$WHISPER_SERVE_CONFIG` if set
    /// (and non-empty), else `./config.json` if it exists, else none (built-in
    /// defaults). An explicit or environment-given path that does not exist
    /// is an error. Environment overrides (`WHISPER_SERVE__<SECTION>__<KEY>`)
    /// are applied over the file, then the result is validated.
    ///
    /// Returns the config and the path of the file used, if any. Relative
    /// paths inside the config (`model.model_dir`, `logging.file`) are left
    /// relative to the working directory, as the original service did.
    pub fn load(explicit: Option<&Path>) -> Result<(Config, Option<PathBuf>), ConfigError> {
        let env_path = std::env::var_os(CONFIG_PATH_ENV).filter(|v| !v.is_empty());
        let (path, via) = match (explicit, env_path) {
            (Some(p), _) => (Some(p.to_path_buf()), Some("the command line")),
            (None, Some(p)) => (Some(PathBuf::from(p)), Some(CONFIG_PATH_ENV)),
            (None, None) => {
                let p = PathBuf::from("config.json");
                (p.is_file().then_some(p), None)
            }
        };
        let text = match &path {
            None => None,
            Some(p) => match std::fs::read_to_string(p) {
                Ok(t) => Some(t),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(ConfigError::NotFound {
                        path: p.clone(),
                        via: via.unwrap_or("the default location").into(),
                    })
                }
                Err(e) => return Err(ConfigError::Io { path: p.clone(), source: e }),
            },
        };
        let label = path.as_ref().map(|p| p.display().to_string());
        let file = match (&label, &text) {
            (Some(l), Some(t)) => Some((l.as_str(), t.as_str())),
            _ => None,
        };
        let cfg = Self::build(file, env_pairs())?;
        Ok((cfg, path))
    }

    /// Builds a validated config from the text of a config file (if any) and
    /// environment pairs (only `WHISPER_SERVE__*` ones are looked at), without
    /// touching the process environment or file system. Errors about the
    /// file's values are labelled "config file".
    pub fn from_sources(
        file_json: Option<&str>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        Self::build(file_json.map(|t| (FILE_LABEL, t)), env)
    }

    fn build(
        file: Option<(&str, &str)>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let defaults = serde_json::to_value(Config::default()).map_err(|e| ConfigError::Parse {
            origin: "defaults".into(),
            key: String::new(),
            message: e.to_string(),
        })?;
        let mut merged = defaults.clone();
        let mut origins = Origins::default();

        if let Some((label, text)) = file {
            let v: Value = serde_json::from_str(text).map_err(|e| ConfigError::Parse {
                origin: label.into(),
                key: String::new(),
                message: format!("invalid JSON: {e}"),
            })?;
            if !v.is_object() {
                return Err(ConfigError::Parse {
                    origin: label.into(),
                    key: String::new(),
                    message: "expected a JSON object at the top level".into(),
                });
            }
            merge(&mut merged, v, "", label, &mut origins);
        }
        for (var, layer) in env_layer(env, &defaults)? {
            merge(&mut merged, layer, "", &format!("env {var}"), &mut origins);
        }

        check_known_keys(&merged, &defaults, &origins)?;
        precheck(&merged, &origins)?;
        let cfg: Config = serde_path_to_error::deserialize(merged).map_err(|e| {
            let key = e.path().to_string();
            let key = if key == "." { String::new() } else { key };
            ConfigError::Parse { origin: origins.lookup(&key), message: e.into_inner().to_string(), key }
        })?;
        cfg.validate().map_err(|e| e.with_origin(&origins))?;
        Ok(cfg)
    }

    /// Checks every value's range. The first problem found is returned,
    /// naming its key path (`server.port: invalid value ...`).
    ///
    /// The sections are checked in a fixed order, some in two or three
    /// steps, so that a config with several faults always reports the same
    /// first one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate_host()?;
        self.model.validate()?;
        self.deployment.validate()?;
        self.logging.validate()?;
        self.limits.validate()?;
        self.engine.validate()?;
        self.batching.validate_basic()?;
        self.cluster.validate()?;
        self.jobs.validate()?;
        self.telemetry.validate()?;
        self.realtime.validate()?;
        self.models.validate()?;
        self.vad.validate()?;
        self.auth.validate()?;
        self.server.check_wyoming_keys(self.auth.keys_in_use())?;
        self.rate_limit.validate()?;
        self.server.validate_connections()?;
        self.limits.validate_field_bytes()?;
        self.server.validate_shutdown()?;
        self.batching.validate_rest()?;
        self.limits.validate_decoding(&self.decoding)
    }

    /// CTranslate2 threads (`intra_threads`) for each engine replica.
    ///
    /// 1. `engine.threads_per_replica` > 0 wins as is.
    /// 2. The CPU budget is `server.num_cpus` if > 0, else `machine_cores`.
    /// 3. `server.dedicated_cpu = true`: the replicas split the budget,
    ///    `max(1, budget / num_replicas)`.
    /// 4. Otherwise each replica gets `max(1, round(cpu_per_replica))`, capped
    ///    so that `num_replicas × threads ≤ max(budget, num_replicas)`: a
    ///    fractional Ray request such as 0.5 CPU becomes 1 thread, and
    ///    replicas that do not fit the budget share cores (one thread each
    ///    at worst) instead of oversubscribing it further.
    ///
    /// Example: 8 cores, 3 replicas × 2 CPU → 2 threads each; 4 replicas ×
    /// 4 CPU → 2 threads each; 4 replicas × 0.5 CPU → 1 thread each.
    pub fn threads_per_replica(&self, machine_cores: usize) -> usize {
        if self.engine.threads_per_replica > 0 {
            return self.engine.threads_per_replica as usize;
        }
        let replicas = (self.deployment.num_replicas as usize).max(1);
        let budget = if self.server.num_cpus > 0 {
            self.server.num_cpus as usize
        } else {
            machine_cores.max(1)
        };
        if self.server.dedicated_cpu {
            return (budget / replicas).max(1);
        }
        let rounded = self.deployment.cpu_per_replica.round();
        let wanted = if rounded.is_finite() && rounded >= 1.0 {
            // Saturating float→int conversion; any real budget caps it below.
            rounded as usize
        } else {
            1
        };
        let cap = (budget.max(replicas) / replicas).max(1);
        wanted.min(cap)
    }

    /// Where NVIDIA's libraries are pulled to and looked for: `engine.cuda_dir`,
    /// else `cuda` beside `model.model_dir`.
    pub fn cuda_dir(&self) -> PathBuf {
        if let Some(d) = &self.engine.cuda_dir {
            return d.clone();
        }
        let models = &self.model.model_dir;
        match models.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.join("cuda"),
            _ => PathBuf::from("cuda"),
        }
    }

    /// Batching for the device the engine runs on.
    pub fn batch_limits(&self, cuda: bool) -> (usize, u64) {
        let b = &self.batching;
        if cuda { (b.gpu_max_batch_size, b.gpu_max_wait_ms) } else { (b.max_batch_size, b.max_wait_ms) }
    }

    /// `engine.compute_type` with "auto" resolved: "int8" on CPU, "float16"
    /// on CUDA. Other values are returned unchanged.
    pub fn resolved_compute_type(&self, cuda: bool) -> &str {
        match self.engine.compute_type.as_str() {
            "auto" if cuda => "float16",
            "auto" => "int8",
            other => other,
        }
    }
}
