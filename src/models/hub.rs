//! The Hugging Face hub source, as `huggingface_hub` speaks to it:
//! `GET {endpoint}/api/models/{repo}/revision/{revision}?blobs=true` lists
//! the files (with sizes, LFS sha256 and git blob ids), and
//! `GET {endpoint}/{repo}/resolve/{commit}/{file}` downloads one.

use std::path::{Path, PathBuf};

use reqwest::Client;
use serde::Deserialize;

use super::download::{self, Expect, FetchError, Progress};
use super::{finalize, hub_staging, ModelError, PullOptions, REQUIRED_FILES};

#[derive(Debug, Deserialize)]
pub(crate) struct RepoInfo {
    /// The commit `revision` resolved to; files are fetched at that commit.
    pub sha: Option<String>,
    #[serde(default)]
    pub siblings: Vec<Sibling>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Sibling {
    pub rfilename: String,
    pub size: Option<u64>,
    #[serde(rename = "blobId")]
    pub blob_id: Option<String>,
    pub lfs: Option<Lfs>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Lfs {
    pub sha256: Option<String>,
    pub size: Option<u64>,
}

/// The files faster-whisper's `download_model` fetches (its
/// `allow_patterns`), top-level only.
pub(crate) fn wanted(rfilename: &str) -> bool {
    if rfilename.contains(['/', '\\']) || rfilename.starts_with('.') {
        return false;
    }
    matches!(rfilename, "config.json" | "preprocessor_config.json" | "model.bin" | "tokenizer.json")
        || (rfilename.starts_with("vocabulary.") && rfilename.len() > "vocabulary.".len())
}

impl Sibling {
    fn expect(&self) -> Expect {
        match &self.lfs {
            Some(lfs) => Expect {
                size: lfs.size.or(self.size),
                sha256: lfs.sha256.as_ref().map(|s| s.to_ascii_lowercase()),
                git_sha1: None,
            },
            // For a plain git file the blob id is the sha1 of its content.
            None => Expect {
                size: self.size,
                sha256: None,
                git_sha1: self.blob_id.as_ref().filter(|b| b.len() == 40).map(|b| b.to_ascii_lowercase()),
            },
        }
    }
}

/// Percent-encodes a path segment (as `urllib.parse.quote(s, safe="")`).
pub(crate) fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn status_error(status: u16, url: &str, repo: &str, revision: &str, token: bool) -> ModelError {
    let hint = match status {
        401 | 403 if token => format!("access to {repo} was refused; check that HF_TOKEN grants access to it (gated models need their terms accepted on the hub)"),
        401 | 403 => format!("access to {repo} was refused; it may be gated or private: set HF_TOKEN to a token with access"),
        404 => format!("repository {repo} or revision `{revision}` not found"),
        429 => "rate limited; wait a while, or set HF_TOKEN".to_string(),
        s if s >= 500 => "server error; try again later".to_string(),
        _ => "unexpected answer".to_string(),
    };
    ModelError::Hub { status, url: url.to_string(), hint }
}

/// Downloads `repo` into `model_dir/<name>` through `model_dir/.<name>.partial`.
pub(crate) async fn pull(
    client: &Client,
    repo: &str,
    name: &str,
    model_dir: &Path,
    opts: &PullOptions,
) -> Result<PathBuf, ModelError> {
    let endpoint = opts.endpoint.trim_end_matches('/');
    let token = opts.token.as_deref();
    let unreachable = |reason: String| ModelError::HubUnreachable { endpoint: endpoint.to_string(), reason };

    let api = format!("{endpoint}/api/models/{repo}/revision/{}?blobs=true", encode_segment(&opts.revision));
    let mut request = client.get(&api);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.map_err(|e| unreachable(download::chain(&e)))?;
    let status = response.status();
    if !status.is_success() {
        return Err(status_error(status.as_u16(), &api, repo, &opts.revision, token.is_some()));
    }
    let body = response.bytes().await.map_err(|e| unreachable(download::chain(&e)))?;
    let info: RepoInfo = serde_json::from_slice(&body).map_err(|e| ModelError::Hub {
        status: status.as_u16(),
        url: api.clone(),
        hint: format!("unreadable repository metadata ({e}); is HF_ENDPOINT a Hugging Face hub?"),
    })?;

    let files: Vec<&Sibling> = info.siblings.iter().filter(|s| wanted(&s.rfilename)).collect();
    let missing: Vec<&str> =
        REQUIRED_FILES.iter().copied().filter(|f| !files.iter().any(|s| s.rfilename == *f)).collect();
    if !missing.is_empty() {
        return Err(ModelError::Hub {
            status: status.as_u16(),
            url: api,
            hint: format!("{repo} is not a CTranslate2 Whisper model: it lacks {}", missing.join(", ")),
        });
    }
    let commit = info.sha.as_deref().filter(|s| !s.is_empty()).unwrap_or(&opts.revision);
    let commit = encode_segment(commit);

    let staging = hub_staging(model_dir, name);
    std::fs::create_dir_all(&staging).map_err(|e| ModelError::io(&staging, e))?;
    let total: Option<u64> = files.iter().map(|s| s.expect().size).sum();
    let progress = Progress::new(opts.progress, total);
    tracing::info!(repo, revision = %opts.revision, files = files.len(), bytes = ?total, "downloading from the Hugging Face hub");

    for sibling in &files {
        let file = &sibling.rfilename;
        let url = format!("{endpoint}/{repo}/resolve/{commit}/{file}");
        progress.message(file);
        let dest = staging.join(file);
        download::fetch(client, &url, token, &dest, &sibling.expect(), &progress).await.map_err(|e| match e {
            FetchError::Connect { url, reason } => unreachable(format!("{url}: {reason}")),
            FetchError::Status { url, status } => status_error(status, &url, repo, &opts.revision, token.is_some()),
            FetchError::Body { url, reason } => ModelError::Download { file: file.clone(), url, reason },
            FetchError::Integrity { expected, actual } => ModelError::Integrity { file: file.clone(), expected, actual },
            FetchError::Io(e) => e,
        })?;
    }
    progress.finish();
    let keep: Vec<String> = files.iter().map(|s| s.rfilename.clone()).collect();
    finalize(&staging, &model_dir.join(name), &keep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wants_what_faster_whisper_downloads() {
        for f in ["config.json", "preprocessor_config.json", "model.bin", "tokenizer.json", "vocabulary.txt", "vocabulary.json"] {
            assert!(wanted(f), "{f}");
        }
        for f in [".gitattributes", "README.md", "vocabulary.", "sub/model.bin", "../model.bin", "model.safetensors"] {
            assert!(!wanted(f), "{f}");
        }
    }

    #[test]
    fn encodes_revisions() {
        assert_eq!(encode_segment("main"), "main");
        assert_eq!(encode_segment("refs/pr/1"), "refs%2Fpr%2F1");
    }

    #[test]
    fn parses_hub_metadata() {
        let json = r#"{"id":"Systran/faster-whisper-tiny","sha":"d90ca5fe","siblings":[
            {"rfilename":".gitattributes","blobId":"a6344aac8c09253b3b630fb776ae94478aa0275b","size":1519},
            {"rfilename":"config.json","blobId":"3a6f7d5b3e1e6a4f4c5f2a7b1c8d9e0f1a2b3c4d","size":2254},
            {"rfilename":"model.bin","blobId":"x","size":75538270,"lfs":{"sha256":"ABC","size":75538270,"pointerSize":135}}]}"#;
        let info: RepoInfo = serde_json::from_str(json).unwrap();
        assert_eq!(info.sha.as_deref(), Some("d90ca5fe"));
        let expect = info.siblings[2].expect();
        assert_eq!((expect.size, expect.sha256.as_deref(), expect.git_sha1), (Some(75538270), Some("abc"), None));
        let expect = info.siblings[1].expect();
        assert_eq!(expect.git_sha1.as_deref(), Some("3a6f7d5b3e1e6a4f4c5f2a7b1c8d9e0f1a2b3c4d"));
    }
}
