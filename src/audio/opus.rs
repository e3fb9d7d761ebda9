//! Opus, as browsers record it: WebM/Matroska (Chrome, Firefox
//! MediaRecorder) and Ogg (`.opus`). symphonia 0.5 demuxes both and hands
//! out Opus packets, but has no Opus decoder; this module is one, registered
//! beside symphonia's own codecs in [`codecs`].
//!
//! Decoder: libopus 1.6, the reference implementation (continuously fuzzed
//! upstream), through the `opusic-sys` crate, which compiles the bundled
//! libopus source with cmake and links it statically. The binary therefore
//! needs no system library at run time; the build needs cmake and a C
//! compiler, and no network beyond crates.io. Alternatives looked at:
//! `audiopus_sys` (under `audiopus`) links the system libopus by default;
//! `opus` 0.4 is a safe wrapper over the same `opusic-sys` but cannot decode
//! multistream (surround) Opus; `symphonia-adapter-libopus` also wraps
//! `opusic-sys`, but its last release for symphonia 0.5 (0.2) outputs i16,
//! ignores the Opus pre-skip and fails on stereo packets over 60 ms, and its
//! newer releases need symphonia 0.6; the pure-Rust decoders on crates.io
//! (opus-decoder, opus-rs, mousiki, ...) are recent ports with little use
//! behind them, and a decoder of untrusted uploads should be the reference
//! one. The FFI surface here is four calls (create, decode, reset, destroy).
//!
//! Timing: Opus always decodes at 48 kHz here (the header's "input sample
//! rate" is informational), and the resampler in `mod.rs` takes it to
//! 16 kHz. The encoder's look-ahead, the OpusHead pre-skip (ffmpeg/libopus:
//! 312 samples, 6.5 ms), is dropped from the start so sample 0 is the first
//! sample of the original recording. Matroska's CodecDelay element normally
//! says the same as the pre-skip in CodecPrivate's OpusHead, which is what
//! is read for both containers (symphonia 0.5 does not expose CodecDelay).
//! Ogg end trimming (the last page's granule position) comes through
//! symphonia's gapless packet trimming; Matroska's DiscardPadding is not
//! exposed by symphonia 0.5, so a WebM file may keep up to one frame
//! (≤ 20 ms for browsers) of encoder padding, silence, at its end.

use std::ffi::c_int;
use std::sync::LazyLock;

use symphonia::core::audio::{
    AsAudioBufferRef, AudioBuffer, AudioBufferRef, Channels, Signal, SignalSpec,
};
use symphonia::core::codecs::{
    CodecDescriptor, CodecParameters, CodecRegistry, Decoder, DecoderOptions, FinalizeResult,
    CODEC_TYPE_OPUS,
};
use symphonia::core::errors::{Error, Result};
use symphonia::core::formats::Packet;
use symphonia::core::support_codec;

/// symphonia's default codecs plus Opus.
pub(super) fn codecs() -> &'static CodecRegistry {
    static REGISTRY: LazyLock<CodecRegistry> = LazyLock::new(|| {
        let mut registry = CodecRegistry::new();
        symphonia::default::register_enabled_codecs(&mut registry);
        registry.register_all::<OpusDecoder>();
        registry
    });
    &REGISTRY
}

/// Opus's decoding rate; pre-skip and packet durations are counted in it.
const RATE: u32 = 48_000;
/// Frames per channel of the longest legal packet (120 ms at 48 kHz): the
/// output buffer is this big, so no valid packet can overflow it.
const MAX_FRAMES: usize = 5_760;
/// RFC 7845's Vorbis channel order (family 1) goes up to 7.1. More channels
/// (family 255) are legal but no speech recording has them; refusing them
/// bounds the buffers.
const MAX_CHANNELS: usize = 8;

/// What the OpusHead (RFC 7845 §5.1) says about decoding.
#[derive(Debug, PartialEq)]
struct Head {
    channels: usize,
    pre_skip: usize,
    /// Output gain in dB, to apply to the decoded samples.
    gain_db: f32,
    streams: u8,
    coupled: u8,
    /// Output channel → decoded stream channel (255: silent).
    mapping: Vec<u8>,
}

