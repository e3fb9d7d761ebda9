//! Logging set up from the `logging` section of the config.
//!
//! * `level`: Python's level names (DEBUG, INFO, WARNING/WARN, ERROR,
//!   CRITICAL; case-insensitive), mapped to tracing levels (WARNING → warn,
//!   CRITICAL → error). `RUST_LOG`, when set and non-empty, replaces it with
//!   a full `tracing_subscriber::EnvFilter` directive (`whisper_serve=debug,hyper=warn`).
//! * `format`: the literal `json` gives JSON lines (tracing-subscriber's JSON
//!   formatter with the current span and span list, for log shippers). Any
//!   other value is a Python `logging` format string, rendered by
//!   [`PyFormat`]; see its docs for the attribute mapping.
//! * `file`: when set, log lines go to this file (appended; parent folders
//!   created) as well as to stderr, rotated as `rotation`, `max_bytes` and
//!   `backup_count` say ([`crate::telemetry::rotation`]).
//! * `log_transcripts`: whether transcript text may appear in log lines
//!   ([`crate::telemetry::access::redacts`]).
//!
//! Both stderr and the file are written by tracing-appender background
//! threads, so a slow disk or a stalled stderr pipe never holds up a
//! request; if one falls 128 000 lines behind, further lines are dropped
//! rather than wait. [`LogGuard`] flushes both when dropped.

use std::fmt;
use std::path::PathBuf;
use std::time::Instant;

use tracing::Subscriber;
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::fmt::format::JsonFields;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::config::LoggingConfig;
use crate::telemetry::access;
use crate::telemetry::event_format::{PyFields, RedactingJson, START};
use crate::telemetry::format::PyFormat;
use crate::telemetry::rotation::{RotatingFile, RotationPlan};

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("logging.level: invalid value {0:?} (expected DEBUG, INFO, WARNING, WARN, ERROR or CRITICAL)")]
    InvalidLevel(String),
    #[error("RUST_LOG: invalid filter {value:?}: {message}")]
    InvalidRustLog { value: String, message: String },
    #[error("logging.file: cannot open {}: {source}", .path.display())]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("logging is already initialised: {0}")]
    AlreadyInitialized(String),
}

/// Keeps the background writers (stderr, the log file) alive; dropping it
/// flushes what they still hold. Hold it for the life of the program.
#[must_use = "dropping the guard stops writing the log"]
pub struct LogGuard {
    _writers: Vec<WorkerGuard>,
}

impl fmt::Debug for LogGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogGuard").field("writers", &self._writers.len()).finish()
    }
}

/// The tracing filter directive for a Python level name, or `None` if the
/// name is not one of DEBUG, INFO, WARNING, WARN, ERROR, CRITICAL
/// (case-insensitive).
pub fn level_directive(level: &str) -> Option<&'static str> {
    match level.trim().to_ascii_uppercase().as_str() {
        "DEBUG" => Some("debug"),
        "INFO" => Some("info"),
        "WARNING" | "WARN" => Some("warn"),
        "ERROR" | "CRITICAL" => Some("error"),
        _ => None,
    }
}

/// The filter: `rust_log` if non-empty, else the config's level.
fn build_filter(level: &str, rust_log: Option<&str>) -> Result<EnvFilter, LogError> {
    if let Some(value) = rust_log.map(str::trim).filter(|v| !v.is_empty()) {
        return EnvFilter::builder().parse(value).map_err(|e| LogError::InvalidRustLog {
            value: value.to_string(),
            message: e.to_string(),
        });
    }
    let directive = level_directive(level).ok_or_else(|| LogError::InvalidLevel(level.to_string()))?;
    Ok(EnvFilter::new(directive))
}

type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

fn make_layer<W>(json: bool, py: &PyFormat, writer: W) -> BoxedLayer
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    if json {
        Box::new(
            tracing_subscriber::fmt::layer()
                .fmt_fields(JsonFields::new())
                .event_format(RedactingJson::new())
                .with_writer(writer),
        )
    } else {
        Box::new(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .fmt_fields(PyFields)
                .event_format(py.clone())
                .with_writer(writer),
        )
    }
}

/// A background writer thread over `w`.
fn background<W: std::io::Write + Send + 'static>(name: &str, w: W) -> (tracing_appender::non_blocking::NonBlocking, WorkerGuard) {
    NonBlockingBuilder::default().thread_name(name).finish(w)
}

/// Builds the subscriber `init` installs, with the given `RUST_LOG` value
/// and console writer, without installing it (tests use it scoped). Returns
/// the guards of the background writers it started (the file's).
pub(crate) fn build<W>(
    cfg: &LoggingConfig,
    rust_log: Option<&str>,
    console: W,
) -> Result<(impl Subscriber + Send + Sync + 'static, Vec<WorkerGuard>), LogError>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let json = cfg.format.trim() == "json";
    let py = PyFormat::parse(&cfg.format);
    // Each output has its own filter: the log level must not decide which
    // spans reach OpenTelemetry.
    let mut layers: Vec<BoxedLayer> = vec![Box::new(make_layer(json, &py, console).with_filter(build_filter(&cfg.level, rust_log)?))];
    // OpenTelemetry spans, when `telemetry.otlp_endpoint` set up an exporter
    // (crate::telemetry::traces::init runs first): our own spans at INFO.
    if let Some(otel) = crate::telemetry::traces::layer::<Registry>() {
        let ours = tracing_subscriber::filter::Targets::new().with_target("whisper_serve", tracing::Level::INFO);
        layers.push(Box::new(otel.with_filter(ours)));
    }
    let mut guards = Vec::new();
    if let Some(path) = cfg.file_path() {
        let file = RotatingFile::open(path, RotationPlan::from_config(cfg))
            .map_err(|source| LogError::File { path: path.to_path_buf(), source })?;
        let (writer, guard) = background("whisper-log-file", file);
        layers.push(Box::new(make_layer(json, &py, writer).with_filter(build_filter(&cfg.level, rust_log)?)));
        guards.push(guard);
    }
    START.get_or_init(Instant::now);
    Ok((tracing_subscriber::registry().with(layers), guards))
}

