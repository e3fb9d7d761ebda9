//! The API reference: an OpenAPI 3.1 document generated from the routes
//! themselves (each handler carries its `#[utoipa::path]`, and the router
//! is built from them, so a route cannot be served without being in the
//! document), served at `/openapi.json`, and Swagger UI at `/docs`
//! (embedded by `utoipa-swagger-ui`'s `vendored` feature: no download at
//! build time, no CDN at run time).
//!
//! The request and response bodies below exist for the document: most
//! routes render their JSON with `formats` or `serde_json`, and these
//! describe those shapes field by field. `tests/openapi.rs` checks them
//! against real answers.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{OpenApi, ToSchema};

/// Where the document and the page are served.
pub use crate::state::{DOCS_PATH, OPENAPI_PATH};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "whisper-serve",
        description = "Speech to text with OpenAI's Whisper models. Three families of routes: the original \
service's `POST /transcribe`; OpenAI's audio API under `/v1/audio/*` (errors in OpenAI's shape); async \
jobs under `/v1/jobs`. When the server has API keys, send one as `Authorization: Bearer <key>` or \
`X-API-Key: <key>`; pages, assets, this document and the health probes need none (`/metrics` and \
`/v1/stats` only with `auth.metrics_requires_key`).",
        license(name = "MIT"),
    ),
    paths(docs_redirect, docs_page, docs_asset),
    tags(
        (name = "original", description = "The original service's API (Ray Serve + FastAPI design)"),
        (name = "openai", description = "OpenAI's audio API"),
        (name = "jobs", description = "Async jobs: submit, poll, cancel, webhooks"),
        (name = "service", description = "Health, metrics and statistics"),
        (name = "pages", description = "The pages a person sees and the API reference"),
    ),
)]
pub struct ApiDoc;

/// Adds the security schemes, and the key requirement on the API routes
/// (after the routes are in: `modifiers` run before).
pub fn finish(doc: &mut utoipa::openapi::OpenApi) {
    {
        let c = doc.components.get_or_insert_with(Default::default);
        c.add_security_scheme("bearer", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()));
        c.add_security_scheme("api_key", SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))));
        let either = [
            utoipa::openapi::security::SecurityRequirement::new("bearer", Vec::<String>::new()),
            utoipa::openapi::security::SecurityRequirement::new("api_key", Vec::<String>::new()),
        ];
        // Keys apply to the API routes only (see the description).
        for (path, item) in doc.paths.paths.iter_mut() {
            if !path.starts_with("/v1/") && path != "/transcribe" {
                continue;
            }
            for op in [&mut item.get, &mut item.post, &mut item.delete].into_iter().flatten() {
                op.security = Some(either.to_vec());
            }
        }
    }
}

static DOCUMENT: OnceLock<String> = OnceLock::new();

/// Keeps the generated document for `/openapi.json`.
pub fn set_document(doc: &utoipa::openapi::OpenApi) {
    let _ = DOCUMENT.set(doc.to_pretty_json().unwrap_or_default());
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "pages",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json")))]
pub async fn openapi_json() -> Response {
    let body = DOCUMENT.get().cloned().unwrap_or_default();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Redirects to `/docs/`.
#[utoipa::path(get, path = "/docs", tag = "pages",
    responses((status = 303, description = "To `/docs/`", headers(("Location" = String)))))]
#[allow(dead_code)] // Served by utoipa-swagger-ui; here for the document.
pub async fn docs_redirect() {}

/// The interactive API reference (Swagger UI).
#[utoipa::path(get, path = "/docs/", tag = "pages",
    responses((status = 200, description = "Swagger UI", content_type = "text/html")))]
#[allow(dead_code)] // Served by utoipa-swagger-ui; here for the document.
pub async fn docs_page() {}

/// Swagger UI's own scripts and styles.
#[utoipa::path(get, path = "/docs/{file}", tag = "pages",
    params(("file" = String, Path, description = "A Swagger UI file (`swagger-ui.css`, `swagger-ui-bundle.js`, ...)")),
    responses((status = 200, description = "The file"), (status = 404, description = "No such file")))]
#[allow(dead_code)]
pub async fn docs_asset() {}

