//! Audio decoding: any container/codec symphonia knows, detected from the
//! content (never the file name), to 16 kHz mono f32 samples in [-1, 1].
//!
//! Untrusted uploads go through here, so: header-declared lengths are only
//! used to refuse early, never to allocate; the duration limit is enforced
//! while decoding; and a panic deep in a decoder becomes an error, not a
//! crashed worker.

use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};

use rubato::{FftFixedIn, Resampler};
use symphonia::core::audio::{AudioBuffer, AudioBufferRef, Signal};
use symphonia::core::codecs::{CodecType, DecoderOptions, CODEC_TYPE_NULL};
use symphonia::core::conv::IntoSample;
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::{FormatOptions, FormatReader};
use symphonia::core::io::{
    MediaSource, MediaSourceStream, MediaSourceStreamOptions, ReadOnlySource,
};
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;
use symphonia::core::sample::Sample;

mod guard;
mod mp4_edit;
mod opus;

pub const SAMPLE_RATE: u32 = 16_000;

#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    #[error("empty file")]
    Empty,
    #[error("not a recognised audio format: {0}")]
    Unrecognised(String),
    #[error("corrupt or truncated audio: {0}")]
    Corrupt(String),
    #[error("audio of at least {seconds:.0} s exceeds the limit of {limit_s} s")]
    TooLong { seconds: f64, limit_s: f64 },
    /// The container was understood but its codec cannot be decoded (e.g. WMA).
    #[error("unsupported audio codec: {0}")]
    Unsupported(String),
}

/// Sample rates outside this range are refused: they are either nonsense
/// from a damaged header or would make the resampler's FFT absurdly large.
const MIN_RATE: u32 = 1_000;
const MAX_RATE: u32 = 768_000;

/// Input frames per resampler call. With rubato's FFT resampler the
/// anti-aliasing filter is about this long (in input samples), which is far
/// more than speech recognition needs while staying fast.
const RESAMPLER_CHUNK: usize = 1024;

/// Decodes `bytes` to 16 kHz mono, stopping as soon as more than
/// `max_seconds` of audio has been seen (or the header declares more).
pub fn decode(bytes: &[u8], max_seconds: f64) -> Result<Vec<f32>, AudioError> {
    if bytes.is_empty() {
        return Err(AudioError::Empty);
    }
    // Last line of defence: symphonia and rubato are not meant to panic on
    // bad input, but a worker must survive it if they do.
    let mut audio = catch_unwind(AssertUnwindSafe(|| decode_inner(bytes, max_seconds))).unwrap_or_else(|_| {
        Err(AudioError::Corrupt(
            "the decoder failed on malformed data".into(),
        ))
    })?;
    // The samples wait in the queue, up to limits.max_queue requests of
    // them: no spare capacity from growing the buffer.
    audio.shrink_to_fit();
    Ok(audio)
}

