//! Decoding like the reference Whisper: long files against faster-whisper,
//! silence, languages and translation (multilingual `base`).

mod common;

use std::process::Command;

use common::*;
use serde_json::{json, Value};

fn norm_words(s: &str) -> Vec<String> {
    s.split_whitespace()
        .map(|w| w.trim_matches(|c: char| !c.is_alphanumeric()).to_lowercase())
        .filter(|w| !w.is_empty())
        .collect()
}

/// POSTs to /transcribe with extra form fields.
fn transcribe_with(server: &Server, path: &std::path::Path, fields: &[(&str, &str)]) -> (u16, Value) {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("a.wav").to_string();
    let mut form = reqwest::blocking::multipart::Form::new()
        .part("audio_file", reqwest::blocking::multipart::Part::bytes(std::fs::read(path).unwrap()).file_name(name));
    for (k, v) in fields {
        form = form.text(k.to_string(), v.to_string());
    }
    let r = client().post(format!("{}/transcribe", server.url)).multipart(form).send().expect("request");
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

#[test]
fn the_whole_corpus_as_one_file_decodes_as_well_as_faster_whisper() {
    let tmp = tempfile::tempdir().unwrap();
    let (long, bounds) = concat_corpus(tmp.path(), f64::INFINITY);
    let total = bounds.last().map_or(0.0, |b| b.0);
    assert!(total >= 300.0, "{total} s");
    let reference = bounds.iter().map(|b| b.1.as_str()).collect::<Vec<_>>().join(" ");

    let server = Server::start(test_config(json!({})));
    let (status, body) = transcribe_with(&server, &long, &[("response_format", "verbose_json")]);
    assert_eq!(status, 200, "{body}");
    let ours = body["text"].as_str().unwrap_or_default().to_string();

    let fw = Command::new(python())
        .arg(repo().join("tests/support/fw_transcribe.py"))
        .arg(model_dir().join("tiny.en"))
        .arg(&long)
        .output()
        .expect("faster-whisper in the test venv");
    assert!(fw.status.success(), "{}", String::from_utf8_lossy(&fw.stderr));
    let theirs = String::from_utf8_lossy(&fw.stdout).trim().to_string();
    let (our_wer, fw_wer) = (wer(&[(reference.clone(), ours.clone())]), wer(&[(reference.clone(), theirs)]));
    eprintln!("{total:.0} s file: WER ours {our_wer:.4}, faster-whisper {fw_wer:.4}");
    assert!(our_wer <= fw_wer + 0.01, "WER {our_wer:.4} vs faster-whisper {fw_wer:.4}");

    // No reference sentence missing.
    let got: std::collections::HashSet<String> = norm_words(&ours).into_iter().collect();
    for (_, r) in &bounds {
        let want: Vec<String> = norm_words(r).into_iter().filter(|w| w.len() > 3).collect();
        let found = want.iter().filter(|w| got.contains(*w)).count();
        assert!(found * 2 >= want.len(), "sentence missing: {r}");
    }

    // Segments: increasing, inside the audio; where a clip's last words end
    // a segment, that segment ends within 1 s of the clip's end.
    let segments = body["segments"].as_array().expect("segments");
    let mut last = 0.0;
    for s in segments {
        let (start, end) = (s["start"].as_f64().unwrap(), s["end"].as_f64().unwrap());
        assert!(start >= last - 0.01 && end >= start && end <= total + 0.5, "segment out of order: {s}");
        last = start;
    }
    // A segment that ends with a clip's last three words, near that clip's
    // end, ends within 1 s of it. (Two clips can end alike, "... he could
    // wait no longer": a segment is held to the nearest of them.)
    let tail = |text: &str| norm_words(text).into_iter().rev().take(3).collect::<Vec<_>>();
    let mut checked = 0;
    for s in segments {
        let words = tail(s["text"].as_str().unwrap_or_default());
        let seg_end = s["end"].as_f64().unwrap();
        let nearest = bounds
            .iter()
            .filter(|(end_time, r)| (end_time - seg_end).abs() < 8.0 && tail(r) == words)
            .min_by(|a, b| (a.0 - seg_end).abs().total_cmp(&(b.0 - seg_end).abs()));
        if let Some((end_time, r)) = nearest {
            assert!((seg_end - end_time).abs() <= 1.0, "segment ends at {seg_end}, clip at {end_time:.2}: {r}");
            checked += 1;
        }
    }
    assert!(checked >= bounds.len() / 4, "only {checked} clip ends matched a segment end");
}

#[test]
fn silence_and_low_noise_give_empty_text_with_and_without_vad() {
    let tmp = tempfile::tempdir().unwrap();
    let zeros = tmp.path().join("zeros.wav");
    let noise = tmp.path().join("noise.wav");
    tool("sox", &["-n", "-r", "16000", "-c", "1", "-b", "16", zeros.to_str().unwrap(), "trim", "0", "60"]);
    tool("sox", &["-n", "-r", "16000", "-c", "1", "-b", "16", noise.to_str().unwrap(), "synth", "60", "whitenoise", "vol", "0.01"]);
    let server = Server::start(test_config(json!({})));
    for file in [&zeros, &noise] {
        for vad in ["false", "true"] {
            let (status, body) = transcribe_with(&server, file, &[("vad_filter", vad)]);
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["text"], "", "{} with vad_filter={vad}: {body}", file.display());
        }
    }
}

