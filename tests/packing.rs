//! Packing short requests into one 30 s window (`batching.pack_short_clips`):
//! each request's answer is what it would be alone, requests that must not
//! share a window never do, and clips cut mid-word keep their neighbours'
//! words.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use common::*;
use serde_json::{json, Value};

/// Lower-case words.
fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !c.is_alphanumeric() && c != '\'')
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// Runs of three words of `packed` found neither in the clip's own
/// unpacked answer nor in its reference, but in another clip's answer:
/// text moved from a neighbour. (Single words are too common to tell.)
fn moved_words(packed: &str, alone: &str, reference: &str, others: &[&str]) -> Vec<String> {
    let trigrams = |t: &str| -> std::collections::HashSet<String> { words(t).windows(3).map(|w| w.join(" ")).collect() };
    let known: std::collections::HashSet<String> = trigrams(alone).into_iter().chain(trigrams(reference)).collect();
    let elsewhere: std::collections::HashSet<String> = others.iter().flat_map(|o| trigrams(o)).collect();
    let mut moved: Vec<String> = trigrams(packed).into_iter().filter(|g| !known.contains(g) && elsewhere.contains(g)).collect();
    moved.sort();
    moved
}

fn server(pack: bool, model: &str) -> Server {
    Server::start(test_config(json!({
        "model": {"size": model},
        "deployment": {"num_replicas": 1, "cpu_per_replica": 2},
        // Room for a burst of 16 to be taken in one round.
        "batching": {"max_batch_size": 8, "max_wait_ms": 200, "pack_short_clips": pack},
    })))
}

fn short_clips(n: usize) -> Vec<(PathBuf, String)> {
    corpus()
        .into_iter()
        .filter(|(p, _)| std::fs::metadata(p).map(|m| m.len() < 12 * 32_000).unwrap_or(false))
        .take(n)
        .collect()
}

