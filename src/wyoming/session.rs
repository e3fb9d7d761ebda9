//! One Wyoming connection: reads events, answers `describe` and `ping`,
//! collects an utterance (`transcribe`? `audio-start`? `audio-chunk`*
//! `audio-stop`) and transcribes it through the dispatcher, as the HTTP
//! routes do. A connection may carry several utterances, one after the
//! other (Home Assistant opens one per utterance, other clients reuse it).
//!
//! The answer streams: `transcript-start`, a `transcript-chunk` per piece
//! of text as windows are decoded, then `transcript` and `transcript-stop`,
//! the order of the protocol's README (and wyoming-vosk's). Clients that
//! know only `transcript` skip the others. Nothing is sent before the text
//! or the outcome is known, so a failure is a lone `error` event.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::pcm::{Format, PcmError, Recording};
use super::protocol::{self, Caps, Event, FrameError};
use crate::dispatch::{Progress, Work};
use crate::error::ApiError;
use crate::state::AppState;

/// How long, and how many bytes, a connection closed on an error is read
/// (and dropped) after the error event, so the client gets to read it.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 16 * 1024 * 1024;

/// Whether the connection goes on after an event.
#[derive(Debug, PartialEq)]
enum Flow {
    Continue,
    Close,
}

/// What the next `audio-stop` will be transcribed with.
struct Utterance {
    /// The model `transcribe` named (None: the default).
    model: Option<String>,
    language: Option<String>,
    recording: Recording,
    /// A `transcribe` or audio arrived: at shutdown, the utterance is
    /// finished before the connection closes.
    open: bool,
}

pub(super) struct Session {
    state: Arc<AppState>,
    peer: SocketAddr,
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    timeout: Duration,
    utterance: Utterance,
}

impl Session {
    pub(super) fn new(state: Arc<AppState>, stream: TcpStream, peer: SocketAddr) -> Session {
        let _ = stream.set_nodelay(true);
        let (r, w) = stream.into_split();
        let timeout = Duration::from_secs(state.config.server.wyoming_timeout_s);
        let utterance = fresh(&state);
        Session { state, peer, reader: BufReader::new(r), writer: w, timeout, utterance }
    }

    /// Serves the connection until the client closes it, breaks the
    /// protocol, goes quiet for `wyoming_timeout_s`, or `shutdown` comes
    /// while no utterance is open.
    pub(super) async fn run(mut self, shutdown: CancellationToken) {
        loop {
            let caps = Caps { payload: usize::try_from(self.utterance.recording.room()).unwrap_or(usize::MAX), ..Caps::default() };
            let read = tokio::select! {
                // The read first: at shutdown, events the client already
                // sent are served rather than dropped with the connection.
                biased;
                r = tokio::time::timeout(self.timeout, protocol::read_event(&mut self.reader, &caps)) => r,
                _ = shutdown.cancelled(), if !self.utterance.open => break,
            };
            let event = match read {
                Err(_) => {
                    tracing::debug!(peer = %self.peer, "Wyoming client idle for {} s; closing", self.timeout.as_secs());
                    break;
                }
                Ok(Ok(None)) => break,
                Ok(Ok(Some(e))) => e,
                Ok(Err(FrameError::TooLarge { field: "payload_length", .. })) => {
                    // The payload cap is what is left of the upload limit.
                    let limit_mb = self.state.config.limits.max_upload_mb;
                    self.fail(&PcmError::TooLarge { limit_mb }.to_string(), "upload_too_large").await;
                    break;
                }
                Ok(Err(FrameError::Io(e))) => {
                    tracing::debug!(peer = %self.peer, error = %e, "Wyoming connection failed");
                    break;
                }
                Ok(Err(e)) => {
                    tracing::info!(peer = %self.peer, error = %e, "malformed Wyoming event; closing the connection");
                    self.fail(&format!("malformed event: {e}"), "bad_event").await;
                    break;
                }
            };
            match self.handle(event).await {
                Flow::Continue if shutdown.is_cancelled() && !self.utterance.open => break,
                Flow::Continue => {}
                Flow::Close => break,
            }
        }
    }

