//! Job callbacks: when a job ends (completed or failed; a cancelled job
//! gets none), the server POSTs the job's public JSON to the job's
//! `callback_url`.
//!
//! Signatures follow Stripe's scheme. Each attempt carries
//! [`TIMESTAMP_HEADER`] (unix seconds) and, when `jobs.webhook_secret` is
//! set, [`SIGNATURE_HEADER`]: `sha256=<hex HMAC-SHA256(secret, timestamp +
//! "." + body)>`. A receiver recomputes it ([`verify`]) and rejects requests
//! whose timestamp is too old, which stops replays. [`JOB_ID_HEADER`] names
//! the job.
//!
//! Delivery ([`WebhookSender::deliver`]) succeeds on any 2xx. Connection
//! errors, timeouts, 408, 429 and 5xx are retried with exponential backoff
//! (1 s, 2 s, 4 s, ... at most 60 s; a `Retry-After` in seconds wins, also
//! at most 60 s) up to `jobs.webhook_max_attempts` attempts; any other
//! answer is final. Redirects are not followed (a redirected POST would
//! lose its body), so a 3xx is final too.
//!
//! Callbacks never reach inside (SSRF): the sender's DNS resolver and the
//! checks before each attempt come from [`super::callback_url`].

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use reqwest::header::{HeaderMap, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;
use sha2::Sha256;

pub use super::callback_url::{check_callback_url, is_forbidden_ip, AllowList, HostRefused, MAX_CALLBACK_URL_LEN};
use super::callback_url::{literal_ip, parse_callback_url, PinnedResolver, FORBIDDEN_MESSAGE};

type HmacSha256 = Hmac<Sha256>;

/// `sha256=<lowercase hex HMAC-SHA256(secret, timestamp + "." + body)>`;
/// sent only when a secret is configured.
pub const SIGNATURE_HEADER: &str = "X-Whisper-Signature";
/// Unix seconds when the attempt was sent; part of the signed text.
pub const TIMESTAMP_HEADER: &str = "X-Whisper-Timestamp";
/// The job's id.
pub const JOB_ID_HEADER: &str = "X-Whisper-Job-Id";

/// The prefix of [`SIGNATURE_HEADER`]'s value.
const SCHEME: &str = "sha256=";
/// The longest wait between attempts, `Retry-After` included.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// The first wait between attempts; it doubles after each.
pub const BASE_BACKOFF: Duration = Duration::from_secs(1);

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length: this cannot fail.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(secret).expect("HMAC key of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The [`SIGNATURE_HEADER`] value for `body` sent at `timestamp`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    format!("{SCHEME}{}", hex::encode(mac(secret, timestamp, body).finalize().into_bytes()))
}

/// Whether `header_value` is the signature of `body` sent at `timestamp`
/// (compared in constant time). Checking that `timestamp` is recent is the
/// caller's business.
pub fn verify(secret: &[u8], timestamp: i64, body: &[u8], header_value: &str) -> bool {
    let Some(hex_sig) = header_value.trim().strip_prefix(SCHEME) else {
        return false;
    };
    let Ok(tag) = hex::decode(hex_sig) else {
        return false;
    };
    mac(secret, timestamp, body).verify_slice(&tag).is_ok()
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("{0}")]
    BadUrl(String),
    #[error("could not build the webhook HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    #[error("jobs.webhook_allow_hosts: {0}")]
    AllowList(String),
    /// The host resolved to an address callbacks may not reach; final,
    /// since retrying would only ask the same DNS again.
    #[error("{reason}")]
    Refused { reason: String, attempts: u32 },
    /// An answer that retrying will not change (4xx other than 408/429, 3xx).
    #[error("callback answered HTTP {status} (attempt {attempts}); not retried")]
    Rejected { status: u16, attempts: u32 },
    /// Every attempt failed with something worth retrying.
    #[error("callback failed after {attempts} attempts; last: {last}")]
    Exhausted { attempts: u32, last: String },
}

impl WebhookError {
    /// Attempts made before giving up (0: none could be made).
    pub fn attempts(&self) -> u32 {
        match self {
            WebhookError::BadUrl(_) | WebhookError::Client(_) | WebhookError::AllowList(_) => 0,
            WebhookError::Rejected { attempts, .. }
            | WebhookError::Exhausted { attempts, .. }
            | WebhookError::Refused { attempts, .. } => *attempts,
        }
    }
}

/// Whether an answer with this status is worth another attempt.
fn retryable(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
}

