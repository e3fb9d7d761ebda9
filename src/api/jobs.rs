//! Async jobs: `POST /v1/jobs` (the fields of `/v1/audio/transcriptions`
//! plus `callback_url`) answers 202 at once; `GET /v1/jobs/{id}` tells the
//! status and, when done, the result; `DELETE /v1/jobs/{id}` cancels;
//! `GET /v1/jobs` lists recent jobs. The upload is streamed into the
//! dispatcher's storage, never held whole in memory.

use std::sync::Arc;

use axum::extract::{Extension, Multipart, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::{StreamExt, TryStreamExt};
use serde_json::json;

use super::{check_extension, multipart_error, request_id};
use crate::error::{ApiError, OpenAiError};
use crate::formats::ResponseFormat;
use crate::jobs::{self, Caller, JobRecord, JobRequest};
use crate::options;
use crate::state::AppState;

const DEFAULT_PAGE: usize = 20;
const MAX_PAGE: usize = 100;

/// Submits a job: answers 202 at once with the queued job and its
/// `Location`; poll it or give a `callback_url`.
#[utoipa::path(post, path = "/v1/jobs", tag = "jobs",
    request_body(content = crate::api::docs::JobForm, content_type = "multipart/form-data"),
    responses(
        (status = 202, description = "Queued", body = crate::api::docs::Job,
            headers(("Location" = String, description = "`/v1/jobs/{id}`"))),
        crate::api::docs::TranscriptionErrors,
    ))]
pub(super) async fn create(
    State(state): State<Arc<AppState>>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    form: Multipart,
) -> Result<Response, OpenAiError> {
    let id = jobs::new_id();
    let caller = who(caller);
    // A client that goes away drops this future wherever it waits: the
    // guard then removes whatever of the upload was stored.
    let mut unqueued = DiscardUnlessQueued(Some((state.dispatcher.clone(), id.clone())));
    match receive(&state, &id, &caller, &headers, form).await {
        Ok(record) => {
            unqueued.0 = None;
            let location = format!("/v1/jobs/{}", record.id);
            let mut resp = (StatusCode::ACCEPTED, [(header::LOCATION, location)], Json(jobs::public_json(&record))).into_response();
            resp.extensions_mut().insert(jobs::Accepted(record.id));
            Ok(resp)
        }
        Err(e) => {
            unqueued.0 = None;
            state.dispatcher.discard_audio(&id).await;
            Err(e.into())
        }
    }
}

/// Discards a job's stored upload when dropped armed: the request ended
/// (its client gone) before the job was queued.
struct DiscardUnlessQueued(Option<(Arc<dyn crate::dispatch::Dispatcher>, String)>);

impl Drop for DiscardUnlessQueued {
    fn drop(&mut self) {
        if let Some((dispatcher, id)) = self.0.take() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move { dispatcher.discard_audio(&id).await });
            }
        }
    }
}

/// The caller the key middleware found (it always sets one; anonymous
/// is only a fallback that sees nothing but anonymous jobs).
fn who(caller: Option<Extension<Caller>>) -> Caller {
    caller.map_or_else(Caller::anonymous, |Extension(c)| c)
}

