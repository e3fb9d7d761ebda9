//! One resumable, verified file download, shared by the hub and PyPI sources.
//!
//! `fetch` writes `<dest>.incomplete`, resumes it with a `Range` request when
//! it already exists, checks size / sha256 / git blob id, and only then
//! renames it to `dest`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::{header, Client, StatusCode};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::ModelError;

/// Connect timeout: an unreachable hub fails over to PyPI this quickly.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A transfer that stalls this long counts as broken (and is resumable).
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(60);

pub(crate) fn client() -> Result<Client, ModelError> {
    Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .user_agent(concat!("whisper-serve/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ModelError::Client(chain(&e)))
}

/// What the finished file must look like; `None` = not checked.
#[derive(Debug, Default, Clone)]
pub(crate) struct Expect {
    pub size: Option<u64>,
    /// Lowercase hex.
    pub sha256: Option<String>,
    /// Git blob id (sha1 of `blob <len>\0<content>`), lowercase hex.
    pub git_sha1: Option<String>,
}

/// A failed fetch, before the caller turns it into a `ModelError`.
#[derive(Debug)]
pub(crate) enum FetchError {
    /// No HTTP response at all (DNS, connect, TLS, timeout before headers).
    Connect { url: String, reason: String },
    /// An HTTP error status.
    Status { url: String, status: u16 },
    /// The body broke off; the partial file is kept for a resume.
    Body { url: String, reason: String },
    /// The finished file does not match; it was deleted.
    Integrity { expected: String, actual: String },
    Io(ModelError),
}

/// An optional progress bar on stderr.
pub(crate) struct Progress(Option<ProgressBar>);

impl Progress {
    pub(crate) fn new(enabled: bool, total: Option<u64>) -> Self {
        if !enabled {
            return Progress(None);
        }
        let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(
            "{msg:24} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        Progress(Some(bar))
    }

    pub(crate) fn message(&self, msg: &str) {
        if let Some(b) = &self.0 {
            b.set_message(msg.to_string());
        }
    }

    fn inc(&self, n: u64) {
        if let Some(b) = &self.0 {
            b.inc(n);
        }
    }

    /// For a bar made without a total (PyPI wheels): take it from the response.
    fn grow_to(&self, n: u64) {
        if let Some(b) = &self.0 {
            if b.length().unwrap_or(0) < n {
                b.set_length(n);
            }
        }
    }

    pub(crate) fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(b) = &self.0 {
            if !b.is_finished() {
                b.abandon();
            }
        }
    }
}

/// The error's message with its sources (reqwest's own message is terse).
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = inner.source();
    }
    s
}

pub(crate) fn incomplete_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(".incomplete");
    dest.with_file_name(name)
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> FetchError + '_ {
    move |e| FetchError::Io(ModelError::io(path, e))
}

