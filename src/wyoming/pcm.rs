//! The audio of one Wyoming utterance: raw PCM chunks collected into a WAV
//! file in memory, so the dispatcher takes it like any upload (the audio
//! module decodes WAV of any rate, width and channel count and resamples
//! it) and a cluster gateway can store it like one. Limits are enforced as
//! the chunks arrive, not after the whole utterance is in memory.

use bytes::Bytes;

use super::protocol::Event;

/// Bytes of the canonical WAV header written in front of the PCM.
const WAV_HEADER: usize = 44;

/// What an `audio-start` or `audio-chunk` says about its samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Format {
    pub rate: u32,
    /// Bytes per sample: 1 (unsigned, as in WAV), 2, 3 or 4 (signed,
    /// little-endian).
    pub width: u16,
    pub channels: u16,
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} Hz, {}-bit, {} channel(s)", self.rate, self.width * 8, self.channels)
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PcmError {
    #[error("bad audio format: {0}")]
    BadFormat(String),
    #[error("the audio format changed mid-stream, from {from} to {to}")]
    FormatChanged { from: Format, to: Format },
    #[error("upload larger than the limit of {limit_mb} MB")]
    TooLarge { limit_mb: u64 },
    #[error("audio longer than the limit of {limit_s} s")]
    TooLong { limit_s: f64 },
}

impl PcmError {
    /// The code of the Wyoming `error` event, as the HTTP API names it.
    pub fn code(&self) -> &'static str {
        match self {
            PcmError::BadFormat(_) | PcmError::FormatChanged { .. } => "invalid_audio",
            PcmError::TooLarge { .. } => "upload_too_large",
            PcmError::TooLong { .. } => "audio_too_long",
        }
    }
}

impl Format {
    /// Reads `rate`, `width` and `channels` of an event; Ok(None) when the
    /// event has none of them (an `audio-chunk` may lean on its
    /// `audio-start`).
    pub fn from_event(event: &Event) -> Result<Option<Format>, PcmError> {
        let fields = ["rate", "width", "channels"];
        if fields.iter().all(|f| event.data.get(*f).is_none_or(|v| v.is_null())) {
            return Ok(None);
        }
        let get = |f: &str| event.uint(f).ok_or_else(|| PcmError::BadFormat(format!("`{f}` must be a whole number")));
        let (rate, width, channels) = (get("rate")?, get("width")?, get("channels")?);
        if !(1000..=384_000).contains(&rate) {
            return Err(PcmError::BadFormat(format!("rate {rate} (expected 1000-384000 Hz)")));
        }
        if !(1..=4).contains(&width) {
            return Err(PcmError::BadFormat(format!("width {width} (expected 1-4 bytes)")));
        }
        if !(1..=32).contains(&channels) {
            return Err(PcmError::BadFormat(format!("channels {channels} (expected 1-32)")));
        }
        // In range for the casts: checked just above.
        Ok(Some(Format { rate: rate as u32, width: width as u16, channels: channels as u16 }))
    }

    fn frame_bytes(&self) -> usize {
        self.width as usize * self.channels as usize
    }

    fn bytes_per_second(&self) -> f64 {
        self.rate as f64 * self.frame_bytes() as f64
    }
}

/// One utterance's audio as it arrives.
#[derive(Debug)]
pub struct Recording {
    /// The format the first chunk set (or the `audio-start`'s until then).
    format: Option<Format>,
    /// Whether a chunk fixed `format` (later chunks must match it).
    fixed: bool,
    /// The WAV file: header space, then the PCM.
    wav: Vec<u8>,
    limit_mb: u64,
    max_seconds: f64,
}

impl Recording {
    pub fn new(limit_mb: u64, max_seconds: f64) -> Recording {
        Recording { format: None, fixed: false, wav: vec![0; WAV_HEADER], limit_mb, max_seconds }
    }

    fn max_bytes(&self) -> u64 {
        // RIFF sizes are 32-bit.
        self.limit_mb.saturating_mul(1024 * 1024).min(u32::MAX as u64)
    }

