//! The gateway: the whole HTTP API, no model. Its dispatcher stores each
//! upload in the JetStream object store, publishes a job message, and
//! waits for the job's record in the key-value bucket (watched through
//! one core-NATS subscription on the bucket's subjects, with a periodic
//! read as a fallback for updates missed during a reconnect). When NATS is
//! unreachable it answers 503 at once and recovers by itself.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_nats::jetstream::object_store::ObjectMetadata;
use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::status::ClusterStatus;
use super::{connect, record_key, Bus, JobMessage};
use crate::config::Config;
use crate::dispatch::{pool::Pool, ByteStream, DispatchError, Dispatcher, Health, JobHook, JobPage, Load, Outcome, Replica, Work};
use crate::jobs::{self, Caller, JobRecord, JobRequest, JobStatus};
use crate::server::ServerError;
use crate::state::AppState;

/// How long one NATS operation of a request may take before the gateway
/// calls NATS unavailable.
const OP_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a waiting request reads its record in case a notification was lost.
const POLL_EVERY: Duration = Duration::from_secs(2);
/// How long `/health` and `/v1/stats` (and its sampler) reuse what they
/// learnt of the workers and the stream.
const STATUS_CACHE: Duration = Duration::from_secs(1);
/// The longest the gateway waits for the cluster's status.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

type Waiters = Arc<Mutex<HashMap<String, oneshot::Sender<JobRecord>>>>;

pub struct NatsDispatcher {
    config: Arc<Config>,
    client: async_nats::Client,
    bus: Arc<OnceLock<Bus>>,
    waiters: Waiters,
    status: tokio::sync::Mutex<Option<(Instant, ClusterStatus)>>,
    on_final: Arc<OnceLock<JobHook>>,
}

fn unavailable(reason: impl Into<String>) -> DispatchError {
    DispatchError::Unavailable { reason: reason.into(), retry_after_s: 2 }
}

/// Removes a waiter when its request ends, however it ends.
struct WaiterGuard<'a>(&'a Waiters, String);

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut w) = self.0.lock() {
            w.remove(&self.1);
        }
    }
}

impl NatsDispatcher {
    pub async fn start(config: Arc<Config>) -> Result<Arc<Self>, ServerError> {
        let name = super::instance_id("gateway");
        let client = connect(&config.cluster, &name, true).await.map_err(|e| ServerError::Cluster(e.to_string()))?;
        let me = Arc::new(Self {
            config: config.clone(),
            client: client.clone(),
            bus: Arc::new(OnceLock::new()),
            waiters: Arc::new(Mutex::new(HashMap::new())),
            status: tokio::sync::Mutex::new(None),
            on_final: Arc::new(OnceLock::new()),
        });
        tokio::spawn(setup_when_connected(client.clone(), config.clone(), me.bus.clone()));
        tokio::spawn(listen_for_records(client, config.cluster.jobs_bucket.clone(), me.waiters.clone(), me.on_final.clone()));
        Ok(me)
    }

