//! One realtime transcription session: client events in, server events out.
//! The open turn is decoded again every `step` while speech goes on (back
//! to back while the engine has room); words two consecutive hypotheses
//! agree on, once heard a `step` past, are sent as deltas (never taken
//! back); at the turn's end the last hypothesis's other words are flushed
//! (or the turn is decoded once more, if no hypothesis heard all of it),
//! then `completed` carries the whole turn. One decode at a time per
//! session: an engine that falls behind makes steps rarer, not queues
//! longer.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::input::Input;
use super::policy::{self, Agreement, HypWord};
use super::protocol::{self, ClientEvent, Dialect, EventError, SessionConfig};
use super::turns::{Detector, TurnEvent};
use super::{close, Inbound, Open, Outbound, Settings, Sink, StepError, Stepper};
use crate::engine::{DecodeOptions, Transcript};

const RATE: u64 = 16_000;
/// Past this much audio in the open turn, it is cut at the last completed
/// segment that is committed (whisper_streaming's `buffer_trimming_sec`).
const TRIM_AFTER_S: f64 = 15.0;
/// Past this, words are committed without agreement so the audio can be
/// cut: a window holds 30 s.
const FORCE_AFTER_S: f64 = 27.0;
/// ...all but the words in the last seconds of it.
const FORCE_KEEP_S: f64 = 5.0;
/// Audio after the end of speech a hypothesis must have seen to stand for
/// the whole turn (a word cut at the end of the audio is often not written).
const HEARD_AFTER_S: f64 = 0.25;
/// Turns shorter than this are not decoded before they end.
const MIN_INTERIM_S: f64 = 0.5;
/// New audio a step waits for (a step on less sees hardly anything new).
const MIN_FRESH_S: f64 = 0.2;
/// Characters of committed text given as the prompt.
const PROMPT_CHARS: usize = 200;
/// Audio kept before the current position while no one speaks: the
/// prefix padding and the detector's delay.
const PRE_ROLL_S: f64 = 2.0;
/// How often the session looks at its clock (steps, idle, retries).
const TICK: Duration = Duration::from_millis(50);
/// How long a turn's last decode is retried on a full queue.
const FINAL_RETRY_FOR: Duration = Duration::from_secs(30);
/// The smallest buffer a manual commit takes (OpenAI's rule).
const MIN_COMMIT_MS: u64 = 100;

struct Turn {
    item_id: String,
    /// Audio from `start` (an absolute sample) on; cut from the front as
    /// words are committed.
    audio: Vec<f32>,
    start: u64,
    /// Where the turn's audio began, before any cut (for usage).
    first: u64,
    agreement: Agreement,
    /// Deltas sent so far, joined: `completed` carries it.
    text: String,
    /// The end (absolute sample) of the audio the last decode saw.
    decoded_to: u64,
    /// ...and of the audio the last hypothesis taken into the agreement saw.
    heard_to: u64,
    /// Where its speech ended, once the turn has ended (its audio may end
    /// later, with the silence that ended it).
    speech_end: Option<u64>,
    /// When a last decode of an ended turn began failing.
    failing_since: Option<Instant>,
}

impl Turn {
    fn new(item_id: String, audio: Vec<f32>, start: u64) -> Self {
        Turn { item_id, decoded_to: start, heard_to: start, speech_end: None, audio, start, first: start, agreement: Agreement::default(),
               text: String::new(), failing_since: None }
    }

    fn end(&self) -> u64 {
        self.start + self.audio.len() as u64
    }

    fn seconds(&self) -> f64 {
        self.audio.len() as f64 / RATE as f64
    }

    /// An ended turn whose last hypothesis saw all of its speech, and a
    /// little after it, needs no decode of its own: the hypothesis's words
    /// past the agreed ones are its last (whisper_streaming's `finish`).
    fn heard_to_the_end(&self) -> bool {
        let Some(speech_end) = self.speech_end else { return false };
        let need = (speech_end + (HEARD_AFTER_S * RATE as f64) as u64).min(self.end());
        self.heard_to > self.start && self.heard_to >= need
    }

