//! Size sanity checks run before symphonia sees a file.
//!
//! symphonia 0.5's MP4, CAF and Matroska readers allocate buffers straight
//! from length and count fields (`Vec::with_capacity(entry_count)`,
//! `vec![0; element_size]`). A few flipped bits can ask for tens of GB, and
//! a failed allocation aborts the whole process; catch_unwind cannot help.
//! Every length that legitimately describes bytes of this file fits in the
//! file, so anything larger is rejected here. This covers the structures the
//! readers parse when opening a file; it is a best effort, not a proof.

use super::AudioError;

pub(super) fn check(bytes: &[u8]) -> Result<(), AudioError> {
    let result = if matches!(
        bytes.get(4..8),
        Some(b"ftyp" | b"moov" | b"free" | b"mdat" | b"wide" | b"skip")
    ) {
        mp4(bytes)
    } else if bytes.starts_with(b"caff") {
        caf(bytes)
    } else if bytes.starts_with(&[0x1A, 0x45, 0xDF, 0xA3]) {
        ebml(bytes)
    } else {
        Ok(())
    };
    // symphonia's probe opens the first container marker it finds, not
    // only one at the start: check the reader that will actually run.
    let result = result.and_then(|()| match probe_target(bytes) {
        Some((at, Reader::Flac)) => flac(&bytes[at..]),
        Some((at, Reader::Ogg)) => ogg(&bytes[at..]),
        Some((at, Reader::Caf)) if at > 0 => caf(&bytes[at..]),
        Some((at, Reader::Matroska)) if at > 0 => ebml(&bytes[at..]),
        // The MP4 reader starts 4 bytes before its `ftyp` marker.
        Some((at, Reader::Mp4)) if at > 4 => mp4(&bytes[at - 4..]),
        _ => Ok(()),
    });
    result.map_err(|what| AudioError::Corrupt(format!("invalid size field: {what}")))
}

// --- Where symphonia's probe lands -----------------------------------------

#[derive(Debug, Clone, Copy, PartialEq)]
enum Reader {
    Flac,
    Ogg,
    Caf,
    Matroska,
    Mp4,
    /// WAV, AIFF, MP3, ADTS: nothing here allocates from a size field.
    Other,
}

/// The markers `symphonia::default::get_probe()` registers (symphonia 0.5).
const MARKERS: &[(&[u8], Reader)] = &[
    (b"fLaC", Reader::Flac),
    (b"OggS", Reader::Ogg),
    (b"caff", Reader::Caf),
    (&[0x1A, 0x45, 0xDF, 0xA3], Reader::Matroska),
    (b"ftyp", Reader::Mp4),
    (b"RIFF", Reader::Other),
    (b"FORM", Reader::Other),
];

/// Second bytes of the MPEG audio (layers 1-3) and ADTS sync words that
/// symphonia registers after 0xFF.
const MPEG_SYNC: &[u8] = &[
    0xfe, 0xff, 0xf6, 0xf7, 0xe6, 0xe7, 0xfc, 0xfd, 0xf4, 0xf5, 0xe4, 0xe5, 0xfa, 0xfb, 0xf2, 0xf3,
    0xe2, 0xe3, 0xf1,
];

/// symphonia's probe scans at most this far (from the start, or from the end
/// of an ID3v2 tag) for a marker.
const PROBE_SEARCH_LIMIT: usize = 1 << 20;

/// Emulates `Probe::format`: the offset and kind of the reader symphonia
/// will open, skipping ID3v2 tags as it does. None when it opens nothing.
fn probe_target(b: &[u8]) -> Option<(usize, Reader)> {
    let mut from = 0usize;
    loop {
        let end = b.len().min(from.saturating_add(PROBE_SEARCH_LIMIT));
        let (at, reader) = (from..end).find_map(|i| {
            let rest = &b[i..];
            if rest.starts_with(b"ID3") {
                return Some((i, None));
            }
            if rest.len() >= 2 && rest[0] == 0xFF && MPEG_SYNC.contains(&rest[1]) {
                return Some((i, Some(Reader::Other)));
            }
            MARKERS
                .iter()
                .find(|(m, _)| rest.starts_with(m))
                .map(|&(_, r)| (i, Some(r)))
        })?;
        // The probe reads 16 bytes at a candidate marker, or gives up.
        if b.len() - at < 16 {
            return None;
        }
        match reader {
            Some(r) => return Some((at, r)),
            // An ID3v2 tag: 10 header bytes and a 28-bit syncsafe size.
            None => {
                let size = b[at + 6..at + 10]
                    .iter()
                    .fold(0usize, |v, &x| (v << 7) | usize::from(x & 0x7F));
                from = at + 10 + size;
                if from > b.len() {
                    return None;
                }
            }
        }
    }
}

