//! Every error a request can meet, and its HTTP status, in one place.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::audio::AudioError;
use crate::dispatch::DispatchError;
use crate::engine::EngineError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing multipart field `{0}`")]
    MissingField(&'static str),
    #[error("invalid multipart body: {}", truncate(.0, MAX_MESSAGE))]
    BadMultipart(String),
    #[error("empty file")]
    EmptyFile,
    #[error("unsupported format `{}`; supported: {supported}", echo(.ext))]
    UnsupportedFormat { ext: String, supported: String },
    #[error("invalid audio: {0}")]
    InvalidAudio(String),
    #[error("upload larger than the limit of {limit_mb} MB")]
    UploadTooLarge { limit_mb: u64 },
    #[error("audio longer than the limit of {limit_s} s")]
    AudioTooLong { limit_s: f64 },
    /// The same, as a cluster worker worded it.
    #[error("{0}")]
    AudioTooLongRemote(String),
    #[error("invalid parameter `{param}`: {message}")]
    InvalidParam { param: &'static str, message: String },
    /// A form field over `limits.max_field_bytes`; its value is never quoted.
    #[error("form field `{}` is longer than {limit} bytes", echo(.field))]
    FieldTooLarge { field: String, limit: usize },
    #[error("server overloaded: the queue is full, retry later")]
    QueueFull { retry_after_s: u64 },
    #[error("the model is still loading")]
    Loading,
    #[error("the service is shutting down")]
    ShuttingDown,
    #[error("transcription timed out after {0} s")]
    Timeout(u64),
    #[error("the model `{}` is not served here", echo(.0))]
    UnknownModel(String),
    #[error("the model `{}` is not served here; models present: {present}", echo(.name))]
    ModelNotServed { name: String, present: String },
    #[error("transcription failed: {0}")]
    Engine(String),
    #[error("service unavailable: {reason}")]
    Unavailable { reason: String, retry_after_s: u64 },
    #[error("job `{}` not found", echo(.0))]
    JobNotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("missing or invalid API key (send `Authorization: Bearer <key>` or `X-API-Key: <key>`)")]
    Unauthorized,
    #[error("rate limit exceeded; retry in {retry_after_s} s")]
    RateLimited { retry_after_s: u64 },
    #[error("daily audio quota used up; retry in {retry_after_s} s")]
    QuotaExceeded { retry_after_s: u64 },
    /// Under the quota, but this key's requests in flight could use the rest.
    #[error("the key's daily audio quota is nearly used: its requests in flight could use the rest; retry when one has finished")]
    QuotaBusy,
    /// The key has as many jobs (or bytes of them) queued as it may.
    #[error("{0}")]
    TooManyJobs(String),
    #[error("the request body did not arrive within {0} s")]
    BodyTimeout(u64),
    /// A valid key that may not do this (an `admin` key's operation).
    #[error("{0}")]
    Forbidden(String),
    #[error("internal error: {0}")]
    Internal(String),
    /// A rejection by the HTTP framework itself (no route, wrong method,
    /// unreadable body), with its status and text.
    #[error("{message}")]
    Http { status: u16, message: String },
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        use ApiError::*;
        match self {
            MissingField(_) | BadMultipart(_) | EmptyFile | UnsupportedFormat { .. }
            | InvalidAudio(_) | InvalidParam { .. } | FieldTooLarge { .. } => StatusCode::BAD_REQUEST,
            UnknownModel(_) | ModelNotServed { .. } | JobNotFound(_) => StatusCode::NOT_FOUND,
            Conflict(_) => StatusCode::CONFLICT,
            Unauthorized => StatusCode::UNAUTHORIZED,
            Forbidden(_) => StatusCode::FORBIDDEN,
            RateLimited { .. } | QuotaExceeded { .. } | QuotaBusy | TooManyJobs(_) => StatusCode::TOO_MANY_REQUESTS,
            BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Http { status, .. } => StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST),
            Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            UploadTooLarge { .. } | AudioTooLong { .. } | AudioTooLongRemote(_) => StatusCode::PAYLOAD_TOO_LARGE,
            QueueFull { .. } | Loading | ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Engine(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The request field at fault, for OpenAI's error shape.
    pub fn param(&self) -> Option<&'static str> {
        use ApiError::*;
        match self {
            MissingField(f) => Some(f),
            InvalidParam { param, .. } => Some(param),
            UnknownModel(_) | ModelNotServed { .. } => Some("model"),
            EmptyFile | UnsupportedFormat { .. } | InvalidAudio(_) | UploadTooLarge { .. } | AudioTooLong { .. }
            | AudioTooLongRemote(_) => {
                Some("file")
            }
            _ => None,
        }
    }

    /// Seconds a client should wait before retrying, where that makes sense.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::QueueFull { retry_after_s }
            | ApiError::Unavailable { retry_after_s, .. }
            | ApiError::RateLimited { retry_after_s }
            | ApiError::QuotaExceeded { retry_after_s } => Some(*retry_after_s),
            ApiError::Loading | ApiError::ShuttingDown => Some(5),
            ApiError::QuotaBusy => Some(1),
            ApiError::TooManyJobs(_) => Some(30),
            _ => None,
        }
    }

    /// A short machine-readable code, used in logs and metrics labels.
    pub fn code(&self) -> &'static str {
        use ApiError::*;
        match self {
            MissingField(_) => "missing_field",
            BadMultipart(_) => "bad_multipart",
            EmptyFile => "empty_file",
            UnsupportedFormat { .. } => "unsupported_format",
            InvalidAudio(_) => "invalid_audio",
            UploadTooLarge { .. } => "upload_too_large",
            AudioTooLong { .. } | AudioTooLongRemote(_) => "audio_too_long",
            InvalidParam { .. } => "invalid_param",
            FieldTooLarge { .. } => "field_too_large",
            QueueFull { .. } => "queue_full",
            Loading => "loading",
            ShuttingDown => "shutting_down",
            Timeout(_) => "timeout",
            UnknownModel(_) | ModelNotServed { .. } => "model_not_found",
            Engine(_) => "engine_error",
            Unavailable { .. } => "unavailable",
            JobNotFound(_) => "job_not_found",
            Conflict(_) => "conflict",
            Unauthorized => "invalid_api_key",
            Forbidden(_) => "forbidden",
            RateLimited { .. } => "rate_limit_exceeded",
            QuotaExceeded { .. } => "quota_exceeded",
            QuotaBusy => "quota_busy",
            TooManyJobs(_) => "too_many_jobs",
            BodyTimeout(_) => "request_timeout",
            Internal(_) => "internal_error",
            Http { status: 404, .. } => "not_found",
            Http { status: 405, .. } => "method_not_allowed",
            Http { status: 413, .. } => "upload_too_large",
            Http { status: 415, .. } => "unsupported_media_type",
            Http { .. } => "bad_request",
        }
    }
}

