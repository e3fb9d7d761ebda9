//! The seam between the routes and whatever runs the work. Routes talk to a
//! [`Dispatcher`] and never know which mode they run in:
//! - [`local::LocalDispatcher`] (`serve`): decodes in-process, feeds the
//!   engine [`pool::Pool`], keeps async jobs in an embedded database;
//! - `cluster::gateway::NatsDispatcher` (`gateway`): puts the audio in a
//!   JetStream object store and the job on a work-queue stream, and waits
//!   for the result in a key-value bucket.
//!
//! The dispatcher speaks [`DispatchError`], which `error.rs` maps to HTTP.

pub mod local;
pub mod models;
pub mod pool;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

use crate::audio::AudioError;
use crate::engine::{DecodeOptions, EngineError, Transcript};
use crate::jobs::{Caller, JobError, JobRecord, JobStatus};

/// Told of each async job that reached a final state.
pub type JobHook = std::sync::Arc<dyn Fn(&JobRecord) + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("server overloaded: the queue is full, retry later")]
    QueueFull { retry_after_s: u64 },
    #[error("service unavailable: {reason}")]
    Unavailable { reason: String, retry_after_s: u64 },
    #[error("the model is still loading")]
    Loading,
    #[error("the service is shutting down")]
    ShuttingDown,
    #[error("transcription timed out after {0} s")]
    Timeout(u64),
    /// The audio could not be used (decoded here).
    #[error(transparent)]
    Audio(#[from] AudioError),
    /// The request was refused where it ran (a cluster worker), with one
    /// of the HTTP error codes (`invalid_audio`, `audio_too_long`, ...).
    #[error("{}", .0.message)]
    Rejected(JobError),
    #[error("{0}")]
    BadOption(String),
    #[error("upload larger than the limit of {limit_mb} MB")]
    UploadTooLarge { limit_mb: u64 },
    #[error("transcription failed: {0}")]
    Engine(String),
    #[error("job `{0}` not found")]
    NotFound(String),
    #[error("job `{id}` is already {}", .status.as_str())]
    AlreadyFinal { id: String, status: JobStatus },
    #[error("cannot read the upload: {0}")]
    Upload(String),
    /// The caller already has `jobs.max_queued_per_key` jobs (or bytes)
    /// waiting.
    #[error("{0}")]
    TooManyJobs(String),
    /// A model no one here serves (or, without `models.pull_on_demand`,
    /// that is not downloaded).
    #[error("the model `{name}` is not served here; models present: {}", .present.join(", "))]
    UnknownModel { name: String, present: Vec<String> },
    /// A model that cannot be unloaded now.
    #[error("{0}")]
    InUse(String),
    /// A model that cannot be loaded now (`models.max_loaded` reached with
    /// every model in use, too little free memory, another load still
    /// running): worth retrying, and an async job waits.
    #[error("service unavailable: {reason}")]
    ModelBusy { reason: String, retry_after_s: u64 },
}

impl From<EngineError> for DispatchError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::BadOption(m) => DispatchError::BadOption(m),
            other => DispatchError::Engine(other.to_string()),
        }
    }
}

impl DispatchError {
    /// Whether the request itself is at fault (trying again cannot help).
    pub fn is_input_error(&self) -> bool {
        self.to_job_error().is_input_error()
    }

    /// The error as a job stores it; `code` uses the HTTP error codes.
    pub fn to_job_error(&self) -> JobError {
        let code = match self {
            DispatchError::Audio(AudioError::Empty) => "empty_file",
            DispatchError::Audio(AudioError::TooLong { .. }) => "audio_too_long",
            DispatchError::Audio(_) => "invalid_audio",
            DispatchError::Rejected(e) => return e.clone(),
            DispatchError::BadOption(_) => "invalid_param",
            DispatchError::UploadTooLarge { .. } => "upload_too_large",
            DispatchError::Timeout(_) => "timeout",
            DispatchError::QueueFull { .. } => "queue_full",
            DispatchError::Unavailable { .. } => "unavailable",
            DispatchError::Loading => "loading",
            DispatchError::ShuttingDown => "shutting_down",
            DispatchError::NotFound(_) => "not_found",
            DispatchError::AlreadyFinal { .. } => "conflict",
            DispatchError::Upload(_) => "bad_multipart",
            DispatchError::TooManyJobs(_) => "too_many_jobs",
            DispatchError::Engine(_) => "engine_error",
            DispatchError::UnknownModel { .. } => "model_not_found",
            DispatchError::InUse(_) => "conflict",
            DispatchError::ModelBusy { .. } => "unavailable",
        };
        JobError { code: code.into(), message: self.to_string() }
    }
}

