//! One access line per HTTP request ([`access_log`], an axum middleware),
//! and the rule that keeps transcript text out of every log line unless
//! `logging.log_transcripts` is on ([`redacts`]).
//!
//! The line is an INFO event with target `whisper_serve::access` and message
//! `access`; its fields, in this order: `request_id`, `method`, `route`,
//! `status`, `upload_bytes`, `audio_s`, `queue_wait_s`, `inference_s`,
//! `latency_ms`, `key_id`, `client`, and `text` only with
//! `logging.log_transcripts`. Unknown numbers are left out (JSON) or empty
//! (`audio_s=` in the text format). Nothing secret goes in: no header but
//! `x-request-id` and `Content-Length` is read, and the route is axum's
//! matched pattern (`/jobs/{id}`), never the URI with its query string.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, MatchedPath, Request};
use axum::http::header::CONTENT_LENGTH;
use axum::middleware::Next;
use axum::response::Response;

/// The tracing target of access lines.
pub const TARGET: &str = "whisper_serve::access";

/// The status logged for a request whose client went away before the
/// response was ready (nginx's convention).
pub const CLIENT_CLOSED_REQUEST: u16 = 499;

/// Request ids longer than this are cut: the header may come from the
/// client, and a log line should not grow with it.
const MAX_REQUEST_ID_CHARS: usize = 128;

/// The id of the API key a request authenticated with. The auth middleware
/// puts it in the request's extensions; when that middleware runs inside
/// [`access_log`] (a route layer), it must put it in the response's
/// extensions as well, since the request is gone by the time the access
/// line is written. Either place is read.
#[derive(Clone, Debug)]
pub struct KeyId(pub String);

/// What a transcription route knows about the work it did, for the access
/// line; put in the response's extensions.
#[derive(Clone, Debug, Default)]
pub struct AccessInfo {
    pub audio_seconds: Option<f64>,
    pub queue_wait_s: Option<f64>,
    pub inference_s: Option<f64>,
    /// Bytes of audio received (else the request's `Content-Length` is logged).
    pub upload_bytes: Option<u64>,
    /// The transcript; logged only with `logging.log_transcripts`.
    pub text: Option<String>,
}

// ---------------------------------------------------------------------------
// Transcript text in logs

/// `logging.log_transcripts`, set by [`crate::telemetry::logging::init`].
/// Process-wide because the middleware and the formatters see no config.
static LOG_TRANSCRIPTS: AtomicBool = AtomicBool::new(false);

/// Field names that carry transcript (or prompt) text, wherever they are
/// logged from.
pub const TRANSCRIPT_FIELDS: &[&str] = &["text", "transcript", "prompt", "initial_prompt"];

/// What a hidden transcript field shows instead.
pub const REDACTED: &str = "[redacted]";

pub fn set_log_transcripts(on: bool) {
    LOG_TRANSCRIPTS.store(on, Ordering::Relaxed);
}

pub fn log_transcripts() -> bool {
    LOG_TRANSCRIPTS.load(Ordering::Relaxed)
}

/// Whether a field of this name is hidden in log lines: a transcript field
/// while `logging.log_transcripts` is off. Both formatters apply it to
/// every event and span, so a `debug!(text = ...)` anywhere stays hidden.
pub fn redacts(field: &str) -> bool {
    !log_transcripts() && TRANSCRIPT_FIELDS.contains(&field)
}

// ---------------------------------------------------------------------------
// The access line

/// What one access line says.
#[derive(Clone, Debug, PartialEq)]
pub struct AccessRecord {
    pub request_id: String,
    pub method: String,
    pub route: String,
    pub status: u16,
    pub upload_bytes: u64,
    pub audio_s: Option<f64>,
    pub queue_wait_s: Option<f64>,
    pub inference_s: Option<f64>,
    pub latency_ms: f64,
    pub key_id: String,
    pub client: String,
    pub text: Option<String>,
}

/// Rounds to `places` decimals, so lines read `0.432`, not `0.43200000000000005`.
fn round(x: f64, places: i32) -> f64 {
    let scale = 10f64.powi(places);
    (x * scale).round() / scale
}