    fn bus(&self) -> Result<&Bus, DispatchError> {
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return Err(unavailable("the job queue (NATS) is unreachable"));
        }
        self.bus.get().ok_or_else(|| unavailable("the job queue (NATS) is being set up"))
    }

    async fn put_audio(&self, bus: &Bus, id: &str, reader: &mut (impl tokio::io::AsyncRead + Unpin)) -> Result<u64, String> {
        let meta = ObjectMetadata { name: id.to_string(), chunk_size: Some(super::chunk_size(&bus.client)), ..Default::default() };
        bus.audio.put(meta, reader).await.map(|info| info.size as u64).map_err(|e| e.to_string())
    }

    /// Queues a job's message; `progress` asks its worker to publish its
    /// progress (a streaming synchronous request).
    async fn publish(&self, bus: &Bus, msg: &JobMessage, model: &str, progress: bool) -> Result<(), DispatchError> {
        let payload = serde_json::to_vec(msg).map_err(|e| DispatchError::Engine(e.to_string()))?;
        let mut headers = async_nats::HeaderMap::new();
        // JetStream drops a second publish of the same id (a retry).
        headers.insert("Nats-Msg-Id", msg.id.as_str());
        headers.insert("X-Request-Id", msg.request.request_id.as_str());
        if progress {
            headers.insert(super::worker::PROGRESS_HEADER, "1");
        }
        // The worker continues this request's trace.
        crate::telemetry::traces::inject_nats(&mut headers);
        let subject = self.config.cluster.job_subject(model);
        let ack = tokio::time::timeout(OP_TIMEOUT, async {
            bus.js.publish_with_headers(subject, headers, payload.into()).await.map_err(|e| e.to_string())?.await.map_err(|e| e.to_string())
        })
        .await;
        match ack {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(unavailable(format!("cannot queue the job: {e}"))),
            Err(_) => Err(unavailable("cannot queue the job: NATS did not answer in time")),
        }
    }

    /// Writes a new job's record and its owner's index entry, then queues
    /// its message; on failure, takes back what it wrote.
    async fn record_and_publish(&self, bus: &Bus, job: &JobRecord, model: &str, size: u64) -> Result<(), DispatchError> {
        let value = serde_json::to_vec(job).map_err(|e| DispatchError::Engine(e.to_string()))?;
        tokio::time::timeout(OP_TIMEOUT, bus.jobs.put(&job.id, value.into()))
            .await
            .map_err(|_| unavailable("cannot record the job: NATS did not answer in time"))?
            .map_err(|e| unavailable(format!("cannot record the job: {e}")))?;
        // The owner's index entry: listing reads only these keys of the
        // caller's, never the whole bucket. Expires with the bucket's TTL.
        let index = super::index_key(&job.request.owner, job.created_at_ms, &job.id);
        if let Err(e) = tokio::time::timeout(OP_TIMEOUT, bus.jobs.put(&index, Bytes::new())).await.map_err(|_| "timed out".to_string()).and_then(|r| r.map_err(|e| e.to_string())) {
            let _ = bus.jobs.purge(&job.id).await;
            return Err(unavailable(format!("cannot record the job: {e}")));
        }
        let msg = JobMessage { id: job.id.clone(), sync: false, request: job.request.clone(), audio_bytes: size, created_at_ms: job.created_at_ms };
        if let Err(e) = self.publish(bus, &msg, model, false).await {
            let _ = bus.jobs.purge(&job.id).await;
            let _ = bus.jobs.purge(&index).await;
            return Err(e);
        }
        Ok(())
    }

    /// Reads a record, with its transcript; None when absent.
    async fn read(&self, bus: &Bus, key: &str) -> Result<Option<JobRecord>, DispatchError> {
        match tokio::time::timeout(OP_TIMEOUT, bus.jobs.get(key)).await {
            Ok(Ok(Some(v))) => {
                let mut rec: JobRecord = serde_json::from_slice(&v).map_err(|e| DispatchError::Engine(format!("bad job record: {e}")))?;
                super::fill_transcript(bus, &mut rec).await.map_err(|e| unavailable(format!("cannot read the transcript: {e}")))?;
                Ok(Some(rec))
            }
            Ok(Ok(None)) => Ok(None),
            Ok(Err(e)) => Err(unavailable(format!("cannot read the job: {e}"))),
            Err(_) => Err(unavailable("cannot read the job: NATS did not answer in time")),
        }
    }

    /// Waits for the final record of a synchronous request until `deadline`.
    async fn wait_final(&self, bus: &Bus, key: &str, mut rx: oneshot::Receiver<JobRecord>, deadline: Instant) -> Option<JobRecord> {
        loop {
            let poll_at = (Instant::now() + POLL_EVERY).min(deadline);
            tokio::select! {
                got = &mut rx => return got.ok(),
                _ = tokio::time::sleep_until(poll_at.into()) => {
                    if let Ok(Some(r)) = self.read(bus, key).await {
                        if r.status.is_final() {
                            return Some(r);
                        }
                    }
                    if Instant::now() >= deadline {
                        return None;
                    }
                }
            }
        }
    }

    /// Marks a synchronous request abandoned, so no worker spends time on
    /// it; returns the final record instead if a worker got there first.
    async fn abandon(&self, bus: &Bus, key: &str, msg: &JobMessage) -> Option<JobRecord> {
        let mut rec = JobRecord::new(msg.id.clone(), msg.request.clone());
        rec.status = JobStatus::Cancelled;
        let value = serde_json::to_vec(&rec).ok()?;
        match bus.jobs.create(key, value.into()).await {
            Ok(_) => None,
            Err(_) => self.read(bus, key).await.ok().flatten().filter(|r| r.status.is_final() && r.status != JobStatus::Cancelled),
        }
    }
}

