//! A worker: the engine pool `serve` uses, fed from JetStream. It pulls
//! no more jobs than its replicas can batch (replicas x batch size), sends
//! progress acks while a job runs, writes the job's record and only then
//! acks. A redelivered job whose record is final is acked, not redone.
//! Failures the input caused fail the job at once; others are retried by
//! JetStream until `max_deliver`, then the job is marked failed and copied
//! to the dead-letter stream. On SIGTERM it stops pulling, finishes what it
//! holds within `server.shutdown_timeout_s`, and naks the rest.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::StreamExt;
use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{connect, Bus, ClusterError, JobMessage, WorkerInfo, DEAD_REASON_HEADER};
use crate::config::Config;
use crate::dispatch::pool::{BatchSettings, Pool, PoolLimits};
use crate::dispatch::{local::outcome, DispatchError, Outcome};
use crate::jobs::webhook::WebhookSender;
use crate::jobs::{self, JobRecord, JobStatus};
use crate::server::ServerError;

/// How long one pull waits for a job before asking again.
const PULL_EXPIRES: Duration = Duration::from_secs(5);
/// Compare-and-set rounds a record write makes before giving up (and
/// leaving the job to JetStream's redelivery).
const WRITE_TRIES: usize = 5;

/// Header of a synchronous job's message whose caller streams
/// (`stream=true`): the worker publishes its [`ProgressMessage`]s on
/// [`progress_subject`] (core NATS, at most once; the final record stays
/// the answer).
pub const PROGRESS_HEADER: &str = "Whisper-Progress";

/// The core-NATS subject of job `id`'s progress: `<prefix>.progress.<id>`.
pub fn progress_subject(prefix: &str, id: &str) -> String {
    format!("{prefix}.progress.{id}")
}

/// What a worker tells a streaming gateway as a job runs.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ProgressMessage {
    /// Seconds of audio in the upload.
    Audio { seconds: f64 },
    /// Text the transcript gains, starting `offset` bytes into its text
    /// (so a gateway can tell a lost or repeated message).
    Text { offset: usize, text: String },
}

struct Worker {
    id: String,
    config: Arc<Config>,
    bus: Bus,
    pool: Arc<Pool>,
    webhooks: Arc<WebhookSender>,
    done: AtomicU64,
}

/// What the worker's own port reports.
#[derive(Default)]
struct Probe {
    pool: OnceLock<Arc<Pool>>,
    client: OnceLock<async_nats::Client>,
    error: OnceLock<String>,
}

async fn health(State(p): State<Arc<Probe>>) -> Response {
    let connected = p.client.get().is_some_and(|c| c.connection_state() == async_nats::connection::State::Connected);
    let (ok, body) = match (p.error.get(), p.pool.get()) {
        (Some(e), _) => (false, json!({"status": "error", "error": e})),
        (None, None) => (false, json!({"status": "loading"})),
        (None, Some(_)) if !connected => (false, json!({"status": "unavailable", "error": "NATS is unreachable"})),
        (None, Some(pool)) => (true, json!({"status": "healthy", "running": pool.running(), "capacity": pool.capacity()})),
    };
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

async fn metrics(State(p): State<Arc<Probe>>) -> Response {
    crate::api::render_metrics(p.pool.get().is_some(), p.pool.get().map(|p| p.numbers()))
}

/// `whisper-serve worker`: `/health` and `/metrics` on `listener`, jobs
/// from NATS until `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    crate::vad::init(&config.vad)?;
    let config = Arc::new(config);
    let probe = Arc::new(Probe::default());
    let app = Router::new()
        .route(crate::state::HEALTH_PATH, get(health))
        .route(crate::state::LIVENESS_PATH, get(|| async { Json(json!({"status": "alive"})) }))
        .route(crate::state::METRICS_PATH, get(metrics))
        .with_state(probe.clone());
    let stop = CancellationToken::new();
    let http = {
        let stop = stop.clone();
        let config = config.clone();
        tokio::spawn(async move { crate::server::serve_api(listener, app, &config, None, async move { stop.cancelled().await }).await })
    };
    let result = work(config, probe.clone(), shutdown).await;
    if let Err(e) = &result {
        let _ = probe.error.set(e.to_string());
    }
    stop.cancel();
    let _ = http.await;
    result
}

