//! The engine pool: a bounded queue of decoded audio in front of the
//! engine's replicas, and a batcher per replica. Both dispatchers end here:
//! `serve` feeds it from HTTP, a cluster worker from JetStream. A full queue is answered at once
//! (503), not with a timeout later. Inference runs on the batchers' own
//! threads, never on the async runtime.
//!
//! Each batcher keeps up to `max_batch_size` transcriptions in progress and
//! decodes the next 30 s window of each of them together, one encoder and
//! one generator call per step. A long file thus holds one slot for as many
//! steps as it has windows, while short requests join at the next step and
//! leave after theirs: they are never stuck behind it.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TryRecvError, TrySendError};
use tokio::sync::oneshot;

use crate::engine::{pack, step, DecodeOptions, Decoding, Engine, EngineError, Segment, Transcript};
use super::{DispatchError, Progress, ProgressSender};

/// Idle time after which a batcher returns kept memory to the OS. Not
/// shorter: the first window after a release pays the page faults again
/// (~120 ms of encoder for tiny), so sporadic traffic should rarely see one.
pub const IDLE_RELEASE_AFTER: Duration = Duration::from_secs(5);

/// A finished transcription and where its time went.
#[derive(Debug)]
pub struct Done {
    pub transcript: Transcript,
    /// Seconds in the queue before a batcher took it.
    pub queue_wait_s: f64,
    /// Seconds from then until done (its share of batched steps).
    pub inference_s: f64,
    /// GB of memory in use on the replica's GPU (0 on CPU or without NVML).
    pub gpu_memory_gb: f64,
}

pub type Reply = Result<Done, EngineError>;

pub struct Job {
    pub audio: Vec<f32>,
    pub options: DecodeOptions,
    pub reply: oneshot::Sender<Reply>,
    pub enqueued: Instant,
    /// The submitter's span (a request, a cluster job): the parent of this
    /// job's spans on the batcher thread.
    pub span: tracing::Span,
    /// Open while the job is queued; closed when a batcher takes it.
    pub queue_span: tracing::Span,
    /// Its share of the pool's audio; given back when the job is dropped.
    pub held: AudioHeld,
    /// Where its new text goes after each decoded window (`stream=true`).
    pub progress: Option<ProgressSender>,
}

/// Milliseconds of audio a job holds in the pool, given back on drop, so
/// the pool's audio is bounded however a job ends.
pub struct AudioHeld {
    total: Arc<AtomicU64>,
    ms: u64,
}

impl Drop for AudioHeld {
    fn drop(&mut self) {
        self.total.fetch_sub(self.ms, Ordering::Relaxed);
    }
}

/// What bounds the work a pool holds: jobs waiting (`limits.max_queue`),
/// seconds of decoded audio in it (`limits.max_queued_audio_s`), and
/// uploads being decoded at once (`limits.max_concurrent_decodes`).
#[derive(Debug, Clone, Copy)]
pub struct PoolLimits {
    pub max_queue: usize,
    pub max_audio_s: f64,
    pub max_decodes: usize,
}

impl PoolLimits {
    pub fn from_config(c: &crate::config::Config) -> Self {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        PoolLimits {
            max_queue: c.limits.max_queue,
            max_audio_s: c.limits.max_queued_audio_s,
            max_decodes: match c.limits.max_concurrent_decodes {
                0 => cores,
                n => n,
            },
        }
    }
}

/// How batchers group work.
#[derive(Debug, Clone, Copy)]
pub struct BatchSettings {
    pub max_batch_size: usize,
    /// How long an idle batcher waits for company after a first job.
    pub max_wait: Duration,
    /// Short requests share a 30 s window (`batching.pack_short_clips`).
    pub pack: Option<PackSettings>,
}