/// Refuses a job that would take its key past `jobs.max_queued_per_key`
/// jobs or `jobs.max_queued_mb_per_key` of uploads waiting.
pub fn check_backlog(cfg: &crate::config::JobsConfig, jobs_waiting: u64, bytes_waiting: u64, new_bytes: u64) -> Result<(), DispatchError> {
    if cfg.max_queued_per_key > 0 && jobs_waiting >= cfg.max_queued_per_key as u64 {
        return Err(DispatchError::TooManyJobs(format!(
            "this key has {jobs_waiting} jobs queued or running, the most it may (jobs.max_queued_per_key); retry when some have finished"
        )));
    }
    let limit = cfg.max_queued_mb_per_key.saturating_mul(1024 * 1024);
    if limit > 0 && bytes_waiting.saturating_add(new_bytes) > limit {
        return Err(DispatchError::TooManyJobs(format!(
            "this key's queued uploads would pass {} MB (jobs.max_queued_mb_per_key); retry when some have finished",
            cfg.max_queued_mb_per_key
        )));
    }
    Ok(())
}

/// One synchronous transcription.
pub struct Work {
    /// The upload as sent (any supported container).
    pub audio: Bytes,
    pub options: DecodeOptions,
    /// The model to run it on, as the request named it (`tiny.en`,
    /// `Systran/faster-whisper-base`, a folder of `model.model_dir`);
    /// None or `whisper-1`: the configured default.
    pub model: Option<String>,
    pub request_id: String,
    /// How long the caller waits for the answer.
    pub timeout: Duration,
    /// Where to report progress as windows are decoded (`stream=true`);
    /// None: nobody listens.
    pub progress: Option<ProgressSender>,
}

/// What a transcription in progress reports (see [`Work::progress`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// Seconds of audio in the upload, once decoded.
    Audio(f64),
    /// Text newly decoded: what the transcript's `text` gains. In order,
    /// the pieces concatenate to a prefix of the final `text`.
    Text(String),
}

/// Where a transcription sends its [`Progress`]: unbounded (at most one
/// message per 30 s window), so the batcher never waits on a listener.
pub type ProgressSender = tokio::sync::mpsc::UnboundedSender<Progress>;

/// A finished transcription and where its time went.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub transcript: Transcript,
    /// Seconds waiting before a replica took it.
    pub queue_wait_s: f64,
    /// Seconds of decoding and inference.
    pub inference_s: f64,
    /// GB in use on the GPU that ran it (0 on CPU or without NVML).
    pub gpu_memory_gb: f64,
}

/// The upload of an async job, streamed (never whole in memory).
pub type ByteStream<'a> = BoxStream<'a, Result<Bytes, std::io::Error>>;

/// What `/health` reports.
#[derive(Debug, Clone)]
pub struct Health {
    pub ready: bool,
    /// `healthy`, `loading`, `error`, `unavailable`.
    pub status: &'static str,
    /// Mode-specific details (workers, pending jobs, dead letters, error).
    pub details: serde_json::Map<String, serde_json::Value>,
}

/// What the dispatcher is doing now, for `/v1/stats` and the dashboard.
#[derive(Debug, Clone, Default, serde::Serialize, utoipa::ToSchema)]
pub struct Load {
    /// Transcriptions waiting for a replica (in cluster mode: jobs waiting
    /// in the stream for a worker); null when it cannot be read now.
    pub queue_depth: Option<u64>,
    /// Transcriptions being decoded.
    pub in_progress: u64,
    /// Transcriptions that can be decoded at once (replicas x batch size,
    /// summed over live workers).
    pub capacity: u64,
    /// Replicas of this process (`serve`) or live workers (`gateway`).
    pub replicas: Vec<Replica>,
    /// `cpu` or `cuda` (null until the model is loaded / a worker is seen).
    pub device: Option<String>,
    pub compute_type: Option<String>,
    /// Decode steps by batch size (index = size) counted by other processes
    /// (a gateway's workers), cumulative; None where the steps are counted
    /// in this process.
    #[serde(skip)]
    pub remote_batch_steps: Option<Vec<u64>>,
}