    /// Cuts the audio before `at_s` (seconds of session audio).
    fn cut(&mut self, at_s: f64) {
        let at = ((at_s * RATE as f64) as u64).clamp(self.start, self.end());
        self.audio.drain(..(at - self.start) as usize);
        self.start = at;
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Interim,
    Final,
}

struct Step {
    item_id: String,
    kind: Kind,
    /// Absolute sample of the decoded audio's first sample, and its end.
    offset: u64,
    end: u64,
    /// How long the decode took, queueing included.
    took: Duration,
    result: Result<Transcript, StepError>,
}

struct Session {
    id: String,
    names: Vec<String>,
    decoding: DecodeOptions,
    settings: Settings,
    stepper: Arc<dyn Stepper>,
    sink: Sink,
    dialect: Dialect,
    config: SessionConfig,
    configured: bool,
    input: Option<Input>,
    detector: Option<Detector>,
    /// Samples received (16 kHz) since the session began.
    position: u64,
    /// The last PRE_ROLL_S of audio while no turn is open, from `pre_start`.
    pre_roll: Vec<f32>,
    pre_start: u64,
    /// Manual mode: audio since the last commit, from `manual_start`.
    manual: Vec<f32>,
    manual_start: u64,
    open: Option<Turn>,
    closing: VecDeque<Turn>,
    previous_item: Option<String>,
    /// The end of the transcript of the turns completed so far (the
    /// context of the next turn's decodes).
    spoken: String,
    in_flight: Option<JoinHandle<Step>>,
    last_step: Instant,
    last_heard: Instant,
    /// Server VAD's idle timeout: when the last turn ended (or the session began).
    quiet_since: Instant,
    idle_fired: bool,
    finishing: bool,
}

/// Runs one session until its client goes, it is told to finish, or it
/// fails; `inbound` is the client's events, `sink` takes the server's.
pub async fn run(open: Open, settings: Settings, stepper: Arc<dyn Stepper>, mut inbound: mpsc::Receiver<Inbound>, sink: Sink) {
    let dialect = if open.beta { Dialect::Beta } else { Dialect::Ga };
    let now = Instant::now();
    let mut s = Session {
        id: open.session_id,
        names: open.model_names,
        decoding: open.decoding,
        settings,
        stepper,
        sink,
        dialect,
        config: SessionConfig::default(),
        configured: false,
        input: None,
        detector: None,
        position: 0,
        pre_roll: Vec::new(),
        pre_start: 0,
        manual: Vec::new(),
        manual_start: 0,
        open: None,
        closing: VecDeque::new(),
        previous_item: None,
        spoken: String::new(),
        in_flight: None,
        last_step: now,
        last_heard: now,
        quiet_since: now,
        idle_fired: false,
        finishing: false,
    };
    let created = if open.beta { "transcription_session.created" } else { "session.created" };
    s.sink.event(protocol::event(created, json!({"session": s.config.to_json(&s.id, dialect)})));
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let end = loop {
        tokio::select! {
            msg = inbound.recv(), if !s.finishing => match msg {
                None => break None,
                Some(m) => {
                    s.last_heard = Instant::now();
                    if let Some(end) = s.on_inbound(m) {
                        break Some(end);
                    }
                }
            },
            step = wait(&mut s.in_flight) => {
                s.in_flight = None;
                match step {
                    Ok(step) => s.on_step(step),
                    Err(e) => tracing::error!(error = %e, "realtime decode task failed"),
                }
            }
            _ = tick.tick() => {
                if let Some(end) = s.on_tick() {
                    break Some(end);
                }
            }
            _ = s.sink.cut().cancelled() => break None,
        }
        if s.finishing && s.open.is_none() && s.closing.is_empty() && s.in_flight.is_none() {
            break Some(Outbound::Close(close::GOING_AWAY, "server shutting down".into()));
        }
        s.schedule();
    };
    if let Some(h) = s.in_flight.take() {
        h.abort();
    }
    if let Some(end) = end {
        s.sink.send(end);
    }
}

async fn wait(h: &mut Option<JoinHandle<Step>>) -> Result<Step, tokio::task::JoinError> {
    match h {
        Some(h) => h.await,
        None => std::future::pending().await,
    }
}

impl Session {
    fn error(&self, e: EventError) {
        self.sink.event(protocol::error_event(&e));
    }

