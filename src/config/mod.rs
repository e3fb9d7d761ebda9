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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod cluster;
mod security;
mod telemetry;

use serde::{Deserialize, Serialize};

pub use cluster::{ClusterConfig, JobsConfig, StorageKind};
pub use security::{check_entry, ApiKeyEntry, AuthConfig, RateLimitConfig};
pub use telemetry::TelemetryConfig;

use crate::engine::DecodeOptions;
use serde_json::{Map, Value};

/// Model names `model.size` accepts (besides a path to a model folder).
pub const MODEL_SIZES: &[&str] = &[
    "tiny", "tiny.en", "base", "base.en", "small", "small.en", "medium", "medium.en",
    "large-v1", "large-v2", "large-v3", "large", "turbo",
];

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
    /// On SIGTERM/SIGINT: seconds to finish in-flight and queued work
    /// before exiting.
    pub shutdown_timeout_s: u64,
    /// PEM certificate chain and private key: serve HTTPS (reloaded on SIGHUP).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Origins allowed by CORS (`*` for any); empty = no CORS headers.
    pub cors_origins: Vec<String>,
    /// Seconds a client has to send a request's headers (and the TLS
    /// handshake); also how long an idle keep-alive connection stays open.
    pub header_timeout_s: u64,
    /// Seconds a client has to send a request's body; 0 = 30 s plus 10 s
    /// per MB of `limits.max_upload_mb`.
    pub body_timeout_s: u64,
    /// Open connections at most; more wait to be accepted.
    pub max_connections: usize,
    /// Serve the pages (`/`, `/dashboard`) and the API reference (`/docs`,
    /// `/openapi.json`); off for an API-only deployment.
    pub web_ui: bool,
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
    /// Python `logging` format string, or `json` for JSON lines; see
    /// `docs/configuration.md` and [`crate::telemetry::logging`] for how it maps.
    pub format: String,
    /// Log file, written in addition to the console; empty/null = none.
    pub file: Option<PathBuf>,
    /// `"size"` (rotate at `max_bytes`) or `"daily"` (a new file each UTC day).
    pub rotation: String,
    /// Size rotation: rotate before the file would reach this many bytes;
    /// 0 = never by size. Python's `RotatingFileHandler(maxBytes=...)`.
    pub max_bytes: u64,
    /// Rotated files kept (`<file>.1` newest … `<file>.N`); 0 = no rotation.
    pub backup_count: u32,
    /// Whether transcript text may appear in logs (the access line's `text`).
    pub log_transcripts: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub max_upload_mb: u64,
    pub max_audio_seconds: f64,
    /// Jobs waiting for an engine replica; a full queue answers 503.
    pub max_queue: usize,
    pub request_timeout_s: u64,
    /// The largest `beam_size` and `best_of` a request may ask.
    pub max_beam_size: usize,
    pub max_best_of: usize,
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

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: "0.0.0.0".into(),
            port: 8000,
            dedicated_cpu: false,
            num_cpus: 0,
            shutdown_timeout_s: 30,
            tls_cert: None,
            tls_key: None,
            cors_origins: Vec::new(),
            header_timeout_s: 10,
            body_timeout_s: 0,
            max_connections: 1024,
            web_ui: true,
        }
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

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            level: "INFO".into(),
            format: "%(asctime)s - %(name)s - %(levelname)s - %(message)s".into(),
            file: None,
            rotation: "size".into(),
            max_bytes: 10 * 1024 * 1024,
            backup_count: 5,
            log_transcripts: false,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_upload_mb: 100,
            max_audio_seconds: 14400.0,
            max_queue: 256,
            request_timeout_s: 600,
            max_beam_size: 10,
            max_best_of: 10,
        }
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self { compute_type: "auto".into(), threads_per_replica: 0, reuse_memory_mb: 256, cuda_dir: None }
    }
}


/// Environment variable naming the config file when no explicit path is given.
pub const CONFIG_PATH_ENV: &str = "WHISPER_SERVE_CONFIG";
/// Prefix of the per-key overrides: `WHISPER_SERVE__<SECTION>__<KEY>`.
pub const ENV_PREFIX: &str = "WHISPER_SERVE__";
/// Device names `model.device` accepts.
pub const DEVICES: &[&str] = &["auto", "cpu", "cuda"];
/// Python `logging` level names `logging.level` accepts (case-insensitive).
pub const LOG_LEVELS: &[&str] = &["DEBUG", "INFO", "WARNING", "WARN", "ERROR", "CRITICAL"];
/// CTranslate2 compute types `engine.compute_type` accepts.
pub const COMPUTE_TYPES: &[&str] = &[
    "auto", "default", "int8", "int8_float16", "int8_float32", "int8_bfloat16", "int16",
    "float16", "bfloat16", "float32",
];
/// Values `deployment.mode` accepts when given.
pub const DEPLOYMENT_MODES: &[&str] = &["local", "cluster"];

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