    /// Bytes of payload that may still come before the upload limit.
    pub fn room(&self) -> u64 {
        self.max_bytes().saturating_sub(self.wav.len() as u64)
    }

    /// The format an `audio-start` announces; the chunks' own win.
    pub fn announce(&mut self, format: Format) {
        if !self.fixed {
            self.format = Some(format);
        }
    }

    /// Adds a chunk in `format` (None: the announced one).
    pub fn push(&mut self, format: Option<Format>, pcm: &[u8]) -> Result<(), PcmError> {
        let format = match (format, self.format) {
            (Some(f), Some(prev)) if self.fixed && f != prev => return Err(PcmError::FormatChanged { from: prev, to: f }),
            (Some(f), _) => f,
            (None, Some(prev)) => prev,
            (None, None) => return Err(PcmError::BadFormat("an audio chunk without rate, width and channels, and no audio-start".into())),
        };
        self.format = Some(format);
        self.fixed = true;
        if pcm.len() as u64 > self.room() {
            return Err(PcmError::TooLarge { limit_mb: self.limit_mb });
        }
        self.wav.extend_from_slice(pcm);
        if self.seconds() > self.max_seconds {
            return Err(PcmError::TooLong { limit_s: self.max_seconds });
        }
        Ok(())
    }

    /// Seconds of audio so far.
    pub fn seconds(&self) -> f64 {
        match self.format {
            Some(f) => (self.wav.len() - WAV_HEADER) as f64 / f.bytes_per_second(),
            None => 0.0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.wav.len() == WAV_HEADER
    }

    /// The WAV file; None when no whole frame of audio came.
    pub fn finish(self) -> Option<Bytes> {
        let f = self.format?;
        let mut wav = self.wav;
        // A trailing partial frame cannot be decoded; it is dropped.
        let frames = (wav.len() - WAV_HEADER) / f.frame_bytes();
        if frames == 0 {
            return None;
        }
        wav.truncate(WAV_HEADER + frames * f.frame_bytes());
        let data_len = (wav.len() - WAV_HEADER) as u32;
        let block_align = f.width * f.channels;
        let mut h = Vec::with_capacity(WAV_HEADER);
        h.extend_from_slice(b"RIFF");
        h.extend_from_slice(&(36 + data_len).to_le_bytes());
        h.extend_from_slice(b"WAVEfmt ");
        h.extend_from_slice(&16u32.to_le_bytes());
        h.extend_from_slice(&1u16.to_le_bytes()); // integer PCM
        h.extend_from_slice(&f.channels.to_le_bytes());
        h.extend_from_slice(&f.rate.to_le_bytes());
        h.extend_from_slice(&(f.rate * block_align as u32).to_le_bytes());
        h.extend_from_slice(&block_align.to_le_bytes());
        h.extend_from_slice(&(f.width * 8).to_le_bytes());
        h.extend_from_slice(b"data");
        h.extend_from_slice(&data_len.to_le_bytes());
        wav[..WAV_HEADER].copy_from_slice(&h);
        Some(Bytes::from(wav))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fmt(rate: u32, width: u16, channels: u16) -> Format {
        Format { rate, width, channels }
    }

    /// A 440 Hz tone, `seconds` long, as PCM of `f`.
    fn tone(f: Format, seconds: f64) -> Vec<u8> {
        let n = (f.rate as f64 * seconds) as usize;
        let mut out = Vec::new();
        for i in 0..n {
            let x = 0.5 * (2.0 * std::f64::consts::PI * 440.0 * i as f64 / f.rate as f64).sin();
            for _ in 0..f.channels {
                match f.width {
                    1 => out.push(((x * 127.0) as i32 + 128) as u8),
                    2 => out.extend_from_slice(&((x * 32767.0) as i16).to_le_bytes()),
                    3 => out.extend_from_slice(&((x * 8_388_607.0) as i32).to_le_bytes()[..3]),
                    _ => out.extend_from_slice(&((x * 2_147_483_647.0) as i32).to_le_bytes()),
                }
            }
        }
        out
    }

    #[test]
    fn formats_are_read_and_checked() {
        let e = Event::new("audio-chunk", json!({"rate": 16000, "width": 2, "channels": 1, "timestamp": null}));
        assert_eq!(Format::from_event(&e), Ok(Some(fmt(16000, 2, 1))));
        assert_eq!(Format::from_event(&Event::new("audio-chunk", json!({"timestamp": 5}))), Ok(None));
        for bad in [json!({"rate": 16000, "width": 2}), json!({"rate": 0, "width": 2, "channels": 1}),
            json!({"rate": 16000, "width": 8, "channels": 1}), json!({"rate": 16000, "width": 2, "channels": 0}),
            json!({"rate": -1, "width": 2, "channels": 1}), json!({"rate": "16000", "width": 2, "channels": 1})] {
            assert!(matches!(Format::from_event(&Event::new("audio-start", bad.clone())), Err(PcmError::BadFormat(_))), "{bad}");
        }
    }

    #[test]
    fn every_width_and_layout_decodes_to_the_same_length() {
        for f in [fmt(16000, 2, 1), fmt(8000, 2, 2), fmt(44100, 1, 1), fmt(48000, 3, 2), fmt(22050, 4, 1)] {
            let mut r = Recording::new(100, 60.0);
            let pcm = tone(f, 1.5);
            // Chunks that split frames must still join up.
            for c in pcm.chunks(1001) {
                r.push(Some(f), c).expect("push");
            }
            assert!((r.seconds() - 1.5).abs() < 1e-3, "{f}: {}", r.seconds());
            let wav = r.finish().expect("audio");
            let samples = crate::audio::decode(&wav, 60.0).unwrap_or_else(|e| panic!("{f}: {e}"));
            let secs = samples.len() as f64 / 16000.0;
            assert!((secs - 1.5).abs() < 0.02, "{f}: {secs} s");
            let peak = samples.iter().fold(0f32, |m, s| m.max(s.abs()));
            assert!((0.3..0.7).contains(&peak), "{f}: peak {peak}");
        }
    }

    #[test]
    fn the_first_chunk_fixes_the_format() {
        let mut r = Recording::new(100, 60.0);
        r.announce(fmt(16000, 2, 1));
        r.push(Some(fmt(8000, 2, 1)), &[0; 8]).expect("chunk's own format wins");
        r.push(None, &[0; 8]).expect("no format: the first one");
        assert!(matches!(r.push(Some(fmt(16000, 2, 1)), &[0; 8]), Err(PcmError::FormatChanged { .. })));
        let mut r = Recording::new(100, 60.0);
        assert!(matches!(r.push(None, &[0; 8]), Err(PcmError::BadFormat(_))));
    }

    #[test]
    fn limits_stop_the_recording_as_it_grows() {
        let mut r = Recording::new(1, 1000.0);
        let chunk = vec![0u8; 300 * 1024];
        let mut pushed = 0;
        let err = loop {
            match r.push(Some(fmt(48000, 4, 2)), &chunk) {
                Ok(()) => pushed += 1,
                Err(e) => break e,
            }
        };
        assert_eq!((pushed, err.code()), (3, "upload_too_large"));
        assert!(r.room() < chunk.len() as u64);
        let mut r = Recording::new(100, 2.0);
        let second = vec![0u8; 32000];
        r.push(Some(fmt(16000, 2, 1)), &second).expect("1 s");
        r.push(None, &second).expect("2 s");
        assert_eq!(r.push(None, &[0, 0]), Err(PcmError::TooLong { limit_s: 2.0 }));
    }

    #[test]
    fn nothing_or_a_partial_frame_is_no_audio() {
        assert_eq!(Recording::new(1, 1.0).finish(), None);
        let mut r = Recording::new(1, 1.0);
        r.push(Some(fmt(16000, 2, 2)), &[1, 2, 3]).expect("push");
        assert!(!r.is_empty());
        assert_eq!(r.finish(), None);
    }
}