    /// Handles one client message; Some(close) ends the session.
    fn on_inbound(&mut self, m: Inbound) -> Option<Outbound> {
        match m {
            Inbound::Finish => {
                self.finishing = true;
                self.end_open_turn(self.position, self.position, true);
                self.commit_manual();
                None
            }
            Inbound::Binary => {
                self.error(EventError::invalid("invalid_json", None, "Binary frames are not events: send JSON text events (audio goes base64-encoded in input_audio_buffer.append)."));
                None
            }
            Inbound::TooLarge(n) => {
                self.error(EventError::invalid("event_too_large", None, format!("The event is {n} bytes, over the limit (realtime.max_event_mb); send audio in smaller appends.")));
                None
            }
            Inbound::Text(text) => match protocol::parse(&text, &self.config, &self.names) {
                Err(e) => {
                    self.error(e);
                    None
                }
                Ok((event, event_id)) => self.on_event(event, event_id),
            },
        }
    }

    fn on_event(&mut self, event: ClientEvent, event_id: Option<String>) -> Option<Outbound> {
        let with_id = |mut e: EventError| {
            e.event_id = event_id.clone();
            e
        };
        match event {
            ClientEvent::Update { dialect, config, reply } => {
                if self.input.as_ref().is_none_or(|i| i.format() != config.format) {
                    match Input::new(config.format) {
                        Ok(i) => self.input = Some(i),
                        Err(e) => {
                            self.error(with_id(e));
                            return None;
                        }
                    }
                }
                if config.turn_detection != self.config.turn_detection || self.detector.is_none() {
                    // A change of mode ends what the old one had open.
                    self.end_open_turn(self.position, self.position, false);
                    self.commit_manual();
                    self.detector = config.turn_detection.map(Detector::new);
                    self.manual_start = self.position;
                }
                self.config = config;
                self.dialect = dialect;
                self.configured = true;
                self.sink.event(protocol::event(reply, json!({"session": self.config.to_json(&self.id, dialect)})));
                None
            }
            ClientEvent::Append { audio } => {
                let Some(input) = self.input.as_mut().filter(|_| self.configured) else {
                    self.error(with_id(EventError::invalid("session_not_configured", None,
                        "Send session.update (or transcription_session.update) with the audio format before audio.")));
                    return None;
                };
                let bytes = match protocol::decode_base64(&audio) {
                    Ok(b) => b,
                    Err(e) => {
                        self.error(with_id(e));
                        return None;
                    }
                };
                let samples = match input.push(&bytes) {
                    Ok(s) => s,
                    Err(e) => {
                        self.error(with_id(e));
                        return None;
                    }
                };
                self.on_audio(&samples);
                self.check_lag()
            }
            ClientEvent::Commit => {
                self.commit(event_id);
                None
            }
            ClientEvent::Clear => {
                // The open turn's audio is dropped, unanswered (OpenAI
                // creates no item for a cleared buffer).
                self.open = None;
                self.manual.clear();
                self.manual_start = self.position;
                if let Some(d) = self.detector.as_mut() {
                    d.reset_turn();
                }
                self.sink.event(protocol::event("input_audio_buffer.cleared", json!({})));
                None
            }
        }
    }

    fn on_audio(&mut self, samples: &[f32]) {
        let before = self.position;
        self.position += samples.len() as u64;
        if self.detector.is_none() {
            self.manual.extend_from_slice(samples);
            return;
        }
        match self.open.as_mut() {
            Some(t) => t.audio.extend_from_slice(samples),
            None => {
                self.pre_roll.extend_from_slice(samples);
                let keep = (PRE_ROLL_S * RATE as f64) as usize;
                if self.pre_roll.len() > keep {
                    let drop = self.pre_roll.len() - keep;
                    self.pre_roll.drain(..drop);
                    self.pre_start += drop as u64;
                }
                debug_assert_eq!(self.pre_start + self.pre_roll.len() as u64, before + samples.len() as u64);
            }
        }
        let events = self.detector.as_mut().map(|d| d.push(samples)).unwrap_or_default();
        for e in events {
            match e {
                TurnEvent::Started { at } if self.open.is_none() => {
                    let at = at.max(self.pre_start);
                    let audio = self.pre_roll[(at - self.pre_start) as usize..].to_vec();
                    self.pre_roll.clear();
                    self.pre_start = self.position;
                    let item_id = protocol::new_id("item");
                    self.sink.event(protocol::event("input_audio_buffer.speech_started",
                        json!({"audio_start_ms": at / 16, "item_id": item_id})));
                    self.open = Some(Turn::new(item_id, audio, at));
                    self.idle_fired = false;
                }
                TurnEvent::Stopped { at, speech_end } => self.end_open_turn(at, speech_end, true),
                TurnEvent::Started { .. } => {}
            }
        }
    }

