//! Turns tracing events into log lines: the fields visitor behind
//! `%(message)s` ([`PyFields`] for spans, `FormatEvent` for [`PyFormat`]) and
//! JSON lines ([`RedactingJson`]). Both hide transcript fields unless
//! `logging.log_transcripts` is on (see [`crate::telemetry::access`]).

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::sync::OnceLock;
use std::time::{Instant, SystemTime};

use tracing::field::{Field, FieldSet, Visit};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{Format, Json, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

use crate::telemetry::access::{redacts, REDACTED};
use crate::telemetry::format::{LogRecord, PyFormat};

/// When logging was set up, for `%(relativeCreated)d`.
pub(crate) static START: OnceLock<Instant> = OnceLock::new();


/// Collects an event's message and its other fields as `key=value`.
#[derive(Default)]
struct KvVisitor {
    message: String,
    fields: Vec<(&'static str, String)>,
}

impl KvVisitor {
    fn push(&mut self, field: &Field, value: Cow<'_, str>) {
        // Transcript fields are replaced here, at the one place every text
        // line goes through, so no call site can leak them by mistake.
        let value = if redacts(field.name()) { REDACTED.to_string() } else { value.into_owned() };
        self.fields.push((field.name(), value));
    }

    fn skip(field: &Field) -> bool {
        // Fields `tracing-log` adds to records from the `log` crate; their
        // content is shown through the normalised metadata instead.
        field.name().starts_with("log.")
    }

    /// Gives every field the call site declares but the event left unset
    /// (an `Option` that was `None`) an empty `key=`, in declaration order, so
    /// lines such as the access line keep the same columns whatever is known.
    fn fill_declared(&mut self, declared: &FieldSet) {
        let wanted = declared.iter().filter(|f| f.name() != "message" && !Self::skip(f)).count();
        if wanted == self.fields.len() {
            return;
        }
        let mut recorded: Vec<Option<(&'static str, String)>> = self.fields.drain(..).map(Some).collect();
        for f in declared.iter().filter(|f| f.name() != "message" && !Self::skip(f)) {
            let found = recorded.iter_mut().find(|r| r.as_ref().is_some_and(|(n, _)| *n == f.name()));
            match found.and_then(Option::take) {
                Some(kv) => self.fields.push(kv),
                None => self.fields.push((f.name(), String::new())),
            }
        }
        self.fields.extend(recorded.into_iter().flatten());
    }

    /// "message k=v k=v" (either part may be empty), then `extra` (the
    /// spans' fields, already joined).
    fn joined(self, extra: &[&str]) -> String {
        let mut out = self.message;
        let parts = self.fields.iter().map(|(k, v)| Cow::Owned(format!("{k}={v}")));
        for part in parts.chain(extra.iter().map(|e| Cow::Borrowed(*e))).filter(|p| !p.is_empty()) {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(&part);
        }
        out
    }
}

/// Strings with spaces, quotes or `=` (or empty) are quoted, so lines stay
/// parseable as `key=value` pairs.
fn quote_if_needed(s: &str) -> Cow<'_, str> {
    if s.is_empty() || s.chars().any(|c| c.is_whitespace() || c == '"' || c == '=') {
        Cow::Owned(format!("{s:?}"))
    } else {
        Cow::Borrowed(s)
    }
}

impl Visit for KvVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else if !Self::skip(field) {
            self.push(field, quote_if_needed(value));
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if !Self::skip(field) {
            self.push(field, Cow::Owned(quote_if_needed(&value.to_string()).into_owned()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else if !Self::skip(field) {
            self.push(field, Cow::Owned(format!("{value:?}")));
        }
    }
}

/// Formats span fields the same way as event fields (`key=value`), so they
/// can be appended to `%(message)s`.
#[derive(Debug, Clone, Copy, Default)]
pub struct PyFields;

impl<'w> FormatFields<'w> for PyFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut v = KvVisitor::default();
        fields.record(&mut v);
        writer.write_str(&v.joined(&[]))
    }
}

fn current_thread() -> (u64, String) {
    thread_local! {
        static THREAD: (u64, String) = {
            let t = std::thread::current();
            let dbg = format!("{:?}", t.id());
            let id: u64 = dbg.chars().filter(char::is_ascii_digit).collect::<String>().parse().unwrap_or(0);
            let name = t.name().map_or_else(|| format!("Thread-{id}"), str::to_string);
            (id, name)
        };
    }
    THREAD.with(|t| t.clone())
}

impl<S, N> FormatEvent<S, N> for PyFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        let mut visitor = KvVisitor::default();
        event.record(&mut visitor);
        visitor.fill_declared(event.metadata().fields());
        let mut span_fields = Vec::new();
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let ext = span.extensions();
                if let Some(f) = ext.get::<FormattedFields<N>>() {
                    span_fields.push(f.fields.clone());
                }
            }
        }
        let span_refs: Vec<&str> = span_fields.iter().map(String::as_str).collect();
        let message = visitor.joined(&span_refs);
        let (thread_id, thread_name) = current_thread();
        let rec = LogRecord {
            time: SystemTime::now(),
            level: *meta.level(),
            target: meta.target(),
            message: &message,
            file: meta.file(),
            line: meta.line(),
            module_path: meta.module_path(),
            process_id: std::process::id(),
            thread_id,
            thread_name: &thread_name,
            relative_ms: START.get_or_init(Instant::now).elapsed().as_millis() as u64,
        };
        writeln!(writer, "{}", self.render(&rec))
    }
}

