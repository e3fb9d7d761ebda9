//! Who may call the API and how often: API keys ([`keys`]), request rates
//! and audio quotas ([`limits`]), and HTTPS ([`tls`]). One middleware,
//! [`guard`], applies keys and limits to every route but the probes.

pub mod failures;
pub mod keys;
pub mod limits;
pub mod tls;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

use crate::config::Config;
use crate::error::{echo, render_for_path, ApiError};
use crate::telemetry::access::{AccessInfo, KeyId};
use crate::jobs::Caller;
use crate::state;
use keys::{KeyError, KeySet};
use limits::{Limits, QuotaRefusal};

pub struct Security {
    config: Arc<Config>,
    keys: RwLock<Arc<KeySet>>,
    pub limits: Limits,
    failures: failures::Failures,
}

impl Security {
    pub fn new(config: Arc<Config>) -> Result<Arc<Security>, KeyError> {
        let keys = KeySet::load(&config.auth)?;
        if !keys.is_empty() {
            tracing::info!(keys = keys.len(), "API keys required");
        }
        let limits = Limits::new(&config.rate_limit, config.limits.max_audio_seconds);
        let failures = failures::Failures::new(config.auth.failed_attempts_per_minute);
        let me = Arc::new(Security { config, keys: RwLock::new(Arc::new(keys)), limits, failures });
        let tidy = Arc::downgrade(&me);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(60)).await;
                match tidy.upgrade() {
                    Some(s) => {
                        s.limits.tidy();
                        s.failures.tidy();
                    }
                    None => return,
                }
            }
        });
        Ok(me)
    }

    fn keys(&self) -> Arc<KeySet> {
        self.keys.read().map(|k| k.clone()).unwrap_or_default()
    }

    /// Reads `auth.api_keys_file` again (SIGHUP); a bad file keeps the old keys.
    pub fn reload_keys(&self) {
        match KeySet::load(&self.config.auth) {
            Ok(k) => {
                tracing::info!(keys = k.len(), "API keys reloaded");
                if let Ok(mut cur) = self.keys.write() {
                    *cur = Arc::new(k);
                }
            }
            Err(e) => tracing::error!(error = %e, "API keys not reloaded; keeping the old ones"),
        }
    }

    /// Routes anyone may call: the probes, the pages and the API reference
    /// (the pages ask for a key and send it with their API calls), and
    /// `/metrics` and `/v1/stats` unless configured otherwise.
    fn is_open(&self, path: &str) -> bool {
        match path {
            state::HEALTH_PATH | state::LIVENESS_PATH => true,
            state::METRICS_PATH | state::STATS_PATH => !self.config.auth.metrics_requires_key,
            p => state::is_docs(p) || state::is_page(p),
        }
    }
}

/// Reads and drops what is left of a refused request's body (up to a few
/// MB, for a few seconds) before answering: a client still sending its
/// upload would otherwise see the connection reset instead of the answer.
async fn discard_body(req: Request) {
    const MAX: usize = 8 * 1024 * 1024;
    let _ = tokio::time::timeout(Duration::from_secs(5), axum::body::to_bytes(req.into_body(), MAX)).await;
}

