//! The log file and its rotation (`logging.max_bytes`, `logging.backup_count`,
//! `logging.rotation`), with the names of Python's `RotatingFileHandler`:
//! `whisper_service.log`, then `whisper_service.log.1` (newest) …
//! `.N` (oldest, removed when a new backup would make N + 1).
//!
//! The renaming is the `rolling-file` crate's: its cascade is Python's
//! (remove `.N`, rename `.N-1` → `.N` … the file → `.1`), it skips backups
//! that are missing instead of failing, and it has no panicking path on the
//! calls used here. (`file-rotate`, the other candidate, asserts that its
//! cached list of backups matches the disk; an operator deleting a backup
//! would panic the writer thread and silently end file logging.) *When* to
//! rotate is decided here, not by the crate's conditions: they see neither
//! the size of the line about to be written (Python rotates before a line
//! that would reach `max_bytes`, so files stay under it) nor UTC days (the
//! crate uses local time).
//!
//! [`RotatingFile`] is written by tracing-appender's background thread, so
//! rotating (a few renames) never holds up a request.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rolling_file::{BasicRollingFileAppender, RollingConditionBasic};

use crate::config::LoggingConfig;

/// When the log file is rotated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    /// Never: the file only grows.
    Never,
    /// Before a line that would take the file to `max_bytes` or more (and
    /// the file is not empty, so one long line still gets written).
    Size { max_bytes: u64 },
    /// Before the first line of a new UTC day.
    DailyUtc,
}

/// What `logging.rotation`, `logging.max_bytes` and `logging.backup_count`
/// ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationPlan {
    pub rotation: Rotation,
    /// Backups kept (`.1` … `.backups`).
    pub backups: usize,
}

impl RotationPlan {
    /// Maps the config. As in Python, `backup_count` 0 means no rotation (the
    /// file grows), and so does `max_bytes` 0 for size rotation.
    /// `max_bytes` does not apply to daily rotation, so each backup is one day.
    pub fn from_config(cfg: &LoggingConfig) -> RotationPlan {
        let backups = cfg.backup_count as usize;
        let rotation = if backups == 0 {
            Rotation::Never
        } else if cfg.rotation.trim().eq_ignore_ascii_case("daily") {
            Rotation::DailyUtc
        } else if cfg.max_bytes == 0 {
            Rotation::Never
        } else {
            Rotation::Size { max_bytes: cfg.max_bytes }
        };
        RotationPlan { rotation, backups }
    }

    /// Whether to rotate before writing `incoming` bytes to a file holding
    /// `size` bytes whose lines were written on UTC day `file_day`, when it
    /// is day `today`. An empty file is never rotated.
    pub fn due(&self, size: u64, incoming: u64, file_day: u64, today: u64) -> bool {
        if size == 0 {
            return false;
        }
        match self.rotation {
            Rotation::Never => false,
            Rotation::Size { max_bytes } => size.saturating_add(incoming) >= max_bytes,
            Rotation::DailyUtc => today > file_day,
        }
    }
}

/// Days since 1970-01-01, in UTC.
pub fn utc_day(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() / 86_400)
}

/// The log file, appended to and rotated by its [`RotationPlan`]. Each
/// `write` is one whole log line (tracing-subscriber formats a line, then
/// writes it at once), so a line is never split across two files.
pub struct RotatingFile {
    inner: BasicRollingFileAppender,
    path: PathBuf,
    plan: RotationPlan,
    /// Bytes in the current file.
    size: u64,
    /// UTC day of the current file's lines.
    day: u64,
}

impl std::fmt::Debug for RotatingFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RotatingFile").field("path", &self.path).field("plan", &self.plan).finish()
    }
}

