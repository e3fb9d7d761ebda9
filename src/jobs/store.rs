//! The single-machine job store: one SQLite database, `jobs.sqlite3`, and
//! one audio file per job under `audio/`, both in the folder `jobs.dir`. A
//! restarted server reads back the jobs it had queued or was running
//! ([`JobStore::unfinished`]) and finishes them.
//!
//! Why SQLite (rusqlite, bundled) rather than a key-value store such as
//! redb: listing jobs a page at a time by time and by status is an indexed
//! query rather than a scan; its write-ahead log makes every committed
//! change survive a crash; and operators can open the file with the
//! `sqlite3` shell to see what is queued.
//!
//! Each row keeps the whole [`JobRecord`] as JSON in `record`; `status`,
//! `created_at_ms` and `updated_at_ms` are copied into columns so that the
//! queries can use indexes. The schema version is `PRAGMA user_version`.
//!
//! The methods are synchronous and short: call them through
//! `tokio::task::spawn_blocking`, or directly where a brief block is
//! acceptable. A [`JobStore`] is `Send + Sync`, and cloning it is cheap
//! (the clones share one connection).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::{now_ms, JobRecord, JobStatus};

/// The database file inside `jobs.dir`.
pub const DB_FILE: &str = "jobs.sqlite3";
/// The folder inside `jobs.dir` that holds each job's audio, named by job id.
pub const AUDIO_DIR: &str = "audio";
/// The schema this code writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 2;
/// Suffix of an upload still being received; renamed to the job's id once
/// whole and on disk, so a cut-off upload never looks like a job's audio.
pub const PART_SUFFIX: &str = ".part";

const SCHEMA_V1: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    id            TEXT PRIMARY KEY NOT NULL,
    status        TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    record        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_created_at ON jobs (created_at_ms);
CREATE INDEX IF NOT EXISTS jobs_status_updated_at ON jobs (status, updated_at_ms);
";

/// v2: jobs have an owner (the key that made them), listed by owner; the
/// upload's size (per-key limits on queued bytes); and an outbox of webhook
/// deliveries written in the same transaction as the final record, so a
/// restart does not lose them.
const SCHEMA_V2: &str = "
ALTER TABLE jobs ADD COLUMN owner TEXT NOT NULL DEFAULT 'anonymous';
ALTER TABLE jobs ADD COLUMN audio_bytes INTEGER NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS jobs_owner_created_at ON jobs (owner, created_at_ms);
CREATE TABLE IF NOT EXISTS outbox (
    job_id        TEXT PRIMARY KEY NOT NULL,
    url           TEXT NOT NULL,
    body          BLOB NOT NULL,
    created_at_ms INTEGER NOT NULL
);
";

/// A webhook delivery waiting to be made (see [`JobStore::finish`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub job_id: String,
    pub url: String,
    pub body: Vec<u8>,
}

/// How long a statement waits for a lock held by another connection (an
/// operator's `sqlite3` shell, say) before failing with `SQLITE_BUSY`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("job database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("job store: {0}")]
    Io(#[from] std::io::Error),
    #[error("job record JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Not a job id: ids are lowercase hyphenated UUIDs. Ids come from
    /// URLs and name files, so anything else is refused.
    #[error("invalid job id {0:?}: expected a UUID")]
    BadId(String),
    #[error("no job {0}")]
    NotFound(String),
    /// The database was written by a newer version of whisper-serve.
    #[error("job database schema version {found} is newer than this server's ({supported})")]
    Schema { found: i64, supported: i64 },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Checks that `id` is a job id: a UUID in its canonical form (lowercase,
/// hyphenated), as [`super::new_id`] makes them.
pub fn check_id(id: &str) -> Result<()> {
    if super::is_job_id(id) {
        Ok(())
    } else {
        Err(StoreError::BadId(id.chars().take(64).collect()))
    }
}

/// The embedded job database. See the module docs.
#[derive(Clone)]
pub struct JobStore {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Mutex<Connection>,
    dir: PathBuf,
    audio_dir: PathBuf,
}

impl std::fmt::Debug for JobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobStore").field("dir", &self.inner.dir).finish_non_exhaustive()
    }
}