impl AccessRecord {
    /// What is known before the request is handled. `upload_bytes` is the
    /// `Content-Length` (0 if absent or unreadable) until the route says
    /// better.
    pub fn from_request(req: &Request) -> AccessRecord {
        let headers = req.headers();
        let request_id = headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map_or_else(|| "-".to_string(), |v| v.chars().take(MAX_REQUEST_ID_CHARS).collect());
        let ext = req.extensions();
        AccessRecord {
            request_id,
            method: req.method().as_str().to_string(),
            route: ext.get::<MatchedPath>().map_or_else(|| "-".to_string(), |p| p.as_str().to_string()),
            status: 0,
            upload_bytes: headers
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0),
            audio_s: None,
            queue_wait_s: None,
            inference_s: None,
            latency_ms: 0.0,
            key_id: ext.get::<KeyId>().map_or_else(|| "-".to_string(), |k| k.0.clone()),
            client: ext.get::<ConnectInfo<SocketAddr>>().map_or_else(|| "-".to_string(), |c| c.0.ip().to_string()),
            text: None,
        }
    }

    /// Adds what the response tells: status, the route's [`AccessInfo`],
    /// a [`KeyId`] set inside, and the time taken.
    pub fn complete(&mut self, response: &Response, elapsed: Duration) {
        self.status = response.status().as_u16();
        let ext = response.extensions();
        if let Some(info) = ext.get::<AccessInfo>() {
            self.upload_bytes = info.upload_bytes.unwrap_or(self.upload_bytes);
            self.audio_s = info.audio_seconds.map(|s| round(s, 3));
            self.queue_wait_s = info.queue_wait_s.map(|s| round(s, 3));
            self.inference_s = info.inference_s.map(|s| round(s, 3));
            self.text.clone_from(&info.text);
        }
        if let (Some(k), "-") = (ext.get::<KeyId>(), self.key_id.as_str()) {
            self.key_id.clone_from(&k.0);
        }
        self.latency_ms = round(elapsed.as_secs_f64() * 1000.0, 1);
    }

    /// Counts the request in the dashboard's statistics (transcription routes only).
    pub fn count(&self) {
        let owner = if self.key_id == "-" { crate::jobs::ANONYMOUS } else { self.key_id.as_str() };
        crate::telemetry::stats::global().request(&self.method, &self.route, self.status, self.latency_ms, self.audio_s, &self.request_id, owner);
    }

    /// Writes the line; the transcript only if `with_text` (and then the
    /// formatters still hide it unless `logging.log_transcripts` is on).
    pub fn emit(&self, with_text: bool) {
        // One field list for both forms; tracing needs the names at compile
        // time. No parent span: the line already has the request's id and
        // method, and the request span's fields appended to the text line
        // would only repeat them. (JSON lines keep their `span` object:
        // tracing-subscriber fills it from the current span regardless.)
        macro_rules! access_line {
            ($($name:ident = $value:expr,)?) => {
                tracing::info!(
                    target: TARGET,
                    parent: None,
                    request_id = self.request_id.as_str(),
                    method = self.method.as_str(),
                    route = self.route.as_str(),
                    status = self.status,
                    upload_bytes = self.upload_bytes,
                    audio_s = self.audio_s,
                    queue_wait_s = self.queue_wait_s,
                    inference_s = self.inference_s,
                    latency_ms = self.latency_ms,
                    key_id = self.key_id.as_str(),
                    client = self.client.as_str(),
                    $($name = $value,)?
                    "access"
                )
            };
        }
        match self.text.as_deref() {
            Some(text) if with_text => access_line!(text = text,),
            _ => access_line!(),
        }
    }
}

/// Writes the line if the request is dropped before its response (the
/// client closed the connection), so every request still gets one line.
struct InFlight {
    record: Option<AccessRecord>,
    started: Instant,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(mut r) = self.record.take() {
            r.status = CLIENT_CLOSED_REQUEST;
            r.latency_ms = round(self.started.elapsed().as_secs_f64() * 1000.0, 1);
            r.emit(false);
            r.count();
        }
    }
}

