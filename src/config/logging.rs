//! The `logging` section: level, format, log file and its rotation, with
//! their defaults and checks.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{bad, one_of, quoted, ConfigError};

/// Python `logging` level names `logging.level` accepts (case-insensitive).
pub const LOG_LEVELS: &[&str] = &["DEBUG", "INFO", "WARNING", "WARN", "ERROR", "CRITICAL"];

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

impl LoggingConfig {
    /// Values `logging.rotation` accepts (case-insensitive).
    pub const ROTATIONS: &'static [&'static str] = &["size", "daily"];

    /// The log file, treating an empty path as none.
    pub fn file_path(&self) -> Option<&Path> {
        self.file.as_deref().filter(|p| !p.as_os_str().is_empty())
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !LOG_LEVELS.iter().any(|l| l.eq_ignore_ascii_case(&self.level)) {
            return bad("logging.level", &quoted(&self.level), &one_of(LOG_LEVELS));
        }
        if !LoggingConfig::ROTATIONS.iter().any(|r| r.eq_ignore_ascii_case(self.rotation.trim())) {
            return bad("logging.rotation", &quoted(&self.rotation), &one_of(LoggingConfig::ROTATIONS));
        }
        Ok(())
    }
}