impl Head {
    /// Parses the OpusHead that Ogg (identification packet) and Matroska
    /// (CodecPrivate) carry. Without one (a Matroska file may omit
    /// CodecPrivate), mono or stereo from the container is assumed, with no
    /// pre-skip.
    fn parse(extra: Option<&[u8]>, container_channels: Option<usize>) -> Result<Head> {
        let Some(h) = extra else {
            return match container_channels {
                Some(c @ (1 | 2)) => Ok(Head::simple(c, 0, 0.0)),
                _ => Err(Error::Unsupported(
                    "opus: no OpusHead and no mono/stereo layout",
                )),
            };
        };
        let bad = || Error::DecodeError("opus: malformed OpusHead");
        if h.len() < 19 || &h[..8] != b"OpusHead" {
            return Err(bad());
        }
        // Only the major version (upper nibble) breaks compatibility.
        if h[8] >> 4 != 0 {
            return Err(Error::Unsupported("opus: unknown OpusHead version"));
        }
        let channels = usize::from(h[9]);
        let pre_skip = usize::from(u16::from_le_bytes([h[10], h[11]]));
        let gain_db = f32::from(i16::from_le_bytes([h[16], h[17]])) / 256.0;
        match h[18] {
            0 => match channels {
                1 | 2 => Ok(Head::simple(channels, pre_skip, gain_db)),
                _ => Err(bad()),
            },
            // Family 2 and 3 are ambisonics: averaging their channels would
            // not give the sound field's mono signal.
            1 | 255 => {
                if channels == 0 || channels > MAX_CHANNELS {
                    return Err(Error::Unsupported("opus: more than 8 channels"));
                }
                let table = h.get(19..21 + channels).ok_or_else(bad)?;
                let (streams, coupled) = (table[0], table[1]);
                // libopus checks the table against these counts too.
                if streams == 0
                    || coupled > streams
                    || usize::from(streams) + usize::from(coupled) > 255
                {
                    return Err(bad());
                }
                Ok(Head {
                    channels,
                    pre_skip,
                    gain_db,
                    streams,
                    coupled,
                    mapping: table[2..].to_vec(),
                })
            }
            _ => Err(Error::Unsupported(
                "opus: unsupported channel mapping family",
            )),
        }
    }

    /// Channel mapping family 0: one stream, coupled when stereo.
    fn simple(channels: usize, pre_skip: usize, gain_db: f32) -> Head {
        Head {
            channels,
            pre_skip,
            gain_db,
            streams: 1,
            coupled: (channels == 2).into(),
            mapping: (0..channels as u8).collect(),
        }
    }
}

/// Owns one libopus multistream decoder (which also covers plain mono and
/// stereo streams, so there is one code path).
struct MsDecoder(*mut opusic_sys::OpusMSDecoder);

// The state is plain memory owned by this value and only used through
// `&mut self`, so moving or sharing the owner between threads is sound.
unsafe impl Send for MsDecoder {}
unsafe impl Sync for MsDecoder {}

impl MsDecoder {
    fn new(head: &Head) -> Result<Self> {
        let mut err: c_int = opusic_sys::OPUS_OK;
        // SAFETY: `mapping` holds exactly `channels` entries, as libopus
        // reads; the counts are small and were range-checked by `Head`.
        let ptr = unsafe {
            opusic_sys::opus_multistream_decoder_create(
                RATE as i32,
                head.channels as c_int,
                c_int::from(head.streams),
                c_int::from(head.coupled),
                head.mapping.as_ptr(),
                &mut err,
            )
        };
        if ptr.is_null() || err != opusic_sys::OPUS_OK {
            if !ptr.is_null() {
                // SAFETY: a decoder libopus handed out, freed once.
                unsafe { opusic_sys::opus_multistream_decoder_destroy(ptr) };
            }
            return Err(Error::DecodeError(
                "opus: invalid channel mapping in OpusHead",
            ));
        }
        Ok(MsDecoder(ptr))
    }
}

impl Drop for MsDecoder {
    fn drop(&mut self) {
        // SAFETY: created by opus_multistream_decoder_create, freed once here.
        unsafe { opusic_sys::opus_multistream_decoder_destroy(self.0) };
    }
}

/// symphonia `Decoder` for Opus on libopus, at 48 kHz, f32.
pub(super) struct OpusDecoder {
    params: CodecParameters,
    state: MsDecoder,
    channels: usize,
    /// Linear factor of the OpusHead output gain.
    gain: f32,
    /// Pre-skip frames still to drop from the start of the stream.
    skip: usize,
    /// Interleaved output of libopus, `MAX_FRAMES` × `channels`.
    pcm: Vec<f32>,
    buf: AudioBuffer<f32>,
}

