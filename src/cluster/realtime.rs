//! Realtime sessions across the cluster. A session is pinned to one worker:
//! the gateway asks the workers of the model on `<prefix>.realtime.open.<model>`
//! (a queue group: one answers, the first with room), then the client's
//! events go to `<prefix>.rt.<session>.in` and the session's events come back
//! on `<prefix>.rt.<session>.out` (core NATS: a live session has nothing
//! worth persisting). Both sides send a ping every second; a gateway that
//! hears nothing from its worker for [`WORKER_SILENCE`] tells the client
//! (`error` event `worker_lost`) and closes, and a worker whose gateway went
//! silent ends the session.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::config::{ClusterConfig, Config};
use crate::dispatch::pool::Pool;
use crate::dispatch::{DispatchError, REALTIME_INBOUND};
use crate::realtime::protocol::{self, EventError};
use crate::realtime::{close, Inbound, Open, Outbound, Registry, Sink};

/// How often each side says it is alive.
const PING_EVERY: Duration = Duration::from_secs(1);
/// Silence after which the gateway takes its worker for dead.
pub const WORKER_SILENCE: Duration = Duration::from_secs(3);
/// Silence after which a worker takes the gateway (or its client) for gone.
const GATEWAY_SILENCE: Duration = Duration::from_secs(10);
/// How long the gateway waits for a worker to take a session.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// Gateway to worker.
#[derive(Debug, Serialize, Deserialize)]
enum Up {
    Text(String),
    TooLarge(usize),
    Binary,
    Finish,
    /// The client went away.
    Gone,
    Ping,
}

/// Worker to gateway.
#[derive(Debug, Serialize, Deserialize)]
enum Down {
    Out(Outbound),
    Ping,
}

/// A worker's answer to an open request.
#[derive(Debug, Serialize, Deserialize)]
struct Opened {
    worker: Option<String>,
    /// Why not: `session_limit_reached`, `loading`...
    refused: Option<(String, String)>,
}

fn open_subject(cfg: &ClusterConfig, model: &str) -> String {
    format!("{}.realtime.open.{}", cfg.subject_prefix, ClusterConfig::model_token(model))
}

fn session_subject(cfg: &ClusterConfig, session: &str, way: &str) -> String {
    format!("{}.rt.{}.{way}", cfg.subject_prefix, ClusterConfig::model_token(session))
}

fn encode<T: Serialize>(v: &T) -> bytes::Bytes {
    serde_json::to_vec(v).unwrap_or_default().into()
}

/// Gateway side: pins a new session to a worker and relays its events.
pub async fn open(client: &async_nats::Client, config: &Config, open: Open, sink: Sink) -> Result<mpsc::Sender<Inbound>, DispatchError> {
    let cfg = &config.cluster;
    let down = session_subject(cfg, &open.session_id, "out");
    let up = session_subject(cfg, &open.session_id, "in");
    let unavailable = |reason: String| DispatchError::Unavailable { reason, retry_after_s: 1 };
    // Subscribed before asking, so that no event of the session is missed.
    let mut events = client.subscribe(down).await.map_err(|e| unavailable(format!("NATS: {e}")))?;
    let request = tokio::time::timeout(OPEN_TIMEOUT, client.request(open_subject(cfg, &config.model.size), encode(&open))).await;
    let reply = match request {
        Err(_) => return Err(unavailable("no worker took the realtime session in time".into())),
        Ok(Err(e)) => return Err(unavailable(format!("no worker serves realtime sessions of this model now ({e})"))),
        Ok(Ok(m)) => m,
    };
    let opened: Opened = serde_json::from_slice(&reply.payload).map_err(|e| unavailable(format!("bad answer from a worker: {e}")))?;
    let worker = match (opened.worker, opened.refused) {
        (Some(w), None) => w,
        (_, Some((code, message))) if code == "session_limit_reached" => return Err(DispatchError::TooManyJobs(message)),
        (_, Some((_, message))) => return Err(unavailable(message)),
        (None, None) => return Err(unavailable("bad answer from a worker".into())),
    };
    tracing::info!(session = %open.session_id, worker = %worker, "realtime session pinned to a worker");
    let (tx, mut rx) = mpsc::channel::<Inbound>(REALTIME_INBOUND);
    // Client to worker, with pings.
    let (up_client, up_cut) = (client.clone(), sink.cut().clone());
    tokio::spawn(async move {
        let mut ping = tokio::time::interval(PING_EVERY);
        loop {
            let msg = tokio::select! {
                m = rx.recv() => match m {
                    None => Up::Gone,
                    Some(Inbound::Text(t)) => Up::Text(t),
                    Some(Inbound::TooLarge(n)) => Up::TooLarge(n),
                    Some(Inbound::Binary) => Up::Binary,
                    Some(Inbound::Finish) => Up::Finish,
                },
                _ = ping.tick() => Up::Ping,
                _ = up_cut.cancelled() => Up::Gone,
            };
            let gone = matches!(msg, Up::Gone);
            if up_client.publish(up.clone(), encode(&msg)).await.is_err() || gone {
                break;
            }
        }
    });
    // Worker to client; silence means the worker is gone.
    tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                n = tokio::time::timeout(WORKER_SILENCE, events.next()) => n,
                _ = sink.cut().cancelled() => return,
            };
            let msg = match next {
                Ok(Some(m)) => m,
                Ok(None) | Err(_) => {
                    tracing::warn!(worker = %worker, "realtime session's worker went silent");
                    sink.event(protocol::error_event(&EventError::server("worker_lost",
                        "The worker running this session stopped answering; the open turn is lost. Connect again to start a new session.")));
                    sink.send(Outbound::Close(close::INTERNAL, "worker lost".into()));
                    return;
                }
            };
            match serde_json::from_slice::<Down>(&msg.payload) {
                Ok(Down::Ping) => {}
                Ok(Down::Out(o)) => {
                    let last = matches!(o, Outbound::Close(..));
                    if !sink.send(o) || last {
                        return;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "bad realtime message from a worker"),
            }
        }
    });
    Ok(tx)
}

