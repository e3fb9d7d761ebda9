//! Asynchronous jobs: what a job is, as stored and as shown by
//! `/v1/jobs`. One machine keeps them in an embedded database
//! ([`store::JobStore`], under `jobs.dir`); a cluster keeps the same
//! records as JSON in a JetStream key-value bucket. On completion a webhook
//! ([`webhook`]) tells the job's `callback_url`.

pub mod callback_url;
pub mod store;
pub mod webhook;

use serde::{Deserialize, Serialize};

use crate::engine::{DecodeOptions, Transcript};
use crate::formats::{Granularities, ResponseFormat};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Queued,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    /// Completed, failed and cancelled jobs never change again.
    pub fn is_final(self) -> bool {
        matches!(self, JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled)
    }
}

impl JobRecord {
    /// The HTTP status a synchronous request would have had, for the
    /// dashboard's list: 200 done, 499 cancelled (nginx's "client closed"),
    /// 400 for the input's fault, 500 otherwise; 0 while not final.
    pub fn outcome_status(&self) -> u16 {
        match self.status {
            JobStatus::Completed => 200,
            JobStatus::Cancelled => 499,
            JobStatus::Failed if self.error.as_ref().is_some_and(JobError::is_input_error) => 400,
            JobStatus::Failed => 500,
            JobStatus::Queued | JobStatus::Running => 0,
        }
    }
}

/// Why a job failed: a machine-readable code (the same codes as the HTTP
/// errors: `invalid_audio`, `audio_too_long`, `engine_error`, ...) and a
/// message for people.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobError {
    pub code: String,
    pub message: String,
}

impl JobError {
    /// Codes of failures the request itself caused: trying again cannot
    /// help, and the client gets a 4xx.
    pub const INPUT_CODES: &'static [&'static str] =
        &["invalid_audio", "audio_too_long", "empty_file", "invalid_param", "upload_too_large"];

    pub fn is_input_error(&self) -> bool {
        Self::INPUT_CODES.contains(&self.code.as_str())
    }
}

/// What the client asked for: everything needed to run the job and render
/// its answer later.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRequest {
    pub decode: DecodeOptions,
    pub response_format: ResponseFormat,
    pub granularities: Granularities,
    /// The `model` field as given (`whisper-1`, `tiny.en`, ...).
    pub model: String,
    pub callback_url: Option<String>,
    pub filename: Option<String>,
    /// The `X-Request-Id` of the submitting request.
    pub request_id: String,
    /// The id of the key that submitted it ([`ANONYMOUS`] without keys):
    /// only that key (or an admin key) sees, lists or cancels the job.
    #[serde(default = "anonymous")]
    pub owner: String,
}

/// The owner of jobs submitted while keys are off (and of records written
/// before jobs had owners).
pub const ANONYMOUS: &str = "anonymous";

fn anonymous() -> String {
    ANONYMOUS.to_string()
}

/// Who is asking about jobs: the key's id, and whether it may see every
/// key's jobs (`role: admin`). Set by the key middleware on every request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub id: String,
    pub admin: bool,
}

/// Put in a response's extensions when a job was queued, so the key
/// middleware can keep the job's place under the audio quota until it ends.
#[derive(Debug, Clone)]
pub struct Accepted(pub String);

impl Caller {
    /// The caller when keys are off: everyone is the same anonymous user.
    pub fn anonymous() -> Caller {
        Caller { id: ANONYMOUS.to_string(), admin: false }
    }

    /// Whether this caller may see (read, list, cancel) job `rec`.
    pub fn may_see(&self, rec: &JobRecord) -> bool {
        self.admin || rec.request.owner == self.id
    }
}

/// A job as stored. `transcript` is kept whole; the API renders it in the
/// request's `response_format` when asked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// A random UUID (v4): nothing in it tells when it was made or what
    /// the next one will be.
    pub id: String,
    pub status: JobStatus,
    /// Unix time, milliseconds.
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub request: JobRequest,
    pub audio_seconds: Option<f64>,
    pub transcript: Option<Transcript>,
    pub error: Option<JobError>,
    /// Times a worker started it (redeliveries included).
    pub attempts: u32,
    /// The worker (or `local`) that ran it last.
    pub worker: Option<String>,
    /// Seconds it waited for a replica, and then took, on its last run.
    #[serde(default)]
    pub queue_wait_s: Option<f64>,
    #[serde(default)]
    pub inference_s: Option<f64>,
    /// GB in use on the GPU that ran it (the original API's `gpu_memory`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_memory_gb: Option<f64>,
    /// In a cluster, a transcript too big for one NATS message is kept in
    /// the object store under this name instead of `transcript`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcript_object: Option<String>,
    /// Bytes of the upload (a cluster counts each key's queued bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_bytes: Option<u64>,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Whether `id` is a job id: a UUID in its canonical form (lowercase,
/// hyphenated), as [`new_id`] makes them. The one check for ids that come
/// from URLs, name files (serve) and become NATS keys (cluster): anything
/// else is "no such job".
pub fn is_job_id(id: &str) -> bool {
    matches!(uuid::Uuid::try_parse(id), Ok(u) if u.hyphenated().to_string() == id)
}

/// A new job id: a random UUID (122 random bits). Not UUIDv7: its
/// timestamp and per-millisecond counter would let a caller who holds one
/// id guess its neighbours. Listing orders by `created_at_ms` instead.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

impl JobRecord {
    pub fn new(id: String, request: JobRequest) -> Self {
        let now = now_ms();
        Self {
            id,
            status: JobStatus::Queued,
            created_at_ms: now,
            updated_at_ms: now,
            request,
            audio_seconds: None,
            transcript: None,
            error: None,
            attempts: 0,
            worker: None,
            queue_wait_s: None,
            inference_s: None,
            gpu_memory_gb: None,
            transcript_object: None,
            upload_bytes: None,
        }
    }
}

/// A job as `/v1/jobs` and webhooks show it: `{id, object, status, model,
/// result, error, created_at, updated_at, audio_seconds}`. `result` is the
/// body the job's `response_format` would have answered (a JSON object for
/// `json`/`verbose_json`, a string for `text`/`srt`/`vtt`); times are Unix
/// seconds.
pub fn public_json(rec: &JobRecord) -> serde_json::Value {
    let result = rec.transcript.as_ref().map(|t| {
        let format = rec.request.response_format;
        let task = match rec.request.decode.task {
            crate::engine::Task::Transcribe => "transcribe",
            crate::engine::Task::Translate => "translate",
        };
        let body = crate::formats::render(t, format, task, rec.request.granularities);
        match format {
            ResponseFormat::Json | ResponseFormat::VerboseJson => {
                serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body))
            }
            _ => serde_json::Value::String(body),
        }
    });
    serde_json::json!({
        "id": rec.id,
        "object": "transcription.job",
        "status": rec.status.as_str(),
        "model": rec.request.model,
        "response_format": rec.request.response_format.as_str(),
        "result": result,
        "error": rec.error.as_ref().map(|e| serde_json::json!({"code": e.code, "message": e.message})),
        "created_at": rec.created_at_ms / 1000,
        "updated_at": rec.updated_at_ms / 1000,
        "audio_seconds": rec.audio_seconds,
        "attempts": rec.attempts,
    })
}
