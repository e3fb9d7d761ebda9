//! Packing: several short requests decoded in one 30 s window. On CPU the
//! encoder is most of the work and always sees a full window, so an 8 s
//! request pays for 30 s; laid end to end, three of them pay once.
//!
//! Each request keeps its own features: its log-mel is computed alone
//! (Whisper normalises to the loudest frame, so a quiet clip next to a
//! loud one would otherwise change), and the clips' frames are laid one
//! after another with zero frames between them — what the model sees after
//! the end of a clip sent alone: the clip's own padding, real silence at
//! its own level. The window is decoded once with
//! timestamps; each segment goes to the clip whose span holds it, shifted
//! to the clip's own timeline. A segment that crosses from one clip into
//! the next, or a clip left with no segment, is not trusted: those clips
//! are decoded again on their own ([`Piece::Redo`]).

use super::decode::{DecodeOptions, Decoding};
use super::mel::{Mel, HOP, N_FRAMES, N_SAMPLES, SAMPLE_RATE};
use super::{Engine, EngineError, Segment, Transcript};

/// Where a clip lies in the packed window, in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Span {
    pub start: f64,
    pub duration: f64,
}

/// A clip's share of a packed transcript.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    Done(Transcript),
    /// Decode it again, alone.
    Redo,
}

fn frames(samples: usize) -> usize {
    samples / HOP
}

/// Whether clips of these lengths (samples) fit one window with `gap_frames`
/// of silence between them.
pub fn fits(lengths: &[usize], gap_frames: usize) -> bool {
    let content: usize = lengths.iter().map(|&n| frames(n)).sum();
    content + gap_frames * lengths.len().saturating_sub(1) <= N_FRAMES
}

/// Whether requests with these options may share a window: the same
/// options throughout (the caller groups by equality), with a language
/// known in advance (detection is per request), no word timestamps (their
/// alignment is per window) and no VAD (it reshapes each clip's timeline).
pub fn packable(engine: &Engine, opts: &DecodeOptions) -> bool {
    !opts.word_timestamps
        && !opts.vad_filter
        && !opts.without_timestamps
        && matches!(Decoding::fixed_language(engine, opts), Ok(Some(_)))
}

/// One decoding of `clips` laid end to end with `gap_frames` between them,
/// and where each lies. The caller checks [`fits`] and [`packable`].
pub fn decoding(engine: &Engine, clips: &[&[f32]], gap_frames: usize, opts: DecodeOptions) -> Result<(Decoding, Vec<Span>), EngineError> {
    let language = Decoding::fixed_language(engine, &opts)?;
    let n_mels = engine.mel.n_mels();
    // Rows of the packed mel, built frame range by frame range.
    let mut rows: Vec<Vec<f32>> = vec![Vec::with_capacity(2 * N_FRAMES); n_mels];
    let mut audio = Vec::new();
    let mut spans = Vec::with_capacity(clips.len());
    for (i, clip) in clips.iter().enumerate() {
        let start = audio.len() as f64 / SAMPLE_RATE as f64;
        let mel = engine.mel.compute(clip, N_SAMPLES);
        let content = mel.n_frames.saturating_sub(N_FRAMES);
        // The clip, then (but for the last) its own padding as the gap.
        let take = if i + 1 < clips.len() { content + gap_frames } else { content };
        for (m, row) in rows.iter_mut().enumerate() {
            row.extend_from_slice(&mel.data[m * mel.n_frames..m * mel.n_frames + take.min(mel.n_frames)]);
        }
        // Audio in step with the frames (for the no-speech check's VAD).
        audio.extend_from_slice(&clip[..(content * HOP).min(clip.len())]);
        audio.extend(std::iter::repeat_n(0.0, (take * HOP).saturating_sub(clip.len().min(content * HOP))));
        spans.push(Span { start, duration: clip.len() as f64 / SAMPLE_RATE as f64 });
    }
    // Then a window of padding, as Decoding::new's features have.
    for row in rows.iter_mut() {
        row.extend(std::iter::repeat_n(0.0, N_FRAMES));
    }
    let n_frames = rows.first().map_or(0, Vec::len);
    let mel = Mel { n_mels, n_frames, data: rows.concat() };
    let duration = audio.len() as f64 / SAMPLE_RATE as f64;
    let mut d = Decoding::with_features(engine, audio, None, duration, mel, opts, language)?;
    d.set_packed();
    Ok((d, spans))
}

