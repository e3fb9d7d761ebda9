//! Many machines over NATS JetStream. A gateway ([`gateway`]) puts each
//! upload in an object store and a small job message on a work-queue
//! stream (`<prefix>.jobs.<model>`); workers ([`worker`]) pull the jobs of
//! their model, transcribe them with the same engine pool `serve` uses,
//! write the record (status and result) to a key-value bucket keyed by job
//! id, and only then ack. JetStream does the rest: redelivery after
//! `ack_wait_s`, progress acks, `max_deliver`. Workers heartbeat into a
//! second bucket, which `/health` and `cluster status` read ([`status`]).

pub mod gateway;
pub mod realtime;
pub mod status;
pub mod worker;

use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, object_store, stream};
use serde::{Deserialize, Serialize};

use crate::config::{ClusterConfig, Config, StorageKind};
use crate::jobs::JobRequest;

/// Key prefix of the records of synchronous requests, which `GET /v1/jobs`
/// does not list (the gateway removes them once answered).
pub const SYNC_PREFIX: &str = "sync.";

/// Key prefix of the owners' job index in the jobs bucket:
/// `idx.<owner token>.<created_ms>_<id>`, empty values. `GET /v1/jobs`
/// lists a caller's jobs by these keys, so it reads only that owner's.
pub const INDEX_PREFIX: &str = "idx.";

/// The index token of an owner (a key id may hold characters a NATS
/// subject cannot): `idx.` and 32 hex digits of its SHA-256.
pub fn index_owner(owner: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(owner.as_bytes());
    format!("{INDEX_PREFIX}{}", &hex::encode(d)[..32])
}

/// The index key of job `id` of `owner` created at `created_ms`; the
/// zero-padded time makes the keys sort by creation.
pub fn index_key(owner: &str, created_ms: i64, id: &str) -> String {
    format!("{}.{:015}_{id}", index_owner(owner), created_ms.max(0))
}

/// Key prefix of each owner's backlog in the jobs bucket:
/// `backlog.<owner token>` holds [`Backlog`], the jobs it has queued or
/// running and their bytes, kept by compare-and-set: added to by the
/// gateway that queues a job, taken from by whoever writes the job's final
/// record (the worker, or the gateway that cancels it). A count left too
/// high by a crash between the two writes clears when the entry expires
/// with the bucket's TTL after the owner's last job.
pub const BACKLOG_PREFIX: &str = "backlog.";

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Backlog {
    pub jobs: u64,
    pub bytes: u64,
}

fn backlog_key(owner: &str) -> String {
    let token = index_owner(owner);
    format!("{BACKLOG_PREFIX}{}", token.trim_start_matches(INDEX_PREFIX))
}

/// Changes `owner`'s backlog by `f` with compare-and-set, retrying when
/// another writer got there first; `f` may refuse (None: nothing written).
/// Returns the backlog it saw before the change.
pub async fn update_backlog(
    jobs: &kv::Store,
    owner: &str,
    f: impl Fn(Backlog) -> Option<Backlog>,
) -> Result<Backlog, ClusterError> {
    let key = backlog_key(owner);
    for _ in 0..20 {
        let entry = jobs.entry(&key).await.map_err(nats_err)?;
        let (now, revision) = match entry.filter(|e| e.operation == kv::Operation::Put) {
            Some(e) => (serde_json::from_slice(&e.value).unwrap_or_default(), Some(e.revision)),
            None => (Backlog::default(), None),
        };
        let Some(next) = f(now) else { return Ok(now) };
        let value: bytes::Bytes = serde_json::to_vec(&next).map_err(nats_err)?.into();
        let written = match revision {
            Some(r) => jobs.update(&key, value, r).await.is_ok(),
            None => jobs.create(&key, value).await.is_ok(),
        };
        if written {
            return Ok(now);
        }
    }
    Err(ClusterError::Nats(format!("{key} kept changing")))
}

/// A job of `owner` holding `bytes` reached its final state.
pub async fn backlog_done(jobs: &kv::Store, owner: &str, bytes: u64) {
    let done = update_backlog(jobs, owner, |b| Some(Backlog { jobs: b.jobs.saturating_sub(1), bytes: b.bytes.saturating_sub(bytes) })).await;
    if let Err(e) = done {
        tracing::warn!(error = %e, "cannot update the owner's job backlog");
    }
}

