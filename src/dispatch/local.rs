//! `serve`'s dispatcher: everything in this process. Uploads are decoded
//! here and go straight to the engine [`Pool`]; async jobs are kept in an
//! embedded database under `jobs.dir` (with their audio as files), run by a
//! job runner that never has more of them in the pool than the replicas
//! can batch (so synchronous requests are not starved), and are picked up
//! again after a restart.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::models::{ModelSet, ModelState};
use super::pool::{BatchSettings, Pool, PoolLimits, Reply};
use super::{ByteStream, DispatchError, Dispatcher, Health, JobHook, JobPage, Load, Outcome, Replica, Work};
use crate::config::Config;
use crate::engine::Engine;
use crate::jobs::store::{JobStore, StoreError};
use crate::jobs::webhook::WebhookSender;
use crate::jobs::{self, Caller, JobError, JobRecord, JobStatus};

/// How often finished jobs past `jobs.result_ttl_s` are removed.
const PURGE_EVERY: Duration = Duration::from_secs(60);

pub struct LocalDispatcher {
    config: Arc<Config>,
    pool: OnceLock<Arc<Pool>>,
    /// The default model (`pool`) and the ones loaded on demand.
    models: Arc<ModelSet>,
    load_error: OnceLock<String>,
    store: JobStore,
    webhooks: Arc<WebhookSender>,
    runnable: mpsc::UnboundedSender<String>,
    /// Running async jobs, by id: the attempt that runs it and the sender
    /// whose pair cancels it. The attempt number keeps one run from
    /// removing another's entry.
    cancels: Mutex<HashMap<String, (u32, oneshot::Sender<()>)>>,
    stopping: AtomicBool,
    on_final: OnceLock<JobHook>,
}

impl From<StoreError> for DispatchError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(id) | StoreError::BadId(id) => DispatchError::NotFound(id),
            other => DispatchError::Engine(format!("job store: {other}")),
        }
    }
}