/// Downloads `url` to `dest` (see the module docs). A `dest` already there
/// and matching `expect` is kept without a request.
pub(crate) async fn fetch(
    client: &Client,
    url: &str,
    token: Option<&str>,
    dest: &Path,
    expect: &Expect,
    progress: &Progress,
) -> Result<(), FetchError> {
    if dest.is_file() {
        if verify(dest, expect).await?.is_ok() {
            progress.inc(file_len(dest));
            return Ok(());
        }
        tokio::fs::remove_file(dest).await.map_err(io_err(dest))?;
    }
    let partial = incomplete_path(dest);
    let mut restarted = false;
    loop {
        let mut offset = file_len(&partial);
        if expect.size.is_some_and(|size| offset > size) {
            tokio::fs::remove_file(&partial).await.map_err(io_err(&partial))?;
            offset = 0;
        }
        if offset > 0 && Some(offset) == expect.size {
            progress.inc(offset);
            break; // all there: just verify
        }

        let mut request = client.get(url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if offset > 0 {
            request = request.header(header::RANGE, format!("bytes={offset}-"));
        }
        let mut response = request
            .send()
            .await
            .map_err(|e| FetchError::Connect { url: url.to_string(), reason: chain(&e) })?;
        let status = response.status();
        let append = match status {
            StatusCode::OK => false,
            StatusCode::PARTIAL_CONTENT if offset > 0 && range_start(&response) == Some(offset) => true,
            // A range the server will not serve as asked: start over, once.
            StatusCode::PARTIAL_CONTENT | StatusCode::RANGE_NOT_SATISFIABLE if offset > 0 && !restarted => {
                drop(response);
                tokio::fs::remove_file(&partial).await.map_err(io_err(&partial))?;
                restarted = true;
                continue;
            }
            _ => return Err(FetchError::Status { url: url.to_string(), status: status.as_u16() }),
        };
        let start = if append { offset } else { 0 };
        if let Some(len) = response.content_length() {
            progress.grow_to(start + len);
        }
        progress.inc(start);

        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(&partial)
            .await
            .map_err(io_err(&partial))?;
        let mut written = start;
        loop {
            match response.chunk().await {
                Ok(Some(bytes)) => {
                    written += bytes.len() as u64;
                    if let Some(size) = expect.size.filter(|size| written > *size) {
                        drop(file);
                        let _ = tokio::fs::remove_file(&partial).await;
                        return Err(FetchError::Integrity {
                            expected: format!("{size} bytes"),
                            actual: format!("more than {size} bytes"),
                        });
                    }
                    file.write_all(&bytes).await.map_err(io_err(&partial))?;
                    progress.inc(bytes.len() as u64);
                }
                Ok(None) => break,
                Err(e) => {
                    // Keep what arrived for the next attempt to resume.
                    let _ = file.flush().await;
                    let _ = file.sync_all().await;
                    return Err(FetchError::Body { url: url.to_string(), reason: chain(&e) });
                }
            }
        }
        file.flush().await.map_err(io_err(&partial))?;
        file.sync_all().await.map_err(io_err(&partial))?;
        drop(file);
        if let Some(size) = expect.size.filter(|size| written < *size) {
            return Err(FetchError::Body {
                url: url.to_string(),
                reason: format!("the transfer ended after {written} of {size} bytes"),
            });
        }
        break;
    }

    match verify(&partial, expect).await? {
        Ok(()) => tokio::fs::rename(&partial, dest).await.map_err(io_err(dest)),
        Err((expected, actual)) => {
            tokio::fs::remove_file(&partial).await.map_err(io_err(&partial))?;
            Err(FetchError::Integrity { expected, actual })
        }
    }
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The first byte of a 206 response's `Content-Range: bytes <start>-<end>/<total>`.
fn range_start(response: &reqwest::Response) -> Option<u64> {
    let value = response.headers().get(header::CONTENT_RANGE)?.to_str().ok()?;
    value.trim().strip_prefix("bytes ")?.split('-').next()?.trim().parse().ok()
}

/// Checks a file on disk against `expect`: `Ok(Err((expected, actual)))` on a
/// mismatch.
async fn verify(path: &Path, expect: &Expect) -> Result<Result<(), (String, String)>, FetchError> {
    let path_buf = path.to_path_buf();
    let expect = expect.clone();
    let joined = tokio::task::spawn_blocking(move || verify_blocking(&path_buf, &expect)).await;
    match joined {
        Ok(result) => result.map_err(|e| FetchError::Io(ModelError::io(path, e))),
        Err(e) => Err(FetchError::Io(ModelError::io(path, std::io::Error::other(e.to_string())))),
    }
}

pub(crate) fn verify_blocking(path: &Path, expect: &Expect) -> std::io::Result<Result<(), (String, String)>> {
    let len = std::fs::metadata(path)?.len();
    if let Some(size) = expect.size.filter(|size| *size != len) {
        return Ok(Err((format!("{size} bytes"), format!("{len} bytes"))));
    }
    if expect.sha256.is_none() && expect.git_sha1.is_none() {
        return Ok(Ok(()));
    }
    let mut sha256 = expect.sha256.as_ref().map(|_| Sha256::new());
    let mut sha1 = expect.git_sha1.as_ref().map(|_| {
        let mut h = Sha1::new();
        h.update(format!("blob {len}\0").as_bytes());
        h
    });
    let mut file = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if let Some(h) = sha256.as_mut() {
            h.update(&buf[..n]);
        }
        if let Some(h) = sha1.as_mut() {
            h.update(&buf[..n]);
        }
    }
    if let (Some(h), Some(expected)) = (sha256, &expect.sha256) {
        let actual = hex::encode(h.finalize());
        if !actual.eq_ignore_ascii_case(expected.trim()) {
            return Ok(Err((format!("sha256 {expected}"), format!("sha256 {actual}"))));
        }
    }
    if let (Some(h), Some(expected)) = (sha1, &expect.git_sha1) {
        let actual = hex::encode(h.finalize());
        if !actual.eq_ignore_ascii_case(expected.trim()) {
            return Ok(Err((format!("git blob id {expected}"), format!("git blob id {actual}"))));
        }
    }
    Ok(Ok(()))
}

/// SHA-1 (FIPS 180-4), only for git blob ids of the hub's small non-LFS files.
pub(crate) struct Sha1 {
    h: [u32; 5],
    buf: [u8; 64],
    buf_len: usize,
    total: u64,
}

impl Sha1 {
    pub(crate) fn new() -> Self {
        Sha1 { h: [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0], buf: [0; 64], buf_len: 0, total: 0 }
    }

    pub(crate) fn update(&mut self, mut data: &[u8]) {
        self.total = self.total.wrapping_add(data.len() as u64);
        if self.buf_len > 0 {
            let n = (64 - self.buf_len).min(data.len());
            self.buf[self.buf_len..self.buf_len + n].copy_from_slice(&data[..n]);
            self.buf_len += n;
            data = &data[n..];
            if self.buf_len < 64 {
                return;
            }
            let block = self.buf;
            self.block(&block);
            self.buf_len = 0;
        }
        let mut chunks = data.chunks_exact(64);
        for block in &mut chunks {
            self.block(block);
        }
        let rest = chunks.remainder();
        self.buf[..rest.len()].copy_from_slice(rest);
        self.buf_len = rest.len();
    }

    pub(crate) fn finalize(mut self) -> [u8; 20] {
        let bits = self.total.wrapping_mul(8);
        self.update(&[0x80]);
        while self.buf_len != 56 {
            self.update(&[0]);
        }
        self.update(&bits.to_be_bytes());
        let mut out = [0u8; 20];
        for (chunk, word) in out.chunks_exact_mut(4).zip(self.h) {
            chunk.copy_from_slice(&word.to_be_bytes());
        }
        out
    }

    fn block(&mut self, block: &[u8]) {
        let mut w = [0u32; 80];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = self.h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A827999),
                20..=39 => (b ^ c ^ d, 0x6ED9EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1BBCDC),
                _ => (b ^ c ^ d, 0xCA62C1D6),
            };
            let t = a.rotate_left(5).wrapping_add(f).wrapping_add(e).wrapping_add(k).wrapping_add(*wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (h, v) in self.h.iter_mut().zip([a, b, c, d, e]) {
            *h = h.wrapping_add(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha1_hex(parts: &[&[u8]]) -> String {
        let mut h = Sha1::new();
        for p in parts {
            h.update(p);
        }
        hex::encode(h.finalize())
    }

    #[test]
    fn sha1_matches_known_vectors() {
        assert_eq!(sha1_hex(&[b""]), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(sha1_hex(&[b"abc"]), "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert_eq!(
            sha1_hex(&[b"abcdbcdecdefdefgefghfghighijhi", b"jkijkljklmklmnlmnomnopnopq"]),
            "84983e441c3bd26ebaae4aa1f95129e5e54670f1"
        );
        let million = vec![b'a'; 1_000_000];
        assert_eq!(sha1_hex(&[&million[..333], &million[333..]]), "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
        // `git hash-object` of "hello\n".
        assert_eq!(sha1_hex(&[b"blob 6\0hello\n"]), "ce013625030ba8dba906f756967f9e9ca394464a");
    }

    #[test]
    fn verify_checks_size_sha256_and_blob_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"hello\n").unwrap();
        let ok = Expect {
            size: Some(6),
            sha256: Some("5891B5B522D5DF086D0FF0B110FBD9D21BB4FC7163AF34D08286A2E846F6BE03".into()),
            git_sha1: Some("ce013625030ba8dba906f756967f9e9ca394464a".into()),
        };
        assert!(verify_blocking(&path, &ok).unwrap().is_ok());
        let bad_size = Expect { size: Some(7), ..ok.clone() };
        assert_eq!(verify_blocking(&path, &bad_size).unwrap(), Err(("7 bytes".into(), "6 bytes".into())));
        let bad_blob = Expect { git_sha1: Some("00".repeat(20)), ..ok };
        assert!(verify_blocking(&path, &bad_blob).unwrap().is_err());
    }

    #[test]
    fn incomplete_name() {
        assert_eq!(incomplete_path(Path::new("/a/.x.partial/model.bin")), Path::new("/a/.x.partial/model.bin.incomplete"));
    }
}