    /// Ends the open turn at sample `at` (VAD), or at the manual commit;
    /// its speech ended at `speech_end`.
    fn end_open_turn(&mut self, at: u64, speech_end: u64, stopped_event: bool) {
        let Some(mut t) = self.open.take() else { return };
        let at = at.clamp(t.start, t.end());
        t.speech_end = Some(speech_end.clamp(t.start, at));
        // Audio after the end goes back to the pre-roll.
        let rest = t.audio.split_off((at - t.start) as usize);
        self.pre_roll = rest;
        self.pre_start = at;
        if let Some(d) = self.detector.as_mut() {
            d.reset_turn();
        }
        if stopped_event {
            self.sink.event(protocol::event("input_audio_buffer.speech_stopped", json!({"audio_end_ms": at / 16, "item_id": t.item_id})));
        }
        self.committed(&t.item_id);
        t.failing_since = None;
        self.closing.push_back(t);
        self.quiet_since = Instant::now();
    }

    fn committed(&mut self, item_id: &str) {
        self.sink.event(protocol::event("input_audio_buffer.committed", json!({"previous_item_id": self.previous_item, "item_id": item_id})));
        if self.dialect == Dialect::Beta {
            self.sink.event(protocol::event("conversation.item.created", json!({"previous_item_id": self.previous_item,
                "item": {"id": item_id, "object": "realtime.item", "type": "message", "status": "completed", "role": "user",
                         "content": [{"type": "input_audio", "transcript": null}]}})));
        }
        self.previous_item = Some(item_id.to_string());
    }

    /// Commits manual mode's buffer as a turn to transcribe, if it holds any audio.
    fn commit_manual(&mut self) {
        if self.manual.is_empty() {
            return;
        }
        let audio = std::mem::take(&mut self.manual);
        let start = self.manual_start;
        self.manual_start = self.position;
        let item_id = protocol::new_id("item");
        self.committed(&item_id);
        self.closing.push_back(Turn::new(item_id, audio, start));
    }

    fn commit(&mut self, event_id: Option<String>) {
        if self.detector.is_some() {
            match &self.open {
                Some(_) => self.end_open_turn(self.position, self.position, false),
                None => {
                    let mut e = EventError::invalid("input_audio_buffer_commit_empty", None,
                        "Error committing input audio buffer: no speech since the last turn (server VAD commits turns itself).");
                    e.event_id = event_id;
                    self.error(e);
                }
            }
            return;
        }
        let ms = self.manual.len() as u64 * 1000 / RATE;
        if ms < MIN_COMMIT_MS {
            let mut e = EventError::invalid("input_audio_buffer_commit_empty", None,
                format!("Error committing input audio buffer: buffer too small. Expected at least {MIN_COMMIT_MS}ms of audio, but buffer only has {ms}ms of audio."));
            e.event_id = event_id;
            self.error(e);
            return;
        }
        self.commit_manual();
    }

    /// Seconds of audio received and not yet decoded.
    fn lag_s(&self) -> f64 {
        let open = self.open.as_ref().map_or(0, |t| t.end().saturating_sub(t.decoded_to.max(t.start)));
        let closing: u64 = self.closing.iter().map(|t| t.audio.len() as u64).sum();
        (open + closing + self.manual.len() as u64) as f64 / RATE as f64
    }

    fn check_lag(&mut self) -> Option<Outbound> {
        let lag = self.lag_s();
        if lag <= self.settings.max_lag_s {
            return None;
        }
        crate::telemetry::metrics::realtime_overflow();
        self.error(EventError::invalid("buffer_overflow", None, format!(
            "{lag:.1} s of audio wait to be transcribed, over realtime.max_lag_s ({} s): audio arrives faster than it can be transcribed (send it at real time).",
            self.settings.max_lag_s)));
        Some(Outbound::Close(close::POLICY, "audio backlog over realtime.max_lag_s".into()))
    }

