//! HTTP routes, one file per family: the original service's
//! ([`original`]: `POST /transcribe`), OpenAI's audio API ([`openai`]),
//! async jobs ([`jobs`]); health and metrics here. Every route talks to the
//! state's [`Dispatcher`](crate::dispatch::Dispatcher) and so works the same
//! under `serve` and `gateway`.

pub mod docs;
mod jobs;
mod models;
mod openai;
mod original;
mod realtime;
mod sse;
pub mod stats;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Multipart, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use bytes::Bytes;
use serde_json::json;

use crate::dispatch::{Outcome, Work};
use crate::engine::DecodeOptions;
use crate::error::ApiError;
use crate::state::AppState;

pub use crate::state::{HEALTH_PATH, LIVENESS_PATH, METRICS_PATH, STATS_PATH};

/// Every route, each with its entry in the OpenAPI document: routes are
/// added only through `routes!`, which takes the path and method from the
/// handler's `#[utoipa::path]`, so nothing is served undocumented
/// (`tests/openapi.rs` also checks the source for plain `.route(` calls).
fn routes(web_ui: bool) -> OpenApiRouter<Arc<AppState>> {
    let api = OpenApiRouter::with_openapi(docs::ApiDoc::openapi())
        .routes(routes!(original::transcribe))
        .routes(routes!(openai::transcriptions))
        .routes(routes!(openai::translations))
        .routes(routes!(models::list_models))
        .routes(routes!(models::load_model, models::unload_model))
        .routes(routes!(realtime::realtime))
        .routes(routes!(jobs::create, jobs::list))
        .routes(routes!(jobs::get, jobs::cancel))
        .routes(routes!(stats::stats))
        .merge(probe_routes());
    if !web_ui {
        return api;
    }
    api.routes(routes!(crate::web::index))
        .routes(routes!(crate::web::dashboard))
        .routes(routes!(crate::web::asset))
        .routes(routes!(docs::openapi_json))
}

pub fn router(state: Arc<AppState>) -> Router {
    // Room for the multipart framing around a file of the maximum size.
    let limit_mb = state.config.limits.max_upload_mb;
    let body_limit = (limit_mb as usize) * 1024 * 1024 + 64 * 1024;
    let web_ui = state.config.server.web_ui;
    let (api, mut doc) = routes(web_ui).split_for_parts();
    let api = if web_ui {
        docs::finish(&mut doc);
        docs::set_document(&doc);
        api.merge(docs::swagger_ui())
    } else {
        api
    };
    api.merge(test_faults())
        // Unknown routes: answered in the route family's JSON by error::shape_errors.
        .fallback(|| async { StatusCode::NOT_FOUND })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn(move |req, next| refuse_declared_oversize(req, next, body_limit, limit_mb)))
        .with_state(state)
}

/// A failed form is read on (and dropped) for at most this long before the
/// answer, so a client still sending gets the answer rather than a reset
/// connection; the body deadline and body limit bound it as well.
const DRAIN_FOR: Duration = Duration::from_secs(5);

/// An upload whose Content-Length is over the limit is answered 413 before
/// its body is read. (tower-http's `RequestBodyLimitLayer` refuses a large
/// Content-Length up front as well, but answers in its own plain text,
/// which `shape_errors` could only pass on as "length limit exceeded",
/// without the limit in MB; axum's `DefaultBodyLimit` above then caps
/// bodies that declare no length, as multipart errors that map to 413.) Clients that send `Expect: 100-continue` (curl, most
/// HTTP libraries for large bodies) then get the answer instead of a
/// `100 Continue`, and do not send the body: refusing it half-way, after
/// the 100, makes the server close a connection the client is still
/// writing to, and the 413 can be lost in the reset.
async fn refuse_declared_oversize(req: axum::extract::Request, next: axum::middleware::Next, body_limit: usize, limit_mb: u64) -> Response {
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > body_limit as u64) {
        return crate::error::render_for_path(req.uri().path(), ApiError::UploadTooLarge { limit_mb });
    }
    next.run(req).await
}