impl LocalDispatcher {
    /// Opens the job store; the engine is attached later by [`Self::attach`]
    /// (or [`Self::fail`]) once it has loaded.
    pub fn open(config: Arc<Config>) -> Result<Arc<Self>, StoreError> {
        let store = JobStore::open(&config.jobs.dir)?;
        let webhooks = WebhookSender::new(
            config.jobs.webhook_secret.clone(),
            config.jobs.webhook_max_attempts,
            Duration::from_secs(config.jobs.webhook_timeout_s),
            &config.jobs.webhook_allow_hosts,
        )
        .map_err(|e| StoreError::Io(std::io::Error::other(e.to_string())))?;
        let webhooks = Arc::new(webhooks);
        // Before anything runs: jobs left running belonged to a process
        // that is gone, and files without a job are uploads it never finished.
        let max_attempts = config.jobs.max_attempts;
        let failed = store.recover_interrupted(max_attempts, outbox_entry)?;
        for rec in &failed {
            tracing::error!(job_id = %rec.id, attempts = rec.attempts, "job failed: the server stopped while running it too often");
        }
        match store.sweep_orphans() {
            Ok(0) => {}
            Ok(n) => tracing::info!(files = n, "removed uploads that belong to no job"),
            Err(e) => tracing::warn!(error = %e, "cannot sweep orphaned uploads"),
        }
        let (runnable, rx) = mpsc::unbounded_channel();
        let models = ModelSet::new(config.clone());
        let me = Arc::new(Self {
            config,
            pool: OnceLock::new(),
            models,
            load_error: OnceLock::new(),
            store,
            webhooks,
            runnable,
            cancels: Mutex::new(HashMap::new()),
            stopping: AtomicBool::new(false),
            on_final: OnceLock::new(),
        });
        tokio::spawn(me.clone().run_jobs(rx));
        tokio::spawn(me.clone().purge_expired());
        // Webhooks whose delivery a previous run had not finished.
        match me.store.pending_deliveries() {
            Ok(pending) => {
                if !pending.is_empty() {
                    tracing::info!(webhooks = pending.len(), "resuming webhook deliveries");
                }
                for d in pending {
                    me.deliver(d.job_id, d.url, d.body);
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot read the webhook outbox"),
        }
        Ok(me)
    }

    /// Delivers one webhook from the outbox, then removes it from there
    /// (delivered, or given up after `jobs.webhook_max_attempts`).
    fn deliver(&self, job_id: String, url: String, body: Vec<u8>) {
        let (webhooks, store) = (self.webhooks.clone(), self.store.clone());
        tokio::spawn(async move {
            match webhooks.deliver(&url, &job_id, body).await {
                Ok(attempts) => tracing::info!(job_id, attempts, "webhook delivered"),
                Err(e) => tracing::warn!(job_id, attempts = e.attempts(), error = %e, "webhook delivery gave up"),
            }
            let id = job_id.clone();
            let removed = tokio::task::spawn_blocking(move || store.delivered(&id)).await;
            if !matches!(removed, Ok(Ok(()))) {
                tracing::warn!(job_id, "cannot remove a delivered webhook from the outbox; it may be sent again after a restart");
            }
        });
    }

    /// Starts the engine pool and resumes the jobs a previous run left.
    pub async fn attach(self: &Arc<Self>, engine: Arc<Engine>, load_s: f64) {
        let c = &self.config;
        let batching = BatchSettings::from_config(c, engine.is_cuda());
        let pool = Arc::new(Pool::start(engine, c.deployment.num_replicas as usize, PoolLimits::from_config(c), batching));
        self.models.attach_default(pool.clone(), load_s);
        let _ = self.pool.set(pool);
        // Jobs queued while the model loaded are in the channel already and
        // come again here: harmless, since only a queued job can be started.
        match self.db(|s| s.unfinished()).await {
            Ok(left) => {
                if !left.is_empty() {
                    tracing::info!(jobs = left.len(), "running the jobs queued so far");
                }
                for job in left {
                    let _ = self.runnable.send(job.id);
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot read the unfinished jobs"),
        }
    }

    pub fn fail(&self, reason: String) {
        let _ = self.load_error.set(reason);
    }

    fn ready_pool(&self) -> Result<&Arc<Pool>, DispatchError> {
        match self.pool.get() {
            Some(p) => Ok(p),
            None => match self.load_error.get() {
                Some(e) => Err(DispatchError::Engine(e.clone())),
                None => Err(DispatchError::Loading),
            },
        }
    }

    /// Runs a store call off the async threads.
    async fn db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&JobStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, DispatchError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| DispatchError::Engine(format!("job store task: {e}")))?
            .map_err(DispatchError::from)
    }

    /// Decodes `bytes` and runs them through the pool, telling `progress`
    /// as windows are decoded. `cancel` ends the wait early (the batcher
    /// drops work whose receiver is gone).
    async fn run(
        &self,
        bytes: bytes::Bytes,
        options: crate::engine::DecodeOptions,
        model: Option<&str>,
        cancel: impl std::future::Future<Output = ()>,
        progress: Option<super::ProgressSender>,
    ) -> Result<Option<Outcome>, DispatchError> {
        // Held until the reply: the model is not unloaded under the work.
        let lease = self.models.lease(model, || self.ready_pool().cloned()).await?;
        let pool = lease.pool();
        let audio = pool.decode(bytes, self.config.limits.max_audio_seconds).await?;
        let rx = pool.submit_with_progress(audio, options, progress)?;
        tokio::select! {
            reply = rx => Ok(Some(outcome(reply)?)),
            _ = cancel => Ok(None),
        }
    }

    /// Hands queued jobs to the pool, at most its capacity at a time.
    async fn run_jobs(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<String>) {
        // Wait for the engine; until then jobs stay queued.
        let capacity = loop {
            if let Some(p) = self.pool.get() {
                break p.capacity();
            }
            if self.load_error.get().is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let slots = Arc::new(Semaphore::new(capacity.max(1)));
        while let Some(id) = rx.recv().await {
            let Ok(permit) = slots.clone().acquire_owned().await else { return };
            if self.stopping.load(Ordering::Relaxed) {
                // Left queued in the store: the next start runs it.
                return;
            }
            let me = self.clone();
            tokio::spawn(async move {
                me.run_job(id).await;
                drop(permit);
            });
        }
    }

    async fn run_job(self: &Arc<Self>, id: String) {
        // Only queued -> running starts a job: a job already running (sent
        // twice: queued while the model loaded, then resumed) or final is
        // left alone, so each job runs once.
        let started = self
            .db({
                let id = id.clone();
                move |s| {
                    s.update_if(&id, |r| {
                        if r.status != JobStatus::Queued {
                            return false;
                        }
                        r.status = JobStatus::Running;
                        r.attempts += 1;
                        r.worker = Some("local".into());
                        true
                    })
                }
            })
            .await;
        let record = match started {
            Ok(Some((r, true))) => r,
            Ok(_) => return,
            Err(e) => {
                tracing::error!(job_id = %id, error = %e, "cannot start the job");
                return;
            }
        };
        test_fault_abort(&record);
        let attempt = record.attempts;
        let request_id = record.request.request_id.clone();
        let result = match tokio::fs::read(self.store.audio_path(&id).unwrap_or_default()).await {
            Err(e) => Err(DispatchError::Engine(format!("the job's audio is gone: {e}"))),
            Ok(bytes) => {
                let (cancel_tx, cancel_rx) = oneshot::channel::<()>();
                if let Ok(mut c) = self.cancels.lock() {
                    c.insert(id.clone(), (attempt, cancel_tx));
                }
                let cancelled = async {
                    let _ = cancel_rx.await;
                };
                let r = self.run_waiting_for_room(bytes.into(), record.request.decode.clone(), Some(record.request.model.as_str()), cancelled).await;
                if let Ok(mut c) = self.cancels.lock() {
                    if c.get(&id).is_some_and(|(a, _)| *a == attempt) {
                        c.remove(&id);
                    }
                }
                r
            }
        };
        let (status, transcript, error) = match result {
            Ok(None) => return, // cancelled; cancel() wrote the record
            Ok(Some(o)) => (JobStatus::Completed, Some(o.transcript), None),
            Err(DispatchError::ShuttingDown) => {
                // Stopped on purpose, not by the job: back to the queue for
                // the next start, without counting the attempt.
                let key = id.clone();
                let _ = self
                    .db(move |s| {
                        s.update_if(&key, |r| {
                            if r.status != JobStatus::Running {
                                return false;
                            }
                            r.status = JobStatus::Queued;
                            r.attempts = r.attempts.saturating_sub(1);
                            true
                        })
                    })
                    .await;
                return;
            }
            Err(e) => {
                tracing::warn!(job_id = %id, request_id = %request_id, error = %e, "job failed");
                (JobStatus::Failed, None, Some(e.to_job_error()))
            }
        };
        self.finish_job(&id, status, transcript, error).await;
    }

    /// Like [`Self::run`], but an async job waits for room in a full queue
    /// instead of failing.
    async fn run_waiting_for_room(
        &self,
        bytes: bytes::Bytes,
        options: crate::engine::DecodeOptions,
        model: Option<&str>,
        cancel: impl std::future::Future<Output = ()>,
    ) -> Result<Option<Outcome>, DispatchError> {
        tokio::pin!(cancel);
        loop {
            match self.run(bytes.clone(), options.clone(), model, &mut cancel, None).await {
                // A full queue, or a model that cannot be loaded now: a job
                // waits. (One that cannot be loaded at all fails it.)
                Err(DispatchError::QueueFull { .. } | DispatchError::ModelBusy { .. }) => {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                        _ = &mut cancel => return Ok(None),
                    }
                }
                other => return other,
            }
        }
    }

    async fn finish_job(
        &self,
        id: &str,
        status: JobStatus,
        transcript: Option<crate::engine::Transcript>,
        error: Option<JobError>,
    ) {
        let audio_seconds = transcript.as_ref().map(|t| t.duration);
        // The final record and its webhook in one transaction: the webhook
        // exists exactly when this write happened (not when a cancel won).
        let written = self
            .db({
                let id = id.to_string();
                move |s| {
                    s.finish(
                        &id,
                        move |r| {
                            if r.status != JobStatus::Running {
                                return false;
                            }
                            r.status = status;
                            r.audio_seconds = audio_seconds.or(r.audio_seconds);
                            r.transcript = transcript;
                            r.error = error;
                            true
                        },
                        outbox_entry,
                    )
                }
            })
            .await;
        match written {
            Ok(Some((rec, true))) => {
                self.discard_audio(id).await;
                tracing::info!(job_id = %id, request_id = %rec.request.request_id, status = status.as_str(), "job finished");
                self.finished(&rec);
                if let Some(url) = rec.request.callback_url.clone() {
                    let body = jobs::public_json(&rec).to_string().into_bytes();
                    self.deliver(rec.id.clone(), url, body);
                }
            }
            // Final already (cancelled meanwhile): its audio is gone with the cancel.
            Ok(_) => {}
            // Not recorded: the audio stays, so the job can run again.
            Err(e) => tracing::error!(job_id = %id, error = %e, "cannot record the job's result; its audio is kept"),
        }
    }

    /// A job reached a final state here: counted in the stats, told to the hook.
    fn finished(&self, rec: &JobRecord) {
        crate::telemetry::stats::global().job(
            &rec.request.request_id,
            &rec.request.owner,
            rec.outcome_status(),
            (rec.updated_at_ms - rec.created_at_ms) as f64,
            rec.audio_seconds,
        );
        if let Some(hook) = self.on_final.get() {
            hook(rec);
        }
    }

    async fn purge_expired(self: Arc<Self>) {
        let ttl_ms = (self.config.jobs.result_ttl_s as i64).saturating_mul(1000);
        loop {
            tokio::time::sleep(PURGE_EVERY).await;
            match self.db(move |s| s.purge_expired(ttl_ms)).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(jobs = n, "removed expired jobs"),
                Err(e) => tracing::warn!(error = %e, "cannot remove expired jobs"),
            }
        }
    }
}

/// The webhook a final record sends, if it has a callback (the outbox row
/// written with it).
fn outbox_entry(rec: &JobRecord) -> Option<(String, Vec<u8>)> {
    let url = rec.request.callback_url.clone()?;
    Some((url, jobs::public_json(rec).to_string().into_bytes()))
}

/// Removes a file when dropped, unless it was renamed away first.
struct RemoveOnDrop(Option<std::path::PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            // Gone already after a successful rename: nothing to do.
            let _ = std::fs::remove_file(p);
        }
    }
}

