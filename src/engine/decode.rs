//! Long-form decoding as openai-whisper's `transcribe` does it: 30 s windows
//! decoded with timestamp tokens, seeking to the end of the last complete
//! segment, conditioning on the previous text, temperature fallback and
//! no-speech skipping.

use std::io::Write;

use serde::{Deserialize, Serialize};

use super::mel::{HOP, N_FRAMES, N_SAMPLES, SAMPLE_RATE};
use super::{words, Engine, EngineError, Segment, Transcript};
use crate::ct2::sys::{Device, StorageView, WhisperOptions};

/// Seconds per timestamp token.
const TIME_PRECISION: f64 = 0.02;
/// Mel frames per encoder output position (3000 frames -> 1500 positions).
const INPUT_STRIDE: usize = 2;
/// Longest previous-text prompt: half the text context, minus one.
const MAX_PROMPT_TOKENS: usize = 223;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    #[default]
    Transcribe,
    Translate,
}

/// Decoding settings; the defaults are openai-whisper's `transcribe` ones
/// with beam search (beam 5), as faster-whisper uses. The config's
/// `decoding` section holds the server-wide values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DecodeOptions {
    pub language: Option<String>,
    pub task: Task,
    pub beam_size: usize,
    pub best_of: usize,
    pub patience: f32,
    pub length_penalty: f32,
    pub temperatures: Vec<f32>,
    pub compression_ratio_threshold: Option<f32>,
    pub log_prob_threshold: Option<f32>,
    pub no_speech_threshold: Option<f32>,
    pub condition_on_previous_text: bool,
    /// Text to condition the first window on (names, spelling, style).
    pub initial_prompt: Option<String>,
    pub word_timestamps: bool,
    /// Decode only the speech found by the voice activity detector.
    pub vad_filter: bool,
    /// faster-whisper's `vad_parameters`, over the detector's defaults.
    #[serde(skip_serializing_if = "crate::vad::VadParameters::is_empty")]
    pub vad_parameters: crate::vad::VadParameters,
    pub without_timestamps: bool,
    pub max_initial_timestamp: f32,
    pub suppress_blank: bool,
    /// -1 means the model's default set of non-speech tokens.
    pub suppress_tokens: Vec<i32>,
    /// Mel frames the encoder sees per window, when fewer than Whisper's
    /// 3000 (30 s): cheaper, a little less accurate. Set by the server for
    /// realtime steps only; not a request or config setting.
    #[serde(skip)]
    pub window_frames: Option<usize>,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            language: None,
            task: Task::Transcribe,
            beam_size: 5,
            best_of: 5,
            patience: 1.0,
            length_penalty: 1.0,
            temperatures: vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
            compression_ratio_threshold: Some(2.4),
            log_prob_threshold: Some(-1.0),
            no_speech_threshold: Some(0.6),
            condition_on_previous_text: true,
            initial_prompt: None,
            word_timestamps: false,
            vad_filter: false,
            vad_parameters: crate::vad::VadParameters::default(),
            without_timestamps: false,
            max_initial_timestamp: 1.0,
            suppress_blank: true,
            suppress_tokens: vec![-1],
            window_frames: None,
        }
    }
}

/// One window's decoding result.
struct WindowResult {
    tokens: Vec<u32>,
    temperature: f32,
    avg_logprob: f32,
    compression_ratio: f32,
    no_speech_prob: f32,
}

impl WindowResult {
    fn needs_fallback(&self, opts: &DecodeOptions) -> bool {
        let failed = opts.compression_ratio_threshold.is_some_and(|t| self.compression_ratio > t)
            || opts.log_prob_threshold.is_some_and(|t| self.avg_logprob < t);
        // Silence: no point in sampling harder.
        let silence = opts.no_speech_threshold.is_some_and(|t| self.no_speech_prob > t)
            && opts.log_prob_threshold.is_some_and(|t| self.avg_logprob < t);
        failed && !silence
    }
}