/// Which layer (file path or environment variable) set each key path.
#[derive(Debug, Default)]
struct Origins(BTreeMap<String, String>);

impl Origins {
    /// Origin of `key` or of the closest enclosing path that has one
    /// (`model.supported_formats[2]` → `model.supported_formats` → `model`).
    fn lookup(&self, key: &str) -> String {
        let mut k = key;
        loop {
            if let Some(o) = self.0.get(k) {
                return o.clone();
            }
            match k.rfind(['.', '[']) {
                Some(i) => k = &k[..i],
                None => return "defaults".into(),
            }
        }
    }
}

/// Recursively merges `over` into `base`: objects key by key, anything else
/// (numbers, strings, arrays, null) replaced whole. Records `origin` for
/// every replaced path.
fn merge(base: &mut Value, over: Value, path: &str, origin: &str, origins: &mut Origins) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v, &p, origin, origins),
                    None => {
                        origins.0.insert(p, origin.to_string());
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => {
            origins.0.insert(path.to_string(), origin.to_string());
            *slot = v;
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

/// Rejects sections and keys the defaults do not have, naming them
/// (`model.sise`), with the origin of the offending key.
fn check_known_keys(merged: &Value, defaults: &Value, origins: &Origins) -> Result<(), ConfigError> {
    let (Some(m), Some(d)) = (merged.as_object(), defaults.as_object()) else {
        return Ok(());
    };
    for (section, body) in m {
        let Some(dsec) = d.get(section).and_then(Value::as_object) else {
            let known: Vec<&str> = d.keys().map(String::as_str).collect();
            return Err(ConfigError::Parse {
                origin: origins.lookup(section),
                key: section.clone(),
                message: format!("unknown section (expected one of: {})", one_of(&known)),
            });
        };
        if let Some(obj) = body.as_object() {
            for key in obj.keys() {
                if !dsec.contains_key(key) {
                    let path = format!("{section}.{key}");
                    let known: Vec<&str> = dsec.keys().map(String::as_str).collect();
                    return Err(ConfigError::Parse {
                        origin: origins.lookup(&path),
                        message: format!("unknown key (expected one of: {})", one_of(&known)),
                        key: path,
                    });
                }
            }
        }
    }
    Ok(())
}

/// Turns `WHISPER_SERVE__<SECTION>__<KEY>=value` pairs into a JSON object
/// `{section: {key: value}}`, with origins. Other variables are ignored.
fn env_layer(
    env: impl IntoIterator<Item = (String, String)>,
    defaults: &Value,
) -> Result<Vec<(String, Value)>, ConfigError> {
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| {
            k.len() >= ENV_PREFIX.len()
                && k.is_char_boundary(ENV_PREFIX.len())
                && k[..ENV_PREFIX.len()].eq_ignore_ascii_case(ENV_PREFIX)
        })
        .collect();
    // Deterministic order when the same key is given twice in different case.
    vars.sort();
    let sections = defaults.as_object();
    let mut out = Vec::new();
    for (var, raw) in vars {
        let rest = &var[ENV_PREFIX.len()..];
        let parts: Vec<&str> = rest.split("__").collect();
        let [section, key] = parts[..] else {
            return Err(ConfigError::UnknownEnvVar {
                reason: format!("expected {ENV_PREFIX}<SECTION>__<KEY>, e.g. {ENV_PREFIX}SERVER__PORT"),
                var,
            });
        };
        let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
        let Some(dsec) = sections.and_then(|s| s.get(&section)).and_then(Value::as_object) else {
            let known: Vec<String> =
                sections.map(|s| s.keys().map(|k| k.to_ascii_uppercase()).collect()).unwrap_or_default();
            return Err(ConfigError::UnknownEnvVar {
                reason: format!("unknown section `{section}` (expected one of: {})", known.join(", ")),
                var,
            });
        };
        let Some(default) = dsec.get(&key) else {
            let known: Vec<String> = dsec.keys().map(|k| k.to_ascii_uppercase()).collect();
            return Err(ConfigError::UnknownEnvVar {
                reason: format!(
                    "unknown key `{section}.{key}` (expected one of: {})",
                    known.join(", ")
                ),
                var,
            });
        };
        let value = env_value(&raw, default);
        let mut sec = Map::new();
        sec.insert(key, value);
        let mut top = Map::new();
        top.insert(section, Value::Object(sec));
        out.push((var, Value::Object(top)));
    }
    Ok(out)
}

/// The value of an override: JSON if it parses, else the raw string. For
/// keys whose default is a string the raw text is kept unless it is a
/// quoted JSON string, so `WHISPER_SERVE__MODEL__SIZE=1` stays "1".
fn env_value(raw: &str, default: &Value) -> Value {
    let parsed = serde_json::from_str::<Value>(raw.trim());
    match (default, parsed) {
        (Value::String(_), Ok(Value::String(s))) => Value::String(s),
        (Value::String(_), _) => Value::String(raw.to_string()),
        (_, Ok(v)) => v,
        (_, Err(_)) => Value::String(raw.to_string()),
    }
}

/// Checks numbers that would otherwise fail deserialisation with a less
/// helpful message (the port is a `u16`).
fn precheck(merged: &Value, origins: &Origins) -> Result<(), ConfigError> {
    if let Some(port) = merged.pointer("/server/port") {
        let ok = port.as_u64().is_some_and(|p| p <= u16::MAX as u64);
        if port.is_number() && !ok {
            return Err(ConfigError::Invalid {
                origin: origins.lookup("server.port"),
                key: "server.port".into(),
                reason: format!("invalid value {port} (expected 0-65535)"),
            });
        }
    }
    Ok(())
}

fn env_pairs() -> Vec<(String, String)> {
    std::env::vars_os()
        .map(|(k, v)| (k.to_string_lossy().into_owned(), v.to_string_lossy().into_owned()))
        .collect()
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
    pub fn validate(&self) -> Result<(), ConfigError> {
        let quoted = |s: &str| format!("{s:?}");

        // server
        if self.server.host.trim().is_empty() {
            return bad("server.host", &quoted(&self.server.host), "a host name or IP address");
        }
        // port: u16 already; 0 means "any free port".

        // model
        let size = self.model.size.as_str();
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
        if self.model.supported_formats.is_empty() {
            return bad("model.supported_formats", &"[]", "at least one extension such as \".wav\"");
        }
        for f in &self.model.supported_formats {
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

        // deployment
        let d = &self.deployment;
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

        // logging
        if !LOG_LEVELS.iter().any(|l| l.eq_ignore_ascii_case(&self.logging.level)) {
            return bad("logging.level", &quoted(&self.logging.level), &one_of(LOG_LEVELS));
        }
        if !LoggingConfig::ROTATIONS.iter().any(|r| r.eq_ignore_ascii_case(self.logging.rotation.trim())) {
            return bad("logging.rotation", &quoted(&self.logging.rotation), &one_of(LoggingConfig::ROTATIONS));
        }

        // limits
        let l = &self.limits;
        if l.max_upload_mb == 0 {
            return bad("limits.max_upload_mb", &0, "a number > 0");
        }
        if !(l.max_audio_seconds.is_finite() && l.max_audio_seconds > 0.0) {
            return bad("limits.max_audio_seconds", &l.max_audio_seconds, "a number > 0");
        }
        if l.max_queue == 0 {
            return bad("limits.max_queue", &0, "a number > 0");
        }
        if l.request_timeout_s == 0 {
            return bad("limits.request_timeout_s", &0, "a number > 0");
        }

        // engine
        let e = &self.engine;
        if !COMPUTE_TYPES.contains(&e.compute_type.as_str()) {
            return bad("engine.compute_type", &quoted(&e.compute_type), &one_of(COMPUTE_TYPES));
        }

        // batching
        if !(1..=64).contains(&self.batching.max_batch_size) {
            return bad("batching.max_batch_size", &self.batching.max_batch_size, "1-64");
        }
        self.cluster.validate()?;
        self.jobs.validate()?;
        self.telemetry.validate()?;
        self.auth.validate()?;
        self.rate_limit.validate()?;
        if self.server.tls_cert.is_some() != self.server.tls_key.is_some() {
            return bad("server.tls_key", &"(one of tls_cert/tls_key)", "both server.tls_cert and server.tls_key, or neither");
        }
        if self.server.header_timeout_s == 0 {
            return bad("server.header_timeout_s", &0, "a number > 0");
        }
        if self.server.max_connections == 0 {
            return bad("server.max_connections", &0, "a number > 0");
        }
        if self.server.shutdown_timeout_s > 3600 {
            return bad("server.shutdown_timeout_s", &self.server.shutdown_timeout_s, "0-3600");
        }
        if !(1..=256).contains(&self.batching.gpu_max_batch_size) {
            return bad("batching.gpu_max_batch_size", &self.batching.gpu_max_batch_size, "1-256");
        }
        let p = self.batching.pack_max_seconds;
        if !(p.is_finite() && p > 0.0 && p <= 29.0) {
            return bad("batching.pack_max_seconds", &p, "a number in (0, 29]");
        }
        if self.batching.pack_gap_ms > 10_000 {
            return bad("batching.pack_gap_ms", &self.batching.pack_gap_ms, "0-10000");
        }
        if self.batching.gpu_max_wait_ms > 10_000 {
            return bad("batching.gpu_max_wait_ms", &self.batching.gpu_max_wait_ms, "0-10000");
        }
        if self.batching.max_wait_ms > 10_000 {
            return bad("batching.max_wait_ms", &self.batching.max_wait_ms, "0-10000");
        }

        // decoding
        let (dc, bounds) = (&self.decoding, &self.limits);
        if !(1..=16).contains(&bounds.max_beam_size) {
            return bad("limits.max_beam_size", &bounds.max_beam_size, "1-16");
        }
        if !(1..=16).contains(&bounds.max_best_of) {
            return bad("limits.max_best_of", &bounds.max_best_of, "1-16");
        }
        if !(1..=bounds.max_beam_size).contains(&dc.beam_size) {
            return bad("decoding.beam_size", &dc.beam_size, &format!("1-{} (limits.max_beam_size)", bounds.max_beam_size));
        }
        if !(1..=bounds.max_best_of).contains(&dc.best_of) {
            return bad("decoding.best_of", &dc.best_of, &format!("1-{} (limits.max_best_of)", bounds.max_best_of));
        }
        if dc.temperatures.is_empty() || dc.temperatures.iter().any(|t| !(t.is_finite() && (0.0..=2.0).contains(t))) {
            return bad("decoding.temperatures", &format!("{:?}", dc.temperatures), "a non-empty list of numbers in 0-2");
        }
        if !(dc.patience.is_finite() && dc.patience > 0.0) {
            return bad("decoding.patience", &dc.patience, "a number > 0");
        }
        if !dc.length_penalty.is_finite() {
            return bad("decoding.length_penalty", &dc.length_penalty, "a number");
        }
        if !(dc.max_initial_timestamp.is_finite() && dc.max_initial_timestamp >= 0.0) {
            return bad("decoding.max_initial_timestamp", &dc.max_initial_timestamp, "a number >= 0");
        }
        Ok(())
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

    /// `engine.compute_type` with "auto" resolved: "int8" on CPU, "float16"
    /// on CUDA. Other values are returned unchanged.
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

    pub fn resolved_compute_type(&self, cuda: bool) -> &str {
        match self.engine.compute_type.as_str() {
            "auto" if cuda => "float16",
            "auto" => "int8",
            other => other,
        }
    }
}

impl ServerConfig {
    /// How long a request's body may take to arrive.
    pub fn body_timeout(&self, max_upload_mb: u64) -> std::time::Duration {
        let s = if self.body_timeout_s > 0 { self.body_timeout_s } else { 30 + 10 * max_upload_mb };
        std::time::Duration::from_secs(s)
    }
}

impl LoggingConfig {
    /// Values `logging.rotation` accepts (case-insensitive).
    pub const ROTATIONS: &'static [&'static str] = &["size", "daily"];

    /// The log file, treating an empty path as none.
    pub fn file_path(&self) -> Option<&Path> {
        self.file.as_deref().filter(|p| !p.as_os_str().is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn no_env() -> Vec<(String, String)> {
        Vec::new()
    }

    /// Loads `json` as the file; returns the error message, which must exist.
    fn file_err(json: &str) -> String {
        match Config::from_sources(Some(json), no_env()) {
            Ok(c) => panic!("expected an error for {json}, got {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn env_err(pairs: &[(&str, &str)]) -> String {
        match Config::from_sources(None, env(pairs)) {
            Ok(c) => panic!("expected an error for {pairs:?}, got {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().expect("defaults valid");
        let c = Config::from_sources(None, no_env()).expect("no sources");
        assert_eq!(c, Config::default());
    }

    #[test]
    fn original_python_file_loads() {
        let json = r#"{
            "server": {"host": "0.0.0.0", "port": 8000, "dedicated_cpu": false, "num_cpus": 2},
            "model": {"size": "base", "device": "auto", "model_dir": "models",
                      "supported_formats": [".wav", ".mp3", ".m4a", ".ogg", ".flac"]},
            "deployment": {"num_replicas": 1, "cpu_per_replica": 2, "gpu_per_replica": 0,
                           "mode": "local", "max_concurrent_queries": 10},
            "logging": {"level": "INFO",
                        "format": "%(asctime)s - %(name)s - %(levelname)s - %(message)s",
                        "file": "logs/whisper_service.log"}
        }"#;
        let c = Config::from_sources(Some(json), no_env()).expect("original file");
        assert_eq!(c.server.num_cpus, 2);
        assert_eq!(c.deployment.cpu_per_replica, 2.0);
        assert_eq!(c.deployment.mode.as_deref(), Some("local"));
        assert_eq!(c.deployment.max_concurrent_queries, Some(10));
        assert_eq!(c.logging.file_path(), Some(Path::new("logs/whisper_service.log")));
        // Sections the original file lacks keep their defaults.
        assert_eq!(c.limits, LimitsConfig::default());
        assert_eq!(c.engine, EngineConfig::default());
    }

    #[test]
    fn file_merges_over_defaults_key_by_key() {
        let c = Config::from_sources(Some(r#"{"server": {"port": 9001}, "limits": {"max_queue": 3}}"#), no_env())
            .expect("partial file");
        assert_eq!(c.server.port, 9001);
        assert_eq!(c.server.host, "0.0.0.0", "sibling keys keep defaults");
        assert_eq!(c.limits.max_queue, 3);
        assert_eq!(c.limits.max_upload_mb, LimitsConfig::default().max_upload_mb);
        assert_eq!(c.model, ModelConfig::default());
    }

    #[test]
    fn env_overrides_file() {
        let c = Config::from_sources(
            Some(r#"{"server": {"port": 9001, "host": "127.0.0.1"}}"#),
            env(&[("WHISPER_SERVE__SERVER__PORT", "9000"), ("UNRELATED", "x")]),
        )
        .expect("env over file");
        assert_eq!(c.server.port, 9000);
        assert_eq!(c.server.host, "127.0.0.1");
    }

    #[test]
    fn env_overrides_supported_formats_and_limits() {
        let c = Config::from_sources(
            None,
            env(&[
                ("WHISPER_SERVE__MODEL__SUPPORTED_FORMATS", r#"[".wav",".mp3"]"#),
                ("WHISPER_SERVE__LIMITS__MAX_QUEUE", "2"),
            ]),
        )
        .expect("env");
        assert_eq!(c.model.supported_formats, vec![".wav", ".mp3"]);
        assert_eq!(c.limits.max_queue, 2);
    }

    #[test]
    fn env_section_and_key_are_case_insensitive_and_strings_stay_strings() {
        let c = Config::from_sources(
            None,
            env(&[
                ("WHISPER_SERVE__server__Host", "127.0.0.1"),
                ("WHISPER_SERVE__MODEL__SIZE", "./my-model"),
                ("WHISPER_SERVE__LOGGING__FILE", "/tmp/x.log"),
                ("WHISPER_SERVE__DEPLOYMENT__MODE", "local"),
                ("WHISPER_SERVE__ENGINE__COMPUTE_TYPE", "\"int8\""),
            ]),
        )
        .expect("env");
        assert_eq!(c.server.host, "127.0.0.1");
        assert_eq!(c.model.size, "./my-model");
        assert_eq!(c.logging.file_path(), Some(Path::new("/tmp/x.log")));
        assert_eq!(c.deployment.mode.as_deref(), Some("local"));
        assert_eq!(c.engine.compute_type, "int8");
    }

    #[test]
    fn env_unknown_key_or_section_rejected_naming_the_variable() {
        let m = env_err(&[("WHISPER_SERVE__SERVER__PROT", "1")]);
        assert!(m.contains("WHISPER_SERVE__SERVER__PROT") && m.contains("server.prot"), "{m}");
        let m = env_err(&[("WHISPER_SERVE__SRVER__PORT", "1")]);
        assert!(m.contains("WHISPER_SERVE__SRVER__PORT") && m.contains("srver"), "{m}");
        let m = env_err(&[("WHISPER_SERVE__PORT", "1")]);
        assert!(m.contains("WHISPER_SERVE__PORT"), "{m}");
    }

    #[test]
    fn env_type_error_names_key_and_variable() {
        let m = env_err(&[("WHISPER_SERVE__SERVER__PORT", "abc")]);
        assert!(m.contains("WHISPER_SERVE__SERVER__PORT") && m.contains("server.port"), "{m}");
    }

    #[test]
    fn port_70000_rejected() {
        let m = file_err(r#"{"server": {"port": 70000}}"#);
        assert_eq!(m, "config file: server.port: invalid value 70000 (expected 0-65535)");
        let m = env_err(&[("WHISPER_SERVE__SERVER__PORT", "70000")]);
        assert!(m.starts_with("env WHISPER_SERVE__SERVER__PORT: server.port: invalid value 70000"), "{m}");
        let m = file_err(r#"{"server": {"port": -1}}"#);
        assert!(m.contains("server.port"), "{m}");
    }

    #[test]
    fn port_zero_allowed() {
        let c = Config::from_sources(Some(r#"{"server": {"port": 0}}"#), no_env()).expect("port 0");
        assert_eq!(c.server.port, 0);
    }

    #[test]
    fn size_huge_rejected_listing_names() {
        let m = file_err(r#"{"model": {"size": "huge"}}"#);
        assert!(m.contains("model.size") && m.contains("\"huge\""), "{m}");
        assert!(m.contains("large-v3") && m.contains("tiny.en"), "{m}");
        for ok in ["turbo", "./models/x", "/opt/m", "~/m", "org/name"] {
            let json = format!(r#"{{"model": {{"size": "{ok}"}}}}"#);
            Config::from_sources(Some(&json), no_env()).expect(ok);
        }
    }

    #[test]
    fn device_tpu_rejected() {
        let m = file_err(r#"{"model": {"device": "tpu"}}"#);
        assert!(m.contains("model.device") && m.contains("tpu"), "{m}");
        let c = Config::from_sources(Some(r#"{"model": {"device": "cuda"}}"#), no_env()).expect("cuda");
        assert_eq!(c.model.device, DeviceKind::Cuda);
    }

    #[test]
    fn num_replicas_zero_rejected() {
        let m = file_err(r#"{"deployment": {"num_replicas": 0}}"#);
        assert!(m.contains("deployment.num_replicas"), "{m}");
    }

    #[test]
    fn format_without_dot_rejected() {
        let m = file_err(r#"{"model": {"supported_formats": [".wav", "wav"]}}"#);
        assert!(m.contains("model.supported_formats") && m.contains("\"wav\""), "{m}");
        let m = file_err(r#"{"model": {"supported_formats": ["."]}}"#);
        assert!(m.contains("model.supported_formats"), "{m}");
        let m = file_err(r#"{"model": {"supported_formats": [".wav", 3]}}"#);
        assert!(m.contains("model.supported_formats[1]"), "{m}");
    }

    #[test]
    fn unknown_key_rejected() {
        let m = file_err(r#"{"model": {"sise": "base"}}"#);
        assert!(m.contains("model.sise"), "{m}");
        assert!(m.starts_with("config file: "), "{m}");
    }

    #[test]
    fn unknown_section_rejected() {
        let m = file_err(r#"{"modle": {"size": "base"}}"#);
        assert!(m.contains("modle"), "{m}");
    }

    #[test]
    fn other_bad_values_rejected() {
        for (json, key) in [
            (r#"{"deployment": {"cpu_per_replica": 0}}"#, "deployment.cpu_per_replica"),
            (r#"{"deployment": {"gpu_per_replica": -1}}"#, "deployment.gpu_per_replica"),
            (r#"{"deployment": {"mode": "serverless"}}"#, "deployment.mode"),
            (r#"{"deployment": {"max_concurrent_queries": 0}}"#, "deployment.max_concurrent_queries"),
            (r#"{"logging": {"level": "LOUD"}}"#, "logging.level"),
            (r#"{"limits": {"max_queue": 0}}"#, "limits.max_queue"),
            (r#"{"limits": {"max_upload_mb": 0}}"#, "limits.max_upload_mb"),
            (r#"{"limits": {"max_audio_seconds": 0}}"#, "limits.max_audio_seconds"),
            (r#"{"limits": {"request_timeout_s": 0}}"#, "limits.request_timeout_s"),
            (r#"{"engine": {"compute_type": "int4"}}"#, "engine.compute_type"),
            (r#"{"decoding": {"beam_size": 0}}"#, "decoding.beam_size"),
            (r#"{"decoding": {"beam_size": 17}}"#, "decoding.beam_size"),
            (r#"{"decoding": {"task": "summarise"}}"#, "decoding.task"),
            (r#"{"decoding": {"temperatures": []}}"#, "decoding.temperatures"),
            (r#"{"server": {"host": ""}}"#, "server.host"),
            (r#"{"server": {"dedicated_cpu": "yes"}}"#, "server.dedicated_cpu"),
            (r#"{"server": null}"#, "server"),
        ] {
            let m = file_err(json);
            assert!(m.contains(key), "{json}: {m}");
        }
        for level in ["debug", "Warning", "WARN", "critical", "ERROR"] {
            let json = format!(r#"{{"logging": {{"level": "{level}"}}}}"#);
            Config::from_sources(Some(&json), no_env()).expect(level);
        }
    }

    #[test]
    fn syntax_error_and_non_object_rejected() {
        let m = file_err(r#"{"server": {"port": 8000,}}"#);
        assert!(m.starts_with("config file: invalid JSON"), "{m}");
        let m = file_err("[1, 2]");
        assert!(m.contains("object"), "{m}");
    }

    #[test]
    fn validate_on_bare_config_names_key() {
        let mut c = Config::default();
        c.model.size = "huge".into();
        let e = c.validate().expect_err("huge");
        assert_eq!(e.key(), Some("model.size"));
    }

    #[test]
    fn threads_explicit_wins() {
        let mut c = Config::default();
        c.engine.threads_per_replica = 3;
        c.server.dedicated_cpu = true;
        assert_eq!(c.threads_per_replica(64), 3);
    }

    #[test]
    fn threads_dedicated_split_budget() {
        let mut c = Config::default();
        c.server.dedicated_cpu = true;
        c.deployment.num_replicas = 3;
        assert_eq!(c.threads_per_replica(8), 2); // machine cores: 8 / 3
        c.server.num_cpus = 12;
        assert_eq!(c.threads_per_replica(8), 4); // num_cpus wins: 12 / 3
        c.deployment.num_replicas = 16;
        assert_eq!(c.threads_per_replica(8), 1); // never 0
    }

    #[test]
    fn threads_per_replica_from_cpu_per_replica() {
        let mut c = Config::default();
        c.deployment.num_replicas = 1;
        c.deployment.cpu_per_replica = 2.0;
        assert_eq!(c.threads_per_replica(8), 2);
        assert_eq!(c.threads_per_replica(1), 1); // capped by the machine
        c.server.num_cpus = 2; // the original file
        assert_eq!(c.threads_per_replica(64), 2);
        c.server.num_cpus = 0;
        c.deployment.num_replicas = 3;
        assert_eq!(c.threads_per_replica(8), 2); // 3 × 2 ≤ 8
        c.deployment.num_replicas = 4;
        c.deployment.cpu_per_replica = 4.0;
        assert_eq!(c.threads_per_replica(8), 2); // capped: 4 × 2 = 8
        c.deployment.cpu_per_replica = 0.5;
        assert_eq!(c.threads_per_replica(8), 1); // Ray's fractional CPU
        c.deployment.cpu_per_replica = 1.5;
        assert_eq!(c.threads_per_replica(8), 2); // rounded
        c.deployment.num_replicas = 16;
        c.deployment.cpu_per_replica = 2.0;
        assert_eq!(c.threads_per_replica(8), 1); // more replicas than cores share
        assert_eq!(c.threads_per_replica(0), 1); // unknown core count
    }

    #[test]
    fn compute_type_auto_resolves() {
        let mut c = Config::default();
        assert_eq!(c.resolved_compute_type(false), "int8");
        assert_eq!(c.resolved_compute_type(true), "float16");
        c.engine.compute_type = "int8_float16".into();
        assert_eq!(c.resolved_compute_type(true), "int8_float16");
    }

}
