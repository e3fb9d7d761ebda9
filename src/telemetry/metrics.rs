//! Prometheus metrics (`GET /metrics`), kept by the `metrics` crate in a
//! process-wide recorder from `metrics-exporter-prometheus` and rendered by
//! its handle.
//!
//! The recorder is installed the first time anything here is called: every
//! metric goes through a function of this module, so nothing is recorded
//! into the no-op recorder that `metrics` has before one is installed.
//!
//! What is measured where:
//! * the engine pool's counters stay atomics in the pool (the worker
//!   heartbeat reads them too); the pool hands them over as
//!   [`PoolNumbers`] at each scrape, so this module needs no pool;
//! * events with a distribution (queue wait, inference time, real-time
//!   factor, batch size, replica busy time, HTTP requests) are recorded when
//!   they happen;
//! * process memory is read at each scrape, GPU memory by a sampler thread.
//!
//! Two sums of seconds, `whisper_serve_audio_seconds_total` and
//! `whisper_serve_replica_busy_seconds_total`, are counters with fractions.
//! `metrics` counters are integers, so they are kept as gauges (which hold
//! `f64`) and their `# TYPE` line is set back to `counter` when rendered.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// What an engine pool tells the metrics at a scrape: its queue now and
/// its counters since start.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PoolNumbers {
    pub queued: usize,
    pub running: usize,
    pub steps: u64,
    pub windows: u64,
    pub max_batch: u64,
    pub jobs_done: u64,
    pub jobs_failed: u64,
    pub audio_seconds: f64,
}

/// The Prometheus text format this module renders.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

pub const READY: &str = "whisper_serve_ready";
pub const QUEUE_LENGTH: &str = "whisper_serve_queue_length";
pub const RUNNING: &str = "whisper_serve_running";
pub const BATCH_STEPS: &str = "whisper_serve_batch_steps_total";
pub const BATCH_WINDOWS: &str = "whisper_serve_batch_windows_total";
pub const BATCH_SIZE_MAX: &str = "whisper_serve_batch_size_max";
pub const JOBS_DONE: &str = "whisper_serve_jobs_done_total";
pub const JOBS_FAILED: &str = "whisper_serve_jobs_failed_total";
pub const AUDIO_SECONDS: &str = "whisper_serve_audio_seconds_total";
pub const HTTP_REQUESTS: &str = "whisper_serve_http_requests_total";
pub const HTTP_DURATION: &str = "whisper_serve_http_request_duration_seconds";
pub const QUEUE_WAIT: &str = "whisper_serve_queue_wait_seconds";
pub const INFERENCE: &str = "whisper_serve_inference_seconds";
pub const REAL_TIME_FACTOR: &str = "whisper_serve_real_time_factor";
pub const BATCH_SIZE: &str = "whisper_serve_batch_size";
pub const PACKED_WINDOWS: &str = "whisper_serve_packed_windows_total";
pub const PACKED_REQUESTS: &str = "whisper_serve_packed_requests_total";
pub const PACKED_REDO: &str = "whisper_serve_packed_redo_total";
pub const REPLICA_BUSY: &str = "whisper_serve_replica_busy_seconds_total";
pub const MODEL_LOAD: &str = "whisper_serve_model_load_seconds";
pub const RESIDENT_MEMORY: &str = "whisper_serve_process_resident_memory_bytes";
pub const GPU_MEMORY: &str = "whisper_serve_gpu_memory_used_bytes";
pub const GPU_UTILIZATION: &str = "whisper_serve_gpu_utilization_ratio";
pub const REALTIME_SESSIONS: &str = "whisper_serve_realtime_sessions";
pub const REALTIME_TURNS: &str = "whisper_serve_realtime_turns_total";
pub const REALTIME_AUDIO: &str = "whisper_serve_realtime_audio_seconds_total";
pub const REALTIME_CUT_OFF: &str = "whisper_serve_realtime_cut_off_total";
pub const REALTIME_OVERFLOWS: &str = "whisper_serve_realtime_overflows_total";

/// Sums with fractions, kept as gauges, rendered as counters (see above).
const FLOAT_COUNTERS: [&str; 3] = [AUDIO_SECONDS, REPLICA_BUSY, REALTIME_AUDIO];