impl Decoder for OpusDecoder {
    fn try_new(params: &CodecParameters, _options: &DecoderOptions) -> Result<Self> {
        if params.codec != CODEC_TYPE_OPUS {
            return Err(Error::Unsupported("opus: not an Opus track"));
        }
        let head = Head::parse(
            params.extra_data.as_deref(),
            params.channels.map(|c| c.count()),
        )?;
        let state = MsDecoder::new(&head)?;
        // Any `channels` low bits name that many distinct channels, which is
        // all downmixing needs; the names themselves do not matter here.
        let mask = Channels::from_bits_truncate((1u32 << head.channels) - 1);
        Ok(OpusDecoder {
            params: params.clone(),
            state,
            channels: head.channels,
            gain: 10f32.powf(head.gain_db / 20.0),
            skip: head.pre_skip,
            pcm: vec![0.0; MAX_FRAMES * head.channels],
            buf: AudioBuffer::new(MAX_FRAMES as u64, SignalSpec::new(RATE, mask)),
        })
    }

    fn supported_codecs() -> &'static [CodecDescriptor] {
        &[support_codec!(CODEC_TYPE_OPUS, "opus", "Opus (libopus)")]
    }

    fn reset(&mut self) {
        // SAFETY: a live decoder; OPUS_RESET_STATE takes no argument.
        unsafe {
            opusic_sys::opus_multistream_decoder_ctl(self.state.0, opusic_sys::OPUS_RESET_STATE)
        };
    }

    fn codec_params(&self) -> &CodecParameters {
        &self.params
    }

    fn decode(&mut self, packet: &Packet) -> Result<AudioBufferRef<'_>> {
        self.buf.clear();
        let data = &packet.data;
        // An empty packet would ask libopus to conceal a lost one, inventing
        // audio; in a file it is simply damage.
        if data.is_empty() {
            return Err(Error::DecodeError("opus: empty packet"));
        }
        let len =
            i32::try_from(data.len()).map_err(|_| Error::DecodeError("opus: packet too large"))?;
        // SAFETY: `data` is `len` readable bytes; `pcm` has room for
        // MAX_FRAMES frames of `channels` samples, the frame_size passed.
        let n = unsafe {
            opusic_sys::opus_multistream_decode_float(
                self.state.0,
                data.as_ptr(),
                len,
                self.pcm.as_mut_ptr(),
                MAX_FRAMES as c_int,
                0,
            )
        };
        let frames = match usize::try_from(n) {
            Ok(n) => n.min(MAX_FRAMES),
            Err(_) => {
                return Err(Error::DecodeError(match n {
                    opusic_sys::OPUS_INVALID_PACKET => "opus: invalid packet",
                    opusic_sys::OPUS_BUFFER_TOO_SMALL => "opus: packet longer than 120 ms",
                    _ => "opus: decoding failed",
                }))
            }
        };

        self.buf.render_reserved(Some(frames));
        let pcm = &self.pcm[..frames * self.channels];
        for ch in 0..self.channels {
            let plane = self.buf.chan_mut(ch);
            for (d, s) in plane
                .iter_mut()
                .zip(pcm.iter().skip(ch).step_by(self.channels))
            {
                *d = *s * self.gain;
            }
        }

        // The pre-skip is dropped here. Should the demuxer also trim the
        // start (symphonia 0.5's Ogg reader trims a start offset that is not
        // the pre-skip), the larger of the two is dropped, not their sum:
        // a demuxer that learnt to trim the pre-skip itself must not make
        // it count twice.
        let pre_skip = self.skip.min(frames);
        self.skip -= pre_skip;
        let start = pre_skip.max(packet.trim_start() as usize);
        self.buf.trim(start, packet.trim_end() as usize);
        Ok(self.buf.as_audio_buffer_ref())
    }

    fn finalize(&mut self) -> FinalizeResult {
        FinalizeResult::default()
    }

    fn last_decoded(&self) -> AudioBufferRef<'_> {
        self.buf.as_audio_buffer_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(channels: u8, pre_skip: u16, gain: i16, family: u8, table: &[u8]) -> Vec<u8> {
        let mut h = b"OpusHead".to_vec();
        h.push(1);
        h.push(channels);
        h.extend_from_slice(&pre_skip.to_le_bytes());
        h.extend_from_slice(&48_000u32.to_le_bytes());
        h.extend_from_slice(&gain.to_le_bytes());
        h.push(family);
        h.extend_from_slice(table);
        h
    }

    #[test]
    fn opus_head_is_parsed() {
        let h = Head::parse(Some(&head(2, 312, 256, 0, &[])), None).expect("stereo head");
        assert_eq!(
            h,
            Head {
                channels: 2,
                pre_skip: 312,
                gain_db: 1.0,
                streams: 1,
                coupled: 1,
                mapping: vec![0, 1]
            }
        );
        let h = Head::parse(Some(&head(1, 0, 0, 0, &[])), None).expect("mono head");
        assert_eq!(
            (h.channels, h.streams, h.coupled, h.mapping),
            (1, 1, 0, vec![0])
        );
        // 5.1 in family 1: 4 streams, 2 of them coupled.
        let h =
            Head::parse(Some(&head(6, 312, 0, 1, &[4, 2, 0, 4, 1, 2, 3, 5])), None).expect("5.1");
        assert_eq!((h.channels, h.streams, h.coupled), (6, 4, 2));
        assert!(MsDecoder::new(&h).is_ok());
        // No head: the container's layout, if mono or stereo.
        assert_eq!(Head::parse(None, Some(2)).expect("layout").channels, 2);
    }

    #[test]
    fn bad_opus_heads_are_errors() {
        for (bytes, what) in [
            (head(2, 0, 0, 0, &[])[..18].to_vec(), "short"),
            (head(3, 0, 0, 0, &[]), "family 0 with 3 channels"),
            (head(0, 0, 0, 1, &[1, 0]), "no channels"),
            (
                head(9, 0, 0, 1, &[9, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]),
                "9 channels",
            ),
            (head(2, 0, 0, 1, &[1, 0]), "table cut short"),
            (head(2, 0, 0, 1, &[0, 0, 0, 0]), "no streams"),
            (head(2, 0, 0, 1, &[1, 2, 0, 1]), "more coupled than streams"),
            (head(1, 0, 0, 2, &[1, 0, 0]), "ambisonics"),
            (
                [&b"OpusHeaX"[..], &head(1, 0, 0, 0, &[])[8..]].concat(),
                "magic",
            ),
        ] {
            assert!(Head::parse(Some(&bytes), None).is_err(), "{what}");
        }
        assert!(Head::parse(None, None).is_err());
        assert!(Head::parse(None, Some(6)).is_err());
        // Parses, but the table points at a stream channel that does not
        // exist: libopus refuses it.
        let h = Head::parse(Some(&head(2, 0, 0, 1, &[1, 0, 0, 7])), None).expect("parses");
        assert!(MsDecoder::new(&h).is_err());
    }

    #[test]
    fn damaged_packets_are_errors_not_audio() {
        let mut params = CodecParameters::new();
        params
            .for_codec(CODEC_TYPE_OPUS)
            .with_extra_data(head(1, 0, 0, 0, &[]).into_boxed_slice());
        let mut d = OpusDecoder::try_new(&params, &DecoderOptions::default()).expect("decoder");
        let packet = |data: Vec<u8>| Packet::new_from_slice(0, 0, 0, &data);
        assert!(d.decode(&packet(vec![])).is_err());
        // TOC code 3 (arbitrary frame count) announcing 63 frames of 60 ms
        // in two bytes: invalid, and over 120 ms.
        assert!(d.decode(&packet(vec![0b0001_1011, 0x3F])).is_err());
        // A valid 20 ms packet of silence (one-byte CELT frame) decodes to 960 frames.
        let out = d.decode(&packet(vec![0b1111_1000])).expect("silence frame");
        assert_eq!(out.frames(), 960);
    }

    #[test]
    fn pre_skip_is_dropped_across_packets() {
        let mut params = CodecParameters::new();
        params
            .for_codec(CODEC_TYPE_OPUS)
            .with_extra_data(head(2, 1000, 0, 0, &[]).into_boxed_slice());
        let mut d = OpusDecoder::try_new(&params, &DecoderOptions::default()).expect("decoder");
        // Stereo 20 ms CELT silence: 960 frames each; 1000 frames to skip.
        let p = Packet::new_from_slice(0, 0, 0, &[0b1111_1100]);
        assert_eq!(d.decode(&p).expect("first").frames(), 0);
        assert_eq!(d.decode(&p).expect("second").frames(), 920);
        assert_eq!(d.decode(&p).expect("third").frames(), 960);
        assert!(codecs().get_codec(CODEC_TYPE_OPUS).is_some());
    }
}
