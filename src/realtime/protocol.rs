//! OpenAI's realtime transcription events, as the official SDKs send and
//! read them: the client events a session accepts (the GA `session.update`
//! with `session.type: "transcription"` and the beta
//! `transcription_session.update` shapes alike) and the server events it
//! sends. Pure: parsing and building JSON, no I/O.

use serde_json::{json, Map, Value};

/// How input audio arrives.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum InputFormat {
    /// 16-bit little-endian mono PCM at this rate (`pcm16` is 24 kHz).
    Pcm16 { rate: u32 },
    /// G.711 µ-law, 8 kHz.
    Ulaw,
    /// G.711 A-law, 8 kHz.
    Alaw,
}

impl InputFormat {
    pub fn rate(self) -> u32 {
        match self {
            InputFormat::Pcm16 { rate } => rate,
            InputFormat::Ulaw | InputFormat::Alaw => 8000,
        }
    }

    fn ga(self) -> Value {
        match self {
            InputFormat::Pcm16 { rate } => json!({"type": "audio/pcm", "rate": rate}),
            InputFormat::Ulaw => json!({"type": "audio/pcmu"}),
            InputFormat::Alaw => json!({"type": "audio/pcma"}),
        }
    }

    fn beta(self) -> &'static str {
        match self {
            InputFormat::Pcm16 { .. } => "pcm16",
            InputFormat::Ulaw => "g711_ulaw",
            InputFormat::Alaw => "g711_alaw",
        }
    }
}

/// `server_vad` turn detection, with OpenAI's defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServerVad {
    pub threshold: f32,
    pub prefix_padding_ms: u32,
    pub silence_duration_ms: u32,
    pub idle_timeout_ms: Option<u32>,
}

impl Default for ServerVad {
    fn default() -> Self {
        ServerVad { threshold: 0.5, prefix_padding_ms: 300, silence_duration_ms: 500, idle_timeout_ms: None }
    }
}

/// A session's settings, as `session.updated` reports them.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionConfig {
    pub format: InputFormat,
    pub model: String,
    pub language: Option<String>,
    pub prompt: String,
    /// None: the client commits turns itself.
    pub turn_detection: Option<ServerVad>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            format: InputFormat::Pcm16 { rate: 24_000 },
            model: "whisper-1".into(),
            language: None,
            prompt: String::new(),
            turn_detection: Some(ServerVad::default()),
        }
    }
}

/// Which shape the client speaks: the GA `session.*` events, or the beta
/// `transcription_session.*` ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Ga,
    Beta,
}

impl SessionConfig {
    /// The session object of `session.created/updated` (GA) or
    /// `transcription_session.created/updated` (beta).
    pub fn to_json(&self, id: &str, dialect: Dialect) -> Value {
        let transcription = json!({"model": self.model, "language": self.language, "prompt": self.prompt});
        let turn = self.turn_detection.map(|v| {
            json!({"type": "server_vad", "threshold": v.threshold, "prefix_padding_ms": v.prefix_padding_ms,
                   "silence_duration_ms": v.silence_duration_ms, "idle_timeout_ms": v.idle_timeout_ms})
        });
        match dialect {
            Dialect::Ga => json!({
                "type": "transcription", "id": id, "object": "realtime.transcription_session",
                "audio": {"input": {"format": self.format.ga(), "transcription": transcription,
                                     "turn_detection": turn, "noise_reduction": null}},
                "include": null,
            }),
            Dialect::Beta => json!({
                "id": id, "object": "realtime.transcription_session", "modalities": ["text"],
                "input_audio_format": self.format.beta(), "input_audio_transcription": transcription,
                "turn_detection": turn, "input_audio_noise_reduction": null, "include": null,
            }),
        }
    }
}

/// An event a client sent, parsed.
#[derive(Debug, PartialEq)]
pub enum ClientEvent {
    /// `session.update` or `transcription_session.update`, already applied
    /// to the current settings (the result is checked, not yet in force).
    Update { dialect: Dialect, config: SessionConfig, reply: &'static str },
    Append { audio: String },
    Commit,
    Clear,
}

/// An error event's `error` object.
#[derive(Debug, Clone, PartialEq)]
pub struct EventError {
    /// `invalid_request_error` or `server_error`.
    pub kind: &'static str,
    pub code: &'static str,
    pub message: String,
    pub param: Option<String>,
    pub event_id: Option<String>,
}

impl EventError {
    pub fn invalid(code: &'static str, param: Option<&str>, message: impl Into<String>) -> Self {
        EventError { kind: "invalid_request_error", code, message: message.into(), param: param.map(str::to_string), event_id: None }
    }