/// Latency buckets, seconds: from a fast HTTP answer to a 10-minute file
/// (`limits.request_timeout_s` is 600 by default).
const LATENCY_BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0];
/// Windows per step: `batching.max_batch_size` is 1-64.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0, 48.0, 64.0];
/// Inference seconds per audio second: well under 1 on a GPU, around 0.1-1
/// on CPU; above 1 the service falls behind real time.
const RTF_BUCKETS: &[f64] = &[0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0];
/// How often histogram samples are folded into their buckets when nobody
/// scrapes (a render does it too); keeps the sample buffers small.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);
/// How often the GPU sampler asks nvidia-smi (as `gpu_memory` in answers).
/// The route label of requests no route matched: raw paths would make one
/// series per URL a client tries.
const UNMATCHED: &str = "unmatched";

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The installed recorder's handle, installing it on first use; None when
/// another recorder was installed first (then nothing of ours is kept).
fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE.get_or_init(install).as_ref()
}

/// Installs the recorder now (it also happens on first use).
pub fn init() {
    let _ = handle();
}

fn install() -> Option<PrometheusHandle> {
    let built = PrometheusBuilder::new()
        .set_buckets(LATENCY_BUCKETS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(BATCH_SIZE.into()), BATCH_BUCKETS))
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(REAL_TIME_FACTOR.into()), RTF_BUCKETS))
        .and_then(|b| b.install_recorder());
    let handle = match built {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(error = %e, "metrics recorder not installed; /metrics will be empty");
            return None;
        }
    };
    describe();
    let upkeep = handle.clone();
    let spawned = std::thread::Builder::new().name("metrics-upkeep".into()).spawn(move || loop {
        std::thread::sleep(UPKEEP_EVERY);
        upkeep.run_upkeep();
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "no metrics upkeep thread; histograms are folded at scrapes only");
    }
    Some(handle)
}

/// The `# HELP` lines.
fn describe() {
    describe_gauge!(READY, "1 once this process can serve");
    describe_gauge!(QUEUE_LENGTH, "Jobs waiting for a replica");
    describe_gauge!(RUNNING, "Transcriptions in progress");
    describe_counter!(BATCH_STEPS, "Batched decoding steps");
    describe_counter!(PACKED_WINDOWS, "Windows that held several short requests (batching.pack_short_clips)");
    describe_counter!(PACKED_REQUESTS, "Requests decoded in a packed window");
    describe_counter!(PACKED_REDO, "Packed requests decoded again alone (a segment crossed a boundary, or none was theirs)");
    describe_counter!(BATCH_WINDOWS, "30 s windows decoded");
    describe_gauge!(BATCH_SIZE_MAX, "Largest batch decoded so far");
    describe_counter!(JOBS_DONE, "Transcriptions completed");
    describe_counter!(JOBS_FAILED, "Transcriptions failed");
    describe_gauge!(AUDIO_SECONDS, Unit::Seconds, "Seconds of audio transcribed");
    describe_counter!(HTTP_REQUESTS, "HTTP requests answered, by route template and status");
    describe_histogram!(HTTP_DURATION, Unit::Seconds, "Time to answer an HTTP request (to its first byte), by route template");
    describe_histogram!(QUEUE_WAIT, Unit::Seconds, "Time a transcription waited for a replica");
    describe_histogram!(INFERENCE, Unit::Seconds, "Time from a replica taking a transcription to its end");
    describe_histogram!(REAL_TIME_FACTOR, "Inference seconds per second of audio, per transcription");
    describe_histogram!(BATCH_SIZE, "Windows decoded together per batched step");
    describe_gauge!(REPLICA_BUSY, Unit::Seconds, "Time each replica spent in decoding steps");
    describe_gauge!(MODEL_LOAD, Unit::Seconds, "Time the last model load took, download included");
    describe_gauge!(RESIDENT_MEMORY, Unit::Bytes, "Resident memory of this process");
    describe_gauge!(GPU_MEMORY, Unit::Bytes, "GPU memory in use (all processes), by CUDA device index (NVML)");
    describe_gauge!(GPU_UTILIZATION, Unit::Count, "Share of time the GPU was busy (0-1), by CUDA device index (NVML)");
    describe_gauge!(REALTIME_SESSIONS, "Realtime sessions open in this process");
    describe_counter!(REALTIME_TURNS, "Realtime turns transcribed");
    describe_gauge!(REALTIME_AUDIO, Unit::Seconds, "Seconds of audio in transcribed realtime turns");
    describe_counter!(REALTIME_CUT_OFF, "Realtime clients cut off for not reading their events (realtime.max_pending_events)");
    describe_counter!(REALTIME_OVERFLOWS, "Realtime sessions closed for an audio backlog over realtime.max_lag_s");
}