    async fn handle(&mut self, event: Event) -> Flow {
        match event.kind.as_str() {
            "describe" => {
                let info = super::info(&self.state);
                self.send(&info).await
            }
            "ping" => {
                let text = event.data.get("text").cloned().unwrap_or_default();
                self.send(&Event::new("pong", json!({ "text": text }))).await
            }
            "transcribe" => {
                // A new request: whatever audio came before it is dropped.
                self.utterance = fresh(&self.state);
                self.utterance.model = event.str("name").filter(|n| !n.is_empty()).map(str::to_string);
                self.utterance.language = event.str("language").and_then(language);
                self.utterance.open = true;
                Flow::Continue
            }
            "audio-start" => match Format::from_event(&event) {
                Ok(format) => {
                    if !self.utterance.recording.is_empty() {
                        // A second audio-start without a stop: start over.
                        self.utterance.recording = recording(&self.state);
                    }
                    if let Some(f) = format {
                        self.utterance.recording.announce(f);
                    }
                    self.utterance.open = true;
                    Flow::Continue
                }
                Err(e) => self.refuse(e).await,
            },
            "audio-chunk" => {
                self.utterance.open = true;
                let pushed = Format::from_event(&event).and_then(|f| self.utterance.recording.push(f, event.payload.as_deref().unwrap_or_default()));
                match pushed {
                    Ok(()) => Flow::Continue,
                    Err(e) => self.refuse(e).await,
                }
            }
            "audio-stop" => {
                let utterance = std::mem::replace(&mut self.utterance, fresh(&self.state));
                self.transcribe(utterance).await
            }
            other => {
                // The protocol asks servers to drop events they do not know
                // (`select-program`, events of other services).
                tracing::debug!(peer = %self.peer, event = other, "Wyoming event ignored");
                Flow::Continue
            }
        }
    }

    /// Audio that cannot be taken: the client is still sending it, so the
    /// connection closes after the error rather than reading the rest.
    async fn refuse(&mut self, e: PcmError) -> Flow {
        tracing::info!(peer = %self.peer, code = e.code(), error = %e, "Wyoming audio refused");
        self.fail(&e.to_string(), e.code()).await;
        Flow::Close
    }

    async fn transcribe(&mut self, utterance: Utterance) -> Flow {
        let Utterance { model, language, recording, .. } = utterance;
        let audio_seconds = recording.seconds();
        let Some(audio) = recording.finish() else {
            // As wyoming-faster-whisper answers a stream without audio.
            return self.send(&Event::new("transcript", json!({ "text": "" }))).await;
        };
        let started = Instant::now();
        let state = self.state.clone();
        let _slot = match state.admit() {
            Ok(slot) => slot,
            Err(e) => return self.api_error(e).await,
        };
        let mut options = state.config.decoding.clone();
        if language.is_some() {
            options.language = language.clone();
        }
        let request_id = format!("wyoming-{}", uuid::Uuid::now_v7());
        let (progress, mut heard) = mpsc::unbounded_channel();
        let work = Work {
            audio,
            options,
            model,
            request_id: request_id.clone(),
            timeout: Duration::from_secs(state.config.limits.request_timeout_s),
            progress: Some(progress),
        };
        let run = state.dispatcher.transcribe(work);
        tokio::pin!(run);
        let mut stream = Stream { started: false, sent: String::new(), language };
        // Watches for the client leaving, so its transcription is dropped
        // (the pool skips work nobody waits for); stops watching once the
        // client sends anything, which stays buffered for the next event.
        let mut watch = true;
        let result = loop {
            tokio::select! {
                biased;
                Some(p) = heard.recv() => {
                    if self.pass_on(&mut stream, p).await == Flow::Close {
                        return Flow::Close;
                    }
                }
                r = &mut run => break r,
                gone = at_end(&mut self.reader), if watch => {
                    if gone {
                        tracing::info!(peer = %self.peer, request_id = %request_id, "Wyoming client left before its transcript");
                        return Flow::Close;
                    }
                    watch = false;
                }
            }
        };
        // Sent before the outcome, so already here.
        while let Ok(p) = heard.try_recv() {
            if self.pass_on(&mut stream, p).await == Flow::Close {
                return Flow::Close;
            }
        }
        let outcome = match result {
            Ok(o) => o,
            Err(e) => return self.api_error(e.into()).await,
        };
        let text = outcome.transcript.text;
        match text.strip_prefix(stream.sent.as_str()) {
            Some("") => {}
            Some(rest) => {
                let rest = rest.to_string();
                if self.chunk(&mut stream, rest).await == Flow::Close {
                    return Flow::Close;
                }
            }
            None => tracing::warn!(request_id = %request_id, "the streamed text is not the start of the final text"),
        }
        if self.start(&mut stream).await == Flow::Close {
            return Flow::Close;
        }
        let detected = outcome.transcript.language;
        let mut transcript = json!({ "text": text });
        if !detected.is_empty() {
            transcript["language"] = json!(detected);
        }
        tracing::info!(peer = %self.peer, request_id = %request_id, audio_s = audio_seconds, queue_wait_s = outcome.queue_wait_s,
            inference_s = outcome.inference_s, elapsed_s = started.elapsed().as_secs_f64(), "Wyoming transcription");
        if self.send(&Event::new("transcript", transcript)).await == Flow::Close {
            return Flow::Close;
        }
        self.send(&Event::new("transcript-stop", json!({}))).await
    }

