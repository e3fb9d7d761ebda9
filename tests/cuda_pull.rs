//! `whisper-serve cuda pull`, the real binary against a stand-in PEP 503
//! simple index on 127.0.0.1 serving small fake `nvidia-cublas-cu12` wheels
//! built here; nothing reaches the internet.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use common::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const PROJECT: &str = "nvidia-cublas-cu12";

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn arch() -> &'static str {
    std::env::consts::ARCH
}

fn other_arch() -> &'static str {
    if arch() == "aarch64" {
        "x86_64"
    } else {
        "aarch64"
    }
}

// ---------------------------------------------------------------- fake wheels

/// The bytes each library of version `v` holds (distinct per version and file).
fn lib_bytes(v: &str, lib: &str) -> Vec<u8> {
    format!("\x7fELF fake {lib} of {PROJECT} {v}\n").repeat(50).into_bytes()
}

fn wheel_bytes(v: &str) -> Vec<u8> {
    let dist = format!("nvidia_cublas_cu12-{v}.dist-info");
    let mut files: Vec<(String, Vec<u8>)> = vec![
        ("nvidia/__init__.py".into(), Vec::new()),
        ("nvidia/cublas/__init__.py".into(), Vec::new()),
        ("nvidia/cublas/include/cublas.h".into(), b"/* cublas.h */\n".to_vec()),
        ("nvidia/cublas/include/cublas_v2.h".into(), b"/* cublas_v2.h */\n".to_vec()),
        ("nvidia/cublas/lib/__init__.py".into(), Vec::new()),
    ];
    for lib in ["libcublas.so.12", "libcublasLt.so.12", "libnvblas.so.12"] {
        files.push((format!("nvidia/cublas/lib/{lib}"), lib_bytes(v, lib)));
    }
    files.push((format!("{dist}/METADATA"), format!("Name: {PROJECT}\nVersion: {v}\n").into_bytes()));
    files.push((format!("{dist}/RECORD"), Vec::new()));
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .unix_permissions(0o755);
    zip.add_directory("nvidia/cublas/lib/", options).unwrap();
    for (name, bytes) in files {
        zip.start_file(name, options).unwrap();
        zip.write_all(&bytes).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

const OLD: &str = "12.4.5.8";
const NEW: &str = "12.6.4.1";

fn old_name() -> String {
    format!("nvidia_cublas_cu12-{OLD}-py3-none-manylinux2014_{a}.whl", a = arch())
}

fn new_name() -> String {
    format!("nvidia_cublas_cu12-{NEW}-py3-none-manylinux2014_{a}.manylinux_2_17_{a}.whl", a = arch())
}

/// What the index says of a wheel's sha256.
#[derive(Clone, Copy, PartialEq)]
enum Sha {
    Right,
    Wrong,
    Absent,
}

struct Wheel {
    name: String,
    bytes: Vec<u8>,
    sha: Sha,
}

fn wheel(name: String, version: &str, sha: Sha) -> Wheel {
    Wheel { name, bytes: wheel_bytes(version), sha }
}

/// The two good wheels plus ones that must be ignored: a 13.0.0, a newer
/// 12.x only for the other architecture and for Windows, an sdist.
fn standard_wheels(new_sha: Sha) -> Vec<Wheel> {
    vec![
        wheel(format!("nvidia_cublas_cu12-13.0.0-py3-none-manylinux_2_27_{}.whl", arch()), "13.0.0", Sha::Right),
        wheel(old_name(), OLD, Sha::Right),
        wheel(new_name(), NEW, new_sha),
        wheel(format!("nvidia_cublas_cu12-12.8.0.1-py3-none-manylinux_2_27_{}.whl", other_arch()), "12.8.0.1", Sha::Right),
        wheel("nvidia_cublas_cu12-12.9.0.2-py3-none-win_amd64.whl".into(), "12.9.0.2", Sha::Right),
        Wheel { name: "nvidia_cublas_cu12-12.9.1.4.tar.gz".into(), bytes: b"sdist".to_vec(), sha: Sha::Right },
    ]
}

// ---------------------------------------------------------------- fake index

/// A PEP 503 simple index on 127.0.0.1: `/simple/<project>/` lists the
/// wheels with relative links, `/files/<name>` serves them. Records every
/// path asked for.
struct Index {
    url: String,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Index {
    fn start(projects: Vec<(&str, Vec<Wheel>)>) -> Index {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let projects: Arc<Vec<(String, Vec<Wheel>)>> =
            Arc::new(projects.into_iter().map(|(p, w)| (p.to_string(), w)).collect());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen_by_server = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (projects, seen) = (projects.clone(), seen_by_server.clone());
                std::thread::spawn(move || handle(stream, &projects, &seen));
            }
        });
        Index { url: format!("http://{addr}/simple"), seen }
    }

    /// The wheel downloads asked for so far.
    fn downloads(&self) -> Vec<String> {
        let seen = self.seen.lock().unwrap();
        seen.iter().filter_map(|p| p.strip_prefix("/files/")).map(str::to_string).collect()
    }
}

