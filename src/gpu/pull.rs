//! `whisper-serve cuda pull`: fetches NVIDIA's cuBLAS from PyPI's
//! `nvidia-cublas-cu12` wheel into `engine.cuda_dir`, for machines that have
//! the NVIDIA driver but no CUDA toolkit.
//!
//! The engine's library `dlopen`s `libcublas.so.12` (which loads
//! `libcublasLt.so.12` beside it); its CUDA runtime is linked in and it uses
//! no cuDNN, so cuBLAS is all it needs besides the driver's `libcuda.so.1`,
//! which no wheel can provide.
//!
//! The newest 12.x release with a `manylinux` wheel for this machine's
//! architecture is picked from the PEP 503 simple index (or the one
//! `--version` names), streamed into `<cuda_dir>/.cuda-pull.partial/`
//! (resumable, see `models::download::fetch`), checked against the index's
//! `#sha256=` (a wheel without one is refused), and its `nvidia/cublas/lib/*.so*`
//! files are extracted into a folder there. Only then is that folder renamed
//! to `<cuda_dir>/nvidia/cublas` and `<cuda_dir>/PULLED.json` written, so the
//! libraries in place are always a whole, verified set.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::models::download::{self, Expect, FetchError, Progress};
use crate::models::ModelError;
use crate::pypi_index::{self, WheelLink};

/// The PyPI project that ships cuBLAS for CUDA 12.
pub const PROJECT: &str = "nvidia-cublas-cu12";
/// The major version the engine needs (`libcublas.so.12`).
pub const MAJOR: u64 = 12;
/// Where the libraries are inside the wheel, and under `cuda_dir`.
pub const LIB_DIR: &str = "nvidia/cublas/lib";
/// What the wheel must hold for the engine to use it.
pub const REQUIRED_LIBS: &[&str] = &["libcublas.so.12", "libcublasLt.so.12"];
/// The record of the last pull, in `cuda_dir`.
pub const MANIFEST: &str = "PULLED.json";
/// The staging folder in `cuda_dir` (download and extraction).
const STAGING: &str = ".cuda-pull.partial";

/// The folder holding the pulled libraries: `<cuda_dir>/nvidia/cublas/lib`.
pub fn lib_dir(cuda_dir: &Path) -> PathBuf {
    cuda_dir.join(LIB_DIR)
}

/// What `PULLED.json` records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pulled {
    pub package: String,
    pub version: String,
    /// The wheel's file name.
    pub wheel: String,
    /// The wheel's sha256 (lowercase hex), as the index gave and the download matched.
    pub sha256: String,
    /// The files extracted, relative to `cuda_dir`, sorted.
    pub files: Vec<String>,
}

impl Pulled {
    /// Whether every file it lists is still there.
    pub fn is_intact(&self, cuda_dir: &Path) -> bool {
        !self.files.is_empty() && self.files.iter().all(|f| cuda_dir.join(f).is_file())
    }
}

/// The last pull's record in `cuda_dir`, if there is a readable one.
pub fn pulled(cuda_dir: &Path) -> Option<Pulled> {
    let text = std::fs::read(cuda_dir.join(MANIFEST)).ok()?;
    serde_json::from_slice(&text).ok()
}

/// How to pull.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// PEP 503 simple index base URL (e.g. `https://pypi.org/simple`).
    pub index_url: String,
    /// An exact version to install instead of the newest 12.x.
    pub version: Option<String>,
    /// Draw a progress bar on stderr.
    pub progress: bool,
}

impl PullOptions {
    /// The index from `PIP_INDEX_URL` (else PyPI), the newest 12.x, a
    /// progress bar when stderr is a terminal.
    pub fn from_env() -> Self {
        Self { index_url: pypi_index::index_url(), version: None, progress: std::io::stderr().is_terminal() }
    }
}

/// What a pull did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The wheel was downloaded and its libraries put in place.
    Pulled(Pulled),
    /// This version was already there, whole; nothing was done.
    AlreadyThere(Pulled),
}