fn with_retry_after(mut resp: Response, wait: Duration) -> Response {
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

/// 429 for an address that presented too many wrong keys (sampled in the
/// log like the failures themselves).
async fn refuse_guessing(sec: &Security, req: Request, ip: Option<std::net::IpAddr>, client: &str, path: &str, wait: Duration) -> Response {
    if let Some(suppressed) = sec.failures.log_line(ip) {
        tracing::warn!(client = %client, route = %echo(path), reason = "too many wrong keys", suppressed, "authentication failed");
    }
    discard_body(req).await;
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    with_retry_after(render_for_path(path, ApiError::RateLimited { retry_after_s: secs }), wait)
}

/// Keys, then the request rate, then the day's audio quota; counts the
/// audio a request used once it is answered.
pub async fn guard(State(sec): State<Arc<Security>>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    if sec.is_open(&path) {
        // Open routes need no key, but one presented is still read: it
        // says whose requests `/v1/stats` may list.
        let keys = sec.keys();
        let caller = if keys.is_empty() {
            Some(Caller::anonymous())
        } else {
            keys::presented(req.headers()).and_then(|k| keys.to_caller(k))
        };
        if let Some(c) = caller {
            req.extensions_mut().insert(c);
        }
        return next.run(req).await;
    }
    let ip = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let client = ip.map_or_else(|| "-".into(), |ip| ip.to_string());
    let keys = sec.keys();
    let key_id = if keys.is_empty() {
        None
    } else {
        // Before the key is looked at: a held-back address learns nothing
        // from its guesses, the right key included, until its bucket refills.
        if let Some(wait) = ip.and_then(|ip| sec.failures.held_back(ip)) {
            return refuse_guessing(&sec, req, ip, &client, &path, wait).await;
        }
        let presented = keys::presented(req.headers());
        match presented.and_then(|k| keys.to_caller(k)) {
            Some(caller) => Some(caller),
            None => {
                // Only wrong keys count: a request with no key guesses nothing.
                if presented.is_some() {
                    if let Some(wait) = ip.and_then(|ip| sec.failures.wrong_key(ip)) {
                        return refuse_guessing(&sec, req, ip, &client, &path, wait).await;
                    }
                }
                let reason = if presented.is_some() { "wrong key" } else { "no key" };
                if let Some(suppressed) = sec.failures.log_line(ip) {
                    tracing::warn!(client = %client, route = %echo(&path), reason, suppressed, "authentication failed");
                }
                discard_body(req).await;
                let mut resp = render_for_path(&path, ApiError::Unauthorized);
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                return resp;
            }
        }
    };
    let caller = key_id.unwrap_or_else(Caller::anonymous);
    let key_id = (!keys.is_empty()).then(|| caller.id.clone());
    // Without keys, limits apply per client address.
    let who = key_id.clone().unwrap_or_else(|| format!("addr:{client}"));
    if let Err(wait) = sec.limits.check_rate(&who) {
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        tracing::info!(client = %client, key_id = key_id.as_deref().unwrap_or("-"), "rate limited");
        discard_body(req).await;
        return with_retry_after(render_for_path(&path, ApiError::RateLimited { retry_after_s: secs }), wait);
    }
    // A live session is charged turn by turn as it is transcribed; one
    // with the day's audio used up does not start.
    if path == crate::state::REALTIME_PATH {
        if sec.limits.spent(&who) {
            discard_body(req).await;
            let wait = Duration::from_secs(3600);
            return with_retry_after(render_for_path(&path, ApiError::QuotaExceeded { retry_after_s: wait.as_secs() }), wait);
        }
        let (limits, who) = (Arc::downgrade(&sec), who.clone());
        req.extensions_mut().insert(crate::state::AudioMeter(Arc::new(move |seconds| {
            limits.upgrade().is_none_or(|sec| sec.limits.charge(&who, seconds))
        })));
    }
    // The quota covers transcription work only: reading a job's result
    // or listing jobs stays possible once the day's audio is spent.
    let reservation = if crate::telemetry::stats::is_work_route(req.method().as_str(), &path) {
        match sec.limits.reserve(&who) {
            Ok(r) => Some(r),
            Err(refusal) => {
                discard_body(req).await;
                let (err, wait) = match refusal {
                    QuotaRefusal::Spent(wait) => (ApiError::QuotaExceeded { retry_after_s: wait.as_secs().max(1) }, wait),
                    QuotaRefusal::Busy => (ApiError::QuotaBusy, Duration::from_secs(1)),
                };
                return with_retry_after(render_for_path(&path, err), wait);
            }
        }
    } else {
        None
    };
    if let Some(id) = &key_id {
        req.extensions_mut().insert(KeyId(id.clone()));
    }
    req.extensions_mut().insert(caller);
    let mut resp = next.run(req).await;
    if let Some(r) = reservation {
        match resp.extensions().get::<crate::jobs::Accepted>() {
            Some(job) => sec.limits.hold_for_job(r, &job.0),
            None => {
                let audio = resp.extensions().get::<AccessInfo>().and_then(|i| i.audio_seconds).unwrap_or(0.0);
                sec.limits.finish(r, audio);
            }
        }
    }
    if let Some(id) = key_id {
        resp.extensions_mut().insert(KeyId(id));
    }
    resp
}