impl BatchSettings {
    /// The config's batching for the device the engine runs on.
    pub fn from_config(config: &crate::config::Config, cuda: bool) -> Self {
        let (max_batch_size, wait_ms) = config.batch_limits(cuda);
        let b = &config.batching;
        let pack = b.pack_short_clips.then_some(PackSettings {
            max_samples: (b.pack_max_seconds * 16_000.0) as usize,
            gap_frames: (b.pack_gap_ms / 10) as usize,
        });
        Self { max_batch_size, max_wait: Duration::from_millis(wait_ms), pack }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct PackSettings {
    /// Requests up to this many samples are packed.
    pub max_samples: usize,
    /// Silence between packed requests, in mel frames (10 ms).
    pub gap_frames: usize,
}

/// Counters for /metrics.
#[derive(Debug, Default)]
pub struct Stats {
    pub steps: AtomicU64,
    pub windows: AtomicU64,
    pub max_batch: AtomicU64,
    pub jobs_done: AtomicU64,
    pub jobs_failed: AtomicU64,
    pub audio_ms: AtomicU64,
}

pub struct Pool {
    tx: Mutex<Option<Sender<Job>>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    replicas: usize,
    max_batch_size: usize,
    running: Arc<AtomicUsize>,
    /// Transcriptions each replica holds now.
    busy: Arc<Vec<AtomicUsize>>,
    stats: Arc<Stats>,
    engine: Arc<Engine>,
    /// Milliseconds of audio queued or being decoded by the engine.
    audio_ms: Arc<AtomicU64>,
    max_audio_ms: u64,
    decodes: Arc<tokio::sync::Semaphore>,
}

impl Pool {
    /// Starts `replicas` batchers that take jobs from a queue bounded by `limits`.
    pub fn start(engine: Arc<Engine>, replicas: usize, limits: PoolLimits, batching: BatchSettings) -> Self {
        let (tx, rx) = bounded::<Job>(limits.max_queue.max(1));
        let running = Arc::new(AtomicUsize::new(0));
        let stats = Arc::new(Stats::default());
        let replicas = replicas.max(1);
        let busy: Arc<Vec<AtomicUsize>> = Arc::new((0..replicas).map(|_| AtomicUsize::new(0)).collect());
        let workers = (0..replicas)
            .map(|i| {
                let b = Batcher { rx: rx.clone(), engine: engine.clone(), running: running.clone(), busy: busy.clone(), stats: stats.clone(), settings: batching, replica: i };
                std::thread::Builder::new()
                    .name(format!("replica-{i}"))
                    .spawn(move || b.run())
                    .expect("spawning a batcher thread at start-up")
            })
            .collect();
        if engine.is_cuda() {
            crate::gpu::nvml::watch(engine.devices());
        }
        Self {
            tx: Mutex::new(Some(tx)),
            workers: Mutex::new(workers),
            replicas,
            max_batch_size: batching.max_batch_size.max(1),
            running,
            busy,
            stats,
            engine,
            audio_ms: Arc::new(AtomicU64::new(0)),
            max_audio_ms: (limits.max_audio_s.max(0.0) * 1000.0) as u64,
            decodes: Arc::new(tokio::sync::Semaphore::new(limits.max_decodes.max(1))),
        }
    }

    /// Decodes an upload (any supported container) to 16 kHz samples on
    /// the blocking threads, at most `limits.max_concurrent_decodes` at
    /// once: many long compressed uploads arriving together wait here
    /// rather than take every core (and their PCM in memory) at once.
    pub async fn decode(&self, bytes: bytes::Bytes, max_s: f64) -> Result<Vec<f32>, DispatchError> {
        let _slot = self.decodes.acquire().await.map_err(|_| DispatchError::ShuttingDown)?;
        let span = tracing::info_span!("audio_decode", bytes = bytes.len());
        let audio = tokio::task::spawn_blocking(move || span.in_scope(|| crate::audio::decode(&bytes, max_s)))
            .await
            .map_err(|e| DispatchError::Engine(format!("decoder task failed: {e}")))??;
        Ok(audio)
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Transcriptions the replicas work on at once: replicas x batch size.
    pub fn capacity(&self) -> usize {
        self.replicas * self.max_batch_size
    }

    pub fn replicas(&self) -> usize {
        self.replicas
    }

    /// Whether a replica holds nothing now.
    pub fn has_idle_replica(&self) -> bool {
        self.busy.iter().any(|b| b.load(Ordering::Relaxed) == 0)
    }

    /// Transcriptions each replica holds now.
    pub fn busy_by_replica(&self) -> Vec<usize> {
        self.busy.iter().map(|b| b.load(Ordering::Relaxed)).collect()
    }

    /// Most transcriptions one replica decodes together.
    pub fn max_batch_size(&self) -> usize {
        self.max_batch_size
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The numbers `/metrics` shows of this pool.
    pub fn numbers(&self) -> crate::telemetry::metrics::PoolNumbers {
        let s = &self.stats;
        crate::telemetry::metrics::PoolNumbers {
            queued: self.queued(),
            running: self.running(),
            steps: s.steps.load(Ordering::Relaxed),
            windows: s.windows.load(Ordering::Relaxed),
            max_batch: s.max_batch.load(Ordering::Relaxed),
            jobs_done: s.jobs_done.load(Ordering::Relaxed),
            jobs_failed: s.jobs_failed.load(Ordering::Relaxed),
            audio_seconds: s.audio_ms.load(Ordering::Relaxed) as f64 / 1000.0,
        }
    }

    /// Queues a job; fails at once when the queue is full.
    pub fn submit(
        &self,
        audio: Vec<f32>,
        options: DecodeOptions,
    ) -> Result<oneshot::Receiver<Reply>, DispatchError> {
        self.submit_with_progress(audio, options, None)
    }

    /// [`Pool::submit`], reporting to `progress`: the audio's length once
    /// queued, then the text each decoded window adds (a packed request's
    /// all at once, when its window is done).
    pub fn submit_with_progress(
        &self,
        audio: Vec<f32>,
        options: DecodeOptions,
        progress: Option<ProgressSender>,
    ) -> Result<oneshot::Receiver<Reply>, DispatchError> {
        let audio_s = audio.len() as f64 / crate::audio::SAMPLE_RATE as f64;
        // Bounded in audio as well as in count: a queue of long files holds
        // gigabytes of samples. One job is always let into an empty pool.
        let ms = (audio.len() as u64).saturating_mul(1000) / crate::audio::SAMPLE_RATE as u64;
        let before = self.audio_ms.fetch_add(ms, Ordering::Relaxed);
        let held = AudioHeld { total: self.audio_ms.clone(), ms };
        if before > 0 && before.saturating_add(ms) > self.max_audio_ms {
            return Err(DispatchError::QueueFull { retry_after_s: self.retry_after() });
        }
        let (reply, rx) = oneshot::channel();
        let span = tracing::Span::current();
        let queue_span = tracing::info_span!(parent: &span, "queue_wait");
        let told = progress.clone();
        let job = Job { audio, options, reply, enqueued: Instant::now(), span, queue_span, held, progress };
        let tx = self.sender().ok_or(DispatchError::ShuttingDown)?;
        match tx.try_send(job) {
            Ok(()) => {
                if let Some(p) = told {
                    let _ = p.send(Progress::Audio(audio_s));
                }
                Ok(rx)
            }
            Err(TrySendError::Full(_)) => Err(DispatchError::QueueFull { retry_after_s: self.retry_after() }),
            Err(TrySendError::Disconnected(_)) => Err(DispatchError::ShuttingDown),
        }
    }

    fn sender(&self) -> Option<Sender<Job>> {
        self.tx.lock().ok().and_then(|t| t.clone())
    }

    pub fn queued(&self) -> usize {
        self.sender().map_or(0, |t| t.len())
    }

    /// Transcriptions in progress in the batchers.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::Relaxed)
    }

    /// A rough wait until a slot frees: a queue's worth of ~2 s jobs spread
    /// over the replicas, at least 1 s.
    fn retry_after(&self) -> u64 {
        let per_replica = self.queued() / self.replicas;
        (per_replica as u64 * 2).clamp(1, 60)
    }

    /// Stops taking jobs, lets the batchers finish what is queued, joins them.
    pub fn shutdown(&self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        let workers = self.workers.lock().map(|mut w| std::mem::take(&mut *w)).unwrap_or_default();
        for w in workers {
            let _ = w.join();
        }
    }
}

/// Who waits for an active decoding: one request, or the requests packed
/// into its window (each kept whole, in case it must be decoded again alone).
enum Owner {
    One(oneshot::Sender<Reply>),
    Packed(Vec<(Job, pack::Span)>),
}

impl Owner {
    fn is_closed(&self) -> bool {
        match self {
            Owner::One(r) => r.is_closed(),
            Owner::Packed(members) => members.iter().all(|(j, _)| j.reply.is_closed()),
        }
    }
}

struct Active {
    decoding: Decoding,
    owner: Owner,
    audio_s: f64,
    enqueued: Instant,
    started: Instant,
    /// The batcher step this one was last decoded in (fairness).
    last_step: u64,
    /// `inference`: from a batcher taking it to its end; the parent (or a
    /// link) of the steps that decode it.
    span: tracing::Span,
    /// Its audio counts against `limits.max_queued_audio_s` until it ends
    /// (a packed window's members hold theirs in their jobs).
    _held: Option<AudioHeld>,
    /// Reports its new text after each step (one request, `stream=true`).
    progress: Option<Tracker>,
}

/// Tells a request's listener the text each step added to its transcript.
struct Tracker {
    tx: ProgressSender,
    /// Segments read so far.
    seen: usize,
    /// Their texts joined, as `Decoding::finish` joins them (before its trim).
    joined: String,
    /// Bytes of `joined.trim()` sent so far.
    sent: usize,
}

impl Tracker {
    fn new(tx: ProgressSender) -> Self {
        Tracker { tx, seen: 0, joined: String::new(), sent: 0 }
    }

    /// Sends what `segments` (all of the decoding's, so far) add, if anything.
    fn update(&mut self, segments: &[Segment]) {
        if segments.len() <= self.seen {
            return;
        }
        for s in &segments[self.seen..] {
            self.joined.push_str(&s.text);
        }
        self.seen = segments.len();
        if let Some(d) = new_text(&self.joined, &mut self.sent) {
            let _ = self.tx.send(Progress::Text(d.to_string()));
        }
    }
}

/// What the final text of `joined` (segment texts joined, then trimmed, as
/// `Decoding::finish` makes a transcript's `text`) adds past the `sent`
/// bytes already reported; advances `sent`. Segments are only ever
/// appended, so each trimmed text starts with the one before, and the
/// pieces concatenate to the final `text` exactly.
pub(crate) fn new_text<'a>(joined: &'a str, sent: &mut usize) -> Option<&'a str> {
    let text = joined.trim();
    if text.len() <= *sent || !text.is_char_boundary(*sent) {
        return None;
    }
    let piece = &text[*sent..];
    *sent = text.len();
    Some(piece)
}

struct Batcher {
    rx: Receiver<Job>,
    engine: Arc<Engine>,
    running: Arc<AtomicUsize>,
    busy: Arc<Vec<AtomicUsize>>,
    stats: Arc<Stats>,
    settings: BatchSettings,
    /// This batcher's index, the `replica` of its metrics and spans.
    replica: usize,
}

impl Batcher {
    fn run(self) {
        let max = self.settings.max_batch_size.max(1);
        let mut active: Vec<Active> = Vec::new();
        // Short requests taken this round, packed into windows before the step.
        let mut fresh: Vec<Job> = Vec::new();
        let mut open = true;
        let mut step_no = 0u64;
        while open || !active.is_empty() {
            if active.is_empty() {
                match self.idle_recv() {
                    Ok(job) => self.take(job, &mut active, &mut fresh, step_no),
                    Err(_) => break,
                }
                // A moment for company: a batch of several costs little
                // more than one.
                let deadline = Instant::now() + self.settings.max_wait;
                while self.windows(&active, &fresh) < max {
                    match self.rx.recv_deadline(deadline) {
                        Ok(job) => self.take(job, &mut active, &mut fresh, step_no),
                        Err(RecvTimeoutError::Timeout) => break,
                        Err(RecvTimeoutError::Disconnected) => {
                            open = false;
                            break;
                        }
                    }
                }
            } else {
                while open && self.windows(&active, &fresh) < max {
                    match self.rx.try_recv() {
                        Ok(job) => self.take(job, &mut active, &mut fresh, step_no),
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Disconnected) => open = false,
                    }
                }
            }
            self.pack_fresh(&mut fresh, &mut active, step_no);
            if active.is_empty() {
                continue;
            }
            step_no += 1;
            self.step(&mut active, step_no);
        }
    }