impl Outcome {
    pub fn record(&self) -> &Pulled {
        match self {
            Outcome::Pulled(p) | Outcome::AlreadyThere(p) => p,
        }
    }
}

/// Why a pull failed.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("there are no {PROJECT} wheels for the {0} architecture (NVIDIA publishes x86_64 and aarch64 Linux wheels); install cuBLAS 12 from the CUDA toolkit instead")]
    UnsupportedArch(String),

    #[error("--version {version}: the engine loads libcublas.so.12, so only {MAJOR}.x versions of {PROJECT} fit (e.g. --version 12.6.4.1)")]
    WrongMajor { version: String },

    #[error(
        "cannot reach the package index at {url}: {reason}. Check the network or proxy (HTTPS_PROXY), \
         or pass --index-url (or set PIP_INDEX_URL) to a reachable mirror"
    )]
    IndexUnreachable { url: String, reason: String },

    #[error(
        "the package index has no project `{PROJECT}` ({url} answered 404). Check that --index-url \
         (or PIP_INDEX_URL) is a PEP 503 simple index, such as https://pypi.org/simple, that carries {PROJECT}"
    )]
    NoProject { url: String },

    #[error("the package index answered HTTP {status} for {url}; try again later, or pass --index-url (or set PIP_INDEX_URL) to another mirror")]
    IndexStatus { url: String, status: u16 },

    #[error(
        "{url} lists no {PROJECT} {MAJOR}.x wheel for Linux {arch} (versions listed: {listed}); \
         use an index that mirrors NVIDIA's manylinux wheels"
    )]
    NoWheel { url: String, arch: String, listed: String },

    #[error(
        "{url} has no Linux {arch} wheel of {PROJECT} {version}; {MAJOR}.x versions that have one: {available}. \
         Pick one of those with --version, or leave --version out for the newest"
    )]
    VersionNotFound { url: String, arch: String, version: String, available: String },

    #[error(
        "the index gives no sha256 for {wheel} (its link has no #sha256=), so it cannot be verified and was \
         not downloaded; use an index that publishes hashes (PyPI and its mirrors do)"
    )]
    NoSha256 { wheel: String },

    #[error("refusing the odd wheel file name `{0}` from the index")]
    BadName(String),

    #[error("the download of {url} failed: {reason}; run `whisper-serve cuda pull` again to retry (a broken-off transfer is resumed)")]
    Download { url: String, reason: String },

    #[error(
        "sha256 check failed for {wheel}: the index says {expected}, the download is {actual}. The file was deleted \
         and nothing was installed; run the pull again (if it keeps failing, the index or a proxy serves bad data)"
    )]
    Integrity { wheel: String, expected: String, actual: String },

    #[error("cannot unpack {wheel}: {reason}; nothing was installed")]
    Unpack { wheel: String, reason: String },

    #[error("{wheel} has no {missing} under {LIB_DIR}/; it is not the cuBLAS wheel the engine needs, nothing was installed")]
    MissingLibs { wheel: String, missing: String },

    #[error("cannot set up the HTTP client: {0}")]
    Client(String),

    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl PullError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        PullError::Io { path: path.to_path_buf(), source }
    }
}

/// The wheel architecture tag for this machine.
pub fn wheel_arch() -> Result<&'static str, PullError> {
    match std::env::consts::ARCH {
        a @ ("x86_64" | "aarch64") => Ok(a),
        other => Err(PullError::UnsupportedArch(other.to_string())),
    }
}

/// `"12.6.4.1"` -> `[12, 6, 4, 1]`; `None` unless every part is a number
/// (pre-releases and local versions are left out).
fn parse_version(v: &str) -> Option<Vec<u64>> {
    v.split('.').map(|p| p.parse().ok()).collect()
}

/// Whether `v` is a plain `12.x` release.
pub(crate) fn is_wanted_major(v: &str) -> bool {
    parse_version(v).is_some_and(|p| p.first() == Some(&MAJOR))
}