/// Swagger UI at `/docs`, reading `/openapi.json`; no validator (it would
/// send the document to swagger.io).
pub fn swagger_ui() -> utoipa_swagger_ui::SwaggerUi {
    let config = utoipa_swagger_ui::Config::new([OPENAPI_PATH]).validator_url("none").try_it_out_enabled(true);
    utoipa_swagger_ui::SwaggerUi::new(DOCS_PATH).config(config)
}

// ---------------------------------------------------------------------------
// Shapes for the document

/// Errors under `/v1/`: OpenAI's shape.
#[derive(Serialize, ToSchema)]
pub struct OpenAiErrorBody {
    pub error: OpenAiErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct OpenAiErrorDetail {
    /// For people.
    pub message: String,
    /// `invalid_request_error`, `authentication_error`, `rate_limit_error` or `server_error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The form field at fault, if one is.
    pub param: Option<String>,
    /// Machine-readable: `invalid_audio`, `audio_too_long`, `upload_too_large`, `unsupported_format`,
    /// `missing_field`, `invalid_param`, `unknown_model`, `empty_file`, `queue_full`, `loading`,
    /// `timeout`, `invalid_api_key`, `rate_limited`, `quota_exceeded`, `quota_busy`, `too_many_jobs`,
    /// `field_too_large`, `job_not_found`, `conflict`, ...
    pub code: String,
}

/// The original service's body, for answers and errors alike (errors:
/// `success` false, `error` set). See `crate::error::TranscribeBody`.
#[derive(Serialize, ToSchema)]
pub struct OriginalErrorBody {
    pub success: bool,
    pub text: String,
    /// Seconds the request took.
    pub latency: f64,
    pub word_count: u64,
    /// GB of GPU memory in use (0 on CPU).
    pub gpu_memory: f64,
    pub error: Option<String>,
}

/// Decoding options shared by every transcription form. All optional.
#[derive(Serialize, ToSchema)]
pub struct DecodeFields {
    /// ISO 639-1 code (`en`, `de`); empty or absent: detected.
    pub language: Option<String>,
    /// `transcribe` (default) or `translate` (to English).
    pub task: Option<String>,
    /// Text that precedes the audio (names, spelling). `initial_prompt` is accepted too.
    pub prompt: Option<String>,
    /// 0 to 1. 0 (default) keeps Whisper's fallback to higher temperatures.
    pub temperature: Option<f32>,
    /// 1 to `limits.max_beam_size`.
    pub beam_size: Option<u32>,
    /// 1 to `limits.max_best_of`.
    pub best_of: Option<u32>,
    pub patience: Option<f32>,
    pub length_penalty: Option<f32>,
    pub word_timestamps: Option<bool>,
    /// Skip silence with a voice activity detector (timestamps stay on the original timeline).
    pub vad_filter: Option<bool>,
    /// faster-whisper's VAD options as a JSON object: `threshold`,
    /// `neg_threshold`, `min_speech_duration_ms`, `max_speech_duration_s`,
    /// `min_silence_duration_ms`, `speech_pad_ms`.
    pub vad_parameters: Option<String>,
    pub condition_on_previous_text: Option<bool>,
    /// `json`, `text`, `srt`, `vtt` or `verbose_json`.
    pub response_format: Option<String>,
    /// `segment` and/or `word` (repeat the field); word implies word timestamps.
    #[serde(rename = "timestamp_granularities[]")]
    pub timestamp_granularities: Option<Vec<String>>,
}

/// `POST /transcribe`'s form.
#[derive(Serialize, ToSchema)]
pub struct OriginalForm {
    /// The audio (wav, mp3, m4a, flac, ogg, opus, webm, mp4, ...; detected from content).
    #[schema(value_type = String, format = Binary)]
    pub audio_file: Vec<u8>,
    #[serde(flatten)]
    pub options: DecodeFields,
}

/// OpenAI's transcription form (`/v1/audio/transcriptions`, `/v1/audio/translations`).
#[derive(Serialize, ToSchema)]
pub struct OpenAiForm {
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
    /// Required: `whisper-1` or a name from `GET /v1/models`.
    pub model: String,
    /// `true`: answer with server-sent events (`text/event-stream`, see
    /// `TranscriptionStreamEvent`) as the audio is decoded, 30 s at a time.
    /// With `response_format` `json` or `text` only (others: 400).
    pub stream: Option<bool>,
    #[serde(flatten)]
    pub options: DecodeFields,
}

/// `POST /v1/jobs`'s form: OpenAI's fields (model optional) and a webhook.
#[derive(Serialize, ToSchema)]
pub struct JobForm {
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
    pub model: Option<String>,
    /// Called with the final job when it finishes; signed with `X-Whisper-Signature:
    /// sha256=HMAC(jobs.webhook_secret, "<X-Whisper-Timestamp>.<body>")`. A host that is or
    /// resolves to an internal address (loopback, private, link-local, ...) is refused (400)
    /// unless `jobs.webhook_allow_hosts` allows it.
    pub callback_url: Option<String>,
    #[serde(flatten)]
    pub options: DecodeFields,
}

/// `response_format=json` (the default).
#[derive(Serialize, ToSchema)]
pub struct JsonTranscription {
    pub text: String,
}

#[derive(Serialize, ToSchema)]
pub struct VerboseSegment {
    pub id: u32,
    pub seek: u32,
    pub start: f64,
    pub end: f64,
    pub text: String,
    pub tokens: Vec<u32>,
    pub temperature: f64,
    pub avg_logprob: f64,
    pub compression_ratio: f64,
    pub no_speech_prob: f64,
}

#[derive(Serialize, ToSchema)]
pub struct VerboseWord {
    pub word: String,
    pub start: f64,
    pub end: f64,
}

/// `response_format=verbose_json`.
#[derive(Serialize, ToSchema)]
pub struct VerboseTranscription {
    /// `transcribe` or `translate`.
    pub task: String,
    /// The language's English name (`english`).
    pub language: String,
    pub language_probability: f64,
    /// Seconds of audio.
    pub duration: f64,
    pub text: String,
    /// With `timestamp_granularities[]=segment` (the default).
    pub segments: Option<Vec<VerboseSegment>>,
    /// With `timestamp_granularities[]=word`.
    pub words: Option<Vec<VerboseWord>>,
}

/// One server-sent event of a `stream=true` answer: `data: <this JSON>`
/// and a blank line (no `event:` lines, no `[DONE]`), as OpenAI sends them
/// and its SDKs read them. `transcript.text.delta` events come as each
/// 30 s window is decoded, and their `delta`s concatenate to the
/// `transcript.text.done` event's `text`, which ends the stream. An error
/// after the answer started is an `error` event (OpenAI's error body),
/// and the stream ends; errors before it keep their JSON answer and status.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum TranscriptionStreamEvent {
    Delta(TranscriptTextDelta),
    Done(TranscriptTextDone),
    Error(StreamErrorEvent),
}