fn decode_inner(bytes: &[u8], max_seconds: f64) -> Result<Vec<f32>, AudioError> {
    guard::check(bytes)?;
    let mut format = open(bytes)?;

    // symphonia's codecs plus Opus (libopus), which symphonia 0.5 lacks.
    let codecs = opus::codecs();
    let track = format
        .tracks()
        .iter()
        .find(|t| {
            t.codec_params.codec != CODEC_TYPE_NULL
                && codecs.get_codec(t.codec_params.codec).is_some()
        })
        .cloned();
    let Some(track) = track else {
        return Err(
            match format
                .tracks()
                .iter()
                .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
            {
                Some(t) => AudioError::Unsupported(codec_name(t.codec_params.codec)),
                None => AudioError::Corrupt("the file contains no audio track".into()),
            },
        );
    };

    // Refuse before decoding anything when the header already says it is
    // too long. ffmpeg writes 0xFFFFFFFF as the RIFF size when streaming WAV
    // to a pipe, meaning "unknown", so that declared length is not trusted.
    if let (Some(n_frames), Some(rate)) =
        (track.codec_params.n_frames, track.codec_params.sample_rate)
    {
        let seconds = n_frames as f64 / f64::from(rate.max(1));
        if seconds > max_seconds && !is_streamed_wav(bytes) {
            return Err(AudioError::TooLong {
                seconds,
                limit_s: max_seconds,
            });
        }
    }

    let mut decoder = codecs
        .make(&track.codec_params, &DecoderOptions::default())
        .map_err(|e| match e {
            // The codec is known but its setup data (e.g. an OpusHead) is damaged.
            SymError::DecodeError(what) => AudioError::Corrupt(what.into()),
            _ => AudioError::Unsupported(codec_name(track.codec_params.codec)),
        })?;

    let mut out: Vec<f32> = Vec::new();
    let mut segment: Option<Segment> = None;
    let mut mono: Vec<f32> = Vec::new();
    let mut seconds = 0.0f64;
    let mut decoded_packets = 0usize;
    let mut first_error: Option<String> = None;
    let edit = mp4_edit::audio_edit(bytes);
    // Frames decoded so far, for applying `edit`.
    let mut position = 0u64;

    loop {
        let packet = match format.next_packet() {
            Ok(p) => p,
            // Running out of data, even mid-packet, is how a truncated
            // upload ends: keep what was decoded, like ffmpeg does. Other
            // demuxer errors are unrecoverable per symphonia, so stop too.
            Err(SymError::IoError(_)) | Err(SymError::ResetRequired) => break,
            Err(e) => {
                first_error.get_or_insert_with(|| e.to_string());
                break;
            }
        };
        if packet.track_id() != track.id {
            continue;
        }
        let buf = match decoder.decode(&packet) {
            Ok(buf) => buf,
            // One damaged packet costs a few milliseconds of audio; skip it.
            Err(SymError::DecodeError(e)) => {
                first_error.get_or_insert_with(|| e.to_string());
                continue;
            }
            Err(SymError::IoError(_)) => break,
            Err(e) => {
                first_error.get_or_insert_with(|| e.to_string());
                break;
            }
        };
        decoded_packets += 1;
        let rate = buf.spec().rate;
        if buf.frames() == 0 || buf.spec().channels.count() == 0 {
            continue;
        }
        if !(MIN_RATE..=MAX_RATE).contains(&rate) {
            return Err(AudioError::Corrupt(format!(
                "unsupported sample rate {rate} Hz"
            )));
        }
        seconds += buf.frames() as f64 / f64::from(rate);
        if seconds > max_seconds {
            return Err(AudioError::TooLong {
                seconds,
                limit_s: max_seconds,
            });
        }

        mono.clear();
        downmix(&buf, &mut mono);
        let mut kept = &mono[..];
        if let Some(edit) = &edit {
            let (first, end) = edit.frames(rate);
            let len = mono.len() as u64;
            let start = position;
            let clip = |f: u64| f.saturating_sub(start).min(len) as usize;
            kept = &mono[clip(first)..clip(end).max(clip(first))];
            position += len;
            if kept.is_empty() {
                continue;
            }
        }
        // A stream may change rate midway (e.g. concatenated MP3s): each
        // run of one rate is resampled on its own.
        if segment.as_ref().is_some_and(|s| s.rate != rate) {
            if let Some(s) = segment.take() {
                s.finish(&mut out)?;
            }
        }
        let seg = match &mut segment {
            Some(s) => s,
            None => segment.insert(Segment::new(rate)?),
        };
        seg.push(kept, &mut out)?;
    }
    if let Some(s) = segment.take() {
        s.finish(&mut out)?;
    }

    if out.is_empty() {
        return Err(match first_error {
            Some(_) if decoded_packets == 0 && !starts_like_audio(bytes) => unrecognised(),
            Some(e) => AudioError::Corrupt(format!("no audio could be decoded ({e})")),
            None => AudioError::Corrupt("the file contains no audio samples".into()),
        });
    }
    // Float formats may carry out-of-range values or NaN; the model wants [-1, 1].
    for s in &mut out {
        *s = if s.is_finite() {
            s.clamp(-1.0, 1.0)
        } else {
            0.0
        };
    }
    Ok(out)
}