impl JobStore {
    /// Opens (creating when missing) the store in `dir`: the folder itself,
    /// `dir/audio/`, and `dir/jobs.sqlite3` in WAL mode with
    /// `synchronous=FULL`.
    ///
    /// Why FULL: `202 Accepted` promises the job is on disk. In WAL mode
    /// NORMAL syncs the log only at checkpoints, so a committed insert
    /// survives the process being killed but not the machine losing power;
    /// FULL fsyncs the log at every commit, so it survives both. A job's
    /// few writes make the fsyncs cheap next to its transcription.
    pub fn open(dir: &Path) -> Result<JobStore> {
        let audio_dir = dir.join(AUDIO_DIR);
        std::fs::create_dir_all(&audio_dir)?;
        let mut conn = Connection::open(dir.join(DB_FILE))?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(dir = %dir.display(), mode, "job database is not in WAL mode");
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        migrate(&mut conn)?;
        Ok(JobStore {
            inner: Arc::new(Inner { conn: Mutex::new(conn), dir: dir.to_path_buf(), audio_dir }),
        })
    }

    /// The folder the store lives in (`jobs.dir`).
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Where job `id`'s audio is kept: `dir/audio/<id>`. Fails with
    /// [`StoreError::BadId`] unless `id` is a UUID.
    pub fn audio_path(&self, id: &str) -> Result<PathBuf> {
        check_id(id)?;
        Ok(self.inner.audio_dir.join(id))
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while the lock was held leaves no half-done write behind:
        // an open transaction rolls back when dropped.
        self.inner.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Where an upload for job `id` is written until it is whole.
    pub fn part_path(&self, id: &str) -> Result<PathBuf> {
        check_id(id)?;
        Ok(self.inner.audio_dir.join(format!("{id}{PART_SUFFIX}")))
    }

    /// Adds a new job. Fails if its id is not a UUID or is already taken.
    pub fn insert(&self, rec: &JobRecord) -> Result<()> {
        self.insert_sized(rec, 0)
    }

    /// Adds a new job whose upload has `audio_bytes` bytes.
    pub fn insert_sized(&self, rec: &JobRecord, audio_bytes: u64) -> Result<()> {
        check_id(&rec.id)?;
        let json = serde_json::to_string(rec)?;
        self.conn().execute(
            "INSERT INTO jobs (id, status, created_at_ms, updated_at_ms, record, owner, audio_bytes)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                rec.id,
                rec.status.as_str(),
                rec.created_at_ms,
                rec.updated_at_ms,
                json,
                rec.request.owner,
                i64::try_from(audio_bytes).unwrap_or(i64::MAX)
            ],
        )?;
        Ok(())
    }