/// With `WHISPER_SERVE_TEST_FAULTS=1` only: a job whose file is named
/// `abort-process*` takes the whole process down as it starts, as a job
/// that crashes the engine would (tests of `jobs.max_attempts`).
fn test_fault_abort(rec: &JobRecord) {
    if std::env::var("WHISPER_SERVE_TEST_FAULTS").as_deref() == Ok("1")
        && rec.request.filename.as_deref().is_some_and(|f| f.starts_with("abort-process"))
    {
        tracing::error!(job_id = %rec.id, "test fault: aborting the process");
        std::process::abort();
    }
}

/// A realtime session's decode steps, run by this process's engine pool
/// with the file requests (`serve`, and a cluster worker's sessions).
/// A session's model is the default one unless `models` (this process's
/// on-demand models; a cluster worker serves its one model) says otherwise.
pub(crate) struct PoolStepper {
    pub default: Arc<Pool>,
    pub models: Option<Arc<ModelSet>>,
}

#[async_trait]
impl crate::realtime::Stepper for PoolStepper {
    async fn decode(&self, model: &str, audio: Vec<f32>, options: crate::engine::DecodeOptions) -> Result<crate::engine::Transcript, crate::realtime::StepError> {
        let step_error = |e: DispatchError| {
            let retry = matches!(e, DispatchError::QueueFull { .. } | DispatchError::Loading | DispatchError::ModelBusy { .. });
            let code = match e {
                DispatchError::QueueFull { .. } => "queue_full",
                DispatchError::ShuttingDown => "shutting_down",
                DispatchError::UnknownModel { .. } => "model_not_found",
                DispatchError::Unavailable { .. } | DispatchError::ModelBusy { .. } => "unavailable",
                _ => "engine_error",
            };
            crate::realtime::StepError { retry, code, message: e.to_string() }
        };
        let lease = match &self.models {
            Some(m) if !m.is_default(Some(model)) => Some(m.lease(Some(model), || Err(DispatchError::Loading)).await.map_err(step_error)?),
            _ => None,
        };
        let pool = lease.as_ref().map_or(&self.default, |l| l.pool());
        let rx = pool.submit(audio, options).map_err(step_error)?;
        outcome(rx.await).map(|o| o.transcript).map_err(step_error)
    }

