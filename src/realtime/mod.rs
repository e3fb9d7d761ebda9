//! Live transcription: OpenAI's realtime transcription sessions. A session
//! is a small state machine ([`session`]) that lives with its connection:
//! audio in, server VAD cuts turns ([`turns`]), the open turn is decoded
//! again every `realtime.step_ms` through a [`Stepper`] (an ordinary member
//! of the engine's batches, never a replica of its own), and words are
//! committed by LocalAgreement-2 ([`policy`]). The transport (a WebSocket
//! here, NATS subjects between a gateway and a worker) only carries
//! [`Inbound`] and [`Outbound`] messages.

pub mod input;
pub mod policy;
pub mod protocol;
pub mod session;
pub mod turns;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::engine::{DecodeOptions, Transcript};
pub use protocol::Dialect;

/// What reaches a session from its client.
#[derive(Debug)]
pub enum Inbound {
    /// A text frame: one JSON event.
    Text(String),
    /// A frame over `realtime.max_event_mb` (its size), not read.
    TooLarge(usize),
    /// A binary frame (not an event).
    Binary,
    /// The server is stopping: finish the open turn, then close.
    Finish,
}

/// What a session sends its client.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Outbound {
    /// One JSON server event.
    Event(String),
    /// Close the connection with this code and reason.
    Close(u16, String),
}

/// WebSocket close codes a session ends with.
pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const TOO_BIG: u16 = 1009;
    pub const POLICY: u16 = 1008;
    pub const INTERNAL: u16 = 1011;
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// Where a session's server events go. Bounded: a client that stops
/// reading is cut off (`cut`) once `realtime.max_pending_events` wait,
/// rather than queued for without end.
#[derive(Clone)]
pub struct Sink {
    tx: mpsc::Sender<Outbound>,
    cut: CancellationToken,
}

impl Sink {
    pub fn new(capacity: usize) -> (Sink, mpsc::Receiver<Outbound>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (Sink { tx, cut: CancellationToken::new() }, rx)
    }

    /// Queues a message; false once the client is gone or cut off.
    pub fn send(&self, msg: Outbound) -> bool {
        if self.cut.is_cancelled() {
            return false;
        }
        match self.tx.try_send(msg) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!("realtime client not reading its events; cutting it off");
                crate::telemetry::metrics::realtime_cut_off();
                self.cut.cancel();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    pub fn event(&self, json: String) -> bool {
        self.send(Outbound::Event(json))
    }

    /// Cancelled when the client was cut off (or the transport gave up).
    pub fn cut(&self) -> &CancellationToken {
        &self.cut
    }

    pub fn is_closed(&self) -> bool {
        self.cut.is_cancelled() || self.tx.is_closed()
    }
}

/// Why a decode step failed.
#[derive(Debug, Clone)]
pub struct StepError {
    /// Worth trying again soon (a full queue, a model still loading).
    pub retry: bool,
    pub code: &'static str,
    pub message: String,
}

/// Runs a session's decode steps: the engine pool of this process.
#[async_trait]
pub trait Stepper: Send + Sync + 'static {
    /// Decodes a step's audio with the session's `model` (`whisper-1`:
    /// the default).
    async fn decode(&self, model: &str, audio: Vec<f32>, options: DecodeOptions) -> Result<Transcript, StepError>;

    /// Whether a step started now would find an idle replica and no one
    /// waiting: then a session steps before `step_ms` is up, on capacity
    /// nothing else wants.
    fn has_room(&self) -> bool {
        false
    }
}

/// The bounds and pace of sessions (`realtime` config section).
#[derive(Debug, Clone)]
pub struct Settings {
    pub step: Duration,
    pub step_window_s: f64,
    pub max_lag_s: f64,
    pub idle_timeout: Duration,
}

impl Settings {
    pub fn from_config(c: &crate::config::RealtimeConfig) -> Self {
        Settings {
            step: Duration::from_millis(c.step_ms),
            step_window_s: c.step_window_s,
            max_lag_s: c.max_lag_s,
            idle_timeout: Duration::from_secs(c.idle_timeout_s),
        }
    }
}

/// What a new session starts with.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Open {
    pub session_id: String,
    /// The shape of `session.created` (beta clients send `OpenAI-Beta: realtime=v1`).
    pub beta: bool,
    /// Names `transcription.model` may take.
    pub model_names: Vec<String>,
    /// The server's decoding defaults (`decoding` section).
    pub decoding: DecodeOptions,
}

/// The sessions of this process: their number against
/// `realtime.max_sessions`, and the signal that the server is stopping.
pub struct Registry {
    open: AtomicUsize,
    max: usize,
    stopping: CancellationToken,
    tracker: TaskTracker,
}

/// A place among the open sessions, given back on drop.
pub struct Place {
    registry: Arc<Registry>,
}

impl Drop for Place {
    fn drop(&mut self) {
        self.registry.open.fetch_sub(1, Ordering::Relaxed);
        crate::telemetry::metrics::realtime_sessions(self.registry.open.load(Ordering::Relaxed));
    }
}

impl Registry {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Registry { open: AtomicUsize::new(0), max: max.max(1), stopping: CancellationToken::new(), tracker: TaskTracker::new() })
    }

    /// A place for one more session, or None at `realtime.max_sessions`
    /// (or while stopping).
    pub fn enter(self: &Arc<Self>) -> Option<Place> {
        if self.stopping.is_cancelled() {
            return None;
        }
        let n = self.open.fetch_add(1, Ordering::Relaxed) + 1;
        let place = Place { registry: self.clone() };
        crate::telemetry::metrics::realtime_sessions(n);
        (n <= self.max).then_some(place)
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Cancelled when the server stops: sessions finish their turns.
    pub fn stopping(&self) -> &CancellationToken {
        &self.stopping
    }

    /// Tracks a session's task, so that [`Registry::shutdown`] waits for it.
    pub fn spawn<F>(&self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn(task);
    }

    /// Tells every session to finish its open turn and close, and waits for
    /// them, at most `grace`.
    pub async fn shutdown(&self, grace: Duration) {
        self.stopping.cancel();
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait()).await.is_err() {
            tracing::warn!(open = self.open(), "realtime sessions still open after the grace period");
        }
    }
}