    pub fn server(code: &'static str, message: impl Into<String>) -> Self {
        EventError { kind: "server_error", code, message: message.into(), param: None, event_id: None }
    }
}

/// The event types a transcription session accepts.
pub const CLIENT_EVENTS: [&str; 5] =
    ["session.update", "transcription_session.update", "input_audio_buffer.append", "input_audio_buffer.commit", "input_audio_buffer.clear"];

/// Reads one client event. `current` is the session's settings, which an
/// update is laid over; `names` the model names served.
pub fn parse(text: &str, current: &SessionConfig, names: &[String]) -> Result<(ClientEvent, Option<String>), EventError> {
    let v: Value = serde_json::from_str(text)
        .map_err(|e| EventError::invalid("invalid_json", None, format!("The event is not valid JSON: {e}")))?;
    let Value::Object(obj) = v else {
        return Err(EventError::invalid("invalid_json", None, "The event must be a JSON object."));
    };
    let event_id = obj.get("event_id").and_then(Value::as_str).map(|s| s.chars().take(64).collect::<String>());
    let with_id = |mut e: EventError| {
        e.event_id = event_id.clone();
        e
    };
    let kind = match obj.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(_) => return Err(with_id(EventError::invalid("invalid_type", Some("type"), "`type` must be a string."))),
        None => return Err(with_id(EventError::invalid("missing_required_parameter", Some("type"), "Missing required parameter: 'type'."))),
    };
    let event = match kind {
        "session.update" | "transcription_session.update" => {
            let session = obj.get("session").and_then(Value::as_object).ok_or_else(|| {
                with_id(EventError::invalid("missing_required_parameter", Some("session"), "Missing required parameter: 'session'."))
            })?;
            let dialect = if kind == "transcription_session.update" || looks_beta(session) { Dialect::Beta } else { Dialect::Ga };
            let config = apply_update(session, current, names).map_err(with_id)?;
            let reply = if kind == "session.update" { "session.updated" } else { "transcription_session.updated" };
            ClientEvent::Update { dialect, config, reply }
        }
        "input_audio_buffer.append" => match obj.get("audio") {
            Some(Value::String(a)) => ClientEvent::Append { audio: a.clone() },
            _ => return Err(with_id(EventError::invalid("missing_required_parameter", Some("audio"), "Missing required parameter: 'audio' (base64-encoded audio bytes)."))),
        },
        "input_audio_buffer.commit" => ClientEvent::Commit,
        "input_audio_buffer.clear" => ClientEvent::Clear,
        other => {
            let shown: String = other.chars().take(64).collect();
            return Err(with_id(EventError::invalid(
                "invalid_value",
                Some("type"),
                format!("Invalid value: '{shown}'. A transcription session accepts: {}.", CLIENT_EVENTS.join(", ")),
            )));
        }
    };
    Ok((event, event_id))
}

fn looks_beta(session: &Map<String, Value>) -> bool {
    session.contains_key("input_audio_format") || session.contains_key("input_audio_transcription")
}

fn bad(param: &str, message: impl Into<String>) -> EventError {
    EventError::invalid("invalid_value", Some(param), message)
}

/// Lays a `session` object (either shape) over `current`.
fn apply_update(s: &Map<String, Value>, current: &SessionConfig, names: &[String]) -> Result<SessionConfig, EventError> {
    let mut c = current.clone();
    if let Some(t) = s.get("type") {
        if t.as_str() != Some("transcription") {
            return Err(bad("session.type", "Only transcription sessions are served here: `session.type` must be \"transcription\" (connect with ?intent=transcription)."));
        }
    }
    // GA: session.audio.input.{format, transcription, turn_detection}.
    let input = s.get("audio").and_then(|a| a.get("input")).and_then(Value::as_object);
    if let Some(input) = input {
        if let Some(f) = input.get("format") {
            c.format = ga_format(f)?;
        }
        if let Some(t) = input.get("transcription") {
            transcription(t, &mut c, names, "session.audio.input.transcription")?;
        }
        if let Some(t) = input.get("turn_detection") {
            c.turn_detection = turn_detection(t, "session.audio.input.turn_detection")?;
        }
    }
    // Beta: input_audio_format, input_audio_transcription, turn_detection.
    if let Some(f) = s.get("input_audio_format") {
        c.format = match f.as_str() {
            Some("pcm16") => InputFormat::Pcm16 { rate: 24_000 },
            Some("g711_ulaw") => InputFormat::Ulaw,
            Some("g711_alaw") => InputFormat::Alaw,
            _ => return Err(bad("session.input_audio_format", format!("Invalid value: {f}. Supported values are: 'pcm16', 'g711_ulaw', 'g711_alaw'."))),
        };
    }
    if let Some(t) = s.get("input_audio_transcription") {
        transcription(t, &mut c, names, "session.input_audio_transcription")?;
    }
    if let Some(t) = s.get("turn_detection") {
        c.turn_detection = turn_detection(t, "session.turn_detection")?;
    }
    Ok(c)
}

