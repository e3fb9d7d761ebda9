//! OpenAI's audio API: `POST /v1/audio/transcriptions`,
//! `POST /v1/audio/translations`, `GET /v1/models`, with OpenAI's fields,
//! response formats and error shape.

use std::sync::Arc;

use axum::extract::{Multipart, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::{read_upload, request_id, run_transcription};
use crate::engine::{Task, Transcript};
use crate::error::{ApiError, OpenAiError};
use crate::formats::{self, ResponseFormat};
use crate::options::{self, RequestOptions};
use crate::state::AppState;

pub(crate) fn formatted(t: &Transcript, format: ResponseFormat, task: Task, g: formats::Granularities) -> Response {
    let _span = tracing::info_span!("response", format = format.as_str()).entered();
    let task = match task {
        Task::Transcribe => "transcribe",
        Task::Translate => "translate",
    };
    ([(header::CONTENT_TYPE, format.content_type())], formats::render(t, format, task, g)).into_response()
}

/// Names the `model` field may take: OpenAI's `whisper-1`, the configured
/// size, and the model folder's name.
pub(super) fn served_model_names(state: &AppState) -> Vec<String> {
    let mut names = vec!["whisper-1".to_string()];
    for n in state.dispatcher.model_names() {
        if !names.contains(&n) {
            names.push(n);
        }
    }
    names
}

/// Checks the `model` field (required, as OpenAI's API has it).
pub(super) fn check_model(state: &AppState, opts: &RequestOptions) -> Result<String, ApiError> {
    let model = opts.model.clone().ok_or(ApiError::MissingField("model"))?;
    if !served_model_names(state).contains(&model) {
        return Err(ApiError::UnknownModel(model));
    }
    Ok(model)
}

async fn route(state: Arc<AppState>, headers: HeaderMap, form: Multipart, task: Option<Task>) -> Result<Response, OpenAiError> {
    let upload = read_upload(form, "file", &state.config.limits).await?;
    let opts: RequestOptions = options::from_fields(&upload.fields, &state.config.decoding, &state.config.limits, task)?;
    check_model(&state, &opts)?;
    let format = opts.response_format.unwrap_or(ResponseFormat::Json);
    if opts.stream {
        // The events carry text: the formats of timed segments cannot be
        // streamed (OpenAI streams text only as well).
        if !matches!(format, ResponseFormat::Json | ResponseFormat::Text) {
            return Err(ApiError::InvalidParam {
                param: "stream",
                message: format!("`response_format` {} cannot be streamed; use json or text", format.as_str()),
            }
            .into());
        }
        return super::sse::respond(state, upload, opts.decode, request_id(&headers)).await;
    }
    let task = opts.decode.task;
    let size = upload.bytes.len();
    let outcome = run_transcription(&state, upload, opts.decode, request_id(&headers)).await?;
    Ok(super::with_access(formatted(&outcome.transcript, format, task, opts.granularities), &outcome, size))
}

/// OpenAI's transcription route.
#[utoipa::path(post, path = "/v1/audio/transcriptions", tag = "openai",
    request_body(content = crate::api::docs::OpenAiForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "The transcription in `response_format`; with `stream=true`, server-sent events \
(see `TranscriptionStreamEvent`)", content(
            (crate::api::docs::TranscriptionBody = "application/json"),
            (String = "text/plain"),
            (crate::api::docs::TranscriptionStreamEvent = "text/event-stream"))),
        crate::api::docs::TranscriptionErrors,
    ))]
pub(super) async fn transcriptions(State(state): State<Arc<AppState>>, headers: HeaderMap, form: Multipart) -> Result<Response, OpenAiError> {
    route(state, headers, form, None).await
}

/// OpenAI's translation route: speech in any language to English text.
#[utoipa::path(post, path = "/v1/audio/translations", tag = "openai",
    request_body(content = crate::api::docs::OpenAiForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "The transcription in `response_format`; with `stream=true`, server-sent events \
(see `TranscriptionStreamEvent`)", content(
            (crate::api::docs::TranscriptionBody = "application/json"),
            (String = "text/plain"),
            (crate::api::docs::TranscriptionStreamEvent = "text/event-stream"))),
        crate::api::docs::TranscriptionErrors,
    ))]
pub(super) async fn translations(State(state): State<Arc<AppState>>, headers: HeaderMap, form: Multipart) -> Result<Response, OpenAiError> {
    route(state, headers, form, Some(Task::Translate)).await
}

/// The model names the `model` field accepts.
#[utoipa::path(get, path = "/v1/models", tag = "openai",
    responses(
        (status = 200, description = "Served models", body = crate::api::docs::ModelList),
        (status = 401, description = "A key is required", body = crate::api::docs::OpenAiErrorBody),
    ))]
pub(super) async fn models(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let data: Vec<_> = served_model_names(&state)
        .into_iter()
        .map(|id| json!({"id": id, "object": "model", "created": 0, "owned_by": "whisper-serve"}))
        .collect();
    Json(json!({"object": "list", "data": data}))
}
