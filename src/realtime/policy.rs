//! LocalAgreement-2, the policy of whisper_streaming and WhisperLive: the
//! open turn is decoded again as audio arrives, and a word is committed
//! (sent, never taken back) once two consecutive hypotheses agree on it and
//! on everything before it. Pure logic over word timestamps.

/// A word of a hypothesis, with times in seconds of session audio.
#[derive(Debug, Clone, PartialEq)]
pub struct HypWord {
    /// As Whisper writes it, leading space included (" And").
    pub text: String,
    pub start: f64,
    pub end: f64,
}

/// Words compare without case or punctuation: "so," and "So" agree.
fn norm(w: &str) -> String {
    w.chars().filter(|c| c.is_alphanumeric()).flat_map(char::to_lowercase).collect()
}

/// The longest n-gram at the seam looked for when a hypothesis repeats
/// committed words.
const MAX_SEAM_NGRAM: usize = 5;

#[derive(Debug, Default)]
pub struct Agreement {
    committed: Vec<HypWord>,
    /// The previous hypothesis, past the committed words.
    pending: Vec<HypWord>,
}

impl Agreement {
    pub fn committed(&self) -> &[HypWord] {
        &self.committed
    }

    /// Where the committed words end (s), if any.
    pub fn committed_end(&self) -> Option<f64> {
        self.committed.last().map(|w| w.end)
    }

    /// The words of `hyp` past what is committed: those starting after the
    /// committed end, less a repeat of the last committed words at the seam.
    /// A long last word counts as ending 0.2 s after its start: Whisper
    /// stretches a word's end over a pause, or to the end of the audio it
    /// saw, past the start of the next word, which was then dropped ("ask
    /// not what your country" was sent as "ask not your country"); a
    /// restatement of the word itself goes at the seam.
    fn fresh(&self, hyp: Vec<HypWord>) -> Vec<HypWord> {
        let Some(last_end) = self.committed.last().map(|w| w.end.min(w.start + 0.2)) else { return hyp };
        let mut new: Vec<HypWord> = hyp.into_iter().filter(|w| w.start > last_end - 0.1).collect();
        if new.first().is_some_and(|w| (w.start - last_end).abs() < 1.0) {
            let c = &self.committed;
            for k in (1..=MAX_SEAM_NGRAM.min(c.len()).min(new.len())).rev() {
                let tail = c[c.len() - k..].iter().map(|w| norm(&w.text));
                let head = new[..k].iter().map(|w| norm(&w.text));
                if tail.eq(head) {
                    new.drain(..k);
                    break;
                }
            }
        }
        new
    }

    /// A new hypothesis of the open turn; returns the words it commits:
    /// those the previous hypothesis agrees on that end by `settled_by`
    /// (s). Two hypotheses of nearly the same audio agree on a misheard
    /// word at its end as readily as on a right one; a word is taken once
    /// the hypothesis has heard a while past it.
    pub fn insert(&mut self, hyp: Vec<HypWord>, settled_by: f64) -> Vec<HypWord> {
        let new = self.fresh(hyp);
        let n = new
            .iter()
            .zip(&self.pending)
            .take_while(|(a, b)| norm(&a.text) == norm(&b.text) && a.end <= settled_by)
            .count();
        let mut new = new;
        self.pending = new.split_off(n);
        self.committed.extend(new.iter().cloned());
        new
    }

    /// Commits the words of `hyp` that end by `until` without waiting for
    /// agreement (the buffer must be cut there).
    pub fn force(&mut self, hyp: Vec<HypWord>, until: f64) -> Vec<HypWord> {
        let new: Vec<HypWord> = self.fresh(hyp).into_iter().take_while(|w| w.end <= until).collect();
        self.pending.clear();
        self.committed.extend(new.iter().cloned());
        new
    }

    /// The turn ended and the last hypothesis saw all of its speech: what
    /// it has past the committed words is committed (whisper_streaming's
    /// `finish`).
    pub fn commit_pending(&mut self) -> Vec<HypWord> {
        let new = std::mem::take(&mut self.pending);
        self.committed.extend(new.iter().cloned());
        new
    }