async fn work(config: Arc<Config>, probe: Arc<Probe>, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> Result<(), ServerError> {
    let id = super::instance_id("worker");
    let client = connect(&config.cluster, &id, true).await.map_err(cluster)?;
    let _ = probe.client.set(client.clone());
    let engine = Arc::new(crate::server::load_engine(&config).await?);
    let device = engine.device();
    let batching = BatchSettings::from_config(&config, engine.is_cuda());
    let replicas = config.deployment.num_replicas as usize;
    let capacity = replicas * batching.max_batch_size.max(1);
    let limits = PoolLimits { max_queue: config.limits.max_queue.max(capacity), ..PoolLimits::from_config(&config) };
    let pool = Arc::new(Pool::start(engine, replicas, limits, batching));
    let _ = probe.pool.set(pool.clone());
    let bus = loop {
        if client.connection_state() == async_nats::connection::State::Connected {
            match Bus::setup(client.clone(), &config).await {
                Ok(b) => break b,
                Err(e) => tracing::warn!(error = %e, "job queue set-up failed; retrying"),
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let consumer = bus.ensure_consumer(&config.model.size).await.map_err(cluster)?;
    let webhooks = WebhookSender::new(
        config.jobs.webhook_secret.clone(),
        config.jobs.webhook_max_attempts,
        Duration::from_secs(config.jobs.webhook_timeout_s),
        &config.jobs.webhook_allow_hosts,
    )
    .map_err(|e| ServerError::Cluster(e.to_string()))?;
    let worker = Arc::new(Worker { id: id.clone(), config: config.clone(), bus, pool, webhooks: Arc::new(webhooks), done: AtomicU64::new(0) });
    tracing::info!(worker = %id, model = %config.model.size, capacity, device, "worker ready");

    let sessions = crate::realtime::Registry::new(config.realtime.max_sessions);
    let live = config.realtime.enabled.then(|| {
        tokio::spawn(super::realtime::serve(worker.bus.client.clone(), config.clone(), worker.pool.clone(), sessions.clone(), id.clone()))
    });
    let beating = tokio::spawn(worker.clone().heartbeat(device.to_string(), capacity));
    let advisories = tokio::spawn(worker.clone().watch_max_deliveries());
    let slots = Arc::new(Semaphore::new(capacity.max(1)));
    let hard_stop = CancellationToken::new();
    let tasks = tokio_util::task::TaskTracker::new();
    tokio::pin!(shutdown);
    let mut stopping = false;
    while !stopping {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = &mut shutdown => break,
        };
        let more = slots.available_permits();
        let pulled = tokio::select! {
            b = consumer.fetch().max_messages(1 + more).expires(PULL_EXPIRES).messages() => b,
            _ = &mut shutdown => break,
        };
        let mut batch = match pulled {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "cannot pull jobs; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let mut permit = Some(permit);
        loop {
            let next = tokio::select! {
                m = batch.next() => m,
                _ = &mut shutdown => {
                    // Pulled but not started: straight back to the queue.
                    stopping = true;
                    while let Some(Ok(m)) = batch.next().await { let _ = m.ack_with(AckKind::Nak(None)).await; }
                    break;
                }
            };
            let msg = match next {
                None => break,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "pull ended");
                    break;
                }
                Some(Ok(m)) => m,
            };
            let p = match permit.take() {
                Some(p) => p,
                None => match slots.clone().try_acquire_owned() {
                    Ok(p) => p,
                    Err(_) => {
                        let _ = msg.ack_with(AckKind::Nak(None)).await;
                        continue;
                    }
                },
            };
            let (w, stop) = (worker.clone(), hard_stop.clone());
            tasks.spawn(async move {
                w.handle(msg, stop).await;
                drop(p);
            });
        }
    }
    // SIGTERM: no more pulls; finish what we hold, then nak the rest.
    tracing::info!(in_flight = tasks.len(), sessions = sessions.open(), "stopping: finishing the jobs and realtime turns in hand");
    tasks.close();
    let grace = Duration::from_secs(config.server.shutdown_timeout_s);
    // Realtime sessions finish their open turns and close (their clients
    // get the last transcripts and a 1001) while the jobs finish.
    sessions.shutdown(grace).await;
    if let Some(l) = live {
        l.abort();
    }
    if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
        tracing::warn!(left = tasks.len(), "shutdown timeout: handing the unfinished jobs back");
        hard_stop.cancel();
        tasks.wait().await;
    }
    beating.abort();
    advisories.abort();
    let _ = worker.bus.workers.purge(&worker.id).await;
    let _ = worker.bus.client.flush().await;
    let pool = worker.pool.clone();
    let _ = tokio::task::spawn_blocking(move || pool.shutdown()).await;
    tracing::info!("stopped");
    Ok(())
}

fn cluster(e: ClusterError) -> ServerError {
    ServerError::Cluster(e.to_string())
}

/// What became of a record write.
enum Written {
    Ok(u64),
    /// Someone else's final record is there (cancelled, or answered).
    Superseded,
    /// NATS did not take it.
    Failed,
}

/// The result of trying to run a job.
enum Ran {
    Done(Outcome),
    Failed(DispatchError),
    /// Cancelled by its client, or handed back at shutdown: nothing to write.
    Dropped,
}

impl Worker {
    async fn heartbeat(self: Arc<Self>, device: String, capacity: usize) {
        let started_at_ms = jobs::now_ms();
        let every = Duration::from_secs(self.config.cluster.heartbeat_s);
        loop {
            let info = WorkerInfo {
                id: self.id.clone(),
                model: self.config.model.size.clone(),
                host: super::hostname(),
                pid: std::process::id(),
                device: device.clone(),
                capacity,
                busy: self.pool.running() + self.pool.queued(),
                jobs_done: self.done.load(Ordering::Relaxed),
                started_at_ms,
                heartbeat_at_ms: jobs::now_ms(),
                version: env!("CARGO_PKG_VERSION").into(),
                compute_type: self.pool.engine().compute_type().to_string(),
                batch_steps: crate::telemetry::stats::global().batch_totals(),
            };
            if let Ok(v) = serde_json::to_vec(&info) {
                if let Err(e) = self.bus.workers.put(&self.id, v.into()).await {
                    tracing::debug!(error = %e, "heartbeat not written");
                }
            }
            tokio::time::sleep(every).await;
        }
    }

    async fn handle(&self, msg: jetstream::Message, hard_stop: CancellationToken) {
        let job: JobMessage = match serde_json::from_slice(&msg.payload) {
            Ok(j) => j,
            Err(e) => {
                tracing::error!(error = %e, subject = %msg.subject, "not a job message; dropping it");
                let _ = msg.ack_with(AckKind::Term).await;
                return;
            }
        };
        let delivered = msg.info().map(|i| i.delivered).unwrap_or(1);
        let span = tracing::info_span!("job", job_id = %job.id, request_id = %job.request.request_id, attempt = delivered);
        // The job's span continues the gateway's trace (its `traceparent`).
        crate::telemetry::traces::continue_from_nats(&span, msg.headers.as_ref());
        // Instrumented, not entered: the span must not stay entered on this
        // thread while the job's future waits.
        self.process(msg, job, delivered, hard_stop).instrument(span).await
    }

    async fn process(&self, msg: jetstream::Message, job: JobMessage, delivered: i64, hard_stop: CancellationToken) {
        let key = job.key();

        // Answered already (a crash between writing and acking), or cancelled.
        let (mut record, mut revision) = match self.bus.jobs.entry(&key).await {
            Ok(Some(e)) if e.operation == jetstream::kv::Operation::Put => match serde_json::from_slice::<JobRecord>(&e.value) {
                Ok(r) => (r, Some(e.revision)),
                Err(_) => (self.fresh_record(&job), Some(e.revision)),
            },
            Ok(_) => (self.fresh_record(&job), None),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the job's record; retrying later");
                let _ = msg.ack_with(AckKind::Nak(Some(Duration::from_secs(1)))).await;
                return;
            }
        };
        if record.status.is_final() {
            tracing::info!(status = record.status.as_str(), "job already final; acking");
            let _ = msg.double_ack().await;
            return;
        }
        record.status = JobStatus::Running;
        record.attempts = delivered.max(1) as u32;
        record.worker = Some(self.id.clone());
        if !job.sync {
            match self.write(&key, &record, revision).await {
                Written::Ok(r) => revision = Some(r),
                Written::Superseded => {
                    // Changed under us: most likely cancelled.
                    let _ = msg.double_ack().await;
                    return;
                }
                Written::Failed => {
                    let _ = msg.ack_with(AckKind::Nak(Some(Duration::from_secs(1)))).await;
                    return;
                }
            }
        }

        let ran = self.run_with_progress(&msg, &job, &key, &hard_stop).await;
        let model = crate::config::ClusterConfig::model_token(&self.config.model.size);
        match ran {
            Ran::Dropped => return,
            Ran::Done(o) => {
                record.status = JobStatus::Completed;
                record.audio_seconds = Some(o.transcript.duration);
                record.queue_wait_s = Some(o.queue_wait_s);
                record.gpu_memory_gb = Some(o.gpu_memory_gb);
                record.inference_s = Some(o.inference_s);
                record.transcript = Some(o.transcript);
                self.done.fetch_add(1, Ordering::Relaxed);
            }
            Ran::Failed(e) if e.is_input_error() => {
                tracing::warn!(error = %e, "job refused");
                record.status = JobStatus::Failed;
                record.error = Some(e.to_job_error());
            }
            Ran::Failed(e) if delivered < self.config.cluster.max_deliver => {
                let backoff = Duration::from_secs((delivered.max(1) as u64).min(10));
                tracing::warn!(error = %e, retry_in_s = backoff.as_secs(), "job failed; JetStream will redeliver it");
                let _ = msg.ack_with(AckKind::Nak(Some(backoff))).await;
                return;
            }
            Ran::Failed(e) => {
                tracing::error!(error = %e, deliveries = delivered, "job failed on its last delivery; dead-lettering it");
                record.status = JobStatus::Failed;
                record.error = Some(e.to_job_error());
                self.dead_letter(&model, &msg.payload, &e.to_string(), &job.id).await;
            }
        }
        match self.write(&key, &record, revision).await {
            Written::Ok(_) => {}
            Written::Superseded => {
                // Cancelled (or answered by another worker) meanwhile: that
                // record stands, and this run tells no one it completed.
                tracing::info!("the job was cancelled or answered elsewhere meanwhile; no callback");
                let _ = msg.double_ack().await;
                let _ = self.bus.audio.delete(&job.id).await;
                return;
            }
            Written::Failed => {
                // Not recorded: leave it to JetStream to deliver again.
                tracing::warn!("cannot record the job's result; it will be redelivered");
                let _ = msg.ack_with(AckKind::Nak(Some(Duration::from_secs(1)))).await;
                return;
            }
        }
        if !job.sync {
            super::backlog_done(&self.bus.jobs, &record.request.owner, job.audio_bytes).await;
        }
        if let Err(e) = msg.double_ack().await {
            tracing::warn!(error = %e, "ack not confirmed; a redelivery will find the record and ack");
        }
        if record.status == JobStatus::Completed || record.error.as_ref().is_some_and(|e| e.code != "engine_error") {
            let _ = self.bus.audio.delete(&job.id).await;
        }
        if !job.sync {
            if let Some(url) = &record.request.callback_url {
                let body = jobs::public_json(&record).to_string().into_bytes();
                self.webhooks.spawn_deliver(url.clone(), record.id.clone(), body);
            }
        }
    }

    fn fresh_record(&self, job: &JobMessage) -> JobRecord {
        let mut r = JobRecord::new(job.id.clone(), job.request.clone());
        r.created_at_ms = job.created_at_ms;
        r
    }

    /// Writes `rec` under `key` by compare-and-set: at `revision` (None:
    /// absent). When someone else wrote meanwhile, their record is read
    /// again: a final one (a cancel, another worker's answer) wins and this
    /// write is [`Written::Superseded`]; a non-final one (another
    /// delivery's "running") is replaced, again by compare-and-set, never
    /// by a plain put that could land over a cancel. A transcript too big
    /// for one NATS message goes to the object store (see
    /// [`super::spill_transcript`]).
    async fn write(&self, key: &str, rec: &JobRecord, revision: Option<u64>) -> Written {
        let mut rec = rec.clone();
        rec.updated_at_ms = jobs::now_ms();
        let limit = self.bus.client.server_info().max_payload.saturating_sub(super::RECORD_MARGIN);
        if let Err(e) = super::spill_transcript(&self.bus, &mut rec, limit).await {
            tracing::error!(error = %e, "cannot store the transcript");
            return Written::Failed;
        }
        let Ok(value) = serde_json::to_vec(&rec) else { return Written::Failed };
        let value: bytes::Bytes = value.into();
        let mut revision = revision;
        for _ in 0..WRITE_TRIES {
            let tried = match revision {
                Some(r) => self.bus.jobs.update(key, value.clone(), r).await.map_err(|e| e.to_string()),
                None => self.bus.jobs.create(key, value.clone()).await.map_err(|e| e.to_string()),
            };
            let e = match tried {
                Ok(r) => return Written::Ok(r),
                Err(e) => e,
            };
            match self.bus.jobs.entry(key).await {
                Ok(Some(entry)) if entry.operation == jetstream::kv::Operation::Put => {
                    if serde_json::from_slice::<JobRecord>(&entry.value).is_ok_and(|r| r.status.is_final()) {
                        return Written::Superseded;
                    }
                    tracing::debug!(error = %e, "record changed meanwhile; writing over it at its new revision");
                    revision = Some(entry.revision);
                }
                // Deleted or purged (expired, or the gateway gave up on a
                // synchronous request): nobody waits for it.
                Ok(_) => return Written::Superseded,
                Err(_) => return Written::Failed,
            }
        }
        Written::Failed
    }

    /// Fetches, decodes and transcribes, with progress acks every third of
    /// `ack_wait_s` and (async jobs) a look for cancellation.
    async fn run_with_progress(&self, msg: &jetstream::Message, job: &JobMessage, key: &str, hard_stop: &CancellationToken) -> Ran {
        let every = Duration::from_secs(self.config.cluster.ack_wait_s).div_f64(3.0).max(Duration::from_millis(500));
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let progress = job.sync && msg.headers.as_ref().is_some_and(|h| h.get(PROGRESS_HEADER).is_some());
        let work = self.run(job, progress);
        tokio::pin!(work);
        loop {
            tokio::select! {
                r = &mut work => return match r { Ok(o) => Ran::Done(o), Err(e) => Ran::Failed(e) },
                _ = tick.tick() => {
                    let _ = msg.ack_with(AckKind::Progress).await;
                    if !job.sync && self.is_cancelled(key).await {
                        tracing::info!("job cancelled while running");
                        let _ = msg.double_ack().await;
                        let _ = self.bus.audio.delete(&job.id).await;
                        return Ran::Dropped;
                    }
                }
                _ = hard_stop.cancelled() => {
                    let _ = msg.ack_with(AckKind::Nak(None)).await;
                    return Ran::Dropped;
                }
            }
        }
    }

    async fn is_cancelled(&self, key: &str) -> bool {
        matches!(self.bus.jobs.get(key).await, Ok(Some(v))
            if serde_json::from_slice::<JobRecord>(&v).is_ok_and(|r| r.status == JobStatus::Cancelled))
    }

    async fn run(&self, job: &JobMessage, progress: bool) -> Result<Outcome, DispatchError> {
        let mut object = self
            .bus
            .audio
            .get(&job.id)
            .await
            .map_err(|e| DispatchError::Engine(format!("cannot fetch the job's audio: {e}")))?;
        let mut bytes = Vec::with_capacity(job.audio_bytes.min(1 << 30) as usize);
        object
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| DispatchError::Engine(format!("cannot read the job's audio: {e}")))?;
        let audio = self.pool.decode(bytes.into(), self.config.limits.max_audio_seconds).await?;
        let progress = progress.then(|| self.publish_progress(&job.id));
        let rx = self.pool.submit_with_progress(audio, job.request.decode.clone(), progress)?;
        outcome(rx.await)
    }

    /// A sender whose messages go out on job `id`'s progress subject, in
    /// order, until the pool drops it.
    fn publish_progress(&self, id: &str) -> crate::dispatch::ProgressSender {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let client = self.bus.client.clone();
        let subject = progress_subject(&self.config.cluster.subject_prefix, id);
        tokio::spawn(async move {
            let mut offset = 0;
            while let Some(p) = rx.recv().await {
                let msg = match p {
                    crate::dispatch::Progress::Audio(seconds) => ProgressMessage::Audio { seconds },
                    crate::dispatch::Progress::Text(text) => {
                        let at = offset;
                        offset += text.len();
                        ProgressMessage::Text { offset: at, text }
                    }
                };
                let Ok(payload) = serde_json::to_vec(&msg) else { continue };
                if let Err(e) = client.publish(subject.clone(), payload.into()).await {
                    tracing::debug!(error = %e, "progress not published");
                }
            }
        });
        tx
    }

    async fn dead_letter(&self, model_token: &str, payload: &[u8], reason: &str, id: &str) {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(DEAD_REASON_HEADER, reason.replace(['\r', '\n'], " ").as_str());
        headers.insert("Nats-Msg-Id", format!("dead-{id}").as_str());
        let subject = format!("{}.dead.{model_token}", self.config.cluster.subject_prefix);
        match self.bus.js.publish_with_headers(subject, headers, payload.to_vec().into()).await {
            Ok(ack) => {
                if let Err(e) = ack.await {
                    tracing::error!(error = %e, "dead letter not stored");
                }
            }
            Err(e) => tracing::error!(error = %e, "dead letter not stored"),
        }
    }

    /// A worker killed on a job's last delivery never reports it; JetStream
    /// then publishes a max-deliveries advisory, and one worker (a queue
    /// group) marks the job failed, dead-letters it and removes it.
    async fn watch_max_deliveries(self: Arc<Self>) {
        let c = &self.config.cluster;
        let subject = format!(
            "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{}.{}",
            c.stream,
            c.consumer_name(&self.config.model.size)
        );
        let Ok(mut sub) = self.bus.client.queue_subscribe(subject, "whisper-dead-letters".into()).await else { return };
        while let Some(m) = sub.next().await {
            let Ok(adv) = serde_json::from_slice::<serde_json::Value>(&m.payload) else { continue };
            let Some(seq) = adv.get("stream_seq").and_then(|v| v.as_u64()) else { continue };
            self.expire(seq).await;
        }
    }

    async fn expire(&self, seq: u64) {
        let Ok(stream) = self.bus.js.get_stream(&self.config.cluster.stream).await else { return };
        let Ok(raw) = stream.get_raw_message(seq).await else { return };
        let Ok(job) = serde_json::from_slice::<JobMessage>(&raw.payload) else { return };
        let key = job.key();
        let (mut record, revision) = match self.bus.jobs.entry(&key).await {
            Ok(Some(e)) if e.operation == jetstream::kv::Operation::Put => {
                (serde_json::from_slice::<JobRecord>(&e.value).unwrap_or_else(|_| self.fresh_record(&job)), Some(e.revision))
            }
            _ => (self.fresh_record(&job), None),
        };
        if !record.status.is_final() {
            let reason = format!("gave up after {} deliveries (the worker stopped each time)", self.config.cluster.max_deliver);
            tracing::error!(job_id = %job.id, reason = %reason, "dead-lettering a job");
            record.status = JobStatus::Failed;
            record.error = Some(jobs::JobError { code: "engine_error".into(), message: reason.clone() });
            let model = crate::config::ClusterConfig::model_token(&self.config.model.size);
            self.dead_letter(&model, &raw.payload, &reason, &job.id).await;
            self.write(&key, &record, revision).await;
        }
        let _ = stream.delete_message(seq).await;
    }
}