/// The access log middleware: `axum::middleware::from_fn(access_log)`.
/// Layer it on the whole router (`Router::layer`, so it also sees 404, 405
/// and error answers, and axum's matched route) and inside the layer that
/// sets `x-request-id`. Latency is the time to the response head.
pub async fn access_log(req: Request, next: Next) -> Response {
    let mut in_flight = InFlight { record: Some(AccessRecord::from_request(&req)), started: Instant::now() };
    let response = next.run(req).await;
    if let Some(mut r) = in_flight.record.take() {
        r.complete(&response, in_flight.started.elapsed());
        r.emit(log_transcripts());
        r.count();
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LoggingConfig;
    use crate::telemetry::logging::test_support::{capture, Capture};
    use axum::body::Body;
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    use axum::routing::{get, post};
    use axum::Router;
    use tower::ServiceExt;
    use tracing::Instrument;

    fn app() -> Router {
        let transcribe = || async {
            let mut r = (StatusCode::OK, "{\"text\":\"secret words\"}").into_response();
            r.extensions_mut().insert(AccessInfo {
                audio_seconds: Some(11.0),
                queue_wait_s: Some(0.0012345),
                inference_s: Some(0.43200000000000005),
                upload_bytes: Some(352_078),
                text: Some("secret words".into()),
            });
            r.extensions_mut().insert(KeyId("team-a".into()));
            r
        };
        Router::new()
            .route("/transcribe", post(transcribe))
            .route("/health", get(|| async { "ok" }))
            .route("/jobs/{id}", get(|| async { StatusCode::NOT_FOUND }))
            .route("/hang", get(std::future::pending::<&'static str>))
            .layer(axum::middleware::from_fn(access_log))
    }

    fn request(method: &str, uri: &str) -> axum::http::request::Builder {
        Request::builder()
            .method(method)
            .uri(uri)
            .header("x-request-id", format!("rid-{}", uri.len()))
            .header("authorization", "Bearer sk-very-secret")
            .header("x-api-key", "sk-also-secret")
    }

    /// Runs requests through [`app`] with a text-format subscriber; returns
    /// the access lines.
    async fn access_lines(requests: Vec<Request>) -> Vec<String> {
        let cfg = LoggingConfig { format: "%(name)s %(levelname)s %(message)s".into(), ..LoggingConfig::default() };
        let (out, subscriber) = capture(&cfg);
        {
            let _g = tracing::subscriber::set_default(subscriber);
            for req in requests {
                // As in the server, a request span is around the middleware.
                let call = app().oneshot(req).instrument(tracing::info_span!("request", request_id = "from-span"));
                let _ = tokio::time::timeout(Duration::from_millis(200), call).await;
            }
        }
        Capture::text(&out).lines().filter(|l| l.starts_with(TARGET)).map(str::to_string).collect()
    }

    #[tokio::test]
    async fn one_line_per_request_with_final_status_and_route() {
        let lines = access_lines(vec![
            request("POST", "/transcribe?language=en&token=abc").header("content-length", "9").body(Body::from("not audio")).unwrap(),
            request("GET", "/health").body(Body::empty()).unwrap(),
            request("GET", "/nope?x=1").body(Body::empty()).unwrap(),
            request("DELETE", "/health").body(Body::empty()).unwrap(),
            request("GET", "/jobs/abc").body(Body::empty()).unwrap(),
        ])
        .await;
        assert_eq!(lines.len(), 5, "{lines:#?}");
        let t = &lines[0];
        let id = format!("rid-{}", "/transcribe?language=en&token=abc".len());
        let head = format!(
            "whisper_serve::access INFO access request_id={id} method=POST route=/transcribe status=200 \
             upload_bytes=352078 audio_s=11.0 queue_wait_s=0.001 inference_s=0.432 latency_ms="
        );
        assert!(t.starts_with(&head), "{t}");
        assert!(t.ends_with(" key_id=team-a client=-"), "{t}");
        assert!(lines[1].contains("route=/health status=200 upload_bytes=0 audio_s= queue_wait_s= inference_s= latency_ms="), "{}", lines[1]);
        assert!(lines[2].contains("method=GET route=- status=404"), "{}", lines[2]);
        assert!(lines[3].contains("method=DELETE route=/health status=405"), "{}", lines[3]);
        assert!(lines[4].contains("route=/jobs/{id} status=404"), "{}", lines[4]);
        for l in &lines {
            for secret in ["secret", "token=abc", "language=en", "x=1", "Bearer", "from-span"] {
                assert!(!l.contains(secret), "{secret:?} in {l}");
            }
        }
    }

    #[tokio::test]
    async fn client_gone_is_logged_as_499() {
        let lines = access_lines(vec![request("GET", "/hang").body(Body::empty()).unwrap()]).await;
        assert_eq!(lines.len(), 1, "{lines:#?}");
        assert!(lines[0].contains("route=/hang status=499"), "{}", lines[0]);
    }

    #[test]
    fn record_reads_peer_key_and_bounds_request_id() {
        let mut req = Request::builder()
            .uri("/x")
            .header("x-request-id", "r".repeat(1000))
            .header("content-length", "12")
            .body(Body::empty())
            .unwrap();
        req.extensions_mut().insert(ConnectInfo(SocketAddr::from(([10, 1, 2, 3], 5555))));
        req.extensions_mut().insert(KeyId("ops".into()));
        let r = AccessRecord::from_request(&req);
        assert_eq!(r.request_id.len(), MAX_REQUEST_ID_CHARS);
        assert_eq!((r.client.as_str(), r.key_id.as_str(), r.route.as_str(), r.upload_bytes), ("10.1.2.3", "ops", "-", 12));
        let r = AccessRecord::from_request(&Request::builder().uri("/x").body(Body::empty()).unwrap());
        assert_eq!((r.request_id.as_str(), r.client.as_str(), r.key_id.as_str(), r.upload_bytes), ("-", "-", "-", 0));
    }

    #[test]
    fn transcript_fields_hidden_while_flag_off() {
        // The flag is off in this test process (nothing here turns it on).
        assert!(!log_transcripts());
        assert!(redacts("text") && redacts("initial_prompt"));
        assert!(!redacts("route"));
    }
}
