//! Accuracy through the real service: corpus WER over all of
//! ../shared/speech, and a 3-minute file made of those clips.

mod common;

use std::collections::HashSet;

use common::*;
use serde_json::json;

#[test]
fn corpus_wer_over_shared_speech_is_at_most_8_percent() {
    let server = Server::start(test_config(json!({})));
    let clips = corpus();
    assert!(clips.len() >= 40, "expected the whole corpus, found {}", clips.len());
    let mut pairs = Vec::new();
    for (path, reference) in &clips {
        let (status, body) = transcribe_file(&server, path);
        assert_eq!(status, 200, "{}: {body}", path.display());
        pairs.push((reference.clone(), body["text"].as_str().unwrap_or_default().to_string()));
    }
    let wer = wer(&pairs);
    eprintln!("corpus WER over {} clips: {wer:.4}", pairs.len());
    assert!(wer <= 0.08, "corpus WER {wer:.4} > 0.08");
}

fn words(s: &str) -> HashSet<String> {
    s.split_whitespace()
        .map(|w| w.trim_matches(|c: char| !c.is_alphanumeric()).to_lowercase())
        .filter(|w| w.len() > 3)
        .collect()
}

#[test]
fn a_three_minute_file_is_transcribed_in_full() {
    let tmp = tempfile::tempdir().unwrap();
    let (long, bounds) = concat_corpus(tmp.path(), 180.0);
    let total = bounds.last().map_or(0.0, |b| b.0);
    let refs: Vec<String> = bounds.into_iter().map(|b| b.1).collect();
    assert!(total >= 180.0, "only {total} s of speech");

    let server = Server::start(test_config(json!({})));
    let (status, body) = transcribe_file(&server, &long);
    assert_eq!(status, 200, "{body}");
    let text = body["text"].as_str().unwrap_or_default().to_string();
    let wer = wer(&[(refs.join(" "), text.clone())]);
    eprintln!("{total:.0} s file, {} clips: WER {wer:.4}", refs.len());
    assert!(wer <= 0.10, "WER {wer:.4} on the {total:.0} s file: {text}");
    // No sentence lost at a 30 s window boundary.
    let got = words(&text);
    for r in &refs {
        let want = words(r);
        let found = want.iter().filter(|w| got.contains(*w)).count();
        assert!(found * 2 >= want.len(), "sentence missing from the long transcript: {r}");
    }
}