/// Generation settings shared by every window of a batch: requests whose
/// keys differ are decoded in separate batches.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GenKey {
    /// CTranslate2 needs <|startoftranscript|> at the same position in every
    /// prompt of a batch: windows with and without previous text do not mix.
    has_previous: bool,
    first_temperature: u32,
    beam_size: usize,
    patience: u32,
    length_penalty: u32,
    max_initial_timestamp_index: usize,
    suppress_blank: bool,
    suppress_tokens: Vec<i32>,
    /// A batch's windows share one shape.
    frames: usize,
}

fn whisper_options(opts: &DecodeOptions, temperature: f32) -> WhisperOptions {
    let sampling = temperature > 0.0;
    WhisperOptions {
        beam_size: if sampling { 1 } else { opts.beam_size.max(1) },
        patience: opts.patience,
        length_penalty: opts.length_penalty,
        repetition_penalty: 1.0,
        no_repeat_ngram_size: 0,
        max_length: 448,
        sampling_topk: if sampling { 0 } else { 1 },
        sampling_temperature: if sampling { temperature } else { 1.0 },
        num_hypotheses: if sampling { opts.best_of.max(1) } else { 1 },
        return_scores: true,
        return_logits_vocab: false,
        return_no_speech_prob: true,
        max_initial_timestamp_index: (opts.max_initial_timestamp as f64 / TIME_PRECISION).round() as usize,
        suppress_blank: opts.suppress_blank,
        suppress_tokens: opts.suppress_tokens.clone(),
    }
}

/// The decoding of one audio file, a window at a time. Windows of several
/// files are decoded together by [`step`]; a file alone is a batch of one.
pub struct Decoding {
    opts: DecodeOptions,
    /// The audio decoded (the speech alone with `vad_filter`).
    audio: Vec<f32>,
    /// Maps times in `audio` back to the upload's, with `vad_filter`.
    time_map: Option<crate::vad::TimeMap>,
    duration: f64,
    mel: super::mel::Mel,
    content_frames: usize,
    /// None until detected on the first window (multilingual models).
    language: Option<(String, f32)>,
    sot_sequence: Vec<u32>,
    sot_prev_token: u32,
    segments: Vec<Segment>,
    all_tokens: Vec<u32>,
    prompt_reset_since: usize,
    seek: usize,
    last_speech_timestamp: f64,
    /// Several requests laid end to end (engine::pack): its segments get
    /// word timings from the batch's encoder output, so that a segment
    /// that runs from one clip into the next can be cut between words.
    packed: bool,
    /// Mel frames per window (DecodeOptions::window_frames).
    frames: usize,
}

impl Decoding {
    /// Checks the options against the model and computes the features.
    pub fn new(engine: &Engine, audio: Vec<f32>, opts: DecodeOptions) -> Result<Self, EngineError> {
        let language = Self::fixed_language(engine, &opts)?;
        let duration = audio.len() as f64 / SAMPLE_RATE as f64;
        let (audio, time_map) = if opts.vad_filter {
            let chunks = crate::vad::speech_chunks(&audio, &opts.vad_parameters);
            let (speech, map) = crate::vad::collect(&audio, &chunks);
            (speech, Some(map))
        } else {
            (audio, None)
        };
        // As openai-whisper: features of the audio plus 30 s of silence
        // (which only moves the normalisation's max); windows are cut from
        // the content and zero-padded.
        let mel = engine.mel.compute(&audio, N_SAMPLES);
        Self::with_features(engine, audio, time_map, duration, mel, opts, language)
    }

    /// The language an English-only model or the options fix, if any;
    /// errors for options the model cannot take.
    pub(super) fn fixed_language(engine: &Engine, opts: &DecodeOptions) -> Result<Option<(String, f32)>, EngineError> {
        let tk = &engine.tokenizer;
        if !engine.multilingual {
            if opts.language.as_deref().is_some_and(|l| l != "en") || opts.task == Task::Translate {
                return Err(EngineError::BadOption(
                    "this model is English-only: it cannot take another language or translate".into(),
                ));
            }
            Ok(Some(("en".to_string(), 1.0)))
        } else if let Some(lang) = &opts.language {
            if tk.language_token(lang).is_none() {
                return Err(EngineError::BadOption(format!("unknown language `{lang}`")));
            }
            Ok(Some((lang.clone(), 1.0)))
        } else {
            Ok(None)
        }
    }

