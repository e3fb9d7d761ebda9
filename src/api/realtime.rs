//! `GET /v1/realtime?intent=transcription`: OpenAI's realtime transcription
//! sessions over a WebSocket. This file is only the transport: it admits the
//! connection (keys, `realtime.max_sessions`), opens the session through the
//! dispatcher (here or on a worker) and pumps frames both ways. What the
//! events mean is `crate::realtime`'s business.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures::{SinkExt, StreamExt};

use crate::error::{ApiError, OpenAiError};
use crate::realtime::protocol::{self, EventError};
use crate::realtime::{close, Inbound, Open, Outbound, Place, Sink};
use crate::security::keys::subprotocols;
use crate::state::{AppState, AudioMeter};

/// The subprotocol a browser offers beside its key; chosen when offered.
const SUBPROTOCOL: &str = "realtime";

/// Opens a realtime transcription session (WebSocket).
#[utoipa::path(get, path = "/v1/realtime", tag = "realtime",
    params(("intent" = String, Query, description = "`transcription`: the only kind of session served")),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol: OpenAI's realtime transcription events (docs/realtime.md)"),
        (status = 400, description = "Not a WebSocket handshake, or not `intent=transcription`", body = crate::api::docs::OpenAiErrorBody),
        (status = 401, description = "A key is required (`Authorization: Bearer`, or the subprotocol `openai-insecure-api-key.<key>`)", body = crate::api::docs::OpenAiErrorBody),
        (status = 404, description = "Realtime sessions are turned off (`realtime.enabled`)", body = crate::api::docs::OpenAiErrorBody),
        (status = 429, description = "Rate limited, or the key's daily audio is used up", body = crate::api::docs::OpenAiErrorBody),
    ))]
pub(super) async fn realtime(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    meter: Option<Extension<AudioMeter>>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, OpenAiError> {
    let cfg = &state.config.realtime;
    if !cfg.enabled {
        return Err(ApiError::Http { status: 404, message: "realtime sessions are turned off here (realtime.enabled)".into() }.into());
    }
    if query.get("intent").map(String::as_str) != Some("transcription") {
        return Err(ApiError::InvalidParam {
            param: "intent",
            message: "only transcription sessions are served: connect to /v1/realtime?intent=transcription".into(),
        }
        .into());
    }
    let ws = ws.map_err(|e| ApiError::InvalidParam { param: "upgrade", message: format!("a WebSocket handshake is expected here: {e}") })?;
    let offered = subprotocols(&headers).any(|p| p == SUBPROTOCOL);
    let ws = if offered { ws.protocols([SUBPROTOCOL]) } else { ws };
    // Big enough to read an over-size event and answer it with an error
    // event (the session goes on); bigger closes with 1009.
    let frame_limit = cfg.max_event_bytes() * 2 + 64 * 1024;
    // The beta SDKs say so in a header; beta browser clients in a subprotocol.
    let beta = headers.get("openai-beta").and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("realtime=v1"))
        || subprotocols(&headers).any(|p| p == "openai-beta.realtime-v1");
    let open = Open {
        session_id: protocol::new_id("sess"),
        beta,
        model_names: super::openai::served_model_names(&state),
        decoding: state.config.decoding.clone(),
    };
    let place = state.realtime.enter();
    let meter = meter.map(|Extension(m)| m);
    let tracker = state.realtime.clone();
    Ok(ws
        .max_message_size(frame_limit)
        .max_frame_size(frame_limit)
        .on_upgrade(move |socket| async move {
            let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
            tracker.spawn(async move {
                let _ = done_rx.await;
            });
            serve(socket, state, open, place, meter).await;
            let _ = done_tx.send(());
        })
        .into_response())
}