/// Text newly decoded.
#[derive(Serialize, ToSchema)]
pub struct TranscriptTextDelta {
    /// Always `transcript.text.delta`.
    #[serde(rename = "type")]
    pub kind: String,
    pub delta: String,
}

/// The end: the whole text.
#[derive(Serialize, ToSchema)]
pub struct TranscriptTextDone {
    /// Always `transcript.text.done`.
    #[serde(rename = "type")]
    pub kind: String,
    pub text: String,
    pub usage: Option<DurationUsage>,
}

/// Usage by audio duration, as OpenAI reports it for Whisper.
#[derive(Serialize, ToSchema)]
pub struct DurationUsage {
    /// Always `duration`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Seconds of audio, rounded up.
    pub seconds: u64,
}

/// The transcription failed after the stream started.
#[derive(Serialize, ToSchema)]
pub struct StreamErrorEvent {
    /// Always `error`.
    #[serde(rename = "type")]
    pub kind: String,
    pub error: OpenAiErrorDetail,
}

/// The errors of the OpenAI-shaped transcription routes (and job submission).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // For the document only.
pub enum TranscriptionErrors {
    /// Bad form, option or audio (`invalid_audio`, `invalid_param`, `missing_field`, `unsupported_format`, `empty_file`, `field_too_large`)
    #[response(status = 400)]
    BadRequest(OpenAiErrorBody),
    /// A key is required (`invalid_api_key`)
    #[response(status = 401)]
    Unauthorized(OpenAiErrorBody),
    /// Unknown model (`unknown_model`)
    #[response(status = 404)]
    UnknownModel(OpenAiErrorBody),
    /// The upload was too slow (`server.body_timeout_s`)
    #[response(status = 408)]
    BodyTimeout(OpenAiErrorBody),
    /// Upload or audio too long (`upload_too_large`, `audio_too_long`)
    #[response(status = 413)]
    TooLarge(OpenAiErrorBody),
    /// Rate limit, daily audio quota, or too many of the key's jobs waiting (`rate_limit_exceeded`, `quota_exceeded`, `quota_busy`, `too_many_jobs`; `Retry-After`)
    #[response(status = 429)]
    RateLimited(OpenAiErrorBody),
    /// The engine failed
    #[response(status = 500)]
    Engine(OpenAiErrorBody),
    /// Queue full, loading or no worker (`Retry-After`)
    #[response(status = 503)]
    Unavailable(OpenAiErrorBody),
    /// Not done within `limits.request_timeout_s`
    #[response(status = 504)]
    Timeout(OpenAiErrorBody),
}