impl RotatingFile {
    /// Opens (creates, appends to) `path`, creating its folder. A path that
    /// exists and is not a regular file (`/dev/stderr`, a FIFO) is written
    /// to but never rotated: renaming it would be wrong, as Python decided
    /// too (bpo-45401).
    pub fn open(path: &Path, plan: RotationPlan) -> io::Result<RotatingFile> {
        // Absolute, so a later change of working directory cannot make
        // rotation rename files somewhere else.
        let path = std::path::absolute(path)?;
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        let mut plan = plan;
        if fs::metadata(&path).is_ok_and(|m| !m.is_file()) {
            plan.rotation = Rotation::Never;
        }
        // The crate's own condition never fires (no frequency, no size):
        // `write_on` decides and calls `rollover`.
        let inner = BasicRollingFileAppender::new(&path, RollingConditionBasic::new(), plan.backups.max(1))?;
        let meta = fs::metadata(&path).ok();
        let size = meta.as_ref().map_or(0, |m| m.len());
        let today = utc_day(SystemTime::now());
        // A file left from an earlier day is rotated before the first line of today.
        let day = meta.and_then(|m| m.modified().ok()).filter(|_| size > 0).map_or(today, utc_day);
        Ok(RotatingFile { inner, path, plan, size, day })
    }

    /// Writes one line on UTC day `today`, rotating first if it is due.
    fn write_on(&mut self, buf: &[u8], today: u64) -> io::Result<()> {
        if self.plan.due(self.size, buf.len() as u64, self.day, today) {
            if let Err(e) = self.inner.rollover() {
                // Not through tracing: this runs inside the log writer, and
                // a failing rotation must not turn into a loop of log lines.
                // The line is still written (the crate reopens the file);
                // the next try waits for another `max_bytes` or day.
                eprintln!("whisper-serve: cannot rotate the log file {}: {e}", self.path.display());
            }
            self.size = 0;
        }
        self.day = today;
        self.inner.write_all(buf)?;
        self.size = self.size.saturating_add(buf.len() as u64);
        Ok(())
    }
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_on(buf, utc_day(SystemTime::now()))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(rotation: &str, max_bytes: u64, backup_count: u32) -> LoggingConfig {
        LoggingConfig { rotation: rotation.into(), max_bytes, backup_count, ..LoggingConfig::default() }
    }

    #[test]
    fn config_maps_to_plan() {
        let d = RotationPlan::from_config(&LoggingConfig::default());
        assert_eq!(d, RotationPlan { rotation: Rotation::Size { max_bytes: 10_485_760 }, backups: 5 });
        assert_eq!(RotationPlan::from_config(&cfg("size", 0, 5)).rotation, Rotation::Never);
        assert_eq!(RotationPlan::from_config(&cfg("size", 100, 0)).rotation, Rotation::Never);
        assert_eq!(RotationPlan::from_config(&cfg("daily", 0, 3)), RotationPlan { rotation: Rotation::DailyUtc, backups: 3 });
        assert_eq!(RotationPlan::from_config(&cfg("Daily", 100, 3)).rotation, Rotation::DailyUtc);
        assert_eq!(RotationPlan::from_config(&cfg("daily", 100, 0)).rotation, Rotation::Never);
    }

    #[test]
    fn due_follows_python() {
        let size = RotationPlan { rotation: Rotation::Size { max_bytes: 100 }, backups: 2 };
        assert!(!size.due(0, 500, 0, 0), "an empty file takes one long line");
        assert!(!size.due(50, 49, 0, 0));
        assert!(size.due(50, 50, 0, 0), "Python rotates at pos + len >= maxBytes");
        assert!(!size.due(50, 10, 0, 9), "days do not matter");
        let daily = RotationPlan { rotation: Rotation::DailyUtc, backups: 2 };
        assert!(!daily.due(10_000_000, 100, 20_000, 20_000));
        assert!(daily.due(1, 1, 20_000, 20_001));
        assert!(!daily.due(0, 1, 20_000, 20_001));
        assert!(!daily.due(1, 1, 20_001, 20_000), "a clock going back does not rotate");
        let never = RotationPlan { rotation: Rotation::Never, backups: 2 };
        assert!(!never.due(u64::MAX, u64::MAX, 0, 99));
    }

