//! The response formats of the OpenAI-compatible API (`response_format`):
//! `json`, `text`, `srt`, `vtt` and `verbose_json`, rendered from a
//! [`Transcript`] the way OpenAI's `/v1/audio/transcriptions` and
//! `/v1/audio/translations` answer.
//!
//! Pure functions: no I/O, no engine.

use std::fmt;
use std::fmt::Write as _;
use std::str::FromStr;

use serde::Serialize;

use crate::engine::Transcript;

/// The `response_format` form field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseFormat {
    #[default]
    Json,
    Text,
    Srt,
    Vtt,
    VerboseJson,
}

/// The valid `response_format` values, in the order error messages list them.
pub const RESPONSE_FORMATS: &[&str] = &["json", "text", "srt", "vtt", "verbose_json"];

/// A `response_format` that is not one of [`RESPONSE_FORMATS`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownFormat(pub String);

impl fmt::Display for UnknownFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unsupported response_format '{}': expected one of {}",
            self.0,
            RESPONSE_FORMATS.join(", ")
        )
    }
}

impl std::error::Error for UnknownFormat {}

impl FromStr for ResponseFormat {
    type Err = UnknownFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "json" => ResponseFormat::Json,
            "text" => ResponseFormat::Text,
            "srt" => ResponseFormat::Srt,
            "vtt" => ResponseFormat::Vtt,
            "verbose_json" => ResponseFormat::VerboseJson,
            other => return Err(UnknownFormat(other.to_string())),
        })
    }
}

impl ResponseFormat {
    /// The name as the API spells it (`verbose_json`).
    pub fn as_str(self) -> &'static str {
        match self {
            ResponseFormat::Json => "json",
            ResponseFormat::Text => "text",
            ResponseFormat::Srt => "srt",
            ResponseFormat::Vtt => "vtt",
            ResponseFormat::VerboseJson => "verbose_json",
        }
    }

    /// The `Content-Type` of a response in this format. OpenAI answers
    /// `text/plain` for SRT too, so we do the same.
    pub fn content_type(self) -> &'static str {
        match self {
            ResponseFormat::Json | ResponseFormat::VerboseJson => "application/json",
            ResponseFormat::Text | ResponseFormat::Srt => "text/plain; charset=utf-8",
            ResponseFormat::Vtt => "text/vtt; charset=utf-8",
        }
    }
}