pub fn realtime_sessions(open: usize) {
    gauge!(REALTIME_SESSIONS).set(open as f64);
}

pub fn realtime_turn(audio_s: f64) {
    counter!(REALTIME_TURNS).increment(1);
    gauge!(REALTIME_AUDIO).increment(audio_s);
}

pub fn realtime_cut_off() {
    counter!(REALTIME_CUT_OFF).increment(1);
}

pub fn realtime_overflow() {
    counter!(REALTIME_OVERFLOWS).increment(1);
}

/// Renders every metric, refreshing those read at scrape time first.
pub fn render(ready: bool, pool: Option<PoolNumbers>) -> String {
    let Some(handle) = handle() else { return String::new() };
    gauge!(READY).set(f64::from(u8::from(ready)));
    if let Some(p) = pool {
        gauge!(QUEUE_LENGTH).set(p.queued as f64);
        gauge!(RUNNING).set(p.running as f64);
        counter!(BATCH_STEPS).absolute(p.steps);
        counter!(BATCH_WINDOWS).absolute(p.windows);
        gauge!(BATCH_SIZE_MAX).set(p.max_batch as f64);
        counter!(JOBS_DONE).absolute(p.jobs_done);
        counter!(JOBS_FAILED).absolute(p.jobs_failed);
        gauge!(AUDIO_SECONDS).set(p.audio_seconds);
    }
    if let Some(bytes) = resident_memory_bytes() {
        gauge!(RESIDENT_MEMORY).set(bytes as f64);
    }
    retype_float_counters(handle.render())
}

/// Sets the `# TYPE` of the fractional sums back to counter.
fn retype_float_counters(mut text: String) -> String {
    for name in FLOAT_COUNTERS {
        let gauge_line = format!("# TYPE {name} gauge\n");
        if let Some(at) = text.find(&gauge_line) {
            text.replace_range(at..at + gauge_line.len(), &format!("# TYPE {name} counter\n"));
        }
    }
    text
}

/// Resident set size from `/proc/self/statm` (Linux); None elsewhere.
fn resident_memory_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let page = if page > 0 { page as u64 } else { 4096 };
    Some(pages * page)
}

/// Axum middleware: counts each request by route template and status and
/// times it. Route templates (`/v1/jobs/{id}`), never raw paths, keep the
/// number of series bounded. Wire it with `Router::layer` (route matching
/// happens before it, so the matched path is known).
pub async fn track_http(req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
    let started = Instant::now();
    let response = next.run(req).await;
    http_request(route.as_deref().unwrap_or(UNMATCHED), response.status().as_u16(), started.elapsed());
    response
}

/// One answered HTTP request.
pub fn http_request(route: &str, status: u16, took: Duration) {
    init();
    counter!(HTTP_REQUESTS, "route" => route.to_owned(), "status" => status.to_string()).increment(1);
    histogram!(HTTP_DURATION, "route" => route.to_owned()).record(took.as_secs_f64());
}

/// A replica took a job after `waited` in the queue.
pub fn job_started(waited: Duration) {
    init();
    histogram!(QUEUE_WAIT).record(waited.as_secs_f64());
}

/// A transcription of `audio_s` seconds finished `inference_s` after a
/// replica took it.
pub fn job_done(inference_s: f64, audio_s: f64) {
    init();
    histogram!(INFERENCE).record(inference_s);
    if audio_s > 0.0 {
        histogram!(REAL_TIME_FACTOR).record(inference_s / audio_s);
    }
}