/// Sends every file at once; returns the verbose_json answers in order.
fn burst(server: &Server, files: &[(PathBuf, Vec<(&'static str, String)>)]) -> Vec<Value> {
    let url = Arc::new(format!("{}/v1/audio/transcriptions", server.url));
    let threads: Vec<_> = files
        .iter()
        .cloned()
        .map(|(path, fields)| {
            let url = url.clone();
            std::thread::spawn(move || {
                let mut form = reqwest::blocking::multipart::Form::new()
                    .part("file", reqwest::blocking::multipart::Part::bytes(std::fs::read(&path).expect("clip")).file_name("clip.wav"))
                    .text("model", "whisper-1")
                    .text("response_format", "verbose_json");
                for (k, v) in fields {
                    form = form.text(k, v);
                }
                let r = client().post(url.as_str()).multipart(form).send().expect("post");
                assert_eq!(r.status().as_u16(), 200);
                r.json::<Value>().expect("json")
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().expect("client")).collect()
}

/// Sends 16 short clips at once to a server without packing and one with;
/// checks each packed answer's shape and that no neighbour's text moved
/// into it. Returns (agreement WER, WER vs references alone, packed).
fn packed_vs_alone() -> (f64, f64, f64) {
    let clips = short_clips(16);
    assert_eq!(clips.len(), 16, "need 16 short clips in ../shared/speech");
    let files: Vec<_> = clips.iter().map(|(p, _)| (p.clone(), Vec::new())).collect();
    let alone = burst(&server(false, "tiny.en"), &files);
    let packing = server(true, "tiny.en");
    let packed = burst(&packing, &files);
    let windows = packing.metric("whisper_serve_packed_windows_total");
    let requests = packing.metric("whisper_serve_packed_requests_total");
    let redone = packing.metric("whisper_serve_packed_redo_total");
    assert!(windows >= 1.0 && requests > windows, "no window held several requests: {windows} windows, {requests} requests");
    // Most answers come from the packed windows themselves (a segment that
    // runs on into the next clip is cut between its words).
    assert!(redone < requests, "all {requests} packed requests were decoded again alone");

    let mut pairs = Vec::new();
    let (mut ref_alone, mut ref_packed) = (Vec::new(), Vec::new());
    let all_texts: Vec<&str> = alone.iter().map(|a| a["text"].as_str().unwrap_or("")).collect();
    for (i, ((a, p), (path, reference))) in alone.iter().zip(&packed).zip(&clips).enumerate() {
        let (a_text, p_text) = (a["text"].as_str().unwrap_or(""), p["text"].as_str().unwrap_or(""));
        let others: Vec<&str> = all_texts.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, t)| *t).collect();
        pairs.push((a_text.to_string(), p_text.to_string()));
        ref_alone.push((reference.clone(), a_text.to_string()));
        ref_packed.push((reference.clone(), p_text.to_string()));
        // No text moved in from a neighbour.
        let moved = moved_words(p_text, a_text, reference, &others);
        assert!(moved.is_empty(), "{}: packed answer has a neighbour's words {moved:?}: {p_text:?} (alone: {a_text:?})", path.display());
        // The same fields, and times inside the clip's own audio.
        let keys = |v: &Value| v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()).unwrap_or_default();
        assert_eq!(keys(a), keys(p), "{}", path.display());
        let duration = p["duration"].as_f64().expect("duration");
        assert!((duration - a["duration"].as_f64().expect("duration")).abs() < 0.01);
        for s in p["segments"].as_array().expect("segments") {
            let (start, end) = (s["start"].as_f64().expect("start"), s["end"].as_f64().expect("end"));
            assert!(0.0 <= start && start <= end && end <= duration + 0.01, "{}: segment {s} outside 0..{duration}", path.display());
        }
        assert_eq!(p["segments"][0]["id"], 0);
    }
    let agreement = wer(&pairs);
    let (w_alone, w_packed) = (wer(&ref_alone), wer(&ref_packed));
    eprintln!("16 clips: packed vs alone WER {agreement:.4}; vs references alone {w_alone:.4}, packed {w_packed:.4}; \
        {windows} packed windows held {requests} requests, {redone} decoded again");
    (agreement, w_alone, w_packed)
}

#[test]
fn packed_answers_keep_their_shape_and_their_own_text() {
    let _ = packed_vs_alone();
}

/// Issue 12's bar for making packing a default: over 16 short clips sent
/// at once, packed and unpacked answers agree to WER <= 0.01 and accuracy
/// does not drop. Measured 0.035-0.06, and no packing can meet it: the
/// same clip decoded alone, silence elsewhere, starting 5 s into the window
/// instead of at 0 s already differs by 2.1-3.4 % of words (3.6-4.8 % at 10 s;
/// `bench/packing_position.py`, BENCHMARKS.md "Short requests sharing a
/// window"), and in a packed window every clip but the first starts late.
/// Kept so the bar can be measured: run with `--ignored`.
#[test]
#[ignore = "issue 12's bar cannot be met by packing (position in the window changes Whisper's answer); see BENCHMARKS.md"]
fn packed_accuracy_matches_unpacked() {
    let (agreement, w_alone, w_packed) = packed_vs_alone();
    assert!(w_packed <= w_alone + 0.002, "packing raised WER: {w_alone:.4} -> {w_packed:.4}");
    assert!(agreement <= 0.01, "packed answers differ from unpacked ones: WER {agreement:.4}");
}

#[test]
fn requests_that_differ_are_never_packed_together() {
    let clips = short_clips(8);
    // Eight prompts, all different: no two requests may share a window.
    let files: Vec<_> = clips.iter().enumerate().map(|(i, (p, _))| (p.clone(), vec![("prompt", format!("Chapter {i}."))])).collect();
    let s = server(true, "tiny.en");
    burst(&s, &files);
    assert_eq!(s.metric("whisper_serve_packed_windows_total"), 0.0, "different prompts were packed together");
    // Languages and tasks (multilingual model): en/de x transcribe/translate, two each.
    let base = server(true, "base");
    let combos = [("en", "transcribe"), ("de", "transcribe"), ("en", "translate"), ("de", "translate")];
    let files: Vec<_> = clips
        .iter()
        .enumerate()
        .map(|(i, (p, _))| {
            let (lang, task) = combos[i % 4];
            (p.clone(), vec![("language", lang.to_string()), ("task", task.to_string())])
        })
        .collect();
    burst(&base, &files);
    let windows = base.metric("whisper_serve_packed_windows_total");
    let requests = base.metric("whisper_serve_packed_requests_total");
    // At most the four pairs, each a window of two alike.
    assert!(requests <= 2.0 * windows && windows <= 4.0, "{windows} windows, {requests} requests");
    // And without a language nothing is packed (detection is per request).
    let before = base.metric("whisper_serve_packed_windows_total");
    burst(&base, &clips.iter().map(|(p, _)| (p.clone(), Vec::new())).collect::<Vec<_>>());
    assert_eq!(base.metric("whisper_serve_packed_windows_total"), before, "requests without a language were packed");
}

#[test]
fn a_clip_cut_mid_word_does_not_take_its_neighbours_words() {
    let dir = tempfile::tempdir().expect("tmp");
    // JFK cut at 2.6 s, inside "Americans"; then full clips around it.
    let cut = dir.path().join("cut.wav");
    tool("sox", &[jfk_wav().to_str().expect("path"), cut.to_str().expect("path"), "trim", "0", "2.6"]);
    let clips = short_clips(4);
    let mut files: Vec<_> = vec![(clips[0].0.clone(), Vec::new()), (cut.clone(), Vec::new()), (clips[1].0.clone(), Vec::new())];
    files.extend(clips[2..4].iter().map(|(p, _)| (p.clone(), Vec::new())));
    let alone = burst(&server(false, "tiny.en"), &files);
    let packing = server(true, "tiny.en");
    let packed = burst(&packing, &files);
    assert!(packing.metric("whisper_serve_packed_requests_total") >= 2.0, "nothing was packed");
    let refs = [clips[0].1.clone(), JFK_TEXT.to_string(), clips[1].1.clone(), clips[2].1.clone(), clips[3].1.clone()];
    let all_texts: Vec<&str> = alone.iter().map(|a| a["text"].as_str().unwrap_or("")).collect();
    for (i, ((a, p), reference)) in alone.iter().zip(&packed).zip(&refs).enumerate() {
        let (a, p) = (a["text"].as_str().unwrap_or(""), p["text"].as_str().unwrap_or(""));
        let others: Vec<&str> = all_texts.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, t)| *t).collect();
        let moved = moved_words(p, a, reference, &others);
        assert!(moved.is_empty(), "clip {i}: a neighbour's words {moved:?}: packed {p:?}, alone {a:?}");
        // Neighbours keep their words: no worse against their reference.
        if i != 1 {
            let (wa, wp) = (wer(&[(reference.clone(), a.to_string())]), wer(&[(reference.clone(), p.to_string())]));
            assert!(wp <= wa + 0.05, "clip {i}: alone {a:?} ({wa:.3}), packed {p:?} ({wp:.3})");
        }
    }
    // The cut clip says only its own words.
    let cut_text = packed[1]["text"].as_str().unwrap_or("").to_lowercase();
    assert!(!cut_text.contains("country"), "{cut_text}");
}