    /// A job from the queue: to be packed with others, or decoded alone.
    fn take(&self, job: Job, active: &mut Vec<Active>, fresh: &mut Vec<Job>, step_no: u64) {
        // The client gave up (timeout or disconnect): skip the work.
        if job.reply.is_closed() {
            return;
        }
        let short = self.settings.pack.is_some_and(|p| job.audio.len() <= p.max_samples);
        if short && pack::packable(&self.engine, &job.options) {
            fresh.push(job);
        } else {
            self.admit(job, active, step_no);
        }
    }

    /// Windows the active decodings and the packed fresh jobs take.
    fn windows(&self, active: &[Active], fresh: &[Job]) -> usize {
        let gap = self.settings.pack.map_or(0, |p| p.gap_frames);
        active.len() + plan(fresh.iter().map(|j| (j.audio.len(), &j.options)), gap).len()
    }

    /// Packs this round's short jobs into windows; a job alone in its
    /// window is decoded as usual.
    fn pack_fresh(&self, fresh: &mut Vec<Job>, active: &mut Vec<Active>, step_no: u64) {
        if fresh.is_empty() {
            return;
        }
        let gap = self.settings.pack.map_or(0, |p| p.gap_frames);
        let groups = plan(fresh.iter().map(|j| (j.audio.len(), &j.options)), gap);
        let mut jobs: Vec<Option<Job>> = fresh.drain(..).map(Some).collect();
        for group in groups {
            let members: Vec<Job> = group.iter().filter_map(|&i| jobs[i].take()).collect();
            if members.len() == 1 {
                members.into_iter().for_each(|j| self.admit(j, active, step_no));
                continue;
            }
            let clips: Vec<&[f32]> = members.iter().map(|j| j.audio.as_slice()).collect();
            match pack::decoding(&self.engine, &clips, gap, members[0].options.clone()) {
                Ok((decoding, spans)) => self.admit_packed(decoding, members, spans, active, step_no),
                // Refused together (options the model cannot take): each
                // is refused, or decoded, alone.
                Err(_) => members.into_iter().for_each(|j| self.admit(j, active, step_no)),
            }
        }
    }