    async fn pass_on(&mut self, stream: &mut Stream, p: Progress) -> Flow {
        match p {
            Progress::Text(t) if !t.is_empty() => self.chunk(stream, t).await,
            _ => Flow::Continue,
        }
    }

    /// `transcript-start`, once, before the first chunk or the transcript.
    async fn start(&mut self, stream: &mut Stream) -> Flow {
        if stream.started {
            return Flow::Continue;
        }
        stream.started = true;
        let data = match &stream.language {
            Some(l) => json!({ "language": l }),
            None => json!({}),
        };
        self.send(&Event::new("transcript-start", data)).await
    }

    async fn chunk(&mut self, stream: &mut Stream, text: String) -> Flow {
        if self.start(stream).await == Flow::Close {
            return Flow::Close;
        }
        stream.sent.push_str(&text);
        self.send(&Event::new("transcript-chunk", json!({ "text": text }))).await
    }

    /// A failed transcription: an `error` event; the connection stays open
    /// (the client may try again).
    async fn api_error(&mut self, e: ApiError) -> Flow {
        tracing::info!(peer = %self.peer, code = e.code(), error = %e, "Wyoming transcription failed");
        self.send(&Event::new("error", json!({ "text": e.to_string(), "code": e.code() }))).await
    }

    /// An `error` event before the connection closes; best effort. The
    /// client may still be sending (the rest of its audio), and closing a
    /// socket with unread bytes resets it, which can discard the error
    /// before the client reads it: so the write side is shut first and
    /// what still comes is read and dropped, for a little while.
    async fn fail(&mut self, text: &str, code: &str) {
        if self.send(&Event::new("error", json!({ "text": text, "code": code }))).await == Flow::Close {
            return;
        }
        let _ = self.writer.shutdown().await;
        let deadline = tokio::time::Instant::now() + LINGER;
        let mut drained = 0;
        let mut buf = vec![0u8; 16 * 1024];
        while drained < LINGER_BYTES {
            match tokio::time::timeout_at(deadline, self.reader.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => drained += n,
                _ => break,
            }
        }
    }

    /// Writes an event within the timeout: a client that stops reading
    /// cannot hold the session forever.
    async fn send(&mut self, event: &Event) -> Flow {
        match tokio::time::timeout(self.timeout, protocol::write_event(&mut self.writer, event)).await {
            Ok(Ok(())) => Flow::Continue,
            Ok(Err(e)) => {
                tracing::debug!(peer = %self.peer, error = %e, "Wyoming client gone");
                Flow::Close
            }
            Err(_) => {
                tracing::debug!(peer = %self.peer, "Wyoming client not reading; closing");
                Flow::Close
            }
        }
    }
}

/// The answer being streamed.
struct Stream {
    started: bool,
    /// The text of the chunks sent so far.
    sent: String,
    /// The language asked for, which `transcript-start` reports.
    language: Option<String>,
}

/// Waits for the client's next bytes without taking them: true when the
/// connection ended (or failed) instead.
async fn at_end(reader: &mut BufReader<OwnedReadHalf>) -> bool {
    reader.fill_buf().await.map_or(true, |b| b.is_empty())
}

fn recording(state: &AppState) -> Recording {
    Recording::new(state.config.limits.max_upload_mb, state.config.limits.max_audio_seconds)
}

fn fresh(state: &AppState) -> Utterance {
    Utterance { model: None, language: None, recording: recording(state), open: false }
}

/// A language as Whisper names it: Home Assistant may send a locale
/// (`en-US`, `pt_BR`), Whisper knows `en`, `pt`. Unknown codes are passed
/// on for the engine to refuse, as over HTTP.
fn language(raw: &str) -> Option<String> {
    let l = raw.trim().to_ascii_lowercase();
    if l.is_empty() || l == "auto" {
        return None;
    }
    if crate::formats::LANGUAGES.iter().any(|(code, _)| *code == l) {
        return Some(l);
    }
    let base = l.split(['-', '_']).next().unwrap_or(&l);
    if crate::formats::LANGUAGES.iter().any(|(code, _)| *code == base) {
        return Some(base.to_string());
    }
    // Bounded, as the HTTP form bounds it: the value is echoed in errors.
    Some(l.chars().take(32).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locales_become_whisper_languages() {
        assert_eq!(language("en"), Some("en".into()));
        assert_eq!(language("en-US"), Some("en".into()));
        assert_eq!(language("pt_BR"), Some("pt".into()));
        assert_eq!(language("DE"), Some("de".into()));
        assert_eq!(language("haw"), Some("haw".into()));
        assert_eq!(language(""), None);
        assert_eq!(language("auto"), None);
        assert_eq!(language("klingon"), Some("klingon".into()));
        assert_eq!(language(&"x".repeat(100)).map(|l| l.len()), Some(32));
    }
}