/// Header of a dead letter: why the job failed.
pub const DEAD_REASON_HEADER: &str = "Whisper-Error";

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot connect to NATS at {url}: {message}")]
    Connect { url: String, message: String },
    #[error("NATS: {0}")]
    Nats(String),
    #[error("{0}")]
    Setup(String),
}

pub(crate) fn nats_err(e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Nats(e.to_string())
}

/// What a job message carries; the audio is in the object store under
/// the job's id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobMessage {
    pub id: String,
    /// A synchronous request: its record lives under `sync.<id>` and no
    /// webhook is sent.
    pub sync: bool,
    pub request: JobRequest,
    pub audio_bytes: u64,
    pub created_at_ms: i64,
}

impl JobMessage {
    /// The job's key in the jobs bucket.
    pub fn key(&self) -> String {
        record_key(&self.id, self.sync)
    }
}

pub fn record_key(id: &str, sync: bool) -> String {
    if sync {
        format!("{SYNC_PREFIX}{id}")
    } else {
        id.to_string()
    }
}

/// Object-store chunks: 128 KB (async-nats's default), or less where the
/// server takes smaller messages.
pub fn chunk_size(client: &async_nats::Client) -> usize {
    (client.server_info().max_payload / 2).clamp(4096, 128 * 1024)
}

/// Room left in a NATS message for the record around its transcript.
pub const RECORD_MARGIN: usize = 16 * 1024;

/// Name of the object that holds a spilled transcript.
pub fn transcript_object(id: &str) -> String {
    format!("result-{id}")
}

/// A record must fit in one NATS message (`max_payload`, 1 MB by
/// default); hours of audio can make a longer transcript. Then the
/// transcript goes to the object store and the record points at it.
pub async fn spill_transcript(bus: &Bus, rec: &mut crate::jobs::JobRecord, limit: usize) -> Result<(), ClusterError> {
    let Some(t) = &rec.transcript else { return Ok(()) };
    let size = serde_json::to_vec(rec).map(|v| v.len()).unwrap_or(usize::MAX);
    if size <= limit {
        return Ok(());
    }
    let bytes = serde_json::to_vec(t).map_err(nats_err)?;
    let name = transcript_object(&rec.id);
    let meta = async_nats::jetstream::object_store::ObjectMetadata { name: name.clone(), chunk_size: Some(chunk_size(&bus.client)), ..Default::default() };
    bus.audio.put(meta, &mut std::io::Cursor::new(bytes)).await.map_err(nats_err)?;
    rec.transcript = None;
    rec.transcript_object = Some(name);
    Ok(())
}

/// Puts a spilled transcript back into its record.
pub async fn fill_transcript(bus: &Bus, rec: &mut crate::jobs::JobRecord) -> Result<(), ClusterError> {
    let Some(name) = rec.transcript_object.clone() else { return Ok(()) };
    if rec.transcript.is_some() {
        return Ok(());
    }
    use tokio::io::AsyncReadExt;
    let mut obj = bus.audio.get(&name).await.map_err(nats_err)?;
    let mut bytes = Vec::new();
    obj.read_to_end(&mut bytes).await.map_err(nats_err)?;
    rec.transcript = Some(serde_json::from_slice(&bytes).map_err(nats_err)?);
    Ok(())
}

/// A worker's heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerInfo {
    pub id: String,
    /// `model.size` of the worker's config.
    pub model: String,
    pub host: String,
    pub pid: u32,
    pub device: String,
    /// Transcriptions it takes at once (replicas x batch size).
    pub capacity: usize,
    /// Transcriptions in progress.
    pub busy: usize,
    pub jobs_done: u64,
    pub started_at_ms: i64,
    pub heartbeat_at_ms: i64,
    pub version: String,
    /// The CTranslate2 compute type it runs (absent from older workers).
    #[serde(default)]
    pub compute_type: String,
    /// Its decode steps by batch size (index = size) since it started.
    #[serde(default)]
    pub batch_steps: Vec<u64>,
}

/// Handles on the JetStream objects both roles use.
#[derive(Clone)]
pub struct Bus {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub cfg: ClusterConfig,
    pub jobs: kv::Store,
    pub workers: kv::Store,
    pub audio: object_store::ObjectStore,
}