/// With `WHISPER_SERVE_TEST_FAULTS=1` only: `/__test/panic` panics inside
/// its handler, so tests can check that a panic is answered 500 and the
/// server stays up.
fn test_faults() -> Router<Arc<AppState>> {
    if std::env::var("WHISPER_SERVE_TEST_FAULTS").as_deref() == Ok("1") {
        Router::new().route("/__test/panic", get(|| async {
            if std::env::var("WHISPER_SERVE_TEST_FAULTS").is_ok() {
                panic!("test fault: a handler panicked");
            }
            StatusCode::OK
        }))
    } else {
        Router::new()
    }
}

/// `/health`, `/health/live` and `/metrics`: all a cluster worker serves.
pub fn probes() -> Router<Arc<AppState>> {
    probe_routes().split_for_parts().0
}

fn probe_routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(health)).routes(routes!(liveness)).routes(routes!(metrics))
}

/// Readiness: 200 once this process can serve (the model loaded; on a
/// gateway, a live worker serves the model), else 503 with the reason.
#[utoipa::path(get, path = "/health", tag = "service",
    responses(
        (status = 200, description = "Ready", body = docs::HealthBody),
        (status = 503, description = "Not ready: loading, failed, no worker, NATS unreachable", body = docs::HealthBody),
    ))]
async fn health(State(state): State<Arc<AppState>>) -> Response {
    let h = state.dispatcher.health().await;
    let mut body = serde_json::Map::new();
    body.insert("status".into(), h.status.into());
    body.extend(h.details);
    let status = if h.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(serde_json::Value::Object(body))).into_response()
}

/// Liveness: 200 while the process answers at all.
#[utoipa::path(get, path = "/health/live", tag = "service",
    responses((status = 200, description = "Alive: `{\"status\": \"alive\"}`")))]
async fn liveness() -> Json<serde_json::Value> {
    Json(json!({"status": "alive"}))
}

/// Prometheus metrics (text exposition format): requests by route and
/// status, latencies, queue wait, inference, batch sizes, replicas, jobs.
#[utoipa::path(get, path = "/metrics", tag = "service",
    responses(
        (status = 200, description = "Prometheus text format", content_type = "text/plain"),
        (status = 401, description = "A key is required (`auth.metrics_requires_key`)", body = docs::OriginalErrorBody),
    ))]
async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let ready = state.dispatcher.health().await.ready;
    render_metrics(ready, state.dispatcher.pool().map(|p| p.numbers()))
}

/// The metrics of a process, with its engine pool when it has one.
pub fn render_metrics(ready: bool, pool: Option<crate::telemetry::metrics::PoolNumbers>) -> Response {
    let text = crate::telemetry::metrics::render(ready, pool);
    ([(header::CONTENT_TYPE, crate::telemetry::metrics::CONTENT_TYPE)], text).into_response()
}

/// An uploaded file and the form's other fields.
pub struct Upload {
    pub filename: Option<String>,
    pub bytes: Bytes,
    /// The form's text fields, in order (names may repeat).
    pub fields: Vec<(String, String)>,
}

/// Maps a multipart error: over the body limit is 413, the rest 400.
pub(crate) fn multipart_error(limit_mb: u64) -> impl Fn(axum::extract::multipart::MultipartError) -> ApiError {
    move |e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::UploadTooLarge { limit_mb }
        } else {
            ApiError::BadMultipart(e.body_text())
        }
    }
}

/// Reads a multipart form, taking the file from `file_field` (in an
/// `upload` span).
pub async fn read_upload(form: Multipart, file_field: &'static str, limits: &crate::config::LimitsConfig) -> Result<Upload, ApiError> {
    let (limit_mb, field_limit) = (limits.max_upload_mb, limits.max_field_bytes);
    use tracing::Instrument;
    read_form(form, file_field, limit_mb, field_limit).instrument(tracing::info_span!("upload")).await
}