/// `Retry-After` in seconds (the HTTP-date form is ignored), at most
/// [`MAX_BACKOFF`].
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let secs: u64 = headers.get(RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(secs).min(MAX_BACKOFF))
}

/// The wait after failed attempt `attempt` (1-based): `base`, doubling,
/// at most [`MAX_BACKOFF`].
fn backoff(base: Duration, attempt: u32) -> Duration {
    let factor = 1u32.checked_shl(attempt.saturating_sub(1)).unwrap_or(u32::MAX);
    base.checked_mul(factor).unwrap_or(MAX_BACKOFF).min(MAX_BACKOFF)
}

fn unix_seconds() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// The resolver's refusal, if that is what made `err`: reqwest and hyper
/// wrap it a few layers deep.
fn refusal(err: &reqwest::Error) -> Option<&HostRefused> {
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        if let Some(r) = e.downcast_ref::<HostRefused>() {
            return Some(r);
        }
        source = e.source();
    }
    None
}

/// Sends job callbacks. Share one through an `Arc`.
pub struct WebhookSender {
    client: reqwest::Client,
    allow: Arc<AllowList>,
    secret: Option<Vec<u8>>,
    max_attempts: u32,
    timeout: Duration,
    base_backoff: Duration,
}

impl std::fmt::Debug for WebhookSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("WebhookSender")
            .field("signed", &self.secret.is_some())
            .field("max_attempts", &self.max_attempts)
            .field("timeout", &self.timeout)
            .field("base_backoff", &self.base_backoff)
            .finish()
    }
}