    /// The turn ended: everything the last hypothesis has past the
    /// committed words is committed.
    pub fn flush(&mut self, hyp: Vec<HypWord>) -> Vec<HypWord> {
        let new = self.fresh(hyp);
        self.pending.clear();
        self.committed.extend(new.iter().cloned());
        new
    }
}

/// Where the audio may be cut after a hypothesis whose segments end at
/// `segment_ends` (s, in order): the end of the latest segment but the
/// last one that lies wholly within the committed words (whisper_streaming's
/// `chunk_completed_segment`).
pub fn trim_point(segment_ends: &[f64], committed_end: Option<f64>) -> Option<f64> {
    let t = committed_end?;
    if segment_ends.len() < 2 {
        return None;
    }
    let mut ends = segment_ends.to_vec();
    let mut e = ends[ends.len() - 2];
    while ends.len() > 2 && e > t {
        ends.pop();
        e = ends[ends.len() - 2];
    }
    (e <= t).then_some(e)
}

/// The prompt for the next decode: the last `max_chars` characters (whole
/// words) of the session's text before this turn, `before`, followed by
/// the turn's committed words that are no longer in the audio. Earlier
/// turns count as Whisper's previous text does in a long recording, where
/// no window is decoded without the text before it (BENCHMARKS.md: 0.4-0.6
/// WER points fewer on streamed clips than with each turn alone).
pub fn prompt(before: &str, committed: &[HypWord], cut_at: f64, max_chars: usize) -> String {
    let earlier = before.split_whitespace();
    let cut = committed.iter().filter(|w| w.end <= cut_at).map(|w| w.text.trim());
    let all: Vec<&str> = earlier.chain(cut).filter(|w| !w.is_empty()).collect();
    let mut len = 0;
    let mut from = all.len();
    while from > 0 && len + all[from - 1].len() + 1 <= max_chars + 1 {
        len += all[from - 1].len() + 1;
        from -= 1;
    }
    all[from..].join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hyp(words: &[(&str, f64)]) -> Vec<HypWord> {
        words.iter().map(|&(t, s)| HypWord { text: format!(" {t}"), start: s, end: s + 0.3 }).collect()
    }

    #[test]
    fn commits_what_two_hypotheses_agree_on() {
        let mut a = Agreement::default();
        assert!(a.insert(hyp(&[("And", 0.0), ("so", 0.4)]), f64::INFINITY).is_empty());
        let c = a.insert(hyp(&[("and", 0.0), ("So,", 0.4), ("my", 0.8)]), f64::INFINITY);
        assert_eq!(c.iter().map(|w| w.text.as_str()).collect::<Vec<_>>(), vec![" and", " So,"]);
        // The next hypothesis restates the committed words: they are not sent again.
        let c = a.insert(hyp(&[("and", 0.0), ("so", 0.4), ("my", 0.8), ("fellow", 1.2)]), f64::INFINITY);
        assert_eq!(c.iter().map(|w| w.text.as_str()).collect::<Vec<_>>(), vec![" my"]);
        // A changed word stops agreement there.
        let c = a.insert(hyp(&[("my", 0.8), ("yellow", 1.2), ("Americans", 1.6)]), f64::INFINITY);
        assert!(c.is_empty());
        let c = a.flush(hyp(&[("my", 0.8), ("fellow", 1.2), ("Americans", 1.6)]));
        assert_eq!(c.iter().map(|w| w.text.as_str()).collect::<Vec<_>>(), vec![" fellow", " Americans"]);
        assert_eq!(a.committed().len(), 5);
    }

    #[test]
    fn a_repeat_at_the_seam_after_trimming_is_dropped() {
        let mut a = Agreement::default();
        a.insert(hyp(&[("ask", 5.0), ("not", 5.4)]), f64::INFINITY);
        a.insert(hyp(&[("ask", 5.0), ("not", 5.4)]), f64::INFINITY);
        // After a cut, the decoder restarts just before "not" and repeats it.
        let c = a.flush(hyp(&[("not", 5.6), ("what", 6.0)]));
        assert_eq!(c.iter().map(|w| w.text.as_str()).collect::<Vec<_>>(), vec![" what"]);
    }

    #[test]
    fn a_word_under_the_stretched_end_of_the_last_committed_one_is_kept() {
        let w = |t: &str, s: f64, e: f64| HypWord { text: format!(" {t}"), start: s, end: e };
        let mut a = Agreement::default();
        // "not" was the last word the decoder saw: its end runs to the end
        // of that audio, over the start of "what".
        a.insert(vec![w("ask", 4.3, 4.6), w("not", 4.6, 5.6)], f64::INFINITY);
        a.insert(vec![w("ask", 4.3, 4.6), w("not", 4.6, 5.6)], f64::INFINITY);
        let c = a.flush(vec![w("ask", 4.3, 4.6), w("not", 4.62, 5.0), w("what", 5.3, 5.5), w("your", 5.5, 5.8)]);
        assert_eq!(c.iter().map(|w| w.text.as_str()).collect::<Vec<_>>(), vec![" what", " your"]);
    }

    #[test]
    fn a_word_is_committed_once_the_hypothesis_heard_past_it() {
        let mut a = Agreement::default();
        a.insert(hyp(&[("ask", 0.0), ("not", 0.4), ("what", 0.8)]), f64::INFINITY);
        // Both agree on all three; "what" ends at 1.1 s, after 1.0 s.
        let c = a.insert(hyp(&[("ask", 0.0), ("not", 0.4), ("what", 0.8)]), 1.0);
        assert_eq!(c.iter().map(|w| w.text.as_str()).collect::<Vec<_>>(), vec![" ask", " not"]);
        let c = a.insert(hyp(&[("ask", 0.0), ("not", 0.4), ("what", 0.8), ("your", 1.2)]), 2.0);
        assert_eq!(c.iter().map(|w| w.text.as_str()).collect::<Vec<_>>(), vec![" what"]);
    }

    #[test]
    fn the_last_hypothesis_past_the_agreed_words_is_committed_at_the_end() {
        let mut a = Agreement::default();
        a.insert(hyp(&[("ask", 0.0), ("not", 0.4)]), f64::INFINITY);
        a.insert(hyp(&[("ask", 0.0), ("not", 0.4), ("what", 0.8), ("your", 1.2)]), f64::INFINITY);
        let c = a.commit_pending();
        assert_eq!(c.iter().map(|w| w.text.as_str()).collect::<Vec<_>>(), vec![" what", " your"]);
        assert_eq!(a.committed().len(), 4);
        assert!(a.commit_pending().is_empty());
    }

    #[test]
    fn forcing_commits_up_to_the_cut() {
        let mut a = Agreement::default();
        let c = a.force(hyp(&[("a", 0.0), ("b", 1.0), ("c", 2.0)]), 1.5);
        assert_eq!(c.len(), 2);
        assert_eq!(a.committed_end(), Some(1.3));
    }

    #[test]
    fn trims_at_the_last_completed_segment() {
        assert_eq!(trim_point(&[3.0, 6.0, 9.0], Some(6.5)), Some(6.0));
        assert_eq!(trim_point(&[3.0, 6.0, 9.0], Some(4.0)), Some(3.0));
        assert_eq!(trim_point(&[3.0, 6.0, 9.0], Some(2.0)), None);
        assert_eq!(trim_point(&[3.0], Some(9.0)), None);
        assert_eq!(trim_point(&[3.0, 6.0], None), None);
    }

    #[test]
    fn the_prompt_is_the_committed_text_already_cut() {
        let words = hyp(&[("one", 0.0), ("two", 1.0), ("three", 2.0)]);
        assert_eq!(prompt("", &words, 1.5, 200), "one two");
        assert_eq!(prompt("", &words, 9.0, 10), "two three");
        // Earlier turns come first, and go first when it is too long.
        assert_eq!(prompt(" Hello there.", &words, 1.5, 200), "Hello there. one two");
        assert_eq!(prompt("Hello there.", &words, 9.0, 21), "there. one two three");
        assert_eq!(prompt("Hello there.", &[], 0.0, 200), "Hello there.");
    }
}