async fn read_form(mut form: Multipart, file_field: &'static str, limit_mb: u64, field_limit: usize) -> Result<Upload, ApiError> {
    let mut file = None;
    let mut fields = Vec::new();
    let too_large = multipart_error(limit_mb);
    while let Some(field) = form.next_field().await.map_err(&too_large)? {
        let name = field.name().unwrap_or_default().to_string();
        if name == file_field {
            let filename = field.file_name().map(str::to_string);
            let bytes = field.bytes().await.map_err(&too_large)?;
            if bytes.len() as u64 > limit_mb * 1024 * 1024 {
                return Err(ApiError::UploadTooLarge { limit_mb });
            }
            file = Some((filename, bytes));
        } else {
            match text_field(field, field_limit, &too_large).await {
                Ok(value) => fields.push((name, value)),
                Err(e @ ApiError::FieldTooLarge { .. }) => {
                    let file_later = tokio::time::timeout(DRAIN_FOR, drain_form(form, file_field)).await.unwrap_or(true);
                    // No audio under its name at all: the large field is
                    // most likely the audio under another name, so say that.
                    return Err(if file.is_none() && !file_later { ApiError::MissingField(file_field) } else { e });
                }
                Err(e) => return Err(e),
            }
        }
    }
    let (filename, bytes) = file.ok_or(ApiError::MissingField(file_field))?;
    Ok(Upload { filename, bytes, fields })
}

/// A text field of at most `limit` bytes, read a chunk at a time so a
/// larger one is never held whole: past the limit the rest of the field is
/// read and dropped, and the answer is `FieldTooLarge` (naming the field,
/// never quoting it).
pub(crate) async fn text_field(
    mut field: axum::extract::multipart::Field<'_>,
    limit: usize,
    bad: &impl Fn(axum::extract::multipart::MultipartError) -> ApiError,
) -> Result<String, ApiError> {
    let mut value = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(bad)? {
        if value.len() + chunk.len() > limit {
            let field_name = field.name().unwrap_or_default().to_string();
            let _ = tokio::time::timeout(DRAIN_FOR, async { while let Ok(Some(_)) = field.chunk().await {} }).await;
            return Err(ApiError::FieldTooLarge { field: field_name, limit });
        }
        value.extend_from_slice(&chunk);
    }
    // As `Field::text` does for UTF-8: malformed bytes become U+FFFD.
    Ok(match String::from_utf8(value) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    })
}

/// Reads and drops the rest of a form; says whether it had a field named
/// `file_field`.
async fn drain_form(mut form: Multipart, file_field: &str) -> bool {
    let mut seen = false;
    while let Ok(Some(mut field)) = form.next_field().await {
        seen |= field.name() == Some(file_field);
        while let Ok(Some(_)) = field.chunk().await {}
    }
    seen
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

/// Runs an upload through the dispatcher, within the request timeout.
/// Shared by every synchronous transcription route.
pub async fn run_transcription(
    state: &AppState,
    upload: Upload,
    options: DecodeOptions,
    model: Option<String>,
    request_id: String,
) -> Result<Outcome, ApiError> {
    let limits = &state.config.limits;
    check_extension(upload.filename.as_deref(), &state.config.model.supported_formats)?;
    if upload.bytes.is_empty() {
        return Err(ApiError::EmptyFile);
    }
    let _slot = state.admit()?;
    let work = Work {
        audio: upload.bytes,
        options,
        model,
        request_id,
        timeout: Duration::from_secs(limits.request_timeout_s),
        progress: None,
    };
    Ok(state.dispatcher.transcribe(work).await?)
}

/// Tells the access line (and the audio quota) what a transcription did.
pub(crate) fn with_access(mut resp: Response, outcome: &Outcome, upload_bytes: usize) -> Response {
    resp.extensions_mut().insert(crate::telemetry::access::AccessInfo {
        audio_seconds: Some(outcome.transcript.duration),
        queue_wait_s: Some(outcome.queue_wait_s),
        inference_s: Some(outcome.inference_s),
        upload_bytes: Some(upload_bytes as u64),
        text: Some(outcome.transcript.text.clone()),
    });
    resp
}

/// The request id the request-id layer gave this request.
pub(crate) fn request_id(headers: &axum::http::HeaderMap) -> String {
    headers.get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-").to_string()
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