    /// A decoding of `audio` with its features already computed (`mel`
    /// holds the content and then N_FRAMES of padding).
    pub(super) fn with_features(
        engine: &Engine,
        audio: Vec<f32>,
        time_map: Option<crate::vad::TimeMap>,
        duration: f64,
        mel: super::mel::Mel,
        opts: DecodeOptions,
        language: Option<(String, f32)>,
    ) -> Result<Self, EngineError> {
        let tk = &engine.tokenizer;
        let content_frames = mel.n_frames.saturating_sub(N_FRAMES);
        // The initial prompt is " " + text and counts against the prompt
        // budget of the first windows, like previous text does.
        let all_tokens = match opts.initial_prompt.as_deref().map(str::trim) {
            Some(p) if !p.is_empty() => engine.encode_text(&format!(" {p}"))?,
            _ => Vec::new(),
        };
        // At least 2 s: shorter windows cost little less and lose much.
        let frames = opts.window_frames.map_or(N_FRAMES, |f| f.clamp(200, N_FRAMES));
        let mut d = Decoding {
            frames,
            opts,
            audio,
            time_map,
            duration,
            mel,
            content_frames,
            language: None,
            sot_sequence: Vec::new(),
            sot_prev_token: tk.sot_prev,
            segments: Vec::new(),
            all_tokens,
            prompt_reset_since: 0,
            seek: 0,
            last_speech_timestamp: 0.0,
            packed: false,
        };
        if let Some((code, p)) = language {
            d.set_language(engine, code, p);
        }
        Ok(d)
    }

    fn set_language(&mut self, engine: &Engine, code: String, probability: f32) {
        let tk = &engine.tokenizer;
        let mut sot = vec![tk.sot];
        if engine.multilingual {
            sot.push(tk.language_token(&code).unwrap_or(tk.sot));
            sot.push(match self.opts.task {
                Task::Transcribe => tk.transcribe,
                Task::Translate => tk.translate,
            });
        }
        if self.opts.without_timestamps {
            sot.push(tk.no_timestamps);
        }
        self.sot_sequence = sot;
        self.language = Some((code, probability));
    }

    pub fn is_done(&self) -> bool {
        self.seek >= self.content_frames
    }

    /// Windows left, at most (for scheduling and logs).
    pub fn windows_left(&self) -> usize {
        self.content_frames.saturating_sub(self.seek).div_ceil(self.frames)
    }

    /// The segments decoded so far, in order; a segment's text does not
    /// change once decoded (streamed progress reads it).
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    pub(crate) fn gen_key(&self) -> GenKey {
        let o = &self.opts;
        GenKey {
            has_previous: !self.previous().is_empty(),
            first_temperature: o.temperatures.first().copied().unwrap_or(0.0).to_bits(),
            beam_size: o.beam_size,
            patience: o.patience.to_bits(),
            length_penalty: o.length_penalty.to_bits(),
            max_initial_timestamp_index: (o.max_initial_timestamp as f64 / TIME_PRECISION).round() as usize,
            suppress_blank: o.suppress_blank,
            suppress_tokens: o.suppress_tokens.clone(),
            frames: self.frames,
        }
    }

    fn segment_size(&self) -> usize {
        self.frames.min(self.content_frames - self.seek)
    }

    fn window_into(&self, out: &mut Vec<f32>) {
        self.mel.window_into(self.seek, self.segment_size(), self.frames, out);
    }

    /// The previous text the next window is conditioned on.
    fn previous(&self) -> &[u32] {
        let previous = &self.all_tokens[self.prompt_reset_since..];
        &previous[previous.len().saturating_sub(MAX_PROMPT_TOKENS)..]
    }