fn ga_format(f: &Value) -> Result<InputFormat, EventError> {
    let param = "session.audio.input.format.type";
    match f.get("type").and_then(Value::as_str) {
        Some("audio/pcm") => {
            let rate = match f.get("rate") {
                None | Some(Value::Null) => 24_000,
                Some(r) => match r.as_u64() {
                    Some(r @ 8_000..=48_000) => r as u32,
                    _ => return Err(bad("session.audio.input.format.rate", format!("Invalid value: {r}. A rate in Hz from 8000 to 48000 (OpenAI's is 24000)."))),
                },
            };
            Ok(InputFormat::Pcm16 { rate })
        }
        Some("audio/pcmu") => Ok(InputFormat::Ulaw),
        Some("audio/pcma") => Ok(InputFormat::Alaw),
        _ => Err(bad(param, format!("Invalid value: {}. Supported values are: 'audio/pcm', 'audio/pcmu', 'audio/pcma'.", f.get("type").unwrap_or(&Value::Null)))),
    }
}

fn transcription(t: &Value, c: &mut SessionConfig, names: &[String], at: &str) -> Result<(), EventError> {
    if t.is_null() {
        return Ok(());
    }
    let Some(t) = t.as_object() else {
        return Err(bad(at, "Expected an object with `model`, `language`, `prompt`."));
    };
    if let Some(m) = t.get("model").filter(|m| !m.is_null()) {
        let m = m.as_str().unwrap_or_default();
        if !names.iter().any(|n| n == m) {
            let shown: String = m.chars().take(64).collect();
            return Err(EventError::invalid("invalid_value", Some(&format!("{at}.model")),
                format!("The model '{shown}' is not served here; served: {}.", names.join(", "))));
        }
        c.model = m.to_string();
    }
    match t.get("language") {
        None => {}
        Some(Value::Null) => c.language = None,
        Some(Value::String(l)) if l.trim().is_empty() => c.language = None,
        Some(Value::String(l)) if l.len() <= 32 => c.language = Some(l.trim().to_ascii_lowercase()),
        Some(_) => return Err(bad(&format!("{at}.language"), "Expected a language code such as \"en\", or null.")),
    }
    match t.get("prompt") {
        None | Some(Value::Null) => {}
        Some(Value::String(p)) if p.len() <= 4096 => c.prompt = p.clone(),
        Some(_) => return Err(bad(&format!("{at}.prompt"), "Expected a string of at most 4096 bytes.")),
    }
    Ok(())
}

fn turn_detection(t: &Value, at: &str) -> Result<Option<ServerVad>, EventError> {
    if t.is_null() {
        return Ok(None);
    }
    let Some(o) = t.as_object() else {
        return Err(bad(at, "Expected a turn detection object or null."));
    };
    match o.get("type").and_then(Value::as_str) {
        Some("server_vad") | None => {}
        Some("semantic_vad") => return Err(bad(&format!("{at}.type"), "semantic_vad is not served; use server_vad, or null to commit turns yourself.")),
        Some(other) => {
            let shown: String = other.chars().take(64).collect();
            return Err(bad(&format!("{at}.type"), format!("Invalid value: '{shown}'. Supported values are: 'server_vad' (or null).")));
        }
    }
    let d = ServerVad::default();
    let num = |k: &str, lo: f64, hi: f64| -> Result<Option<f64>, EventError> {
        match o.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => match v.as_f64() {
                Some(x) if (lo..=hi).contains(&x) => Ok(Some(x)),
                _ => Err(bad(&format!("{at}.{k}"), format!("Invalid value: {v}. Expected a number from {lo} to {hi}."))),
            },
        }
    };
    Ok(Some(ServerVad {
        threshold: num("threshold", 0.0, 1.0)?.map_or(d.threshold, |x| x as f32),
        prefix_padding_ms: num("prefix_padding_ms", 0.0, 5_000.0)?.map_or(d.prefix_padding_ms, |x| x as u32),
        silence_duration_ms: num("silence_duration_ms", 50.0, 10_000.0)?.map_or(d.silence_duration_ms, |x| x as u32),
        idle_timeout_ms: num("idle_timeout_ms", 1_000.0, 600_000.0)?.map(|x| x as u32),
    }))
}

/// A new event id (`event_...`), unique within the process and unguessable.
pub fn new_id(prefix: &str) -> String {
    let u = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}_{}", &u[..24])
}

