//! `GET /v1/stats`: what the service does now and over the last minutes,
//! for the dashboard (and anyone's script). The numbers come from
//! [`crate::telemetry::stats`]; the replicas and queue from the dispatcher,
//! sampled every second so the series has them too.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::dispatch::Load;
use crate::error::{ApiError, OpenAiError};
use crate::state::AppState;
use crate::telemetry::stats::{self, Point, RecentRequest, Summary, Totals};

/// The trailing window of `now`.
const NOW_WINDOW_S: u64 = 60;
const DEFAULT_RECENT: usize = 20;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatsQuery {
    /// Seconds of history in `series` and `window` (2 to 600; default 600).
    pub window_s: Option<u64>,
    /// How many recent requests to list (0 to 50; default 20).
    pub recent: Option<usize>,
}

/// The model and where it runs.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelInfo {
    /// `model.size` of the config.
    pub name: String,
    /// `cpu` or `cuda`; null until the model is loaded (or, on a gateway, a worker is seen).
    pub device: Option<String>,
    pub compute_type: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Series {
    /// Seconds per point.
    pub step_s: u64,
    /// Oldest first, evenly spaced; the last point is the current, partial bucket.
    pub points: Vec<Point>,
}

/// The body of `GET /v1/stats`. Only transcription work is counted:
/// `POST /transcribe`, `/v1/audio/*` and `/v1/jobs`, and async jobs when
/// they finish. Never transcripts or keys.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatsBody {
    /// Always `stats`.
    pub object: &'static str,
    pub version: &'static str,
    /// `serve` or `gateway`.
    pub mode: &'static str,
    pub model: ModelInfo,
    pub uptime_s: f64,
    /// Unix time (seconds) the process started.
    pub started_at: i64,
    /// Replicas (or workers), queue depth and capacity, now.
    pub load: Load,
    /// This process's GPUs (memory, utilisation) from NVML; empty on CPU,
    /// without NVML, and on a gateway (each worker's `/metrics` has its own).
    pub gpus: Vec<crate::gpu::nvml::GpuSample>,
    /// The last minute.
    pub now: Summary,
    /// The whole window asked for.
    pub window: Summary,
    /// Since the process started.
    pub totals: Totals,
    /// Decode steps by batch size over the window: `{"1": 40, "4": 7}`.
    pub batch_sizes: BTreeMap<String, u64>,
    pub series: Series,
    /// Newest first.
    pub recent: Vec<RecentRequest>,
}

/// Activity now and over the last minutes.
#[utoipa::path(get, path = "/v1/stats", tag = "service", params(StatsQuery),
    responses(
        (status = 200, description = "The service's activity", body = StatsBody),
        (status = 400, description = "A parameter out of range", body = crate::api::docs::OpenAiErrorBody),
        (status = 401, description = "A key is required (`auth.metrics_requires_key`)", body = crate::api::docs::OpenAiErrorBody),
    ))]
pub(super) async fn stats(
    State(state): State<Arc<AppState>>,
    caller: Option<axum::extract::Extension<crate::jobs::Caller>>,
    Query(q): Query<StatsQuery>,
) -> Result<Json<StatsBody>, OpenAiError> {
    let window_s = q.window_s.unwrap_or(stats::STEP_S * stats::BUCKETS as u64);
    if !(stats::STEP_S..=stats::STEP_S * stats::BUCKETS as u64).contains(&window_s) {
        return Err(ApiError::InvalidParam { param: "window_s", message: format!("`{window_s}` is not from 2 to 600") }.into());
    }
    let recent = q.recent.unwrap_or(DEFAULT_RECENT);
    if recent > stats::RECENT {
        return Err(ApiError::InvalidParam { param: "recent", message: format!("`{recent}` is more than {}", stats::RECENT) }.into());
    }
    let c = stats::global();
    let load = state.dispatcher.load().await;
    Ok(Json(StatsBody {
        object: "stats",
        version: env!("CARGO_PKG_VERSION"),
        mode: state.dispatcher.mode(),
        model: ModelInfo {
            name: state.config.model.size.clone(),
            device: load.device.clone(),
            compute_type: load.compute_type.clone(),
        },
        uptime_s: (c.uptime_s() * 10.0).round() / 10.0,
        started_at: c.started_ms() / 1000,
        now: c.summary(NOW_WINDOW_S),
        window: c.summary(window_s),
        totals: c.totals(),
        batch_sizes: c.batch_sizes(window_s),
        series: Series { step_s: stats::STEP_S, points: c.series(window_s) },
        // Whose requests a caller may see: its own key's, an admin's all,
        // none for a caller without a key while keys are on.
        recent: match caller {
            Some(axum::extract::Extension(who)) => c.recent(recent, |r| who.admin || r.owner == who.id),
            None => Vec::new(),
        },
        gpus: crate::gpu::nvml::samples(),
        load,
    }))
}

/// Samples the dispatcher's load every second into the series, for as
/// long as the state lives.
pub fn spawn_sampler(state: &Arc<AppState>) {
    let state: Weak<AppState> = Arc::downgrade(state);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let Some(s) = state.upgrade() else { return };
            let load = s.dispatcher.load().await;
            stats::global().sample(load.queue_depth, load.in_progress, load.remote_batch_steps);
        }
    });
}
