//! Who may call the API and how often: API keys ([`keys`]), request rates
//! and audio quotas ([`limits`]), and HTTPS ([`tls`]). One middleware,
//! [`guard`], applies keys and limits to every route but the probes.

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
use crate::error::{render_for_path, ApiError};
use crate::telemetry::access::{AccessInfo, KeyId};
use keys::{KeyError, KeySet};
use limits::Limits;

pub struct Security {
    config: Arc<Config>,
    keys: RwLock<Arc<KeySet>>,
    pub limits: Limits,
}

impl Security {
    pub fn new(config: Arc<Config>) -> Result<Arc<Security>, KeyError> {
        let keys = KeySet::load(&config.auth)?;
        if !keys.is_empty() {
            tracing::info!(keys = keys.len(), "API keys required");
        }
        let limits = Limits::new(&config.rate_limit);
        let me = Arc::new(Security { config, keys: RwLock::new(Arc::new(keys)), limits });
        let tidy = Arc::downgrade(&me);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(60)).await;
                match tidy.upgrade() {
                    Some(s) => s.limits.tidy(),
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
            crate::api::HEALTH_PATH | crate::api::LIVENESS_PATH => true,
            crate::api::METRICS_PATH | crate::api::STATS_PATH => !self.config.auth.metrics_requires_key,
            crate::api::docs::OPENAPI_PATH | crate::api::docs::DOCS_PATH => true,
            p if p.starts_with("/docs/") => true,
            p => crate::web::is_public(p),
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

/// Keys, then the request rate, then the day's audio quota; counts the
/// audio a request used once it is answered.
pub async fn guard(State(sec): State<Arc<Security>>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    if sec.is_open(&path) {
        return next.run(req).await;
    }
    let client = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string()).unwrap_or_else(|| "-".into());
    let keys = sec.keys();
    let key_id = if keys.is_empty() {
        None
    } else {
        let presented = keys::presented(req.headers());
        match presented.and_then(|k| keys.lookup(k)) {
            Some(id) => Some(id.to_string()),
            None => {
                let reason = if presented.is_some() { "wrong key" } else { "no key" };
                tracing::warn!(client = %client, route = %path, reason, "authentication failed");
                discard_body(req).await;
                let mut resp = render_for_path(&path, ApiError::Unauthorized);
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                return resp;
            }
        }
    };
    // Without keys, limits apply per client address.
    let who = key_id.clone().unwrap_or_else(|| format!("addr:{client}"));
    if let Err(wait) = sec.limits.check_rate(&who) {
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        tracing::info!(client = %client, key_id = key_id.as_deref().unwrap_or("-"), "rate limited");
        discard_body(req).await;
        return with_retry_after(render_for_path(&path, ApiError::RateLimited { retry_after_s: secs }), wait);
    }
    if let Err(wait) = sec.limits.check_quota(&who) {
        let secs = wait.as_secs().max(1);
        discard_body(req).await;
        return with_retry_after(render_for_path(&path, ApiError::QuotaExceeded { retry_after_s: secs }), wait);
    }
    if let Some(id) = &key_id {
        req.extensions_mut().insert(KeyId(id.clone()));
    }
    let mut resp = next.run(req).await;
    if let Some(a) = resp.extensions().get::<AccessInfo>().and_then(|i| i.audio_seconds) {
        sec.limits.add_audio(&who, a);
    }
    if let Some(id) = key_id {
        resp.extensions_mut().insert(KeyId(id));
    }
    resp
}