/// Worker side: takes the sessions of its model, up to
/// `realtime.max_sessions`, and runs them on its pool until `registry`
/// stops (SIGTERM: the sessions finish their turns first).
pub async fn serve(client: async_nats::Client, config: Arc<Config>, pool: Arc<Pool>, registry: Arc<Registry>, worker_id: String) {
    let subject = open_subject(&config.cluster, &config.model.size);
    let mut requests = match client.queue_subscribe(subject, "realtime".into()).await {
        Ok(s) => s,
        Err(e) => return tracing::error!(error = %e, "cannot take realtime sessions"),
    };
    let stopping = registry.stopping().clone();
    loop {
        let req = tokio::select! {
            r = requests.next() => match r { Some(r) => r, None => break },
            _ = stopping.cancelled() => break,
        };
        let Some(reply) = req.reply.clone() else { continue };
        let open: Open = match serde_json::from_slice(&req.payload) {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(error = %e, "bad realtime open request");
                continue;
            }
        };
        let Some(place) = registry.enter() else {
            let refused = Opened { worker: None, refused: Some(("session_limit_reached".into(),
                format!("this worker has realtime.max_sessions ({}) sessions open", config.realtime.max_sessions))) };
            let _ = client.publish(reply, encode(&refused)).await;
            continue;
        };
        let inbound = match client.subscribe(session_subject(&config.cluster, &open.session_id, "in")).await {
            Ok(s) => s,
            Err(e) => {
                let refused = Opened { worker: None, refused: Some(("unavailable".into(), format!("NATS: {e}"))) };
                let _ = client.publish(reply, encode(&refused)).await;
                continue;
            }
        };
        let _ = client.publish(reply, encode(&Opened { worker: Some(worker_id.clone()), refused: None })).await;
        let (client, config, pool, stopping) = (client.clone(), config.clone(), pool.clone(), stopping.clone());
        registry.spawn(async move {
            let _place = place;
            relay(client, config, pool, open, inbound, stopping).await;
        });
    }
}

/// One session on this worker, its events relayed over NATS.
async fn relay(client: async_nats::Client, config: Arc<Config>, pool: Arc<Pool>, open: Open, mut inbound: async_nats::Subscriber, stopping: tokio_util::sync::CancellationToken) {
    let down = session_subject(&config.cluster, &open.session_id, "out");
    let (sink, mut out) = Sink::new(config.realtime.max_pending_events);
    let to_session = crate::dispatch::local::spawn_session(pool, None, &config, open, sink.clone());
    let mut ping = tokio::time::interval(PING_EVERY);
    let mut told_to_finish = false;
    loop {
        tokio::select! {
            m = tokio::time::timeout(GATEWAY_SILENCE, inbound.next()) => {
                let up = match m {
                    Ok(Some(m)) => serde_json::from_slice::<Up>(&m.payload).unwrap_or(Up::Ping),
                    Ok(None) | Err(_) => Up::Gone,
                };
                let inb = match up {
                    Up::Ping => continue,
                    Up::Gone => break,
                    Up::Text(t) => Inbound::Text(t),
                    Up::TooLarge(n) => Inbound::TooLarge(n),
                    Up::Binary => Inbound::Binary,
                    Up::Finish => Inbound::Finish,
                };
                if to_session.send(inb).await.is_err() {
                    break;
                }
            }
            o = out.recv() => {
                let Some(o) = o else { break };
                let last = matches!(o, Outbound::Close(..));
                if client.publish(down.clone(), encode(&Down::Out(o))).await.is_err() || last {
                    break;
                }
            }
            _ = ping.tick() => {
                let _ = client.publish(down.clone(), encode(&Down::Ping)).await;
            }
            _ = stopping.cancelled(), if !told_to_finish => {
                told_to_finish = true;
                let _ = to_session.send(Inbound::Finish).await;
            }
        }
    }
    sink.cut().cancel();
    let _ = client.flush().await;
}
