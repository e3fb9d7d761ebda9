//! The service on an NVIDIA GPU, through the real binary: accuracy (JFK and
//! the corpus), four replicas sharing one GPU under concurrent load, and
//! what the answers and `/v1/stats` say about the device.
//!
//! Runs only with `WHISPER_SERVE_GPU_TESTS=1`, on a machine with an NVIDIA
//! driver (>= 525, CUDA 12), cuBLAS 12 (the system's, or `whisper-serve
//! cuda pull` into `./cuda`), and `models/base` (`whisper-serve models pull
//! base`). Without the variable each test says why it is skipped and
//! passes, so `cargo test --release --test gpu` is quick anywhere.
//! `bench/gpu.sh` runs the prebuilt binary of these tests with it set.
//!
//! The corpus test uses `base` (the default model; on a GPU the 47 clips
//! take seconds), not tiny.en.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const ENABLE: &str = "WHISPER_SERVE_GPU_TESTS";

/// Whether GPU tests are on; otherwise prints why `test` is skipped.
fn enabled(test: &str) -> bool {
    if std::env::var(ENABLE).as_deref() == Ok("1") {
        return true;
    }
    eprintln!("skipped {test}: needs an NVIDIA GPU; run with {ENABLE}=1 on one (see docs/gpu.md)");
    false
}

/// The model folder, which must be there already: a GPU test should not
/// start by downloading (the GPU machine may have no network).
fn need_model(name: &str) -> PathBuf {
    let dir = model_dir().join(name);
    assert!(
        dir.join("model.bin").exists(),
        "{} is missing: run `whisper-serve models pull {name}` before the GPU tests",
        dir.display()
    );
    dir
}

/// `model` on CUDA: float16 (compute_type auto), one replica on GPU 0,
/// all CPU cores for audio decoding and features, then `overrides`.
fn cuda_config(model: &str, overrides: Value) -> Value {
    need_model(model);
    let mut c = test_config(json!({
        "server": {"num_cpus": 0},
        "model": {"size": model, "device": "cuda"},
        "deployment": {"num_replicas": 1, "cpu_per_replica": 1, "gpu_per_replica": 1},
    }));
    merge_json(&mut c, overrides);
    c
}

fn stats(server: &Server) -> Value {
    let (status, body) = server.get_json("/v1/stats");
    assert_eq!(status, 200, "/v1/stats: {body}");
    body
}

/// The engine really runs on CUDA in float16 (a server that fell back to
/// the CPU would pass the accuracy tests too).
fn assert_on_cuda(server: &Server) {
    let s = stats(server);
    assert_eq!(s["model"]["device"], "cuda", "/v1/stats model: {}", s["model"]);
    assert_eq!(s["model"]["compute_type"], "float16", "/v1/stats model: {}", s["model"]);
}

#[test]
fn jfk_on_cuda_gives_the_sentence() {
    if !enabled("jfk_on_cuda_gives_the_sentence") {
        return;
    }
    let server = Server::start(cuda_config("base", json!({})));
    assert_on_cuda(&server);
    let (status, body) = transcribe_file(&server, &jfk_wav());
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success"], true, "{body}");
    let text = body["text"].as_str().unwrap_or_default().to_string();
    let wer = wer(&[(JFK_TEXT.to_string(), text.clone())]);
    eprintln!("JFK on CUDA (base, float16): WER {wer:.4}: {text}");
    assert!(wer <= 0.05, "WER {wer:.4} > 0.05: {text}");
}

#[test]
fn corpus_wer_on_cuda_with_base_is_at_most_8_percent() {
    if !enabled("corpus_wer_on_cuda_with_base_is_at_most_8_percent") {
        return;
    }
    let server = Server::start(cuda_config("base", json!({"deployment": {"num_replicas": 2, "gpu_per_replica": 0.5}})));
    assert_on_cuda(&server);
    let clips = corpus();
    assert!(clips.len() >= 40, "expected the whole corpus, found {}", clips.len());
    let started = Instant::now();
    // Eight clips at a time: the replicas batch them, and the test stays short.
    let mut pairs = Vec::new();
    for chunk in clips.chunks(8) {
        let answers: Vec<(u16, Value)> = std::thread::scope(|s| {
            let handles: Vec<_> = chunk.iter().map(|(path, _)| s.spawn(|| transcribe_file(&server, path))).collect();
            handles.into_iter().map(|h| h.join().expect("request thread")).collect()
        });
        for ((path, reference), (status, body)) in chunk.iter().zip(answers) {
            assert_eq!(status, 200, "{}: {body}", path.display());
            pairs.push((reference.clone(), body["text"].as_str().unwrap_or_default().to_string()));
        }
    }
    let took = started.elapsed().as_secs_f64();
    let wer = wer(&pairs);
    eprintln!("corpus WER on CUDA (base, float16) over {} clips: {wer:.4} ({took:.1} s)", pairs.len());
    assert!(wer <= 0.08, "corpus WER {wer:.4} > 0.08");
}