/// Hands a job's progress messages to its caller, in order, dropping a
/// repeated or out-of-order piece of text (the final record carries the
/// whole text, so the caller makes up for what was lost). Never ends.
async fn forward_progress(mut sub: async_nats::Subscriber, to: crate::dispatch::ProgressSender) -> std::convert::Infallible {
    use super::worker::ProgressMessage;
    use crate::dispatch::Progress;
    let mut forwarded = 0usize;
    while let Some(m) = sub.next().await {
        let Ok(msg) = serde_json::from_slice::<ProgressMessage>(&m.payload) else { continue };
        let p = match msg {
            ProgressMessage::Audio { seconds } => Progress::Audio(seconds),
            ProgressMessage::Text { offset, text } => {
                let end = offset + text.len();
                if offset > forwarded || end <= forwarded || !text.is_char_boundary(forwarded - offset) {
                    continue;
                }
                let piece = text[forwarded - offset..].to_string();
                forwarded = end;
                Progress::Text(piece)
            }
        };
        let _ = to.send(p);
    }
    std::future::pending().await
}

/// The record of a finished job as the dispatcher's answer.
fn into_outcome(rec: JobRecord) -> Result<Outcome, DispatchError> {
    match (rec.status, rec.transcript) {
        (JobStatus::Completed, Some(transcript)) => Ok(Outcome {
            transcript,
            queue_wait_s: rec.queue_wait_s.unwrap_or(0.0),
            inference_s: rec.inference_s.unwrap_or(0.0),
            gpu_memory_gb: rec.gpu_memory_gb.unwrap_or(0.0),
        }),
        (_, _) => {
            let err = rec.error.unwrap_or(jobs::JobError { code: "engine_error".into(), message: "the job failed".into() });
            if err.is_input_error() {
                Err(DispatchError::Rejected(err))
            } else {
                Err(DispatchError::Engine(err.message))
            }
        }
    }
}

