//! What the dashboard shows: the last ten minutes of transcription work in
//! two-second buckets (requests, errors, audio seconds, latencies, batch
//! sizes, queue depth), the most recent requests, and totals since start.
//!
//! Prometheus already has counters and histograms, but a dashboard built
//! in the binary cannot query Prometheus; reading percentiles back out of
//! the exporter's summaries would give whole-lifetime figures, not the
//! last minutes. So this keeps its own small window, process-wide like the
//! `metrics` recorder (the access middleware and the batcher threads see no
//! state object), bounded in memory: 300 buckets and 50 recent requests.
//!
//! Only transcription work counts: the sync routes, `POST /v1/jobs`, and
//! async jobs when they finish. Page loads, probes, `/metrics`, stats
//! polling and job polling would otherwise drown what the operator wants
//! to see.

use std::collections::VecDeque;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use serde::Serialize;
use utoipa::ToSchema;

/// Seconds per bucket.
pub const STEP_S: u64 = 2;
/// Buckets kept: ten minutes.
pub const BUCKETS: usize = 300;
/// Recent requests kept.
pub const RECENT: usize = 50;

/// The routes whose requests are transcription work; the others are not counted.
pub const WORK_ROUTES: &[(&str, &str)] = &[
    ("POST", "/transcribe"),
    ("POST", "/v1/audio/transcriptions"),
    ("POST", "/v1/audio/translations"),
    ("POST", "/v1/jobs"),
];

/// Whether `method` on `route` (a template, or a path: the work routes have
/// no parameters) is transcription work: counted here, and against the
/// audio quota by the key middleware.
pub fn is_work_route(method: &str, route: &str) -> bool {
    WORK_ROUTES.iter().any(|(m, r)| *m == method && *r == route)
}

/// One finished request or job, as the dashboard lists it. Never the
/// transcript, never the key.
#[derive(Clone, Debug, Serialize, ToSchema, PartialEq)]
pub struct RecentRequest {
    /// Unix time in milliseconds when it finished.
    pub time_ms: i64,
    pub request_id: String,
    /// `POST` for requests; `JOB` for an async job's completion.
    pub method: String,
    /// The route template, or `job` for an async job.
    pub route: String,
    pub status: u16,
    pub duration_ms: f64,
    /// Seconds of audio (when known: a transcription answered, a job done).
    pub audio_seconds: Option<f64>,
    /// The key id that made it (`anonymous` without keys): `/v1/stats`
    /// lists a caller's own requests only. Never shown.
    #[serde(skip)]
    pub owner: String,
}

#[derive(Clone, Debug, Default)]
struct Bucket {
    /// Bucket number: unix seconds / STEP_S.
    slot: u64,
    requests: u64,
    errors: u64,
    audio_s: f64,
    latencies_ms: Vec<f32>,
    /// Decode steps by batch size (index 0 unused).
    batches: Vec<u64>,
    queue_depth: Option<u64>,
    in_progress: Option<u64>,
}

/// One point of the series in `/v1/stats`.
#[derive(Clone, Debug, Serialize, ToSchema, PartialEq)]
pub struct Point {
    /// Unix time in milliseconds at the start of the bucket.
    pub t_ms: i64,
    pub requests: u64,
    pub errors: u64,
    pub audio_seconds: f64,
    /// Latency percentiles of what finished in the bucket; null when nothing did.
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    /// Decode steps in the bucket and their mean batch size.
    pub batch_steps: u64,
    pub mean_batch: Option<f64>,
    /// Sampled during the bucket (null before the first sample).
    pub queue_depth: Option<u64>,
    pub in_progress: Option<u64>,
}

/// Rates and percentiles over a trailing window.
#[derive(Clone, Debug, Serialize, ToSchema, PartialEq, Default)]
pub struct Summary {
    pub window_s: u64,
    pub requests: u64,
    pub errors: u64,
    pub requests_per_s: f64,
    pub audio_seconds_per_s: f64,
    /// errors / requests (0 when there were none).
    pub error_rate: f64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
}

#[derive(Clone, Debug, Serialize, ToSchema, PartialEq, Default)]
pub struct Totals {
    pub requests: u64,
    pub errors: u64,
    pub audio_seconds: f64,
    pub jobs_finished: u64,
}

#[derive(Default)]
struct Inner {
    buckets: VecDeque<Bucket>,
    state: State,
}

