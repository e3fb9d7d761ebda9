//! Python `logging` format strings, as the original service wrote its log
//! lines: [`PyFormat`] parses `logging.format` once and renders a
//! [`LogRecord`] with it. Pure functions; the tracing side (which fields go
//! into `%(message)s`) is in [`crate::telemetry::event_format`].

use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::Level;

/// A `LogRecord` attribute the format string can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attr {
    /// `asctime`: "2026-11-25 18:00:00,123", in UTC.
    AscTime,
    /// `name`: the tracing target (`whisper_serve::api`; for `log` records
    /// their target).
    Name,
    /// `levelname`: TRACE, DEBUG, INFO, WARNING, ERROR.
    LevelName,
    /// `levelno`: 5, 10, 20, 30, 40.
    LevelNo,
    /// `message`: the message, then the event's fields and its spans'
    /// fields as `key=value`.
    Message,
    /// `process`: the process id.
    Process,
    /// `processName`: "MainProcess".
    ProcessName,
    /// `thread`: the Rust thread's numeric id.
    Thread,
    /// `threadName`: the thread's name, or `Thread-<id>`.
    ThreadName,
    /// `filename`: the source file's base name (`api.rs`).
    FileName,
    /// `pathname`: the source file's path as compiled (`src/api.rs`).
    PathName,
    /// `lineno`: the source line.
    LineNo,
    /// `module`: the source file's stem (`api`).
    Module,
    /// `funcName`: Rust events carry no function name; the target.
    FuncName,
    /// `msecs`: the millisecond part of the time.
    Msecs,
    /// `created`: seconds since the Unix epoch, as a float.
    Created,
    /// `relativeCreated`: milliseconds since logging was set up.
    RelativeCreated,
}

impl Attr {
    fn from_name(name: &str) -> Option<Attr> {
        Some(match name {
            "asctime" => Attr::AscTime,
            "name" => Attr::Name,
            "levelname" => Attr::LevelName,
            "levelno" => Attr::LevelNo,
            "message" => Attr::Message,
            "process" => Attr::Process,
            "processName" => Attr::ProcessName,
            "thread" => Attr::Thread,
            "threadName" => Attr::ThreadName,
            "filename" => Attr::FileName,
            "pathname" => Attr::PathName,
            "lineno" => Attr::LineNo,
            "module" => Attr::Module,
            "funcName" => Attr::FuncName,
            "msecs" => Attr::Msecs,
            "created" => Attr::Created,
            "relativeCreated" => Attr::RelativeCreated,
            _ => return None,
        })
    }
}

/// A `%`-conversion's flags, width, precision and type (`-8s`, `03d`, `.3f`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    pub left: bool,
    pub zero: bool,
    pub width: usize,
    pub precision: Option<usize>,
    pub conversion: char,
}

/// One part of a parsed format string.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    Literal(String),
    Attr(Attr, Spec),
}

/// What one log line is made from; [`PyFormat::render`] is a pure function
/// of it.
#[derive(Debug, Clone)]
pub struct LogRecord<'a> {
    pub time: SystemTime,
    pub level: Level,
    pub target: &'a str,
    /// Message and fields, already joined.
    pub message: &'a str,
    pub file: Option<&'a str>,
    pub line: Option<u32>,
    pub module_path: Option<&'a str>,
    pub process_id: u32,
    pub thread_id: u64,
    pub thread_name: &'a str,
    pub relative_ms: u64,
}

/// A Python `logging` format string parsed once into [`Piece`]s.
///
/// `%(attr)s` (with optional flags `-`/`0`, width and `.precision`, and any
/// of Python's conversion types) becomes an attribute, `%%` a `%`. An
/// unknown attribute (`%(foo)s`) or a malformed conversion is kept literally.
#[derive(Debug, Clone, PartialEq)]
pub struct PyFormat {
    pieces: Vec<Piece>,
}

const CONVERSIONS: &str = "diouxXeEfFgGcrsa";

impl PyFormat {
    pub fn parse(format: &str) -> PyFormat {
        let mut pieces = Vec::new();
        let mut lit = String::new();
        let mut rest = format;
        while let Some(i) = rest.find('%') {
            lit.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            if let Some(r) = after.strip_prefix('%') {
                lit.push('%');
                rest = r;
                continue;
            }
            match parse_conversion(after) {
                Some((name, spec, consumed)) => {
                    let raw = &rest[i..i + 1 + consumed];
                    match Attr::from_name(name) {
                        Some(attr) => {
                            if !lit.is_empty() {
                                pieces.push(Piece::Literal(std::mem::take(&mut lit)));
                            }
                            pieces.push(Piece::Attr(attr, spec));
                        }
                        None => lit.push_str(raw),
                    }
                    rest = &after[consumed..];
                }
                None => {
                    lit.push('%');
                    rest = after;
                }
            }
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            pieces.push(Piece::Literal(lit));
        }
        PyFormat { pieces }
    }

