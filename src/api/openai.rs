//! OpenAI's audio API: `POST /v1/audio/transcriptions`,
//! `POST /v1/audio/translations`, `GET /v1/models`, with OpenAI's fields,
//! response formats and error shape.

use std::sync::Arc;

use axum::extract::{Multipart, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};

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

/// Checks the `model` field (required, as OpenAI's API has it): a model
/// served here, else 404 naming the models present.
pub(super) async fn check_model(state: &AppState, opts: &RequestOptions) -> Result<String, ApiError> {
    let model = opts.model.clone().ok_or(ApiError::MissingField("model"))?;
    if !state.dispatcher.serves(&model).await {
        let present: Vec<String> = state.dispatcher.models().await.into_iter().filter(|m| m.state != "downloadable").map(|m| m.id).collect();
        return Err(ApiError::ModelNotServed { name: model, present: present.join(", ") });
    }
    Ok(model)
}

async fn route(state: Arc<AppState>, headers: HeaderMap, form: Multipart, task: Option<Task>) -> Result<Response, OpenAiError> {
    let upload = read_upload(form, "file", &state.config.limits).await?;
    let opts: RequestOptions = options::from_fields(&upload.fields, &state.config.decoding, &state.config.limits, task)?;
    let model = check_model(&state, &opts).await?;
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
        return super::sse::respond(state, upload, opts.decode, Some(model), request_id(&headers)).await;
    }
    let task = opts.decode.task;
    let size = upload.bytes.len();
    let outcome = run_transcription(&state, upload, opts.decode, Some(model), request_id(&headers)).await?;
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

