//! Wyoming's event framing, as the `wyoming` Python package (1.x) reads
//! and writes it:
//!
//! ```text
//! {"type": "audio-chunk", "data": {...}?, "data_length": N?, "payload_length": M?, "version": "..."}\n
//! <N bytes: a JSON object, merged over the header's `data`>
//! <M bytes: the payload (PCM for audio chunks)>
//! ```
//!
//! Everything here is pure framing with bounds: a header line, the extra
//! data and the payload each have a cap, checked before the bytes are
//! read, so a client cannot make the server buffer more than the caps by
//! claiming it will send it.

use serde_json::{Map, Value};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The protocol version written in each header: the `wyoming` package
/// release whose events this implementation follows.
pub const VERSION: &str = "1.10.2";

/// Bounds on what one event may make the reader hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Bytes of the header line, newline excluded.
    pub header: usize,
    /// Bytes of the JSON data that follows the header.
    pub data: usize,
    /// Bytes of the payload.
    pub payload: usize,
}

impl Default for Caps {
    fn default() -> Self {
        // Headers and data are small JSON objects in practice (an `info`
        // with a hundred languages per model is a few KiB); the payload cap
        // is the session's business and is set from the upload limit.
        Caps { header: 64 * 1024, data: 1024 * 1024, payload: 16 * 1024 * 1024 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("header line longer than {0} bytes")]
    HeaderTooLong(usize),
    #[error("header is not a JSON object: {0}")]
    BadHeader(String),
    #[error("header has no string `type`")]
    NoType,
    #[error("`{0}` is not a whole number of bytes")]
    BadLength(&'static str),
    #[error("`{field}` of {value} bytes is over the limit of {limit}")]
    TooLarge { field: &'static str, value: u64, limit: usize },
    #[error("event data is not a JSON object: {0}")]
    BadData(String),
    #[error("connection closed in the middle of an event")]
    Truncated,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// One event: its type, its data (the header's merged with the extra
/// data), and its payload.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Event {
    pub kind: String,
    pub data: Map<String, Value>,
    pub payload: Option<Vec<u8>>,
}

impl Event {
    pub fn new(kind: &str, data: Value) -> Event {
        let data = match data {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        Event { kind: kind.to_string(), data, payload: None }
    }

    /// A string field of the data; None when absent, null or not a string.
    pub fn str(&self, key: &str) -> Option<&str> {
        self.data.get(key).and_then(Value::as_str)
    }

    /// A non-negative integer field of the data.
    pub fn uint(&self, key: &str) -> Option<u64> {
        self.data.get(key).and_then(Value::as_u64)
    }
}

/// A parsed header line: the lengths of what follows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    pub kind: String,
    pub data: Map<String, Value>,
    pub data_length: usize,
    pub payload_length: usize,
}

/// Parses a header line (without its newline) and checks the lengths it
/// announces against `caps`.
pub fn parse_header(line: &[u8], caps: &Caps) -> Result<Header, FrameError> {
    let value: Value = serde_json::from_slice(line).map_err(|e| FrameError::BadHeader(e.to_string()))?;
    let Value::Object(mut header) = value else {
        return Err(FrameError::BadHeader("not an object".into()));
    };
    let kind = match header.remove("type") {
        Some(Value::String(s)) if !s.is_empty() => s,
        _ => return Err(FrameError::NoType),
    };
    let data = match header.remove("data") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(FrameError::BadData("`data` in the header".into())),
    };
    let data_length = length(&header, "data_length", caps.data)?;
    let payload_length = length(&header, "payload_length", caps.payload)?;
    Ok(Header { kind, data, data_length, payload_length })
}

/// A length field: absent or null is 0; negative, fractional or non-numeric
/// values are refused rather than ignored (Python skips a negative one,
/// but a client that sends one is broken or probing).
fn length(header: &Map<String, Value>, field: &'static str, limit: usize) -> Result<usize, FrameError> {
    let n = match header.get(field) {
        None | Some(Value::Null) => return Ok(0),
        Some(v) => v.as_u64().ok_or(FrameError::BadLength(field))?,
    };
    if n > limit as u64 {
        return Err(FrameError::TooLarge { field, value: n, limit });
    }
    // Fits: limit is a usize.
    Ok(n as usize)
}

/// Lays the extra data's fields over the header's, as Python does.
pub fn merge_data(data: &mut Map<String, Value>, extra: &[u8]) -> Result<(), FrameError> {
    let value: Value = serde_json::from_slice(extra).map_err(|e| FrameError::BadData(e.to_string()))?;
    let Value::Object(extra) = value else {
        return Err(FrameError::BadData("not an object".into()));
    };
    data.extend(extra);
    Ok(())
}

/// Reads one line, up to `cap` bytes before its newline. Ok(None): the
/// stream ended cleanly before any byte of it.
pub async fn read_line<R: AsyncBufRead + Unpin>(reader: &mut R, cap: usize) -> Result<Option<Vec<u8>>, FrameError> {
    let mut line = Vec::new();
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return if line.is_empty() { Ok(None) } else { Err(FrameError::Truncated) };
        }
        let (take, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i, true),
            None => (buf.len(), false),
        };
        if line.len() + take > cap {
            return Err(FrameError::HeaderTooLong(cap));
        }
        line.extend_from_slice(&buf[..take]);
        reader.consume(if done { take + 1 } else { take });
        if done {
            // Python writes "\n"; a client on Windows may add "\r".
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(Some(line));
        }
    }
}