    /// The prompt of the next window, with at most `max_previous` tokens of
    /// previous text (batched windows share one prompt length).
    fn prompt(&self, max_previous: usize) -> Vec<u32> {
        let previous = self.previous();
        let previous = &previous[previous.len().saturating_sub(max_previous)..];
        let mut prompt = Vec::with_capacity(previous.len() + 5);
        if !previous.is_empty() {
            prompt.push(self.sot_prev_token);
            prompt.extend_from_slice(previous);
        }
        prompt.extend_from_slice(&self.sot_sequence);
        prompt
    }

    /// Marks a packed decoding (engine::pack).
    pub(super) fn set_packed(&mut self) {
        self.packed = true;
    }

    /// Takes the current window's result: segments, words, the next seek.
    /// `encoded` is the step's encoder output and this window's place in it.
    fn accept(&mut self, engine: &Engine, result: WindowResult, encoded: Option<(&StorageView, usize)>) -> Result<(), EngineError> {
        let tk = &engine.tokenizer;
        let segment_size = self.segment_size();
        let seek = self.seek;
        let time_offset = (seek * HOP) as f64 / SAMPLE_RATE as f64;
        let segment_duration = (segment_size * HOP) as f64 / SAMPLE_RATE as f64;
        let content_duration = self.audio.len() as f64 / SAMPLE_RATE as f64;

        if let Some(ns) = self.opts.no_speech_threshold {
            let likely_silent = result.no_speech_prob > ns;
            let confident = self.opts.log_prob_threshold.is_some_and(|lp| result.avg_logprob > lp);
            // openai-whisper trusts a confident decoding over the no-speech
            // probability, which lets Whisper's favourite hallucinations
            // ("You", "Thank you for watching") through on silence and
            // noise. We ask the voice activity detector for a second
            // opinion on such windows only.
            let silent = likely_silent
                && (!confident || {
                    let from = (seek * HOP).min(self.audio.len());
                    let to = ((seek + segment_size) * HOP).min(self.audio.len());
                    crate::vad::speech_chunks(&self.audio[from..to], &Default::default()).is_empty()
                });
            if silent {
                self.seek += segment_size;
                return Ok(());
            }
        }

        let split = split_by_timestamps(&result.tokens, tk.timestamp_begin, segment_size);
        let first_new = self.segments.len();
        for piece in &split.pieces {
            let tokens = result.tokens[piece.tokens.clone()].to_vec();
            let text = tk.decode(&tokens);
            let (start, end) = match piece.times {
                Some((s, e)) => (time_offset + s, time_offset + e),
                None => (time_offset, time_offset + split.duration.unwrap_or(segment_duration)),
            };
            if text.trim().is_empty() || end <= start || start >= content_duration {
                continue;
            }
            self.segments.push(Segment {
                id: self.segments.len(),
                seek,
                start: round2(start),
                end: round2(end.min(content_duration.max(start))),
                text,
                tokens,
                temperature: result.temperature,
                avg_logprob: result.avg_logprob,
                compression_ratio: result.compression_ratio,
                no_speech_prob: result.no_speech_prob,
                words: Vec::new(),
            });
        }
        self.seek += split.seek_advance;
        if self.opts.word_timestamps && self.segments.len() > first_new {
            // Alignment needs this window's encoder output alone: the
            // step's own where it can be had (on CPU each window of a batch
            // is encoded alone, so it is the same output; faster-whisper
            // aligns with the step's output too), else encoded again.
            let encoded = match encoded.and_then(|(batch, index)| engine.encoded_item(batch, index).ok()) {
                Some(one) => one,
                None => self.encode_window(engine, seek, segment_size)?,
            };
            let align_prefix = &self.sot_sequence[..self.sot_sequence.len() - usize::from(self.opts.without_timestamps)];
            let cjk = self.language.as_ref().is_some_and(|(l, _)| matches!(l.as_str(), "zh" | "ja" | "th" | "lo" | "my" | "yue"));
            self.last_speech_timestamp = words::add_word_timestamps(
                &engine.whisper,
                tk,
                align_prefix,
                &encoded,
                segment_size,
                time_offset,
                &mut self.segments[first_new..],
                self.last_speech_timestamp,
                cjk,
                true,
            )?;
            // Resume after the last aligned word rather than at the last
            // timestamp token, as faster-whisper does.
            if !split.ended_on_window {
                let last_word_end = self.segments[first_new..].iter().rev().find_map(|s| s.words.last()).map(|w| w.end);
                if let Some(end) = last_word_end.filter(|&e| e > time_offset) {
                    self.seek = (end * SAMPLE_RATE as f64 / HOP as f64).round() as usize;
                }
            }
        }
        if self.packed && !self.opts.word_timestamps && self.segments.len() > first_new {
            if let Some((batch, index)) = encoded {
                self.align_packed(engine, batch, index, segment_size, time_offset, first_new);
            }
        }
        for s in &self.segments[first_new..] {
            self.all_tokens.extend_from_slice(&s.tokens);
        }
        if !self.opts.condition_on_previous_text || result.temperature > 0.5 {
            self.prompt_reset_since = self.all_tokens.len();
        }
        Ok(())
    }