impl From<AudioError> for ApiError {
    fn from(e: AudioError) -> Self {
        match e {
            AudioError::Empty => ApiError::EmptyFile,
            AudioError::TooLong { limit_s, .. } => ApiError::AudioTooLong { limit_s },
            other => ApiError::InvalidAudio(other.to_string()),
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::BadOption(message) => ApiError::InvalidParam { param: "language", message },
            other => ApiError::Engine(other.to_string()),
        }
    }
}

impl From<DispatchError> for ApiError {
    fn from(e: DispatchError) -> Self {
        use DispatchError as D;
        match e {
            D::QueueFull { retry_after_s } => ApiError::QueueFull { retry_after_s },
            D::Unavailable { reason, retry_after_s } => ApiError::Unavailable { reason, retry_after_s },
            D::Loading => ApiError::Loading,
            D::ShuttingDown => ApiError::ShuttingDown,
            D::Timeout(s) => ApiError::Timeout(s),
            D::Audio(a) => a.into(),
            D::BadOption(message) => ApiError::InvalidParam { param: "language", message },
            D::UploadTooLarge { limit_mb } => ApiError::UploadTooLarge { limit_mb },
            D::Engine(m) => ApiError::Engine(m),
            D::NotFound(id) => ApiError::JobNotFound(id),
            e @ D::AlreadyFinal { .. } => ApiError::Conflict(e.to_string()),
            D::Upload(m) => ApiError::BadMultipart(m),
            D::TooManyJobs(m) => ApiError::TooManyJobs(m),
            D::UnknownModel { name, present } => ApiError::ModelNotServed { name, present: present.join(", ") },
            D::InUse(m) => ApiError::Conflict(m),
            D::ModelBusy { reason, retry_after_s } => ApiError::Unavailable { reason, retry_after_s },
            // A worker's refusal carries the code it would have answered with.
            D::Rejected(j) => match j.code.as_str() {
                "empty_file" => ApiError::EmptyFile,
                "audio_too_long" => ApiError::AudioTooLongRemote(j.message),
                "invalid_param" => ApiError::InvalidParam { param: "language", message: j.message },
                "upload_too_large" => ApiError::InvalidAudio(j.message),
                "invalid_audio" => ApiError::InvalidAudio(j.message),
                _ => ApiError::Engine(j.message),
            },
        }
    }
}

/// The original service's response body, for success and failure alike.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TranscribeBody {
    pub success: bool,
    pub text: String,
    pub latency: f64,
    pub word_count: usize,
    pub gpu_memory: f64,
    pub error: Option<String>,
}

impl ApiError {
    fn log(&self) {
        match self {
            ApiError::Loading => tracing::debug!(code = self.code(), "{self}"),
            ApiError::Engine(_) | ApiError::Timeout(_) => tracing::error!(code = self.code(), "{self}"),
            _ if self.status().is_server_error() => tracing::warn!(code = self.code(), "{self}"),
            _ => tracing::info!(code = self.code(), "{self}"),
        }
    }

