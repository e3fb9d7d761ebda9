//! Finding CUDA on a machine without it: `device: cuda` is a start-up
//! error that names each missing or wrong library and the fix; `auto` runs
//! on CPU and says why. Folders with missing, fake and stand-in libraries
//! stand for the cases a GPU host can get wrong.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::json;

/// Runs `serve` with `device` and `cuda_dir`; returns (exit success, stderr)
/// once it exits (within 60 s).
fn serve_until_exit(device: &str, cuda_dir: &Path) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tmp");
    let config = test_config(json!({"model": {"device": device}, "engine": {"cuda_dir": cuda_dir},
        "jobs": {"dir": dir.path().join("jobs")}}));
    let path = dir.path().join("config.json");
    std::fs::write(&path, config.to_string()).expect("config");
    let mut child = Command::new(bin())
        .args(["serve", "--config"])
        .arg(&path)
        .env("WHISPER_SERVE_EXIT_ON_STDIN_EOF", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start");
    let started = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let out = child.wait_with_output().expect("output");
            return (status.success(), String::from_utf8_lossy(&out.stderr).into_owned());
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("serve with device {device} did not exit");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn has_driver() -> bool {
    Path::new("/proc/driver/nvidia/version").exists()
}

#[test]
fn cuda_without_libraries_is_a_start_up_error_naming_them() {
    if has_driver() {
        eprintln!("skipped: this machine has an NVIDIA driver; tests/gpu.rs covers it");
        return;
    }
    let empty = tempfile::tempdir().expect("tmp");
    let (ok, err) = serve_until_exit("cuda", empty.path());
    assert!(!ok, "serve started with device cuda and no CUDA");
    assert!(err.contains("libcuda.so.1") && err.contains("install the NVIDIA driver"), "{err}");
    // cuBLAS is named too, with the command that fetches it and the folder looked in.
    assert!(err.contains("libcublas.so.12") && err.contains("whisper-serve cuda pull"), "{err}");
    assert!(err.contains(&empty.path().display().to_string()), "{err}");
}

#[test]
fn fake_and_wrong_libraries_are_told_apart() {
    if has_driver() {
        eprintln!("skipped: this machine has an NVIDIA driver");
        return;
    }
    // Not a library at all, under cuBLAS's name, where `cuda pull` puts it.
    let fake = cublas_dir(|path, _| std::fs::write(path, b"this is not an ELF file").expect("write"));
    let (ok, err) = serve_until_exit("cuda", fake.path());
    assert!(!ok);
    assert!(err.contains("libcublas.so.12") && err.contains("cannot be loaded"), "{err}");

    // Real shared libraries that are not cuBLAS: built here, exporting nothing of it.
    let wrong = cublas_dir(|path, _| build_lib(path, "int unrelated(void) { return 1; }"));
    let (ok, err) = serve_until_exit("cuda", wrong.path());
    assert!(!ok);
    assert!(err.contains("is not cuBLAS 12") && err.contains("cublasCreate_v2"), "{err}");

    // Stand-ins with the right symbols are found and accepted: what is left is the driver.
    let good = cublas_dir(|path, symbol| build_lib(path, &format!("int {symbol}(void **h) {{ return 0; }}")));
    let (ok, err) = serve_until_exit("cuda", good.path());
    assert!(!ok);
    assert!(err.contains("libcuda.so.1"), "{err}");
    assert!(!err.contains("libcublas"), "the stand-in cuBLAS was not accepted: {err}");
}

/// A folder laid out as `cuda pull` leaves it, each of cuBLASLt and cuBLAS
/// made by `make(path, the symbol the engine checks for)`.
fn cublas_dir(make: impl Fn(&Path, &str)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tmp");
    let lib = dir.path().join("nvidia/cublas/lib");
    std::fs::create_dir_all(&lib).expect("mkdir");
    make(&lib.join("libcublasLt.so.12"), "cublasLtCreate");
    make(&lib.join("libcublas.so.12"), "cublasCreate_v2");
    dir
}

fn build_lib(path: &Path, source: &str) {
    let dir = tempfile::tempdir().expect("tmp");
    let c = dir.path().join("lib.c");
    std::fs::write(&c, source).expect("write");
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(path)
        .arg(&c)
        .status()
        .expect("cc (gcc is needed to build the crate itself)");
    assert!(status.success());
}

#[test]
fn auto_falls_back_to_cpu_and_says_why() {
    if has_driver() {
        eprintln!("skipped: this machine has an NVIDIA driver");
        return;
    }
    let empty = tempfile::tempdir().expect("tmp");
    let logs = tempfile::tempdir().expect("tmp");
    let log = logs.path().join("serve.log");
    let server = Server::start(test_config(json!({"model": {"device": "auto"}, "engine": {"cuda_dir": empty.path()},
        "logging": {"level": "WARNING", "file": log}})));
    let (_, stats) = server.get_json("/v1/stats");
    assert_eq!(stats["model"]["device"], "cpu", "{stats}");
    let (status, body) = transcribe_file(&server, &jfk_wav());
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["gpu_memory"], 0.0, "no GPU, no NVML: gpu_memory is 0");
    let text = std::fs::read_to_string(&log).expect("log");
    let line = text.lines().find(|l| l.contains("running on CPU")).unwrap_or_else(|| panic!("no fallback warning:\n{text}"));
    assert!(line.contains("WARNING") && line.contains("libcuda.so.1"), "{line}");
}