#[derive(Default)]
struct State {
    recent: VecDeque<RecentRequest>,
    totals: Totals,
    /// This process's decode steps by batch size, since start (a worker
    /// reports these in its heartbeat).
    batch_totals: Vec<u64>,
    /// The last cumulative batch counts sampled from elsewhere (a gateway's
    /// workers), to turn them into per-bucket steps.
    sampled_batches: Option<Vec<u64>>,
}

pub struct Collector {
    started: Instant,
    started_ms: i64,
    inner: Mutex<Inner>,
}

static COLLECTOR: OnceLock<Collector> = OnceLock::new();

/// The process's collector.
pub fn global() -> &'static Collector {
    COLLECTOR.get_or_init(Collector::new)
}

fn now_ms() -> i64 {
    crate::jobs::now_ms()
}

fn percentile(sorted: &[f32], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    // Nearest rank: the value below which a fraction q of the latencies fall.
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(f64::from(sorted[rank - 1]))
}

fn add_batches(into: &mut Vec<u64>, size: usize, n: u64) {
    if into.len() <= size {
        into.resize(size + 1, 0);
    }
    into[size] += n;
}

impl Default for Collector {
    fn default() -> Self {
        Self::new()
    }
}

impl Collector {
    pub fn new() -> Self {
        Collector { started: Instant::now(), started_ms: now_ms(), inner: Mutex::new(Inner::default()) }
    }

    pub fn uptime_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    pub fn started_ms(&self) -> i64 {
        self.started_ms
    }

    fn with<R>(&self, at_ms: i64, f: impl FnOnce(&mut State, &mut Bucket) -> R) -> R {
        let slot = (at_ms.max(0) as u64 / 1000) / STEP_S;
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let Inner { buckets, state } = &mut *guard;
        // Usually the newest bucket; a late event lands in its own.
        let i = match buckets.iter().rposition(|b| b.slot <= slot) {
            Some(i) if buckets[i].slot == slot => i,
            found => {
                let at = found.map_or(0, |i| i + 1);
                buckets.insert(at, Bucket { slot, ..Bucket::default() });
                at
            }
        };
        let out = f(state, &mut buckets[i]);
        while buckets.len() > BUCKETS {
            buckets.pop_front();
        }
        out
    }

    /// An answered request on `route` (a template). Requests on other
    /// routes than [`WORK_ROUTES`] are ignored. `latency_ms` counts towards
    /// the percentiles only for synchronous transcriptions (a job's POST
    /// is only its upload; the job counts when it finishes).
    pub fn request(&self, method: &str, route: &str, status: u16, latency_ms: f64, audio_s: Option<f64>, request_id: &str, owner: &str) {
        if !is_work_route(method, route) {
            return;
        }
        let sync = route != "/v1/jobs";
        self.finished(RecentRequest {
            time_ms: now_ms(),
            request_id: request_id.to_string(),
            method: method.to_string(),
            route: route.to_string(),
            status,
            duration_ms: latency_ms,
            audio_seconds: audio_s,
            owner: owner.to_string(),
        }, sync);
    }

    /// An async job reached a final state after `duration_ms` from its
    /// creation. `status` is 200 (completed), 499 (cancelled) or the
    /// error's HTTP status.
    pub fn job(&self, request_id: &str, owner: &str, status: u16, duration_ms: f64, audio_s: Option<f64>) {
        self.with(now_ms(), |state, _| state.totals.jobs_finished += 1);
        self.finished(RecentRequest {
            time_ms: now_ms(),
            request_id: request_id.to_string(),
            method: "JOB".into(),
            route: "job".into(),
            status,
            duration_ms,
            audio_seconds: audio_s,
            owner: owner.to_string(),
        }, true);
    }

    fn finished(&self, r: RecentRequest, timed: bool) {
        let is_job = r.method == "JOB";
        self.with(r.time_ms, |state, b| {
            let error = r.status >= 400;
            // A job is counted as a request when it is created; its
            // completion adds its audio, its latency, and its error if any.
            if !is_job {
                b.requests += 1;
                state.totals.requests += 1;
            }
            if error {
                b.errors += 1;
                state.totals.errors += 1;
            }
            if let Some(a) = r.audio_seconds.filter(|_| !error) {
                b.audio_s += a;
                state.totals.audio_seconds += a;
            }
            if timed && !error {
                b.latencies_ms.push(r.duration_ms as f32);
            }
            state.recent.push_back(r);
            while state.recent.len() > RECENT {
                state.recent.pop_front();
            }
        });
    }