async fn serve(socket: WebSocket, state: Arc<AppState>, open: Open, place: Option<Place>, meter: Option<AudioMeter>) {
    let cfg = &state.config.realtime;
    let Some(_place) = place else {
        let e = EventError::server("session_limit_reached", format!(
            "This server has realtime.max_sessions ({}) sessions open; try again later.", cfg.max_sessions));
        return refuse(socket, &e, close::TRY_AGAIN_LATER).await;
    };
    let session_id = open.session_id.clone();
    let (sink, mut out) = Sink::new(cfg.max_pending_events);
    let to_session = match state.dispatcher.open_realtime(open, sink.clone()).await {
        Ok(tx) => tx,
        Err(e) => {
            let (code, close_code) = match &e {
                crate::dispatch::DispatchError::TooManyJobs(_) => ("session_limit_reached", close::TRY_AGAIN_LATER),
                crate::dispatch::DispatchError::Loading => ("loading", close::TRY_AGAIN_LATER),
                _ => ("unavailable", close::TRY_AGAIN_LATER),
            };
            return refuse(socket, &EventError::server(code, e.to_string()), close_code).await;
        }
    };
    tracing::info!(session = %session_id, "realtime session opened");
    let (mut tx, mut rx) = socket.split();
    let max_event = cfg.max_event_bytes();
    let stopping = state.realtime.stopping().clone();
    let reader = async {
        let mut told = false;
        loop {
            let frame = tokio::select! {
                f = rx.next() => f,
                _ = stopping.cancelled(), if !told => {
                    told = true;
                    if to_session.send(Inbound::Finish).await.is_err() {
                        return ReadEnd::SessionEnded;
                    }
                    continue;
                }
            };
            let inbound = match frame {
                None => return ReadEnd::ClientGone,
                Some(Err(e)) => {
                    // Over the frame limit, or a broken connection.
                    tracing::debug!(error = %e, "realtime connection read failed");
                    let too_big = e.to_string().contains("too long") || e.to_string().contains("Space limit");
                    return if too_big { ReadEnd::TooBig } else { ReadEnd::ClientGone };
                }
                Some(Ok(Message::Text(t))) if t.len() > max_event => Inbound::TooLarge(t.len()),
                Some(Ok(Message::Text(t))) => Inbound::Text(t.as_str().to_owned()),
                Some(Ok(Message::Binary(_))) => Inbound::Binary,
                Some(Ok(Message::Close(_))) => {
                    // Reading on sends the reply tungstenite queued (the
                    // client is told its close was heard: 1000, not 1006).
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), rx.next()).await;
                    return ReadEnd::ClientGone;
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            };
            if to_session.send(inbound).await.is_err() {
                return ReadEnd::SessionEnded;
            }
        }
    };
    let writer = async {
        while let Some(o) = out.recv().await {
            match o {
                Outbound::Event(text) => {
                    let spent = meter.as_ref().is_some_and(|m| charge(m, &text));
                    if tx.send(Message::Text(text.into())).await.is_err() {
                        return;
                    }
                    if spent {
                        let e = EventError::invalid("quota_exceeded", None, "This key's daily audio quota is used up; the session is closed.");
                        let _ = tx.send(Message::Text(protocol::error_event(&e).into())).await;
                        let _ = tx.send(close_frame(close::POLICY, "quota exceeded")).await;
                        return;
                    }
                }
                Outbound::Close(code, reason) => {
                    let _ = tx.send(close_frame(code, &reason)).await;
                    return;
                }
            }
        }
        // The session ended without a word: a normal close.
        let _ = tx.send(close_frame(close::NORMAL, "")).await;
    };
    tokio::pin!(writer);
    // Whether our close frame went out (the session ended it).
    let mut closed_by_us = false;
    tokio::select! {
        end = reader => {
            match end {
                ReadEnd::TooBig => {
                    // The client's frame was over the limit: say so, then go.
                    sink.send(Outbound::Close(close::TOO_BIG, "event over the size limit".into()));
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), &mut writer).await;
                }
                // The session ended (buffer_overflow, idle timeout, server
                // stopping...): its last events and its close are queued;
                // the writer sends them before the connection goes.
                ReadEnd::SessionEnded if !sink.cut().is_cancelled() => {
                    closed_by_us = tokio::time::timeout(std::time::Duration::from_secs(2), &mut writer).await.is_ok();
                }
                _ => {}
            }
            sink.cut().cancel();
        }
        _ = &mut writer => closed_by_us = true,
        _ = sink.cut().cancelled() => {}
    }
    if closed_by_us {
        // Read (and drop) what the client still sends until its close reply
        // (at most 2 s): dropping the socket with its frames unread resets
        // the connection, and the reset loses the client the last events
        // and the close frame (a fast sender saw neither its
        // `buffer_overflow` nor the 1008).
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
            while let Some(Ok(_)) = rx.next().await {}
        })
        .await;
    }
    tracing::info!(session = %session_id, "realtime session closed");
}

/// Why a session's reading side stopped.
enum ReadEnd {
    /// The client closed, or its connection broke.
    ClientGone,
    /// A frame over the limit (`2 × realtime.max_event_mb` + 64 KB).
    TooBig,
    /// The session ended and takes no more events.
    SessionEnded,
}

/// Counts a completed turn's audio against the key's quota; true once it
/// is used up.
fn charge(meter: &AudioMeter, event: &str) -> bool {
    if !event.contains("\"conversation.item.input_audio_transcription.completed\"") {
        return false;
    }
    let seconds = serde_json::from_str::<serde_json::Value>(event).ok().and_then(|v| v["usage"]["seconds"].as_f64()).unwrap_or(0.0);
    !(meter.0)(seconds)
}

fn close_frame(code: u16, reason: &str) -> Message {
    let reason: String = reason.chars().take(120).collect();
    Message::Close(Some(CloseFrame { code, reason: reason.into() }))
}

/// Tells a client why its session cannot be served, and closes.
async fn refuse(mut socket: WebSocket, e: &EventError, code: u16) {
    let _ = socket.send(Message::Text(protocol::error_event(e).into())).await;
    let _ = socket.send(close_frame(code, e.code)).await;
}