/// Installs the global tracing subscriber described by `cfg` (see the module
/// docs). Also routes the `log` crate's records into it. Calling it a second
/// time returns [`LogError::AlreadyInitialized`] and changes nothing.
pub fn init(cfg: &LoggingConfig) -> Result<LogGuard, LogError> {
    let rust_log = std::env::var("RUST_LOG").ok();
    let (console, console_guard) = background("whisper-log-stderr", std::io::stderr());
    let (subscriber, mut guards) = build(cfg, rust_log.as_deref(), console)?;
    subscriber.try_init().map_err(|e| LogError::AlreadyInitialized(e.to_string()))?;
    access::set_log_transcripts(cfg.log_transcripts);
    guards.push(console_guard);
    Ok(LogGuard { _writers: guards })
}

/// Captures log output in memory, for tests of what lines say.
#[cfg(test)]
pub(crate) mod test_support {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    use crate::config::LoggingConfig;

    #[derive(Clone, Default)]
    pub struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Capture {
        pub fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
        }
    }

    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Capture {
        type Writer = Capture;
        fn make_writer(&'a self) -> Capture {
            self.clone()
        }
    }

    /// The real subscriber for `cfg` (no file), writing to the returned buffer.
    pub fn capture(cfg: &LoggingConfig) -> (Capture, impl tracing::Subscriber + Send + Sync + 'static) {
        let out = Capture::default();
        let cfg = LoggingConfig { file: None, ..cfg.clone() };
        let (subscriber, _) = super::build(&cfg, None, out.clone()).expect("build");
        (out, subscriber)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_mapping() {
        assert_eq!(level_directive("DEBUG"), Some("debug"));
        assert_eq!(level_directive("info"), Some("info"));
        assert_eq!(level_directive("WARNING"), Some("warn"));
        assert_eq!(level_directive("Warn"), Some("warn"));
        assert_eq!(level_directive("ERROR"), Some("error"));
        assert_eq!(level_directive("CRITICAL"), Some("error"));
        assert_eq!(level_directive("LOUD"), None);
        assert!(build_filter("LOUD", None).is_err());
        assert!(build_filter("INFO", Some("whisper_serve=debug")).is_ok());
        assert!(matches!(build_filter("INFO", Some("=[")), Err(LogError::InvalidRustLog { .. })));
    }

    /// Builds the real subscriber (scoped, not global) writing to a file and
    /// checks what lands there.
    fn log_to_file(format: &str) -> String {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nested/dir/service.log");
        let cfg = LoggingConfig {
            level: "DEBUG".into(),
            format: format.into(),
            file: Some(path.clone()),
            ..LoggingConfig::default()
        };
        let (subscriber, guards) = build(&cfg, None, std::io::sink).expect("build");
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("request", request_id = "abc");
            let _e = span.enter();
            tracing::info!(duration_s = 3.5, file = "a b.wav", "transcribed");
            tracing::trace!("not shown at DEBUG");
        });
        drop(guards);
        std::fs::read_to_string(&path).expect("log file")
    }

    #[test]
    fn python_format_to_file() {
        let text = log_to_file("%(levelname)s %(name)s %(module)s: %(message)s");
        assert_eq!(
            text,
            "INFO whisper_serve::telemetry::logging::tests logging: transcribed duration_s=3.5 file=\"a b.wav\" request_id=abc\n"
        );
    }

    #[test]
    fn json_format_to_file() {
        let text = log_to_file("json");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        let v: serde_json::Value = serde_json::from_str(lines[0]).expect("JSON line");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["target"], "whisper_serve::telemetry::logging::tests");
        assert_eq!(v["fields"]["message"], "transcribed");
        assert_eq!(v["fields"]["duration_s"], 3.5);
        assert_eq!(v["span"]["request_id"], "abc");
        assert_eq!(v["spans"][0]["name"], "request");
    }

    #[test]
    fn file_that_cannot_be_opened_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = LoggingConfig { file: Some(dir.path().to_path_buf()), ..LoggingConfig::default() };
        let err = build(&cfg, None, std::io::sink).err().expect("a folder is not a log file");
        assert!(matches!(err, LogError::File { .. }), "{err}");
    }

    #[test]
    fn init_twice_does_not_panic() {
        let cfg = LoggingConfig::default();
        let first = init(&cfg);
        let second = init(&cfg);
        assert!(matches!(second, Err(LogError::AlreadyInitialized(_))), "{second:?} after {first:?}");
    }
}
