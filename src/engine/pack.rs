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
use super::{Engine, EngineError, Transcript};

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
    let d = Decoding::with_features(engine, audio, None, duration, mel, opts, language)?;
    Ok((d, spans))
}

/// How far before a clip's first sample a segment of that clip may start
/// (timestamps are 20 ms apart, and speech onsets are soft).
const LEAD_S: f64 = 0.3;
/// How far into the next clip a segment may end and still be one clip's:
/// Whisper ends a segment where the next speech begins, often a little
/// after. A segment that ends deeper in has taken the next clip's words.
const OVERRUN_S: f64 = 0.5;

/// Splits a packed transcript between the clips: a segment belongs to the
/// clip it starts in (a start in the silence just before a clip counts as
/// that clip's); one that runs on into the next clip's speech sends both
/// back, as does a clip left with no segment.
pub fn split(t: &Transcript, spans: &[Span]) -> Vec<Piece> {
    let mut segments: Vec<Vec<super::Segment>> = vec![Vec::new(); spans.len()];
    let mut redo = vec![false; spans.len()];
    for seg in &t.segments {
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
        let mut seg = seg.clone();
        seg.start = ((seg.start - s.start).max(0.0) * 100.0).round() / 100.0;
        seg.end = ((seg.end - s.start).clamp(seg.start, s.duration) * 100.0).round() / 100.0;
        seg.seek = 0;
        segments[k].push(seg);
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
        let pieces = split(&t, &SPANS);
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
        let pieces = split(&t, &SPANS);
        assert_eq!(pieces[0], Piece::Redo);
        assert_eq!(pieces[1], Piece::Redo);
        assert!(matches!(pieces[2], Piece::Done(_)));
    }

    #[test]
    fn a_clip_with_nothing_is_decoded_again() {
        let t = transcript(vec![seg(0.0, 7.0, " One"), seg(15.0, 17.0, " Four.")]);
        let pieces = split(&t, &SPANS);
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
}
