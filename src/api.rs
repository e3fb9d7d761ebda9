//! HTTP routes. The original service's API: `POST /transcribe` (multipart
//! field `audio_file`) answering `{success, text, latency, word_count,
//! gpu_memory, error}`, and `GET /health`; and OpenAI's audio API:
//! `POST /v1/audio/transcriptions`, `POST /v1/audio/translations`,
//! `GET /v1/models`, with OpenAI's fields, formats and error shape.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, Multipart, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::json;

use crate::engine::{DecodeOptions, Task, Transcript};
use crate::error::{ApiError, OpenAiError, TranscribeBody};
use crate::formats::{self, ResponseFormat};
use crate::options::{self, RequestOptions};
use crate::server::AppState;

pub fn router(state: Arc<AppState>) -> Router {
    // Room for the multipart framing around a file of the maximum size.
    let body_limit = (state.config.limits.max_upload_mb as usize) * 1024 * 1024 + 64 * 1024;
    Router::new()
        .route("/transcribe", post(transcribe))
        .route("/health", get(health))
        .route("/v1/audio/transcriptions", post(openai_transcriptions))
        .route("/v1/audio/translations", post(openai_translations))
        .route("/v1/models", get(openai_models))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    match state.readiness() {
        Ok(()) => Json(json!({"status": "healthy"})).into_response(),
        Err(Some(error)) => {
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "error", "error": error}))).into_response()
        }
        Err(None) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "loading"}))).into_response(),
    }
}

/// Prometheus text format: queue, batching and job counters.
async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    use std::fmt::Write;
    use std::sync::atomic::Ordering::Relaxed;
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: String| {
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n");
    };
    let ready = state.dispatcher().ok();
    metric("whisper_serve_ready", "gauge", "1 once the model is loaded", u8::from(ready.is_some()).to_string());
    if let Some(d) = ready {
        let s = d.stats();
        metric("whisper_serve_queue_length", "gauge", "Jobs waiting for a replica", d.queued().to_string());
        metric("whisper_serve_running", "gauge", "Transcriptions in progress", d.running().to_string());
        metric("whisper_serve_batch_steps_total", "counter", "Batched decoding steps", s.steps.load(Relaxed).to_string());
        metric("whisper_serve_batch_windows_total", "counter", "30 s windows decoded", s.windows.load(Relaxed).to_string());
        metric("whisper_serve_batch_size_max", "gauge", "Largest batch decoded so far", s.max_batch.load(Relaxed).to_string());
        metric("whisper_serve_jobs_done_total", "counter", "Transcriptions completed", s.jobs_done.load(Relaxed).to_string());
        metric("whisper_serve_jobs_failed_total", "counter", "Transcriptions failed", s.jobs_failed.load(Relaxed).to_string());
        let audio_s = s.audio_ms.load(Relaxed) as f64 / 1000.0;
        metric("whisper_serve_audio_seconds_total", "counter", "Seconds of audio transcribed", audio_s.to_string());
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// An uploaded file and the form's other fields.
pub struct Upload {
    pub filename: Option<String>,
    pub bytes: Bytes,
    /// The form's text fields, in order (names may repeat).
    pub fields: Vec<(String, String)>,
}

/// Reads a multipart form, taking the file from `file_field`.
pub async fn read_upload(mut form: Multipart, file_field: &'static str, limit_mb: u64) -> Result<Upload, ApiError> {
    let mut file = None;
    let mut fields = Vec::new();
    let too_large = |e: axum::extract::multipart::MultipartError| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::UploadTooLarge { limit_mb }
        } else {
            ApiError::BadMultipart(e.body_text())
        }
    };
    while let Some(field) = form.next_field().await.map_err(too_large)? {
        let name = field.name().unwrap_or_default().to_string();
        if name == file_field {
            let filename = field.file_name().map(str::to_string);
            let bytes = field.bytes().await.map_err(too_large)?;
            if bytes.len() as u64 > limit_mb * 1024 * 1024 {
                return Err(ApiError::UploadTooLarge { limit_mb });
            }
            file = Some((filename, bytes));
        } else {
            let value = field.text().await.map_err(too_large)?;
            fields.push((name, value));
        }
    }
    let (filename, bytes) = file.ok_or(ApiError::MissingField(file_field))?;
    Ok(Upload { filename, bytes, fields })
}

/// Checks the file name's extension against `supported_formats`. Names
/// without an extension are left to content detection.
pub fn check_extension(filename: Option<&str>, supported: &[String]) -> Result<(), ApiError> {
    let Some(name) = filename else { return Ok(()) };
    let Some((_, ext)) = name.rsplit_once('.') else { return Ok(()) };
    let ext = format!(".{}", ext.to_ascii_lowercase());
    if supported.iter().any(|s| s.eq_ignore_ascii_case(&ext)) {
        Ok(())
    } else {
        Err(ApiError::UnsupportedFormat { ext, supported: supported.join(", ") })
    }
}

