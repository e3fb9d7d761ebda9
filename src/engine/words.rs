//! Word-level timestamps, as faster-whisper computes them: CTranslate2
//! aligns the text tokens to encoder frames through the cross-attention
//! heads named in the model's config (dynamic time warping), tokens are
//! grouped into words, punctuation is merged into its neighbours as
//! openai-whisper does, and over-long words at pauses are trimmed.

use serde::{Deserialize, Serialize};

use super::tokenizer::Tokenizer;
use super::{EngineError, Segment};
use crate::ct2::sys::{StorageView, Whisper};

/// Encoder positions per second (1500 for 30 s).
const TOKENS_PER_SECOND: f64 = 50.0;
const MEDIAN_FILTER_WIDTH: i64 = 7;
pub const PREPEND_PUNCTUATIONS: &str = "\"'“¿([{-";
pub const APPEND_PUNCTUATIONS: &str = "\"'.。,，!！?？:：”)]}、";
const SENTENCE_END_MARKS: &str = ".。!！?？";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Word {
    pub word: String,
    pub start: f64,
    pub end: f64,
    pub probability: f32,
}

/// A word as aligned, before it is placed in its segment.
#[derive(Debug, Clone, PartialEq)]
struct Timing {
    word: String,
    tokens: Vec<u32>,
    start: f64,
    end: f64,
    probability: f32,
}