    /// The encoder output of the window at `seek`, alone.
    fn encode_window(&self, engine: &Engine, seek: usize, frames: usize) -> Result<StorageView<'static>, EngineError> {
        let mut window = Vec::new();
        self.mel.window_into(seek, frames, self.frames, &mut window);
        let features = storage(&mut window, self.mel.n_mels, 1)?;
        engine.whisper.encode(&features, false).map_err(inference)
    }

    /// Word timings for a packed window's new segments, from the step's
    /// encoder output (no second encoder pass). The segments keep their
    /// decoded times and the words the alignment's own: no fitting of one
    /// to the other, as the segments' timestamps are what runs across
    /// clips. Where that output is not on the CPU, or the alignment fails,
    /// the segments keep no words and engine::pack splits by their times.
    fn align_packed(&mut self, engine: &Engine, batch: &StorageView, index: usize, frames: usize, offset: f64, first_new: usize) {
        let segments = &mut self.segments[first_new..];
        let times: Vec<(f64, f64)> = segments.iter().map(|s| (s.start, s.end)).collect();
        let aligned = engine.encoded_item(batch, index).and_then(|one| {
            words::add_word_timestamps(&engine.whisper, &engine.tokenizer, &self.sot_sequence, &one, frames, offset, segments, 0.0, false, false)
        });
        for (s, (start, end)) in segments.iter_mut().zip(times) {
            (s.start, s.end) = (start, end);
            if aligned.is_err() {
                s.words.clear();
            }
        }
        if let Err(e) = aligned {
            tracing::debug!(error = %e, "no word timings for a packed window; splitting by segment times");
        }
    }

    /// The transcript, on the upload's timeline.
    pub fn finish(mut self) -> Transcript {
        // As faster-whisper's `restore_speech_timestamps`: a word's ends go
        // through the chunk of its middle (a word is never split across a
        // cut), and a segment with words spans them.
        if let Some(map) = &self.time_map {
            for seg in &mut self.segments {
                for w in &mut seg.words {
                    let chunk = map.chunk_index((w.start + w.end) / 2.0, false);
                    w.start = map.original_time_in(w.start, chunk);
                    w.end = map.original_time_in(w.end, chunk);
                }
                match (seg.words.first(), seg.words.last()) {
                    (Some(first), Some(last)) => (seg.start, seg.end) = (first.start, last.end),
                    _ => {
                        seg.start = map.original_time(seg.start, false);
                        seg.end = map.original_time(seg.end, true);
                    }
                }
            }
        }
        let text = self.segments.iter().map(|s| s.text.as_str()).collect::<String>().trim().to_string();
        let (language, language_probability) = self.language.unwrap_or_else(|| ("en".to_string(), 0.0));
        Transcript { text, segments: self.segments, language, language_probability, duration: self.duration }
    }
}

fn inference(e: impl std::fmt::Display) -> EngineError {
    EngineError::Inference(e.to_string())
}

pub(super) fn transcribe(engine: &Engine, audio: Vec<f32>, opts: &DecodeOptions) -> Result<Transcript, EngineError> {
    let mut d = Decoding::new(engine, audio, opts.clone())?;
    while !d.is_done() {
        if let Some(Err(e)) = step(engine, &mut [&mut d]).into_iter().next() {
            return Err(e);
        }
    }
    Ok(d.finish())
}