    /// How many jobs `owner` has queued or running, and their uploads' bytes.
    pub fn owner_backlog(&self, owner: &str) -> Result<(usize, u64)> {
        let (n, bytes): (i64, i64) = self.conn().query_row(
            "SELECT COUNT(*), COALESCE(SUM(audio_bytes), 0) FROM jobs
             WHERE owner = ?1 AND status IN (?2, ?3)",
            params![owner, JobStatus::Queued.as_str(), JobStatus::Running.as_str()],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        Ok((usize::try_from(n).unwrap_or(0), u64::try_from(bytes).unwrap_or(0)))
    }

    /// Job `id`, or None when there is none. Fails with
    /// [`StoreError::BadId`] unless `id` is a UUID.
    pub fn get(&self, id: &str) -> Result<Option<JobRecord>> {
        check_id(id)?;
        let json: Option<String> = self
            .conn()
            .query_row("SELECT record FROM jobs WHERE id = ?1", [id], |row| row.get(0))
            .optional()?;
        json.map(|j| serde_json::from_str(&j).map_err(StoreError::from)).transpose()
    }

    /// Replaces job `rec.id` with `rec`, with `updated_at_ms` set to now.
    /// Fails with [`StoreError::NotFound`] when there is no such job.
    pub fn update(&self, rec: &JobRecord) -> Result<()> {
        check_id(&rec.id)?;
        let mut rec = rec.clone();
        rec.updated_at_ms = now_ms();
        let conn = self.conn();
        if write(&conn, &rec)? == 0 {
            return Err(StoreError::NotFound(rec.id));
        }
        Ok(())
    }

    /// Read-modify-write of job `id` in one transaction: `f` gets the
    /// record and returns whether to write it back (with `updated_at_ms`
    /// set to now). Returns the record as it now stands (unchanged when
    /// `f` returned false; `f`'s edits are then dropped) and whether it was
    /// written, or None when there is no such job. `f` cannot change the id.
    ///
    /// For "cancel unless final", "mark running only if queued", ...
    pub fn update_if(
        &self,
        id: &str,
        f: impl FnOnce(&mut JobRecord) -> bool,
    ) -> Result<Option<(JobRecord, bool)>> {
        self.finish(id, f, |_| None)
    }

    /// [`Self::update_if`], and when it writes, queues the webhook that
    /// `outbox` makes of the written record in the same transaction: the
    /// delivery exists exactly when the write happened, and survives a
    /// restart until [`Self::delivered`] removes it.
    pub fn finish(
        &self,
        id: &str,
        f: impl FnOnce(&mut JobRecord) -> bool,
        outbox: impl FnOnce(&JobRecord) -> Option<(String, Vec<u8>)>,
    ) -> Result<Option<(JobRecord, bool)>> {
        check_id(id)?;
        let mut conn = self.conn();
        // IMMEDIATE: take the write lock before reading, so nothing can
        // change the row between the read and the write.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let json: Option<String> = tx
            .query_row("SELECT record FROM jobs WHERE id = ?1", [id], |row| row.get(0))
            .optional()?;
        let Some(json) = json else {
            return Ok(None);
        };
        let before: JobRecord = serde_json::from_str(&json)?;
        let mut rec = before.clone();
        if !f(&mut rec) {
            return Ok(Some((before, false)));
        }
        rec.id = before.id;
        rec.request.owner = before.request.owner;
        rec.updated_at_ms = now_ms();
        write(&tx, &rec)?;
        if let Some((url, body)) = outbox(&rec) {
            tx.execute(
                "INSERT OR REPLACE INTO outbox (job_id, url, body, created_at_ms) VALUES (?1, ?2, ?3, ?4)",
                params![rec.id, url, body, now_ms()],
            )?;
        }
        tx.commit()?;
        Ok(Some((rec, true)))
    }

    /// The webhook deliveries not yet made, oldest first.
    pub fn pending_deliveries(&self) -> Result<Vec<Delivery>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT job_id, url, body FROM outbox ORDER BY created_at_ms")?;
        let rows = stmt.query_map([], |row| Ok(Delivery { job_id: row.get(0)?, url: row.get(1)?, body: row.get(2)? }))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Forgets job `job_id`'s delivery: made, or given up on.
    pub fn delivered(&self, job_id: &str) -> Result<()> {
        self.conn().execute("DELETE FROM outbox WHERE job_id = ?1", [job_id])?;
        Ok(())
    }

    /// At start, before anything runs: a job left `running` was in flight
    /// in a process that is gone. It goes back to `queued`, unless it has
    /// been started `max_attempts` times already (it keeps taking the
    /// process down, say): then it is failed with the reason, and its
    /// webhook queued by `outbox`. Returns the jobs it failed.
    pub fn recover_interrupted(
        &self,
        max_attempts: u32,
        outbox: impl Fn(&JobRecord) -> Option<(String, Vec<u8>)>,
    ) -> Result<Vec<JobRecord>> {
        let running: Vec<String> = {
            let conn = self.conn();
            let mut stmt = conn.prepare_cached("SELECT id FROM jobs WHERE status = ?1")?;
            let rows = stmt.query_map([JobStatus::Running.as_str()], |row| row.get::<_, String>(0))?;
            rows.collect::<Result<Vec<_>, _>>()?
        };
        let mut failed = Vec::new();
        for id in running {
            let done = self.finish(
                &id,
                |r| {
                    if r.status != JobStatus::Running {
                        return false;
                    }
                    if r.attempts >= max_attempts {
                        r.status = JobStatus::Failed;
                        r.error = Some(super::JobError {
                            code: "job_interrupted".into(),
                            message: format!(
                                "the server stopped while running this job, {} times (jobs.max_attempts); not tried again",
                                r.attempts
                            ),
                        });
                    } else {
                        r.status = JobStatus::Queued;
                    }
                    true
                },
                |r| if r.status == JobStatus::Failed { outbox(r) } else { None },
            )?;
            if let Some((rec, true)) = done {
                if rec.status == JobStatus::Failed {
                    failed.push(rec);
                }
            }
        }
        Ok(failed)
    }

    /// Removes files under `audio/` that belong to no job: uploads cut off
    /// by a crash (`*.part`) and audio whose job row is gone. Run at start,
    /// before uploads are taken. Returns how many it removed.
    pub fn sweep_orphans(&self) -> Result<usize> {
        let mut removed = 0;
        for entry in std::fs::read_dir(&self.inner.audio_dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let keep = check_id(&name).is_ok() && self.get(&name).ok().flatten().is_some();
            if !keep {
                match std::fs::remove_file(entry.path()) {
                    Ok(()) => removed += 1,
                    Err(e) => tracing::warn!(file = %name, error = %e, "cannot remove an orphaned upload"),
                }
            }
        }
        Ok(removed)
    }

    /// Up to `limit` jobs, newest first; with `before` (a job id, the last
    /// one of the previous page), only jobs created before it; with
    /// `owner`, only that owner's jobs (None: everyone's). A `before` that
    /// is not one of `owner`'s jobs gives an empty page, so the cursor tells
    /// nothing about other owners' jobs. Rows that no longer parse are
    /// skipped with a warning.
    pub fn list(&self, limit: usize, before: Option<&str>, owner: Option<&str>) -> Result<Vec<JobRecord>> {
        if let Some(b) = before {
            check_id(b)?;
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let conn = self.conn();
        // Ids are random: order by creation time, then by insertion order
        // (rowid) for jobs made in the same millisecond.
        let mut stmt = conn.prepare_cached(
            "SELECT id, record FROM jobs
             WHERE (?3 IS NULL OR owner = ?3)
               AND (?1 IS NULL OR (created_at_ms, rowid) <
                    (SELECT created_at_ms, rowid FROM jobs WHERE id = ?1 AND (?3 IS NULL OR owner = ?3)))
             ORDER BY created_at_ms DESC, rowid DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![before, limit, owner], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })?;
        collect(rows)
    }

    /// The queued and running jobs, oldest first: what to resume after a
    /// restart. Rows that no longer parse are skipped with a warning.
    pub fn unfinished(&self) -> Result<Vec<JobRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id, record FROM jobs WHERE status IN (?1, ?2) ORDER BY created_at_ms, id",
        )?;
        let rows = stmt
            .query_map(params![JobStatus::Queued.as_str(), JobStatus::Running.as_str()], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })?;
        collect(rows)
    }

    /// How many jobs are queued.
    pub fn count_queued(&self) -> Result<usize> {
        let n: i64 = self.conn().query_row(
            "SELECT COUNT(*) FROM jobs WHERE status = ?1",
            [JobStatus::Queued.as_str()],
            |row| row.get(0),
        )?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// Deletes the final jobs (completed, failed, cancelled) last updated
    /// more than `ttl_ms` ago, and their audio files. Returns how many
    /// jobs it deleted.
    pub fn purge_expired(&self, ttl_ms: i64) -> Result<usize> {
        let cutoff = now_ms().saturating_sub(ttl_ms);
        let ids: Vec<String> = {
            let mut conn = self.conn();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let ids = {
                let mut stmt = tx.prepare_cached(
                    "DELETE FROM jobs WHERE status IN (?1, ?2, ?3) AND updated_at_ms < ?4
                     RETURNING id",
                )?;
                let rows = stmt.query_map(
                    params![
                        JobStatus::Completed.as_str(),
                        JobStatus::Failed.as_str(),
                        JobStatus::Cancelled.as_str(),
                        cutoff
                    ],
                    |row| row.get::<_, String>(0),
                )?;
                rows.collect::<Result<Vec<_>, _>>()?
            };
            tx.commit()?;
            ids
        };
        // Files after the commit, outside the lock: a file left behind by a
        // crash here is only wasted space, never a job without its audio.
        for id in &ids {
            if let Err(e) = self.delete_audio(id) {
                tracing::warn!(job_id = %id, error = %e, "could not delete expired job's audio");
            }
        }
        Ok(ids.len())
    }

    /// Removes job `id`'s audio file, if there is one.
    pub fn delete_audio(&self, id: &str) -> Result<()> {
        match std::fs::remove_file(self.audio_path(id)?) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }
}