impl fmt::Display for ResponseFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which timestamp lists `verbose_json` carries (`timestamp_granularities[]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Granularities {
    pub segment: bool,
    pub word: bool,
}

impl Default for Granularities {
    /// OpenAI's default when no granularity is given: segments only.
    fn default() -> Self {
        Granularities { segment: true, word: false }
    }
}

impl Granularities {
    /// From the `timestamp_granularities[]` values: none given means the
    /// default (segments only); otherwise exactly the ones named.
    pub fn from_names<'a, I: IntoIterator<Item = &'a str>>(names: I) -> Result<Self, String> {
        let mut g = Granularities { segment: false, word: false };
        let mut any = false;
        for name in names {
            any = true;
            match name {
                "segment" => g.segment = true,
                "word" => g.word = true,
                other => {
                    return Err(format!(
                        "unsupported timestamp_granularities value '{other}': expected word or segment"
                    ))
                }
            }
        }
        Ok(if any { g } else { Granularities::default() })
    }
}

/// Renders `t` as the body of a response in `format`. `task` is
/// `"transcribe"` or `"translate"` (only `verbose_json` shows it).
pub fn render(t: &Transcript, format: ResponseFormat, task: &str, granularities: Granularities) -> String {
    match format {
        ResponseFormat::Json => render_json(t),
        ResponseFormat::Text => format!("{}\n", t.text.trim()),
        ResponseFormat::Srt => render_srt(t),
        ResponseFormat::Vtt => render_vtt(t),
        ResponseFormat::VerboseJson => render_verbose_json(t, task, granularities),
    }
}

fn render_json(t: &Transcript) -> String {
    #[derive(Serialize)]
    struct Body<'a> {
        text: &'a str,
    }
    serde_json::to_string(&Body { text: t.text.trim() }).expect("serializing a string cannot fail")
}

/// A cue's text: trimmed, and without `-->` (which would end the cue
/// timing line early in a parser), as openai-whisper's writers do.
fn cue_text(text: &str) -> String {
    text.trim().replace("-->", "->")
}

/// `HH:MM:SS<marker>mmm`, hours always present (at least two digits).
/// Negative and non-finite times are shown as zero.
pub fn format_timestamp(seconds: f64, decimal_marker: char) -> String {
    let ms = if seconds.is_finite() && seconds > 0.0 { (seconds * 1000.0).round() as u64 } else { 0 };
    let (h, rest) = (ms / 3_600_000, ms % 3_600_000);
    let (m, rest) = (rest / 60_000, rest % 60_000);
    let (s, ms) = (rest / 1000, rest % 1000);
    format!("{h:02}:{m:02}:{s:02}{decimal_marker}{ms:03}")
}

/// SubRip, as openai-whisper's `WriteSRT`: cues numbered from 1, each
/// followed by a blank line.
fn render_srt(t: &Transcript) -> String {
    let mut out = String::new();
    for (i, seg) in t.segments.iter().enumerate() {
        let _ = write!(
            out,
            "{}\n{} --> {}\n{}\n\n",
            i + 1,
            format_timestamp(seg.start, ','),
            format_timestamp(seg.end, ','),
            cue_text(&seg.text)
        );
    }
    out
}

/// WebVTT. openai-whisper's `WriteVTT` drops the hours under an hour; we
/// always write them (`00:00:01.000`), as OpenAI's API does: valid WebVTT,
/// and one shape for every parser.
fn render_vtt(t: &Transcript) -> String {
    let mut out = String::from("WEBVTT\n\n");
    for seg in &t.segments {
        let _ = write!(
            out,
            "{} --> {}\n{}\n\n",
            format_timestamp(seg.start, '.'),
            format_timestamp(seg.end, '.'),
            cue_text(&seg.text)
        );
    }
    out
}

/// Times to the millisecond (Whisper's own resolution is 20 ms).
fn round_time(x: f64) -> f64 {
    if x.is_finite() {
        let r = (x * 1000.0).round() / 1000.0;
        if r == 0.0 {
            0.0 // no "-0.0"
        } else {
            r
        }
    } else {
        0.0
    }
}

/// An f32 score as the f64 nearest its shortest decimal form, so JSON shows
/// `-0.25` rather than `-0.25000000372529`. NaN/inf (not valid JSON) -> 0.
fn score(x: f32) -> f64 {
    if x.is_finite() {
        x.to_string().parse().unwrap_or(0.0)
    } else {
        0.0
    }
}

#[derive(Serialize)]
struct VerboseJson<'a> {
    task: &'a str,
    language: &'a str,
    /// Not in OpenAI's shape (clients ignore extra keys): how sure the
    /// language detection was; 1 when the language was given.
    language_probability: f64,
    duration: f64,
    text: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    segments: Option<Vec<VerboseSegment<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    words: Option<Vec<VerboseWord<'a>>>,
}

#[derive(Serialize)]
struct VerboseSegment<'a> {
    id: usize,
    seek: usize,
    start: f64,
    end: f64,
    text: &'a str,
    tokens: &'a [u32],
    temperature: f64,
    avg_logprob: f64,
    compression_ratio: f64,
    no_speech_prob: f64,
}

#[derive(Serialize)]
struct VerboseWord<'a> {
    word: &'a str,
    start: f64,
    end: f64,
}

/// OpenAI's `verbose_json`: `task`, `language` (the name, "english"),
/// `duration`, `text`, then `segments` and/or `words` as `granularities`
/// asks. Segment texts keep Whisper's leading space, as OpenAI's do; words
/// are trimmed, as OpenAI's are.
fn render_verbose_json(t: &Transcript, task: &str, granularities: Granularities) -> String {
    let segments = granularities.segment.then(|| {
        t.segments
            .iter()
            .map(|s| VerboseSegment {
                id: s.id,
                seek: s.seek,
                start: round_time(s.start),
                end: round_time(s.end),
                text: &s.text,
                tokens: &s.tokens,
                temperature: score(s.temperature),
                avg_logprob: score(s.avg_logprob),
                compression_ratio: score(s.compression_ratio),
                no_speech_prob: score(s.no_speech_prob),
            })
            .collect()
    });
    let words = granularities.word.then(|| {
        t.segments
            .iter()
            .flat_map(|s| &s.words)
            .map(|w| (w.word.trim(), w))
            .filter(|(word, _)| !word.is_empty())
            .map(|(word, w)| VerboseWord { word, start: round_time(w.start), end: round_time(w.end) })
            .collect()
    });
    let body = VerboseJson {
        task,
        language: language_name(&t.language),
        language_probability: (t.language_probability as f64 * 1000.0).round() / 1000.0,
        duration: round_time(t.duration),
        text: t.text.trim(),
        segments,
        words,
    };
    serde_json::to_string(&body).expect("serializing plain data cannot fail")
}

/// Whisper's `LANGUAGES` table: code -> lowercase English name, in the
/// order of the language tokens.
pub const LANGUAGES: &[(&str, &str)] = &[
    ("en", "english"),
    ("zh", "chinese"),
    ("de", "german"),
    ("es", "spanish"),
    ("ru", "russian"),
    ("ko", "korean"),
    ("fr", "french"),
    ("ja", "japanese"),
    ("pt", "portuguese"),
    ("tr", "turkish"),
    ("pl", "polish"),
    ("ca", "catalan"),
    ("nl", "dutch"),
    ("ar", "arabic"),
    ("sv", "swedish"),
    ("it", "italian"),
    ("id", "indonesian"),
    ("hi", "hindi"),
    ("fi", "finnish"),
    ("vi", "vietnamese"),
    ("he", "hebrew"),
    ("uk", "ukrainian"),
    ("el", "greek"),
    ("ms", "malay"),
    ("cs", "czech"),
    ("ro", "romanian"),
    ("da", "danish"),
    ("hu", "hungarian"),
    ("ta", "tamil"),
    ("no", "norwegian"),
    ("th", "thai"),
    ("ur", "urdu"),
    ("hr", "croatian"),
    ("bg", "bulgarian"),
    ("lt", "lithuanian"),
    ("la", "latin"),
    ("mi", "maori"),
    ("ml", "malayalam"),
    ("cy", "welsh"),
    ("sk", "slovak"),
    ("te", "telugu"),
    ("fa", "persian"),
    ("lv", "latvian"),
    ("bn", "bengali"),
    ("sr", "serbian"),
    ("az", "azerbaijani"),
    ("sl", "slovenian"),
    ("kn", "kannada"),
    ("et", "estonian"),
    ("mk", "macedonian"),
    ("br", "breton"),
    ("eu", "basque"),
    ("is", "icelandic"),
    ("hy", "armenian"),
    ("ne", "nepali"),
    ("mn", "mongolian"),
    ("bs", "bosnian"),
    ("kk", "kazakh"),
    ("sq", "albanian"),
    ("sw", "swahili"),
    ("gl", "galician"),
    ("mr", "marathi"),
    ("pa", "punjabi"),
    ("si", "sinhala"),
    ("km", "khmer"),
    ("sn", "shona"),
    ("yo", "yoruba"),
    ("so", "somali"),
    ("af", "afrikaans"),
    ("oc", "occitan"),
    ("ka", "georgian"),
    ("be", "belarusian"),
    ("tg", "tajik"),
    ("sd", "sindhi"),
    ("gu", "gujarati"),
    ("am", "amharic"),
    ("yi", "yiddish"),
    ("lo", "lao"),
    ("uz", "uzbek"),
    ("fo", "faroese"),
    ("ht", "haitian creole"),
    ("ps", "pashto"),
    ("tk", "turkmen"),
    ("nn", "nynorsk"),
    ("mt", "maltese"),
    ("sa", "sanskrit"),
    ("lb", "luxembourgish"),
    ("my", "myanmar"),
    ("bo", "tibetan"),
    ("tl", "tagalog"),
    ("mg", "malagasy"),
    ("as", "assamese"),
    ("tt", "tatar"),
    ("haw", "hawaiian"),
    ("ln", "lingala"),
    ("ha", "hausa"),
    ("ba", "bashkir"),
    ("jw", "javanese"),
    ("su", "sundanese"),
    ("yue", "cantonese"),
];

/// The lowercase English name of a Whisper language code ("en" ->
/// "english"), as OpenAI's `verbose_json` reports it. An unknown code is
/// returned as is.
pub fn language_name(code: &str) -> &str {
    LANGUAGES.iter().find(|(c, _)| *c == code).map(|(_, name)| *name).unwrap_or(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Segment, Word};

    fn word(w: &str, start: f64, end: f64) -> Word {
        Word { word: w.to_string(), start, end, probability: 0.9 }
    }

    fn segment(id: usize, start: f64, end: f64, text: &str, words: Vec<Word>) -> Segment {
        Segment {
            id,
            seek: 0,
            start,
            end,
            text: text.to_string(),
            tokens: vec![50364 + id as u32, 400, 50600],
            temperature: 0.0,
            avg_logprob: -0.25,
            compression_ratio: 1.2,
            no_speech_prob: 0.1,
            words,
        }
    }

    fn transcript() -> Transcript {
        Transcript {
            text: " And so, my fellow Americans, ask not. What your country can do.".to_string(),
            segments: vec![
                segment(
                    0,
                    0.0,
                    4.5,
                    " And so, my fellow Americans, ask not.",
                    vec![
                        word(" And", 0.0, 0.3),
                        word(" so,", 0.3, 0.62),
                        word(" my", 0.62, 1.0),
                        word(" fellow", 1.0, 1.5),
                        word(" Americans,", 1.5, 2.5),
                        word(" ask", 3.0, 3.5),
                        word(" not.", 3.5, 4.5),
                    ],
                ),
                segment(
                    1,
                    4.5,
                    10.98,
                    " What your country can do.",
                    vec![
                        word(" What", 5.0, 5.5),
                        word(" your", 5.5, 6.0),
                        word(" country", 6.0, 7.0),
                        word(" can", 7.0, 8.0),
                        word(" do.", 8.0, 10.98),
                    ],
                ),
            ],
            language: "en".to_string(),
            language_probability: 0.99,
            duration: 11.0,
        }
    }

    const SEGMENTS: Granularities = Granularities { segment: true, word: false };

    #[test]
    fn formats_json() {
        let out = render(&transcript(), ResponseFormat::Json, "transcribe", SEGMENTS);
        assert_eq!(out, r#"{"text":"And so, my fellow Americans, ask not. What your country can do."}"#);
    }

    #[test]
    fn formats_text() {
        let out = render(&transcript(), ResponseFormat::Text, "transcribe", SEGMENTS);
        assert_eq!(out, "And so, my fellow Americans, ask not. What your country can do.\n");
    }

    #[test]
    fn formats_srt() {
        let out = render(&transcript(), ResponseFormat::Srt, "transcribe", SEGMENTS);
        assert_eq!(
            out,
            "1\n00:00:00,000 --> 00:00:04,500\nAnd so, my fellow Americans, ask not.\n\n\
             2\n00:00:04,500 --> 00:00:10,980\nWhat your country can do.\n\n"
        );
    }

    #[test]
    fn formats_vtt() {
        let out = render(&transcript(), ResponseFormat::Vtt, "transcribe", SEGMENTS);
        assert_eq!(
            out,
            "WEBVTT\n\n\
             00:00:00.000 --> 00:00:04.500\nAnd so, my fellow Americans, ask not.\n\n\
             00:00:04.500 --> 00:00:10.980\nWhat your country can do.\n\n"
        );
    }

    #[test]
    fn formats_verbose_json_segments_only() {
        let out = render(&transcript(), ResponseFormat::VerboseJson, "transcribe", SEGMENTS);
        let expected = concat!(
            r#"{"task":"transcribe","language":"english","language_probability":0.99,"duration":11.0,"#,
            r#""text":"And so, my fellow Americans, ask not. What your country can do.","#,
            r#""segments":["#,
            r#"{"id":0,"seek":0,"start":0.0,"end":4.5,"text":" And so, my fellow Americans, ask not.","#,
            r#""tokens":[50364,400,50600],"temperature":0.0,"avg_logprob":-0.25,"compression_ratio":1.2,"no_speech_prob":0.1},"#,
            r#"{"id":1,"seek":0,"start":4.5,"end":10.98,"text":" What your country can do.","#,
            r#""tokens":[50365,400,50600],"temperature":0.0,"avg_logprob":-0.25,"compression_ratio":1.2,"no_speech_prob":0.1}"#,
            r#"]}"#
        );
        assert_eq!(out, expected);
    }

    #[test]
    fn formats_verbose_json_words_and_segments() {
        let both = Granularities { segment: true, word: true };
        let out = render(&transcript(), ResponseFormat::VerboseJson, "translate", both);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["task"], "translate");
        assert_eq!(v["segments"].as_array().unwrap().len(), 2);
        let words = v["words"].as_array().unwrap();
        assert_eq!(words.len(), 12);
        assert_eq!(words[0], serde_json::json!({"word": "And", "start": 0.0, "end": 0.3}));
        assert_eq!(words[1], serde_json::json!({"word": "so,", "start": 0.3, "end": 0.62}));
        assert_eq!(words[11], serde_json::json!({"word": "do.", "start": 8.0, "end": 10.98}));
        // Key order: OpenAI's.
        let keys: Vec<&str> = ["\"task\"", "\"language\"", "\"duration\"", "\"text\"", "\"segments\"", "\"words\""]
            .into_iter()
            .collect();
        let positions: Vec<usize> = keys.iter().map(|k| out.find(k).unwrap()).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{out}");
    }

    #[test]
    fn formats_verbose_json_words_only() {
        let words = Granularities { segment: false, word: true };
        let out = render(&transcript(), ResponseFormat::VerboseJson, "transcribe", words);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert!(v.get("segments").is_none(), "{out}");
        assert_eq!(v["words"].as_array().unwrap().len(), 12);
        assert_eq!(v["language"], "english");
    }

    #[test]
    fn formats_verbose_json_rounds_floats() {
        let mut t = transcript();
        t.duration = 11.000_000_4;
        t.segments[0].end = 4.499_999_9;
        t.segments[0].avg_logprob = -0.286_078_6;
        t.segments[0].temperature = 0.2;
        t.segments[0].words[1].start = 0.300_000_000_000_000_04;
        let all = Granularities { segment: true, word: true };
        let out = render(&t, ResponseFormat::VerboseJson, "transcribe", all);
        assert!(out.contains(r#""duration":11.0,"#), "{out}");
        assert!(out.contains(r#""end":4.5,"#), "{out}");
        assert!(out.contains(r#""temperature":0.2,"avg_logprob":-0.2860786,"#), "{out}");
        assert!(out.contains(r#"{"word":"so,","start":0.3,"end":0.62}"#), "{out}");
        // NaN is not JSON: it must not break the body.
        t.segments[0].no_speech_prob = f32::NAN;
        let out = render(&t, ResponseFormat::VerboseJson, "transcribe", all);
        serde_json::from_str::<serde_json::Value>(&out).unwrap();
    }

    #[test]
    fn formats_empty_transcript() {
        let t = Transcript {
            text: String::new(),
            segments: vec![],
            language: "en".into(),
            language_probability: 1.0,
            duration: 0.5,
        };
        let g = Granularities { segment: true, word: true };
        assert_eq!(render(&t, ResponseFormat::Json, "transcribe", g), r#"{"text":""}"#);
        assert_eq!(render(&t, ResponseFormat::Text, "transcribe", g), "\n");
        assert_eq!(render(&t, ResponseFormat::Srt, "transcribe", g), "");
        assert_eq!(render(&t, ResponseFormat::Vtt, "transcribe", g), "WEBVTT\n\n");
        assert_eq!(
            render(&t, ResponseFormat::VerboseJson, "transcribe", g),
            r#"{"task":"transcribe","language":"english","language_probability":1.0,"duration":0.5,"text":"","segments":[],"words":[]}"#
        );
    }

    #[test]
    fn formats_json_escapes_text() {
        let mut t = transcript();
        t.text = " He said \"hi\"\n\\ ünïcødé".into();
        let out = render(&t, ResponseFormat::Json, "transcribe", SEGMENTS);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["text"], "He said \"hi\"\n\\ ünïcødé");
    }

    #[test]
    fn formats_cue_text_cannot_end_the_timing_line() {
        let mut t = transcript();
        t.segments[0].text = " a --> b".into();
        let out = render(&t, ResponseFormat::Srt, "transcribe", SEGMENTS);
        assert!(out.starts_with("1\n00:00:00,000 --> 00:00:04,500\na -> b\n\n"), "{out}");
    }

    #[test]
    fn formats_timestamps_over_one_hour() {
        assert_eq!(format_timestamp(3661.5, ','), "01:01:01,500");
        assert_eq!(format_timestamp(3599.9995, '.'), "01:00:00.000"); // rounds up into the hour
        assert_eq!(format_timestamp(36_000.0 + 59.0 * 60.0 + 59.999, '.'), "10:59:59.999");
        assert_eq!(format_timestamp(100.0 * 3600.0, ','), "100:00:00,000");
        assert_eq!(format_timestamp(-1.0, ','), "00:00:00,000");
        assert_eq!(format_timestamp(f64::NAN, '.'), "00:00:00.000");
        assert_eq!(format_timestamp(0.001, '.'), "00:00:00.001");

        let mut t = transcript();
        t.segments[1].start = 3725.04;
        t.segments[1].end = 7384.2;
        let srt = render(&t, ResponseFormat::Srt, "transcribe", SEGMENTS);
        assert!(srt.contains("2\n01:02:05,040 --> 02:03:04,200\n"), "{srt}");
        let vtt = render(&t, ResponseFormat::Vtt, "transcribe", SEGMENTS);
        assert!(vtt.contains("\n01:02:05.040 --> 02:03:04.200\n"), "{vtt}");
    }

    #[test]
    fn formats_from_str() {
        for (name, f) in [
            ("json", ResponseFormat::Json),
            ("text", ResponseFormat::Text),
            ("srt", ResponseFormat::Srt),
            ("vtt", ResponseFormat::Vtt),
            ("verbose_json", ResponseFormat::VerboseJson),
        ] {
            assert_eq!(name.parse::<ResponseFormat>(), Ok(f));
            assert_eq!(f.as_str(), name);
            assert_eq!(f.to_string(), name);
            // serde agrees with FromStr.
            assert_eq!(serde_json::from_str::<ResponseFormat>(&format!("\"{name}\"")).unwrap(), f);
        }
        for bad in ["xml", "JSON", "", "verbose-json", " json"] {
            let err = bad.parse::<ResponseFormat>().unwrap_err();
            assert_eq!(err, UnknownFormat(bad.to_string()));
            let msg = err.to_string();
            assert!(msg.contains(&format!("'{bad}'")), "{msg}");
            for valid in RESPONSE_FORMATS {
                assert!(msg.contains(valid), "{msg} lacks {valid}");
            }
        }
        assert_eq!(ResponseFormat::default(), ResponseFormat::Json);
    }

    #[test]
    fn formats_content_types() {
        assert_eq!(ResponseFormat::Json.content_type(), "application/json");
        assert_eq!(ResponseFormat::VerboseJson.content_type(), "application/json");
        assert_eq!(ResponseFormat::Text.content_type(), "text/plain; charset=utf-8");
        assert_eq!(ResponseFormat::Srt.content_type(), "text/plain; charset=utf-8");
        assert_eq!(ResponseFormat::Vtt.content_type(), "text/vtt; charset=utf-8");
    }

    #[test]
    fn formats_granularities_from_names() {
        let none: [&str; 0] = [];
        assert_eq!(Granularities::from_names(none), Ok(Granularities { segment: true, word: false }));
        assert_eq!(Granularities::from_names(["word"]), Ok(Granularities { segment: false, word: true }));
        assert_eq!(
            Granularities::from_names(["word", "segment"]),
            Ok(Granularities { segment: true, word: true })
        );
        assert_eq!(Granularities::from_names(["segment"]), Ok(Granularities { segment: true, word: false }));
        assert!(Granularities::from_names(["char"]).unwrap_err().contains("'char'"));
    }

    #[test]
    fn formats_language_names() {
        assert_eq!(LANGUAGES.len(), 100);
        assert_eq!(language_name("en"), "english");
        assert_eq!(language_name("de"), "german");
        assert_eq!(language_name("zh"), "chinese");
        assert_eq!(language_name("ht"), "haitian creole");
        assert_eq!(language_name("haw"), "hawaiian");
        assert_eq!(language_name("jw"), "javanese");
        assert_eq!(language_name("yue"), "cantonese");
        assert_eq!(language_name("xx"), "xx");
        assert_eq!(language_name(""), "");
        let mut codes: Vec<&str> = LANGUAGES.iter().map(|(c, _)| *c).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), 100, "duplicate codes");
        assert!(LANGUAGES.iter().all(|(_, n)| *n == n.to_lowercase()));
    }
}