/// How far before a clip's first sample a segment of that clip may start
/// (timestamps are 20 ms apart, and speech onsets are soft).
const LEAD_S: f64 = 0.3;
/// How far into the next clip a segment may end and still be one clip's:
/// Whisper ends a segment where the next speech begins, often a little
/// after. A segment that ends deeper in has taken the next clip's words.
const OVERRUN_S: f64 = 0.5;

/// How long after a clip's last sample one of its words may still start
/// (the aligner's frames are 20 ms, its word edges softer).
const TAIL_S: f64 = 0.3;

/// The clip a moment of the packed window belongs to: the one it lies in
/// (or just before), else the nearest.
fn clip_at(spans: &[Span], t: f64) -> usize {
    let distance = |s: &Span| (s.start - LEAD_S - t).max(t - (s.start + s.duration)).max(0.0);
    (0..spans.len()).min_by(|&a, &b| distance(&spans[a]).total_cmp(&distance(&spans[b]))).unwrap_or(0)
}

/// Whether a word starting at `t` starts where no clip has sound: deep in
/// the padding between two clips (or after the last). Such a word is
/// misaligned or made up, and the clips around it are not trusted.
fn in_a_gap(spans: &[Span], t: f64) -> bool {
    !spans.iter().any(|s| t >= s.start - LEAD_S && t <= s.start + s.duration + TAIL_S)
}

/// `seg` (window times) moved to clip `span`'s own timeline.
fn placed(mut seg: Segment, span: Span) -> Segment {
    let end = (seg.end - span.start).clamp(0.0, span.duration);
    seg.start = ((seg.start - span.start).clamp(0.0, end) * 100.0).round() / 100.0;
    seg.end = (end * 100.0).round() / 100.0;
    seg.seek = 0;
    seg.words.clear();
    seg
}

/// A segment with word timings, cut where its words pass from one clip to
/// the next; each part's text is its words', its tokens `tokens_of` them.
fn cut_by_words(seg: &Segment, spans: &[Span], tokens_of: &dyn Fn(&str) -> Vec<u32>) -> Vec<(usize, Segment)> {
    let mut parts: Vec<(usize, Vec<&super::Word>)> = Vec::new();
    for w in &seg.words {
        // By its start: the aligner stretches a word's end over the pause
        // after it (up to the next speech), not its start.
        let k = clip_at(spans, w.start);
        match parts.last_mut() {
            Some((last, words)) if *last == k => words.push(w),
            _ => parts.push((k, vec![w])),
        }
    }
    if parts.len() == 1 {
        return vec![(parts[0].0, seg.clone())];
    }
    let n = parts.len();
    parts
        .into_iter()
        .enumerate()
        .map(|(i, (k, words))| {
            let text: String = words.iter().map(|w| w.word.as_str()).collect();
            let start = if i == 0 { seg.start } else { words[0].start };
            let end = if i + 1 == n { seg.end } else { words[words.len() - 1].end };
            let tokens = tokens_of(&text);
            (k, Segment { start, end, tokens, text, ..seg.clone() })
        })
        .collect()
}