    fn has_room(&self) -> bool {
        self.default.queued() == 0 && self.default.has_idle_replica()
    }
}

/// Starts a session on `pool` (see [`Dispatcher::open_realtime`]).
pub(crate) fn spawn_session(
    pool: Arc<Pool>,
    models: Option<Arc<ModelSet>>,
    config: &Config,
    open: crate::realtime::Open,
    sink: crate::realtime::Sink,
) -> mpsc::Sender<crate::realtime::Inbound> {
    let (tx, rx) = mpsc::channel(super::REALTIME_INBOUND);
    let settings = crate::realtime::Settings::from_config(&config.realtime);
    let span = tracing::info_span!("realtime_session", session = %open.session_id);
    tokio::spawn(tracing::Instrument::instrument(
        crate::realtime::session::run(open, settings, Arc::new(PoolStepper { default: pool, models }), rx, sink),
        span,
    ));
    tx
}

/// A pool reply as the dispatcher's outcome.
pub(crate) fn outcome(reply: Result<Reply, oneshot::error::RecvError>) -> Result<Outcome, DispatchError> {
    match reply {
        Err(_) => Err(DispatchError::ShuttingDown),
        Ok(Err(e)) => Err(e.into()),
        Ok(Ok(done)) => Ok(Outcome {
            transcript: done.transcript,
            queue_wait_s: done.queue_wait_s,
            inference_s: done.inference_s,
            gpu_memory_gb: done.gpu_memory_gb,
        }),
    }
}