fn handle(stream: TcpStream, projects: &[(String, Vec<Wheel>)], seen: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) if line == "\r\n" || line == "\n" => break,
            Ok(_) => {}
        }
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("/").to_string();
    seen.lock().unwrap().push(path.clone());
    let (status, content_type, body): (&str, &str, Vec<u8>) =
        if let Some(project) = path.strip_prefix("/simple/").and_then(|p| p.strip_suffix('/')) {
            match projects.iter().find(|(p, _)| p == project) {
                Some((_, wheels)) => {
                    let mut html = String::from("<!DOCTYPE html><html><body><h1>Links</h1>\n");
                    for w in wheels {
                        let fragment = match w.sha {
                            Sha::Right => format!("#sha256={}", sha256_hex(&w.bytes)),
                            Sha::Wrong => format!("#sha256={}", "ab".repeat(32)),
                            Sha::Absent => String::new(),
                        };
                        html.push_str(&format!(
                            "<a href=\"../../files/{name}{fragment}\" data-requires-python=\"&gt;=3\">{name}</a><br/>\n",
                            name = w.name
                        ));
                    }
                    html.push_str("</body></html>\n");
                    ("200 OK", "text/html", html.into_bytes())
                }
                None => ("404 Not Found", "text/plain", b"not found".to_vec()),
            }
        } else if let Some(file) = path.strip_prefix("/files/") {
            match projects.iter().flat_map(|(_, w)| w).find(|w| w.name == file) {
                Some(w) => ("200 OK", "application/octet-stream", w.bytes.clone()),
                None => ("404 Not Found", "text/plain", b"not found".to_vec()),
            }
        } else {
            ("404 Not Found", "text/plain", b"not found".to_vec())
        };
    let mut stream = reader.into_inner();
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).and_then(|_| stream.write_all(&body)).and_then(|_| stream.flush());
}

/// A URL on which nothing listens.
fn closed_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}/simple")
}