/// Adds `words` to `segments` (one window's segments, in order), which
/// were decoded from `encoded`. Returns the new last speech timestamp.
/// With `fit_segments` (openai-whisper's behaviour) edge words and segment
/// times are fitted to each other; without, the words keep the alignment's
/// own times and the segments theirs (engine::pack cuts segments by word
/// times, where a segment's timestamps are the part not to be trusted).
#[allow(clippy::too_many_arguments)]
pub(super) fn add_word_timestamps(
    whisper: &Whisper,
    tk: &Tokenizer,
    sot_sequence: &[u32],
    encoded: &StorageView,
    num_frames: usize,
    time_offset: f64,
    segments: &mut [Segment],
    mut last_speech_timestamp: f64,
    cjk: bool,
    fit_segments: bool,
) -> Result<f64, EngineError> {
    let per_segment: Vec<Vec<u32>> =
        segments.iter().map(|s| s.tokens.iter().copied().filter(|&t| t < tk.eot).collect()).collect();
    let text_tokens: Vec<u32> = per_segment.iter().flatten().copied().collect();
    if text_tokens.is_empty() {
        return Ok(last_speech_timestamp);
    }
    let start: Vec<usize> = sot_sequence.iter().map(|&t| t as usize).collect();
    let text: Vec<usize> = text_tokens.iter().map(|&t| t as usize).collect();
    let result = whisper
        .align(encoded, &start, &[text], &[num_frames], MEDIAN_FILTER_WIDTH)
        .map_err(|e| EngineError::Inference(format!("alignment failed: {e}")))?;
    let Some(result) = result.into_iter().next() else { return Ok(last_speech_timestamp) };
    let pairs: Vec<(i64, i64)> = result.alignments.iter().map(|a| (a.token_x, a.frame_x)).collect();
    let mut timings = find_alignment(tk, &text_tokens, &pairs, &result.text_token_probs, cjk);

    let mut durations: Vec<f64> = timings.iter().map(|t| t.end - t.start).filter(|d| *d != 0.0).collect();
    durations.sort_by(f64::total_cmp);
    let median = if durations.is_empty() {
        0.0
    } else if durations.len() % 2 == 1 {
        durations[durations.len() / 2]
    } else {
        (durations[durations.len() / 2 - 1] + durations[durations.len() / 2]) / 2.0
    };
    let median = median.min(0.7);
    let max_duration = median * 2.0;
    if !durations.is_empty() {
        // Words at sentence boundaries are not longer than twice the median.
        for i in 1..timings.len() {
            if timings[i].end - timings[i].start > max_duration {
                if SENTENCE_END_MARKS.contains(timings[i].word.as_str()) {
                    timings[i].end = timings[i].start + max_duration;
                } else if SENTENCE_END_MARKS.contains(timings[i - 1].word.as_str()) {
                    timings[i].start = timings[i].end - max_duration;
                }
            }
        }
    }
    merge_punctuations(&mut timings, PREPEND_PUNCTUATIONS, APPEND_PUNCTUATIONS);

    let mut word_index = 0;
    for (segment, tokens) in segments.iter_mut().zip(&per_segment) {
        let mut saved_tokens = 0;
        let mut words = Vec::new();
        while word_index < timings.len() && saved_tokens < tokens.len() {
            let t = &timings[word_index];
            if !t.word.is_empty() {
                words.push(Word {
                    word: t.word.clone(),
                    start: round2(time_offset + t.start),
                    end: round2(time_offset + t.end),
                    probability: t.probability,
                });
            }
            saved_tokens += t.tokens.len();
            word_index += 1;
        }
        if !words.is_empty() && fit_segments {
            // The first words after a pause are not longer than twice the median.
            if words[0].end - last_speech_timestamp > median * 4.0
                && (words[0].end - words[0].start > max_duration
                    || (words.len() > 1 && words[1].end - words[0].start > max_duration * 2.0))
            {
                if words.len() > 1 && words[1].end - words[1].start > max_duration {
                    let boundary = (words[1].end / 2.0).max(words[1].end - max_duration);
                    words[0].end = boundary;
                    words[1].start = boundary;
                }
                words[0].start = (words[0].end - max_duration).max(0.0);
            }
            // Prefer the segment's timestamps where the edge words are too long.
            if segment.start < words[0].end && segment.start - 0.5 > words[0].start {
                words[0].start = (words[0].end - median).min(segment.start).max(0.0);
            } else {
                segment.start = words[0].start;
            }
            let last = words.len() - 1;
            if segment.end > words[last].start && segment.end + 0.5 < words[last].end {
                words[last].end = (words[last].start + median).max(segment.end);
            } else {
                segment.end = words[last].end;
            }
            last_speech_timestamp = segment.end;
        }
        segment.words = words;
    }
    Ok(last_speech_timestamp)
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Groups tokens into words and reads each word's start and end from the
/// alignment path: the frames where the path moves to the word's first
/// token and to the next word's.
fn find_alignment(tk: &Tokenizer, text_tokens: &[u32], pairs: &[(i64, i64)], probs: &[f32], cjk: bool) -> Vec<Timing> {
    let mut with_eot = text_tokens.to_vec();
    with_eot.push(tk.eot);
    let (words, word_tokens) = split_to_words(tk, &with_eot, cjk);
    if word_tokens.len() <= 1 {
        return Vec::new();
    }
    let mut boundaries = vec![0usize];
    for t in &word_tokens[..word_tokens.len() - 1] {
        boundaries.push(boundaries.last().copied().unwrap_or(0) + t.len());
    }
    let jump_times: Vec<f64> = pairs
        .iter()
        .enumerate()
        .filter(|(i, p)| *i == 0 || pairs[i - 1].0 != p.0)
        .map(|(_, p)| p.1 as f64 / TOKENS_PER_SECOND)
        .collect();
    let mut out = Vec::new();
    for k in 0..boundaries.len() - 1 {
        let (i, j) = (boundaries[k], boundaries[k + 1]);
        let (Some(&start), Some(&end)) = (jump_times.get(i), jump_times.get(j)) else { break };
        let p = probs.get(i..j.min(probs.len())).unwrap_or(&[]);
        let probability = if p.is_empty() { 0.0 } else { p.iter().sum::<f32>() / p.len() as f32 };
        out.push(Timing { word: words[k].clone(), tokens: word_tokens[k].clone(), start, end, probability });
    }
    out
}

/// Splits tokens into words: at spaces and punctuation, or, for languages
/// written without spaces, at every complete character.
fn split_to_words(tk: &Tokenizer, tokens: &[u32], cjk: bool) -> (Vec<String>, Vec<Vec<u32>>) {
    let (subwords, subword_tokens) = split_on_unicode(tk, tokens);
    if cjk {
        return (subwords, subword_tokens);
    }
    let mut words: Vec<String> = Vec::new();
    let mut word_tokens: Vec<Vec<u32>> = Vec::new();
    for (sub, toks) in subwords.into_iter().zip(subword_tokens) {
        let special = toks.first().is_some_and(|&t| t >= tk.eot);
        let with_space = sub.starts_with(' ');
        let trimmed = sub.trim();
        let punctuation = trimmed.len() == 1 && trimmed.chars().all(|c| c.is_ascii_punctuation());
        if special || with_space || punctuation || words.is_empty() {
            words.push(sub);
            word_tokens.push(toks);
        } else if let (Some(w), Some(t)) = (words.last_mut(), word_tokens.last_mut()) {
            w.push_str(&sub);
            t.extend(toks);
        }
    }
    (words, word_tokens)
}

/// Cuts where the bytes so far form whole UTF-8 characters; a special
/// token is a piece of its own.
fn split_on_unicode(tk: &Tokenizer, tokens: &[u32]) -> (Vec<String>, Vec<Vec<u32>>) {
    let mut words = Vec::new();
    let mut word_tokens = Vec::new();
    let mut current: Vec<u32> = Vec::new();
    for &t in tokens {
        if t >= tk.eot {
            if !current.is_empty() {
                words.push(tk.decode(&current));
                word_tokens.push(std::mem::take(&mut current));
            }
            words.push(tk.token(t).unwrap_or_default().to_string());
            word_tokens.push(vec![t]);
            continue;
        }
        current.push(t);
        let bytes = tk.decode_bytes(&current);
        if std::str::from_utf8(&bytes).is_ok() {
            words.push(String::from_utf8_lossy(&bytes).into_owned());
            word_tokens.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        words.push(tk.decode(&current));
        word_tokens.push(current);
    }
    (words, word_tokens)
}

/// openai-whisper's merge: opening punctuation joins the next word,
/// closing punctuation the previous one.
fn merge_punctuations(a: &mut [Timing], prepended: &str, appended: &str) {
    if a.len() < 2 {
        return;
    }
    let mut i = a.len() as isize - 2;
    let mut j = a.len() - 1;
    while i >= 0 {
        let iu = i as usize;
        if a[iu].word.starts_with(' ') && prepended.contains(a[iu].word.trim()) && !a[iu].word.trim().is_empty() {
            let (w, t) = (std::mem::take(&mut a[iu].word), std::mem::take(&mut a[iu].tokens));
            a[j].word = w + &a[j].word;
            let mut tokens = t;
            tokens.append(&mut a[j].tokens);
            a[j].tokens = tokens;
        } else {
            j = iu;
        }
        i -= 1;
    }
    let (mut i, mut j) = (0usize, 1usize);
    while j < a.len() {
        if !a[i].word.ends_with(' ') && !a[j].word.is_empty() && appended.contains(a[j].word.as_str()) {
            let (w, t) = (std::mem::take(&mut a[j].word), std::mem::take(&mut a[j].tokens));
            a[i].word.push_str(&w);
            a[i].tokens.extend(t);
        } else {
            i = j;
        }
        j += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(word: &str) -> Timing {
        Timing { word: word.into(), tokens: vec![1], start: 0.0, end: 0.0, probability: 1.0 }
    }

    #[test]
    fn punctuation_joins_its_neighbours() {
        let mut a = vec![t(" \""), t("Hello"), t(","), t(" world"), t("."), t("\"")];
        merge_punctuations(&mut a, PREPEND_PUNCTUATIONS, APPEND_PUNCTUATIONS);
        let words: Vec<&str> = a.iter().map(|x| x.word.as_str()).filter(|w| !w.is_empty()).collect();
        assert_eq!(words, vec![" \"Hello,", " world.\""]);
        assert_eq!(a[1].tokens.len(), 3);
    }
}