/// The versions of `PROJECT` wheels the page lists, newest first, distinct.
pub(crate) fn listed_versions(links: &[WheelLink]) -> Vec<String> {
    let prefix = format!("{}-", PROJECT.replace('-', "_"));
    let mut versions: Vec<(Vec<u64>, String)> = links
        .iter()
        .filter(|l| l.filename.ends_with(".whl"))
        .filter_map(|l| {
            let lower = l.filename.to_ascii_lowercase();
            let version = lower.strip_prefix(&prefix)?.split('-').next()?.to_string();
            Some((parse_version(&version)?, version))
        })
        .collect();
    versions.sort_by(|a, b| b.0.cmp(&a.0));
    versions.dedup_by(|a, b| a.1 == b.1);
    versions.into_iter().map(|(_, v)| v).collect()
}

/// Why no wheel fits, before the caller adds the page's URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NoChoice {
    /// No 12.x version has a wheel for this architecture.
    Nothing { listed: Vec<String> },
    /// The pinned version has none; these 12.x versions do.
    NotThisVersion { available: Vec<String> },
}

/// The wheel to install: `pin`'s, else the newest 12.x release with a
/// `manylinux` wheel for `arch`.
pub(crate) fn choose<'a>(links: &'a [WheelLink], arch: &str, pin: Option<&str>) -> Result<(String, &'a WheelLink), NoChoice> {
    let listed = listed_versions(links);
    let fitting: Vec<(String, &WheelLink)> = listed
        .iter()
        .filter(|v| is_wanted_major(v))
        .filter_map(|v| Some((v.clone(), pypi_index::pick_wheel(links, PROJECT, v, &["manylinux", arch])?)))
        .collect();
    match pin {
        Some(pin) => fitting.iter().find(|(v, _)| v == pin).cloned().ok_or_else(|| NoChoice::NotThisVersion {
            available: fitting.iter().map(|(v, _)| v.clone()).collect(),
        }),
        None => fitting.first().cloned().ok_or(NoChoice::Nothing { listed }),
    }
}

/// Where a wheel member goes, relative to `cuda_dir`: the shared libraries
/// (`*.so`, `*.so.N...`) directly in `nvidia/cublas/lib/`; `None` for the rest.
pub(crate) fn lib_member(name: &str) -> Option<&str> {
    let file = name.strip_prefix(LIB_DIR)?.strip_prefix('/')?;
    let ok = !file.is_empty()
        && !file.starts_with('.')
        && !file.contains(['/', '\\'])
        && (file.ends_with(".so") || file.contains(".so."));
    ok.then_some(name)
}

