//! What the routes and the key middleware share: the service's state
//! ([`AppState`]: config, dispatcher, admission count) and the paths the
//! middleware treats specially. Its own module so that the arrows run one
//! way: `server` builds the state and wires `api` and `security`, which
//! both read it here and import neither `server` nor each other.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::config::Config;
use crate::dispatch::Dispatcher;
use crate::error::ApiError;

/// Readiness: 200 once this process can serve (model loaded; for a
/// gateway, a worker serving the configured model is alive).
pub const HEALTH_PATH: &str = "/health";
/// Liveness: 200 while the process answers at all.
pub const LIVENESS_PATH: &str = "/health/live";
pub const METRICS_PATH: &str = "/metrics";
/// The dashboard's data; keyed like `/metrics`.
pub const STATS_PATH: &str = "/v1/stats";
/// The OpenAPI document and the API reference built on it.
pub const OPENAPI_PATH: &str = "/openapi.json";
pub const DOCS_PATH: &str = "/docs";

/// Whether `path` is a page or an asset (served without an API key: the
/// pages ask for the key and send it with their API calls).
pub fn is_page(path: &str) -> bool {
    path == "/" || path == "/dashboard" || path.starts_with("/assets/")
}

/// Whether `path` is the API reference (open like the pages).
pub fn is_docs(path: &str) -> bool {
    path == OPENAPI_PATH || path == DOCS_PATH || path.starts_with("/docs/")
}

/// Live transcription sessions (`GET /v1/realtime`).
pub const REALTIME_PATH: &str = "/v1/realtime";

/// Counts a live session's audio against its key's daily quota (set by the
/// key middleware on `GET /v1/realtime`); false once the quota is used up.
#[derive(Clone)]
pub struct AudioMeter(pub Arc<dyn Fn(f64) -> bool + Send + Sync>);

pub struct AppState {
    pub config: Arc<Config>,
    pub dispatcher: Arc<dyn Dispatcher>,
    /// The realtime sessions served through this process.
    pub realtime: Arc<crate::realtime::Registry>,
    in_flight: AtomicUsize,
}

/// Holds an admission slot for as long as a request is being served.
pub struct Slot<'a>(&'a AtomicUsize);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl AppState {
    pub fn new(config: Arc<Config>, dispatcher: Arc<dyn Dispatcher>) -> Self {
        let realtime = crate::realtime::Registry::new(config.realtime.max_sessions);
        Self { config, dispatcher, realtime, in_flight: AtomicUsize::new(0) }
    }

    /// Enforces `deployment.max_concurrent_queries` (Ray Serve's cap on
    /// requests in flight), when set.
    pub fn admit(&self) -> Result<Slot<'_>, ApiError> {
        let n = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        let slot = Slot(&self.in_flight);
        match self.config.deployment.max_concurrent_queries {
            Some(max) if n > max as usize => Err(ApiError::QueueFull { retry_after_s: 1 }),
            _ => Ok(slot),
        }
    }
}