/// Probes the content and opens its container.
fn open(bytes: &[u8]) -> Result<Box<dyn FormatReader>, AudioError> {
    // Gapless mode trims MP3/AAC encoder delay and padding, so timestamps
    // line up with the original audio.
    let format_opts = FormatOptions {
        enable_gapless: true,
        ..Default::default()
    };
    let probe = |seekable: bool| {
        let cursor = Cursor::new(bytes.to_vec());
        let source: Box<dyn MediaSource> = if seekable {
            Box::new(cursor)
        } else {
            Box::new(ReadOnlySource::new(cursor))
        };
        let mss = MediaSourceStream::new(source, MediaSourceStreamOptions::default());
        symphonia::default::get_probe()
            .format(&Hint::new(), mss, &format_opts, &MetadataOptions::default())
            .map(|probed| probed.format)
    };
    // symphonia 0.5's MKV reader panics, rather than failing, when the
    // index its SeekHead points to lies past the end of a truncated file:
    // the case of the read errors below, so it gets the same retry.
    let seekable = catch_unwind(AssertUnwindSafe(|| probe(true)))
        .unwrap_or(Err(SymError::DecodeError("the reader failed on a truncated file")));
    match seekable {
        Ok(format) => Ok(format),
        // A format marker was found but the header is broken. If the file
        // does not even start like audio, the "marker" was most likely a
        // chance match in arbitrary data.
        Err(SymError::DecodeError(_) | SymError::IoError(_) | SymError::LimitError(_))
            if !starts_like_audio(bytes) =>
        {
            Err(unrecognised())
        }
        // Some readers seek to the end while opening (Ogg for the duration,
        // MKV for its index), which fails on a truncated upload. Read front
        // to back instead, as a stream, to still decode what is there.
        Err(e @ (SymError::DecodeError(_) | SymError::IoError(_) | SymError::LimitError(_))) => {
            probe(false).map_err(|_| AudioError::Corrupt(format!("unreadable header: {e}")))
        }
        Err(_) => Err(unrecognised()),
    }
}

fn unrecognised() -> AudioError {
    AudioError::Unrecognised(
        "expected WAV, FLAC, MP3, Ogg (Vorbis, Opus), M4A/MP4 (AAC, ALAC), WebM/MKV (Opus, Vorbis), AIFF or CAF".into(),
    )
}

fn codec_name(codec: CodecType) -> String {
    use symphonia::core::codecs::*;
    match codec {
        CODEC_TYPE_OPUS => "Opus".into(),
        CODEC_TYPE_WMA => "WMA".into(),
        CODEC_TYPE_EAC3 => "E-AC-3".into(),
        CODEC_TYPE_AC4 => "AC-4".into(),
        CODEC_TYPE_WAVPACK => "WavPack".into(),
        CODEC_TYPE_DCA => "DTS".into(),
        CODEC_TYPE_SPEEX => "Speex".into(),
        CODEC_TYPE_MP1 => "MPEG Layer I".into(),
        other => format!("codec id {other}"),
    }
}

/// True when the bytes begin with the signature of a format symphonia reads.
/// Only used to tell a damaged audio file from arbitrary data that happened
/// to contain a format marker somewhere.
fn starts_like_audio(b: &[u8]) -> bool {
    let at = |i: usize, sig: &[u8]| b.get(i..i + sig.len()) == Some(sig);
    at(0, b"RIFF")
        || at(0, b"RIFX")
        || at(0, b"RF64")
        || at(0, b"FORM")
        || at(0, b"fLaC")
        || at(0, b"OggS")
        || at(0, b"ID3")
        || at(0, b"caff")
        || at(0, &[0x1A, 0x45, 0xDF, 0xA3]) // EBML: Matroska/WebM
        || at(4, b"ftyp")
        || (b.len() >= 2 && b[0] == 0xFF && b[1] & 0xE0 == 0xE0) // MPEG audio / ADTS sync
}

fn is_streamed_wav(b: &[u8]) -> bool {
    b.get(0..4) == Some(b"RIFF") && b.get(4..8) == Some(&[0xFF; 4])
}

/// Appends the average of all channels to `out`.
fn downmix(buf: &AudioBufferRef<'_>, out: &mut Vec<f32>) {
    fn mix<S: Sample + IntoSample<f32>>(buf: &AudioBuffer<S>, out: &mut Vec<f32>) {
        let planes = buf.planes();
        let planes = planes.planes();
        let start = out.len();
        out.resize(start + buf.frames(), 0.0);
        let dst = &mut out[start..];
        for plane in planes {
            for (d, s) in dst.iter_mut().zip(plane.iter()) {
                *d += (*s).into_sample();
            }
        }
        let k = 1.0 / planes.len().max(1) as f32;
        // Float formats may carry NaN, infinities or values far outside
        // [-1, 1]: one such sample would turn the resampler's whole FFT
        // block into NaN (and make rubato panic), so they are sanitised
        // here, before resampling, not only at the end.
        dst.iter_mut().for_each(|d| {
            let x = *d * k;
            *d = if x.is_finite() { x.clamp(-1.0, 1.0) } else { 0.0 };
        });
    }
    match buf {
        AudioBufferRef::U8(b) => mix(b, out),
        AudioBufferRef::U16(b) => mix(b, out),
        AudioBufferRef::U24(b) => mix(b, out),
        AudioBufferRef::U32(b) => mix(b, out),
        AudioBufferRef::S8(b) => mix(b, out),
        AudioBufferRef::S16(b) => mix(b, out),
        AudioBufferRef::S24(b) => mix(b, out),
        AudioBufferRef::S32(b) => mix(b, out),
        AudioBufferRef::F32(b) => mix(b, out),
        AudioBufferRef::F64(b) => mix(b, out),
    }
}