/// Connects to NATS. With `retry` the connection is made in the background
/// (a gateway starts and answers 503 until NATS is there); without it a
/// failure to connect is an error at once.
pub async fn connect(cfg: &ClusterConfig, name: &str, retry: bool) -> Result<async_nats::Client, ClusterError> {
    let mut opts = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(2))
        .max_reconnects(None::<usize>)
        // Back off to at most 1 s between attempts, so recovery after an
        // outage is quick.
        .reconnect_delay_callback(|attempts| Duration::from_millis((attempts as u64 * 100).min(1000)))
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Disconnected => tracing::warn!("NATS connection lost; reconnecting"),
                async_nats::Event::Connected => tracing::info!("NATS connected"),
                other => tracing::debug!(event = %other, "NATS event"),
            }
        });
    if let Some(path) = &cfg.credentials_file {
        opts = opts.credentials_file(path).await.map_err(|e| ClusterError::Connect {
            url: cfg.nats_url.clone(),
            message: format!("credentials file {}: {e}", path.display()),
        })?;
    }
    if let Some(ca) = &cfg.tls_ca_file {
        opts = opts.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&cfg.tls_cert_file, &cfg.tls_key_file) {
        opts = opts.add_client_certificate(cert.clone(), key.clone());
    }
    if cfg.tls_required {
        opts = opts.require_tls(true);
    }
    if retry {
        opts = opts.retry_on_initial_connect();
    }
    let urls: Vec<&str> = cfg.nats_url.split(',').map(str::trim).filter(|u| !u.is_empty()).collect();
    opts.connect(urls.join(",")).await.map_err(|e| ClusterError::Connect { url: cfg.nats_url.clone(), message: e.to_string() })
}

fn storage(kind: StorageKind) -> stream::StorageType {
    match kind {
        StorageKind::File => stream::StorageType::File,
        StorageKind::Memory => stream::StorageType::Memory,
    }
}

impl Bus {
    /// Finds the streams, buckets and (for `model`) the consumer, creating
    /// what is missing. Existing ones with other settings are reported in
    /// the log, not changed: an operator may have tuned them.
    pub async fn setup(client: async_nats::Client, config: &Config) -> Result<Bus, ClusterError> {
        let cfg = config.cluster.clone();
        let js = jetstream::new(client.clone());
        let ttl = Duration::from_secs(config.jobs.result_ttl_s);
        let store = storage(cfg.storage);

        let jobs_stream = stream::Config {
            name: cfg.stream.clone(),
            subjects: vec![format!("{}.jobs.>", cfg.subject_prefix)],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: store,
            num_replicas: cfg.replicas,
            max_age: ttl,
            duplicate_window: duplicate_window(ttl),
            description: Some("whisper-serve jobs, one subject per model".into()),
            ..Default::default()
        };
        ensure_stream(&js, jobs_stream).await?;
        let dead_stream = stream::Config {
            name: cfg.dead_letter_stream.clone(),
            subjects: vec![format!("{}.dead.>", cfg.subject_prefix)],
            storage: store,
            num_replicas: cfg.replicas,
            max_age: ttl.max(Duration::from_secs(7 * 86_400)),
            duplicate_window: Duration::from_secs(120),
            description: Some("whisper-serve jobs that failed max_deliver times".into()),
            ..Default::default()
        };
        ensure_stream(&js, dead_stream).await?;

        let jobs = ensure_kv(
            &js,
            kv::Config { bucket: cfg.jobs_bucket.clone(), history: 1, max_age: ttl, storage: store, num_replicas: cfg.replicas, ..Default::default() },
        )
        .await?;
        let workers = ensure_kv(
            &js,
            kv::Config {
                bucket: cfg.workers_bucket.clone(),
                history: 1,
                max_age: Duration::from_secs(cfg.heartbeat_s * 3),
                storage: store,
                num_replicas: cfg.replicas,
                ..Default::default()
            },
        )
        .await?;
        let audio = match js.get_object_store(&cfg.audio_bucket).await {
            Ok(s) => s,
            Err(_) => js
                .create_object_store(object_store::Config {
                    bucket: cfg.audio_bucket.clone(),
                    max_age: ttl,
                    storage: store,
                    num_replicas: cfg.replicas,
                    description: Some("whisper-serve uploads awaiting a worker".into()),
                    ..Default::default()
                })
                .await
                .map_err(|e| ClusterError::Setup(format!("object store {}: {e}", cfg.audio_bucket)))?,
        };
        let bus = Bus { client, js, cfg, jobs, workers, audio };
        bus.ensure_consumer(&config.model.size).await?;
        Ok(bus)
    }