    pub fn pieces(&self) -> &[Piece] {
        &self.pieces
    }

    /// Renders one record (no trailing newline).
    pub fn render(&self, rec: &LogRecord<'_>) -> String {
        let mut out = String::with_capacity(128);
        for piece in &self.pieces {
            match piece {
                Piece::Literal(s) => out.push_str(s),
                Piece::Attr(attr, spec) => apply_spec(&mut out, attr_value(*attr, rec), spec),
            }
        }
        out
    }
}

/// Parses `(name)flags width .precision type` after a `%`; returns the name,
/// the spec and the bytes consumed.
fn parse_conversion(s: &str) -> Option<(&str, Spec, usize)> {
    let body = s.strip_prefix('(')?;
    let close = body.find(')')?;
    let name = &body[..close];
    let bytes = body.as_bytes();
    let mut j = close + 1;
    let mut spec = Spec { left: false, zero: false, width: 0, precision: None, conversion: 's' };
    while let Some(&c) = bytes.get(j) {
        match c {
            b'-' => spec.left = true,
            b'0' => spec.zero = true,
            b' ' | b'+' | b'#' => {}
            _ => break,
        }
        j += 1;
    }
    let digits = |j: &mut usize| {
        let start = *j;
        while bytes.get(*j).is_some_and(u8::is_ascii_digit) {
            *j += 1;
        }
        body[start..*j].parse::<usize>().ok()
    };
    spec.width = digits(&mut j).unwrap_or(0).min(1000);
    if bytes.get(j) == Some(&b'.') {
        j += 1;
        spec.precision = Some(digits(&mut j).unwrap_or(0).min(1000));
    }
    let c = *bytes.get(j)? as char;
    if !CONVERSIONS.contains(c) {
        return None;
    }
    spec.conversion = c;
    Some((name, spec, 1 + j + 1))
}

enum Val<'a> {
    Str(Cow<'a, str>),
    Int(i64),
    Float(f64),
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::TRACE => "TRACE",
        Level::DEBUG => "DEBUG",
        Level::INFO => "INFO",
        Level::WARN => "WARNING",
        Level::ERROR => "ERROR",
    }
}

fn level_no(level: Level) -> i64 {
    match level {
        Level::TRACE => 5,
        Level::DEBUG => 10,
        Level::INFO => 20,
        Level::WARN => 30,
        Level::ERROR => 40,
    }
}

fn base_name(path: &str) -> &str {
    path.rsplit(['/', '\\']).next().unwrap_or(path)
}

fn attr_value<'a>(attr: Attr, rec: &'a LogRecord<'a>) -> Val<'a> {
    let since_epoch = rec.time.duration_since(UNIX_EPOCH).unwrap_or_default();
    match attr {
        Attr::AscTime => Val::Str(Cow::Owned(asctime(rec.time))),
        Attr::Name | Attr::FuncName => Val::Str(Cow::Borrowed(rec.target)),
        Attr::LevelName => Val::Str(Cow::Borrowed(level_name(rec.level))),
        Attr::LevelNo => Val::Int(level_no(rec.level)),
        Attr::Message => Val::Str(Cow::Borrowed(rec.message)),
        Attr::Process => Val::Int(rec.process_id as i64),
        Attr::ProcessName => Val::Str(Cow::Borrowed("MainProcess")),
        Attr::Thread => Val::Int(rec.thread_id as i64),
        Attr::ThreadName => Val::Str(Cow::Borrowed(rec.thread_name)),
        Attr::FileName => Val::Str(Cow::Borrowed(rec.file.map(base_name).unwrap_or("?"))),
        Attr::PathName => Val::Str(Cow::Borrowed(rec.file.unwrap_or("?"))),
        Attr::LineNo => Val::Int(rec.line.map_or(0, i64::from)),
        Attr::Module => {
            let m = match rec.file {
                Some(f) => {
                    let b = base_name(f);
                    b.rsplit_once('.').map_or(b, |(stem, _)| stem)
                }
                None => rec.module_path.map(|m| m.rsplit("::").next().unwrap_or(m)).unwrap_or("?"),
            };
            Val::Str(Cow::Borrowed(m))
        }
        Attr::Msecs => Val::Int(since_epoch.subsec_millis() as i64),
        Attr::Created => Val::Float(since_epoch.as_secs_f64()),
        Attr::RelativeCreated => Val::Int(rec.relative_ms.min(i64::MAX as u64) as i64),
    }
}