// --- FLAC ------------------------------------------------------------------

/// Metadata blocks: symphonia allocates each Vorbis comment and each
/// picture field at the length it declares before reading it.
fn flac(file: &[u8]) -> Check {
    let mut at = 4; // "fLaC"
    while let (Some(&header), Some(len)) = (file.get(at), be(file, at + 1, 3)) {
        let body_at = at + 4;
        let body = file
            .get(body_at..(body_at + len as usize).min(file.len()))
            .unwrap_or_default();
        match header & 0x7F {
            4 => vorbis_comment(body)?,
            6 => flac_picture(body)?,
            _ => {}
        }
        if header & 0x80 != 0 {
            break;
        }
        at = body_at + len as usize;
    }
    Ok(())
}

fn le32(b: &[u8], at: usize) -> Option<usize> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize)
}

/// A Vorbis comment header (FLAC, Ogg Vorbis and Opus): each comment's
/// length must fit in what holds it. A field that cannot be read at all
/// makes symphonia stop before allocating, so it passes here.
fn vorbis_comment(b: &[u8]) -> Check {
    let Some(vendor) = le32(b, 0) else {
        return Ok(());
    };
    let mut at = 4usize.saturating_add(vendor);
    let Some(count) = le32(b, at) else {
        return Ok(());
    };
    at += 4;
    for _ in 0..count {
        let Some(len) = le32(b, at) else {
            return Ok(());
        };
        at += 4;
        if len > b.len() - at {
            return Err("vorbis comment longer than its block");
        }
        at += len;
    }
    Ok(())
}

/// A FLAC picture block: media type, description and image data lengths.
fn flac_picture(b: &[u8]) -> Check {
    let mut at = 4; // picture type
    for (field, skip_after) in [(0, 0), (1, 16), (2, 0)] {
        let Some(len) = be(b, at, 4) else {
            return Ok(());
        };
        at += 4;
        if len > (b.len() - at) as u64 {
            return Err(match field {
                0 => "flac picture media type longer than its block",
                1 => "flac picture description longer than its block",
                _ => "flac picture longer than its block",
            });
        }
        at += len as usize + skip_after;
        if at > b.len() {
            return Ok(());
        }
    }
    Ok(())
}

// --- Ogg -------------------------------------------------------------------

/// CRC-32 of Ogg pages: polynomial 0x04C11DB7, not reflected, initial 0.
const OGG_CRC: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut r = (i as u32) << 24;
        let mut bit = 0;
        while bit < 8 {
            r = if r & 0x8000_0000 != 0 {
                (r << 1) ^ 0x04C1_1DB7
            } else {
                r << 1
            };
            bit += 1;
        }
        table[i] = r;
        i += 1;
    }
    table
};

fn ogg_crc(crc: u32, bytes: &[u8]) -> u32 {
    bytes.iter().fold(crc, |c, &b| {
        (c << 8) ^ OGG_CRC[((c >> 24) as u8 ^ b) as usize]
    })
}

#[derive(Default)]
struct OggStream {
    flac: bool,
    partial: Vec<u8>,
    prev_seq: Option<u32>,
}

