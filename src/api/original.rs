//! The original service's route: `POST /transcribe` with the multipart
//! field `audio_file`, answering `{success, text, latency, word_count,
//! gpu_memory, error}` unless the request names a `response_format`.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Multipart, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::{read_upload, request_id, run_transcription};
use crate::error::{ApiError, TranscribeBody};
use crate::options;
use crate::state::AppState;

/// Transcribes an upload: the original service's route. Without
/// `response_format` it answers `{success, text, latency, word_count,
/// gpu_memory, error}`; with one, as the OpenAI routes do. Errors come in
/// the same body with `success: false`.
#[utoipa::path(post, path = "/transcribe", tag = "original",
    request_body(content = crate::api::docs::OriginalForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "Transcribed", content(
            (crate::api::docs::OriginalAnswer = "application/json"),
            (String = "text/plain"))),
        (status = 400, description = "Bad form, option or audio", body = crate::api::docs::OriginalErrorBody),
        (status = 401, description = "A key is required", body = crate::api::docs::OriginalErrorBody),
        (status = 413, description = "Upload or audio too long", body = crate::api::docs::OriginalErrorBody),
        (status = 429, description = "Rate limit or quota", body = crate::api::docs::OriginalErrorBody),
        (status = 500, description = "The engine failed", body = crate::api::docs::OriginalErrorBody),
        (status = 503, description = "Queue full, loading or no worker", body = crate::api::docs::OriginalErrorBody),
        (status = 504, description = "Timed out", body = crate::api::docs::OriginalErrorBody),
    ))]
pub(super) async fn transcribe(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    form: Multipart,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let upload = read_upload(form, "audio_file", &state.config.limits).await?;
    let opts = options::from_fields(&upload.fields, &state.config.decoding, &state.config.limits, None)?;
    let task = opts.decode.task;
    let size = upload.bytes.len();
    let outcome = run_transcription(&state, upload, opts.decode, None, request_id(&headers)).await?;
    let transcript = &outcome.transcript;
    let resp = match opts.response_format {
        Some(format) => super::openai::formatted(transcript, format, task, opts.granularities),
        None => Json(TranscribeBody {
            success: true,
            word_count: transcript.text.split_whitespace().count(),
            text: transcript.text.clone(),
            latency: started.elapsed().as_secs_f64(),
            gpu_memory: outcome.gpu_memory_gb,
            error: None,
        })
        .into_response(),
    };
    Ok(super::with_access(resp, &outcome, size))
}