/// 16 kHz samples from live audio at another rate, resampled as it arrives
/// (a realtime session's input). Output lags input by at most one
/// resampler chunk (1024 input samples).
pub struct LiveResampler(Segment);

impl LiveResampler {
    pub fn new(rate: u32) -> Result<Self, AudioError> {
        if !(MIN_RATE..=MAX_RATE).contains(&rate) {
            return Err(AudioError::Corrupt(format!("sample rate {rate} Hz is out of range")));
        }
        Segment::new(rate).map(LiveResampler)
    }

    /// Appends the 16 kHz samples `mono` yields (so far) to `out`.
    pub fn push(&mut self, mono: &[f32], out: &mut Vec<f32>) -> Result<(), AudioError> {
        self.0.push(mono, out)
    }
}

/// A run of mono audio at one sample rate, resampled to 16 kHz as it
/// arrives so that memory holds 16 kHz output, not the (larger) source.
struct Segment {
    rate: u32,
    /// None when the input is already at 16 kHz.
    resampler: Option<FftFixedIn<f32>>,
    pending: Vec<f32>,
    scratch: Vec<f32>,
    frames_in: u64,
    /// Where this segment's output starts in `out`.
    out_start: usize,
    /// Output frames still to drop: the resampler's filter delay. Dropping
    /// them keeps sample n of the output at time n / 16000 s.
    to_skip: usize,
    started: bool,
}

impl Segment {
    fn new(rate: u32) -> Result<Self, AudioError> {
        let resampler = if rate == SAMPLE_RATE {
            None
        } else {
            Some(
                FftFixedIn::new(rate as usize, SAMPLE_RATE as usize, RESAMPLER_CHUNK, 1, 1)
                    .map_err(|e| {
                        AudioError::Corrupt(format!("cannot resample from {rate} Hz: {e}"))
                    })?,
            )
        };
        let (to_skip, scratch) = match &resampler {
            Some(r) => (r.output_delay(), vec![0.0; r.output_frames_max()]),
            None => (0, Vec::new()),
        };
        Ok(Segment {
            rate,
            resampler,
            pending: Vec::new(),
            scratch,
            frames_in: 0,
            out_start: 0,
            to_skip,
            started: false,
        })
    }

    fn push(&mut self, mono: &[f32], out: &mut Vec<f32>) -> Result<(), AudioError> {
        if !self.started {
            self.out_start = out.len();
            self.started = true;
        }
        self.frames_in += mono.len() as u64;
        if self.resampler.is_none() {
            out.extend_from_slice(mono);
            return Ok(());
        }
        self.pending.extend_from_slice(mono);
        let full = self.pending.len() / RESAMPLER_CHUNK * RESAMPLER_CHUNK;
        for start in (0..full).step_by(RESAMPLER_CHUNK) {
            let chunk = std::mem::take(&mut self.pending);
            let r = self.process(Some(&chunk[start..start + RESAMPLER_CHUNK]), out);
            self.pending = chunk;
            r?;
        }
        self.pending.drain(..full);
        Ok(())
    }

    /// Flushes the resampler and cuts the output to exactly the input's
    /// duration at 16 kHz.
    fn finish(mut self, out: &mut Vec<f32>) -> Result<(), AudioError> {
        if self.resampler.is_none() {
            return Ok(());
        }
        let expected = (self.frames_in * u64::from(SAMPLE_RATE) + u64::from(self.rate) / 2)
            / u64::from(self.rate);
        let expected = usize::try_from(expected).unwrap_or(usize::MAX);
        let rest = std::mem::take(&mut self.pending);
        if !rest.is_empty() {
            self.process(Some(&rest), out)?;
        }
        // Zeros push out what the filter still holds; a few calls always
        // suffice, the bound only guards against a logic error looping.
        for _ in 0..64 {
            if out.len() - self.out_start >= expected {
                break;
            }
            self.process(None, out)?;
        }
        out.truncate(self.out_start + expected);
        Ok(())
    }