    #[test]
    fn utc_days() {
        assert_eq!(utc_day(UNIX_EPOCH), 0);
        assert_eq!(utc_day(UNIX_EPOCH + std::time::Duration::from_secs(86_399)), 0);
        assert_eq!(utc_day(UNIX_EPOCH + std::time::Duration::from_secs(86_400)), 1);
    }

    fn read(p: &Path) -> String {
        fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    fn with_suffix(p: &Path, n: usize) -> PathBuf {
        PathBuf::from(format!("{}.{n}", p.display()))
    }

    #[test]
    fn size_rotation_keeps_backup_count_files_with_whole_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("logs/whisper_service.log");
        let plan = RotationPlan { rotation: Rotation::Size { max_bytes: 30 }, backups: 2 };
        let mut f = RotatingFile::open(&path, plan).expect("open");
        for i in 0..10 {
            // 10 bytes a line: a third would reach 30, so each file holds two.
            f.write_on(format!("line {i:04}\n").as_bytes(), 1).expect("write");
        }
        f.flush().expect("flush");
        assert_eq!(read(&path), "line 0008\nline 0009\n");
        assert_eq!(read(&with_suffix(&path, 1)), "line 0006\nline 0007\n");
        assert_eq!(read(&with_suffix(&path, 2)), "line 0004\nline 0005\n");
        assert!(!with_suffix(&path, 3).exists());
    }

    #[test]
    fn daily_rotation_on_a_new_utc_day() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("service.log");
        let plan = RotationPlan { rotation: Rotation::DailyUtc, backups: 1 };
        let mut f = RotatingFile::open(&path, plan).expect("open");
        let today = utc_day(SystemTime::now());
        f.write_on(b"a\n", today).expect("write");
        f.write_on(b"b\n", today).expect("write");
        f.write_on(b"c\n", today + 1).expect("write");
        f.write_on(b"d\n", today + 2).expect("write");
        f.flush().expect("flush");
        assert_eq!(read(&path), "d\n");
        assert_eq!(read(&with_suffix(&path, 1)), "c\n");
        assert!(!with_suffix(&path, 2).exists(), "backup_count 1 keeps one day");
    }

    #[test]
    fn reopening_appends_and_counts_existing_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("service.log");
        fs::write(&path, "old 1\nold 2\n").expect("seed");
        let plan = RotationPlan { rotation: Rotation::Size { max_bytes: 17 }, backups: 1 };
        let mut f = RotatingFile::open(&path, plan).expect("open");
        f.write_on(b"new\n", utc_day(SystemTime::now())).expect("write");
        f.write_on(b"newer\n", utc_day(SystemTime::now())).expect("write");
        f.flush().expect("flush");
        assert_eq!(read(&with_suffix(&path, 1)), "old 1\nold 2\nnew\n");
        assert_eq!(read(&path), "newer\n");
    }

    #[test]
    fn missing_backups_do_not_stop_rotation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("service.log");
        let plan = RotationPlan { rotation: Rotation::Size { max_bytes: 4 }, backups: 3 };
        let mut f = RotatingFile::open(&path, plan).expect("open");
        for line in ["a\n", "b\n", "c\n"] {
            f.write_on(line.as_bytes(), 0).expect("write");
        }
        // An operator cleans up the backups while the service runs.
        fs::remove_file(with_suffix(&path, 1)).expect("remove .1");
        for line in ["d\n", "e\n"] {
            f.write_on(line.as_bytes(), 0).expect("write");
        }
        f.flush().expect("flush");
        assert_eq!(read(&path), "e\n");
        assert_eq!(read(&with_suffix(&path, 1)), "d\n");
        assert_eq!(read(&with_suffix(&path, 2)), "c\n");
        assert!(!with_suffix(&path, 3).exists());
    }

    #[cfg(unix)]
    #[test]
    fn non_regular_files_are_never_rotated() {
        let plan = RotationPlan { rotation: Rotation::Size { max_bytes: 1 }, backups: 1 };
        let f = RotatingFile::open(Path::new("/dev/null"), plan).expect("open /dev/null");
        assert_eq!(f.plan.rotation, Rotation::Never);
    }
}
