//! The binary's commands and its configuration handling, end to end.

mod common;

use std::process::Command;

use common::*;
use serde_json::json;

fn serve_with(config: serde_json::Value) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(&path, config.to_string()).unwrap();
    let out = Command::new(bin())
        .args(["serve", "--config", path.to_str().unwrap()])
        .output()
        .expect("run whisper-serve");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn bad_config_values_stop_start_up_naming_the_key() {
    let cases = [
        (json!({"server": {"port": 70000}}), "server.port"),
        (json!({"model": {"size": "huge"}}), "model.size"),
        (json!({"model": {"device": "tpu"}}), "model.device"),
        (json!({"deployment": {"num_replicas": 0}}), "deployment.num_replicas"),
        (json!({"model": {"supported_formats": ["wav"]}}), "model.supported_formats"),
        (json!({"model": {"sise": "base"}}), "sise"),
    ];
    for (config, key) in cases {
        let (ok, stderr) = serve_with(config.clone());
        assert!(!ok, "{config} was accepted");
        assert!(stderr.contains(key), "{config}: message does not name {key}: {stderr}");
    }
}

#[test]
fn device_cuda_without_a_gpu_is_a_clear_start_up_error() {
    let has_gpu = std::path::Path::new("/dev/nvidiactl").exists();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(&path, test_config(json!({"model": {"device": "cuda"}})).to_string()).unwrap();
    let out = Command::new(bin())
        .args(["transcribe", "--config", path.to_str().unwrap(), jfk_wav().to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if has_gpu {
        assert!(out.status.success(), "{stderr}");
    } else {
        assert!(!out.status.success());
        assert!(stderr.contains("cuda") && stderr.contains("GPU"), "{stderr}");
    }
}

#[test]
fn the_shipped_config_json_is_the_original_schema_and_loads() {
    let text = std::fs::read_to_string(repo().join("config.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    for (section, keys) in [
        ("server", &["host", "port", "dedicated_cpu", "num_cpus"][..]),
        ("model", &["size", "device", "model_dir", "supported_formats"][..]),
        ("deployment", &["num_replicas", "cpu_per_replica", "gpu_per_replica"][..]),
        ("logging", &["level", "format", "file"][..]),
    ] {
        for k in keys {
            assert!(v[section].get(k).is_some(), "config.json lacks {section}.{k}");
        }
    }
    let (config, _) = whisper_serve::config::Config::load(Some(&repo().join("config.json"))).expect("loads");
    assert_eq!(config.model.size, "base");
}

#[test]
fn an_environment_override_takes_effect_in_the_running_server() {
    // The override lowers the upload limit to 1 MB: a 2 MB upload is refused.
    let server = Server::start_env(test_config(json!({})), &[("WHISPER_SERVE__LIMITS__MAX_UPLOAD_MB", "1")]);
    let dir = tempfile::tempdir().unwrap();
    let two_mb = dir.path().join("a.wav");
    std::fs::write(&two_mb, vec![0u8; 2 << 20]).unwrap();
    let (status, body) = curl_post(&format!("{}/transcribe", server.url), "audio_file", &two_mb);
    assert_eq!(status, 413, "{body}");
    let (status, _) = transcribe_file(&server, &jfk_wav());
    assert_eq!(status, 200);
}

#[test]
fn transcribe_command_prints_the_text_and_models_list_shows_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(&path, test_config(json!({})).to_string()).unwrap();
    let out = Command::new(bin())
        .args(["transcribe", "--config", path.to_str().unwrap(), jfk_wav().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("ask not what your country can do for you"), "{stdout}");

    let out = Command::new(bin()).args(["models", "list", "--config", path.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("tiny.en"));
}
