//! Per-request options from multipart form fields, shared by `/transcribe`
//! and the OpenAI-compatible routes: parsed, checked against the
//! configured bounds, and laid over the server-wide decoding defaults.

use crate::config::LimitsConfig;
use crate::engine::{DecodeOptions, Task};
use crate::error::{echo, ApiError};
use crate::formats::{Granularities, ResponseFormat, UnknownFormat};

/// Longer than any language code or name Whisper knows ("haitian creole").
const MAX_LANGUAGE_BYTES: usize = 32;

/// What a request asked for.
#[derive(Debug, Clone)]
pub struct RequestOptions {
    pub decode: DecodeOptions,
    /// None: the route's default answer.
    pub response_format: Option<ResponseFormat>,
    pub granularities: Granularities,
    /// The `model` field, if any.
    pub model: Option<String>,
    /// `stream=true`: the OpenAI routes answer with server-sent events
    /// (other routes ignore it).
    pub stream: bool,
}

fn parse_bool(param: &'static str, v: &str) -> Result<bool, ApiError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(ApiError::InvalidParam { param, message: format!("`{}` is not true or false", echo(v)) }),
    }
}

fn parse_bounded(param: &'static str, v: &str, max: usize) -> Result<usize, ApiError> {
    match v.trim().parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(ApiError::InvalidParam { param, message: format!("`{}` is not a whole number from 1 to {max}", echo(v)) }),
    }
}

