//! The repository's `config.json` (the original service's file) loads, and
//! `docs/configuration.md` documents every key of the configuration.

use std::path::Path;

use whisper_serve::config::{Config, DeviceKind};

const CONFIG_JSON: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config.json");
const CONFIG_DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md");

#[test]
fn repo_config_json_loads_and_validates() {
    // Any WHISPER_SERVE__* variables in the test environment would apply too;
    // the values checked here are not ones a developer would override by accident.
    let (cfg, path) = Config::load(Some(Path::new(CONFIG_JSON))).expect("config.json loads");
    assert_eq!(path.as_deref(), Some(Path::new(CONFIG_JSON)));
    cfg.validate().expect("config.json validates");
    assert_eq!(cfg.model.size, "base");
    assert_eq!(cfg.model.device, DeviceKind::Auto);
    assert_eq!(cfg.model.supported_formats, [".wav", ".mp3", ".m4a", ".ogg", ".flac"]);
    assert_eq!(cfg.server.num_cpus, 2);
    assert!(!cfg.server.dedicated_cpu);
    assert_eq!(cfg.deployment.num_replicas, 2);
    assert_eq!(cfg.deployment.cpu_per_replica, 1.0);
    assert_eq!(cfg.deployment.gpu_per_replica, 0.0);
    assert_eq!(cfg.logging.level, "INFO");
    assert_eq!(cfg.logging.format, "%(asctime)s - %(name)s - %(levelname)s - %(message)s");
    assert_eq!(cfg.logging.file_path(), Some(Path::new("logs/whisper_service.log")));
    assert_eq!(cfg.threads_per_replica(64), 1);
}

#[test]
fn repo_config_json_has_exactly_the_original_keys() {
    let text = std::fs::read_to_string(CONFIG_JSON).expect("read config.json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let mut keys = Vec::new();
    for (section, body) in v.as_object().expect("object") {
        for key in body.as_object().expect("section object").keys() {
            keys.push(format!("{section}.{key}"));
        }
    }
    keys.sort();
    let mut expected = vec![
        "server.host", "server.port", "server.dedicated_cpu", "server.num_cpus",
        "model.size", "model.device", "model.model_dir", "model.supported_formats",
        "deployment.num_replicas", "deployment.cpu_per_replica", "deployment.gpu_per_replica",
        "logging.level", "logging.format", "logging.file",
    ];
    expected.sort();
    assert_eq!(keys, expected);
}

#[test]
fn missing_explicit_config_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope.json");
    let err = Config::load(Some(&missing)).expect_err("missing file");
    assert!(err.to_string().contains("nope.json"), "{err}");
}

#[test]
fn explicit_config_errors_name_the_file_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.json");
    std::fs::write(&path, r#"{"server": {"port": 70000}}"#).expect("write");
    let err = Config::load(Some(&path)).expect_err("bad port");
    assert_eq!(
        err.to_string(),
        format!("{}: server.port: invalid value 70000 (expected 0-65535)", path.display())
    );
}

#[test]
fn docs_mention_every_key() {
    let doc = std::fs::read_to_string(CONFIG_DOC).expect("read docs/configuration.md");
    let defaults = serde_json::to_value(Config::default()).expect("serialise defaults");
    let mut missing = Vec::new();
    for (section, body) in defaults.as_object().expect("object") {
        if !doc.contains(&format!("`{section}`")) {
            missing.push(section.clone());
        }
        for key in body.as_object().expect("section object").keys() {
            let full = format!("{section}.{key}");
            if !doc.contains(&format!("`{full}`")) {
                missing.push(full);
            }
        }
    }
    assert!(missing.is_empty(), "docs/configuration.md does not mention: {missing:?}");
    for needle in ["WHISPER_SERVE__", "WHISPER_SERVE_CONFIG", "%(asctime)s", "gpu_per_replica"] {
        assert!(doc.contains(needle), "docs/configuration.md does not mention {needle}");
    }
}