/// Decodes the current window of every decoding in `batch` (which share a
/// [`GenKey`]) in one encoder and one generator call, and advances each.
/// Returns each one's outcome; a failed one should be dropped.
pub fn step(engine: &Engine, batch: &mut [&mut Decoding]) -> Vec<Result<(), EngineError>> {
    match step_batch(engine, batch) {
        Ok(results) => results,
        Err(e) => batch.iter().map(|_| Err(EngineError::Inference(e.to_string()))).collect(),
    }
}

fn step_batch(engine: &Engine, batch: &mut [&mut Decoding]) -> Result<Vec<Result<(), EngineError>>, EngineError> {
    let n = batch.len();
    if n == 0 {
        return Ok(Vec::new());
    }
    let tk = &engine.tokenizer;
    let n_mels = engine.mel.n_mels();
    // Spans `encode` (the windows' features and the encoder) and `generate`
    // (language detection, the decoder, fallbacks), inside the batcher's
    // `decode_step` span.
    let encode_span = tracing::info_span!("encode", batch = n).entered();
    let mut features = Vec::with_capacity(n * n_mels * batch[0].frames);
    let mut one = Vec::new();
    for d in batch.iter() {
        d.window_into(&mut one);
        features.extend_from_slice(&one);
    }
    let view = storage(&mut features, n_mels, n)?;
    let started = std::time::Instant::now();
    let encoded = engine.encode_batch(&view)?;
    let encode_ms = started.elapsed().as_millis() as u64;
    drop(encode_span);
    let _generate_span = tracing::info_span!("generate", batch = n).entered();

    if batch.iter().any(|d| d.language.is_none()) {
        let detected = engine.whisper.detect_language(&encoded).map_err(inference)?;
        for (d, langs) in batch.iter_mut().zip(detected) {
            if d.language.is_none() {
                let (code, p) = langs
                    .first()
                    .map(|l| (l.language.trim_start_matches("<|").trim_end_matches("|>").to_string(), l.probability))
                    .unwrap_or_else(|| ("en".to_string(), 0.0));
                d.set_language(engine, code, p);
            }
        }
    }

    let shared_previous = batch.iter().map(|d| d.previous().len()).min().unwrap_or(0);
    let prompts: Vec<Vec<&str>> = batch
        .iter()
        .map(|d| d.prompt(shared_previous).iter().filter_map(|&id| tk.token(id)).collect())
        .collect();
    let first_temperature = batch[0].opts.temperatures.first().copied().unwrap_or(0.0);
    let results = engine
        .whisper
        .generate(&encoded, &prompts, &whisper_options(&batch[0].opts, first_temperature))
        .map_err(inference)?;
    tracing::debug!(batch = n, encode_ms, generate_ms = started.elapsed().as_millis() as u64 - encode_ms,
        "decoded a batch of windows");

    let mut outcomes = Vec::with_capacity(n);
    for (d, r) in batch.iter_mut().zip(results) {
        let first = window_result(engine, &d.opts, first_temperature, &r);
        let index = outcomes.len();
        let outcome = if first.needs_fallback(&d.opts) {
            fallback(engine, d, &prompts_for(engine, d, shared_previous), first, engine.encoded_item(&encoded, index).ok())
        } else {
            Ok(first)
        };
        outcomes.push(outcome.and_then(|result| d.accept(engine, result, Some((&encoded, index)))));
    }
    Ok(outcomes)
}

fn prompts_for(engine: &Engine, d: &Decoding, max_previous: usize) -> Vec<String> {
    d.prompt(max_previous).iter().filter_map(|&id| engine.tokenizer.token(id)).map(str::to_string).collect()
}