/// Builds the options of one request. `fields` are the form's text fields
/// in order (a field may repeat, as `timestamp_granularities[]` does);
/// `forced_task` is the translations route's.
pub fn from_fields(
    fields: &[(String, String)],
    defaults: &DecodeOptions,
    limits: &LimitsConfig,
    forced_task: Option<Task>,
) -> Result<RequestOptions, ApiError> {
    let mut decode = defaults.clone();
    let mut response_format = None;
    let mut granularities: Option<Granularities> = None;
    let mut model = None;
    let mut stream = false;
    for (name, value) in fields {
        let v = value.trim();
        match name.as_str() {
            // The engine names an unknown language in its error: a code or
            // name is a few characters, so a longer one is refused here.
            "language" if v.len() > MAX_LANGUAGE_BYTES => {
                return Err(ApiError::InvalidParam { param: "language", message: format!("`{}` is not a language", echo(v)) })
            }
            "language" if !v.is_empty() => decode.language = Some(v.to_ascii_lowercase()),
            "language" => {}
            "task" => {
                decode.task = match v {
                    "transcribe" => Task::Transcribe,
                    "translate" => Task::Translate,
                    _ => {
                        return Err(ApiError::InvalidParam {
                            param: "task",
                            message: format!("`{}` is not transcribe or translate", echo(v)),
                        })
                    }
                }
            }
            "prompt" | "initial_prompt" => decode.initial_prompt = (!v.is_empty()).then(|| v.to_string()),
            "temperature" => {
                let t: f32 = v.parse().ok().filter(|t: &f32| (0.0..=1.0).contains(t)).ok_or_else(|| {
                    ApiError::InvalidParam { param: "temperature", message: format!("`{}` is not a number from 0 to 1", echo(v)) }
                })?;
                // As OpenAI's API: 0 keeps the fallback to higher temperatures.
                if t > 0.0 {
                    decode.temperatures = vec![t];
                }
            }
            "beam_size" => decode.beam_size = parse_bounded("beam_size", v, limits.max_beam_size)?,
            "best_of" => decode.best_of = parse_bounded("best_of", v, limits.max_best_of)?,
            "patience" => {
                decode.patience = v.parse().ok().filter(|p: &f32| *p > 0.0 && *p <= 10.0).ok_or_else(|| {
                    ApiError::InvalidParam { param: "patience", message: format!("`{}` is not a number in (0, 10]", echo(v)) }
                })?
            }
            "length_penalty" => {
                decode.length_penalty = v.parse().ok().filter(|p: &f32| (0.0..=10.0).contains(p)).ok_or_else(|| {
                    ApiError::InvalidParam { param: "length_penalty", message: format!("`{}` is not a number in [0, 10]", echo(v)) }
                })?
            }
            "word_timestamps" => decode.word_timestamps = parse_bool("word_timestamps", v)?,
            "vad_filter" => decode.vad_filter = parse_bool("vad_filter", v)?,
            "vad_parameters" if v.is_empty() => decode.vad_parameters = Default::default(),
            "vad_parameters" => {
                decode.vad_parameters = crate::vad::VadParameters::parse(v)
                    .map_err(|message| ApiError::InvalidParam { param: "vad_parameters", message })?
            }
            "condition_on_previous_text" => {
                decode.condition_on_previous_text = parse_bool("condition_on_previous_text", v)?
            }
            "response_format" => {
                response_format = Some(v.parse::<ResponseFormat>().map_err(|UnknownFormat(given)| ApiError::InvalidParam {
                    param: "response_format",
                    message: UnknownFormat(echo(&given)).to_string(),
                })?)
            }
            "timestamp_granularities[]" | "timestamp_granularities" => {
                let g = granularities.get_or_insert(Granularities { segment: false, word: false });
                for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    match part {
                        "word" => g.word = true,
                        "segment" => g.segment = true,
                        other => {
                            return Err(ApiError::InvalidParam {
                                param: "timestamp_granularities[]",
                                message: format!("`{}` is not word or segment", echo(other)),
                            })
                        }
                    }
                }
            }
            "model" => model = Some(v.to_string()),
            "stream" => stream = parse_bool("stream", v)?,
            // Accepted and ignored, as other OpenAI-compatible servers do.
            "user" | "chunking_strategy" | "include[]" => {}
            other => {
                return Err(ApiError::InvalidParam { param: "form", message: format!("unknown field `{}`", echo(other)) })
            }
        }
    }
    if let Some(task) = forced_task {
        decode.task = task;
    }
    let granularities = granularities.unwrap_or(Granularities { segment: true, word: false });
    if granularities.word {
        decode.word_timestamps = true;
    }
    Ok(RequestOptions { decode, response_format, granularities, model, stream })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn fields_override_defaults_within_bounds() {
        let (d, l) = (DecodeOptions::default(), LimitsConfig::default());
        let o = from_fields(
            &f(&[("language", "DE"), ("beam_size", "3"), ("temperature", "0.4"), ("timestamp_granularities[]", "word"),
                ("timestamp_granularities[]", "segment"), ("response_format", "verbose_json")]),
            &d,
            &l,
            None,
        )
        .unwrap();
        assert_eq!(o.decode.language.as_deref(), Some("de"));
        assert_eq!(o.decode.beam_size, 3);
        assert_eq!(o.decode.temperatures, vec![0.4]);
        assert!(o.decode.word_timestamps && o.granularities.word && o.granularities.segment);
        assert_eq!(o.response_format, Some(ResponseFormat::VerboseJson));
        let zero = from_fields(&f(&[("temperature", "0")]), &d, &l, None).unwrap();
        assert_eq!(zero.decode.temperatures, d.temperatures);
    }

    #[test]
    fn bad_values_name_the_parameter() {
        let (d, l) = (DecodeOptions::default(), LimitsConfig::default());
        for (k, v) in [("beam_size", "99"), ("temperature", "3"), ("response_format", "xml"), ("task", "summarise"),
            ("word_timestamps", "maybe"), ("timestamp_granularities[]", "char"), ("colour", "blue")] {
            match from_fields(&f(&[(k, v)]), &d, &l, None) {
                Err(ApiError::InvalidParam { .. }) => {}
                other => panic!("{k}={v}: {other:?}"),
            }
        }
    }

    #[test]
    fn values_quoted_in_errors_are_cut() {
        let (d, l) = (DecodeOptions::default(), LimitsConfig::default());
        let huge = "9".repeat(100_000);
        for k in ["beam_size", "temperature", "response_format", "task", "word_timestamps", "timestamp_granularities[]", "language", &huge] {
            match from_fields(&f(&[(k, &huge)]), &d, &l, None) {
                Err(e @ ApiError::InvalidParam { .. }) => assert!(e.to_string().len() < 300, "{k}: {}", e.to_string().len()),
                other => panic!("{}: {other:?}", echo(k)),
            }
        }
    }

    #[test]
    fn stream_is_a_bool() {
        let (d, l) = (DecodeOptions::default(), LimitsConfig::default());
        assert!(!from_fields(&f(&[]), &d, &l, None).unwrap().stream);
        assert!(from_fields(&f(&[("stream", "true")]), &d, &l, None).unwrap().stream);
        assert!(!from_fields(&f(&[("stream", "False")]), &d, &l, None).unwrap().stream);
        match from_fields(&f(&[("stream", "sometimes")]), &d, &l, None) {
            Err(ApiError::InvalidParam { param: "stream", .. }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn vad_parameters_are_a_json_object_of_vad_options() {
        let (d, l) = (DecodeOptions::default(), LimitsConfig::default());
        let o = from_fields(&f(&[("vad_filter", "true"), ("vad_parameters", r#"{"threshold": 0.6, "speech_pad_ms": 200}"#)]), &d, &l, None)
            .unwrap();
        assert!(o.decode.vad_filter);
        assert_eq!(o.decode.vad_parameters.threshold, Some(0.6));
        assert_eq!(o.decode.vad_parameters.speech_pad_ms, Some(200));
        assert_eq!(o.decode.vad_parameters.min_silence_duration_ms, None);
        assert!(from_fields(&f(&[("vad_parameters", "")]), &d, &l, None).unwrap().decode.vad_parameters.is_empty());
        for bad in ["0.6", r#"{"threshold": 7}"#, r#"{"size": 1}"#, &"{".repeat(100_000)] {
            match from_fields(&f(&[("vad_parameters", bad)]), &d, &l, None) {
                Err(e @ ApiError::InvalidParam { param: "vad_parameters", .. }) => assert!(e.to_string().len() < 300),
                other => panic!("{}: {other:?}", echo(bad)),
            }
        }
        // A job carries them; one without them reads as before.
        let json = serde_json::to_string(&o.decode).unwrap();
        assert_eq!(serde_json::from_str::<DecodeOptions>(&json).unwrap(), o.decode);
        assert!(!serde_json::to_string(&d).unwrap().contains("vad_parameters"));
    }

    #[test]
    fn the_translations_route_forces_its_task() {
        let o = from_fields(&f(&[("task", "transcribe")]), &DecodeOptions::default(), &LimitsConfig::default(), Some(Task::Translate)).unwrap();
        assert_eq!(o.decode.task, Task::Translate);
    }
}