    /// Status, body and `Retry-After`, around any body shape.
    fn respond(self, body: serde_json::Value) -> Response {
        self.log();
        let mut resp = (self.status(), Json(body)).into_response();
        if let Some(s) = self.retry_after() {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

/// An error in OpenAI's shape, for the `/v1` routes:
/// `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug)]
pub struct OpenAiError(pub ApiError);

impl From<ApiError> for OpenAiError {
    fn from(e: ApiError) -> Self {
        OpenAiError(e)
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let e = self.0;
        let kind = match e.status() {
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            s if s.is_client_error() => "invalid_request_error",
            _ => "server_error",
        };
        let body = serde_json::json!({"error": {
            "message": e.to_string(), "type": kind, "param": e.param(), "code": e.code(),
        }});
        e.respond(body)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = TranscribeBody {
            success: false,
            text: String::new(),
            latency: 0.0,
            word_count: 0,
            gpu_memory: 0.0,
            error: Some(self.to_string()),
        };
        let body = serde_json::to_value(body).unwrap_or_default();
        self.respond(body)
    }
}

/// Which error shape a path answers in: OpenAI's under `/v1/`, the
/// original service's elsewhere.
pub fn is_openai_path(path: &str) -> bool {
    path == "/v1" || path.starts_with("/v1/")
}

/// `err` in the error shape of the route family `path` belongs to.
pub fn render_for_path(path: &str, err: ApiError) -> Response {
    if is_openai_path(path) {
        OpenAiError(err).into_response()
    } else {
        err.into_response()
    }
}

/// Most of a framework error body kept as the message.
const MAX_MESSAGE: usize = 1024;

/// Most characters of a client's value quoted back in an error or a log
/// line: enough to recognise it, never a multi-megabyte echo.
const ECHO_CHARS: usize = 64;

/// A client's value as it may be quoted back: at most [`ECHO_CHARS`]
/// characters (then `…`), control characters replaced so a value cannot
/// forge log lines.
pub fn echo(value: &str) -> String {
    truncate(value, ECHO_CHARS)
}

fn truncate(value: &str, max_chars: usize) -> String {
    let (head, cut) = match value.char_indices().nth(max_chars) {
        Some((i, _)) => (&value[..i], true),
        None => (value, false),
    };
    let mut out: String = head.chars().map(|c| if c.is_control() { '\u{FFFD}' } else { c }).collect();
    if cut {
        out.push('…');
    }
    out
}

/// Every answer in the route's error shape: the framework's own
/// rejections (no route, wrong method, a body that is not multipart, an
/// unreadable query) come as plain text or empty; this rewrites any error
/// that is not JSON into the family's JSON, keeping status and headers
/// (`Allow` on 405).
pub async fn shape_errors(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, 64 * 1024).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_MESSAGE)]).trim().to_string();
    let message = match (status, text.is_empty()) {
        (StatusCode::NOT_FOUND, true) => format!("no route for {method} {}", echo(&path)),
        (StatusCode::METHOD_NOT_ALLOWED, true) => format!("method {method} is not allowed on {}", echo(&path)),
        (_, true) => status.canonical_reason().unwrap_or("error").to_string(),
        (_, false) => text,
    };
    let mut shaped = render_for_path(&path, ApiError::Http { status: status.as_u16(), message });
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            shaped.headers_mut().insert(name.clone(), value.clone());
        }
    }
    shaped
}

/// A panic while serving a request becomes a 500 in the route's shape,
/// logged with the request id; the server carries on.
pub async fn catch_panics(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use futures::FutureExt;
    let path = req.uri().path().to_string();
    let request_id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-").to_string();
    match std::panic::AssertUnwindSafe(next.run(req)).catch_unwind().await {
        Ok(resp) => resp,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            tracing::error!(request_id = %request_id, route = %path, panic = %what, "a handler panicked");
            render_for_path(&path, ApiError::Internal("the request failed unexpectedly".into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoed_values_are_cut_and_defanged() {
        assert_eq!(echo("en"), "en");
        let long = "é".repeat(10_000);
        let e = echo(&long);
        assert_eq!(e.chars().count(), ECHO_CHARS + 1);
        assert!(e.ends_with('…'));
        assert_eq!(echo("a\nb\x1b"), "a\u{FFFD}b\u{FFFD}");
        let msg = ApiError::UnknownModel("m".repeat(1 << 20)).to_string();
        assert!(msg.len() < 200, "{}", msg.len());
        let msg = ApiError::FieldTooLarge { field: "x".repeat(1 << 20), limit: 4096 }.to_string();
        assert!(msg.len() < 200 && msg.contains("4096"), "{msg}");
    }
}