    fn admit_packed(&self, decoding: Decoding, mut members: Vec<Job>, spans: Vec<pack::Span>, active: &mut Vec<Active>, step_no: u64) {
        let n = members.len();
        let started = Instant::now();
        let audio_s: f64 = members.iter().map(|j| j.audio.len() as f64 / 16000.0).sum();
        let span = tracing::info_span!(parent: &members[0].span, "inference", audio_s, replica = self.replica, packed = n);
        for j in members.iter_mut() {
            j.queue_span = tracing::Span::none();
            crate::telemetry::traces::link(&span, &j.span);
            crate::telemetry::metrics::job_started(started.duration_since(j.enqueued));
        }
        self.running.fetch_add(n, Ordering::Relaxed);
        self.busy[self.replica].fetch_add(n, Ordering::Relaxed);
        crate::telemetry::metrics::packed_window(n);
        let enqueued = members.iter().map(|j| j.enqueued).min().unwrap_or(started);
        let owner = Owner::Packed(members.into_iter().zip(spans).collect());
        active.push(Active { decoding, owner, audio_s, enqueued, started, last_step: step_no, span, _held: None, progress: None });
    }

    /// Waits for the next job. After IDLE_RELEASE_AFTER with no transcription
    /// running anywhere, the memory kept for reuse (see
    /// `engine::reuse_freed_memory`) goes back to the OS: a burst's peak
    /// does not stay with an idle server.
    fn idle_recv(&self) -> Result<Job, crossbeam_channel::RecvError> {
        match self.rx.recv_timeout(IDLE_RELEASE_AFTER) {
            Ok(job) => return Ok(job),
            Err(RecvTimeoutError::Disconnected) => return Err(crossbeam_channel::RecvError),
            Err(RecvTimeoutError::Timeout) => {}
        }
        if self.running.load(Ordering::Relaxed) == 0 {
            crate::engine::release_freed_memory();
        }
        self.rx.recv()
    }