    /// Runs one chunk (zero-padded if short, all zeros if `None`).
    fn process(&mut self, input: Option<&[f32]>, out: &mut Vec<f32>) -> Result<(), AudioError> {
        let Some(r) = &mut self.resampler else {
            return Ok(());
        };
        let result = match input {
            Some(x) if x.len() == RESAMPLER_CHUNK => {
                r.process_into_buffer(&[x], &mut [&mut self.scratch[..]], None)
            }
            Some(x) => {
                r.process_partial_into_buffer(Some(&[x]), &mut [&mut self.scratch[..]], None)
            }
            None => {
                r.process_partial_into_buffer(None::<&[&[f32]]>, &mut [&mut self.scratch[..]], None)
            }
        };
        let (_, produced) =
            result.map_err(|e| AudioError::Corrupt(format!("resampling failed: {e}")))?;
        let skip = self.to_skip.min(produced);
        self.to_skip -= skip;
        out.extend_from_slice(&self.scratch[skip..produced]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;
    use std::time::{Duration, Instant};

    const PCM: u16 = 1;
    const FLOAT: u16 = 3;

    /// Builds a WAV file byte by byte. `samples` is interleaved, in [-1, 1].
    /// `declared_data_len` overrides the data chunk size (and RIFF size).
    fn wav(
        tag: u16,
        bits: u16,
        rate: u32,
        channels: u16,
        samples: &[f64],
        extensible: bool,
        declared_data_len: Option<u32>,
    ) -> Vec<u8> {
        let mut data = Vec::new();
        for &x in samples {
            match (tag, bits) {
                (PCM, 8) => data.push((x * 127.0 + 128.0).round() as u8),
                (PCM, 16) => data.extend_from_slice(&((x * 32767.0).round() as i16).to_le_bytes()),
                (PCM, 24) => {
                    data.extend_from_slice(&((x * 8_388_607.0).round() as i32).to_le_bytes()[..3])
                }
                (PCM, 32) => {
                    data.extend_from_slice(&((x * 2_147_483_647.0).round() as i32).to_le_bytes())
                }
                (FLOAT, 32) => data.extend_from_slice(&(x as f32).to_le_bytes()),
                _ => panic!("unsupported test format"),
            }
        }
        let block_align = channels * bits / 8;
        let mut fmt = Vec::new();
        fmt.extend_from_slice(&(if extensible { 0xFFFE } else { tag }).to_le_bytes());
        fmt.extend_from_slice(&channels.to_le_bytes());
        fmt.extend_from_slice(&rate.to_le_bytes());
        fmt.extend_from_slice(&(rate * u32::from(block_align)).to_le_bytes());
        fmt.extend_from_slice(&block_align.to_le_bytes());
        fmt.extend_from_slice(&bits.to_le_bytes());
        if extensible {
            fmt.extend_from_slice(&22u16.to_le_bytes());
            fmt.extend_from_slice(&bits.to_le_bytes()); // valid bits
            let mask: u32 = if channels == 2 { 0x3 } else { 0x4 };
            fmt.extend_from_slice(&mask.to_le_bytes());
            fmt.extend_from_slice(&tag.to_le_bytes());
            fmt.extend_from_slice(&[0, 0, 0, 0, 0x10, 0, 0x80, 0, 0, 0xAA, 0, 0x38, 0x9B, 0x71]);
        }
        let data_len = declared_data_len.unwrap_or(data.len() as u32);
        let mut out = Vec::new();
        out.extend_from_slice(b"RIFF");
        let riff_len = if data_len == u32::MAX {
            u32::MAX
        } else {
            4 + 8 + fmt.len() as u32 + 8 + data_len
        };
        out.extend_from_slice(&riff_len.to_le_bytes());
        out.extend_from_slice(b"WAVE");
        out.extend_from_slice(b"fmt ");
        out.extend_from_slice(&(fmt.len() as u32).to_le_bytes());
        out.extend_from_slice(&fmt);
        out.extend_from_slice(b"data");
        out.extend_from_slice(&data_len.to_le_bytes());
        out.extend_from_slice(&data);
        out
    }

    /// `seconds` of a sine at `freq` and amplitude `amp`, same on all channels.
    fn sine(rate: u32, channels: u16, seconds: f64, freq: f64, amp: f64) -> Vec<f64> {
        let n = (seconds * f64::from(rate)).round() as usize;
        (0..n)
            .flat_map(|i| {
                let x = amp * (2.0 * PI * freq * i as f64 / f64::from(rate)).sin();
                std::iter::repeat_n(x, usize::from(channels))
            })
            .collect()
    }

    fn peak(x: &[f32]) -> f32 {
        x.iter().fold(0.0f32, |m, s| m.max(s.abs()))
    }

    /// Frequency from zero crossings, away from the edges.
    fn frequency(x: &[f32]) -> f64 {
        let mid = &x[x.len() / 10..x.len() * 9 / 10];
        let crossings = mid
            .windows(2)
            .filter(|w| (w[0] < 0.0) != (w[1] < 0.0))
            .count();
        crossings as f64 / 2.0 / (mid.len() as f64 / f64::from(SAMPLE_RATE))
    }

    /// Correlation of `x` with the ideal 16 kHz sine, at lag 0: ≈1 only if
    /// the resampled signal is not shifted in time.
    fn correlation_with_sine(x: &[f32], freq: f64) -> f64 {
        let mid = x.len() / 10..x.len() * 9 / 10;
        let (mut xy, mut xx, mut yy) = (0.0, 0.0, 0.0);
        for i in mid {
            let y = (2.0 * PI * freq * i as f64 / f64::from(SAMPLE_RATE)).sin();
            let v = f64::from(x[i]);
            xy += v * y;
            xx += v * v;
            yy += y * y;
        }
        xy / (xx * yy).sqrt()
    }

    fn check_sine(out: &[f32], seconds: f64, amp: f32) {
        let expected = (seconds * f64::from(SAMPLE_RATE)).round() as usize;
        assert!(
            out.len().abs_diff(expected) <= 1,
            "length {} != {expected}",
            out.len()
        );
        assert!((peak(out) - amp).abs() < 0.02, "peak {}", peak(out));
        let f = frequency(out);
        assert!((f - 440.0).abs() < 3.0, "frequency {f}");
        let c = correlation_with_sine(out, 440.0);
        assert!(c > 0.99, "correlation with the ideal sine {c}");
    }

    #[test]
    fn every_wav_sample_format_decodes() {
        for (tag, bits) in [(PCM, 8), (PCM, 16), (PCM, 24), (PCM, 32), (FLOAT, 32)] {
            for extensible in [false, true] {
                let bytes = wav(
                    tag,
                    bits,
                    16_000,
                    1,
                    &sine(16_000, 1, 1.0, 440.0, 0.5),
                    extensible,
                    None,
                );
                let out = decode(&bytes, 60.0)
                    .unwrap_or_else(|e| panic!("{tag}/{bits}/{extensible}: {e}"));
                check_sine(&out, 1.0, 0.5);
            }
        }
    }

    #[test]
    fn stereo_44k1_becomes_16k_mono_in_time() {
        for extensible in [false, true] {
            let bytes = wav(
                PCM,
                24,
                44_100,
                2,
                &sine(44_100, 2, 1.5, 440.0, 0.5),
                extensible,
                None,
            );
            check_sine(&decode(&bytes, 60.0).unwrap(), 1.5, 0.5);
        }
    }

    #[test]
    fn other_rates_resample_to_the_right_length() {
        for rate in [8_000, 11_025, 22_050, 32_000, 48_000, 96_000, 12_345] {
            let bytes = wav(
                PCM,
                16,
                rate,
                1,
                &sine(rate, 1, 2.0, 440.0, 0.5),
                false,
                None,
            );
            check_sine(&decode(&bytes, 60.0).unwrap(), 2.0, 0.5);
        }
    }

    #[test]
    fn channels_are_averaged() {
        // Left carries the sine, right is silent: mono is half the sine.
        let left = sine(16_000, 1, 1.0, 440.0, 0.8);
        let samples: Vec<f64> = left.iter().flat_map(|&x| [x, 0.0]).collect();
        let out = decode(&wav(PCM, 16, 16_000, 2, &samples, false, None), 60.0).unwrap();
        check_sine(&out, 1.0, 0.4);
    }

    #[test]
    fn empty_input_is_empty() {
        assert!(matches!(decode(&[], 60.0), Err(AudioError::Empty)));
    }

    #[test]
    fn random_bytes_and_text_are_unrecognised() {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        for len in [1, 10, 1000, 65_536, 300_000] {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            let r = decode(&bytes, 60.0);
            assert!(
                matches!(r, Err(AudioError::Unrecognised(_))),
                "{len} random bytes: {r:?}"
            );
        }
        let text = b"Hello, this is not audio at all.\nJust a text file.\n".repeat(100);
        assert!(matches!(
            decode(&text, 60.0),
            Err(AudioError::Unrecognised(_))
        ));
    }

    #[test]
    fn header_claiming_ten_hours_is_refused_fast() {
        let ten_hours = 10 * 3600 * 16_000 * 2;
        let bytes = wav(
            PCM,
            16,
            16_000,
            1,
            &sine(16_000, 1, 0.128, 440.0, 0.5),
            false,
            Some(ten_hours),
        );
        assert!(bytes.len() < 4200);
        let t = Instant::now();
        let r = decode(&bytes, 14_400.0);
        assert!(
            t.elapsed() < Duration::from_millis(100),
            "took {:?}",
            t.elapsed()
        );
        match r {
            Err(AudioError::TooLong { seconds, limit_s }) => {
                assert!((seconds - 36_000.0).abs() < 1.0);
                assert_eq!(limit_s, 14_400.0);
            }
            other => panic!("expected TooLong, got {other:?}"),
        }
    }

    #[test]
    fn real_audio_over_the_limit_is_too_long() {
        let samples = sine(16_000, 1, 3.0, 440.0, 0.5);
        let bytes = wav(PCM, 16, 16_000, 1, &samples, false, None);
        assert!(matches!(
            decode(&bytes, 2.0),
            Err(AudioError::TooLong { .. })
        ));
        // Without a declared length (WAV streamed by ffmpeg to a pipe) the
        // limit is caught while decoding, and under the limit it decodes.
        let streamed = wav(PCM, 16, 16_000, 1, &samples, false, Some(u32::MAX));
        match decode(&streamed, 2.0) {
            Err(AudioError::TooLong { seconds, .. }) => assert!(seconds > 2.0 && seconds < 2.2),
            other => panic!("expected TooLong, got {other:?}"),
        }
        assert_eq!(decode(&streamed, 60.0).unwrap().len(), 48_000);
    }

    #[test]
    fn wav_without_samples_is_corrupt() {
        let r = decode(&wav(PCM, 16, 16_000, 1, &[], false, None), 60.0);
        assert!(matches!(r, Err(AudioError::Corrupt(_))), "{r:?}");
    }

    #[test]
    fn truncated_wav_decodes_what_is_there() {
        let samples = sine(16_000, 1, 1.0, 440.0, 0.5);
        let bytes = wav(PCM, 16, 16_000, 1, &samples, false, Some(2 * 16_000 * 2));
        let out = decode(&bytes, 60.0).unwrap();
        assert!(out.len() > 15_000 && out.len() <= 16_000, "{}", out.len());
        // Cut mid-header: an error, not a panic.
        assert!(decode(&bytes[..30], 60.0).is_err());
    }

    #[test]
    fn float_out_of_range_and_nan_are_sanitised() {
        let mut samples = sine(16_000, 1, 0.5, 440.0, 2.0);
        samples[100] = f64::NAN;
        let out = decode(&wav(FLOAT, 32, 16_000, 1, &samples, false, None), 60.0).unwrap();
        assert!(out.iter().all(|s| (-1.0..=1.0).contains(s)));
        assert_eq!(out[100], 0.0);
    }

    #[test]
    fn non_finite_floats_do_not_break_the_resampler() {
        // Found by fuzzing (fuzz/regressions/audio_decode/decodes_wav_f32_nan_11k.wav):
        // a NaN or infinity reaching rubato's FFT made it panic, and the
        // whole upload failed as malformed.
        let mut samples = sine(44_100, 2, 1.0, 440.0, 0.5);
        samples[1000] = f64::NAN;
        samples[2001] = f64::INFINITY;
        samples[3000] = -1e30;
        let bytes = wav(FLOAT, 32, 44_100, 2, &samples, false, None);
        let out = decode(&bytes, 60.0).expect("decodes");
        assert_eq!(out.len(), 16_000);
        assert!(out.iter().all(|s| (-1.0..=1.0).contains(s)));
        // Away from the damaged samples the sine is intact.
        assert!(correlation_with_sine(&out[4_000..], 440.0) > 0.99);
    }
}