async fn setup_when_connected(client: async_nats::Client, config: Arc<Config>, slot: Arc<OnceLock<Bus>>) {
    let mut tries = 0u32;
    loop {
        tries += 1;
        if client.connection_state() == async_nats::connection::State::Connected {
            match Bus::setup(client.clone(), &config).await {
                Ok(bus) => {
                    let _ = slot.set(bus);
                    tracing::info!("job queue ready");
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "job queue set-up failed; retrying"),
            }
        } else if tries == 4 {
            tracing::warn!(url = %config.cluster.nats_url, "waiting for NATS");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Hands every final record written to the jobs bucket to the request
/// waiting for it. Core NATS (no consumer): cheap, and it resubscribes by
/// itself after a reconnect.
async fn listen_for_records(client: async_nats::Client, bucket: String, waiters: Waiters, on_final: Arc<OnceLock<JobHook>>) {
    let prefix = format!("$KV.{bucket}.");
    loop {
        match client.subscribe(format!("{prefix}>")).await {
            Ok(mut sub) => {
                while let Some(msg) = sub.next().await {
                    let Some(key) = msg.subject.as_str().strip_prefix(&prefix) else { continue };
                    if key.starts_with(super::INDEX_PREFIX) || key.starts_with(super::BACKLOG_PREFIX) {
                        continue;
                    }
                    let Ok(rec) = serde_json::from_slice::<JobRecord>(&msg.payload) else { continue };
                    if !rec.status.is_final() {
                        continue;
                    }
                    // Async jobs finish on some worker: every gateway counts
                    // them as they are written (sync ones it counts as requests).
                    if !key.starts_with(super::SYNC_PREFIX) {
                        let took_ms = (rec.updated_at_ms - rec.created_at_ms) as f64;
                        crate::telemetry::stats::global().job(&rec.request.request_id, &rec.request.owner, rec.outcome_status(), took_ms, rec.audio_seconds);
                        if let Some(hook) = on_final.get() {
                            hook(&rec);
                        }
                    }
                    let waiter = waiters.lock().ok().and_then(|mut w| w.remove(key));
                    if let Some(tx) = waiter {
                        let _ = tx.send(rec);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot watch job results; retrying"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

impl NatsDispatcher {
    /// Workers, pending jobs and dead letters: asked of NATS at most once
    /// per STATUS_CACHE, whoever asks (probes, the stats sampler, /v1/stats).
    /// The `model.size` of the workers that serve `name` (their jobs'
    /// subject); a model no live worker serves is a 404.
    async fn route_model(&self, bus: &Bus, name: &str) -> Result<String, DispatchError> {
        let default = &self.config.model.size;
        let want = crate::models::id_of(name);
        if name == "whisper-1" || want == crate::models::id_of(default) {
            return Ok(default.clone());
        }
        let status = self.status(bus).await;
        if let Some(w) = status.workers.iter().find(|w| crate::models::id_of(&w.model) == want) {
            return Ok(w.model.clone());
        }
        Err(DispatchError::UnknownModel { name: name.chars().take(100).collect(), present: served_ids(&status) })
    }

    async fn status(&self, bus: &Bus) -> ClusterStatus {
        let mut cache = self.status.lock().await;
        if let Some((at, s)) = cache.as_ref() {
            if at.elapsed() < STATUS_CACHE {
                return s.clone();
            }
        }
        // Bounded: a NATS call that never answers (a KV key listing whose
        // last entry expired under it, say) must not hang `/health` and
        // every caller queued on this lock behind it.
        let s = match tokio::time::timeout(STATUS_TIMEOUT, ClusterStatus::gather(bus, &self.config.model.size)).await {
            Ok(s) => s,
            Err(_) => {
                tracing::warn!(timeout_s = STATUS_TIMEOUT.as_secs(), "cluster status took too long; answering without it");
                ClusterStatus::default()
            }
        };
        *cache = Some((Instant::now(), s.clone()));
        s
    }
}

/// Checks an id from a URL before it becomes a key.
fn check_id(id: &str) -> Result<(), DispatchError> {
    if jobs::is_job_id(id) {
        Ok(())
    } else {
        Err(DispatchError::NotFound(id.to_string()))
    }
}

#[async_trait]
impl Dispatcher for NatsDispatcher {
    fn mode(&self) -> &'static str {
        "gateway"
    }

    async fn load(&self) -> Load {
        let Ok(bus) = self.bus() else { return Load::default() };
        let model = &self.config.model.size;
        let status = self.status(bus).await;
        let mut load = Load { queue_depth: status.pending, ..Load::default() };
        let mut steps: Vec<u64> = Vec::new();
        for w in status.serving(model) {
            load.capacity += w.capacity as u64;
            load.in_progress += w.busy.min(w.capacity) as u64;
            load.device.get_or_insert_with(|| w.device.clone());
            if !w.compute_type.is_empty() {
                load.compute_type.get_or_insert_with(|| w.compute_type.clone());
            }
            if steps.len() < w.batch_steps.len() {
                steps.resize(w.batch_steps.len(), 0);
            }
            for (size, n) in w.batch_steps.iter().enumerate() {
                steps[size] += n;
            }
            load.replicas.push(Replica {
                id: w.id.clone(),
                state: if w.busy > 0 { "busy" } else { "idle" }.into(),
                busy: w.busy as u64,
                capacity: w.capacity as u64,
                device: w.device.clone(),
                jobs_done: Some(w.jobs_done),
            });
        }
        load.remote_batch_steps = Some(steps);
        load
    }

    async fn transcribe(&self, work: Work) -> Result<Outcome, DispatchError> {
        let deadline = Instant::now() + work.timeout;
        let bus = self.bus()?;
        let model = self.route_model(bus, work.model.as_deref().unwrap_or("whisper-1")).await?;
        let id = jobs::new_id();
        let key = record_key(&id, true);
        let (tx, rx) = oneshot::channel();
        if let Ok(mut w) = self.waiters.lock() {
            w.insert(key.clone(), tx);
        }
        let _guard = WaiterGuard(&self.waiters, key.clone());
        let size = work.audio.len() as u64;
        let mut reader = std::io::Cursor::new(work.audio);
        match tokio::time::timeout(OP_TIMEOUT + Duration::from_millis(size / 10_000), self.put_audio(bus, &id, &mut reader)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(unavailable(format!("cannot store the upload: {e}"))),
            Err(_) => return Err(unavailable("cannot store the upload: NATS did not answer in time")),
        }
        let request = JobRequest {
            decode: work.options,
            response_format: Default::default(),
            granularities: Default::default(),
            model: model.clone(),
            callback_url: None,
            filename: None,
            request_id: work.request_id,
            // Sync requests are answered to their caller and never listed.
            owner: jobs::ANONYMOUS.to_string(),
        };
        let msg = JobMessage { id: id.clone(), sync: true, request, audio_bytes: size, created_at_ms: jobs::now_ms() };
        // A streaming caller: listen for the worker's progress before the
        // job can start (without it, the answer still comes, all at once).
        let progress_sub = match &work.progress {
            Some(_) => {
                let subject = super::worker::progress_subject(&self.config.cluster.subject_prefix, &id);
                match tokio::time::timeout(OP_TIMEOUT, bus.client.subscribe(subject)).await {
                    Ok(Ok(sub)) => Some(sub),
                    _ => {
                        tracing::warn!("cannot listen for the job's progress; the text will come at the end");
                        None
                    }
                }
            }
            None => None,
        };
        if let Err(e) = self.publish(bus, &msg, &model, progress_sub.is_some()).await {
            let _ = bus.audio.delete(&id).await;
            return Err(e);
        }
        let waited = {
            let wait = self.wait_final(bus, &key, rx, deadline);
            match (progress_sub, work.progress.clone()) {
                (Some(sub), Some(to)) => {
                    tokio::select! {
                        r = wait => r,
                        never = forward_progress(sub, to) => match never {},
                    }
                }
                _ => wait.await,
            }
        };
        let mut rec = match waited {
            Some(r) => Some(r),
            None => self.abandon(bus, &key, &msg).await,
        };
        if let Some(r) = rec.as_mut() {
            super::fill_transcript(bus, r).await.map_err(|e| unavailable(format!("cannot read the transcript: {e}")))?;
        }
        let (jobs_kv, objects) = (bus.jobs.clone(), bus.audio.clone());
        let (purge_key, spilled) = (key.clone(), rec.as_ref().and_then(|r| r.transcript_object.clone()));
        tokio::spawn(async move {
            let _ = jobs_kv.purge(purge_key).await;
            if let Some(name) = spilled {
                let _ = objects.delete(name).await;
            }
        });
        match rec {
            Some(r) if r.status == JobStatus::Cancelled => Err(DispatchError::Timeout(work.timeout.as_secs())),
            Some(r) => into_outcome(r),
            None => Err(DispatchError::Timeout(work.timeout.as_secs())),
        }
    }

    async fn store_audio(&self, id: &str, audio: ByteStream<'_>, limit_bytes: u64) -> Result<u64, DispatchError> {
        let bus = self.bus()?;
        let seen = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = seen.clone();
        let limited = audio.and_then(move |chunk: Bytes| {
            let total = counter.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed) + chunk.len() as u64;
            futures::future::ready(if total > limit_bytes {
                Err(std::io::Error::other("upload over the limit"))
            } else {
                Ok(chunk)
            })
        });
        let mut reader = tokio_util::io::StreamReader::new(limited);
        match self.put_audio(bus, id, &mut reader).await {
            Ok(n) => Ok(n),
            Err(_) if seen.load(std::sync::atomic::Ordering::Relaxed) > limit_bytes => {
                let _ = bus.audio.delete(id).await;
                Err(DispatchError::UploadTooLarge { limit_mb: limit_bytes / (1024 * 1024) })
            }
            Err(e) => {
                let _ = bus.audio.delete(id).await;
                Err(unavailable(format!("cannot store the upload: {e}")))
            }
        }
    }

    async fn discard_audio(&self, id: &str) {
        if let Ok(bus) = self.bus() {
            let _ = bus.audio.delete(id).await;
        }
    }

    async fn enqueue(&self, mut job: JobRecord) -> Result<JobRecord, DispatchError> {
        let bus = self.bus()?;
        let model = self.route_model(bus, &job.request.model).await?;
        if let Some((pending, _)) = bus.consumer_pending(&self.config.model.size).await {
            if pending >= self.config.jobs.max_queued as u64 {
                return Err(DispatchError::QueueFull { retry_after_s: 30 });
            }
        }
        let size = bus.audio.info(&job.id).await.map(|i| i.size as u64).unwrap_or(0);
        job.upload_bytes = Some(size);
        // The owner's backlog, checked and taken in one compare-and-set.
        let cfg = &self.config.jobs;
        let owner = job.request.owner.clone();
        let before = tokio::time::timeout(
            OP_TIMEOUT,
            super::update_backlog(&bus.jobs, &owner, |b| {
                crate::dispatch::check_backlog(cfg, b.jobs, b.bytes, size).ok()?;
                Some(super::Backlog { jobs: b.jobs + 1, bytes: b.bytes.saturating_add(size) })
            }),
        )
        .await
        .map_err(|_| unavailable("cannot record the job: NATS did not answer in time"))?
        .map_err(|e| unavailable(format!("cannot record the job: {e}")))?;
        crate::dispatch::check_backlog(cfg, before.jobs, before.bytes, size)?;
        match self.record_and_publish(bus, &job, &model, size).await {
            Ok(()) => Ok(job),
            Err(e) => {
                super::backlog_done(&bus.jobs, &owner, size).await;
                Err(e)
            }
        }
    }

    async fn job(&self, id: &str, caller: &Caller) -> Result<JobRecord, DispatchError> {
        check_id(id)?;
        let bus = self.bus()?;
        self.read(bus, id).await?.filter(|r| caller.may_see(r)).ok_or_else(|| DispatchError::NotFound(id.to_string()))
    }

    async fn cancel(&self, id: &str, caller: &Caller) -> Result<JobRecord, DispatchError> {
        check_id(id)?;
        let bus = self.bus()?;
        // Compare-and-set on the record's revision: a worker finishing at
        // the same moment wins or loses cleanly.
        for _ in 0..5 {
            let entry = bus.jobs.entry(id).await.map_err(|e| unavailable(e.to_string()))?;
            let Some(entry) = entry.filter(|e| e.operation == async_nats::jetstream::kv::Operation::Put) else {
                return Err(DispatchError::NotFound(id.to_string()));
            };
            let mut rec: JobRecord = serde_json::from_slice(&entry.value).map_err(|e| DispatchError::Engine(e.to_string()))?;
            if !caller.may_see(&rec) {
                return Err(DispatchError::NotFound(id.to_string()));
            }
            if rec.status.is_final() {
                return Err(DispatchError::AlreadyFinal { id: id.to_string(), status: rec.status });
            }
            rec.status = JobStatus::Cancelled;
            rec.updated_at_ms = jobs::now_ms();
            let value = serde_json::to_vec(&rec).map_err(|e| DispatchError::Engine(e.to_string()))?;
            if bus.jobs.update(id, value.into(), entry.revision).await.is_ok() {
                let _ = bus.audio.delete(id).await;
                super::backlog_done(&bus.jobs, &rec.request.owner, rec.upload_bytes.unwrap_or(0)).await;
                tracing::info!(job_id = %id, "job cancelled");
                return Ok(rec);
            }
        }
        Err(unavailable("the job kept changing; try again"))
    }

    async fn jobs(&self, limit: usize, after: Option<String>, caller: &Caller) -> Result<JobPage, DispatchError> {
        let bus = self.bus()?;
        // The caller's index keys only (an admin's: every owner's), named
        // `idx.<owner>.<created_ms>_<id>`: the server filters the subjects.
        let filter = match caller.admin {
            true => format!("{}{}>", bus.jobs.prefix, super::INDEX_PREFIX),
            false => format!("{}{}.>", bus.jobs.prefix, super::index_owner(&caller.id)),
        };
        let subjects = tokio::time::timeout(OP_TIMEOUT, async {
            let info = bus.jobs.stream.info_with_subjects(&filter).await.map_err(|e| e.to_string())?;
            info.try_collect::<HashMap<String, usize>>().await.map_err(|e| e.to_string())
        })
        .await
        .map_err(|_| unavailable("cannot list jobs: NATS did not answer in time"))?
        .map_err(|e| unavailable(format!("cannot list jobs: {e}")))?;
        // (created_ms, id), newest first.
        let mut entries: Vec<(String, String)> = subjects
            .keys()
            .filter_map(|s| s.rsplit('.').next())
            .filter_map(|last| last.split_once('_').map(|(ms, id)| (ms.to_string(), id.to_string())))
            .collect();
        entries.sort_unstable_by(|a, b| b.cmp(a));
        entries.dedup();
        if let Some(a) = &after {
            match entries.iter().position(|(_, id)| id == a) {
                Some(i) => drop(entries.drain(..=i)),
                // Not one of the caller's: an empty page, telling nothing.
                None => entries.clear(),
            }
        }
        let mut jobs = Vec::with_capacity(limit);
        let mut last = None;
        let mut more = false;
        for (_, id) in &entries {
            if jobs.len() == limit {
                more = true;
                break;
            }
            // Expired or another owner's under a colliding prefix: skipped.
            if let Some(r) = self.read(bus, id).await?.filter(|r| caller.may_see(r)) {
                jobs.push(r);
                last = Some(id.clone());
            }
        }
        Ok(JobPage { jobs, next: if more { last } else { None } })
    }

    async fn health(&self) -> Health {
        let model = &self.config.model.size;
        match self.bus() {
            Err(e) => {
                let mut details = serde_json::Map::new();
                details.insert("error".into(), e.to_string().into());
                Health { ready: false, status: "unavailable", details }
            }
            Ok(bus) => {
                let status = self.status(bus).await;
                let serving = status.serving(model).count();
                let mut details = status.to_json();
                details.insert("model".into(), model.clone().into());
                details.insert("workers_serving_model".into(), serving.into());
                if serving > 0 {
                    Health { ready: true, status: "healthy", details }
                } else {
                    details.insert("error".into(), format!("no live worker serves {model}").into());
                    Health { ready: false, status: "no_workers", details }
                }
            }
        }
    }

    fn model_names(&self) -> Vec<String> {
        let mut names = vec![self.config.model.size.clone()];
        // The last status read (at most STATUS_CACHE old): live workers' models.
        if let Ok(cache) = self.status.try_lock() {
            if let Some((_, s)) = cache.as_ref() {
                names.extend(served_ids(s).into_iter().filter(|id| *id != crate::models::id_of(&self.config.model.size)));
            }
        }
        names
    }

    async fn serves(&self, name: &str) -> bool {
        match self.bus() {
            Ok(bus) => self.route_model(bus, name).await.is_ok(),
            Err(_) => name == "whisper-1" || crate::models::id_of(name) == crate::models::id_of(&self.config.model.size),
        }
    }

    async fn models(&self) -> Vec<crate::dispatch::models::ModelState> {
        let default = crate::models::id_of(&self.config.model.size);
        let Ok(bus) = self.bus() else { return Vec::new() };
        let status = self.status(bus).await;
        let mut ids = served_ids(&status);
        if !ids.contains(&default) {
            ids.insert(0, default.clone());
        }
        ids.into_iter()
            .map(|id| {
                let workers: Vec<_> = status.workers.iter().filter(|w| crate::models::id_of(&w.model) == id).collect();
                crate::dispatch::models::ModelState {
                    state: if workers.is_empty() { "loading" } else { "loaded" },
                    default: id == default,
                    in_use: Some(workers.iter().map(|w| w.busy).sum()),
                    load_s: None,
                    id,
                }
            })
            .collect()
    }

    async fn load_model(&self, _name: &str) -> Result<crate::dispatch::models::ModelState, DispatchError> {
        Err(DispatchError::InUse("in cluster mode each worker loads the model of its config (model.size); start workers for a model to serve it".into()))
    }

    async fn unload_model(&self, _name: &str) -> Result<(), DispatchError> {
        Err(DispatchError::InUse("in cluster mode each worker keeps the model of its config (model.size); stop its workers to stop serving it".into()))
    }

    async fn open_realtime(
        &self,
        open: crate::realtime::Open,
        sink: crate::realtime::Sink,
    ) -> Result<tokio::sync::mpsc::Sender<crate::realtime::Inbound>, DispatchError> {
        let bus = self.bus()?;
        super::realtime::open(&bus.client, &self.config, open, sink).await
    }

    fn on_job_final(&self, hook: JobHook) {
        let _ = self.on_final.set(hook);
    }

    fn pool(&self) -> Option<Arc<Pool>> {
        None
    }

    async fn shutdown(&self, _grace: Duration) {
        // Requests in flight were drained by the HTTP server; queued jobs
        // stay in JetStream.
        let _ = self.client.flush().await;
    }
}

/// `whisper-serve gateway`: the HTTP API on `listener`, jobs over NATS.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let config = Arc::new(config);
    let dispatcher = NatsDispatcher::start(config.clone()).await?;
    let state = Arc::new(AppState::new(config.clone(), dispatcher));
    let wyoming = crate::wyoming::start(state.clone()).await?;
    let shutdown = wyoming.stopping_with(shutdown);
    crate::api::stats::spawn_sampler(&state);
    crate::server::serve_api(listener, crate::api::router(state.clone()), &config, Some(&state.dispatcher), shutdown).await?;
    wyoming.finish().await;
    crate::server::drain(&state).await;
    Ok(())
}

/// The ids of the models live workers serve, sorted, each once.
fn served_ids(status: &ClusterStatus) -> Vec<String> {
    let mut ids: Vec<String> = status.workers.iter().map(|w| crate::models::id_of(&w.model)).collect();
    ids.sort();
    ids.dedup();
    ids
}