    fn admit(&self, job: Job, active: &mut Vec<Active>, step_no: u64) {
        let audio_s = job.audio.len() as f64 / 16000.0;
        drop(job.queue_span);
        let span = tracing::info_span!(parent: &job.span, "inference", audio_s, replica = self.replica);
        match Decoding::new(&self.engine, job.audio, job.options) {
            Ok(decoding) => {
                self.running.fetch_add(1, Ordering::Relaxed);
                self.busy[self.replica].fetch_add(1, Ordering::Relaxed);
                let started = Instant::now();
                // Measured as the answer's `queue_wait_s` is.
                crate::telemetry::metrics::job_started(started.duration_since(job.enqueued));
                let progress = job.progress.map(Tracker::new);
                active.push(Active { decoding, owner: Owner::One(job.reply), audio_s, enqueued: job.enqueued, started, last_step: step_no, span, _held: Some(job.held), progress });
            }
            Err(e) => {
                self.stats.jobs_failed.fetch_add(1, Ordering::Relaxed);
                let _in_job = span.enter();
                tracing::warn!(audio_s, error = %e, "transcription refused");
                let _ = job.reply.send(Err(e));
            }
        }
    }

    /// Decodes one window of every active transcription that shares the
    /// generation settings of the one that waited longest.
    fn step(&self, active: &mut Vec<Active>, step_no: u64) {
        // The one that waited longest goes first; among equals, the one
        // closest to done, which keeps short requests short.
        let Some(first) = (0..active.len()).min_by_key(|&i| (active[i].last_step, active[i].decoding.windows_left())) else { return };
        let key = active[first].decoding.gen_key();
        let mut chosen: Vec<usize> = (0..active.len()).filter(|&i| active[i].decoding.gen_key() == key).collect();
        chosen.truncate(self.settings.max_batch_size.max(1));
        // One step serves several transcriptions: its span is a child of the
        // one that waited longest and links to the others.
        let step_span = tracing::info_span!(parent: &active[first].span, "decode_step",
            batch_size = chosen.len(), replica = self.replica, step = step_no);
        for &i in chosen.iter().filter(|&&i| i != first) {
            crate::telemetry::traces::link(&step_span, &active[i].span);
        }
        let step_started = Instant::now();
        let outcomes = step_span.in_scope(|| {
            let mut batch: Vec<&mut Decoding> = Vec::with_capacity(chosen.len());
            for (i, a) in active.iter_mut().enumerate() {
                if chosen.contains(&i) {
                    a.last_step = step_no;
                    batch.push(&mut a.decoding);
                }
            }
            let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| step(&self.engine, &mut batch)));
            caught.unwrap_or_else(|_| batch.iter().map(|_| Err(EngineError::Inference("the engine panicked".into()))).collect())
        });
        crate::telemetry::metrics::batch_step(self.replica, chosen.len(), step_started.elapsed());
        let n = chosen.len() as u64;
        self.stats.steps.fetch_add(1, Ordering::Relaxed);
        self.stats.windows.fetch_add(n, Ordering::Relaxed);
        self.stats.max_batch.fetch_max(n, Ordering::Relaxed);

        // Answer the finished and the failed; keep the rest, in order.
        let mut failed: Vec<(usize, EngineError)> = Vec::new();
        for (&i, outcome) in chosen.iter().zip(outcomes) {
            if let Err(e) = outcome {
                failed.push((i, e));
            }
        }
        let mut kept = Vec::with_capacity(active.len());
        for (i, mut a) in active.drain(..).enumerate() {
            if let Some(pos) = failed.iter().position(|(j, _)| *j == i) {
                let (_, e) = failed.swap_remove(pos);
                match a.owner {
                    Owner::One(reply) => self.done(reply, a.audio_s, a.enqueued, &a.span, Err(e)),
                    // A packed window that failed: each request is tried alone.
                    Owner::Packed(members) => {
                        for (job, _) in members {
                            self.readmit(job, a.started, &mut kept, step_no);
                        }
                    }
                }
            } else if a.owner.is_closed() {
                // Abandoned by its client(s) (timeout or disconnect).
                let n = match &a.owner {
                    Owner::One(_) => 1,
                    Owner::Packed(m) => m.len(),
                };
                self.running.fetch_sub(n, Ordering::Relaxed);
                self.busy[self.replica].fetch_sub(n, Ordering::Relaxed);
            } else {
                // Its listener hears the new text before the answer.
                if let Some(t) = a.progress.as_mut() {
                    t.update(a.decoding.segments());
                }
                if !a.decoding.is_done() {
                    kept.push(a);
                    continue;
                }
                let Active { decoding, owner, audio_s, enqueued, started, span, .. } = a;
                let transcript = decoding.finish();
                match owner {
                    Owner::One(reply) => self.done(reply, audio_s, enqueued, &span, Ok(self.answer(transcript, enqueued, started))),
                    Owner::Packed(members) => self.unpack(&transcript, members, started, &mut kept, step_no),
                }
            }
        }
        *active = kept;
    }

    fn answer(&self, transcript: Transcript, enqueued: Instant, started: Instant) -> Done {
        Done {
            transcript,
            queue_wait_s: started.duration_since(enqueued).as_secs_f64(),
            inference_s: started.elapsed().as_secs_f64(),
            gpu_memory_gb: self.engine.device_of(self.replica).map_or(0.0, crate::gpu::nvml::memory_used_gb),
        }
    }

    /// Gives each packed request its share of the window's transcript; the
    /// ones whose share cannot be trusted are decoded again alone.
    fn unpack(&self, transcript: &Transcript, members: Vec<(Job, pack::Span)>, started: Instant, kept: &mut Vec<Active>, step_no: u64) {
        let spans: Vec<pack::Span> = members.iter().map(|(_, s)| *s).collect();
        tracing::debug!(?spans, segments = ?transcript.segments.iter().map(|s| (s.start, s.end, s.words.iter().map(|w| w.start).collect::<Vec<_>>())).collect::<Vec<_>>(), "packed window decoded");
        for ((job, _), piece) in members.into_iter().zip(pack::split(transcript, &spans, &|text| self.engine.encode_text(text).unwrap_or_default())) {
            match piece {
                pack::Piece::Done(t) => {
                    if let Some(p) = job.progress.as_ref().filter(|_| !t.text.is_empty()) {
                        let _ = p.send(Progress::Text(t.text.clone()));
                    }
                    let audio_s = job.audio.len() as f64 / 16000.0;
                    let span = tracing::info_span!(parent: &job.span, "inference", audio_s, replica = self.replica, packed = true);
                    let done = self.answer(t, job.enqueued, started);
                    self.done(job.reply, audio_s, job.enqueued, &span, Ok(done));
                }
                pack::Piece::Redo => {
                    crate::telemetry::metrics::packed_redo();
                    self.readmit(job, started, kept, step_no);
                }
            }
        }
    }

    /// A packed request decoded again alone; it stays counted as running.
    fn readmit(&self, job: Job, started: Instant, kept: &mut Vec<Active>, step_no: u64) {
        let audio_s = job.audio.len() as f64 / 16000.0;
        let span = tracing::info_span!(parent: &job.span, "inference", audio_s, replica = self.replica, unpacked = true);
        match Decoding::new(&self.engine, job.audio, job.options) {
            Ok(decoding) => {
                let progress = job.progress.map(Tracker::new);
                kept.push(Active { decoding, owner: Owner::One(job.reply), audio_s, enqueued: job.enqueued, started, last_step: step_no, span, _held: Some(job.held), progress });
            }
            Err(e) => self.done(job.reply, audio_s, job.enqueued, &span, Err(e)),
        }
    }

    /// Answers a transcription; its log lines go to its `inference` span.
    fn done(&self, reply: oneshot::Sender<Reply>, audio_s: f64, enqueued: Instant, span: &tracing::Span, result: Reply) {
        let _in_job = span.enter();
        self.running.fetch_sub(1, Ordering::Relaxed);
        self.busy[self.replica].fetch_sub(1, Ordering::Relaxed);
        if let Ok(d) = &result {
            self.stats.jobs_done.fetch_add(1, Ordering::Relaxed);
            self.stats.audio_ms.fetch_add((audio_s * 1000.0) as u64, Ordering::Relaxed);
            crate::telemetry::metrics::job_done(d.inference_s, audio_s);
        } else {
            self.stats.jobs_failed.fetch_add(1, Ordering::Relaxed);
        }
        if let Err(e) = &result {
            tracing::error!(audio_s, error = %e, "transcription failed");
        }
        tracing::debug!(audio_s, took_ms = enqueued.elapsed().as_millis() as u64, ok = result.is_ok(), "job done");
        let _ = reply.send(result);
    }
}