fn window_result(engine: &Engine, opts: &DecodeOptions, temperature: f32, r: &crate::ct2::sys::WhisperGenerationResult) -> WindowResult {
    let tokens: Vec<u32> = r.sequences_ids.first().map(|s| s.iter().map(|&t| t as u32).collect()).unwrap_or_default();
    let score = r.scores.first().copied().unwrap_or(f32::NEG_INFINITY);
    let n = tokens.len() as f32;
    // CTranslate2 returns the length-normalised score; undo it as
    // faster-whisper does to get openai-whisper's avg_logprob.
    let avg_logprob = score * n.powf(opts.length_penalty) / (n + 1.0);
    let text = engine.tokenizer.decode(&tokens);
    let compression_ratio = compression_ratio(&text);
    tracing::debug!(temperature, avg_logprob, compression_ratio, no_speech_prob = r.no_speech_prob,
        tokens = tokens.len(), text = %text, "decoded window");
    WindowResult { tokens, temperature, avg_logprob, compression_ratio, no_speech_prob: r.no_speech_prob }
}

/// Retries one window at the next temperatures (alone: sampling settings
/// differ from the batch's), after `first` failed the quality checks;
/// `encoded` is the window's encoder output where the step's can be reused.
fn fallback(engine: &Engine, d: &Decoding, prompt: &[String], first: WindowResult, encoded: Option<StorageView<'static>>) -> Result<WindowResult, EngineError> {
    let encoded = match encoded {
        Some(e) => e,
        None => d.encode_window(engine, d.seek, d.segment_size())?,
    };
    let mut tried = vec![first];
    for &temperature in d.opts.temperatures.iter().skip(1) {
        let r = engine
            .whisper
            .generate(&encoded, std::slice::from_ref(&prompt.to_vec()), &whisper_options(&d.opts, temperature))
            .map_err(inference)?;
        let r = r.into_iter().next().ok_or_else(|| EngineError::Inference("no generation result".into()))?;
        let result = window_result(engine, &d.opts, temperature, &r);
        if !result.needs_fallback(&d.opts) {
            return Ok(result);
        }
        tried.push(result);
    }
    // Every temperature failed. openai-whisper keeps the last (hottest)
    // result; like faster-whisper we keep the most probable one among those
    // that are not repetition loops, which is far less often garbage.
    let loops = |r: &WindowResult| d.opts.compression_ratio_threshold.is_some_and(|t| r.compression_ratio > t);
    let pool: Vec<WindowResult> = if tried.iter().any(|r| !loops(r)) {
        tried.into_iter().filter(|r| !loops(r)).collect()
    } else {
        tried
    };
    pool.into_iter()
        .max_by(|a, b| a.avg_logprob.total_cmp(&b.avg_logprob))
        .ok_or_else(|| EngineError::Inference("no temperature to decode with".into()))
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// `data` as a `[batch, n_mels, frames]` CPU tensor, frames from its length.
fn storage(data: &mut [f32], n_mels: usize, batch: usize) -> Result<StorageView<'_>, EngineError> {
    let frames = data.len() / (n_mels * batch).max(1);
    StorageView::new(&[batch, n_mels, frames], data, Device::CPU).map_err(inference)
}

/// gzip-style compression ratio of the text, openai-whisper's repetition test.
pub fn compression_ratio(text: &str) -> f32 {
    if text.is_empty() {
        return 0.0;
    }
    let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    if enc.write_all(text.as_bytes()).is_err() {
        return 0.0;
    }
    match enc.finish() {
        Ok(z) if !z.is_empty() => text.len() as f32 / z.len() as f32,
        _ => 0.0,
    }
}

/// A decoded window cut into segments at pairs of timestamp tokens.
#[derive(Debug, PartialEq)]
pub(crate) struct Split {
    pub pieces: Vec<Piece>,
    /// Frames to move the window by.
    pub seek_advance: usize,
    /// Without timestamp pairs: the duration the last timestamp gives, if any.
    pub duration: Option<f64>,
    /// The window ended on a complete segment (a single closing timestamp).
    pub ended_on_window: bool,
}

#[derive(Debug, PartialEq)]
pub(crate) struct Piece {
    pub tokens: std::ops::Range<usize>,
    /// Start and end within the window, from its timestamp tokens.
    pub times: Option<(f64, f64)>,
}