/// Pulls cuBLAS into `cuda_dir` (see the module docs).
pub async fn pull(cuda_dir: &Path, opts: &PullOptions) -> Result<Outcome, PullError> {
    let arch = wheel_arch()?;
    if let Some(v) = &opts.version {
        if !is_wanted_major(v) {
            return Err(PullError::WrongMajor { version: v.clone() });
        }
    }
    let client = download::client().map_err(|e| PullError::Client(e.to_string()))?;

    let page_url = pypi_index::project_url(&opts.index_url, PROJECT);
    let response = client
        .get(&page_url)
        .send()
        .await
        .map_err(|e| PullError::IndexUnreachable { url: page_url.clone(), reason: download::chain(&e) })?;
    let status = response.status();
    if status == reqwest::StatusCode::NOT_FOUND {
        return Err(PullError::NoProject { url: page_url });
    }
    if !status.is_success() {
        return Err(PullError::IndexStatus { url: page_url, status: status.as_u16() });
    }
    let html = response
        .text()
        .await
        .map_err(|e| PullError::IndexUnreachable { url: page_url.clone(), reason: download::chain(&e) })?;
    let links = pypi_index::parse_links(&html, &page_url);
    let (version, wheel) = choose(&links, arch, opts.version.as_deref()).map_err(|e| match e {
        NoChoice::Nothing { listed } => PullError::NoWheel {
            url: page_url.clone(),
            arch: arch.to_string(),
            listed: if listed.is_empty() { "none".to_string() } else { listed.join(", ") },
        },
        NoChoice::NotThisVersion { available } => PullError::VersionNotFound {
            url: page_url.clone(),
            arch: arch.to_string(),
            version: opts.version.clone().unwrap_or_default(),
            available: if available.is_empty() { "none".to_string() } else { available.join(", ") },
        },
    })?;

    if let Some(existing) = pulled(cuda_dir) {
        if existing.package == PROJECT && existing.version == version && existing.is_intact(cuda_dir) {
            tracing::info!(version = %version, dir = %cuda_dir.display(), "cuBLAS already pulled");
            return Ok(Outcome::AlreadyThere(existing));
        }
    }

    let filename = wheel.filename.clone();
    if filename.contains(['/', '\\']) || filename.starts_with('.') || !filename.ends_with(".whl") {
        return Err(PullError::BadName(filename));
    }
    let sha256 = match wheel.sha256.as_deref().map(|s| s.trim().to_ascii_lowercase()) {
        Some(s) if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) => s,
        _ => return Err(PullError::NoSha256 { wheel: filename }),
    };
    tracing::info!(wheel = %filename, url = %wheel.url, "downloading cuBLAS from the package index");

    let created_dir = !cuda_dir.exists();
    let staging = cuda_dir.join(STAGING);
    std::fs::create_dir_all(&staging).map_err(|e| PullError::io(&staging, e))?;
    let result = fetch_and_install(&client, cuda_dir, &staging, wheel, &version, &sha256, opts.progress).await;
    match &result {
        Ok(_) => remove_staging(&staging),
        // A transfer that broke off stays for the next run to resume.
        Err(PullError::Download { .. }) if has_partial(&staging) => {}
        Err(_) => {
            remove_staging(&staging);
            if created_dir {
                let _ = std::fs::remove_dir(cuda_dir); // only if empty
            }
        }
    }
    result.map(Outcome::Pulled)
}

async fn fetch_and_install(
    client: &reqwest::Client,
    cuda_dir: &Path,
    staging: &Path,
    wheel: &WheelLink,
    version: &str,
    sha256: &str,
    progress: bool,
) -> Result<Pulled, PullError> {
    let filename = wheel.filename.as_str();
    clear_staging(staging, filename)?;
    let dest = staging.join(filename);
    let bar = Progress::new(progress, None);
    bar.message(filename);
    let expect = Expect { size: None, sha256: Some(sha256.to_string()), git_sha1: None };
    download::fetch(client, &wheel.url, None, &dest, &expect, &bar).await.map_err(|e| match e {
        FetchError::Connect { url, reason } => PullError::Download { url, reason: format!("cannot connect: {reason}") },
        FetchError::Status { url, status } => PullError::Download { url, reason: format!("HTTP {status}") },
        FetchError::Body { url, reason } => PullError::Download { url, reason: format!("the transfer broke off: {reason}") },
        FetchError::Integrity { expected, actual } => PullError::Integrity { wheel: filename.to_string(), expected, actual },
        FetchError::Io(ModelError::Io { path, source }) => PullError::Io { path, source },
        FetchError::Io(other) => PullError::Download { url: wheel.url.clone(), reason: other.to_string() },
    })?;
    bar.finish();
    drop(bar);

    let tree = staging.join("tree");
    let (wheel_path, tree_for_task) = (dest.clone(), tree.clone());
    let files = tokio::task::spawn_blocking(move || extract(&wheel_path, &tree_for_task))
        .await
        .map_err(|e| PullError::io(&dest, std::io::Error::other(e.to_string())))?
        .map_err(|reason| PullError::Unpack { wheel: filename.to_string(), reason })?;
    let missing: Vec<&str> = REQUIRED_LIBS
        .iter()
        .copied()
        .filter(|lib| !files.iter().any(|f| f.rsplit('/').next() == Some(*lib)))
        .collect();
    if !missing.is_empty() {
        return Err(PullError::MissingLibs { wheel: filename.to_string(), missing: missing.join(", ") });
    }
    let record = Pulled {
        package: PROJECT.to_string(),
        version: version.to_string(),
        wheel: filename.to_string(),
        sha256: sha256.to_string(),
        files,
    };
    install(cuda_dir, staging, &tree, &record)?;
    Ok(record)
}