impl WebhookSender {
    /// `secret`: the HMAC key (`jobs.webhook_secret`; None or empty: no
    /// signature). `max_attempts`: at least 1. `timeout`: for each POST,
    /// connecting included. `allow_hosts`: `jobs.webhook_allow_hosts`, the
    /// internal receivers callbacks may reach.
    pub fn new(
        secret: Option<String>,
        max_attempts: u32,
        timeout: Duration,
        allow_hosts: &[String],
    ) -> Result<Self, WebhookError> {
        let allow = Arc::new(AllowList::new(allow_hosts).map_err(WebhookError::AllowList)?);
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(PinnedResolver { allow: Arc::clone(&allow) }))
            // Through a proxy the proxy resolves the callback's host, out of
            // the resolver's sight, and the resolver would judge the
            // proxy's (usually internal) address instead.
            .no_proxy()
            .user_agent(concat!("whisper-serve/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(WebhookError::Client)?;
        Ok(Self {
            client,
            allow,
            secret: secret.filter(|s| !s.is_empty()).map(String::into_bytes),
            max_attempts: max_attempts.max(1),
            timeout,
            base_backoff: BASE_BACKOFF,
        })
    }

    /// Sets the first wait between attempts (default [`BASE_BACKOFF`]);
    /// for tests.
    pub fn with_base_backoff(mut self, base: Duration) -> Self {
        self.base_backoff = base;
        self
    }

    /// Whether callbacks carry [`SIGNATURE_HEADER`].
    pub fn is_signed(&self) -> bool {
        self.secret.is_some()
    }

    /// POSTs `body` (the job's public JSON) to `url`, retrying as the
    /// module docs say. Returns the attempts it took.
    pub async fn deliver(
        &self,
        url: &str,
        job_id: &str,
        body: Vec<u8>,
    ) -> Result<u32, WebhookError> {
        let url = parse_callback_url(url).map_err(WebhookError::BadUrl)?;
        // reqwest calls no resolver for a host written as an address.
        let literal = literal_ip(&url);
        let body = bytes::Bytes::from(body);
        let mut last = String::new();
        for attempt in 1..=self.max_attempts {
            if literal.is_some_and(|ip| !self.allow.permits_ip(ip)) {
                return Err(WebhookError::Refused {
                    reason: FORBIDDEN_MESSAGE.to_string(),
                    attempts: attempt - 1,
                });
            }
            let timestamp = unix_seconds();
            let mut req = self
                .client
                .post(url.clone())
                .header(CONTENT_TYPE, "application/json")
                .header(JOB_ID_HEADER, job_id)
                .header(TIMESTAMP_HEADER, timestamp.to_string())
                .body(body.clone());
            if let Some(secret) = &self.secret {
                req = req.header(SIGNATURE_HEADER, sign(secret, timestamp, &body));
            }
            let wait = match req.send().await {
                Ok(resp) if resp.status().is_success() => return Ok(attempt),
                Ok(resp) => {
                    let status = resp.status();
                    tracing::warn!(
                        job_id,
                        attempt,
                        status = status.as_u16(),
                        "webhook delivery failed: callback answered HTTP {status}"
                    );
                    if !retryable(status) {
                        return Err(WebhookError::Rejected {
                            status: status.as_u16(),
                            attempts: attempt,
                        });
                    }
                    last = format!("HTTP {status}");
                    retry_after(resp.headers())
                        .unwrap_or_else(|| backoff(self.base_backoff, attempt))
                }
                Err(e) => {
                    // Without the URL: it may carry a token in its query.
                    let e = e.without_url();
                    let kind = if e.is_timeout() {
                        "timeout"
                    } else if e.is_connect() {
                        "connect"
                    } else {
                        "transport"
                    };
                    tracing::warn!(job_id, attempt, kind, error = %e, "webhook delivery failed");
                    if let Some(HostRefused::Forbidden) = refusal(&e) {
                        return Err(WebhookError::Refused {
                            reason: FORBIDDEN_MESSAGE.to_string(),
                            attempts: attempt - 1,
                        });
                    }
                    if e.is_builder() {
                        return Err(WebhookError::Exhausted {
                            attempts: attempt,
                            last: e.to_string(),
                        });
                    }
                    last = format!("{kind} error: {e}");
                    backoff(self.base_backoff, attempt)
                }
            };
            if attempt < self.max_attempts {
                tokio::time::sleep(wait).await;
            }
        }
        Err(WebhookError::Exhausted { attempts: self.max_attempts, last })
    }

    /// [`deliver`](Self::deliver) in a tokio task that logs the outcome.
    pub fn spawn_deliver(
        self: &Arc<Self>,
        url: String,
        job_id: String,
        body: Vec<u8>,
    ) -> tokio::task::JoinHandle<()> {
        let sender = Arc::clone(self);
        tokio::spawn(async move {
            match sender.deliver(&url, &job_id, body).await {
                Ok(attempts) => tracing::info!(job_id, attempts, "webhook delivered"),
                Err(e) => tracing::warn!(
                    job_id,
                    attempts = e.attempts(),
                    error = %e,
                    "webhook delivery gave up"
                ),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    use axum::extract::State;
    use axum::http::{HeaderMap as AxumHeaders, StatusCode as AxumStatus};
    use axum::response::IntoResponse;
    use axum::routing::post;
    use axum::Router;

    const SECRET: &[u8] = b"secret";

    #[test]
    fn known_answer() {
        // python3 -c "import hmac,hashlib; print(hmac.new(b'secret',
        //   b'1700000000.{\"id\":\"job\"}', hashlib.sha256).hexdigest())"
        // and `openssl dgst -sha256 -hmac secret` agree.
        let sig = sign(b"secret", 1_700_000_000, br#"{"id":"job"}"#);
        assert_eq!(sig, "sha256=5a546632c0adb069fe771a1dfe22f728679b197c070b1c195f19b375fbc59e77");
        // Empty body, another key.
        assert_eq!(
            sign(b"whsec_test", 1_700_000_000, b""),
            "sha256=5967f3c560522fa40cf2876ebc3c3a08551dd6959aaade3b413460591895bdcc"
        );
    }

    #[test]
    fn sign_verify_roundtrip_and_rejections() {
        let body = br#"{"id":"0190","status":"completed"}"#;
        let ts = 1_700_000_123;
        let sig = sign(SECRET, ts, body);
        assert!(verify(SECRET, ts, body, &sig));
        assert!(!verify(SECRET, ts, br#"{"id":"0190","status":"failed"}"#, &sig));
        assert!(!verify(SECRET, ts + 1, body, &sig));
        assert!(!verify(b"other", ts, body, &sig));
        assert!(!verify(SECRET, ts, body, sig.trim_start_matches("sha256=")));
        assert!(!verify(SECRET, ts, body, "sha256=zz"));
        assert!(!verify(SECRET, ts, body, "sha256="));
        assert!(!verify(SECRET, ts, body, &sig[..sig.len() - 2]));
        assert!(!verify(SECRET, ts, body, ""));
    }

    #[test]
    fn backoff_doubles_up_to_a_minute() {
        let b = |n| backoff(BASE_BACKOFF, n).as_secs();
        assert_eq!(
            [b(1), b(2), b(3), b(4), b(6), b(7), b(20), b(100)],
            [1, 2, 4, 8, 32, 60, 60, 60]
        );
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(RETRY_AFTER, "3600".parse().unwrap());
        assert_eq!(retry_after(&h), Some(MAX_BACKOFF));
        h.insert(RETRY_AFTER, "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap());
        assert_eq!(retry_after(&h), None);
        assert!(retryable(StatusCode::SERVICE_UNAVAILABLE));
        assert!(retryable(StatusCode::TOO_MANY_REQUESTS));
        assert!(retryable(StatusCode::REQUEST_TIMEOUT));
        assert!(!retryable(StatusCode::BAD_REQUEST));
        assert!(!retryable(StatusCode::NOT_FOUND));
        assert!(!retryable(StatusCode::MOVED_PERMANENTLY));
    }

    #[test]
    fn debug_hides_the_secret() {
        let s = WebhookSender::new(Some("hunter2".into()), 3, Duration::from_secs(1), &[]).unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(s.is_signed());
        let s = WebhookSender::new(Some(String::new()), 0, Duration::from_secs(1), &[]).unwrap();
        assert!(!s.is_signed());
        assert_eq!(s.max_attempts, 1);
    }

    /// What the receiver saw on each request.
    #[derive(Debug, Clone)]
    struct Seen {
        signature: Option<String>,
        verified: bool,
        job_id: Option<String>,
        content_type: Option<String>,
        body: Vec<u8>,
    }

    #[derive(Clone)]
    struct Receiver {
        /// The answers to give, in order; the last one repeats.
        answers: Arc<Vec<(u16, Option<&'static str>)>>,
        seen: Arc<Mutex<Vec<Seen>>>,
    }

    async fn hook(
        State(r): State<Receiver>,
        headers: AxumHeaders,
        body: bytes::Bytes,
    ) -> impl IntoResponse {
        let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let signature = h(SIGNATURE_HEADER);
        let verified = match (&signature, h(TIMESTAMP_HEADER).and_then(|t| t.parse::<i64>().ok())) {
            (Some(sig), Some(ts)) => verify(SECRET, ts, &body, sig),
            _ => false,
        };
        let n = {
            let mut seen = r.seen.lock().unwrap();
            seen.push(Seen {
                signature,
                verified,
                job_id: h(JOB_ID_HEADER),
                content_type: h("content-type"),
                body: body.to_vec(),
            });
            seen.len()
        };
        let (code, retry_after) = r.answers[(n - 1).min(r.answers.len() - 1)];
        let mut out = AxumHeaders::new();
        if let Some(ra) = retry_after {
            out.insert("retry-after", ra.parse().unwrap());
        }
        (AxumStatus::from_u16(code).unwrap(), out, "")
    }

    /// A local receiver at `http://127.0.0.1:<port>/hook`.
    async fn receiver(
        answers: Vec<(u16, Option<&'static str>)>,
    ) -> (String, Arc<Mutex<Vec<Seen>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let state = Receiver { answers: Arc::new(answers), seen: seen.clone() };
        let app = Router::new().route("/hook", post(hook)).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (format!("http://{addr}/hook"), seen)
    }

    /// The receivers listen on 127.0.0.1, which only an allow-list lets
    /// callbacks reach.
    fn local_allowed() -> Vec<String> {
        vec!["127.0.0.1".to_string()]
    }

    fn sender(secret: Option<&str>, max_attempts: u32) -> WebhookSender {
        WebhookSender::new(
            secret.map(str::to_string),
            max_attempts,
            Duration::from_secs(5),
            &local_allowed(),
        )
        .unwrap()
        .with_base_backoff(Duration::from_millis(10))
    }

    const JOB: &str = "01900000-0000-7000-8000-000000000000";

    #[tokio::test]
    async fn retries_a_503_then_succeeds_signed() {
        let (url, seen) = receiver(vec![(503, None), (200, None)]).await;
        let body =
            br#"{"id":"01900000-0000-7000-8000-000000000000","status":"completed"}"#.to_vec();
        let attempts = sender(Some("secret"), 5).deliver(&url, JOB, body.clone()).await.unwrap();
        assert_eq!(attempts, 2);
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 2);
        for s in &seen {
            assert!(s.verified, "receiver could not verify {:?}", s.signature);
            assert_eq!(s.job_id.as_deref(), Some(JOB));
            assert_eq!(s.content_type.as_deref(), Some("application/json"));
            assert_eq!(s.body, body);
        }
    }

    #[tokio::test]
    async fn a_400_is_final_after_one_attempt() {
        let (url, seen) = receiver(vec![(400, None), (200, None)]).await;
        let err = sender(Some("secret"), 5).deliver(&url, JOB, b"{}".to_vec()).await.unwrap_err();
        assert!(matches!(err, WebhookError::Rejected { status: 400, attempts: 1 }), "{err:?}");
        assert_eq!(err.attempts(), 1);
        assert_eq!(seen.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn unsigned_without_secret_and_429_honours_retry_after() {
        let (url, seen) = receiver(vec![(429, Some("0")), (408, None), (204, None)]).await;
        let attempts = sender(None, 5).deliver(&url, JOB, b"{}".to_vec()).await.unwrap();
        assert_eq!(attempts, 3);
        let seen = seen.lock().unwrap().clone();
        assert!(seen.iter().all(|s| s.signature.is_none() && !s.verified));
    }

    #[tokio::test]
    async fn gives_up_after_max_attempts() {
        let (url, seen) = receiver(vec![(500, None)]).await;
        let err = sender(Some("secret"), 3).deliver(&url, JOB, b"{}".to_vec()).await.unwrap_err();
        assert!(
            matches!(&err, WebhookError::Exhausted { attempts: 3, last } if last.contains("500")),
            "{err:?}"
        );
        assert_eq!(seen.lock().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn connection_refused_is_retried() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = sender(None, 2)
            .deliver(&format!("http://{addr}/hook"), JOB, b"{}".to_vec())
            .await
            .unwrap_err();
        assert!(matches!(err, WebhookError::Exhausted { attempts: 2, .. }), "{err:?}");
    }

    #[tokio::test]
    async fn a_slow_receiver_times_out_and_is_retried() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Accepts and never answers.
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((sock, _)) = listener.accept().await {
                held.push(sock);
            }
        });
        let s = WebhookSender::new(None, 2, Duration::from_millis(200), &local_allowed())
            .unwrap()
            .with_base_backoff(Duration::from_millis(10));
        let err = s.deliver(&format!("http://{addr}/hook"), JOB, b"{}".to_vec()).await.unwrap_err();
        assert!(
            matches!(&err, WebhookError::Exhausted { attempts: 2, last } if last.starts_with("timeout")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn bad_url_is_refused_without_a_request() {
        let err = sender(None, 3).deliver("ftp://example.com/", JOB, Vec::new()).await.unwrap_err();
        assert!(matches!(err, WebhookError::BadUrl(_)));
        assert_eq!(err.attempts(), 0);
    }

    #[tokio::test]
    async fn a_bad_allow_list_is_refused() {
        let err = WebhookSender::new(None, 1, Duration::from_secs(1), &["10.0.0.0/40".into()])
            .unwrap_err();
        assert!(matches!(err, WebhookError::AllowList(_)), "{err:?}");
    }

    /// The check at delivery: a name that resolves to loopback, or a
    /// loopback literal, gets no request, and is not retried.
    #[tokio::test]
    async fn delivery_refuses_internal_addresses() {
        let (url, seen) = receiver(vec![(200, None)]).await;
        let port = url.trim_start_matches("http://127.0.0.1:").trim_end_matches("/hook").to_string();
        let strict = WebhookSender::new(None, 3, Duration::from_secs(5), &[])
            .unwrap()
            .with_base_backoff(Duration::from_millis(10));
        for target in [
            format!("http://localhost:{port}/hook"),
            format!("http://127.0.0.1:{port}/hook"),
            format!("http://2130706433:{port}/hook"),
            format!("http://[::ffff:127.0.0.1]:{port}/hook"),
        ] {
            let err = strict.deliver(&target, JOB, b"{}".to_vec()).await.unwrap_err();
            assert!(matches!(err, WebhookError::Refused { attempts: 0, .. }), "{target}: {err:?}");
            assert_eq!(err.attempts(), 0);
        }
        assert!(seen.lock().unwrap().is_empty(), "a request reached the receiver");
    }

    #[tokio::test]
    async fn an_allowed_name_is_delivered_to() {
        let (url, seen) = receiver(vec![(200, None)]).await;
        let port = url.trim_start_matches("http://127.0.0.1:").trim_end_matches("/hook").to_string();
        let s = WebhookSender::new(None, 1, Duration::from_secs(5), &["localhost".into()]).unwrap();
        // `localhost` may resolve to ::1 first, where nothing listens; the
        // client then falls back to 127.0.0.1.
        let attempts = s.deliver(&format!("http://localhost:{port}/hook"), JOB, b"{}".to_vec()).await.unwrap();
        assert_eq!(attempts, 1);
        assert_eq!(seen.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn spawn_deliver_runs_in_the_background() {
        let (url, seen) = receiver(vec![(200, None)]).await;
        let s = Arc::new(sender(Some("secret"), 2));
        s.spawn_deliver(url, JOB.to_string(), b"{}".to_vec()).await.unwrap();
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 1);
        assert!(seen[0].verified);
    }
}