/// Splits a packed transcript between the clips. With word timings (the
/// engine aligns packed windows on the CPU), every word goes to the clip
/// it lies in, and a segment that runs from one clip into the next is cut
/// between its words; a word that starts in the padding between clips
/// sends both back. Without them, a segment belongs to the clip it
/// starts in (a start in the silence just before a clip counts as that
/// clip's), and one that runs on into the next clip's speech sends both
/// back. A clip left with no segment is sent back too.
pub fn split(t: &Transcript, spans: &[Span], tokens_of: &dyn Fn(&str) -> Vec<u32>) -> Vec<Piece> {
    let mut segments: Vec<Vec<Segment>> = vec![Vec::new(); spans.len()];
    let mut redo = vec![false; spans.len()];
    for seg in &t.segments {
        if !seg.words.is_empty() {
            if let Some(w) = seg.words.iter().find(|w| in_a_gap(spans, w.start)) {
                let k = clip_at(spans, w.start);
                redo[k] = true;
                // And the clip on the gap's other side.
                let other = if w.start < spans[k].start { k.checked_sub(1) } else { Some(k + 1) };
                if let Some(r) = other.and_then(|o| redo.get_mut(o)) {
                    *r = true;
                }
                continue;
            }
            for (k, part) in cut_by_words(seg, spans, tokens_of) {
                segments[k].push(placed(part, spans[k]));
            }
            continue;
        }
        let k = spans.iter().rposition(|s| seg.start >= s.start - LEAD_S).unwrap_or(0);
        let s = spans[k];
        if let Some(next) = spans.get(k + 1) {
            if seg.end > next.start + OVERRUN_S {
                redo[k] = true;
                redo[k + 1] = true;
                continue;
            }
        }
        // In the silence after the clip's end: nothing of its speech.
        if seg.start >= s.start + s.duration {
            continue;
        }
        segments[k].push(placed(seg.clone(), s));
    }
    segments
        .into_iter()
        .zip(spans)
        .zip(redo)
        .map(|((mut segs, span), redo)| {
            if redo || segs.is_empty() {
                return Piece::Redo;
            }
            for (i, s) in segs.iter_mut().enumerate() {
                s.id = i;
            }
            let text = segs.iter().map(|s| s.text.as_str()).collect::<String>().trim().to_string();
            Piece::Done(Transcript {
                text,
                segments: segs,
                language: t.language.clone(),
                language_probability: t.language_probability,
                duration: span.duration,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Segment;

    fn seg(start: f64, end: f64, text: &str) -> Segment {
        Segment { id: 9, seek: 0, start, end, text: text.into(), tokens: vec![1], temperature: 0.0, avg_logprob: -0.2,
            compression_ratio: 1.2, no_speech_prob: 0.01, words: Vec::new() }
    }

    fn no_tokens(_: &str) -> Vec<u32> {
        Vec::new()
    }

    fn word(w: &str, start: f64, end: f64) -> crate::engine::Word {
        crate::engine::Word { word: w.into(), start, end, probability: 0.9 }
    }

    /// One segment " One two three" from 6.0 s, with these word timings,
    /// then " Four." alone in the third clip.
    fn one_two_three_then_four(end: f64, words: [(&str, f64, f64); 3]) -> Transcript {
        let mut across = seg(6.0, end, " One two three");
        across.words = words.iter().map(|&(w, s, e)| word(w, s, e)).collect();
        let mut four = seg(15.0, 17.0, " Four.");
        four.words = vec![word(" Four.", 15.1, 16.8)];
        transcript(vec![across, four])
    }

    fn transcript(segments: Vec<Segment>) -> Transcript {
        Transcript { text: String::new(), segments, language: "en".into(), language_probability: 1.0, duration: 30.0 }
    }

    const SPANS: [Span; 3] = [
        Span { start: 0.0, duration: 8.0 },
        Span { start: 9.0, duration: 5.0 },
        Span { start: 15.0, duration: 3.0 },
    ];

    #[test]
    fn segments_go_to_their_clip_on_its_own_timeline() {
        // Segments end where the next speech starts, or a little after.
        let t = transcript(vec![seg(0.0, 4.0, " One"), seg(4.0, 9.3, " two."), seg(8.9, 14.2, " Three."), seg(15.0, 17.9, " Four.")]);
        let pieces = split(&t, &SPANS, &no_tokens);
        let Piece::Done(a) = &pieces[0] else { panic!("{pieces:?}") };
        assert_eq!(a.text, "One two.");
        assert_eq!((a.segments[1].start, a.segments[1].end), (4.0, 8.0), "clamped to the clip");
        assert_eq!(a.segments.iter().map(|s| s.id).collect::<Vec<_>>(), vec![0, 1]);
        let Piece::Done(b) = &pieces[1] else { panic!("{pieces:?}") };
        assert_eq!((b.text.as_str(), b.segments[0].start, b.segments[0].end, b.duration), ("Three.", 0.0, 5.0, 5.0));
        let Piece::Done(c) = &pieces[2] else { panic!("{pieces:?}") };
        assert_eq!((c.segments[0].start, c.segments[0].end), (0.0, 2.9));
    }

    #[test]
    fn a_segment_across_a_boundary_sends_both_clips_back() {
        let t = transcript(vec![seg(0.0, 7.0, " One"), seg(7.0, 11.0, " two three"), seg(15.0, 17.0, " Four.")]);
        let pieces = split(&t, &SPANS, &no_tokens);
        assert_eq!(pieces[0], Piece::Redo);
        assert_eq!(pieces[1], Piece::Redo);
        assert!(matches!(pieces[2], Piece::Done(_)));
    }

    #[test]
    fn a_clip_with_nothing_is_decoded_again() {
        let t = transcript(vec![seg(0.0, 7.0, " One"), seg(15.0, 17.0, " Four.")]);
        let pieces = split(&t, &SPANS, &no_tokens);
        assert!(matches!(pieces[0], Piece::Done(_)));
        assert_eq!(pieces[1], Piece::Redo);
    }

    #[test]
    fn clips_fit_a_window_with_their_gaps() {
        let s = SAMPLE_RATE;
        assert!(fits(&[8 * s, 8 * s, 8 * s], 100));
        assert!(fits(&[10 * s, 10 * s, 10 * s], 0));
        assert!(!fits(&[10 * s, 10 * s, 10 * s], 1));
        assert!(!fits(&[12 * s, 12 * s, 7 * s], 100));
    }

    #[test]
    fn a_segment_across_a_boundary_is_cut_between_its_words() {
        // " One two" (clip 0), " three" (clip 1, starts at 9.0): Whisper ran
        // the segment across the gap; the words say where to cut.
        let window = one_two_three_then_four(11.0, [(" One", 6.0, 6.8), (" two", 6.8, 7.5), (" three", 9.1, 10.2)]);
        let pieces = split(&window, &SPANS, &|t: &str| vec![t.len() as u32]);
        let Piece::Done(a) = &pieces[0] else { panic!("{pieces:?}") };
        assert_eq!((a.text.as_str(), a.segments[0].start, a.segments[0].end), ("One two", 6.0, 7.5));
        assert_eq!(a.segments[0].tokens, vec![8], "tokens of the part's own text");
        assert!(a.segments[0].words.is_empty(), "words were not asked for");
        let Piece::Done(b) = &pieces[1] else { panic!("{pieces:?}") };
        assert_eq!((b.text.as_str(), b.segments[0].start, b.segments[0].end), ("three", 0.1, 2.0));
        let Piece::Done(c) = &pieces[2] else { panic!("{pieces:?}") };
        assert_eq!((c.text.as_str(), c.segments[0].tokens.clone()), ("Four.", vec![1]), "a segment in one clip keeps its tokens");
    }

    #[test]
    fn words_in_a_gap_go_to_the_nearest_clip() {
        // Clip 0 ends at 8.0, clip 1 starts at 9.0 (with its 0.3 s lead, 8.7):
        // the gap is cut at 8.35.
        let spans = &SPANS[..2];
        for (t, clip) in [(8.2, 0), (8.3, 0), (8.4, 1), (8.8, 1), (3.0, 0), (20.0, 1)] {
            assert_eq!(clip_at(spans, t), clip, "{t}");
        }
    }

    #[test]
    fn a_word_that_starts_in_a_gap_sends_both_clips_back() {
        // Clip 0 ends at 8.0 and clip 1 starts at 9.0: a word starting at
        // 8.5 lies where neither has sound.
        let window = one_two_three_then_four(10.0, [(" One", 6.0, 6.8), (" two", 8.5, 8.9), (" three", 9.1, 10.0)]);
        let pieces = split(&window, &SPANS, &no_tokens);
        assert_eq!((&pieces[0], &pieces[1]), (&Piece::Redo, &Piece::Redo));
        assert!(matches!(pieces[2], Piece::Done(_)));
        // Just after a clip's end (its last word's soft edge) is still the clip's.
        assert!(!in_a_gap(&SPANS, 8.25) && in_a_gap(&SPANS, 8.35) && !in_a_gap(&SPANS, 8.75));
    }
}
