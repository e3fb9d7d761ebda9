use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn no_env() -> Vec<(String, String)> {
    Vec::new()
}

/// Loads `json` as the file; returns the error message, which must exist.
fn file_err(json: &str) -> String {
    match Config::from_sources(Some(json), no_env()) {
        Ok(c) => panic!("expected an error for {json}, got {c:?}"),
        Err(e) => e.to_string(),
    }
}

fn env_err(pairs: &[(&str, &str)]) -> String {
    match Config::from_sources(None, env(pairs)) {
        Ok(c) => panic!("expected an error for {pairs:?}, got {c:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn defaults_are_valid() {
    Config::default().validate().expect("defaults valid");
    let c = Config::from_sources(None, no_env()).expect("no sources");
    assert_eq!(c, Config::default());
}

#[test]
fn original_python_file_loads() {
    let json = r#"{
        "server": {"host": "0.0.0.0", "port": 8000, "dedicated_cpu": false, "num_cpus": 2},
        "model": {"size": "base", "device": "auto", "model_dir": "models",
                  "supported_formats": [".wav", ".mp3", ".m4a", ".ogg", ".flac"]},
        "deployment": {"num_replicas": 1, "cpu_per_replica": 2, "gpu_per_replica": 0,
                       "mode": "local", "max_concurrent_queries": 10},
        "logging": {"level": "INFO",
                    "format": "%(asctime)s - %(name)s - %(levelname)s - %(message)s",
                    "file": "logs/whisper_service.log"}
    }"#;
    let c = Config::from_sources(Some(json), no_env()).expect("original file");
    assert_eq!(c.server.num_cpus, 2);
    assert_eq!(c.deployment.cpu_per_replica, 2.0);
    assert_eq!(c.deployment.mode.as_deref(), Some("local"));
    assert_eq!(c.deployment.max_concurrent_queries, Some(10));
    assert_eq!(c.logging.file_path(), Some(Path::new("logs/whisper_service.log")));
    // Sections the original file lacks keep their defaults.
    assert_eq!(c.limits, LimitsConfig::default());
    assert_eq!(c.engine, EngineConfig::default());
}

#[test]
fn file_merges_over_defaults_key_by_key() {
    let c = Config::from_sources(Some(r#"{"server": {"port": 9001}, "limits": {"max_queue": 3}}"#), no_env())
        .expect("partial file");
    assert_eq!(c.server.port, 9001);
    assert_eq!(c.server.host, "0.0.0.0", "sibling keys keep defaults");
    assert_eq!(c.limits.max_queue, 3);
    assert_eq!(c.limits.max_upload_mb, LimitsConfig::default().max_upload_mb);
    assert_eq!(c.model, ModelConfig::default());
}

#[test]
fn env_overrides_file() {
    let c = Config::from_sources(
        Some(r#"{"server": {"port": 9001, "host": "127.0.0.1"}}"#),
        env(&[("WHISPER_SERVE__SERVER__PORT", "9000"), ("UNRELATED", "x")]),
    )
    .expect("env over file");
    assert_eq!(c.server.port, 9000);
    assert_eq!(c.server.host, "127.0.0.1");
}

#[test]
fn env_overrides_supported_formats_and_limits() {
    let c = Config::from_sources(
        None,
        env(&[
            ("WHISPER_SERVE__MODEL__SUPPORTED_FORMATS", r#"[".wav",".mp3"]"#),
            ("WHISPER_SERVE__LIMITS__MAX_QUEUE", "2"),
        ]),
    )
    .expect("env");
    assert_eq!(c.model.supported_formats, vec![".wav", ".mp3"]);
    assert_eq!(c.limits.max_queue, 2);
}

#[test]
fn env_section_and_key_are_case_insensitive_and_strings_stay_strings() {
    let c = Config::from_sources(
        None,
        env(&[
            ("WHISPER_SERVE__server__Host", "127.0.0.1"),
            ("WHISPER_SERVE__MODEL__SIZE", "./my-model"),
            ("WHISPER_SERVE__LOGGING__FILE", "/tmp/x.log"),
            ("WHISPER_SERVE__DEPLOYMENT__MODE", "local"),
            ("WHISPER_SERVE__ENGINE__COMPUTE_TYPE", "\"int8\""),
        ]),
    )
    .expect("env");
    assert_eq!(c.server.host, "127.0.0.1");
    assert_eq!(c.model.size, "./my-model");
    assert_eq!(c.logging.file_path(), Some(Path::new("/tmp/x.log")));
    assert_eq!(c.deployment.mode.as_deref(), Some("local"));
    assert_eq!(c.engine.compute_type, "int8");
}

#[test]
fn env_unknown_key_or_section_rejected_naming_the_variable() {
    let m = env_err(&[("WHISPER_SERVE__SERVER__PROT", "1")]);
    assert!(m.contains("WHISPER_SERVE__SERVER__PROT") && m.contains("server.prot"), "{m}");
    let m = env_err(&[("WHISPER_SERVE__SRVER__PORT", "1")]);
    assert!(m.contains("WHISPER_SERVE__SRVER__PORT") && m.contains("srver"), "{m}");
    let m = env_err(&[("WHISPER_SERVE__PORT", "1")]);
    assert!(m.contains("WHISPER_SERVE__PORT"), "{m}");
}

#[test]
fn env_type_error_names_key_and_variable() {
    let m = env_err(&[("WHISPER_SERVE__SERVER__PORT", "abc")]);
    assert!(m.contains("WHISPER_SERVE__SERVER__PORT") && m.contains("server.port"), "{m}");
}

#[test]
fn port_70000_rejected() {
    let m = file_err(r#"{"server": {"port": 70000}}"#);
    assert_eq!(m, "config file: server.port: invalid value 70000 (expected 0-65535)");
    let m = env_err(&[("WHISPER_SERVE__SERVER__PORT", "70000")]);
    assert!(m.starts_with("env WHISPER_SERVE__SERVER__PORT: server.port: invalid value 70000"), "{m}");
    let m = file_err(r#"{"server": {"port": -1}}"#);
    assert!(m.contains("server.port"), "{m}");
}

#[test]
fn port_zero_allowed() {
    let c = Config::from_sources(Some(r#"{"server": {"port": 0}}"#), no_env()).expect("port 0");
    assert_eq!(c.server.port, 0);
}

#[test]
fn size_huge_rejected_listing_names() {
    let m = file_err(r#"{"model": {"size": "huge"}}"#);
    assert!(m.contains("model.size") && m.contains("\"huge\""), "{m}");
    assert!(m.contains("large-v3") && m.contains("tiny.en"), "{m}");
    for ok in ["turbo", "./models/x", "/opt/m", "~/m", "org/name"] {
        let json = format!(r#"{{"model": {{"size": "{ok}"}}}}"#);
        Config::from_sources(Some(&json), no_env()).expect(ok);
    }
}

#[test]
fn device_tpu_rejected() {
    let m = file_err(r#"{"model": {"device": "tpu"}}"#);
    assert!(m.contains("model.device") && m.contains("tpu"), "{m}");
    let c = Config::from_sources(Some(r#"{"model": {"device": "cuda"}}"#), no_env()).expect("cuda");
    assert_eq!(c.model.device, DeviceKind::Cuda);
}

#[test]
fn num_replicas_zero_rejected() {
    let m = file_err(r#"{"deployment": {"num_replicas": 0}}"#);
    assert!(m.contains("deployment.num_replicas"), "{m}");
}

#[test]
fn format_without_dot_rejected() {
    let m = file_err(r#"{"model": {"supported_formats": [".wav", "wav"]}}"#);
    assert!(m.contains("model.supported_formats") && m.contains("\"wav\""), "{m}");
    let m = file_err(r#"{"model": {"supported_formats": ["."]}}"#);
    assert!(m.contains("model.supported_formats"), "{m}");
    let m = file_err(r#"{"model": {"supported_formats": [".wav", 3]}}"#);
    assert!(m.contains("model.supported_formats[1]"), "{m}");
}

#[test]
fn unknown_key_rejected() {
    let m = file_err(r#"{"model": {"sise": "base"}}"#);
    assert!(m.contains("model.sise"), "{m}");
    assert!(m.starts_with("config file: "), "{m}");
}

#[test]
fn unknown_section_rejected() {
    let m = file_err(r#"{"modle": {"size": "base"}}"#);
    assert!(m.contains("modle"), "{m}");
}

#[test]
fn other_bad_values_rejected() {
    for (json, key) in [
        (r#"{"deployment": {"cpu_per_replica": 0}}"#, "deployment.cpu_per_replica"),
        (r#"{"deployment": {"gpu_per_replica": -1}}"#, "deployment.gpu_per_replica"),
        (r#"{"deployment": {"mode": "serverless"}}"#, "deployment.mode"),
        (r#"{"deployment": {"max_concurrent_queries": 0}}"#, "deployment.max_concurrent_queries"),
        (r#"{"logging": {"level": "LOUD"}}"#, "logging.level"),
        (r#"{"limits": {"max_queue": 0}}"#, "limits.max_queue"),
        (r#"{"limits": {"max_upload_mb": 0}}"#, "limits.max_upload_mb"),
        (r#"{"limits": {"max_audio_seconds": 0}}"#, "limits.max_audio_seconds"),
        (r#"{"limits": {"request_timeout_s": 0}}"#, "limits.request_timeout_s"),
        (r#"{"engine": {"compute_type": "int4"}}"#, "engine.compute_type"),
        (r#"{"decoding": {"beam_size": 0}}"#, "decoding.beam_size"),
        (r#"{"decoding": {"beam_size": 17}}"#, "decoding.beam_size"),
        (r#"{"decoding": {"task": "summarise"}}"#, "decoding.task"),
        (r#"{"decoding": {"temperatures": []}}"#, "decoding.temperatures"),
        (r#"{"server": {"host": ""}}"#, "server.host"),
        (r#"{"server": {"dedicated_cpu": "yes"}}"#, "server.dedicated_cpu"),
        (r#"{"server": {"wyoming_port": 70000}}"#, "server.wyoming_port"),
        (r#"{"server": {"wyoming_port": 10300, "wyoming_host": " "}}"#, "server.wyoming_host"),
        (r#"{"server": {"wyoming_timeout_s": 0}}"#, "server.wyoming_timeout_s"),
        (r#"{"server": null}"#, "server"),
    ] {
        let m = file_err(json);
        assert!(m.contains(key), "{json}: {m}");
    }
    for level in ["debug", "Warning", "WARN", "critical", "ERROR"] {
        let json = format!(r#"{{"logging": {{"level": "{level}"}}}}"#);
        Config::from_sources(Some(&json), no_env()).expect(level);
    }
}

#[test]
fn syntax_error_and_non_object_rejected() {
    let m = file_err(r#"{"server": {"port": 8000,}}"#);
    assert!(m.starts_with("config file: invalid JSON"), "{m}");
    let m = file_err("[1, 2]");
    assert!(m.contains("object"), "{m}");
}

#[test]
fn validate_on_bare_config_names_key() {
    let mut c = Config::default();
    c.model.size = "huge".into();
    let e = c.validate().expect_err("huge");
    assert_eq!(e.key(), Some("model.size"));
}

#[test]
fn wyoming_is_off_and_local_by_default_and_keys_keep_it_local() {
    let s = ServerConfig::default();
    assert_eq!((s.wyoming_port, s.wyoming_host.as_str(), s.wyoming_allow_unauthenticated, s.wyoming_timeout_s), (None, "127.0.0.1", false, 60));
    let c = Config::from_sources(None, env(&[("WHISPER_SERVE__SERVER__WYOMING_PORT", "10300")])).expect("env port");
    assert_eq!(c.server.wyoming_port, Some(10300));
    let mut s = ServerConfig { wyoming_port: Some(0), wyoming_host: "0.0.0.0".into(), ..Default::default() };
    s.check_wyoming_keys(false).expect("no keys: any host");
    let e = s.check_wyoming_keys(true).expect_err("keys and a public host");
    assert_eq!(e.key(), Some("server.wyoming_host"));
    assert!(e.to_string().contains("wyoming_allow_unauthenticated"), "{e}");
    for host in ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"] {
        s.wyoming_host = host.into();
        s.check_wyoming_keys(true).expect(host);
    }
    s.wyoming_host = "my-nas.local".into();
    assert!(s.check_wyoming_keys(true).is_err());
    s.wyoming_allow_unauthenticated = true;
    s.check_wyoming_keys(true).expect("allowed");
    s.wyoming_port = None;
    s.wyoming_allow_unauthenticated = false;
    s.check_wyoming_keys(true).expect("off");
}

#[test]
fn threads_explicit_wins() {
    let mut c = Config::default();
    c.engine.threads_per_replica = 3;
    c.server.dedicated_cpu = true;
    assert_eq!(c.threads_per_replica(64), 3);
}

#[test]
fn threads_dedicated_split_budget() {
    let mut c = Config::default();
    c.server.dedicated_cpu = true;
    c.deployment.num_replicas = 3;
    assert_eq!(c.threads_per_replica(8), 2); // machine cores: 8 / 3
    c.server.num_cpus = 12;
    assert_eq!(c.threads_per_replica(8), 4); // num_cpus wins: 12 / 3
    c.deployment.num_replicas = 16;
    assert_eq!(c.threads_per_replica(8), 1); // never 0
}

#[test]
fn threads_per_replica_from_cpu_per_replica() {
    let mut c = Config::default();
    c.deployment.num_replicas = 1;
    c.deployment.cpu_per_replica = 2.0;
    assert_eq!(c.threads_per_replica(8), 2);
    assert_eq!(c.threads_per_replica(1), 1); // capped by the machine
    c.server.num_cpus = 2; // the original file
    assert_eq!(c.threads_per_replica(64), 2);
    c.server.num_cpus = 0;
    c.deployment.num_replicas = 3;
    assert_eq!(c.threads_per_replica(8), 2); // 3 × 2 ≤ 8
    c.deployment.num_replicas = 4;
    c.deployment.cpu_per_replica = 4.0;
    assert_eq!(c.threads_per_replica(8), 2); // capped: 4 × 2 = 8
    c.deployment.cpu_per_replica = 0.5;
    assert_eq!(c.threads_per_replica(8), 1); // Ray's fractional CPU
    c.deployment.cpu_per_replica = 1.5;
    assert_eq!(c.threads_per_replica(8), 2); // rounded
    c.deployment.num_replicas = 16;
    c.deployment.cpu_per_replica = 2.0;
    assert_eq!(c.threads_per_replica(8), 1); // more replicas than cores share
    assert_eq!(c.threads_per_replica(0), 1); // unknown core count
}

#[test]
fn compute_type_auto_resolves() {
    let mut c = Config::default();
    assert_eq!(c.resolved_compute_type(false), "int8");
    assert_eq!(c.resolved_compute_type(true), "float16");
    c.engine.compute_type = "int8_float16".into();
    assert_eq!(c.resolved_compute_type(true), "int8_float16");
}