/// Leaves in the staging folder only what a resume of `wheel` can use.
fn clear_staging(staging: &Path, wheel: &str) -> Result<(), PullError> {
    let keep = [wheel.to_string(), format!("{wheel}.incomplete")];
    let entries = std::fs::read_dir(staging).map_err(|e| PullError::io(staging, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| PullError::io(staging, e))?;
        if keep.iter().any(|k| entry.file_name().to_str() == Some(k.as_str())) {
            continue;
        }
        let path = entry.path();
        let removed = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
        removed.map_err(|e| PullError::io(&path, e))?;
    }
    Ok(())
}

fn has_partial(staging: &Path) -> bool {
    std::fs::read_dir(staging).is_ok_and(|entries| {
        entries.filter_map(|e| e.ok()).any(|e| {
            e.file_name().to_str().is_some_and(|n| n.ends_with(".incomplete"))
                && e.metadata().is_ok_and(|m| m.len() > 0)
        })
    })
}

fn remove_staging(staging: &Path) {
    if staging.exists() {
        if let Err(e) = std::fs::remove_dir_all(staging) {
            tracing::warn!(path = %staging.display(), error = %e, "cannot remove the staging folder");
        }
    }
}

/// Extracts the wheel's `nvidia/cublas/lib/*.so*` into `tree`, keeping the
/// wheel's layout, and returns their paths (relative to `tree`), sorted.
/// The zip crate checks each member's CRC as it is read.
fn extract(wheel: &Path, tree: &Path) -> Result<Vec<String>, String> {
    let file = std::fs::File::open(wheel).map_err(|e| format!("{}: {e}", wheel.display()))?;
    let mut archive = zip::ZipArchive::new(std::io::BufReader::new(file)).map_err(|e| e.to_string())?;
    if tree.exists() {
        std::fs::remove_dir_all(tree).map_err(|e| format!("{}: {e}", tree.display()))?;
    }
    let lib = tree.join(LIB_DIR);
    std::fs::create_dir_all(&lib).map_err(|e| format!("{}: {e}", lib.display()))?;
    let mut names = Vec::new();
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(|e| e.to_string())?;
        // A name that would leave `tree` (absolute, `..`) is skipped
        // whatever `lib_member` makes of it.
        if !entry.is_file() || entry.enclosed_name().is_none() {
            continue;
        }
        let Some(name) = lib_member(entry.name()).map(str::to_string) else { continue };
        let out_path = tree.join(&name);
        let io = |e: std::io::Error| format!("{name}: {e}");
        let mut out = std::fs::File::create(&out_path).map_err(io)?;
        std::io::copy(&mut entry, &mut out).map_err(io)?;
        out.flush().map_err(io)?;
        out.sync_all().map_err(io)?;
        drop(out);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = entry.unix_mode().map(|m| m & 0o755).filter(|m| m & 0o400 != 0).unwrap_or(0o755);
            std::fs::set_permissions(&out_path, std::fs::Permissions::from_mode(mode)).map_err(io)?;
        }
        names.push(name);
    }
    names.sort();
    Ok(names)
}