    fn consumer_config(&self, model: &str) -> consumer::pull::Config {
        consumer::pull::Config {
            durable_name: Some(self.cfg.consumer_name(model)),
            filter_subject: self.cfg.job_subject(model),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(self.cfg.ack_wait_s),
            max_deliver: self.cfg.max_deliver,
            description: Some(format!("whisper-serve workers of {model}")),
            ..Default::default()
        }
    }

    /// The durable consumer the workers of `model` share.
    pub async fn ensure_consumer(&self, model: &str) -> Result<consumer::PullConsumer, ClusterError> {
        let stream = self.js.get_stream(&self.cfg.stream).await.map_err(nats_err)?;
        let want = self.consumer_config(model);
        let name = self.cfg.consumer_name(model);
        match stream.get_consumer::<consumer::pull::Config>(&name).await {
            Ok(c) => {
                let have = &c.cached_info().config;
                if have.ack_wait != want.ack_wait || have.max_deliver != want.max_deliver || have.filter_subject != want.filter_subject {
                    tracing::warn!(consumer = %name, have_ack_wait_s = have.ack_wait.as_secs(), want_ack_wait_s = want.ack_wait.as_secs(),
                        have_max_deliver = have.max_deliver, want_max_deliver = want.max_deliver, have_filter = %have.filter_subject,
                        "the consumer exists with other settings; keeping them (delete it to apply the config)");
                }
                Ok(c)
            }
            Err(_) => stream.create_consumer(want).await.map_err(|e| ClusterError::Setup(format!("consumer {name}: {e}"))),
        }
    }

    pub async fn consumer_pending(&self, model: &str) -> Option<(u64, usize)> {
        let stream = self.js.get_stream(&self.cfg.stream).await.ok()?;
        let c = stream.get_consumer::<consumer::pull::Config>(&self.cfg.consumer_name(model)).await.ok()?;
        let info = c.cached_info();
        Some((info.num_pending, info.num_ack_pending))
    }

    pub async fn dead_letters(&self) -> Option<u64> {
        let mut s = self.js.get_stream(&self.cfg.dead_letter_stream).await.ok()?;
        s.info().await.ok().map(|i| i.state.messages)
    }
}

async fn ensure_stream(js: &jetstream::Context, want: stream::Config) -> Result<(), ClusterError> {
    match js.get_stream(&want.name).await {
        Ok(s) => {
            let have = &s.cached_info().config;
            if have.subjects != want.subjects || have.retention != want.retention || have.storage != want.storage || have.num_replicas != want.num_replicas {
                tracing::warn!(stream = %want.name, have_subjects = ?have.subjects, want_subjects = ?want.subjects,
                    have_retention = ?have.retention, want_retention = ?want.retention, have_storage = ?have.storage,
                    want_storage = ?want.storage, "the stream exists with other settings; keeping them");
            }
            Ok(())
        }
        Err(_) => {
            let name = want.name.clone();
            js.create_stream(want).await.map_err(|e| ClusterError::Setup(format!("stream {name}: {e}")))?;
            tracing::info!(stream = %name, "created stream");
            Ok(())
        }
    }
}

/// Finds or creates a key-value bucket. The bucket's stream is created
/// here with the settings `async-nats` would use: its own bucket creation
/// first asks for the account's limits in a form nats-server 2.9 (Debian
/// 12's) does not answer.
async fn ensure_kv(js: &jetstream::Context, want: kv::Config) -> Result<kv::Store, ClusterError> {
    let stream = stream::Config {
        name: format!("KV_{}", want.bucket),
        description: Some(want.description.clone()),
        subjects: vec![format!("$KV.{}.>", want.bucket)],
        max_messages_per_subject: want.history.max(1),
        max_age: want.max_age,
        storage: want.storage,
        num_replicas: want.num_replicas.max(1),
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        duplicate_window: duplicate_window(want.max_age),
        ..Default::default()
    };
    ensure_stream(js, stream).await?;
    js.get_key_value(&want.bucket).await.map_err(|e| ClusterError::Setup(format!("bucket {}: {e}", want.bucket)))
}

/// JetStream's duplicate window (2 min by default) may not exceed max_age.
fn duplicate_window(max_age: Duration) -> Duration {
    let two_min = Duration::from_secs(120);
    if max_age.is_zero() {
        two_min
    } else {
        max_age.min(two_min)
    }
}

/// This process's name on the bus: host, pid and a random suffix.
pub fn instance_id(role: &str) -> String {
    let host = hostname();
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{role}-{host}-{}-{}", std::process::id(), &suffix[..6])
}

pub fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|h| h.trim().to_string()))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into())
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' })
        .collect()
}