/// Reassembles packets as symphonia's Ogg reader does (pages with a valid
/// CRC, continuation and sequence rules) and checks the header packets that
/// it parses with length fields: Vorbis comments (Vorbis, Opus, FLAC) and
/// FLAC pictures. Every logical stream is walked, not only those symphonia
/// plays, so this checks at least what it reads.
fn ogg(file: &[u8]) -> Check {
    let mut streams: std::collections::HashMap<u32, OggStream> = Default::default();
    let mut at = 0;
    while let Some(found) = find(&file[at..], b"OggS") {
        let page = at + found;
        let Some(header) = file.get(page..page + 27) else {
            break;
        };
        let n_segments = usize::from(header[26]);
        let Some(lacing) = file.get(page + 27..page + 27 + n_segments) else {
            break;
        };
        let body_at = page + 27 + n_segments;
        let body_len: usize = lacing.iter().map(|&l| usize::from(l)).sum();
        let Some(body) = file.get(body_at..body_at + body_len) else {
            break;
        };
        let flags = header[5];
        let mut crc = ogg_crc(0, &header[..22]);
        crc = ogg_crc(crc, &[0; 4]);
        crc = ogg_crc(crc, &header[26..]);
        crc = ogg_crc(ogg_crc(crc, lacing), body);
        let stored = u32::from_le_bytes([header[22], header[23], header[24], header[25]]);
        if header[4] != 0 || flags & 0xF8 != 0 || crc != stored {
            // symphonia resyncs just after the marker.
            at = page + 4;
            continue;
        }
        at = body_at + body_len;

        let serial = u32::from_le_bytes([header[14], header[15], header[16], header[17]]);
        let seq = u32::from_le_bytes([header[18], header[19], header[20], header[21]]);
        let continuation = flags & 0x01 != 0;
        if flags & 0x02 != 0 {
            streams.remove(&serial);
        }
        let s = streams.entry(serial).or_default();
        if s.prev_seq.is_some_and(|prev| seq < prev || seq - prev > 1) {
            s.partial.clear();
        }
        s.prev_seq = Some(seq);

        // Complete packets (lacing values below 255 end one), then a partial.
        let mut packets = Vec::new();
        let (mut start, mut len) = (0, 0);
        for &l in lacing {
            len += usize::from(l);
            if l < 255 {
                packets.push(&body[start..start + len]);
                start += len;
                len = 0;
            }
        }
        let partial = &body[start..];
        if !continuation && !s.partial.is_empty() {
            s.partial.clear();
        }
        let mut packets = packets.into_iter();
        if continuation && s.partial.is_empty() {
            // symphonia drops the first packet, or ignores an empty page.
            if packets.next().is_none() {
                continue;
            }
        }
        for p in packets {
            let packet = if s.partial.is_empty() {
                p.to_vec()
            } else {
                let mut whole = std::mem::take(&mut s.partial);
                whole.extend_from_slice(p);
                whole
            };
            if packet.starts_with(b"\x7FFLAC") {
                s.flac = true;
            }
            ogg_header_packet(&packet, s.flac)?;
        }
        s.partial.extend_from_slice(partial);
    }
    Ok(())
}