/// Puts `tree/nvidia/cublas` in place of `cuda_dir/nvidia/cublas` and
/// writes the record. The old record goes first, so a crash in between
/// leaves no record that claims a version which is not there.
fn install(cuda_dir: &Path, staging: &Path, tree: &Path, record: &Pulled) -> Result<(), PullError> {
    let manifest = cuda_dir.join(MANIFEST);
    if manifest.exists() {
        std::fs::remove_file(&manifest).map_err(|e| PullError::io(&manifest, e))?;
    }
    let parent = cuda_dir.join("nvidia");
    std::fs::create_dir_all(&parent).map_err(|e| PullError::io(&parent, e))?;
    let dest = parent.join("cublas");
    let new = tree.join("nvidia/cublas");
    let old = staging.join("old-cublas");
    let had_old = dest.exists();
    if had_old {
        std::fs::rename(&dest, &old).map_err(|e| PullError::io(&dest, e))?;
    }
    if let Err(e) = std::fs::rename(&new, &dest) {
        if had_old {
            let _ = std::fs::rename(&old, &dest);
        }
        return Err(PullError::io(&dest, e));
    }
    let tmp = staging.join(format!("{MANIFEST}.tmp"));
    let json = serde_json::to_vec_pretty(record).map_err(|e| PullError::io(&tmp, std::io::Error::other(e)))?;
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&json)?;
        f.write_all(b"\n")?;
        f.sync_all()
    };
    write().map_err(|e| PullError::io(&tmp, e))?;
    std::fs::rename(&tmp, &manifest).map_err(|e| PullError::io(&manifest, e))?;
    Ok(())
}

