//! A Wyoming listener (`server.wyoming_port`): Home Assistant's voice
//! pipelines, and anything else that speaks Wyoming to
//! wyoming-faster-whisper, transcribe through this server's dispatcher,
//! with the same models, queue, limits and timeouts as HTTP.
//!
//! Wyoming has no way to carry an API key, so the listener binds loopback
//! by default, and refuses to start on another address when the config
//! requires keys unless `server.wyoming_allow_unauthenticated` is set (see
//! `ServerConfig::check_wyoming_keys`). Connections are capped at
//! `server.max_connections`; more wait to be accepted. See docs/wyoming.md.

pub mod pcm;
pub mod protocol;
mod session;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{AuthConfig, ConfigError, MODEL_SIZES};
use crate::state::AppState;
use protocol::Event;

/// The name of the `asr` program `describe` reports.
pub const PROGRAM: &str = "whisper-serve";

#[derive(Debug, thiserror::Error)]
pub enum WyomingError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen for Wyoming on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// The Wyoming listener of this process, or none (`wyoming_port` unset).
pub struct Wyoming {
    running: Option<Running>,
}

struct Running {
    addr: SocketAddr,
    stop: CancellationToken,
    accept: JoinHandle<()>,
    /// One permit per connection; all of them back = no session left.
    slots: Arc<Semaphore>,
    max: u32,
    grace: Duration,
}

/// Whether the config makes HTTP clients show a key.
pub fn keys_required(auth: &AuthConfig) -> bool {
    auth.keys_in_use()
}

/// Binds `server.wyoming_host:wyoming_port` and serves Wyoming on it with
/// `state`, after checking the keys policy. Prints `wyoming listening on
/// ADDR` (as `listening on ADDR` for HTTP), so scripts and tests can use
/// port 0.
pub async fn start(state: Arc<AppState>) -> Result<Wyoming, WyomingError> {
    let server = &state.config.server;
    let Some(port) = server.wyoming_port else {
        return Ok(Wyoming { running: None });
    };
    server.check_wyoming_keys(keys_required(&state.config.auth))?;
    let host = server.wyoming_host.trim().trim_start_matches('[').trim_end_matches(']').to_string();
    let listener = TcpListener::bind((host.as_str(), port)).await.map_err(|source| WyomingError::Bind { addr: format!("{host}:{port}"), source })?;
    let addr = listener.local_addr().map_err(|source| WyomingError::Bind { addr: format!("{host}:{port}"), source })?;
    println!("wyoming listening on {addr}");
    tracing::info!(address = %addr, "Wyoming listening");
    // acquire_many counts in u32.
    let max = u32::try_from(server.max_connections).unwrap_or(u32::MAX);
    let slots = Arc::new(Semaphore::new(max as usize));
    let stop = CancellationToken::new();
    let grace = Duration::from_secs(server.shutdown_timeout_s);
    let accept = tokio::spawn(accept_loop(listener, state, slots.clone(), stop.clone()));
    Ok(Wyoming { running: Some(Running { addr, stop, accept, slots, max, grace }) })
}

async fn accept_loop(listener: TcpListener, state: Arc<AppState>, slots: Arc<Semaphore>, stop: CancellationToken) {
    loop {
        let permit = tokio::select! {
            _ = stop.cancelled() => return,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: pass, not spin.
                    tracing::warn!(error = %e, "Wyoming accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (state, stop) = (state.clone(), stop.clone());
        tokio::spawn(async move {
            session::Session::new(state, stream, peer).run(stop).await;
            drop(permit);
        });
    }
}

impl Wyoming {
    /// The bound address, when listening.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.running.as_ref().map(|r| r.addr)
    }

    /// `shutdown`, which also stops the listener when it resolves: pass it
    /// on to the HTTP server so both stop at the same signal.
    pub fn stopping_with(&self, shutdown: impl Future<Output = ()> + Send + 'static) -> impl Future<Output = ()> + Send + 'static {
        let stop = self.running.as_ref().map(|r| r.stop.clone());
        async move {
            shutdown.await;
            if let Some(s) = stop {
                s.cancel();
            }
        }
    }

    /// Stops accepting and waits, up to `server.shutdown_timeout_s`, for
    /// the utterances in progress to be answered (idle connections close
    /// at once). Call before draining the dispatcher: they need it.
    pub async fn finish(self) {
        let Some(r) = self.running else { return };
        r.stop.cancel();
        let _ = r.accept.await;
        if tokio::time::timeout(r.grace, r.slots.acquire_many(r.max)).await.is_err() {
            tracing::warn!("Wyoming sessions still open after the shutdown grace; leaving them");
        }
    }
}

/// The `info` event: one `asr` program with the models served here.
pub fn info(state: &AppState) -> Event {
    let models: Vec<Value> = model_names(state).iter().map(|name| model_info(state, name)).collect();
    let program = json!({
        "name": PROGRAM,
        "description": "OpenAI Whisper speech-to-text on CTranslate2",
        "attribution": {"name": "OpenAI", "url": "https://github.com/openai/whisper"},
        "installed": true,
        "version": env!("CARGO_PKG_VERSION"),
        "models": models,
        "supports_transcript_streaming": true,
        // Whisper transcribes what it is given: the end of a command is
        // for the client's VAD to find.
        "requires_external_vad": true,
        "prefers_auto_gain_enabled": true,
        "prefers_noise_reduction_enabled": true,
    });
    Event::new("info", json!({"asr": [program], "tts": [], "handle": [], "intent": [], "wake": [], "mic": [], "snd": []}))
}

/// The default model first, then the others the dispatcher serves.
fn model_names(state: &AppState) -> Vec<String> {
    let mut names = vec![state.config.model.size.clone()];
    for n in state.dispatcher.model_names() {
        if !names.contains(&n) {
            names.push(n);
        }
    }
    names
}

fn model_info(state: &AppState, name: &str) -> Value {
    let languages: Vec<&str> = if english_only(state, name) {
        vec!["en"]
    } else {
        crate::formats::LANGUAGES.iter().map(|(code, _)| *code).collect()
    };
    let from_hub = MODEL_SIZES.contains(&name) || name.starts_with("Systran/") || name.starts_with("faster-whisper-");
    let attribution = if from_hub {
        json!({"name": "Systran", "url": "https://huggingface.co/Systran"})
    } else {
        json!({"name": "OpenAI", "url": "https://github.com/openai/whisper"})
    };
    json!({
        "name": name,
        "description": format!("Whisper {name}"),
        "attribution": attribution,
        "installed": true,
        "version": null,
        "languages": languages,
    })
}

/// English-only models: `*.en` and Distil-Whisper's; for the model loaded
/// here, the engine says.
fn english_only(state: &AppState, name: &str) -> bool {
    if let Some(pool) = state.dispatcher.pool() {
        let engine = pool.engine();
        let folder = engine.model_path().file_name().map(|n| n.to_string_lossy().into_owned());
        if name == state.config.model.size || folder.as_deref() == Some(name) {
            return !engine.is_multilingual();
        }
    }
    let n = name.to_ascii_lowercase();
    n.ends_with(".en") || n.ends_with("-en") || n.contains("distil")
}
