//! The MP4 edit list of the audio track, which symphonia 0.5 parses but does
//! not apply. AAC encoders put 1024-2112 frames of priming silence before the
//! audio and an edit list that says to skip them; without it, M4A output
//! would run ~64 ms late and timestamps would drift from the audio.

/// The part of the decoded track to present, in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Edit {
    pub skip_s: f64,
    /// None when the edit does not bound the length.
    pub keep_s: Option<f64>,
}

impl Edit {
    /// (first frame, end frame) of the presented range at `rate`.
    pub fn frames(&self, rate: u32) -> (u64, u64) {
        let to_frames = |s: f64| (s * f64::from(rate)).round() as u64;
        let start = to_frames(self.skip_s);
        (
            start,
            self.keep_s
                .map_or(u64::MAX, |k| start.saturating_add(to_frames(k))),
        )
    }
}

/// Finds the edit of the first sound track. Only the simple, common case is
/// handled (one presented segment, maybe after empty edits); anything else
/// gives None, and the track is used as decoded.
pub(super) fn audio_edit(file: &[u8]) -> Option<Edit> {
    // Only look inside files that start like an MP4/QuickTime box tree.
    if !matches!(
        file.get(4..8)?,
        b"ftyp" | b"moov" | b"free" | b"mdat" | b"wide" | b"skip"
    ) {
        return None;
    }
    let moov = child(file, b"moov")?;
    let movie_timescale = timescale(child(moov, b"mvhd")?)?;
    boxes(moov)
        .filter(|(kind, _)| kind == b"trak")
        .find_map(|(_, trak)| {
            let mdia = child(trak, b"mdia")?;
            if child(mdia, b"hdlr")?.get(8..12)? != b"soun" {
                return None;
            }
            let media_timescale = timescale(child(mdia, b"mdhd")?)?;
            let elst = child(child(trak, b"edts")?, b"elst")?;
            parse_elst(elst, movie_timescale, media_timescale)
        })
}

fn parse_elst(elst: &[u8], movie_ts: u32, media_ts: u32) -> Option<Edit> {
    let version = *elst.first()?;
    let count = be_u32(elst, 4)? as usize;
    let entry_len = if version == 1 { 20 } else { 12 };
    let mut segments = (0..count).map(|i| {
        let at = 8 + i * entry_len;
        if version == 1 {
            Some((be_u64(elst, at)?, be_u64(elst, at + 8)? as i64))
        } else {
            Some((
                u64::from(be_u32(elst, at)?),
                i64::from(be_u32(elst, at + 4)? as i32),
            ))
        }
    });
    // Empty edits (media time -1) would insert silence; a leading one is
    // rare for audio and ignored. The first real edit says what to play.
    let (duration, media_time) = segments.find(|s| !matches!(s, Some((_, -1))))??;
    if media_time < 0 || segments.any(|s| !matches!(s, Some((_, -1)))) {
        return None;
    }
    Some(Edit {
        skip_s: media_time as f64 / f64::from(media_ts),
        keep_s: (duration > 0).then(|| duration as f64 / f64::from(movie_ts)),
    })
}

/// Timescale of an mvhd or mdhd box (same layout).
fn timescale(b: &[u8]) -> Option<u32> {
    let ts = be_u32(b, if *b.first()? == 1 { 20 } else { 12 })?;
    (ts > 0).then_some(ts)
}

fn child<'a>(parent: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
    boxes(parent).find(|(k, _)| k == kind).map(|(_, body)| body)
}

/// Iterates over the boxes directly inside `data`, as (type, body); stops at
/// the first malformed size.
fn boxes(mut data: &[u8]) -> impl Iterator<Item = ([u8; 4], &[u8])> {
    std::iter::from_fn(move || {
        let size = be_u32(data, 0)? as u64;
        let kind: [u8; 4] = data.get(4..8)?.try_into().ok()?;
        let (header, size) = match size {
            0 => (8, data.len() as u64),
            1 => (16, be_u64(data, 8)?),
            n => (8, n),
        };
        let size = usize::try_from(size)
            .ok()
            .filter(|&s| s >= header && s <= data.len())?;
        let body = &data[header..size];
        data = &data[size..];
        Some((kind, body))
    })
}

fn be_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn be_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// An MP4 box: size, kind, body (shared with guard.rs's tests).
    pub(in crate::audio) fn bx(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut v = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        v.extend_from_slice(kind);
        v.extend_from_slice(body);
        v
    }

    fn v0_header_with_timescale(ts: u32) -> Vec<u8> {
        let mut b = vec![0u8; 12];
        b.extend_from_slice(&ts.to_be_bytes());
        b.extend_from_slice(&[0; 4]);
        b
    }

    fn file(entries: &[(u32, i32)]) -> Vec<u8> {
        let mut elst = vec![0, 0, 0, 0];
        elst.extend_from_slice(&(entries.len() as u32).to_be_bytes());
        for &(dur, time) in entries {
            elst.extend_from_slice(&dur.to_be_bytes());
            elst.extend_from_slice(&time.to_be_bytes());
            elst.extend_from_slice(&[0, 1, 0, 0]);
        }
        let mut hdlr = vec![0u8; 8];
        hdlr.extend_from_slice(b"soun");
        let mdia = [
            bx(b"mdhd", &v0_header_with_timescale(16_000)),
            bx(b"hdlr", &hdlr),
        ]
        .concat();
        let trak = [bx(b"edts", &bx(b"elst", &elst)), bx(b"mdia", &mdia)].concat();
        let moov = [
            bx(b"mvhd", &v0_header_with_timescale(1000)),
            bx(b"trak", &trak),
        ]
        .concat();
        [bx(b"ftyp", b"M4A \0\0\0\0"), bx(b"moov", &moov)].concat()
    }

    #[test]
    fn reads_the_priming_skip_and_length() {
        let edit = audio_edit(&file(&[(11_000, 1024)])).unwrap();
        assert_eq!(edit.frames(16_000), (1024, 1024 + 176_000));
        assert_eq!(audio_edit(&file(&[(5, -1), (11_000, 1024)])), Some(edit));
    }

    #[test]
    fn ignores_what_it_does_not_handle() {
        assert_eq!(audio_edit(&file(&[(500, 0), (500, 8000)])), None);
        assert_eq!(audio_edit(b"RIFF\xff\xff\xff\xffWAVE"), None);
        let f = file(&[(11_000, 1024)]);
        for len in 0..f.len() {
            let _ = audio_edit(&f[..len]); // never panics on truncation
        }
    }
}