    fn on_tick(&mut self) -> Option<Outbound> {
        if !self.finishing && self.last_heard.elapsed() >= self.settings.idle_timeout {
            self.error(EventError::invalid("idle_timeout", None, format!(
                "No event for {} s (realtime.idle_timeout_s); closing the session.", self.settings.idle_timeout.as_secs())));
            return Some(Outbound::Close(close::NORMAL, "idle timeout".into()));
        }
        if let Some(ms) = self.config.turn_detection.and_then(|v| v.idle_timeout_ms) {
            if self.open.is_none() && !self.idle_fired && self.quiet_since.elapsed() >= Duration::from_millis(ms as u64) {
                self.idle_fired = true;
                let start = self.position.saturating_sub(ms as u64 * 16);
                self.sink.event(protocol::event("input_audio_buffer.timeout_triggered",
                    json!({"audio_start_ms": start / 16, "audio_end_ms": self.position / 16, "item_id": protocol::new_id("item")})));
            }
        }
        None
    }

    /// Starts the next decode, if one is due: an ended turn's last decode
    /// first, else the open turn's next step.
    fn schedule(&mut self) {
        if self.in_flight.is_some() {
            return;
        }
        while self.closing.front().is_some_and(Turn::heard_to_the_end) {
            if let Some(mut t) = self.closing.pop_front() {
                let new = t.agreement.commit_pending();
                self.complete(t, new);
            }
        }
        if let Some(t) = self.closing.front() {
            if t.failing_since.is_some() && self.last_step.elapsed() < Duration::from_millis(200) {
                return;
            }
            let (item, audio, start, prompt) = (t.item_id.clone(), t.audio.clone(), t.start, self.prompt_for(t));
            return self.start(item, Kind::Final, audio, start, prompt);
        }
        if self.finishing {
            return;
        }
        let Some(t) = &self.open else { return };
        let fresh = t.end().saturating_sub(t.decoded_to) as f64 / RATE as f64;
        if t.seconds() < MIN_INTERIM_S || fresh < MIN_FRESH_S {
            return;
        }
        // Due every `step`; sooner while the engine has a replica nothing
        // else wants (latency is about one and a half step periods plus a
        // decode: a step's words count once the next step agrees).
        if self.last_step.elapsed() < self.settings.step && !self.stepper.has_room() {
            return;
        }
        let (item, audio, start, prompt) = (t.item_id.clone(), t.audio.clone(), t.start, self.prompt_for(t));
        self.start(item, Kind::Interim, audio, start, prompt);
    }

    fn prompt_for(&self, t: &Turn) -> Option<String> {
        let cut = policy::prompt(&self.spoken, t.agreement.committed(), t.start as f64 / RATE as f64, PROMPT_CHARS);
        let user = self.config.prompt.trim();
        let p = match (user.is_empty(), cut.is_empty()) {
            (true, true) => return None,
            (false, true) => user.to_string(),
            (true, false) => cut,
            (false, false) => format!("{user} {cut}"),
        };
        Some(p)
    }

    fn start(&mut self, item_id: String, kind: Kind, audio: Vec<f32>, offset: u64, prompt: Option<String>) {
        self.last_step = Instant::now();
        let end = offset + audio.len() as u64;
        let stepper = self.stepper.clone();
        let model = self.config.model.clone();
        let mut opts = self.decoding.clone();
        opts.word_timestamps = true;
        opts.initial_prompt = prompt;
        opts.language = self.config.language.clone().or(opts.language);
        opts.vad_filter = false;
        // A turn is one utterance: decode it as one stretch, no prompt
        // carried between its windows (whisper_streaming does the same).
        opts.condition_on_previous_text = false;
        if kind == Kind::Interim {
            // A step's audio ends mid-word, which often looks "failed" to
            // the fallback rule: sampling again at higher temperatures (up
            // to 5 more decodes) would buy nothing an agreement check and
            // the turn's last decode do not. One decode per step.
            opts.temperatures.truncate(1);
            // And greedy: a step is thrown away unless the next one agrees,
            // so its search buys little, while the decoder is most of a
            // step's cost (the turn's text is decoded again every step).
            // The turn's last decode keeps the configured beam.
            opts.beam_size = 1;
            // A shorter encoder window, if configured and the turn fits
            // with a second to spare (a word cut at the window's end is
            // misheard).
            let w = self.settings.step_window_s;
            if w < 30.0 && audio.len() as f64 / RATE as f64 <= w - 1.0 {
                opts.window_frames = Some((w * 100.0).round() as usize); // 100 mel frames a second
            }
        }
        let span = tracing::info_span!("realtime_step", session = %self.id, item = %item_id, kind = ?kind, audio_s = audio.len() as f64 / RATE as f64);
        self.in_flight = Some(tokio::spawn(tracing::Instrument::instrument(async move {
            let began = Instant::now();
            // No words in silence: a turn the VAD finds no speech in is not decoded.
            let result = if kind == Kind::Final && crate::vad::speech_chunks(&audio, &Default::default()).is_empty() {
                Ok(Transcript { text: String::new(), segments: Vec::new(), language: String::new(), language_probability: 0.0, duration: audio.len() as f64 / RATE as f64 })
            } else {
                stepper.decode(&model, audio, opts).await
            };
            Step { item_id, kind, offset, end, took: began.elapsed(), result }
        }, span)));
    }