fn ogg_header_packet(p: &[u8], flac: bool) -> Check {
    if p.starts_with(b"\x03vorbis") {
        return vorbis_comment(&p[7..]);
    }
    if p.starts_with(b"OpusTags") {
        return vorbis_comment(&p[8..]);
    }
    // FLAC in Ogg: each header packet is one metadata block, read from the
    // packet (not scoped to the block's length).
    match p.first() {
        Some(&t) if flac && !matches!(t, 0x00 | 0x80 | 0xFF) => match t & 0x7F {
            4 => vorbis_comment(p.get(4..).unwrap_or_default()),
            6 => flac_picture(p.get(4..).unwrap_or_default()),
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

type Check = Result<(), &'static str>;

fn be(b: &[u8], at: usize, n: usize) -> Option<u64> {
    let s = b.get(at..at.checked_add(n)?)?;
    Some(s.iter().fold(0u64, |v, &x| (v << 8) | u64::from(x)))
}

// --- MP4 / QuickTime -------------------------------------------------------

fn mp4(file: &[u8]) -> Check {
    // Top level: a truncated upload may cut `mdat` (or anything) short; the
    // readers seek over top-level boxes rather than allocating them.
    let mut at = 0;
    while let (Some(size), Some(kind)) = (be(file, at, 4), file.get(at + 4..at + 8)) {
        let (header, size) = match size {
            0 => (8, (file.len() - at) as u64),
            1 => (16, be(file, at + 8, 8).ok_or("mp4 box")?),
            n => (8, n),
        };
        if size < header {
            return Err("mp4 box smaller than its header");
        }
        let end =
            usize::try_from(size).map_or(file.len(), |s| at.saturating_add(s).min(file.len()));
        if matches!(kind, b"moov" | b"moof") {
            mp4_children(file.get(at + header as usize..end).unwrap_or_default(), 0)?;
        }
        at = end;
    }
    Ok(())
}

/// Nesting deeper than any real file is not walked (and cannot overflow
/// the stack); symphonia's readers only descend a fixed number of levels.
const MAX_DEPTH: usize = 12;

/// Walks boxes nested in a box symphonia parses: each must fit in its
/// parent, and tables must fit in their box.
fn mp4_children(body: &[u8], depth: usize) -> Check {
    if depth > MAX_DEPTH {
        return Ok(());
    }
    let mut at = 0;
    while body.len() - at >= 8 {
        let size = be(body, at, 4).ok_or("mp4 box")?;
        let (header, size) = match size {
            0 => (8, (body.len() - at) as u64), // runs to the parent's end
            1 => (16, be(body, at + 8, 8).ok_or("mp4 box")?),
            n => (8, n),
        };
        if size < header || size > (body.len() - at) as u64 {
            return Err("mp4 box larger than its parent");
        }
        let kind = &body[at + 4..at + 8];
        let inner = &body[at + header as usize..at + size as usize];
        match kind {
            b"moov" | b"trak" | b"mdia" | b"minf" | b"stbl" | b"edts" | b"dinf" | b"udta"
            | b"mvex" | b"moof" | b"traf" | b"wave" => mp4_children(inner, depth + 1)?,
            // ISO `meta` is a full box (4 bytes of version/flags), QuickTime's is not.
            b"meta" => {
                let skip = if inner.get(4..8) == Some(b"hdlr") {
                    0
                } else {
                    4
                };
                mp4_children(inner.get(skip..).unwrap_or_default(), depth + 1)?
            }
            // Metadata items: each is a box of `data` boxes.
            b"ilst" => {
                mp4_children(inner, depth + 1)?;
                let mut i = 0;
                while let Some(n) =
                    be(inner, i, 4).filter(|&n| n >= 8 && i + n as usize <= inner.len())
                {
                    mp4_children(&inner[i + 8..i + n as usize], depth + 2)?;
                    i += n as usize;
                }
            }
            b"stsd" => mp4_sample_entries(inner.get(8..).unwrap_or_default(), depth + 1)?,
            b"stts" => mp4_table(inner, 4, 8)?,
            b"stsc" => mp4_table(inner, 4, 12)?,
            b"stco" => mp4_table(inner, 4, 4)?,
            b"co64" => mp4_table(inner, 4, 8)?,
            // A zero sample size means a table of per-sample sizes follows.
            b"stsz" if be(inner, 4, 4) == Some(0) => mp4_table(inner, 8, 4)?,
            _ => {}
        }
        at += size as usize;
    }
    Ok(())
}

/// Sample entries symphonia reads as audio: a fixed header whose length
/// depends on its version, then child boxes (esds, alac, dfLa, wave).
fn mp4_sample_entries(body: &[u8], depth: usize) -> Check {
    let mut at = 0;
    while body.len() - at >= 8 {
        let size = be(body, at, 4).ok_or("mp4 sample entry")?;
        if size < 8 || size > (body.len() - at) as u64 {
            return Err("mp4 sample entry larger than its parent");
        }
        let kind = &body[at + 4..at + 8];
        let entry = &body[at + 8..at + size as usize];
        let audio = matches!(
            kind,
            b"mp4a"
                | b"alac"
                | b"fLaC"
                | b"Opus"
                | b".mp3"
                | b"lpcm"
                | b"alaw"
                | b"ulaw"
                | b"raw "
                | b"sowt"
                | b"twos"
                | b"in24"
                | b"in32"
                | b"fl32"
                | b"fl64"
        );
        let header = match be(entry, 8, 2) {
            Some(0) => Some(28),
            Some(1) => Some(44),
            Some(2) => Some(64),
            _ => None,
        };
        if let (true, Some(children)) = (audio, header.and_then(|h| entry.get(h..))) {
            mp4_children(children, depth + 1)?;
        }
        at += size as usize;
    }
    Ok(())
}

/// A full box holding `count` (at `count_at`) entries of `entry` bytes.
fn mp4_table(body: &[u8], count_at: usize, entry: u64) -> Check {
    let count = be(body, count_at, 4).ok_or("mp4 table")?;
    if count * entry > body.len() as u64 {
        return Err("mp4 table has more entries than its box holds");
    }
    Ok(())
}

// --- CAF -------------------------------------------------------------------

fn caf(file: &[u8]) -> Check {
    let limit = (file.len() as u64).max(1 << 20);
    let mut at = 8; // "caff", version, flags
    while let (Some(kind), Some(size)) = (file.get(at..at + 4), be(file, at + 4, 8)) {
        let body_at = at + 12;
        // The audio data chunk may have size -1 ("to the end") or be cut short.
        if kind == b"data" {
            break;
        }
        if size > (file.len() - body_at.min(file.len())) as u64 {
            return Err("caf chunk larger than the file");
        }
        let body = &file[body_at..body_at + size as usize];
        if kind == b"pakt" {
            if be(body, 0, 8).is_some_and(|n| n > file.len() as u64) {
                return Err("caf packet count larger than the file");
            }
            // Packet sizes and frame counts, as variable-length integers.
            let mut v = 0u64;
            for &byte in body.get(24..).unwrap_or_default() {
                v = (v << 7) | u64::from(byte & 0x7F);
                if v > limit {
                    return Err("caf packet size larger than the file");
                }
                if byte & 0x80 == 0 {
                    v = 0;
                }
            }
        }
        at = body_at + size as usize;
    }
    Ok(())
}

// --- Matroska / WebM (EBML) ------------------------------------------------

/// Element IDs that contain other elements and are walked into.
const EBML_MASTERS: &[u32] = &[
    0x1A45DFA3, 0x18538067, 0x114D9B74, 0x4DBB, 0x1549A966, 0x1654AE6B, 0xAE, 0xE1, 0xE0,
    0x1F43B675, 0xA0, 0x1C53BB6B, 0xBB, 0xB7, 0x1254C367, 0x7373, 0x63C0, 0x67C8, 0x1043A770,
    0x45B9, 0xB6, 0x80, 0x1941A469, 0x61A7, 0x6D80, 0x6240, 0x5034, 0x5035, 0x75A1, 0xA6,
];

fn ebml(file: &[u8]) -> Check {
    ebml_children(file, 0, file.len(), 0)
}

/// Reads an EBML variable-length integer: (value, length, all value bits set).
fn vint(b: &[u8], at: usize, keep_marker: bool) -> Option<(u64, usize, bool)> {
    let first = *b.get(at)?;
    let len = first.leading_zeros() as usize + 1;
    if len > 8 {
        return None;
    }
    let mut v = u64::from(if keep_marker {
        first
    } else {
        first & 0xFFu8.checked_shr(len as u32).unwrap_or(0)
    });
    for i in 1..len {
        v = (v << 8) | u64::from(*b.get(at + i)?);
    }
    let all_ones = v == (1u64 << (7 * len)) - 1;
    Some((v, len, all_ones && !keep_marker))
}

fn ebml_children(file: &[u8], mut at: usize, end: usize, depth: usize) -> Check {
    if depth > MAX_DEPTH {
        return Ok(());
    }
    while at < end {
        // Malformed headers end the walk: the reader stops or resyncs there.
        let Some((id, id_len, _)) = vint(file, at, true) else {
            return Ok(());
        };
        let Some((size, size_len, unknown)) = vint(file, at + id_len, false) else {
            return Ok(());
        };
        let data = at + id_len + size_len;
        let elem_end = if unknown {
            end
        } else {
            data.saturating_add(size as usize).min(end)
        };
        if EBML_MASTERS.contains(&(id as u32)) {
            // Containers are not allocated, and a truncated upload leaves
            // them longer than the file: only their contents are checked.
            ebml_children(file, data, elem_end, depth + 1)?;
        } else if unknown || size > file.len() as u64 {
            return Err("matroska element larger than the file");
        }
        if elem_end <= at {
            return Ok(());
        }
        at = elem_end;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::mp4_edit::tests::bx;

    fn mp4_with_stsc_count(count: u32) -> Vec<u8> {
        let mut stsc = vec![0, 0, 0, 0];
        stsc.extend_from_slice(&count.to_be_bytes());
        stsc.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1]);
        let stbl = bx(b"stbl", &bx(b"stsc", &stsc));
        let trak = bx(b"trak", &bx(b"mdia", &bx(b"minf", &stbl)));
        [bx(b"ftyp", b"M4A \0\0\0\0"), bx(b"moov", &trak)].concat()
    }

    #[test]
    fn mp4_table_counts_must_fit() {
        assert!(check(&mp4_with_stsc_count(1)).is_ok());
        assert!(matches!(
            check(&mp4_with_stsc_count(0xFFFF_FFFF)),
            Err(AudioError::Corrupt(_))
        ));
    }

    #[test]
    fn matroska_leaf_sizes_must_fit() {
        // EBML header holding a DocType whose 8-byte size says 2^48 bytes.
        let mut f = vec![
            0x1A, 0x45, 0xDF, 0xA3, 0x8F, 0x42, 0x82, 0x01, 0x00, 0x01, 0, 0, 0, 0, 0,
        ];
        f.extend_from_slice(b"webm");
        assert!(check(&f).is_err());
        // The same with an honest 1-byte size.
        let ok = [
            0x1A, 0x45, 0xDF, 0xA3, 0x87, 0x42, 0x82, 0x84, b'w', b'e', b'b', b'm',
        ];
        assert!(check(&ok).is_ok());
    }

    #[test]
    fn caf_packet_count_must_fit() {
        let mut f = b"caff\0\x01\0\0".to_vec();
        f.extend_from_slice(b"pakt");
        f.extend_from_slice(&24i64.to_be_bytes());
        f.extend_from_slice(&i64::MAX.to_be_bytes());
        f.extend_from_slice(&[0; 16]);
        assert!(check(&f).is_err());
    }

    /// A FLAC file: STREAMINFO, then `block` (type, body) as the last block.
    fn flac_with(block_type: u8, body: &[u8]) -> Vec<u8> {
        let mut f = b"fLaC\0\0\0\x22".to_vec();
        f.extend_from_slice(&[
            0x10, 0, 0x10, 0, 0, 0, 0x0e, 0, 0, 0x0e, 0x03, 0xe8, 0x00, 0xf0,
        ]);
        f.extend_from_slice(&[0; 20]);
        f.push(0x80 | block_type);
        f.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        f.extend_from_slice(body);
        f
    }

    fn comment(lens: &[u32]) -> Vec<u8> {
        let mut c = 4u32.to_le_bytes().to_vec();
        c.extend_from_slice(b"test");
        c.extend_from_slice(&(lens.len() as u32).to_le_bytes());
        for &len in lens {
            c.extend_from_slice(&len.to_le_bytes());
            c.extend_from_slice(b"A=b");
        }
        c
    }

    #[test]
    fn flac_comment_lengths_must_fit() {
        // Found by fuzzing (fuzz/regressions/audio_decode/flac_comment_4gb.flac;
        // ogg_comment_4gb.ogg is the same in an Ogg Vorbis comment header):
        // symphonia allocated a declared 4 GB comment before reading it.
        assert!(check(&flac_with(4, &comment(&[3]))).is_ok());
        assert!(check(&flac_with(4, &comment(&[3, 0xFFFF_FFFF]))).is_err());
        // Behind a junk prefix and an ID3v2 tag, where the probe finds it.
        let mut hidden = b"junk".to_vec();
        hidden.extend_from_slice(b"ID3\x03\0\0\0\0\0\x0a");
        hidden.extend_from_slice(&[0; 10]);
        hidden.extend_from_slice(&flac_with(4, &comment(&[0xFFFF_FFF0])));
        assert!(check(&hidden).is_err());
    }

    #[test]
    fn flac_picture_lengths_must_fit() {
        let picture = |mime: u32, data: u32| {
            let mut p = 3u32.to_be_bytes().to_vec();
            p.extend_from_slice(&mime.to_be_bytes());
            p.extend_from_slice(b"image/png");
            p.extend_from_slice(&0u32.to_be_bytes());
            p.extend_from_slice(&[0; 16]);
            p.extend_from_slice(&data.to_be_bytes());
            p.extend_from_slice(&[0x89, b'P', b'N', b'G']);
            p
        };
        assert!(check(&flac_with(6, &picture(9, 4))).is_ok());
        assert!(check(&flac_with(6, &picture(0xFFFF_0000, 4))).is_err());
        assert!(check(&flac_with(6, &picture(9, 0x8000_0000))).is_err());
    }

    /// One Ogg page with a correct CRC holding whole `packets`.
    fn ogg_page(serial: u32, seq: u32, flags: u8, packets: &[&[u8]]) -> Vec<u8> {
        let mut lacing = Vec::new();
        for p in packets {
            lacing.extend(std::iter::repeat_n(255u8, p.len() / 255));
            lacing.push((p.len() % 255) as u8);
        }
        let mut page = b"OggS\0".to_vec();
        page.push(flags);
        page.extend_from_slice(&0u64.to_le_bytes());
        page.extend_from_slice(&serial.to_le_bytes());
        page.extend_from_slice(&seq.to_le_bytes());
        page.extend_from_slice(&[0; 4]);
        page.push(lacing.len() as u8);
        page.extend_from_slice(&lacing);
        for p in packets {
            page.extend_from_slice(p);
        }
        let crc = ogg_crc(0, &page);
        page[22..26].copy_from_slice(&crc.to_le_bytes());
        page
    }

    #[test]
    fn ogg_comment_lengths_must_fit() {
        let ident = [&b"\x01vorbis"[..], &[0; 23]].concat();
        let file = |lens: &[u32]| {
            let tags = [&b"\x03vorbis"[..], &comment(lens)].concat();
            [
                ogg_page(7, 0, 0x02, &[&ident[..]]),
                ogg_page(7, 1, 0, &[&tags[..]]),
            ]
            .concat()
        };
        assert!(check(&file(&[3])).is_ok());
        assert!(check(&file(&[3, 0xF000_0000])).is_err());
        // A page whose CRC is wrong is skipped, as symphonia skips it.
        let mut bad_crc = file(&[0xF000_0000]);
        let last = bad_crc.len() - 1;
        bad_crc[last] ^= 1;
        assert!(check(&bad_crc).is_ok());
        // Opus tags, and a FLAC-in-Ogg comment block.
        let opus = [&b"OpusTags"[..], &comment(&[0xF000_0000])].concat();
        assert!(check(&ogg_page(
            1,
            0,
            0x02,
            &[&b"OpusHead\x01\x01"[..], &opus[..]]
        ))
        .is_err());
        let flac_head = b"\x7FFLAC\x01\x00\x00\x01fLaC";
        let block = [&[0x84, 0, 0, 0][..], &comment(&[0xF000_0000])].concat();
        assert!(check(&ogg_page(2, 0, 0x02, &[&flac_head[..], &block[..]])).is_err());
    }

    #[test]
    fn deep_nesting_does_not_overflow_the_stack() {
        let mut f = vec![];
        for _ in 0..100_000 {
            f = [
                &[
                    0x18, 0x53, 0x80, 0x67, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                ][..],
                &f,
            ]
            .concat();
            if f.len() > 200_000 {
                break;
            }
        }
        let _ = check(&[&[0x1A, 0x45, 0xDF, 0xA3, 0x80][..], &f].concat());
    }
}