// ---------------------------------------------------------------------------
// JSON lines

/// tracing-subscriber's JSON lines (`timestamp`, `level`, `fields`, `target`,
/// `span`, `spans`), with transcript fields replaced as in the text format.
///
/// tracing-subscriber writes event fields with its own visitor, which offers
/// no hook per field; so a line whose event or spans declare a transcript
/// field is rendered, parsed back and rewritten. Other lines (all of them,
/// in practice, but the engine's DEBUG window lines) take the direct path.
#[derive(Debug)]
pub struct RedactingJson(pub Format<Json>);

impl RedactingJson {
    pub fn new() -> Self {
        RedactingJson(tracing_subscriber::fmt::format().json().with_current_span(true).with_span_list(true))
    }
}

impl Default for RedactingJson {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether the event or one of its spans declares a field that
/// [`redacts`] hides.
fn declares_redacted<S, N>(ctx: &FmtContext<'_, S, N>, event: &Event<'_>) -> bool
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    let hides = |fields: &FieldSet| fields.iter().any(|f| redacts(f.name()));
    hides(event.metadata().fields())
        || ctx.event_scope().is_some_and(|mut scope| scope.any(|span| hides(span.metadata().fields())))
}

/// Replaces transcript fields in a tracing-subscriber JSON line: in
/// `fields`, `span` and each of `spans`.
pub(crate) fn redact_json_line(line: &mut serde_json::Value) {
    let hide = |obj: Option<&mut serde_json::Value>| {
        if let Some(serde_json::Value::Object(map)) = obj {
            for (k, v) in map.iter_mut() {
                if redacts(k) {
                    *v = serde_json::Value::String(REDACTED.into());
                }
            }
        }
    };
    hide(line.get_mut("fields"));
    hide(line.get_mut("span"));
    if let Some(serde_json::Value::Array(spans)) = line.get_mut("spans") {
        for s in spans {
            hide(Some(s));
        }
    }
}

impl<S, N> FormatEvent<S, N> for RedactingJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        if !declares_redacted(ctx, event) {
            return self.0.format_event(ctx, writer, event);
        }
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        match serde_json::from_str::<serde_json::Value>(line.trim_end()) {
            Ok(mut v) => {
                redact_json_line(&mut v);
                writeln!(writer, "{v}")
            }
            // Not reachable with tracing-subscriber's output; if it ever is,
            // dropping the line is the only way to be sure nothing leaks.
            Err(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LoggingConfig;
    use crate::telemetry::logging::test_support::capture;

    #[test]
    fn kv_visitor_joins_and_quotes() {
        let mut v = KvVisitor::default();
        v.message.push_str("done");
        v.fields.push(("path", quote_if_needed("a b").into_owned()));
        v.fields.push(("n", quote_if_needed("3").into_owned()));
        assert_eq!(v.joined(&["request_id=abc", ""]), "done path=\"a b\" n=3 request_id=abc");
        assert_eq!(KvVisitor::default().joined(&[]), "");
        assert_eq!(KvVisitor::default().joined(&["a=1"]), "a=1");
    }

    /// Lines the real subscriber writes for `emit`, in the given format.
    fn lines(format: &str, emit: impl FnOnce()) -> Vec<String> {
        let cfg = LoggingConfig { level: "DEBUG".into(), format: format.into(), ..LoggingConfig::default() };
        let (out, subscriber) = capture(&cfg);
        tracing::subscriber::with_default(subscriber, emit);
        out.text().lines().map(str::to_string).collect()
    }

    #[test]
    fn unset_declared_fields_render_empty_in_text() {
        let known: Option<f64> = Some(1.5);
        let unknown: Option<f64> = None;
        let l = lines("%(message)s", || tracing::info!(a = known, b = unknown, c = "x", "m"));
        assert_eq!(l, ["m a=1.5 b= c=x"]);
        let l = lines("json", || tracing::info!(a = known, b = unknown, "m"));
        let v: serde_json::Value = serde_json::from_str(&l[0]).expect("json");
        assert_eq!(v["fields"]["a"], 1.5);
        assert!(v["fields"].get("b").is_none(), "{v}");
    }

    /// `logging.log_transcripts` is off in this test process (nothing in the
    /// unit tests turns it on), so transcript fields are hidden.
    #[test]
    fn transcript_fields_hidden_in_text_and_json() {
        let emit = || {
            let span = tracing::info_span!("window", prompt = "earlier words");
            let _e = span.enter();
            tracing::debug!(temperature = 0.0, text = %"ask not what your country", "decoded window");
        };
        let t = lines("%(message)s", emit);
        assert_eq!(t, ["decoded window temperature=0.0 text=[redacted] prompt=[redacted]"]);
        let j = lines("json", emit);
        assert_eq!(j.len(), 1, "{j:?}");
        assert!(!j[0].contains("ask not") && !j[0].contains("earlier"), "{}", j[0]);
        let v: serde_json::Value = serde_json::from_str(&j[0]).expect("json");
        assert_eq!(v["fields"]["text"], REDACTED);
        assert_eq!(v["fields"]["temperature"], 0.0);
        assert_eq!(v["span"]["prompt"], REDACTED);
        assert_eq!(v["spans"][0]["prompt"], REDACTED);
        assert_eq!(v["level"], "DEBUG");
    }
}