    fn on_step(&mut self, step: Step) {
        tracing::debug!(kind = ?step.kind, audio_s = (step.end - step.offset) as f64 / RATE as f64, took_ms = step.took.as_millis() as u64, "realtime step done");
        let offset_s = step.offset as f64 / RATE as f64;
        let words = |t: &Transcript| -> Vec<HypWord> {
            t.segments
                .iter()
                .flat_map(|s| s.words.iter())
                .map(|w| HypWord { text: w.word.clone(), start: w.start + offset_s, end: w.end + offset_s })
                .collect()
        };
        match step.kind {
            Kind::Interim => {
                let limit = self.decoding.compression_ratio_threshold;
                // The turn may have ended while its step ran: the step still
                // counts, and may spare the ended turn a decode of its own.
                let open = self.open.as_ref().is_some_and(|t| t.item_id == step.item_id);
                let t = if open { self.open.as_mut() } else { self.closing.iter_mut().find(|t| t.item_id == step.item_id) };
                let Some(t) = t else { return };
                t.decoded_to = t.decoded_to.max(step.end);
                let transcript = match step.result {
                    Ok(tr) => tr,
                    Err(e) => return tracing::debug!(code = e.code, error = %e.message, "realtime step skipped"),
                };
                // Without fallback a repetition loop can come out of a
                // step, and two steps can agree on it: such a hypothesis is
                // not used.
                if limit.is_some_and(|limit| transcript.segments.iter().any(|s| s.compression_ratio > limit)) {
                    return tracing::debug!("realtime step skipped: its text repeats itself");
                }
                let end_s = t.end() as f64 / RATE as f64;
                let hyp: Vec<HypWord> = words(&transcript).into_iter().filter(|w| open || w.start < end_s).collect();
                let mut new = t.agreement.insert(hyp.clone(), step.end as f64 / RATE as f64 - self.settings.step.as_secs_f64());
                t.heard_to = step.end.min(t.end());
                let audio_s = t.seconds();
                // An ended turn is not cut: it is decoded whole if at all.
                if open && audio_s > FORCE_AFTER_S {
                    let until = end_s - FORCE_KEEP_S;
                    new.extend(t.agreement.force(hyp, until));
                    if let Some(e) = t.agreement.committed_end() {
                        t.cut(e);
                    }
                } else if open && audio_s > TRIM_AFTER_S {
                    let ends: Vec<f64> = transcript.segments.iter().map(|s| s.end + offset_s).collect();
                    if let Some(at) = policy::trim_point(&ends, t.agreement.committed_end()) {
                        t.cut(at);
                    }
                }
                let item = t.item_id.clone();
                let delta = join_delta(&mut t.text, &new);
                self.delta(&item, delta);
            }
            Kind::Final => {
                let Some(pos) = self.closing.iter().position(|t| t.item_id == step.item_id) else { return };
                match step.result {
                    Ok(tr) => {
                        let Some(mut t) = self.closing.remove(pos) else { return };
                        let new = t.agreement.flush(words(&tr));
                        self.complete(t, new);
                    }
                    Err(e) => {
                        let t = &mut self.closing[pos];
                        let since = *t.failing_since.get_or_insert_with(Instant::now);
                        if e.retry && since.elapsed() < FINAL_RETRY_FOR {
                            return;
                        }
                        let Some(t) = self.closing.remove(pos) else { return };
                        tracing::warn!(code = e.code, error = %e.message, "realtime turn failed");
                        self.sink.event(protocol::event("conversation.item.input_audio_transcription.failed", json!({
                            "item_id": t.item_id, "content_index": 0,
                            "error": {"type": "server_error", "code": e.code, "message": e.message, "param": null},
                        })));
                    }
                }
            }
        }
    }