/// openai-whisper's segment splitting: consecutive timestamp tokens close
/// one segment and open the next. When the window ends on a complete
/// segment the next window starts after it; otherwise it starts at the last
/// timestamp, so a sentence cut by the window is decoded again, whole.
pub(crate) fn split_by_timestamps(tokens: &[u32], ts_begin: u32, segment_size: usize) -> Split {
    let is_ts = |t: u32| t >= ts_begin;
    let n = tokens.len();
    let single_ending = n >= 2 && !is_ts(tokens[n - 2]) && is_ts(tokens[n - 1]);
    let mut consecutive: Vec<usize> =
        (1..n).filter(|&i| is_ts(tokens[i]) && is_ts(tokens[i - 1])).collect();
    if !consecutive.is_empty() {
        if single_ending {
            consecutive.push(n);
        }
        let mut pieces = Vec::new();
        let mut last = 0;
        for &cut in &consecutive {
            let sliced = &tokens[last..cut];
            if let (Some(&a), Some(&b)) = (sliced.first(), sliced.last()) {
                let start = if is_ts(a) { (a - ts_begin) as f64 * TIME_PRECISION } else { 0.0 };
                let end = if is_ts(b) { (b - ts_begin) as f64 * TIME_PRECISION } else { start };
                pieces.push(Piece { tokens: last..cut, times: Some((start, end)) });
            }
            last = cut;
        }
        let seek_advance = if single_ending {
            segment_size
        } else {
            let last_ts = tokens[last - 1].saturating_sub(ts_begin) as usize;
            (last_ts * INPUT_STRIDE).min(segment_size).max(1)
        };
        Split { pieces, seek_advance, duration: None, ended_on_window: single_ending }
    } else {
        let last_ts = tokens.iter().rev().copied().find(|&t| is_ts(t));
        let duration = match last_ts {
            Some(t) if t != ts_begin => Some((t - ts_begin) as f64 * TIME_PRECISION),
            _ => None,
        };
        Split { pieces: vec![Piece { tokens: 0..n, times: None }], seek_advance: segment_size, duration, ended_on_window: true }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TB: u32 = 1000; // timestamp_begin in these tests; words are < TB

    #[test]
    fn complete_segments_move_to_the_end_of_the_window() {
        // <0.00> a b <1.00><1.00> c <2.00> : single timestamp ending
        let toks = [TB, 1, 2, TB + 50, TB + 50, 3, TB + 100];
        let s = split_by_timestamps(&toks, TB, 3000);
        assert_eq!(s.pieces.len(), 2);
        assert_eq!(s.pieces[0].times, Some((0.0, 1.0)));
        assert_eq!(s.pieces[1].times, Some((1.0, 2.0)));
        assert_eq!(s.seek_advance, 3000);
    }

    #[test]
    fn an_unfinished_segment_is_decoded_again_from_the_last_timestamp() {
        // <0.00> a <5.00><5.00> b c   (cut by the window end)
        let toks = [TB, 1, TB + 250, TB + 250, 2, 3];
        let s = split_by_timestamps(&toks, TB, 3000);
        assert_eq!(s.pieces.len(), 1);
        assert_eq!(s.pieces[0].tokens, 0..3);
        assert_eq!(s.seek_advance, 500); // 5 s = 250 positions = 500 frames
    }

    #[test]
    fn no_timestamp_pairs_make_one_segment() {
        let toks = [TB, 1, 2, TB + 150];
        let s = split_by_timestamps(&toks, TB, 1200);
        assert_eq!(s.pieces, vec![Piece { tokens: 0..4, times: None }]);
        assert_eq!(s.duration, Some(3.0));
        assert_eq!(s.seek_advance, 1200);
    }

    #[test]
    fn repetition_compresses_well() {
        let rep = "the the the the the the the the the the the the the the the the the";
        assert!(compression_ratio(rep) > 2.4, "{}", compression_ratio(rep));
        assert!(compression_ratio("And so my fellow Americans, ask not what your country can do for you.") < 2.4);
    }
}