#[test]
fn thirty_two_concurrent_requests_to_four_replicas_sharing_one_gpu_all_succeed() {
    if !enabled("thirty_two_concurrent_requests_to_four_replicas_sharing_one_gpu_all_succeed") {
        return;
    }
    let server = Server::start(cuda_config(
        "base",
        json!({"deployment": {"num_replicas": 4, "gpu_per_replica": 0.25}, "limits": {"max_queue": 64}}),
    ));
    assert_on_cuda(&server);
    let s = stats(&server);
    let replicas = s["load"]["replicas"].as_array().map_or(0, Vec::len);
    assert_eq!(replicas, 4, "/v1/stats load: {}", s["load"]);

    let clips: Vec<PathBuf> = corpus().into_iter().map(|(p, _)| p).take(8).collect();
    let started = Instant::now();
    let barrier = std::sync::Barrier::new(32);
    let answers: Vec<(PathBuf, u16, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..32)
            .map(|i| {
                let (path, barrier, server) = (clips[i % clips.len()].clone(), &barrier, &server);
                s.spawn(move || {
                    barrier.wait();
                    let (status, body) = transcribe_file(server, &path);
                    (path, status, body)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("request thread")).collect()
    });
    eprintln!("32 concurrent requests on 4 replicas x 0.25 GPU: {:.1} s", started.elapsed().as_secs_f64());
    for (path, status, body) in &answers {
        assert_eq!(*status, 200, "{}: {body}", path.display());
        assert_eq!(body["success"], true, "{}: {body}", path.display());
        assert!(!body["text"].as_str().unwrap_or_default().trim().is_empty(), "{}: empty text", path.display());
    }
    // The stats count a request as its answer goes out: allow a moment.
    let deadline = Instant::now() + Duration::from_secs(3);
    let s = loop {
        let s = stats(&server);
        if s["totals"]["requests"].as_u64() >= Some(32) || Instant::now() > deadline {
            break s;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("batch sizes: {}", s["batch_sizes"]);
    assert_eq!(s["totals"]["requests"].as_u64(), Some(32), "/v1/stats totals: {}", s["totals"]);
    assert_eq!(s["totals"]["errors"].as_u64(), Some(0), "/v1/stats totals: {}", s["totals"]);
}

#[test]
fn answers_report_gpu_memory_and_stats_say_cuda() {
    if !enabled("answers_report_gpu_memory_and_stats_say_cuda") {
        return;
    }
    let server = Server::start(cuda_config("base", json!({})));
    assert_on_cuda(&server);
    // The server samples NVML every 2 s from the moment the model is
    // loaded; the first answers may come before the first sample.
    let deadline = Instant::now() + Duration::from_secs(20);
    let gb = loop {
        let (status, body) = transcribe_file(&server, &jfk_wav());
        assert_eq!(status, 200, "{body}");
        let gb = body["gpu_memory"].as_f64().unwrap_or_else(|| panic!("no numeric gpu_memory: {body}"));
        if gb > 0.0 || Instant::now() > deadline {
            break gb;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    eprintln!("gpu_memory in /transcribe: {gb} GB");
    assert!(gb > 0.0, "gpu_memory stayed {gb} for 20 s on CUDA");
    let s = stats(&server);
    // Per-device memory and utilisation, where this build reports them.
    if !s["gpus"].is_null() {
        eprintln!("/v1/stats gpus: {}", s["gpus"]);
        let n = s["gpus"].as_array().map(Vec::len).or_else(|| s["gpus"].as_object().map(|o| o.len()));
        assert!(n.unwrap_or(0) > 0, "/v1/stats gpus is empty on CUDA: {}", s["gpus"]);
    } else {
        eprintln!("/v1/stats has no `gpus` key in this build");
    }
}