/// `POST /transcribe`'s JSON answer: the original body without
/// `response_format`, else the format asked for.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum OriginalAnswer {
    Original(OriginalErrorBody),
    Json(JsonTranscription),
    Verbose(VerboseTranscription),
}

/// Any of the JSON answers; `text`, `srt` and `vtt` come as text/plain.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum TranscriptionBody {
    Json(JsonTranscription),
    Verbose(VerboseTranscription),
}

#[derive(Serialize, ToSchema)]
pub struct Model {
    pub id: String,
    /// Always `model`.
    pub object: String,
    pub created: i64,
    pub owned_by: String,
    /// `loaded`, `loading`, `available` (downloaded, not loaded),
    /// `downloadable` (`models.pull_on_demand` fetches it on first use);
    /// `unloaded` in the answer to an unload.
    pub state: String,
    /// The model `whisper-1` and the original route use (always loaded).
    pub default: bool,
    /// Transcriptions using it now (loaded models).
    pub in_use: Option<u64>,
    /// Seconds its engine took to load.
    pub load_s: Option<f64>,
}

#[derive(Serialize, ToSchema)]
pub struct ModelList {
    /// Always `list`.
    pub object: String,
    pub data: Vec<Model>,
}

#[derive(Serialize, ToSchema)]
pub struct JobErrorBody {
    /// One of the error codes of [`OpenAiErrorDetail`].
    pub code: String,
    pub message: String,
}

/// An async job.
#[derive(Serialize, ToSchema)]
pub struct Job {
    pub id: String,
    /// Always `transcription.job`.
    pub object: String,
    /// `queued`, `running`, `completed`, `failed` or `cancelled`.
    pub status: String,
    pub model: String,
    pub response_format: String,
    /// When completed: the transcription in `response_format` (an object for
    /// `json`/`verbose_json`, a string for `text`/`srt`/`vtt`).
    pub result: Option<TranscriptionBody>,
    pub error: Option<JobErrorBody>,
    /// Unix seconds.
    pub created_at: i64,
    pub updated_at: i64,
    pub audio_seconds: Option<f64>,
    /// Deliveries so far (more than 1 after a worker died).
    pub attempts: u32,
}

#[derive(Serialize, ToSchema)]
pub struct JobList {
    /// Always `list`.
    pub object: String,
    /// Newest first.
    pub data: Vec<Job>,
    pub has_more: bool,
    /// Pass as `after` for the next page.
    pub next: Option<String>,
}

/// `/health`: `status` is `healthy` (200), or `loading`, `error`,
/// `unavailable`, `no_workers` (503). A gateway adds `workers`,
/// `pending_jobs`, `jobs_in_progress`, `dead_letters`, `model`,
/// `workers_serving_model`; an error adds `error`.
#[derive(Serialize, ToSchema)]
pub struct HealthBody {
    pub status: String,
    pub error: Option<String>,
}