    /// One decode step of `size` transcriptions in this process.
    pub fn batch(&self, size: usize) {
        self.with(now_ms(), |state, b| {
            add_batches(&mut b.batches, size, 1);
            add_batches(&mut state.batch_totals, size, 1);
        });
    }

    /// This process's decode steps by batch size since start.
    pub fn batch_totals(&self) -> Vec<u64> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).state.batch_totals.clone()
    }

    /// A sample of the dispatcher's load. `remote_batches`: cumulative
    /// steps by batch size counted elsewhere (a gateway's workers); the
    /// difference from the last sample goes into this bucket.
    pub fn sample(&self, queue_depth: Option<u64>, in_progress: u64, remote_batches: Option<Vec<u64>>) {
        self.with(now_ms(), |state, b| {
            b.queue_depth = queue_depth.max(b.queue_depth);
            b.in_progress = Some(in_progress).max(b.in_progress);
            if let Some(now) = remote_batches {
                if let Some(before) = state.sampled_batches.as_ref() {
                    for (size, &n) in now.iter().enumerate() {
                        // A worker that left takes its counts with it: never negative.
                        let d = n.saturating_sub(before.get(size).copied().unwrap_or(0));
                        if d > 0 {
                            add_batches(&mut b.batches, size, d);
                        }
                    }
                }
                state.sampled_batches = Some(now);
            }
        });
    }

    /// The series for the last `window_s` seconds, oldest first, with
    /// empty buckets filled in so the points are evenly spaced.
    pub fn series(&self, window_s: u64) -> Vec<Point> {
        let now_slot = (now_ms().max(0) as u64 / 1000) / STEP_S;
        let n = (window_s / STEP_S).clamp(1, BUCKETS as u64);
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        (now_slot + 1 - n..=now_slot)
            .map(|slot| {
                let b = inner.buckets.iter().rev().find(|b| b.slot == slot);
                point(slot, b)
            })
            .collect()
    }

    /// Rates over the last `window_s` seconds (the current, partial bucket included).
    pub fn summary(&self, window_s: u64) -> Summary {
        let now_slot = (now_ms().max(0) as u64 / 1000) / STEP_S;
        let n = (window_s / STEP_S).max(1);
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut s = Summary { window_s: n * STEP_S, ..Summary::default() };
        let mut lat = Vec::new();
        let mut audio = 0.0;
        for b in inner.buckets.iter().filter(|b| b.slot + n > now_slot) {
            s.requests += b.requests;
            s.errors += b.errors;
            audio += b.audio_s;
            lat.extend_from_slice(&b.latencies_ms);
        }
        // Since start, when the process is younger than the window.
        let secs = (self.uptime_s()).min(s.window_s as f64).max(1.0);
        s.requests_per_s = s.requests as f64 / secs;
        s.audio_seconds_per_s = audio / secs;
        s.error_rate = if s.requests > 0 { s.errors as f64 / s.requests as f64 } else { 0.0 };
        lat.sort_by(f32::total_cmp);
        s.p50_ms = percentile(&lat, 0.50);
        s.p95_ms = percentile(&lat, 0.95);
        s
    }

    /// Steps by batch size over the last `window_s` seconds: `{"1": 12, "4": 3}`.
    pub fn batch_sizes(&self, window_s: u64) -> std::collections::BTreeMap<String, u64> {
        let now_slot = (now_ms().max(0) as u64 / 1000) / STEP_S;
        let n = (window_s / STEP_S).max(1);
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut sum = Vec::new();
        for b in inner.buckets.iter().filter(|b| b.slot + n > now_slot) {
            for (size, &c) in b.batches.iter().enumerate() {
                if c > 0 {
                    add_batches(&mut sum, size, c);
                }
            }
        }
        sum.iter().enumerate().filter(|(_, &c)| c > 0).map(|(size, &c)| (size.to_string(), c)).collect()
    }

    /// The most recent requests, newest first.
    /// The newest `limit` requests that `visible` lets through.
    pub fn recent(&self, limit: usize, visible: impl Fn(&RecentRequest) -> bool) -> Vec<RecentRequest> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.state.recent.iter().rev().filter(|r| visible(r)).take(limit).cloned().collect()
    }

    pub fn totals(&self) -> Totals {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).state.totals.clone()
    }
}