/// Reads exactly `len` bytes, growing the buffer as they arrive rather than
/// allocating what the header claims up front.
async fn read_exact_grown<R: AsyncBufRead + Unpin>(reader: &mut R, len: usize) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::with_capacity(len.min(64 * 1024));
    let got = reader.take(len as u64).read_to_end(&mut out).await?;
    if got < len {
        return Err(FrameError::Truncated);
    }
    Ok(out)
}

/// Reads the next event. Ok(None): the client closed the connection
/// between events. Blank lines between events are skipped.
pub async fn read_event<R: AsyncBufRead + Unpin>(reader: &mut R, caps: &Caps) -> Result<Option<Event>, FrameError> {
    let line = loop {
        match read_line(reader, caps.header).await? {
            None => return Ok(None),
            Some(l) if l.iter().all(u8::is_ascii_whitespace) => continue,
            Some(l) => break l,
        }
    };
    let header = parse_header(&line, caps)?;
    let mut data = header.data;
    if header.data_length > 0 {
        let extra = read_exact_grown(reader, header.data_length).await?;
        merge_data(&mut data, &extra)?;
    }
    let payload = if header.payload_length > 0 { Some(read_exact_grown(reader, header.payload_length).await?) } else { None };
    Ok(Some(Event { kind: header.kind, data, payload }))
}

/// The bytes of an event as the Python package writes them: the data
/// after the header (`data_length`) rather than inside it.
pub fn encode(event: &Event) -> Vec<u8> {
    let mut header = Map::new();
    header.insert("type".into(), Value::String(event.kind.clone()));
    header.insert("version".into(), Value::String(VERSION.into()));
    let data = if event.data.is_empty() { None } else { Some(Value::Object(event.data.clone()).to_string()) };
    if let Some(d) = &data {
        header.insert("data_length".into(), Value::from(d.len()));
    }
    let payload = event.payload.as_deref().filter(|p| !p.is_empty());
    if let Some(p) = payload {
        header.insert("payload_length".into(), Value::from(p.len()));
    }
    let mut out = Value::Object(header).to_string().into_bytes();
    out.push(b'\n');
    if let Some(d) = data {
        out.extend_from_slice(d.as_bytes());
    }
    if let Some(p) = payload {
        out.extend_from_slice(p);
    }
    out
}

