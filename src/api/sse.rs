//! `stream=true` on OpenAI's transcription routes: server-sent events in
//! OpenAI's shape, as the official SDKs read them (`data: {json}` events,
//! no `event:` lines, no `[DONE]`):
//! - `{"type": "transcript.text.delta", "delta": "..."}` as each 30 s
//!   window is decoded;
//! - `{"type": "transcript.text.done", "text": "...", "usage": {"type":
//!   "duration", "seconds": N}}` at the end; the deltas concatenate to
//!   `text` exactly;
//! - `{"type": "error", "error": {"message", "type", "param", "code"}}`
//!   when the transcription fails after the answer started (the SDKs raise
//!   it as an `APIError`); the stream then ends.
//!
//! The answer starts with the first text: whatever fails before it (the
//! upload, the options, a full queue, the engine refusing the options, a
//! timeout) is the usual JSON error with its HTTP status. The route does
//! not know the mode: it hands the dispatcher a progress sender in
//! [`Work`]. A client that goes away drops the stream, and with it the
//! wait for the transcription, which the pool then skips as it does for
//! any caller that left.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderName, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::future::ready;
use futures::StreamExt;
use serde_json::json;
use tokio::sync::mpsc;

use super::Upload;
use crate::dispatch::{Outcome, Progress, Work};
use crate::engine::DecodeOptions;
use crate::error::{ApiError, OpenAiError};
use crate::state::AppState;
use crate::telemetry::access::AccessInfo;

/// What the transcription reports, in order.
enum Item {
    /// Seconds of audio (for the access line and the audio quota).
    Audio(f64),
    Delta(String),
    Done(Outcome),
    Failed(ApiError),
}

/// Transcribes `upload` and answers with its events.
pub(super) async fn respond(
    state: Arc<AppState>,
    upload: Upload,
    options: DecodeOptions,
    model: Option<String>,
    request_id: String,
) -> Result<Response, OpenAiError> {
    let size = upload.bytes.len() as u64;
    let (tx, mut rx) = mpsc::unbounded_channel();
    // The transcription runs as part of the answer's body, never on its
    // own: when the client goes away, the body and the wait are dropped.
    let driver = futures::stream::once(drive(state, upload, options, model, request_id, tx)).filter_map(|()| ready(None));
    let received = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let mut items = futures::stream::select(driver, received).boxed();
    let mut audio_seconds = None;
    let first = loop {
        match items.next().await {
            Some(Item::Audio(s)) => audio_seconds = Some(s),
            Some(Item::Failed(e)) => return Err(e.into()),
            Some(item) => break item,
            None => return Err(ApiError::Internal("the transcription ended without an answer".into()).into()),
        }
    };
    if let Item::Done(o) = &first {
        audio_seconds = Some(o.transcript.duration);
    }
    let events = futures::stream::once(ready(first)).chain(items).filter_map(|item| ready(event(item))).map(Ok::<_, Infallible>);
    let mut resp = Sse::new(events).keep_alive(KeepAlive::default()).into_response();
    // Proxies that buffer (nginx) pass the events on at once.
    resp.headers_mut().insert(HeaderName::from_static("x-accel-buffering"), HeaderValue::from_static("no"));
    // Known once the audio is decoded: the access line and the key's audio
    // quota count it as for any transcription.
    resp.extensions_mut().insert(AccessInfo {
        audio_seconds,
        queue_wait_s: None,
        inference_s: None,
        upload_bytes: Some(size),
        text: None,
    });
    Ok(resp)
}

/// Runs the transcription, sending what it reports to `out`, then its end:
/// what the streamed text lacks of the final text (progress that was late
/// or lost) as one more delta, and the outcome.
async fn drive(state: Arc<AppState>, upload: Upload, options: DecodeOptions, model: Option<String>, request_id: String, out: mpsc::UnboundedSender<Item>) {
    let mut sent = String::new();
    let result = transcribe(&state, upload, options, model, request_id, &out, &mut sent).await;
    let last = match result {
        Ok(outcome) => {
            match rest_of(&outcome.transcript.text, &sent) {
                Some("") => {}
                Some(rest) => {
                    let _ = out.send(Item::Delta(rest.to_string()));
                }
                None => tracing::warn!("the streamed text is not the start of the final text"),
            }
            Item::Done(outcome)
        }
        Err(e) => Item::Failed(e),
    };
    let _ = out.send(last);
}