    /// An ended turn's last words, then its `completed`.
    fn complete(&mut self, mut t: Turn, last: Vec<HypWord>) {
        let delta = join_delta(&mut t.text, &last);
        self.delta(&t.item_id, delta);
        remember(&mut self.spoken, &t.text);
        let seconds = (t.end() - t.first) as f64 / RATE as f64;
        crate::telemetry::metrics::realtime_turn(seconds);
        self.sink.event(protocol::event("conversation.item.input_audio_transcription.completed", json!({
            "item_id": t.item_id, "content_index": 0, "transcript": t.text,
            "usage": {"type": "duration", "seconds": (seconds * 1000.0).round() / 1000.0},
        })));
    }

    fn delta(&self, item_id: &str, delta: String) {
        if delta.is_empty() {
            return;
        }
        self.sink.event(protocol::event("conversation.item.input_audio_transcription.delta",
            json!({"item_id": item_id, "content_index": 0, "delta": delta})));
    }
}

/// Appends a completed turn's text to the session's, keeping the end: a
/// prompt takes at most PROMPT_CHARS of it.
fn remember(spoken: &mut String, text: &str) {
    let text = text.trim();
    if text.is_empty() {
        return;
    }
    spoken.push(' ');
    spoken.push_str(text);
    if spoken.len() > 2 * PROMPT_CHARS {
        let mut from = spoken.len() - PROMPT_CHARS;
        while !spoken.is_char_boundary(from) {
            from += 1;
        }
        // From a word's start: the prompt is cut at whole words.
        let from = spoken[from..].find(' ').map_or(spoken.len(), |i| from + i);
        spoken.drain(..from);
    }
}

/// The delta for newly committed words, appended to the turn's text: the
/// turn's first word loses its leading space, so that the deltas joined
/// are exactly the `completed` transcript.
fn join_delta(text: &mut String, words: &[HypWord]) -> String {
    let mut delta: String = words.iter().map(|w| w.text.as_str()).collect();
    if text.is_empty() {
        delta = delta.trim_start().to_string();
    }
    text.push_str(&delta);
    delta
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ended_turn_needs_no_decode_once_a_hypothesis_heard_past_its_speech() {
        let s = |x: f64| (x * RATE as f64) as u64;
        let mut t = Turn::new("item".into(), vec![0.0; s(3.0) as usize], 0);
        t.heard_to = s(3.0);
        assert!(!t.heard_to_the_end(), "an open turn");
        t.speech_end = Some(s(2.0));
        t.heard_to = s(2.1);
        assert!(!t.heard_to_the_end(), "heard too little past the speech");
        t.heard_to = s(2.3);
        assert!(t.heard_to_the_end());
        // A manual commit: the speech may run to the end of the audio.
        t.speech_end = Some(s(3.0));
        assert!(!t.heard_to_the_end());
        t.heard_to = s(3.0);
        assert!(t.heard_to_the_end());
    }

    #[test]
    fn the_session_remembers_the_end_of_what_was_said() {
        let mut spoken = String::new();
        remember(&mut spoken, " And so my fellow Americans.");
        remember(&mut spoken, "   ");
        assert_eq!(spoken, " And so my fellow Americans.");
        for _ in 0..40 {
            remember(&mut spoken, "Ask not what your country can do for you.");
        }
        assert!(spoken.len() <= 2 * PROMPT_CHARS + 50 && spoken.len() >= PROMPT_CHARS, "{}", spoken.len());
        assert!(spoken.starts_with(' ') && spoken.ends_with(" can do for you."), "{spoken}");
        assert_eq!(policy::prompt(&spoken, &[], 0.0, 20), "can do for you.");
    }

    #[test]
    fn deltas_join_to_the_transcript() {
        let w = |t: &str| HypWord { text: t.into(), start: 0.0, end: 0.1 };
        let mut text = String::new();
        assert_eq!(join_delta(&mut text, &[w(" And"), w(" so,")]), "And so,");
        assert_eq!(join_delta(&mut text, &[]), "");
        assert_eq!(join_delta(&mut text, &[w(" my")]), " my");
        assert_eq!(text, "And so, my");
    }
}