/// Creates or checks the schema.
fn migrate(conn: &mut Connection) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    match version {
        0 | 1 => {
            if version == 0 {
                tx.execute_batch(SCHEMA_V1)?;
            }
            tx.execute_batch(SCHEMA_V2)?;
            // Records written before owners existed read back as anonymous
            // (serde default); the column says the same.
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        }
        SCHEMA_VERSION => {}
        found => return Err(StoreError::Schema { found, supported: SCHEMA_VERSION }),
    }
    tx.commit()?;
    Ok(())
}

/// Overwrites row `rec.id`; returns the rows changed (0: no such job).
fn write(conn: &Connection, rec: &JobRecord) -> Result<usize> {
    let json = serde_json::to_string(rec)?;
    let n = conn.execute(
        "UPDATE jobs SET status = ?2, created_at_ms = ?3, updated_at_ms = ?4, record = ?5
         WHERE id = ?1",
        params![rec.id, rec.status.as_str(), rec.created_at_ms, rec.updated_at_ms, json],
    )?;
    Ok(n)
}

/// Parses `(id, record JSON)` rows, skipping (and logging) the ones that
/// do not parse, so that one damaged row cannot hide every other job.
fn collect(
    rows: impl Iterator<Item = rusqlite::Result<(String, String)>>,
) -> Result<Vec<JobRecord>> {
    let mut out = Vec::new();
    for row in rows {
        let (id, json) = row?;
        match serde_json::from_str(&json) {
            Ok(rec) => out.push(rec),
            Err(e) => tracing::warn!(job_id = %id, error = %e, "skipping unreadable job record"),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::DecodeOptions;
    use crate::formats::{Granularities, ResponseFormat};
    use crate::jobs::{new_id, JobError, JobRequest};

    fn request() -> JobRequest {
        JobRequest {
            decode: DecodeOptions::default(),
            response_format: ResponseFormat::Json,
            granularities: Granularities::default(),
            model: "tiny.en".into(),
            callback_url: Some("https://example.com/hook".into()),
            filename: Some("a.wav".into()),
            request_id: "req-1".into(),
            owner: crate::jobs::ANONYMOUS.into(),
        }
    }

    /// A new job with a fresh id, created strictly after the previous one.
    fn job() -> JobRecord {
        std::thread::sleep(Duration::from_millis(2));
        JobRecord::new(new_id(), request())
    }

    fn open() -> (tempfile::TempDir, JobStore) {
        let tmp = tempfile::tempdir().unwrap();
        let store = JobStore::open(&tmp.path().join("jobs")).unwrap();
        (tmp, store)
    }

    #[test]
    fn store_is_send_sync_clone() {
        fn check<T: Send + Sync + Clone + 'static>() {}
        check::<JobStore>();
    }

    #[test]
    fn open_creates_folders_and_wal_database() {
        let (tmp, store) = open();
        let dir = tmp.path().join("jobs");
        assert!(dir.join(AUDIO_DIR).is_dir());
        assert!(dir.join(DB_FILE).is_file());
        assert_eq!(store.dir(), dir);
        let conn = store.conn();
        let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal");
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }

    #[test]
    fn insert_get_update_roundtrip() {
        let (_tmp, store) = open();
        let mut rec = job();
        store.insert(&rec).unwrap();
        assert_eq!(store.get(&rec.id).unwrap().as_ref(), Some(&rec));
        // The same id twice is refused.
        assert!(matches!(store.insert(&rec), Err(StoreError::Sqlite(_))));

        rec.status = JobStatus::Failed;
        rec.error = Some(JobError { code: "engine_error".into(), message: "boom".into() });
        rec.attempts = 2;
        rec.worker = Some("local".into());
        rec.audio_seconds = Some(12.5);
        rec.updated_at_ms = 0;
        store.update(&rec).unwrap();
        let got = store.get(&rec.id).unwrap().unwrap();
        assert!(got.updated_at_ms >= rec.created_at_ms);
        rec.updated_at_ms = got.updated_at_ms;
        assert_eq!(got, rec);

        let missing = JobRecord::new(new_id(), request());
        assert!(store.get(&missing.id).unwrap().is_none());
        assert!(
            matches!(store.update(&missing), Err(StoreError::NotFound(id)) if id == missing.id)
        );
    }

    #[test]
    fn list_pages_newest_first_with_cursor() {
        let (_tmp, store) = open();
        let jobs: Vec<JobRecord> = (0..5).map(|_| job()).collect();
        for j in &jobs {
            store.insert(j).unwrap();
        }
        let ids = |v: Vec<JobRecord>| v.into_iter().map(|j| j.id).collect::<Vec<_>>();
        let newest_first: Vec<String> = jobs.iter().rev().map(|j| j.id.clone()).collect();

        assert_eq!(ids(store.list(100, None, None).unwrap()), newest_first);
        let page1 = ids(store.list(2, None, None).unwrap());
        assert_eq!(page1, newest_first[0..2]);
        let page2 = ids(store.list(2, Some(&page1[1]), None).unwrap());
        assert_eq!(page2, newest_first[2..4]);
        let page3 = ids(store.list(2, Some(&page2[1]), None).unwrap());
        assert_eq!(page3, newest_first[4..5]);
        assert!(store.list(2, Some(&page3[0]), None).unwrap().is_empty());
        assert!(store.list(0, None, None).unwrap().is_empty());
        assert!(matches!(store.list(2, Some("nope"), None), Err(StoreError::BadId(_))));
    }

    #[test]
    fn unfinished_is_queued_and_running_oldest_first() {
        let (_tmp, store) = open();
        let mut jobs: Vec<JobRecord> = (0..5).map(|_| job()).collect();
        jobs[0].status = JobStatus::Running;
        jobs[1].status = JobStatus::Completed;
        jobs[2].status = JobStatus::Queued;
        jobs[3].status = JobStatus::Cancelled;
        jobs[4].status = JobStatus::Queued;
        // Insert out of order: the answer must not depend on it.
        for j in jobs.iter().rev() {
            store.insert(j).unwrap();
        }
        let got: Vec<String> = store.unfinished().unwrap().into_iter().map(|j| j.id).collect();
        assert_eq!(got, vec![jobs[0].id.clone(), jobs[2].id.clone(), jobs[4].id.clone()]);
        assert_eq!(store.count_queued().unwrap(), 2);
    }

    #[test]
    fn update_if_writes_only_when_asked() {
        let (_tmp, store) = open();
        let rec = job();
        store.insert(&rec).unwrap();

        // "Mark running only if queued": applies once.
        let start = |r: &mut JobRecord| {
            if r.status != JobStatus::Queued {
                return false;
            }
            r.status = JobStatus::Running;
            r.attempts += 1;
            true
        };
        let (after, wrote) = store.update_if(&rec.id, start).unwrap().unwrap();
        assert!(wrote);
        assert_eq!(after.status, JobStatus::Running);
        assert_eq!(after.attempts, 1);
        assert_eq!(store.get(&rec.id).unwrap().unwrap(), after);
        let (again, wrote) = store.update_if(&rec.id, start).unwrap().unwrap();
        assert!(!wrote);
        assert_eq!(again, after, "second start must not write");

        // f's edits are dropped when it answers false.
        let unchanged = store
            .update_if(&rec.id, |r| {
                r.status = JobStatus::Cancelled;
                false
            })
            .unwrap()
            .unwrap()
            .0;
        assert_eq!(unchanged, after);
        assert_eq!(store.get(&rec.id).unwrap().unwrap(), after);

        // "Cancel unless final".
        let cancel = |r: &mut JobRecord| {
            if r.status.is_final() {
                return false;
            }
            r.status = JobStatus::Cancelled;
            true
        };
        let cancelled = store.update_if(&rec.id, cancel).unwrap().unwrap().0;
        assert_eq!(cancelled.status, JobStatus::Cancelled);
        assert_eq!(store.count_queued().unwrap(), 0);
        assert!(store.unfinished().unwrap().is_empty());

        // The id cannot be changed through f.
        let kept = store
            .update_if(&rec.id, |r| {
                r.id = new_id();
                r.attempts = 7;
                true
            })
            .unwrap()
            .unwrap()
            .0;
        assert_eq!(kept.id, rec.id);
        assert_eq!(store.get(&rec.id).unwrap().unwrap().attempts, 7);

        // Missing job: None, f not called.
        assert!(store.update_if(&new_id(), |_| panic!("called")).unwrap().is_none());
    }

    #[test]
    fn purge_removes_only_old_final_jobs_and_their_audio() {
        let (_tmp, store) = open();
        let now = now_ms();
        let hour = 3_600_000;
        let mk = |status, age_ms: i64| {
            let mut j = job();
            j.status = status;
            j.updated_at_ms = now - age_ms;
            store.insert(&j).unwrap();
            std::fs::write(store.audio_path(&j.id).unwrap(), b"RIFF").unwrap();
            j
        };
        let old_done = mk(JobStatus::Completed, 2 * hour);
        let old_failed = mk(JobStatus::Failed, 2 * hour);
        let old_cancelled = mk(JobStatus::Cancelled, 2 * hour);
        let old_queued = mk(JobStatus::Queued, 2 * hour);
        let old_running = mk(JobStatus::Running, 2 * hour);
        let new_done = mk(JobStatus::Completed, 60_000);

        assert_eq!(store.purge_expired(hour).unwrap(), 3);
        for gone in [&old_done, &old_failed, &old_cancelled] {
            assert!(store.get(&gone.id).unwrap().is_none());
            assert!(!store.audio_path(&gone.id).unwrap().exists());
        }
        for kept in [&old_queued, &old_running, &new_done] {
            assert!(store.get(&kept.id).unwrap().is_some());
            assert!(store.audio_path(&kept.id).unwrap().exists());
        }
        assert_eq!(store.purge_expired(hour).unwrap(), 0);
    }

    #[test]
    fn delete_audio_tolerates_missing_file() {
        let (_tmp, store) = open();
        let id = new_id();
        store.delete_audio(&id).unwrap();
        std::fs::write(store.audio_path(&id).unwrap(), b"x").unwrap();
        store.delete_audio(&id).unwrap();
        assert!(!store.audio_path(&id).unwrap().exists());
    }

    #[test]
    fn reopening_keeps_the_jobs() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("jobs");
        let (a, mut b) = (job(), job());
        {
            let store = JobStore::open(&dir).unwrap();
            store.insert(&a).unwrap();
            store.insert(&b).unwrap();
            b.status = JobStatus::Running;
            store.update(&b).unwrap();
        }
        let store = JobStore::open(&dir).unwrap();
        assert_eq!(store.get(&a.id).unwrap().unwrap(), a);
        assert_eq!(store.get(&b.id).unwrap().unwrap().status, JobStatus::Running);
        let ids: Vec<String> = store.unfinished().unwrap().into_iter().map(|j| j.id).collect();
        assert_eq!(ids, vec![a.id.clone(), b.id.clone()]);
    }

    #[test]
    fn newer_schema_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("jobs");
        drop(JobStore::open(&dir).unwrap());
        let conn = Connection::open(dir.join(DB_FILE)).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
        drop(conn);
        assert!(matches!(
            JobStore::open(&dir),
            Err(StoreError::Schema { found, .. }) if found == SCHEMA_VERSION + 1
        ));
    }

    #[test]
    fn damaged_rows_are_skipped_in_listings() {
        let (_tmp, store) = open();
        let good = job();
        store.insert(&good).unwrap();
        let bad = new_id();
        store
            .conn()
            .execute("INSERT INTO jobs (id, status, created_at_ms, updated_at_ms, record) VALUES (?1, 'queued', 0, 0, '{not json')", [&bad])
            .unwrap();
        let ids: Vec<String> = store.list(10, None, None).unwrap().into_iter().map(|j| j.id).collect();
        assert_eq!(ids, vec![good.id.clone()]);
        assert_eq!(store.unfinished().unwrap().len(), 1);
        assert!(matches!(store.get(&bad), Err(StoreError::Json(_))));
    }

    fn ids(v: Vec<JobRecord>) -> Vec<String> {
        v.into_iter().map(|j| j.id).collect()
    }

    fn owned(owner: &str) -> JobRecord {
        let mut j = job();
        j.request.owner = owner.into();
        j
    }

    #[test]
    fn listing_by_owner_shows_only_that_owners_jobs() {
        let (_tmp, store) = open();
        let a: Vec<JobRecord> = (0..3).map(|_| owned("alice")).collect();
        let b = owned("bob");
        for j in a.iter().chain([&b]) {
            store.insert(j).unwrap();
        }
        let alice = ids(store.list(10, None, Some("alice")).unwrap());
        assert_eq!(alice, a.iter().rev().map(|j| j.id.clone()).collect::<Vec<_>>());
        assert_eq!(ids(store.list(10, None, Some("bob")).unwrap()), vec![b.id.clone()]);
        assert_eq!(store.list(10, None, None).unwrap().len(), 4);
        // Paging within one owner.
        let p1 = ids(store.list(2, None, Some("alice")).unwrap());
        assert_eq!(ids(store.list(2, Some(&p1[1]), Some("alice")).unwrap()), vec![a[0].id.clone()]);
        // Another owner's id as the cursor reveals nothing.
        assert!(store.list(10, Some(&b.id), Some("alice")).unwrap().is_empty());
        assert_eq!(store.owner_backlog("alice").unwrap().0, 3);
        assert_eq!(store.owner_backlog("carol").unwrap(), (0, 0));
        // An update cannot change the owner.
        let (rec, _) = store.update_if(&b.id, |r| { r.request.owner = "alice".into(); true }).unwrap().unwrap();
        assert_eq!(rec.request.owner, "bob");
        assert_eq!(store.list(10, None, Some("alice")).unwrap().len(), 3);
    }

    #[test]
    fn interrupted_jobs_are_requeued_until_max_attempts_then_failed_with_a_webhook() {
        let (_tmp, store) = open();
        let mut once = job();
        once.status = JobStatus::Running;
        once.attempts = 1;
        let mut thrice = job();
        thrice.status = JobStatus::Running;
        thrice.attempts = 3;
        let queued = job();
        for j in [&once, &thrice, &queued] {
            store.insert(j).unwrap();
        }
        let failed = store.recover_interrupted(3, |r| Some((r.request.callback_url.clone()?, r.id.as_bytes().to_vec()))).unwrap();
        assert_eq!(ids(failed), vec![thrice.id.clone()]);
        assert_eq!(store.get(&once.id).unwrap().unwrap().status, JobStatus::Queued);
        let t = store.get(&thrice.id).unwrap().unwrap();
        assert_eq!(t.status, JobStatus::Failed);
        assert_eq!(t.error.unwrap().code, "job_interrupted");
        assert_eq!(store.get(&queued.id).unwrap().unwrap().status, JobStatus::Queued);
        let pending = store.pending_deliveries().unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].job_id, thrice.id);
        store.delivered(&thrice.id).unwrap();
        assert!(store.pending_deliveries().unwrap().is_empty());
    }

    #[test]
    fn finish_queues_a_delivery_only_when_it_writes() {
        let (_tmp, store) = open();
        let rec = job();
        store.insert(&rec).unwrap();
        let complete = |r: &mut JobRecord| {
            if r.status.is_final() {
                return false;
            }
            r.status = JobStatus::Completed;
            true
        };
        let hook = |r: &JobRecord| Some(("https://example.com/h".to_string(), r.id.as_bytes().to_vec()));
        assert!(store.finish(&rec.id, complete, hook).unwrap().unwrap().1);
        assert!(!store.finish(&rec.id, complete, hook).unwrap().unwrap().1);
        assert_eq!(store.pending_deliveries().unwrap().len(), 1);
        // The outbox survives reopening.
        let dir = store.dir().to_path_buf();
        drop(store);
        let store = JobStore::open(&dir).unwrap();
        assert_eq!(store.pending_deliveries().unwrap()[0].body, rec.id.as_bytes());
    }

    #[test]
    fn orphaned_uploads_are_swept() {
        let (_tmp, store) = open();
        let kept = job();
        store.insert(&kept).unwrap();
        std::fs::write(store.audio_path(&kept.id).unwrap(), b"x").unwrap();
        let orphan = new_id();
        std::fs::write(store.audio_path(&orphan).unwrap(), b"x").unwrap();
        std::fs::write(store.part_path(&new_id()).unwrap(), b"x").unwrap();
        std::fs::write(store.dir().join(AUDIO_DIR).join("junk"), b"x").unwrap();
        assert_eq!(store.sweep_orphans().unwrap(), 3);
        let left: Vec<_> = std::fs::read_dir(store.dir().join(AUDIO_DIR)).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from(&kept.id)]);
    }

    #[test]
    fn a_version_1_database_is_migrated() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("jobs");
        std::fs::create_dir_all(dir.join(AUDIO_DIR)).unwrap();
        let conn = Connection::open(dir.join(DB_FILE)).unwrap();
        conn.execute_batch(SCHEMA_V1).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        let old = job();
        let mut json: serde_json::Value = serde_json::to_value(&old).unwrap();
        json["request"].as_object_mut().unwrap().remove("owner");
        conn.execute(
            "INSERT INTO jobs VALUES (?1, 'queued', ?2, ?2, ?3)",
            params![old.id, old.created_at_ms, json.to_string()],
        )
        .unwrap();
        drop(conn);
        let store = JobStore::open(&dir).unwrap();
        let got = store.get(&old.id).unwrap().unwrap();
        assert_eq!(got.request.owner, crate::jobs::ANONYMOUS);
        assert_eq!(ids(store.list(5, None, Some(crate::jobs::ANONYMOUS)).unwrap()), vec![old.id.clone()]);
    }

    #[test]
    fn bad_ids_are_rejected() {
        let (_tmp, store) = open();
        let id = new_id();
        for bad in [
            "",
            "..",
            "../jobs.sqlite3",
            "not-a-uuid",
            &id.to_uppercase(),
            &id.replace('-', ""),
            &format!("{{{id}}}"),
            &format!("urn:uuid:{id}"),
            &format!("{id}/x"),
        ] {
            assert!(matches!(store.audio_path(bad), Err(StoreError::BadId(_))), "{bad}");
            assert!(matches!(store.get(bad), Err(StoreError::BadId(_))), "{bad}");
            assert!(matches!(store.delete_audio(bad), Err(StoreError::BadId(_))), "{bad}");
            assert!(matches!(store.update_if(bad, |_| true), Err(StoreError::BadId(_))), "{bad}");
        }
        let mut rec = job();
        rec.id = "../../etc/passwd".into();
        assert!(matches!(store.insert(&rec), Err(StoreError::BadId(_))));
        assert_eq!(store.audio_path(&id).unwrap(), store.dir().join(AUDIO_DIR).join(&id));
    }
}