/// What `whisper-serve cuda pull` prints when it is done.
pub fn summary(cuda_dir: &Path, outcome: &Outcome) -> String {
    let shown = std::path::absolute(cuda_dir).unwrap_or_else(|_| cuda_dir.to_path_buf());
    let record = outcome.record();
    let libs: Vec<&str> = record.files.iter().map(|f| f.rsplit('/').next().unwrap_or(f)).collect();
    let head = match outcome {
        Outcome::Pulled(_) => format!("Pulled {} {} ({}).", record.package, record.version, record.wheel),
        Outcome::AlreadyThere(_) => {
            format!("{} {} is already in {}; nothing to do.", record.package, record.version, shown.display())
        }
    };
    format!(
        "{head}\nLibraries: {} ({})\nWith model.device \"cuda\" or \"auto\", whisper-serve finds them there \
         (engine.cuda_dir = {}); the NVIDIA driver (libcuda.so.1) must come from the system.",
        lib_dir(&shown).display(),
        libs.join(", "),
        shown.display(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(filename: &str) -> WheelLink {
        WheelLink { filename: filename.into(), url: format!("https://files.example/{filename}"), sha256: Some("ab".repeat(32)) }
    }

    fn links() -> Vec<WheelLink> {
        [
            "nvidia_cublas_cu12-12.4.5.8-py3-none-manylinux2014_x86_64.whl",
            "nvidia_cublas_cu12-12.4.5.8-py3-none-manylinux2014_aarch64.whl",
            "nvidia_cublas_cu12-12.4.5.8-py3-none-win_amd64.whl",
            "nvidia_cublas_cu12-12.6.4.1-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
            "nvidia_cublas_cu12-12.6.4.1-py3-none-win_amd64.whl",
            // Newer, but only for aarch64 / Windows / as a pre-release: never picked on x86_64.
            "nvidia_cublas_cu12-12.8.0.1-py3-none-manylinux_2_27_aarch64.whl",
            "nvidia_cublas_cu12-12.9.0.2-py3-none-win_amd64.whl",
            "nvidia_cublas_cu12-12.9.1rc1-py3-none-manylinux2014_x86_64.whl",
            "nvidia_cublas_cu12-12.10.0.1.tar.gz",
            // Another major: never picked.
            "nvidia_cublas_cu12-13.0.0-py3-none-manylinux2014_x86_64.whl",
            "nvidia_cublas_cu12-11.11.3.6-py3-none-manylinux2014_x86_64.whl",
        ]
        .into_iter()
        .map(link)
        .collect()
    }

    #[test]
    fn versions_are_numeric_and_sorted_newest_first() {
        assert_eq!(
            listed_versions(&links()),
            ["13.0.0", "12.9.0.2", "12.8.0.1", "12.6.4.1", "12.4.5.8", "11.11.3.6"]
        );
        assert!(is_wanted_major("12.6.4.1"));
        assert!(!is_wanted_major("13.0.0"));
        assert!(!is_wanted_major("112.0"));
        assert!(!is_wanted_major("12.9.1rc1"));
        assert!(!is_wanted_major(""));
    }

    #[test]
    fn picks_the_newest_12x_wheel_for_the_architecture() {
        let links = links();
        let (v, w) = choose(&links, "x86_64", None).unwrap();
        assert_eq!(v, "12.6.4.1");
        assert!(w.filename.contains("manylinux") && w.filename.contains("x86_64"));
        let (v, _) = choose(&links, "aarch64", None).unwrap();
        assert_eq!(v, "12.8.0.1");
        let (v, w) = choose(&links, "x86_64", Some("12.4.5.8")).unwrap();
        assert_eq!(v, "12.4.5.8");
        assert_eq!(w.filename, "nvidia_cublas_cu12-12.4.5.8-py3-none-manylinux2014_x86_64.whl");
        assert_eq!(
            choose(&links, "x86_64", Some("12.8.0.1")).unwrap_err(),
            NoChoice::NotThisVersion { available: vec!["12.6.4.1".into(), "12.4.5.8".into()] }
        );
        assert_eq!(
            choose(&links, "x86_64", Some("13.0.0")).unwrap_err(),
            NoChoice::NotThisVersion { available: vec!["12.6.4.1".into(), "12.4.5.8".into()] }
        );
        let only_13 = vec![link("nvidia_cublas_cu12-13.0.0-py3-none-manylinux2014_x86_64.whl")];
        assert_eq!(choose(&only_13, "x86_64", None).unwrap_err(), NoChoice::Nothing { listed: vec!["13.0.0".into()] });
    }

    #[test]
    fn only_the_shared_libraries_are_extracted() {
        assert_eq!(lib_member("nvidia/cublas/lib/libcublas.so.12"), Some("nvidia/cublas/lib/libcublas.so.12"));
        assert!(lib_member("nvidia/cublas/lib/libcublasLt.so.12").is_some());
        assert!(lib_member("nvidia/cublas/lib/libnvblas.so.12").is_some());
        assert!(lib_member("nvidia/cublas/lib/libfoo.so").is_some());
        for skipped in [
            "nvidia/cublas/include/cublas.h",
            "nvidia/cublas/lib/__init__.py",
            "nvidia/cublas/lib/",
            "nvidia/cublas/lib/sub/libx.so.1",
            "nvidia/cublas/lib/.hidden.so",
            "nvidia/cublas/lib/../../../etc/libx.so",
            "nvidia/cublas/libx.so.12",
            "nvidia/cublas/library.so",
            "nvidia_cublas_cu12-12.6.4.1.dist-info/RECORD",
            "/nvidia/cublas/lib/libcublas.so.12",
        ] {
            assert_eq!(lib_member(skipped), None, "{skipped}");
        }
    }

    #[test]
    fn a_record_is_intact_only_while_its_files_are_there() {
        let dir = tempfile::tempdir().unwrap();
        let record = Pulled {
            package: PROJECT.into(),
            version: "12.6.4.1".into(),
            wheel: "w.whl".into(),
            sha256: "00".repeat(32),
            files: vec!["nvidia/cublas/lib/libcublas.so.12".into()],
        };
        assert!(!record.is_intact(dir.path()));
        std::fs::create_dir_all(lib_dir(dir.path())).unwrap();
        std::fs::write(lib_dir(dir.path()).join("libcublas.so.12"), b"x").unwrap();
        assert!(record.is_intact(dir.path()));
    }
}