/// One replica (a batcher thread) or one cluster worker.
#[derive(Debug, Clone, Default, serde::Serialize, utoipa::ToSchema)]
pub struct Replica {
    pub id: String,
    /// `idle`, `busy` or `loading`.
    pub state: String,
    /// Transcriptions it holds now.
    pub busy: u64,
    pub capacity: u64,
    pub device: String,
    /// Jobs finished (cluster workers only).
    pub jobs_done: Option<u64>,
}

/// A page of `GET /v1/jobs`.
pub struct JobPage {
    pub jobs: Vec<JobRecord>,
    /// Pass as `after` for the next page; None on the last.
    pub next: Option<String>,
}

#[async_trait]
pub trait Dispatcher: Send + Sync + 'static {
    /// What it is doing now (queue, replicas or workers).
    async fn load(&self) -> Load;

    /// `serve` or `gateway`.
    fn mode(&self) -> &'static str;

    /// Transcribes one upload and waits for it, up to `work.timeout`.
    async fn transcribe(&self, work: Work) -> Result<Outcome, DispatchError>;

    /// Stores the audio of job `id`, up to `limit_bytes`; returns its size.
    async fn store_audio(&self, id: &str, audio: ByteStream<'_>, limit_bytes: u64) -> Result<u64, DispatchError>;
    /// Drops stored audio of a job that will not be queued (bad options).
    async fn discard_audio(&self, id: &str);
    /// Queues a job whose audio is stored.
    async fn enqueue(&self, job: JobRecord) -> Result<JobRecord, DispatchError>;
    /// Job `id`, if `caller` may see it; another key's job is
    /// [`DispatchError::NotFound`], as if it did not exist.
    async fn job(&self, id: &str, caller: &Caller) -> Result<JobRecord, DispatchError>;
    /// Cancels a queued or running job of `caller`'s.
    async fn cancel(&self, id: &str, caller: &Caller) -> Result<JobRecord, DispatchError>;
    /// `caller`'s recent jobs (an admin's: everyone's), newest first;
    /// `after` is the last id of the previous page.
    async fn jobs(&self, limit: usize, after: Option<String>, caller: &Caller) -> Result<JobPage, DispatchError>;
    /// Calls `hook` with each async job's record when it reaches a final
    /// state (whoever wrote it), once per job; for the audio quota.
    fn on_job_final(&self, hook: JobHook);

    async fn health(&self) -> Health;
    /// Names the `model` field may take besides `whisper-1`.
    fn model_names(&self) -> Vec<String>;
    /// Whether a request may name `name` (`whisper-1` included): a model
    /// loaded, present or (with `models.pull_on_demand`) downloadable here;
    /// through a gateway, one a live worker serves.
    async fn serves(&self, name: &str) -> bool;
    /// The models and their states, for `GET /v1/models`.
    async fn models(&self) -> Vec<models::ModelState>;
    /// `POST /v1/models/{id}/load`.
    async fn load_model(&self, name: &str) -> Result<models::ModelState, DispatchError>;
    /// `DELETE /v1/models/{id}/load` (409 while in use).
    async fn unload_model(&self, name: &str) -> Result<(), DispatchError>;
    /// The in-process engine pool, when this process has one (for metrics).
    fn pool(&self) -> Option<std::sync::Arc<pool::Pool>>;
    /// Stops taking work and finishes what is in flight, up to `grace`.
    async fn shutdown(&self, grace: Duration);

    /// Starts a live transcription session: the client's events go into
    /// the sender returned, the session's events to `sink`. In `serve` the
    /// session runs here; through a gateway, on one worker it is pinned to.
    async fn open_realtime(
        &self,
        open: crate::realtime::Open,
        sink: crate::realtime::Sink,
    ) -> Result<tokio::sync::mpsc::Sender<crate::realtime::Inbound>, DispatchError>;
}

/// Client events a session may have waiting before its transport stops
/// reading (back-pressure to the client's TCP connection).
pub const REALTIME_INBOUND: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_errors_are_told_apart_by_their_code() {
        assert!(DispatchError::Audio(AudioError::Empty).is_input_error());
        assert!(DispatchError::BadOption("language".into()).is_input_error());
        assert!(DispatchError::Rejected(JobError { code: "audio_too_long".into(), message: "x".into() }).is_input_error());
        assert!(!DispatchError::Rejected(JobError { code: "engine_error".into(), message: "x".into() }).is_input_error());
        assert!(!DispatchError::Engine("boom".into()).is_input_error());
        assert!(!DispatchError::Timeout(5).is_input_error());
    }
}