/// What `text` adds to what was streamed, if it starts with it.
fn rest_of<'a>(text: &'a str, streamed: &str) -> Option<&'a str> {
    text.strip_prefix(streamed)
}

async fn transcribe(
    state: &AppState,
    upload: Upload,
    options: DecodeOptions,
    model: Option<String>,
    request_id: String,
    out: &mpsc::UnboundedSender<Item>,
    sent: &mut String,
) -> Result<Outcome, ApiError> {
    super::check_extension(upload.filename.as_deref(), &state.config.model.supported_formats)?;
    if upload.bytes.is_empty() {
        return Err(ApiError::EmptyFile);
    }
    let _slot = state.admit()?;
    let (progress, mut heard) = mpsc::unbounded_channel();
    let work = Work {
        audio: upload.bytes,
        options,
        model,
        request_id,
        timeout: Duration::from_secs(state.config.limits.request_timeout_s),
        progress: Some(progress),
    };
    let run = state.dispatcher.transcribe(work);
    tokio::pin!(run);
    let mut pass_on = |p: Progress| match p {
        Progress::Audio(s) => {
            let _ = out.send(Item::Audio(s));
        }
        Progress::Text(t) if !t.is_empty() => {
            sent.push_str(&t);
            let _ = out.send(Item::Delta(t));
        }
        Progress::Text(_) => {}
    };
    let result = loop {
        tokio::select! {
            biased;
            Some(p) = heard.recv() => pass_on(p),
            r = &mut run => break r,
        }
    };
    // Sent before the answer, so already here.
    while let Ok(p) = heard.try_recv() {
        pass_on(p);
    }
    Ok(result?)
}

/// The event of an item; None for what is not sent.
fn event(item: Item) -> Option<Event> {
    let data = match item {
        Item::Audio(_) => return None,
        Item::Delta(delta) => json!({"type": "transcript.text.delta", "delta": delta}),
        Item::Done(o) => json!({
            "type": "transcript.text.done",
            "text": o.transcript.text,
            "usage": {"type": "duration", "seconds": usage_seconds(o.transcript.duration)},
        }),
        Item::Failed(e) => {
            tracing::warn!(code = e.code(), error = %e, "transcription failed after its stream started");
            error_body(&e)
        }
    };
    Some(Event::default().data(data.to_string()))
}

/// Seconds of audio as OpenAI's `duration` usage counts them: whole
/// seconds, rounded up.
fn usage_seconds(duration: f64) -> u64 {
    duration.max(0.0).ceil() as u64
}

/// An error event: OpenAI's error body (as `OpenAiError` answers it) with
/// `type: error`.
fn error_body(e: &ApiError) -> serde_json::Value {
    let status = e.status();
    let kind = match status.as_u16() {
        401 => "authentication_error",
        429 => "rate_limit_error",
        _ if status.is_client_error() => "invalid_request_error",
        _ => "server_error",
    };
    json!({"type": "error", "error": {"message": e.to_string(), "type": kind, "param": e.param(), "code": e.code()}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_end_makes_up_what_the_stream_lacks() {
        assert_eq!(rest_of("One two. Three.", ""), Some("One two. Three."));
        assert_eq!(rest_of("One two. Three.", "One two."), Some(" Three."));
        assert_eq!(rest_of("One two. Three.", "One two. Three."), Some(""));
        assert_eq!(rest_of("One two. Three.", "Uno"), None);
    }

    #[test]
    fn usage_counts_whole_seconds() {
        assert_eq!(usage_seconds(0.0), 0);
        assert_eq!(usage_seconds(10.2), 11);
        assert_eq!(usage_seconds(180.0), 180);
    }

    #[test]
    fn errors_keep_openai_shape() {
        let b = error_body(&ApiError::Timeout(5));
        assert_eq!(b["type"], "error");
        assert_eq!(b["error"]["type"], "server_error");
        assert_eq!(b["error"]["code"], "timeout");
        assert!(b["error"]["message"].as_str().unwrap().contains("5 s"));
        assert!(b["error"].get("param").is_some());
        let b = error_body(&ApiError::InvalidParam { param: "language", message: "x".into() });
        assert_eq!((b["error"]["type"].as_str(), b["error"]["param"].as_str()), (Some("invalid_request_error"), Some("language")));
    }
}