/// Groups short jobs into windows, in arrival order: a job joins the first
/// window whose jobs have the same options and that it still fits in
/// (`pack::fits`), else opens one. Items: (samples, options).
fn plan<'a>(items: impl Iterator<Item = (usize, &'a DecodeOptions)>, gap_frames: usize) -> Vec<Vec<usize>> {
    let mut groups: Vec<(Vec<usize>, Vec<usize>, &DecodeOptions)> = Vec::new();
    for (i, (len, opts)) in items.enumerate() {
        let fit = groups.iter_mut().find(|(_, lens, o)| {
            *o == opts && {
                let mut with = lens.clone();
                with.push(len);
                pack::fits(&with, gap_frames)
            }
        });
        match fit {
            Some((ids, lens, _)) => {
                ids.push(i);
                lens.push(len);
            }
            None => groups.push((vec![i], vec![len], opts)),
        }
    }
    groups.into_iter().map(|(ids, _, _)| ids).collect()
}

#[cfg(test)]
mod plan_tests {
    use super::*;

    #[test]
    fn short_jobs_with_the_same_options_share_windows_in_order() {
        let en = DecodeOptions { language: Some("en".into()), ..DecodeOptions::default() };
        let de = DecodeOptions { language: Some("de".into()), ..DecodeOptions::default() };
        let prompt = DecodeOptions { initial_prompt: Some("Names".into()), ..en.clone() };
        let s = 16_000;
        let items = [(8 * s, &en), (8 * s, &de), (8 * s, &en), (8 * s, &en), (8 * s, &en), (3 * s, &prompt), (2 * s, &de)];
        let groups = plan(items.iter().map(|(n, o)| (*n, *o)), 100);
        // Three 8 s English clips fit one window with two 1 s gaps; the fourth opens another.
        assert_eq!(groups, vec![vec![0, 2, 3], vec![1, 6], vec![4], vec![5]]);
    }
}