// ---------------------------------------------------------------- running it

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// `whisper-serve cuda pull --config <engine.cuda_dir = cuda_dir> <args>`.
fn cuda_pull(cuda_dir: &Path, args: &[&str]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    let c = test_config(json!({"engine": {"cuda_dir": cuda_dir}}));
    std::fs::write(&config, c.to_string()).unwrap();
    let out: Output = Command::new(bin())
        .args(["cuda", "pull", "--config"])
        .arg(&config)
        .args(args)
        .env_remove("PIP_INDEX_URL")
        .env("NO_PROXY", "127.0.0.1")
        .env("no_proxy", "127.0.0.1")
        .output()
        .expect("run whisper-serve");
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn lib_path(cuda_dir: &Path, lib: &str) -> PathBuf {
    cuda_dir.join("nvidia/cublas/lib").join(lib)
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Every file under `dir` (relative path -> bytes), folders as empty entries.
fn snapshot(dir: &Path) -> BTreeMap<String, Option<Vec<u8>>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Option<Vec<u8>>>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for e in entries {
            let path = e.unwrap().path();
            let rel = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                out.insert(format!("{rel}/"), None);
                walk(root, &path, out);
            } else {
                let mut bytes = Vec::new();
                std::fs::File::open(&path).unwrap().read_to_end(&mut bytes).unwrap();
                out.insert(rel, Some(bytes));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn top_level(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    names
}

fn assert_libs_of(cuda_dir: &Path, version: &str) {
    for lib in ["libcublas.so.12", "libcublasLt.so.12", "libnvblas.so.12"] {
        assert!(read(&lib_path(cuda_dir, lib)) == lib_bytes(version, lib), "{lib} is not {version}'s");
    }
    let mut in_lib = top_level(&cuda_dir.join("nvidia/cublas/lib"));
    in_lib.sort();
    assert_eq!(in_lib, ["libcublas.so.12", "libcublasLt.so.12", "libnvblas.so.12"]);
    assert_eq!(top_level(&cuda_dir.join("nvidia")), ["cublas"]);
    assert_eq!(top_level(&cuda_dir.join("nvidia/cublas")), ["lib"], "include/ or __init__.py extracted");
}

fn manifest(cuda_dir: &Path) -> Value {
    serde_json::from_slice(&read(&cuda_dir.join("PULLED.json"))).expect("PULLED.json is JSON")
}

fn assert_manifest(cuda_dir: &Path, version: &str, wheel_name: &str) {
    let m = manifest(cuda_dir);
    assert_eq!(m["package"], PROJECT, "{m}");
    assert_eq!(m["version"], version, "{m}");
    assert_eq!(m["wheel"], wheel_name, "{m}");
    assert_eq!(m["sha256"], sha256_hex(&wheel_bytes(version)), "{m}");
    assert_eq!(
        m["files"],
        json!([
            "nvidia/cublas/lib/libcublas.so.12",
            "nvidia/cublas/lib/libcublasLt.so.12",
            "nvidia/cublas/lib/libnvblas.so.12"
        ]),
        "{m}"
    );
}

// ---------------------------------------------------------------- tests

#[test]
fn pulls_the_newest_12x_wheel_and_a_second_run_does_nothing() {
    let index = Index::start(vec![(PROJECT, standard_wheels(Sha::Right))]);
    let tmp = tempfile::tempdir().unwrap();
    let cuda_dir = tmp.path().join("cuda");

    let run = cuda_pull(&cuda_dir, &["--index-url", &index.url]);
    assert!(run.ok, "stdout: {}\nstderr: {}", run.stdout, run.stderr);
    assert_libs_of(&cuda_dir, NEW);
    assert_manifest(&cuda_dir, NEW, &new_name());
    assert_eq!(top_level(&cuda_dir), ["PULLED.json", "nvidia"], "staging left behind");
    assert_eq!(index.downloads(), [new_name()], "only the chosen wheel is downloaded");
    assert!(run.stdout.contains(NEW), "{}", run.stdout);
    let lib_dir = cuda_dir.join("nvidia/cublas/lib");
    assert!(run.stdout.contains(&lib_dir.display().to_string()), "does not say where: {}", run.stdout);
    assert!(run.stdout.contains("cuda") && run.stdout.contains("auto"), "{}", run.stdout);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(lib_path(&cuda_dir, "libcublas.so.12")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
    }

    let before = snapshot(&cuda_dir);
    let again = cuda_pull(&cuda_dir, &["--index-url", &index.url]);
    assert!(again.ok, "stdout: {}\nstderr: {}", again.stdout, again.stderr);
    assert!(again.stdout.contains("already") && again.stdout.contains(NEW), "{}", again.stdout);
    assert_eq!(index.downloads(), [new_name()], "the second run downloaded again");
    assert!(snapshot(&cuda_dir) == before, "the second run changed cuda_dir");
}

#[test]
fn version_pins_an_exact_release_and_a_later_pull_replaces_it() {
    let index = Index::start(vec![(PROJECT, standard_wheels(Sha::Right))]);
    let tmp = tempfile::tempdir().unwrap();
    let cuda_dir = tmp.path().join("cuda");

    let run = cuda_pull(&cuda_dir, &["--index-url", &index.url, "--version", OLD]);
    assert!(run.ok, "stdout: {}\nstderr: {}", run.stdout, run.stderr);
    assert_libs_of(&cuda_dir, OLD);
    assert_manifest(&cuda_dir, OLD, &old_name());
    assert_eq!(index.downloads(), [old_name()]);

    // The pinned version again: nothing to do.
    let again = cuda_pull(&cuda_dir, &["--index-url", &index.url, "--version", OLD]);
    assert!(again.ok && again.stdout.contains("already"), "{}\n{}", again.stdout, again.stderr);
    assert_eq!(index.downloads(), [old_name()]);

    // Without a pin: the newest replaces it whole.
    let upgrade = cuda_pull(&cuda_dir, &["--index-url", &index.url]);
    assert!(upgrade.ok, "stdout: {}\nstderr: {}", upgrade.stdout, upgrade.stderr);
    assert_libs_of(&cuda_dir, NEW);
    assert_manifest(&cuda_dir, NEW, &new_name());
    assert_eq!(top_level(&cuda_dir), ["PULLED.json", "nvidia"]);

    // A version with no wheel for this machine, and one of another major.
    let before = snapshot(&cuda_dir);
    let other = cuda_pull(&cuda_dir, &["--index-url", &index.url, "--version", "12.8.0.1"]);
    assert!(!other.ok, "{}", other.stdout);
    assert!(other.stderr.contains("12.8.0.1") && other.stderr.contains(&format!("{NEW}, {OLD}")), "{}", other.stderr);
    let thirteen = cuda_pull(&cuda_dir, &["--index-url", &index.url, "--version", "13.0.0"]);
    assert!(!thirteen.ok, "{}", thirteen.stdout);
    assert!(thirteen.stderr.contains("libcublas.so.12") && thirteen.stderr.contains("12.x"), "{}", thirteen.stderr);
    assert!(snapshot(&cuda_dir) == before, "a refused pull changed cuda_dir");
}

#[test]
fn a_wheel_whose_sha256_does_not_match_the_index_is_refused() {
    let tmp = tempfile::tempdir().unwrap();

    // Into a folder holding something else.
    let cuda_dir = tmp.path().join("fresh");
    std::fs::create_dir_all(&cuda_dir).unwrap();
    std::fs::write(cuda_dir.join("notes.txt"), b"mine").unwrap();
    let bad = Index::start(vec![(PROJECT, standard_wheels(Sha::Wrong))]);
    let run = cuda_pull(&cuda_dir, &["--index-url", &bad.url]);
    assert!(!run.ok, "a wheel with a wrong sha256 was accepted: {}", run.stdout);
    assert!(run.stderr.contains("sha256") && run.stderr.contains(&"ab".repeat(32)), "{}", run.stderr);
    assert_eq!(bad.downloads(), [new_name()]);
    assert_eq!(top_level(&cuda_dir), ["notes.txt"], "something was left behind");
    assert_eq!(read(&cuda_dir.join("notes.txt")), b"mine");

    // Over an earlier pull: that stays as it was.
    let cuda_dir = tmp.path().join("upgrade");
    let good = Index::start(vec![(PROJECT, standard_wheels(Sha::Right))]);
    let first = cuda_pull(&cuda_dir, &["--index-url", &good.url, "--version", OLD]);
    assert!(first.ok, "{}", first.stderr);
    let before = snapshot(&cuda_dir);
    let run = cuda_pull(&cuda_dir, &["--index-url", &bad.url]);
    assert!(!run.ok, "{}", run.stdout);
    assert!(run.stderr.contains("sha256"), "{}", run.stderr);
    assert!(snapshot(&cuda_dir) == before, "the refused pull changed the earlier one");
    assert_libs_of(&cuda_dir, OLD);
}

#[test]
fn a_wheel_without_a_sha256_is_refused_before_downloading() {
    let index = Index::start(vec![(PROJECT, standard_wheels(Sha::Absent))]);
    let tmp = tempfile::tempdir().unwrap();
    let cuda_dir = tmp.path().join("cuda");
    let run = cuda_pull(&cuda_dir, &["--index-url", &index.url]);
    assert!(!run.ok, "{}", run.stdout);
    assert!(run.stderr.contains("sha256") && run.stderr.contains(&new_name()), "{}", run.stderr);
    assert!(index.downloads().is_empty(), "downloaded anyway: {:?}", index.downloads());
    assert!(!cuda_dir.exists(), "cuda_dir was created: {:?}", snapshot(&cuda_dir));
}

#[test]
fn an_index_without_the_project_is_a_clear_error() {
    let index = Index::start(vec![("numpy", Vec::new())]);
    let tmp = tempfile::tempdir().unwrap();
    let cuda_dir = tmp.path().join("cuda");
    let run = cuda_pull(&cuda_dir, &["--index-url", &index.url]);
    assert!(!run.ok, "{}", run.stdout);
    assert!(run.stderr.contains(PROJECT) && run.stderr.contains("404"), "{}", run.stderr);
    assert!(run.stderr.contains("--index-url") && run.stderr.contains("PIP_INDEX_URL"), "{}", run.stderr);
    assert!(!cuda_dir.exists());

    // A project page with no usable wheel.
    let only_others = Index::start(vec![(
        PROJECT,
        vec![wheel(format!("nvidia_cublas_cu12-13.0.0-py3-none-manylinux_2_27_{}.whl", arch()), "13.0.0", Sha::Right)],
    )]);
    let run = cuda_pull(&cuda_dir, &["--index-url", &only_others.url]);
    assert!(!run.ok, "{}", run.stdout);
    assert!(run.stderr.contains("12.x") && run.stderr.contains("13.0.0"), "{}", run.stderr);

    // Nothing listening.
    let run = cuda_pull(&cuda_dir, &["--index-url", &closed_url()]);
    assert!(!run.ok, "{}", run.stdout);
    assert!(run.stderr.contains("cannot reach the package index"), "{}", run.stderr);
    assert!(!cuda_dir.exists());
}

/// Against the real PyPI (about 550 MB); run by hand with `--ignored`.
#[test]
#[ignore]
fn real_pypi_pulls_the_newest_cublas_12() {
    let tmp = tempfile::tempdir().unwrap();
    let cuda_dir = tmp.path().join("cuda");
    let run = cuda_pull(&cuda_dir, &["--index-url", "https://pypi.org/simple"]);
    assert!(run.ok, "stdout: {}\nstderr: {}", run.stdout, run.stderr);
    let m = manifest(&cuda_dir);
    assert_eq!(m["package"], PROJECT);
    assert!(m["version"].as_str().is_some_and(|v| v.starts_with("12.")), "{m}");
    for lib in ["libcublas.so.12", "libcublasLt.so.12"] {
        let len = std::fs::metadata(lib_path(&cuda_dir, lib)).map(|m| m.len()).unwrap_or(0);
        assert!(len > 10_000_000, "{lib}: {len} bytes");
    }
    assert!(!cuda_dir.join("nvidia/cublas/include").exists());
}