#[async_trait]
impl Dispatcher for LocalDispatcher {
    fn mode(&self) -> &'static str {
        "serve"
    }

    async fn load(&self) -> Load {
        let Some(pool) = self.pool.get() else {
            // Still loading (or failed): the configured replicas, none ready.
            let n = self.config.deployment.num_replicas.max(1) as usize;
            let replicas = (0..n)
                .map(|i| Replica { id: format!("replica-{i}"), state: "loading".into(), ..Replica::default() })
                .collect();
            return Load { replicas, ..Load::default() };
        };
        let per = pool.max_batch_size() as u64;
        let device = pool.engine().device().to_string();
        let replicas = pool
            .busy_by_replica()
            .into_iter()
            .enumerate()
            .map(|(i, busy)| Replica {
                id: format!("replica-{i}"),
                state: if busy > 0 { "busy" } else { "idle" }.into(),
                busy: busy as u64,
                capacity: per,
                device: device.clone(),
                jobs_done: None,
            })
            .collect();
        Load {
            queue_depth: Some(pool.queued() as u64),
            in_progress: pool.running() as u64,
            capacity: pool.capacity() as u64,
            replicas,
            device: Some(device),
            compute_type: Some(pool.engine().compute_type().to_string()),
            remote_batch_steps: None,
        }
    }

    async fn transcribe(&self, work: Work) -> Result<Outcome, DispatchError> {
        let secs = work.timeout.as_secs();
        match tokio::time::timeout(work.timeout, self.run(work.audio, work.options, work.model.as_deref(), std::future::pending(), work.progress)).await {
            Err(_) => Err(DispatchError::Timeout(secs)),
            Ok(Ok(Some(o))) => Ok(o),
            Ok(Ok(None)) => Err(DispatchError::ShuttingDown),
            Ok(Err(e)) => Err(e),
        }
    }

    async fn store_audio(&self, id: &str, mut audio: ByteStream<'_>, limit_bytes: u64) -> Result<u64, DispatchError> {
        // Written as `<id>.part`, renamed once whole and synced: a client
        // that goes away mid-upload drops this future, and the guard
        // removes the partial file (a crash leaves it to the start-up sweep).
        let path = self.store.audio_path(id)?;
        let part = self.store.part_path(id)?;
        let guard = RemoveOnDrop(Some(part.clone()));
        let mut file = tokio::fs::File::create(&part)
            .await
            .map_err(|e| DispatchError::Engine(format!("cannot store the upload: {e}")))?;
        let mut size = 0u64;
        let written: Result<u64, DispatchError> = async {
            while let Some(chunk) = audio.next().await {
                let chunk = chunk.map_err(|e| DispatchError::Upload(e.to_string()))?;
                size += chunk.len() as u64;
                if size > limit_bytes {
                    return Err(DispatchError::UploadTooLarge { limit_mb: limit_bytes / (1024 * 1024) });
                }
                file.write_all(&chunk).await.map_err(|e| DispatchError::Engine(format!("cannot store the upload: {e}")))?;
            }
            file.sync_data().await.map_err(|e| DispatchError::Engine(format!("cannot store the upload: {e}")))?;
            tokio::fs::rename(&part, &path).await.map_err(|e| DispatchError::Engine(format!("cannot store the upload: {e}")))?;
            Ok(size)
        }
        .await;
        drop(guard);
        written
    }

    async fn discard_audio(&self, id: &str) {
        let id = id.to_string();
        let _ = self
            .db(move |s| {
                if let Ok(part) = s.part_path(&id) {
                    let _ = std::fs::remove_file(part);
                }
                // A job that made it into the store keeps its audio (a
                // client gone just as its job was queued).
                if matches!(s.get(&id), Ok(Some(r)) if !r.status.is_final()) {
                    return Ok(());
                }
                s.delete_audio(&id)
            })
            .await;
    }

    async fn enqueue(&self, job: JobRecord) -> Result<JobRecord, DispatchError> {
        if self.stopping.load(Ordering::Relaxed) {
            return Err(DispatchError::ShuttingDown);
        }
        let cfg = &self.config.jobs;
        let queued = self.db(|s| s.count_queued()).await?;
        if queued >= cfg.max_queued {
            return Err(DispatchError::QueueFull { retry_after_s: 30 });
        }
        let audio_bytes = tokio::fs::metadata(self.store.audio_path(&job.id)?).await.map(|m| m.len()).unwrap_or(0);
        let owner = job.request.owner.clone();
        let (jobs_waiting, bytes_waiting) = self.db(move |s| s.owner_backlog(&owner)).await?;
        super::check_backlog(cfg, jobs_waiting as u64, bytes_waiting, audio_bytes)?;
        let rec = job.clone();
        self.db(move |s| s.insert_sized(&rec, audio_bytes)).await?;
        let _ = self.runnable.send(job.id.clone());
        Ok(job)
    }

    async fn job(&self, id: &str, caller: &Caller) -> Result<JobRecord, DispatchError> {
        let id = id.to_string();
        let key = id.clone();
        let rec = self.db(move |s| s.get(&key)).await?;
        rec.filter(|r| caller.may_see(r)).ok_or(DispatchError::NotFound(id))
    }

    async fn cancel(&self, id: &str, caller: &Caller) -> Result<JobRecord, DispatchError> {
        let key = id.to_string();
        let who = caller.clone();
        let changed = self
            .db(move |s| {
                s.update_if(&key, |r| {
                    if !who.may_see(r) || r.status.is_final() {
                        return false;
                    }
                    r.status = JobStatus::Cancelled;
                    true
                })
            })
            .await?;
        let (rec, written) = changed.filter(|(r, _)| caller.may_see(r)).ok_or_else(|| DispatchError::NotFound(id.to_string()))?;
        if !written {
            return Err(DispatchError::AlreadyFinal { id: id.to_string(), status: rec.status });
        }
        if let Some((_, tx)) = self.cancels.lock().ok().and_then(|mut c| c.remove(id)) {
            let _ = tx.send(());
        }
        self.discard_audio(id).await;
        tracing::info!(job_id = %id, "job cancelled");
        self.finished(&rec);
        Ok(rec)
    }

    async fn jobs(&self, limit: usize, after: Option<String>, caller: &Caller) -> Result<JobPage, DispatchError> {
        let owner = (!caller.admin).then(|| caller.id.clone());
        let mut jobs = self.db(move |s| s.list(limit + 1, after.as_deref(), owner.as_deref())).await?;
        let next = if jobs.len() > limit {
            jobs.truncate(limit);
            jobs.last().map(|j| j.id.clone())
        } else {
            None
        };
        Ok(JobPage { jobs, next })
    }

    async fn health(&self) -> Health {
        let mut details = serde_json::Map::new();
        let (ready, status) = match self.ready_pool() {
            // The original service's body, exactly: {"status": "healthy"}.
            Ok(_) => (true, "healthy"),
            Err(DispatchError::Loading) => (false, "loading"),
            Err(e) => {
                details.insert("error".into(), e.to_string().into());
                (false, "error")
            }
        };
        Health { ready, status, details }
    }

    fn model_names(&self) -> Vec<String> {
        let mut names = vec![self.config.model.size.clone()];
        if let Some(n) = self.pool.get().and_then(|p| p.engine().model_path().file_name().map(|n| n.to_string_lossy().into_owned())) {
            names.push(n);
        }
        for m in self.models.states() {
            if !names.contains(&m.id) {
                names.push(m.id);
            }
        }
        names
    }

    async fn serves(&self, name: &str) -> bool {
        self.models.is_default(Some(name))
            || crate::models::resolve(name, &self.config.model.model_dir)
                .is_some_and(|r| crate::models::is_complete(&r.path) || (r.pullable && self.config.models.pull_on_demand))
    }

    async fn models(&self) -> Vec<ModelState> {
        self.models.states()
    }

    async fn load_model(&self, name: &str) -> Result<ModelState, DispatchError> {
        self.models.preload(name).await
    }

    async fn unload_model(&self, name: &str) -> Result<(), DispatchError> {
        self.models.unload(name)
    }

    fn pool(&self) -> Option<Arc<Pool>> {
        self.pool.get().cloned()
    }

    async fn open_realtime(
        &self,
        open: crate::realtime::Open,
        sink: crate::realtime::Sink,
    ) -> Result<mpsc::Sender<crate::realtime::Inbound>, DispatchError> {
        let pool = self.ready_pool()?.clone();
        Ok(spawn_session(pool, Some(self.models.clone()), &self.config, open, sink))
    }

    fn on_job_final(&self, hook: JobHook) {
        let _ = self.on_final.set(hook);
    }

    async fn shutdown(&self, grace: Duration) {
        self.stopping.store(true, Ordering::Relaxed);
        let Some(pool) = self.pool.get().cloned() else { return };
        let started = Instant::now();
        let mut pools = self.models.loaded_pools();
        pools.push(pool);
        let drained = tokio::task::spawn_blocking(move || pools.iter().for_each(|p| p.shutdown()));
        if tokio::time::timeout(grace, drained).await.is_err() {
            tracing::warn!(waited_s = started.elapsed().as_secs(), "work still running at the shutdown timeout; exiting");
        }
    }
}