#[test]
fn vad_keeps_timestamps_on_the_original_timeline() {
    // Two different clips with 20 s of silence between them. (The same clip
    // twice repeats its text, which trips Whisper's compression-ratio check
    // and leaves the answer to temperature sampling.)
    let tmp = tempfile::tempdir().unwrap();
    let (gap, silence) = (tmp.path().join("gap.wav"), tmp.path().join("silence.wav"));
    tool("sox", &["-n", "-r", "16000", "-c", "1", "-b", "16", silence.to_str().unwrap(), "trim", "0", "20"]);
    // The corpus's first clip, alone, at 16 kHz.
    let (second, bounds) = concat_corpus(tmp.path(), 0.0);
    let (second_s, reference) = bounds[0].clone();
    let j = jfk_wav();
    tool("sox", &[j.to_str().unwrap(), silence.to_str().unwrap(), second.to_str().unwrap(), gap.to_str().unwrap()]);
    let starts_at = 11.0 + 20.0;

    let server = Server::start(test_config(json!({})));
    let (status, body) = transcribe_with(&server, &gap, &[("vad_filter", "true"), ("response_format", "verbose_json"), ("timestamp_granularities[]", "word")]);
    assert_eq!(status, 200, "{body}");
    let got = norm_words(body["text"].as_str().unwrap_or_default());
    assert!(got.contains(&"fellow".to_string()) && got.contains(&"americans".to_string()), "{body}");
    let want = norm_words(&reference);
    assert!(want.iter().filter(|w| got.contains(*w)).count() * 2 >= want.len(), "second clip missing: {body}");

    // Nothing is said in the silence; the second clip's words lie where that
    // clip is in the original file, not where VAD moved it to (within word
    // timing's precision: the clip's first word starts right at its start).
    let starts: Vec<f64> = body["words"].as_array().expect("words").iter().filter_map(|w| w["start"].as_f64()).collect();
    let silence_ends = starts_at - 0.5;
    assert!(starts.iter().all(|t| !(12.0..silence_ends).contains(t)), "a word in the silence: {body}");
    let first = starts.iter().copied().find(|t| *t >= silence_ends).expect("words of the second clip");
    assert!(first < starts_at + 2.0, "second clip's first word at {first} s");
    let last_end = body["words"].as_array().and_then(|w| w.last()).and_then(|w| w["end"].as_f64()).unwrap_or_default();
    assert!(last_end <= starts_at + second_s + 0.5, "last word ends at {last_end} s, audio at {:.2}", starts_at + second_s);
}

fn espeak(dir: &std::path::Path, voice: &str, text: &str) -> std::path::PathBuf {
    let out = dir.join(format!("{voice}.wav"));
    tool("espeak-ng", &["-v", voice, "-w", out.to_str().unwrap(), text]);
    out
}

#[test]
fn base_detects_german_french_spanish_and_translates_spanish() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(test_config(json!({"model": {"size": "base"}})));
    for (voice, code, text) in [
        ("de", "de", "Guten Morgen, wie geht es Ihnen heute? Das Wetter ist schön, und wir gehen spazieren."),
        ("fr", "fr", "Bonjour, comment allez-vous aujourd'hui? Il fait beau, et nous allons nous promener."),
        ("es", "es", "Buenos días, ¿cómo está usted hoy? Hace buen tiempo, y vamos a pasear."),
    ] {
        let wav = espeak(tmp.path(), voice, text);
        let (status, body) = transcribe_with(&server, &wav, &[("response_format", "verbose_json")]);
        assert_eq!(status, 200, "{body}");
        let name = whisper_serve::formats::language_name(code);
        assert_eq!(body["language"], name, "{voice}: {body}");
    }
    let es = espeak(tmp.path(), "es", "Buenos días, ¿cómo está usted hoy? Hace buen tiempo.");
    let (status, body) = transcribe_with(&server, &es, &[("task", "translate"), ("language", "es")]);
    assert_eq!(status, 200, "{body}");
    let text = body["text"].as_str().unwrap_or_default().to_lowercase();
    assert!(text.contains("good morning") && text.contains("how are you"), "translation: {text}");
}

#[test]
fn english_only_models_refuse_other_languages_and_translation() {
    let server = Server::start(test_config(json!({})));
    for fields in [&[("language", "de")][..], &[("task", "translate")][..]] {
        let (status, body) = transcribe_with(&server, &jfk_wav(), fields);
        assert_eq!(status, 400, "{fields:?}: {body}");
        assert!(body["error"].as_str().unwrap_or_default().contains("English-only"), "{body}");
    }
}

#[test]
fn an_initial_prompt_steers_the_spelling() {
    let server = Server::start(test_config(json!({})));
    let (status, plain) = transcribe_with(&server, &jfk_wav(), &[]);
    assert_eq!(status, 200);
    // Whisper follows a prompt's style: all lower case, no punctuation.
    let (status, body) =
        transcribe_with(&server, &jfk_wav(), &[("prompt", "and so my fellow americans ask not what your country can do")]);
    assert_eq!(status, 200, "{body}");
    assert_ne!(plain["text"], body["text"], "the prompt changed nothing");
    let wer = wer(&[(JFK_TEXT.to_string(), body["text"].as_str().unwrap_or_default().to_string())]);
    assert!(wer <= 0.1, "{body}");
}