fn apply_spec(out: &mut String, val: Val<'_>, spec: &Spec) {
    let numeric = matches!(val, Val::Int(_) | Val::Float(_));
    let text: Cow<'_, str> = match (spec.conversion, val) {
        ('d' | 'i' | 'u', Val::Int(n)) => Cow::Owned(n.to_string()),
        ('d' | 'i' | 'u', Val::Float(f)) => Cow::Owned((f.trunc() as i64).to_string()),
        ('x', Val::Int(n)) => Cow::Owned(format!("{n:x}")),
        ('X', Val::Int(n)) => Cow::Owned(format!("{n:X}")),
        ('o', Val::Int(n)) => Cow::Owned(format!("{n:o}")),
        ('f' | 'F' | 'e' | 'E' | 'g' | 'G', Val::Float(f)) => {
            Cow::Owned(format!("{f:.p$}", p = spec.precision.unwrap_or(6)))
        }
        ('f' | 'F' | 'e' | 'E' | 'g' | 'G', Val::Int(n)) => {
            Cow::Owned(format!("{:.p$}", n as f64, p = spec.precision.unwrap_or(6)))
        }
        (_, Val::Int(n)) => Cow::Owned(n.to_string()),
        (_, Val::Float(f)) => Cow::Owned(f.to_string()),
        ('r' | 'a', Val::Str(s)) => Cow::Owned(format!("'{s}'")),
        (_, Val::Str(s)) => match spec.precision {
            Some(p) if !numeric && s.chars().count() > p => Cow::Owned(s.chars().take(p).collect()),
            _ => s,
        },
    };
    let len = text.chars().count();
    if len >= spec.width {
        out.push_str(&text);
        return;
    }
    let pad = spec.width - len;
    if spec.left {
        out.push_str(&text);
        out.extend(std::iter::repeat_n(' ', pad));
    } else if spec.zero && numeric {
        let (sign, digits) = match text.strip_prefix('-') {
            Some(d) => ("-", d),
            None => ("", &*text),
        };
        out.push_str(sign);
        out.extend(std::iter::repeat_n('0', pad));
        out.push_str(digits);
    } else {
        out.extend(std::iter::repeat_n(' ', pad));
        out.push_str(&text);
    }
}

/// "YYYY-MM-DD HH:MM:SS,mmm" in UTC, like Python's default `asctime` (which
/// is local time; the service logs UTC so servers in any zone agree).
pub fn asctime(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{day:02} {:02}:{:02}:{:02},{:03}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian
/// (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}


#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const PY_DEFAULT: &str = "%(asctime)s - %(name)s - %(levelname)s - %(message)s";

    fn record(message: &str) -> LogRecord<'_> {
        LogRecord {
            // 2026-11-25 18:00:00.123 UTC
            time: UNIX_EPOCH + Duration::from_millis(1_795_629_600_123),
            level: Level::WARN,
            target: "whisper_serve::api",
            message,
            file: Some("src/api.rs"),
            line: Some(42),
            module_path: Some("whisper_serve::api"),
            process_id: 4242,
            thread_id: 7,
            thread_name: "tokio-runtime-worker",
            relative_ms: 1500,
        }
    }

    #[test]
    fn level_names_are_pythons() {
        assert_eq!(level_name(Level::WARN), "WARNING");
        assert_eq!(level_name(Level::TRACE), "TRACE");
        assert_eq!(level_no(Level::ERROR), 40);
    }

    #[test]
    fn asctime_is_python_style_utc() {
        assert_eq!(asctime(UNIX_EPOCH), "1970-01-01 00:00:00,000");
        assert_eq!(asctime(record("").time), "2026-11-25 18:00:00,123");
        assert_eq!(asctime(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29 00:00:00,000");
    }

    #[test]
    fn renders_original_default_format() {
        let f = PyFormat::parse(PY_DEFAULT);
        assert_eq!(
            f.render(&record("queue full depth=3")),
            "2026-11-25 18:00:00,123 - whisper_serve::api - WARNING - queue full depth=3"
        );
    }

    #[test]
    fn renders_every_known_attribute() {
        let f = PyFormat::parse(
            "%(process)d|%(processName)s|%(thread)d|%(threadName)s|%(filename)s|%(pathname)s|\
             %(lineno)d|%(module)s|%(funcName)s|%(levelno)d|%(msecs)03d|%(relativeCreated)d|%(created).1f",
        );
        assert_eq!(
            f.render(&record("m")),
            "4242|MainProcess|7|tokio-runtime-worker|api.rs|src/api.rs|42|api|whisper_serve::api|30|123|1500|1795629600.1"
        );
    }

    #[test]
    fn percent_escape_unknown_and_malformed_kept_literally() {
        let f = PyFormat::parse("100%% %(foo)s %(message)s %(oops %d %");
        assert_eq!(f.render(&record("hi")), "100% %(foo)s hi %(oops %d %");
        assert_eq!(
            f.pieces(),
            &[
                Piece::Literal("100% %(foo)s ".into()),
                Piece::Attr(
                    Attr::Message,
                    Spec { left: false, zero: false, width: 0, precision: None, conversion: 's' }
                ),
                Piece::Literal(" %(oops %d %".into()),
            ]
        );
    }

    #[test]
    fn width_and_precision() {
        let f = PyFormat::parse("[%(levelname)-8s][%(levelname)8s][%(levelname).4s][%(lineno)05d]");
        assert_eq!(f.render(&record("")), "[WARNING ][ WARNING][WARN][00042]");
    }
}
