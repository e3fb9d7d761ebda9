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
    result.map_err(|what| AudioError::Corrupt(format!("invalid size field: {what}")))
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