/// Writes an event and flushes it.
pub async fn write_event<W: AsyncWrite + Unpin>(writer: &mut W, event: &Event) -> std::io::Result<()> {
    writer.write_all(&encode(event)).await?;
    writer.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn caps() -> Caps {
        Caps { header: 256, data: 128, payload: 1024 }
    }

    async fn read_all(bytes: &[u8], caps: &Caps) -> Vec<Result<Event, String>> {
        let mut r = bytes;
        let mut out = Vec::new();
        loop {
            match read_event(&mut r, caps).await {
                Ok(Some(e)) => out.push(Ok(e)),
                Ok(None) => return out,
                Err(e) => {
                    out.push(Err(e.to_string()));
                    return out;
                }
            }
        }
    }

    #[tokio::test]
    async fn events_survive_a_round_trip() {
        let mut chunk = Event::new("audio-chunk", json!({"rate": 16000, "width": 2, "channels": 1}));
        chunk.payload = Some(vec![1, 2, 3, 4, 0, 10]);
        let events = vec![Event::new("describe", json!({})), chunk, Event::new("transcript", json!({"text": "héllo\nworld"}))];
        let mut wire = Vec::new();
        for e in &events {
            write_event(&mut wire, e).await.expect("write");
        }
        let back: Vec<Event> = read_all(&wire, &caps()).await.into_iter().map(|r| r.expect("event")).collect();
        assert_eq!(back, events);
        // The header line itself holds lengths, never the data.
        let first_line = wire.split(|&b| b == b'\n').nth(1).expect("second header");
        let h: Value = serde_json::from_slice(first_line).expect("json");
        assert_eq!(h["type"], "audio-chunk");
        assert_eq!(h["payload_length"], 6);
        assert!(h.get("data").is_none() && h["data_length"].as_u64().is_some());
        assert_eq!(h["version"], VERSION);
    }

    #[tokio::test]
    async fn extra_data_is_merged_over_the_header_data() {
        let extra = br#"{"text":"from data","language":"en"}"#;
        let header = format!(r#"{{"type":"transcript","data":{{"text":"from header","context":{{"a":1}}}},"data_length":{}}}"#, extra.len());
        let mut wire = header.into_bytes();
        wire.push(b'\n');
        wire.extend_from_slice(extra);
        let events = read_all(&wire, &caps()).await;
        let e = events[0].as_ref().expect("event");
        assert_eq!(e.str("text"), Some("from data"));
        assert_eq!(e.str("language"), Some("en"));
        assert_eq!(e.data["context"], json!({"a": 1}));
        assert_eq!(e.payload, None);
    }

    #[tokio::test]
    async fn python_style_headers_with_inline_data_are_read() {
        // What wyoming < 1.2 wrote, and what some clients still send.
        let wire = b"{\"type\": \"transcribe\", \"data\": {\"language\": \"de\"}}\r\n\n{\"type\":\"audio-stop\",\"data_length\":null}\n";
        let events = read_all(wire, &caps()).await;
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].as_ref().expect("event").str("language"), Some("de"));
        assert_eq!(events[1].as_ref().expect("event").kind, "audio-stop");
    }

    #[tokio::test]
    async fn bad_headers_are_refused() {
        let cases: &[(&[u8], &str)] = &[
            (b"this is not json\n", "not a JSON object"),
            (b"[1,2,3]\n", "not a JSON object"),
            (b"{\"data\":{}}\n", "no string `type`"),
            (b"{\"type\":7}\n", "no string `type`"),
            (b"{\"type\":\"x\",\"payload_length\":-5}\n", "`payload_length` is not"),
            (b"{\"type\":\"x\",\"payload_length\":1.5}\n", "`payload_length` is not"),
            (b"{\"type\":\"x\",\"payload_length\":\"9\"}\n", "`payload_length` is not"),
            (b"{\"type\":\"x\",\"data_length\":3}\n[1]", "not an object"),
            (b"{\"type\":\"x\",\"data_length\":4}\nnope", "not a JSON object"),
            (b"{\"type\":\"x\",\"data\":[1]}\n", "`data` in the header"),
            (b"{\"type\":\"x\",\"payload_length\":10}\nabc", "closed in the middle"),
            (b"{\"type\":\"x\"", "closed in the middle"),
        ];
        for (wire, expected) in cases {
            let events = read_all(wire, &caps()).await;
            let last = events.last().expect("something");
            let err = last.as_ref().expect_err(&format!("{} should fail", String::from_utf8_lossy(wire)));
            assert!(err.contains(expected), "{}: {err}", String::from_utf8_lossy(wire));
        }
    }

    #[tokio::test]
    async fn caps_are_checked_before_reading() {
        let c = caps();
        // A line with no newline in sight stops at the cap, not at the end.
        let long = vec![b'x'; 10_000];
        let events = read_all(&long, &c).await;
        assert!(events[0].as_ref().is_err_and(|e| e.contains("longer than 256")));
        let huge = format!("{{\"type\":\"audio-chunk\",\"payload_length\":{}}}\n", u64::MAX);
        let events = read_all(huge.as_bytes(), &c).await;
        assert!(events[0].as_ref().is_err_and(|e| e.contains("over the limit of 1024")), "{events:?}");
        let data = "{\"type\":\"x\",\"data_length\":129}\n";
        assert!(read_all(data.as_bytes(), &c).await[0].as_ref().is_err_and(|e| e.contains("data_length")));
        // At the caps exactly: fine.
        let mut ok = format!("{{\"type\":\"x\",\"payload_length\":{}}}\n", c.payload).into_bytes();
        ok.extend(vec![0u8; c.payload]);
        assert_eq!(read_all(&ok, &c).await[0].as_ref().expect("event").payload.as_ref().map(Vec::len), Some(c.payload));
    }

    #[tokio::test]
    async fn a_clean_close_between_events_is_not_an_error() {
        assert!(read_all(b"", &caps()).await.is_empty());
        assert!(read_all(b"\n\n", &caps()).await.is_empty());
    }
}