/// A server event: `fields` with `type` and a fresh `event_id`.
pub fn event(kind: &str, fields: Value) -> String {
    let mut obj = match fields {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    obj.insert("type".into(), Value::String(kind.into()));
    obj.insert("event_id".into(), Value::String(new_id("event")));
    Value::Object(obj).to_string()
}

/// An `error` event.
pub fn error_event(e: &EventError) -> String {
    event("error", json!({"error": {"type": e.kind, "code": e.code, "message": e.message, "param": e.param, "event_id": e.event_id}}))
}

/// Decodes a base64 append into 16-bit samples (or G.711 bytes).
pub fn decode_base64(audio: &str) -> Result<Vec<u8>, EventError> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(audio.trim())
        .map_err(|e| EventError::invalid("invalid_value", Some("audio"), format!("Invalid 'audio': not base64-encoded audio bytes ({e}).")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        vec!["whisper-1".into(), "tiny.en".into()]
    }

    #[test]
    fn ga_and_beta_updates_give_the_same_settings() {
        let ga = r#"{"type":"session.update","session":{"type":"transcription","audio":{"input":{
            "format":{"type":"audio/pcm","rate":24000},
            "transcription":{"model":"tiny.en","language":"en","prompt":"Names"},
            "turn_detection":{"type":"server_vad","threshold":0.4,"silence_duration_ms":700}}}}}"#;
        let beta = r#"{"type":"transcription_session.update","event_id":"e1","session":{
            "input_audio_format":"pcm16",
            "input_audio_transcription":{"model":"tiny.en","language":"en","prompt":"Names"},
            "turn_detection":{"type":"server_vad","threshold":0.4,"silence_duration_ms":700}}}"#;
        let base = SessionConfig::default();
        let (a, _) = parse(ga, &base, &names()).unwrap();
        let (b, id) = parse(beta, &base, &names()).unwrap();
        assert_eq!(id.as_deref(), Some("e1"));
        let (ClientEvent::Update { dialect: da, config: ca, reply: ra }, ClientEvent::Update { dialect: db, config: cb, reply: rb }) = (a, b) else { panic!() };
        assert_eq!((ra, rb), ("session.updated", "transcription_session.updated"));
        assert_eq!((da, db), (Dialect::Ga, Dialect::Beta));
        assert_eq!(ca, cb);
        assert_eq!(ca.turn_detection.unwrap().threshold, 0.4);
        assert_eq!(ca.turn_detection.unwrap().prefix_padding_ms, 300);
        assert_eq!(ca.language.as_deref(), Some("en"));
    }

    #[test]
    fn null_turn_detection_means_manual_commits() {
        let e = r#"{"type":"session.update","session":{"type":"transcription","audio":{"input":{"turn_detection":null}}}}"#;
        let (ClientEvent::Update { config, .. }, _) = parse(e, &SessionConfig::default(), &names()).unwrap() else { panic!() };
        assert_eq!(config.turn_detection, None);
    }

    #[test]
    fn bad_events_are_named() {
        let c = SessionConfig::default();
        let err = |t: &str| parse(t, &c, &names()).unwrap_err();
        assert_eq!(err("{not json").code, "invalid_json");
        assert_eq!(err(r#"{"type":"response.create","event_id":"x"}"#).param.as_deref(), Some("type"));
        assert_eq!(err(r#"{"type":"response.create","event_id":"x"}"#).event_id.as_deref(), Some("x"));
        assert_eq!(err(r#"{"type":"input_audio_buffer.append"}"#).code, "missing_required_parameter");
        let wrong_format = r#"{"type":"session.update","session":{"type":"transcription","audio":{"input":{"format":{"type":"audio/opus"}}}}}"#;
        assert_eq!(err(wrong_format).param.as_deref(), Some("session.audio.input.format.type"));
        let wrong_model = r#"{"type":"transcription_session.update","session":{"input_audio_transcription":{"model":"gpt-4o-transcribe"}}}"#;
        assert_eq!(err(wrong_model).param.as_deref(), Some("session.input_audio_transcription.model"));
        assert_eq!(err(r#"{"type":"session.update","session":{"type":"realtime"}}"#).param.as_deref(), Some("session.type"));
        assert!(decode_base64("@@@").is_err());
        assert_eq!(decode_base64("AAEC").unwrap(), vec![0, 1, 2]);
    }

    #[test]
    fn events_carry_type_and_id() {
        let v: Value = serde_json::from_str(&event("input_audio_buffer.cleared", json!({}))).unwrap();
        assert_eq!(v["type"], "input_audio_buffer.cleared");
        assert!(v["event_id"].as_str().unwrap().starts_with("event_"));
        let c = SessionConfig::default();
        assert_eq!(c.to_json("sess_1", Dialect::Ga)["audio"]["input"]["format"]["rate"], 24000);
        assert_eq!(c.to_json("sess_1", Dialect::Beta)["input_audio_format"], "pcm16");
    }
}