/// Replica `replica` decoded `windows` windows in one step that took `took`.
pub fn batch_step(replica: usize, windows: usize, took: Duration) {
    init();
    histogram!(BATCH_SIZE).record(windows as f64);
    crate::telemetry::stats::global().batch(windows);
    gauge!(REPLICA_BUSY, "replica" => replica.to_string()).increment(took.as_secs_f64());
}

/// A window was packed with `n` requests.
pub fn packed_window(n: usize) {
    init();
    counter!(PACKED_WINDOWS).increment(1);
    counter!(PACKED_REQUESTS).increment(n as u64);
}

/// A packed request had to be decoded again alone.
pub fn packed_redo() {
    init();
    counter!(PACKED_REDO).increment(1);
}

/// Times a model load: sets `whisper_serve_model_load_seconds` when
/// dropped, so one line at the top of the loading function covers all of
/// it (fetch included). A load that fails sets it too, to the time until
/// it failed; `/health` says that the model failed.
#[must_use = "the load is timed until the guard is dropped"]
pub struct ModelLoadTimer(Instant);

pub fn model_load_timer() -> ModelLoadTimer {
    init();
    ModelLoadTimer(Instant::now())
}

impl Drop for ModelLoadTimer {
    fn drop(&mut self) {
        gauge!(MODEL_LOAD).set(self.0.elapsed().as_secs_f64());
    }
}

/// A sample of CUDA device `device` (from `gpu::nvml`).
pub fn gpu_sample(device: usize, memory_used_bytes: u64, utilization: f64) {
    init();
    gauge!(GPU_MEMORY, "device" => device.to_string()).set(memory_used_bytes as f64);
    gauge!(GPU_UTILIZATION, "device" => device.to_string()).set(utilization);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractional_sums_render_as_counters() {
        let text = format!("# HELP {AUDIO_SECONDS} x\n# TYPE {AUDIO_SECONDS} gauge\n{AUDIO_SECONDS} 1.5\n");
        let out = retype_float_counters(text);
        assert!(out.contains(&format!("# TYPE {AUDIO_SECONDS} counter\n")), "{out}");
        assert!(out.contains(&format!("{AUDIO_SECONDS} 1.5")), "{out}");
    }

    #[test]
    fn resident_memory_is_read() {
        if cfg!(target_os = "linux") {
            assert!(resident_memory_bytes().is_some_and(|b| b > 1024 * 1024));
        }
    }

    #[tokio::test]
    async fn requests_are_counted_by_route_template_never_raw_path() {
        use axum::routing::get;
        use tower::ServiceExt;
        let app = axum::Router::new()
            .route("/things/{id}", get(|| async { "ok" }))
            .layer(axum::middleware::from_fn(track_http));
        let call = |uri: &'static str| {
            let app = app.clone();
            async move {
                let req = axum::http::Request::builder().uri(uri).body(axum::body::Body::empty()).expect("request");
                app.oneshot(req).await.expect("answer").status().as_u16()
            }
        };
        assert_eq!(call("/things/42").await, 200);
        assert_eq!(call("/things/43").await, 200);
        assert_eq!(call("/nothing/here-xyz").await, 404);
        let text = render(false, None);
        assert!(text.contains("whisper_serve_http_requests_total{route=\"/things/{id}\",status=\"200\"} 2"), "{text}");
        assert!(text.contains("route=\"unmatched\",status=\"404\"}"), "{text}");
        assert!(!text.contains("here-xyz") && !text.contains("/things/42"), "{text}");
    }

    #[test]
    fn recorded_metrics_render() {
        http_request("/transcribe", 200, Duration::from_millis(30));
        job_started(Duration::from_millis(2));
        job_done(1.0, 10.0);
        batch_step(0, 3, Duration::from_millis(1500));
        let text = render(true, None);
        for needle in [
            "whisper_serve_ready 1",
            "whisper_serve_http_requests_total{route=\"/transcribe\",status=\"200\"}",
            "whisper_serve_http_request_duration_seconds_bucket{route=\"/transcribe\",le=\"0.05\"}",
            "whisper_serve_queue_wait_seconds_count",
            "whisper_serve_real_time_factor_bucket{le=\"0.1\"}",
            "whisper_serve_batch_size_bucket{le=\"3\"}",
            "# TYPE whisper_serve_replica_busy_seconds_total counter",
            "whisper_serve_process_resident_memory_bytes",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }
}