async fn receive(state: &AppState, id: &str, caller: &Caller, headers: &HeaderMap, mut form: Multipart) -> Result<JobRecord, ApiError> {
    let limit_mb = state.config.limits.max_upload_mb;
    let bad = multipart_error(limit_mb);
    let mut fields = Vec::new();
    let mut filename = None;
    let mut stored = None;
    let mut callback_url = None;
    while let Some(field) = form.next_field().await.map_err(&bad)? {
        let name = field.name().unwrap_or_default().to_string();
        match name.as_str() {
            "file" => {
                filename = field.file_name().map(str::to_string);
                check_extension(filename.as_deref(), &state.config.model.supported_formats)?;
                let stream = field.map_err(|e| std::io::Error::other(e.body_text())).boxed();
                stored = Some(state.dispatcher.store_audio(id, stream, limit_mb * 1024 * 1024).await?);
            }
            "callback_url" => {
                let url = super::text_field(field, state.config.limits.max_field_bytes, &bad).await?;
                let url = url.trim();
                if !url.is_empty() {
                    // Validated with the config, so this cannot fail here.
                    let allow = jobs::webhook::AllowList::new(&state.config.jobs.webhook_allow_hosts)
                        .map_err(|e| ApiError::Internal(format!("jobs.webhook_allow_hosts: {e}")))?;
                    jobs::webhook::check_callback_url(url, &allow)
                        .await
                        .map_err(|message| ApiError::InvalidParam { param: "callback_url", message })?;
                    callback_url = Some(url.to_string());
                }
            }
            _ => fields.push((name, super::text_field(field, state.config.limits.max_field_bytes, &bad).await?)),
        }
    }
    match stored {
        None => return Err(ApiError::MissingField("file")),
        Some(0) => return Err(ApiError::EmptyFile),
        Some(_) => {}
    }
    let opts = options::from_fields(&fields, &state.config.decoding, &state.config.limits, None)?;
    let model = match opts.model.clone() {
        // Optional here: a job names the served model unless it says otherwise.
        None => "whisper-1".to_string(),
        Some(_) => super::openai::check_model(state, &opts).await?,
    };
    let request = JobRequest {
        decode: opts.decode,
        response_format: opts.response_format.unwrap_or(ResponseFormat::Json),
        granularities: opts.granularities,
        model,
        callback_url,
        filename,
        request_id: request_id(headers),
        owner: caller.id.clone(),
    };
    let record = state.dispatcher.enqueue(JobRecord::new(id.to_string(), request)).await?;
    tracing::info!(job_id = %record.id, "job queued");
    Ok(record)
}

/// A job's status and, once completed, its result. Only the key that
/// submitted the job (or an `admin` key) sees it; for any other key it
/// does not exist (404).
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "The job's id")),
    responses(
        (status = 200, description = "The job", body = crate::api::docs::Job),
        (status = 401, description = "A key is required", body = crate::api::docs::OpenAiErrorBody),
        (status = 404, description = "No such job (`job_not_found`; results expire after `jobs.result_ttl_s`)", body = crate::api::docs::OpenAiErrorBody),
    ))]
pub(super) async fn get(
    State(state): State<Arc<AppState>>,
    caller: Option<Extension<Caller>>,
    Path(id): Path<String>,
) -> Result<Response, OpenAiError> {
    let record = state.dispatcher.job(&id, &who(caller)).await.map_err(ApiError::from)?;
    Ok(Json(jobs::public_json(&record)).into_response())
}

/// Cancels a queued or running job.
#[utoipa::path(delete, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "The job's id")),
    responses(
        (status = 200, description = "Cancelled; the job as it is now", body = crate::api::docs::Job),
        (status = 401, description = "A key is required", body = crate::api::docs::OpenAiErrorBody),
        (status = 404, description = "No such job", body = crate::api::docs::OpenAiErrorBody),
        (status = 409, description = "Already final (`conflict`)", body = crate::api::docs::OpenAiErrorBody),
    ))]
pub(super) async fn cancel(
    State(state): State<Arc<AppState>>,
    caller: Option<Extension<Caller>>,
    Path(id): Path<String>,
) -> Result<Response, OpenAiError> {
    let record = state.dispatcher.cancel(&id, &who(caller)).await.map_err(ApiError::from)?;
    Ok(Json(jobs::public_json(&record)).into_response())
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ListQuery {
    /// Jobs per page, 1 to 100 (default 20).
    limit: Option<usize>,
    /// The `next` of the previous page.
    after: Option<String>,
}

/// The caller's recent jobs (an `admin` key: everyone's), newest first, a
/// page at a time.
#[utoipa::path(get, path = "/v1/jobs", tag = "jobs", params(ListQuery),
    responses(
        (status = 200, description = "A page of jobs", body = crate::api::docs::JobList),
        (status = 400, description = "`limit` out of range", body = crate::api::docs::OpenAiErrorBody),
        (status = 401, description = "A key is required", body = crate::api::docs::OpenAiErrorBody),
    ))]
pub(super) async fn list(
    State(state): State<Arc<AppState>>,
    caller: Option<Extension<Caller>>,
    Query(q): Query<ListQuery>,
) -> Result<Response, OpenAiError> {
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::InvalidParam { param: "limit", message: format!("`{limit}` is not from 1 to {MAX_PAGE}") }.into());
    }
    let page = state.dispatcher.jobs(limit, q.after, &who(caller)).await.map_err(ApiError::from)?;
    let data: Vec<_> = page.jobs.iter().map(jobs::public_json).collect();
    Ok(Json(json!({"object": "list", "data": data, "has_more": page.next.is_some(), "next": page.next})).into_response())
}
