//! The in-process dispatcher: a bounded job queue in front of the engine's
//! replicas. A full queue is answered at once (503), not with a timeout
//! later; each replica has a worker thread, so inference never runs on the
//! async runtime.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use tokio::sync::oneshot;

use crate::engine::{DecodeOptions, Engine, EngineError, Transcript};
use crate::error::ApiError;

pub struct Job {
    pub audio: Vec<f32>,
    pub options: DecodeOptions,
    pub reply: oneshot::Sender<Result<Transcript, EngineError>>,
    pub enqueued: Instant,
}

pub struct Dispatcher {
    tx: Mutex<Option<Sender<Job>>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    replicas: usize,
    running: Arc<AtomicUsize>,
    engine: Arc<Engine>,
}

impl Dispatcher {
    /// Starts `workers` threads that take jobs from a queue of `max_queue`.
    pub fn start(engine: Arc<Engine>, workers: usize, max_queue: usize) -> Self {
        let (tx, rx) = bounded::<Job>(max_queue.max(1));
        let running = Arc::new(AtomicUsize::new(0));
        let replicas = workers.max(1);
        let workers = (0..replicas)
            .map(|i| {
                let (rx, engine, running) = (rx.clone(), engine.clone(), running.clone());
                std::thread::Builder::new()
                    .name(format!("replica-{i}"))
                    .spawn(move || worker(rx, engine, running))
                    .expect("spawning a worker thread at start-up")
            })
            .collect();
        Self { tx: Mutex::new(Some(tx)), workers: Mutex::new(workers), replicas, running, engine }
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Queues a job; fails at once with 503 when the queue is full.
    pub fn submit(
        &self,
        audio: Vec<f32>,
        options: DecodeOptions,
    ) -> Result<oneshot::Receiver<Result<Transcript, EngineError>>, ApiError> {
        let (reply, rx) = oneshot::channel();
        let job = Job { audio, options, reply, enqueued: Instant::now() };
        let tx = self.sender().ok_or(ApiError::ShuttingDown)?;
        match tx.try_send(job) {
            Ok(()) => Ok(rx),
            Err(TrySendError::Full(_)) => Err(ApiError::QueueFull { retry_after_s: self.retry_after() }),
            Err(TrySendError::Disconnected(_)) => Err(ApiError::ShuttingDown),
        }
    }

    fn sender(&self) -> Option<Sender<Job>> {
        self.tx.lock().ok().and_then(|t| t.clone())
    }

    pub fn queued(&self) -> usize {
        self.sender().map_or(0, |t| t.len())
    }

    pub fn running(&self) -> usize {
        self.running.load(Ordering::Relaxed)
    }

    /// A rough wait until a slot frees: a queue's worth of ~2 s jobs spread
    /// over the replicas, at least 1 s.
    fn retry_after(&self) -> u64 {
        let per_replica = self.queued() / self.replicas;
        (per_replica as u64 * 2).clamp(1, 60)
    }

    /// Stops taking jobs, lets the workers finish what is queued, joins them.
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

fn worker(rx: Receiver<Job>, engine: Arc<Engine>, running: Arc<AtomicUsize>) {
    while let Ok(job) = rx.recv() {
        // The client gave up (timeout or disconnect): skip the work.
        if job.reply.is_closed() {
            continue;
        }
        running.fetch_add(1, Ordering::Relaxed);
        let waited = job.enqueued.elapsed();
        let started = Instant::now();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            engine.transcribe(&job.audio, &job.options)
        }))
        .unwrap_or_else(|_| Err(EngineError::Inference("the engine panicked".into())));
        running.fetch_sub(1, Ordering::Relaxed);
        tracing::debug!(
            audio_s = job.audio.len() as f64 / 16000.0,
            queued_ms = waited.as_millis() as u64,
            took_ms = started.elapsed().as_millis() as u64,
            ok = result.is_ok(),
            "job done"
        );
        let _ = job.reply.send(result);
    }
}