fn point(slot: u64, b: Option<&Bucket>) -> Point {
    let t_ms = (slot * STEP_S * 1000) as i64;
    let Some(b) = b else {
        return Point { t_ms, requests: 0, errors: 0, audio_seconds: 0.0, p50_ms: None, p95_ms: None,
            batch_steps: 0, mean_batch: None, queue_depth: None, in_progress: None };
    };
    let mut lat = b.latencies_ms.clone();
    lat.sort_by(f32::total_cmp);
    let steps: u64 = b.batches.iter().sum();
    let items: u64 = b.batches.iter().enumerate().map(|(size, &c)| size as u64 * c).sum();
    Point {
        t_ms,
        requests: b.requests,
        errors: b.errors,
        audio_seconds: (b.audio_s * 1000.0).round() / 1000.0,
        p50_ms: percentile(&lat, 0.50),
        p95_ms: percentile(&lat, 0.95),
        batch_steps: steps,
        mean_batch: (steps > 0).then(|| items as f64 / steps as f64),
        queue_depth: b.queue_depth,
        in_progress: b.in_progress,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_work_routes_count() {
        let c = Collector::new();
        c.request("GET", "/health", 200, 1.0, None, "a", "k");
        c.request("GET", "/v1/jobs/{id}", 200, 1.0, None, "b", "k");
        c.request("POST", "/transcribe", 200, 100.0, Some(11.0), "c", "k");
        c.request("POST", "/v1/audio/transcriptions", 400, 3.0, None, "d", "k");
        let t = c.totals();
        assert_eq!((t.requests, t.errors), (2, 1));
        assert!((t.audio_seconds - 11.0).abs() < 1e-9);
        let recent = c.recent(10, |_| true);
        assert_eq!(recent.iter().map(|r| r.request_id.as_str()).collect::<Vec<_>>(), ["d", "c"]);
        let s = c.summary(60);
        assert_eq!((s.requests, s.errors), (2, 1));
        assert!((s.error_rate - 0.5).abs() < 1e-9);
        // The failed request's latency is not in the percentiles.
        assert_eq!(s.p50_ms, Some(100.0));
    }

    #[test]
    fn job_posts_count_as_requests_and_completions_add_audio_and_latency() {
        let c = Collector::new();
        c.request("POST", "/v1/jobs", 202, 5.0, None, "j", "k");
        c.job("j", "k", 200, 900.0, Some(30.0));
        let t = c.totals();
        assert_eq!((t.requests, t.errors, t.jobs_finished), (1, 0, 1));
        assert_eq!(c.summary(60).p95_ms, Some(900.0));
        assert!((c.summary(60).audio_seconds_per_s - 30.0 / c.uptime_s().clamp(1.0, 60.0)).abs() < 1e-6);
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<f32> = (1..=100).map(|x| x as f32).collect();
        assert_eq!(percentile(&v, 0.5), Some(50.0));
        assert_eq!(percentile(&v, 0.95), Some(95.0));
        assert_eq!(percentile(&[7.0], 0.95), Some(7.0));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn batches_local_and_sampled() {
        let c = Collector::new();
        c.batch(1);
        c.batch(3);
        c.batch(3);
        assert_eq!(c.batch_totals(), vec![0, 1, 0, 2]);
        // Remote counts: the first sample is a baseline, then differences;
        // a drop (a worker left) adds nothing.
        c.sample(Some(4), 2, Some(vec![0, 10, 5]));
        c.sample(Some(1), 1, Some(vec![0, 12, 5]));
        c.sample(None, 0, Some(vec![0, 1, 0]));
        let sizes = c.batch_sizes(60);
        assert_eq!(sizes.get("1"), Some(&3));
        assert_eq!(sizes.get("3"), Some(&2));
        let last = c.series(4).pop().expect("a point");
        assert_eq!(last.queue_depth, Some(4));
        assert!(last.batch_steps >= 1);
    }

    #[test]
    fn series_is_evenly_spaced_and_bounded() {
        let c = Collector::new();
        c.request("POST", "/transcribe", 200, 10.0, Some(1.0), "x", "k");
        let s = c.series(600);
        assert_eq!(s.len(), BUCKETS);
        assert!(s.windows(2).all(|w| w[1].t_ms - w[0].t_ms == (STEP_S * 1000) as i64));
        assert_eq!(s.iter().map(|p| p.requests).sum::<u64>(), 1);
        for i in 0..(RECENT + 5) {
            c.request("POST", "/transcribe", 200, 1.0, None, &i.to_string(), "k");
        }
        assert_eq!(c.recent(1000, |_| true).len(), RECENT);
    }
}