#[cfg(test)]
mod progress_tests {
    use super::*;

    /// The pieces `new_text` reports after each step, for segment texts
    /// arriving in `steps`.
    fn pieces(steps: &[&[&str]]) -> (Vec<String>, String) {
        let (mut joined, mut sent, mut out) = (String::new(), 0, Vec::new());
        for step in steps {
            for s in *step {
                joined.push_str(s);
            }
            if let Some(p) = new_text(&joined, &mut sent) {
                out.push(p.to_string());
            }
        }
        (out, joined.trim().to_string())
    }

    #[test]
    fn pieces_concatenate_to_the_final_text() {
        let cases: &[&[&[&str]]] = &[
            &[&[" Hello there."], &[" How are", " you?"], &[" Fine. "]],
            &[&[], &["  Leading space"], &[], &[" and more ", " and "], &["end."]],
            &[&[" Grüße aus Köln,"], &[" 東京 "], &[" ¿qué tal?"]],
            &[&[" Only one window."]],
            &[],
        ];
        for steps in cases {
            let (out, text) = pieces(steps);
            assert_eq!(out.concat(), text, "{steps:?} -> {out:?}");
            assert!(out.iter().all(|p| !p.is_empty()), "{out:?}");
        }
        let (out, _) = pieces(&[&[" Hello there."], &[" How are", " you?"]]);
        assert_eq!(out, vec!["Hello there.".to_string(), " How are you?".to_string()]);
    }

    #[test]
    fn trailing_space_waits_for_the_next_words() {
        let (mut sent, mut joined) = (0, String::from(" one two "));
        assert_eq!(new_text(&joined, &mut sent), Some("one two"));
        assert_eq!(new_text(&joined, &mut sent), None, "nothing new, nothing sent");
        joined.push_str(" three");
        assert_eq!(new_text(&joined, &mut sent), Some("  three"));
    }
}
