//! HTTP routes. The original service's API: `POST /transcribe` (multipart
//! field `audio_file`) answering `{success, text, latency, word_count,
//! gpu_memory, error}`, and `GET /health`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, Multipart, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::json;

use crate::engine::{DecodeOptions, Transcript};
use crate::error::{ApiError, TranscribeBody};
use crate::server::AppState;

pub fn router(state: Arc<AppState>) -> Router {
    // Room for the multipart framing around a file of the maximum size.
    let body_limit = (state.config.limits.max_upload_mb as usize) * 1024 * 1024 + 64 * 1024;
    Router::new()
        .route("/transcribe", post(transcribe))
        .route("/health", get(health))
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

/// An uploaded file and the form's other fields.
pub struct Upload {
    pub filename: Option<String>,
    pub bytes: Bytes,
    pub fields: HashMap<String, String>,
}

/// Reads a multipart form, taking the file from `file_field`.
pub async fn read_upload(mut form: Multipart, file_field: &'static str, limit_mb: u64) -> Result<Upload, ApiError> {
    let mut file = None;
    let mut fields = HashMap::new();
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
            fields.insert(name, value);
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

async fn transcribe(State(state): State<Arc<AppState>>, form: Multipart) -> Result<Json<TranscribeBody>, ApiError> {
    let started = Instant::now();
    let upload = read_upload(form, "audio_file", state.config.limits.max_upload_mb).await?;
    let options = state.default_decode_options();
    let transcript = run_transcription(&state, upload, options).await?;
    Ok(Json(TranscribeBody {
        success: true,
        word_count: transcript.text.split_whitespace().count(),
        text: transcript.text,
        latency: started.elapsed().as_secs_f64(),
        gpu_memory: state.gpu_memory_gb(),
        error: None,
    }))
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