/// Decodes an upload and runs it through the dispatcher, within the
/// request timeout. Shared by every transcription route.
pub async fn run_transcription(
    state: &AppState,
    upload: Upload,
    options: DecodeOptions,
) -> Result<Transcript, ApiError> {
    let limits = &state.config.limits;
    let dispatcher = state.dispatcher()?;
    check_extension(upload.filename.as_deref(), &state.config.model.supported_formats)?;
    if upload.bytes.is_empty() {
        return Err(ApiError::EmptyFile);
    }
    let _slot = state.admit()?;
    let max_s = limits.max_audio_seconds;
    let bytes = upload.bytes;
    let audio = tokio::task::spawn_blocking(move || crate::audio::decode(&bytes, max_s))
        .await
        .map_err(|e| ApiError::Engine(format!("decoder task failed: {e}")))??;
    let rx = dispatcher.submit(audio, options)?;
    let timeout = Duration::from_secs(limits.request_timeout_s);
    match tokio::time::timeout(timeout, rx).await {
        Err(_) => Err(ApiError::Timeout(limits.request_timeout_s)),
        Ok(Err(_)) => Err(ApiError::Engine("the worker stopped before answering".into())),
        Ok(Ok(result)) => result.map_err(ApiError::from),
    }
}

/// The original route. Its answer stays the original JSON unless the
/// request names a `response_format`.
async fn transcribe(State(state): State<Arc<AppState>>, form: Multipart) -> Result<Response, ApiError> {
    let started = Instant::now();
    let upload = read_upload(form, "audio_file", state.config.limits.max_upload_mb).await?;
    let opts = options::from_fields(&upload.fields, &state.config.decoding, &state.config.limits, None)?;
    let task = opts.decode.task;
    let transcript = run_transcription(&state, upload, opts.decode).await?;
    Ok(match opts.response_format {
        Some(format) => formatted(&transcript, format, task, opts.granularities),
        None => Json(TranscribeBody {
            success: true,
            word_count: transcript.text.split_whitespace().count(),
            text: transcript.text,
            latency: started.elapsed().as_secs_f64(),
            gpu_memory: state.gpu_memory_gb(),
            error: None,
        })
        .into_response(),
    })
}

fn formatted(t: &Transcript, format: ResponseFormat, task: Task, g: formats::Granularities) -> Response {
    let task = match task {
        Task::Transcribe => "transcribe",
        Task::Translate => "translate",
    };
    ([(header::CONTENT_TYPE, format.content_type())], formats::render(t, format, task, g)).into_response()
}

/// Names the `model` field may take: OpenAI's `whisper-1`, the configured
/// size, and the model folder's name.
fn served_model_names(state: &AppState) -> Vec<String> {
    let mut names = vec!["whisper-1".to_string(), state.config.model.size.clone()];
    if let Ok(d) = state.dispatcher() {
        if let Some(n) = d.engine().model_path().file_name().and_then(|n| n.to_str()) {
            names.push(n.to_string());
        }
    }
    names.dedup();
    names
}

async fn openai_route(state: Arc<AppState>, form: Multipart, task: Option<Task>) -> Result<Response, OpenAiError> {
    let upload = read_upload(form, "file", state.config.limits.max_upload_mb).await?;
    let opts: RequestOptions = options::from_fields(&upload.fields, &state.config.decoding, &state.config.limits, task)?;
    let model = opts.model.clone().ok_or(ApiError::MissingField("model"))?;
    if !served_model_names(&state).contains(&model) {
        return Err(ApiError::UnknownModel(model).into());
    }
    let format = opts.response_format.unwrap_or(ResponseFormat::Json);
    let task = opts.decode.task;
    let transcript = run_transcription(&state, upload, opts.decode).await?;
    Ok(formatted(&transcript, format, task, opts.granularities))
}

async fn openai_transcriptions(State(state): State<Arc<AppState>>, form: Multipart) -> Result<Response, OpenAiError> {
    openai_route(state, form, None).await
}

async fn openai_translations(State(state): State<Arc<AppState>>, form: Multipart) -> Result<Response, OpenAiError> {
    openai_route(state, form, Some(Task::Translate)).await
}

async fn openai_models(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let data: Vec<_> = served_model_names(&state)
        .into_iter()
        .map(|id| json!({"id": id, "object": "model", "created": 0, "owned_by": "whisper-serve"}))
        .collect();
    Json(json!({"object": "list", "data": data}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_are_checked_case_insensitively() {
        let formats = vec![".wav".to_string(), ".mp3".to_string()];
        assert!(check_extension(Some("a.WAV"), &formats).is_ok());
        assert!(check_extension(Some("noext"), &formats).is_ok());
        assert!(check_extension(None, &formats).is_ok());
        assert!(matches!(check_extension(Some("notes.txt"), &formats), Err(ApiError::UnsupportedFormat { .. })));
    }
}
