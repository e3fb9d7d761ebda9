//! A session's input audio: the bytes of `input_audio_buffer.append`
//! (pcm16 at the session's rate, G.711 µ-law or A-law at 8 kHz) to 16 kHz
//! samples, as they arrive.

use super::protocol::{EventError, InputFormat};
use crate::audio::LiveResampler;

pub struct Input {
    format: InputFormat,
    resampler: Option<LiveResampler>,
    /// An odd byte of pcm16 left from the last append.
    carry: Option<u8>,
}

impl Input {
    pub fn new(format: InputFormat) -> Result<Self, EventError> {
        let rate = format.rate();
        let resampler = if rate == crate::audio::SAMPLE_RATE {
            None
        } else {
            Some(LiveResampler::new(rate).map_err(|e| EventError::invalid("invalid_value", Some("session.audio.input.format.rate"), e.to_string()))?)
        };
        Ok(Input { format, resampler, carry: None })
    }

    pub fn format(&self) -> InputFormat {
        self.format
    }

    /// Seconds of audio `bytes` hold in this format.
    pub fn seconds(&self, bytes: usize) -> f64 {
        let per_sample = if matches!(self.format, InputFormat::Pcm16 { .. }) { 2 } else { 1 };
        bytes as f64 / per_sample as f64 / self.format.rate() as f64
    }

    /// The 16 kHz samples of one append.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<f32>, EventError> {
        let mut mono: Vec<f32> = Vec::with_capacity(bytes.len());
        match self.format {
            InputFormat::Pcm16 { .. } => {
                let mut rest = bytes;
                if let (Some(lo), Some((&hi, tail))) = (self.carry.take(), rest.split_first()) {
                    mono.push(i16::from_le_bytes([lo, hi]) as f32 / 32768.0);
                    rest = tail;
                }
                let pairs = rest.chunks_exact(2);
                if let [odd] = pairs.remainder() {
                    self.carry = Some(*odd);
                }
                mono.extend(pairs.map(|p| i16::from_le_bytes([p[0], p[1]]) as f32 / 32768.0));
            }
            InputFormat::Ulaw => mono.extend(bytes.iter().map(|&b| ulaw(b) as f32 / 32768.0)),
            InputFormat::Alaw => mono.extend(bytes.iter().map(|&b| alaw(b) as f32 / 32768.0)),
        }
        match &mut self.resampler {
            None => Ok(mono),
            Some(r) => {
                let mut out = Vec::with_capacity(mono.len());
                r.push(&mono, &mut out).map_err(|e| EventError::server("audio_error", e.to_string()))?;
                Ok(out)
            }
        }
    }
}

/// G.711 µ-law to linear PCM (ITU-T G.711).
fn ulaw(b: u8) -> i16 {
    let u = !b;
    let t = ((((u & 0x0f) as i32) << 3) + 0x84) << ((u & 0x70) >> 4);
    (if u & 0x80 != 0 { 0x84 - t } else { t - 0x84 }) as i16
}

/// G.711 A-law to linear PCM (ITU-T G.711).
fn alaw(b: u8) -> i16 {
    let a = b ^ 0x55;
    let mut t = ((a & 0x0f) as i32) << 4;
    let seg = (a & 0x70) >> 4;
    match seg {
        0 => t += 8,
        1 => t += 0x108,
        _ => {
            t += 0x108;
            t <<= seg - 1;
        }
    }
    (if a & 0x80 != 0 { t } else { -t }) as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn g711_tables_match_the_standard_points() {
        assert_eq!(ulaw(0xff), 0);
        assert_eq!(ulaw(0x80), 32124);
        assert_eq!(ulaw(0x00), -32124);
        assert_eq!(alaw(0xd5), 8);
        assert_eq!(alaw(0xaa), 32256);
        assert_eq!(alaw(0x2a), -32256);
    }

    #[test]
    fn pcm16_at_24k_becomes_two_thirds_as_many_samples_and_odd_bytes_carry() {
        let mut input = Input::new(InputFormat::Pcm16 { rate: 24_000 }).unwrap();
        let tone: Vec<u8> = (0..24_000).flat_map(|i| (((i as f32 * 0.05).sin() * 8000.0) as i16).to_le_bytes()).collect();
        let mut n = 0;
        // Uneven pieces, odd lengths included.
        for piece in tone.chunks(4801) {
            n += input.push(piece).unwrap().len();
        }
        // All but what the resampler still holds (its last partial chunk and filter delay) is out.
        assert!((16_000 - 1600..=16_000).contains(&n), "{n}");
        let mut direct = Input::new(InputFormat::Pcm16 { rate: 16_000 }).unwrap();
        assert_eq!(direct.push(&[0x00, 0x40, 0x00]).unwrap(), vec![0.5]);
        assert_eq!(direct.push(&[0xc0]).unwrap(), vec![-0.5]);
    }
}
