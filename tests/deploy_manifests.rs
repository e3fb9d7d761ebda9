//! The deployment files (deploy/kubernetes/, docker-compose.yml, Dockerfile,
//! Dockerfile.cuda) checked against the binary: its config (the ConfigMap's
//! config.json must load with `Config::from_sources`, with each container's
//! `WHISPER_SERVE__*` variables over it), its ports and health paths, its
//! command line (each container's and service's command is parsed by the
//! binary's own clap parser), and the JetStream names the workers use. No
//! network, no Docker, no cluster: the files are parsed (multi-document
//! YAML) and the Kubernetes objects deserialised into `k8s-openapi` types,
//! fields the types do not know reported.
//!
//! The checks collect problems instead of panicking at the first, so the
//! tests at the end can break a file on purpose and see the problem found.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Namespace, PodSpec, Probe, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_yaml_ng::Value;

use clap::Parser;
use whisper_serve::api::{HEALTH_PATH, LIVENESS_PATH, METRICS_PATH};
use whisper_serve::cli::{Cli, Command, ModelsCommand};
use whisper_serve::config::{Config, DeviceKind, StorageKind};

const K8S_DIR: &str = "deploy/kubernetes";
/// Helm values for the NATS chart: not a manifest.
const NATS_VALUES: &str = "nats-values.yaml";
/// The binary's file name (the image's ENTRYPOINT).
const BINARY: &str = "whisper-serve";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let path = root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every YAML document of `text` (empty documents dropped), `<<` merge keys applied.
fn yaml_documents(file: &str, text: &str) -> Vec<Value> {
    let mut docs = Vec::new();
    for (i, de) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let mut v = <Value as serde::Deserialize>::deserialize(de)
            .unwrap_or_else(|e| panic!("{file}: document {}: {e}", i + 1));
        v.apply_merge()
            .unwrap_or_else(|e| panic!("{file}: document {}: {e}", i + 1));
        if !v.is_null() {
            docs.push(v);
        }
    }
    docs
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            yaml_files(&path, out);
        } else if matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
            out.push(path);
        }
    }
}

fn value_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    let mut cur = v;
    for key in path {
        cur = cur.get(*key)?;
    }
    Some(cur)
}

fn str_at(v: &Value, path: &[&str]) -> Option<String> {
    match value_at(v, path)? {
        Value::String(x) => Some(x.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn bool_at(v: &Value, path: &[&str]) -> Option<bool> {
    value_at(v, path).and_then(Value::as_bool)
}

fn int_at(v: &Value, path: &[&str]) -> Option<i64> {
    match value_at(v, path)? {
        Value::Number(n) => n.as_i64(),
        Value::String(x) => x.trim().parse().ok(),
        _ => None,
    }
}

// ---------------------------------------------------------------- Kubernetes

#[derive(Clone)]
struct K8s {
    namespaces: Vec<(String, Namespace)>,
    config_maps: Vec<(String, ConfigMap)>,
    deployments: Vec<(String, Deployment)>,
    services: Vec<(String, Service)>,
    pdbs: Vec<(String, PodDisruptionBudget)>,
    /// keda.sh ScaledObjects, checked as plain YAML.
    scaled_objects: Vec<(String, Value)>,
    nats_values: Value,
}

/// Keys of `original` that are gone from `round_trip` (the document
/// deserialised into its Kubernetes type and serialised again): fields the
/// type does not have, such as a misspelt `readinesProbe`, which serde would
/// otherwise drop without a word.
fn dropped_fields(original: &Value, round_trip: &Value, path: &str, out: &mut Vec<String>) {
    match (original, round_trip) {
        (Value::Mapping(a), Value::Mapping(b)) => {
            for (k, v) in a {
                let key = k.as_str().map(str::to_string).unwrap_or_else(|| format!("{k:?}"));
                let here = if path.is_empty() {
                    key
                } else {
                    format!("{path}.{key}")
                };
                match b.get(k) {
                    Some(w) => dropped_fields(v, w, &here, out),
                    None => out.push(here),
                }
            }
        }
        (Value::Sequence(a), Value::Sequence(b)) => {
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                dropped_fields(v, w, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn typed<T: serde::de::DeserializeOwned + serde::Serialize>(file: &str, doc: &Value) -> T {
    let what = format!(
        "{file}: {} {:?}",
        str_at(doc, &["kind"]).unwrap_or_default(),
        str_at(doc, &["metadata", "name"])
    );
    let obj: T = serde_yaml_ng::from_value(doc.clone()).unwrap_or_else(|e| panic!("{what}: {e}"));
    let again = serde_yaml_ng::to_value(&obj).unwrap_or_else(|e| panic!("{what}: {e}"));
    let mut dropped = Vec::new();
    dropped_fields(doc, &again, "", &mut dropped);
    assert!(dropped.is_empty(), "{what}: unknown fields {dropped:?}");
    obj
}

fn load_k8s() -> K8s {
    let mut files = Vec::new();
    yaml_files(&root().join(K8S_DIR), &mut files);
    assert!(!files.is_empty(), "no YAML files under {K8S_DIR}");
    let mut k = K8s {
        namespaces: vec![],
        config_maps: vec![],
        deployments: vec![],
        services: vec![],
        pdbs: vec![],
        scaled_objects: vec![],
        nats_values: Value::Null,
    };
    for path in files {
        let rel = path.strip_prefix(root()).unwrap().display().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        let docs = yaml_documents(&rel, &text);
        if path.file_name().and_then(|n| n.to_str()) == Some(NATS_VALUES) {
            assert_eq!(docs.len(), 1, "{rel}: one document of Helm values");
            k.nats_values = docs.into_iter().next().unwrap();
            continue;
        }
        assert!(!docs.is_empty(), "{rel}: no YAML document");
        for doc in docs {
            let kind = str_at(&doc, &["kind"]).unwrap_or_else(|| panic!("{rel}: a document without `kind`"));
            let api =
                str_at(&doc, &["apiVersion"]).unwrap_or_else(|| panic!("{rel}: {kind} without apiVersion"));
            match (api.as_str(), kind.as_str()) {
                ("v1", "Namespace") => k.namespaces.push((rel.clone(), typed(&rel, &doc))),
                ("v1", "ConfigMap") => k.config_maps.push((rel.clone(), typed(&rel, &doc))),
                ("v1", "Service") => k.services.push((rel.clone(), typed(&rel, &doc))),
                ("apps/v1", "Deployment") => k.deployments.push((rel.clone(), typed(&rel, &doc))),
                ("policy/v1", "PodDisruptionBudget") => k.pdbs.push((rel.clone(), typed(&rel, &doc))),
                ("keda.sh/v1alpha1", "ScaledObject") => k.scaled_objects.push((rel.clone(), doc)),
                other => panic!("{rel}: {other:?} is not checked by this test; add checks for it"),
            }
        }
    }
    assert!(!k.nats_values.is_null(), "{K8S_DIR}/{NATS_VALUES} is missing");
    k
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Gateway,
    Worker,
}

/// The subcommand words of a container: command + args, less the binary.
fn words(c: &Container) -> Vec<String> {
    let mut w: Vec<String> = c.command.clone().unwrap_or_default();
    w.extend(c.args.clone().unwrap_or_default());
    if w.first()
        .is_some_and(|first| Path::new(first).file_name().and_then(|n| n.to_str()) == Some(BINARY))
    {
        w.remove(0);
    }
    w
}

/// The value of `--NAME VALUE` or `--NAME=VALUE` among the words.
fn flag_arg(words: &[String], name: &str) -> Option<String> {
    let eq = format!("{name}=");
    words.iter().enumerate().find_map(|(i, w)| {
        if w == name {
            words.get(i + 1).cloned()
        } else {
            w.strip_prefix(eq.as_str()).map(str::to_string)
        }
    })
}

/// The words as the binary's own command line parses them.
fn parse_cli(words: &[String]) -> Result<Cli, String> {
    Cli::try_parse_from(std::iter::once(BINARY.to_string()).chain(words.iter().cloned()))
        .map_err(|e| format!("`{BINARY} {}` does not parse: {}", words.join(" "), e.kind()))
}

/// Problems with a command line meant to run `want` (`gateway`, `worker`,
/// `serve`, `models pull`), judged by the binary's clap parser.
fn check_cli(at: &str, words: &[String], want: &str, problems: &mut Vec<String>) {
    match parse_cli(words) {
        Err(e) => problems.push(format!("{at}: {e}")),
        Ok(cli) => {
            let got = match &cli.command {
                Command::Gateway { .. } => "gateway",
                Command::Worker { .. } => "worker",
                Command::Serve { .. } => "serve",
                Command::Models {
                    command: ModelsCommand::Pull { .. },
                } => "models pull",
                _ => "another command",
            };
            if got != want {
                problems.push(format!("{at}: runs {got}, want {want}"));
            }
            if cli.config.is_none() {
                problems.push(format!("{at}: no --config"));
            }
        }
    }
}

fn config_arg(words: &[String]) -> Option<String> {
    flag_arg(words, "--config")
}

fn labels_match(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn selector_labels(sel: &LabelSelector) -> Option<BTreeMap<String, String>> {
    // matchExpressions are not used here; refuse them rather than mis-read them.
    if sel.match_expressions.as_ref().is_some_and(|e| !e.is_empty()) {
        return None;
    }
    sel.match_labels.clone()
}

fn pod_labels(d: &Deployment) -> BTreeMap<String, String> {
    d.spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default()
}

fn namespace_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<String> {
    meta.namespace.clone()
}

/// Millicores of a CPU quantity ("2", "1.5", "500m").
fn cpu_millis(q: &Quantity) -> Option<i64> {
    let t = q.0.trim();
    if let Some(m) = t.strip_suffix('m') {
        return m.parse().ok();
    }
    t.parse::<f64>().ok().map(|c| (c * 1000.0).round() as i64)
}

/// The config a container runs with: the ConfigMap file its `--config`
/// points at (through a volume mount), with its literal
/// `WHISPER_SERVE__*` environment variables over it.
fn container_config(k: &K8s, ns: Option<&str>, pod: &PodSpec, c: &Container) -> Result<Config, String> {
    let w = words(c);
    let path = config_arg(&w).ok_or_else(|| format!("container {}: no --config argument", c.name))?;
    let path = Path::new(&path);
    let mounts = c.volume_mounts.clone().unwrap_or_default();
    let (mount, key) = mounts
        .iter()
        .filter_map(|m| {
            let mp = Path::new(&m.mount_path);
            match &m.sub_path {
                Some(sub) if mp == path => Some((m, sub.clone())),
                Some(_) => None,
                None => path
                    .strip_prefix(mp)
                    .ok()
                    .map(|rel| (m, rel.display().to_string())),
            }
        })
        .max_by_key(|(m, _)| m.mount_path.len())
        .ok_or_else(|| {
            format!(
                "container {}: no volume is mounted at --config {}",
                c.name,
                path.display()
            )
        })?;
    let volume = pod
        .volumes
        .as_ref()
        .and_then(|v| v.iter().find(|v| v.name == mount.name))
        .ok_or_else(|| format!("container {}: volume {} is not defined", c.name, mount.name))?;
    let cm_src = volume
        .config_map
        .as_ref()
        .ok_or_else(|| format!("container {}: volume {} is not a configMap", c.name, mount.name))?;
    let key = match &cm_src.items {
        Some(items) => items
            .iter()
            .find(|i| i.path == key)
            .map(|i| i.key.clone())
            .ok_or_else(|| format!("configMap volume {}: no item for {key}", mount.name))?,
        None => key,
    };
    let (_, cm) = k
        .config_maps
        .iter()
        .find(|(_, cm)| {
            cm.metadata.name.as_deref() == Some(cm_src.name.as_str())
                && namespace_of(&cm.metadata).as_deref() == ns
        })
        .ok_or_else(|| {
            format!(
                "container {}: ConfigMap {} is not among the manifests",
                c.name, cm_src.name
            )
        })?;
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get(&key))
        .ok_or_else(|| format!("ConfigMap {} has no key {key}", cm_src.name))?;
    let env: Vec<(String, String)> = c
        .env
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| e.value.map(|v| (e.name, v)))
        .collect();
    Config::from_sources(Some(text.as_str()), env).map_err(|e| {
        format!(
            "container {}: ConfigMap {}/{key} with the container's env: {e}",
            c.name, cm_src.name
        )
    })
}

/// The container port a probe (or Service) port refers to.
fn resolve_port(c: &Container, port: &IntOrString) -> Option<i32> {
    let ports = c.ports.clone().unwrap_or_default();
    match port {
        IntOrString::Int(n) => ports.iter().any(|p| p.container_port == *n).then_some(*n),
        IntOrString::String(name) => ports
            .iter()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| p.container_port),
    }
}

fn check_probe(
    problems: &mut Vec<String>,
    what: &str,
    probe: Option<&Probe>,
    c: &Container,
    want_path: &str,
    want_port: i32,
) {
    let Some(probe) = probe else {
        problems.push(format!("{what}: missing"));
        return;
    };
    let Some(http) = &probe.http_get else {
        problems.push(format!("{what}: not an httpGet probe"));
        return;
    };
    if http.path.as_deref() != Some(want_path) {
        problems.push(format!(
            "{what}: path {:?}, the binary serves {want_path:?}",
            http.path
        ));
    }
    match resolve_port(c, &http.port) {
        Some(p) if p == want_port => {}
        other => problems.push(format!(
            "{what}: port {:?} resolves to {other:?}, the binary listens on {want_port}",
            http.port
        )),
    }
}

struct Workload {
    file: String,
    name: String,
    namespace: Option<String>,
    role: Role,
    labels: BTreeMap<String, String>,
    replicas: Option<i32>,
    config: Config,
    port: i32,
    container: Container,
}

/// The port the binary listens on for `role`: `--port` (which `gateway` and
/// `worker` accept) over the config's server.port / cluster.worker_port.
fn expected_port(role: Role, cfg: &Config, words: &[String]) -> i32 {
    if let Some(p) = flag_arg(words, "--port") {
        return p.parse().unwrap_or(-1);
    }
    match role {
        Role::Gateway => cfg.server.port as i32,
        Role::Worker => cfg.cluster.worker_port as i32,
    }
}

/// Checks one Deployment; returns what later checks need about it.
fn check_deployment(k: &K8s, file: &str, d: &Deployment, problems: &mut Vec<String>) -> Option<Workload> {
    let name = d.metadata.name.clone().unwrap_or_default();
    let at = format!("{file}: Deployment {name}");
    let ns = namespace_of(&d.metadata);
    let spec = &d.spec;
    let labels = pod_labels(d);
    match selector_labels(&spec.selector) {
        Some(sel) if labels_match(&sel, &labels) => {}
        sel => problems.push(format!(
            "{at}: selector {sel:?} does not match the pod labels {labels:?}"
        )),
    }
    let Some(pod) = &spec.template.spec else {
        problems.push(format!("{at}: no pod spec"));
        return None;
    };

    let mains: Vec<(&Container, Role)> = pod
        .containers
        .iter()
        .filter_map(|c| match words(c).first().map(String::as_str) {
            Some("gateway") => Some((c, Role::Gateway)),
            Some("worker") => Some((c, Role::Worker)),
            _ => None,
        })
        .collect();
    let [(c, role)] = mains[..] else {
        problems.push(format!(
            "{at}: expected one container running `{BINARY} gateway` or `{BINARY} worker`, found {}",
            mains.len()
        ));
        return None;
    };
    let at = format!("{at}: container {}", c.name);
    check_cli(
        &at,
        &words(c),
        if role == Role::Gateway {
            "gateway"
        } else {
            "worker"
        },
        problems,
    );
    let cfg = match container_config(k, ns.as_deref(), pod, c) {
        Ok(cfg) => cfg,
        Err(e) => {
            problems.push(format!("{at}: {e}"));
            return None;
        }
    };
    let port = expected_port(role, &cfg, &words(c));
    if port == 0 {
        problems.push(format!(
            "{at}: the config's port for {role:?} is 0 (any free port): probes cannot reach it"
        ));
    }

    // Ports: the container declares exactly the binary's port for its role.
    let ports = c.ports.clone().unwrap_or_default();
    if ports.is_empty() {
        problems.push(format!("{at}: declares no port (the binary listens on {port})"));
    }
    for p in &ports {
        if p.container_port != port {
            problems.push(format!(
                "{at}: containerPort {} ({:?}), the {role:?} listens on {port}",
                p.container_port, p.name
            ));
        }
    }

    check_probe(
        problems,
        &format!("{at}: readinessProbe"),
        c.readiness_probe.as_ref(),
        c,
        HEALTH_PATH,
        port,
    );
    check_probe(
        problems,
        &format!("{at}: livenessProbe"),
        c.liveness_probe.as_ref(),
        c,
        LIVENESS_PATH,
        port,
    );
    if let Some(sp) = &c.startup_probe {
        let path = sp
            .http_get
            .as_ref()
            .and_then(|h| h.path.clone())
            .unwrap_or_default();
        let want = if path == HEALTH_PATH {
            HEALTH_PATH
        } else {
            LIVENESS_PATH
        };
        check_probe(problems, &format!("{at}: startupProbe"), Some(sp), c, want, port);
    }

    // Prometheus scrape annotations, where given, name the metrics route.
    let annotations = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.clone())
        .unwrap_or_default();
    if let Some(p) = annotations.get("prometheus.io/path") {
        if p != METRICS_PATH {
            problems.push(format!(
                "{at}: prometheus.io/path {p:?}, the binary serves {METRICS_PATH:?}"
            ));
        }
    }
    if let Some(p) = annotations.get("prometheus.io/port") {
        if p.parse::<i32>().ok() != Some(port) {
            problems.push(format!(
                "{at}: prometheus.io/port {p:?}, the {role:?} listens on {port}"
            ));
        }
    }

    // Graceful shutdown fits in the grace period.
    let grace = pod.termination_grace_period_seconds.unwrap_or(30);
    if grace <= cfg.server.shutdown_timeout_s as i64 {
        problems.push(format!(
            "{at}: terminationGracePeriodSeconds {grace} <= server.shutdown_timeout_s {}",
            cfg.server.shutdown_timeout_s
        ));
    }

    // Non-root, as the image's USER.
    let pod_sc = pod.security_context.as_ref();
    let c_sc = c.security_context.as_ref();
    let non_root = c_sc
        .and_then(|s| s.run_as_non_root)
        .or(pod_sc.and_then(|s| s.run_as_non_root));
    if non_root != Some(true) {
        problems.push(format!("{at}: runAsNonRoot is not true"));
    }
    let uid = c_sc
        .and_then(|s| s.run_as_user)
        .or(pod_sc.and_then(|s| s.run_as_user));
    let image_uid = dockerfile_user(&read("Dockerfile"));
    if uid.is_some_and(|u| Some(u) != image_uid) {
        problems.push(format!(
            "{at}: runAsUser {uid:?}, the image's USER is {image_uid:?}"
        ));
    }

    // Every container and initContainer of the binary uses one image.
    let image = c.image.clone().unwrap_or_default();
    for other in pod.init_containers.iter().flatten().chain(pod.containers.iter()) {
        if other.image.as_deref() != Some(image.as_str()) {
            problems.push(format!(
                "{at}: container {} uses image {:?}, not {image:?}",
                other.name, other.image
            ));
        }
    }

    if role == Role::Worker {
        check_worker(k, &at, ns.as_deref(), pod, c, &cfg, problems);
    }

    Some(Workload {
        file: file.to_string(),
        name,
        namespace: ns,
        role,
        labels,
        replicas: spec.replicas,
        config: cfg,
        port,
        container: c.clone(),
    })
}

fn check_worker(
    k: &K8s,
    at: &str,
    ns: Option<&str>,
    pod: &PodSpec,
    c: &Container,
    cfg: &Config,
    problems: &mut Vec<String>,
) {
    let d = &cfg.deployment;
    let res = c.resources.clone().unwrap_or_default();
    let requests = res.requests.unwrap_or_default();
    let limits = res.limits.unwrap_or_default();

    // CPU: num_replicas × cpu_per_replica.
    let want_cpu = (d.num_replicas as f64 * d.cpu_per_replica * 1000.0).round() as i64;
    for (what, map) in [("requests", &requests), ("limits", &limits)] {
        let got = map.get("cpu").and_then(cpu_millis);
        if got != Some(want_cpu) {
            problems.push(format!(
                "{at}: resources.{what}.cpu = {:?}, want num_replicas × cpu_per_replica = {} × {} = {}m",
                map.get("cpu").map(|q| &q.0),
                d.num_replicas,
                d.cpu_per_replica,
                want_cpu
            ));
        }
    }
    if !requests.contains_key("memory") || !limits.contains_key("memory") {
        problems.push(format!("{at}: no memory request and limit"));
    }

    // GPUs: as many as the replicas need (gpu::placement) when the model runs on CUDA; none otherwise.
    let gpus = limits
        .get("nvidia.com/gpu")
        .map(|q| q.0.trim().parse::<i64>().unwrap_or(-1));
    match cfg.model.device {
        DeviceKind::Cuda => {
            let per = whisper_serve::gpu::placement::per_device(d.gpu_per_replica).unwrap_or(d.num_replicas as usize);
            let want = (d.num_replicas as usize).div_ceil(per.max(1)) as i64;
            if want < 1 {
                problems.push(format!(
                    "{at}: model.device is cuda but gpu_per_replica is {}",
                    d.gpu_per_replica
                ));
            }
            if gpus != Some(want) {
                problems.push(format!(
                    "{at}: limits nvidia.com/gpu = {gpus:?}, want ceil(num_replicas / replicas per GPU) for {} × {} = {want}",
                    d.num_replicas, d.gpu_per_replica
                ));
            }
        }
        DeviceKind::Cpu | DeviceKind::Auto => {
            if gpus.is_some() {
                problems.push(format!(
                    "{at}: asks nvidia.com/gpu but model.device is {:?}",
                    cfg.model.device
                ));
            }
        }
    }

    // The model: an initContainer pulls model.size into the volume the
    // worker reads as model.model_dir.
    let model_mount = |c: &Container, dir: &Path| {
        c.volume_mounts
            .iter()
            .flatten()
            .find(|m| Path::new(&m.mount_path) == dir)
            .map(|m| m.name.clone())
    };
    let Some(worker_models) = model_mount(c, cfg.model.model_dir.as_path()) else {
        problems.push(format!(
            "{at}: no volume mounted at model.model_dir {}",
            cfg.model.model_dir.display()
        ));
        return;
    };
    let pulls: Vec<&Container> = pod
        .init_containers
        .iter()
        .flatten()
        .filter(|ic| words(ic).starts_with(&["models".to_string(), "pull".to_string()]))
        .collect();
    if pulls.is_empty() {
        problems.push(format!("{at}: no initContainer runs `{BINARY} models pull`"));
    }
    for ic in pulls {
        let w = words(ic);
        let at = format!("{at}: initContainer {}", ic.name);
        check_cli(&at, &w, "models pull", problems);
        if w.get(2) != Some(&cfg.model.size) {
            problems.push(format!(
                "{at}: pulls {:?}, the worker's model.size is {:?}",
                w.get(2),
                cfg.model.size
            ));
        }
        match container_config(k, ns, pod, ic) {
            Ok(icfg) => match model_mount(ic, icfg.model.model_dir.as_path()) {
                Some(v) if v == worker_models => {}
                other => problems.push(format!(
                    "{at}: mounts {other:?} at its model_dir {}, the worker reads volume {worker_models}",
                    icfg.model.model_dir.display()
                )),
            },
            Err(e) => problems.push(format!("{at}: {e}")),
        }
    }
}

/// Host, port of `nats://host:port` (the first URL of a list).
fn nats_host_port(url: &str) -> Option<(String, u16)> {
    let first = url.split(',').next()?.trim();
    let rest = first.split_once("://").map(|(_, r)| r).unwrap_or(first);
    let rest = rest.rsplit('@').next()?;
    match rest.rsplit_once(':') {
        Some((h, p)) => Some((h.to_string(), p.parse().ok()?)),
        None => Some((rest.to_string(), 4222)),
    }
}

fn check_k8s(k: &K8s) -> Vec<String> {
    let mut problems = Vec::new();
    let p = &mut problems;

    // One namespace for everything.
    let ns = match &k.namespaces[..] {
        [(_, n)] => n.metadata.name.clone(),
        _ => {
            p.push(format!("expected one Namespace, found {}", k.namespaces.len()));
            None
        }
    };
    let mut objects: Vec<(String, String, Option<String>)> = Vec::new();
    objects.extend(
        k.config_maps
            .iter()
            .map(|(f, o)| (f.clone(), "ConfigMap".into(), o.metadata.namespace.clone())),
    );
    objects.extend(
        k.deployments
            .iter()
            .map(|(f, o)| (f.clone(), "Deployment".into(), o.metadata.namespace.clone())),
    );
    objects.extend(
        k.services
            .iter()
            .map(|(f, o)| (f.clone(), "Service".into(), o.metadata.namespace.clone())),
    );
    objects.extend(k.pdbs.iter().map(|(f, o)| {
        (
            f.clone(),
            "PodDisruptionBudget".into(),
            o.metadata.namespace.clone(),
        )
    }));
    objects.extend(k.scaled_objects.iter().map(|(f, o)| {
        (
            f.clone(),
            "ScaledObject".into(),
            str_at(o, &["metadata", "namespace"]),
        )
    }));
    for (file, kind, obj_ns) in &objects {
        if obj_ns != &ns {
            p.push(format!(
                "{file}: {kind} in namespace {obj_ns:?}, the Namespace is {ns:?}"
            ));
        }
    }

    // The ConfigMap's config is the repository's, plus the cluster section.
    let repo = Config::from_sources(Some(read("config.json").as_str()), Vec::<(String, String)>::new())
        .expect("config.json");
    for (file, cm) in &k.config_maps {
        for (key, text) in cm.data.iter().flatten().filter(|(key, _)| key.ends_with(".json")) {
            match Config::from_sources(Some(text.as_str()), Vec::<(String, String)>::new()) {
                Err(e) => p.push(format!("{file}: {key}: {e}")),
                Ok(c) => {
                    if c.model.size != repo.model.size {
                        p.push(format!(
                            "{file}: {key}: model.size {:?}, config.json has {:?}",
                            c.model.size, repo.model.size
                        ));
                    }
                    if c.deployment != repo.deployment {
                        p.push(format!(
                            "{file}: {key}: deployment {:?}, config.json has {:?}",
                            c.deployment, repo.deployment
                        ));
                    }
                }
            }
        }
    }

    let workloads: Vec<Workload> = k
        .deployments
        .iter()
        .filter_map(|(f, d)| check_deployment(k, f, d, p))
        .collect();
    let gateways: Vec<&Workload> = workloads.iter().filter(|w| w.role == Role::Gateway).collect();
    let workers: Vec<&Workload> = workloads.iter().filter(|w| w.role == Role::Worker).collect();
    if gateways.is_empty() {
        p.push("no gateway Deployment".into());
    }
    if workers.is_empty() {
        p.push("no worker Deployment".into());
    }
    for w in &workloads {
        for other in &workloads {
            if w.role != other.role && w.labels == other.labels {
                p.push(format!(
                    "{}: {} and {} have the same pod labels",
                    w.file, w.name, other.name
                ));
            }
        }
    }

    // Services: select the gateways only, and reach their port.
    if k.services.is_empty() {
        p.push("no Service for the gateway".into());
    }
    for (file, svc) in &k.services {
        let name = svc.metadata.name.clone().unwrap_or_default();
        let at = format!("{file}: Service {name}");
        let spec = svc.spec.clone().unwrap_or_default();
        let sel = spec.selector.clone().unwrap_or_default();
        let selected: Vec<&Workload> = workloads
            .iter()
            .filter(|w| labels_match(&sel, &w.labels) && w.namespace == svc.metadata.namespace)
            .collect();
        if selected.is_empty() {
            p.push(format!("{at}: selector {sel:?} matches no Deployment's pods"));
        }
        for w in &selected {
            if w.role != Role::Gateway {
                p.push(format!(
                    "{at}: selector {sel:?} also matches the {:?} {}",
                    w.role, w.name
                ));
                continue;
            }
            for sp in spec.ports.iter().flatten() {
                let target = sp.target_port.clone().unwrap_or(IntOrString::Int(sp.port));
                match resolve_port(&w.container, &target) {
                    Some(port) if port == w.port => {}
                    other => p.push(format!(
                        "{at}: port {} targets {target:?} = {other:?}, the gateway {} listens on {}",
                        sp.port, w.name, w.port
                    )),
                }
            }
        }
    }

    // PodDisruptionBudgets: each selects the pods of one role; every Deployment has one.
    let mut covered = vec![false; workloads.len()];
    for (file, pdb) in &k.pdbs {
        let name = pdb.metadata.name.clone().unwrap_or_default();
        let at = format!("{file}: PodDisruptionBudget {name}");
        let spec = pdb.spec.clone().unwrap_or_default();
        let Some(sel) = spec.selector.as_ref().and_then(selector_labels) else {
            p.push(format!("{at}: no matchLabels selector"));
            continue;
        };
        let selected: Vec<usize> = (0..workloads.len())
            .filter(|&i| {
                labels_match(&sel, &workloads[i].labels) && workloads[i].namespace == pdb.metadata.namespace
            })
            .collect();
        if selected.is_empty() {
            p.push(format!("{at}: selector {sel:?} matches no Deployment's pods"));
        }
        let roles: Vec<Role> = selected.iter().map(|&i| workloads[i].role).collect();
        if roles.windows(2).any(|r| r[0] != r[1]) {
            p.push(format!("{at}: selects gateways and workers together"));
        }
        match &spec.min_available {
            Some(IntOrString::Int(n)) if *n >= 1 => {
                for &i in &selected {
                    let w = &workloads[i];
                    let autoscaled = k.scaled_objects.iter().any(|(_, so)| {
                        str_at(so, &["spec", "scaleTargetRef", "name"]).as_deref() == Some(w.name.as_str())
                    });
                    if !autoscaled && w.replicas.unwrap_or(1) <= *n {
                        p.push(format!(
                            "{at}: minAvailable {n} with {} replicas of {} blocks every drain",
                            w.replicas.unwrap_or(1),
                            w.name
                        ));
                    }
                }
            }
            other => p.push(format!("{at}: minAvailable {other:?}, want an integer >= 1")),
        }
        for i in selected {
            covered[i] = true;
        }
    }
    for (w, c) in workloads.iter().zip(&covered) {
        if !c {
            p.push(format!(
                "{}: Deployment {} has no PodDisruptionBudget",
                w.file, w.name
            ));
        }
    }

    // NATS: the Helm values and the config's cluster section agree.
    let nv = &k.nats_values;
    if bool_at(nv, &["config", "jetstream", "enabled"]) != Some(true) {
        p.push(format!("{NATS_VALUES}: config.jetstream.enabled is not true"));
    }
    let file_store = bool_at(nv, &["config", "jetstream", "fileStore", "enabled"]).unwrap_or(true)
        && bool_at(nv, &["config", "jetstream", "fileStore", "pvc", "enabled"]).unwrap_or(true);
    if !file_store || str_at(nv, &["config", "jetstream", "fileStore", "pvc", "size"]).is_none() {
        p.push(format!(
            "{NATS_VALUES}: no JetStream file store on a PVC with a size"
        ));
    }
    let nats_cluster = bool_at(nv, &["config", "cluster", "enabled"]).unwrap_or(false);
    let nats_servers = if nats_cluster {
        int_at(nv, &["config", "cluster", "replicas"]).unwrap_or(3)
    } else {
        1
    };
    let client_port = int_at(nv, &["config", "nats", "port"]).unwrap_or(4222);
    if bool_at(nv, &["config", "monitor", "enabled"]) == Some(false) {
        p.push(format!(
            "{NATS_VALUES}: config.monitor.enabled is false (KEDA reads /jsz)"
        ));
    }
    let monitor_port = int_at(nv, &["config", "monitor", "port"]).unwrap_or(8222);
    for w in &workloads {
        let c = &w.config.cluster;
        let at = format!("{}: {} ({:?})", w.file, w.name, w.role);
        if c.storage == StorageKind::File && !file_store {
            p.push(format!(
                "{at}: cluster.storage is file, the NATS values have no file store"
            ));
        }
        if c.replicas as i64 > nats_servers {
            p.push(format!(
                "{at}: cluster.replicas {} > the {nats_servers} NATS server(s) of {NATS_VALUES}",
                c.replicas
            ));
        }
        match nats_host_port(&c.nats_url) {
            Some((host, port)) => {
                if port as i64 != client_port {
                    p.push(format!(
                        "{at}: cluster.nats_url port {port}, NATS listens on {client_port}"
                    ));
                }
                let labels: Vec<&str> = host.split('.').collect();
                if labels.len() < 3 || labels[2] != "svc" || Some(labels[1]) != ns.as_deref() {
                    p.push(format!(
                        "{at}: cluster.nats_url host {host:?} is not <service>.{ns:?}.svc"
                    ));
                }
            }
            None => p.push(format!("{at}: cluster.nats_url {:?} does not parse", c.nats_url)),
        }
    }

    // KEDA: scales a worker Deployment on its stream and durable consumer.
    if k.scaled_objects.is_empty() {
        p.push("no KEDA ScaledObject for the workers".into());
    }
    for (file, so) in &k.scaled_objects {
        let at = format!("{file}: ScaledObject {:?}", str_at(so, &["metadata", "name"]));
        let target = str_at(so, &["spec", "scaleTargetRef", "name"]).unwrap_or_default();
        let kind = str_at(so, &["spec", "scaleTargetRef", "kind"]).unwrap_or_else(|| "Deployment".into());
        let targets: Vec<&&Workload> = workers.iter().filter(|w| w.name == target).collect();
        if kind != "Deployment" || targets.is_empty() {
            p.push(format!(
                "{at}: scaleTargetRef {kind}/{target} is not a worker Deployment"
            ));
        }
        let min = int_at(so, &["spec", "minReplicaCount"]).unwrap_or(0);
        let max = int_at(so, &["spec", "maxReplicaCount"]).unwrap_or(100);
        if min < 1 || max < min {
            p.push(format!(
                "{at}: minReplicaCount {min}, maxReplicaCount {max}: want 1 <= min <= max"
            ));
        }
        let triggers: Vec<&Value> = value_at(so, &["spec", "triggers"])
            .and_then(Value::as_sequence)
            .map(|t| {
                t.iter()
                    .filter(|t| str_at(t, &["type"]).as_deref() == Some("nats-jetstream"))
                    .collect()
            })
            .unwrap_or_default();
        if triggers.len() != 1 {
            p.push(format!(
                "{at}: expected one nats-jetstream trigger, found {}",
                triggers.len()
            ));
        }
        for t in triggers {
            let m = |key: &str| str_at(t, &["metadata", key]).unwrap_or_default();
            for w in &targets {
                let cfg = &w.config;
                let consumer = cfg.cluster.consumer_name(&cfg.model.size);
                if m("stream") != cfg.cluster.stream {
                    p.push(format!(
                        "{at}: stream {:?}, the workers use cluster.stream {:?}",
                        m("stream"),
                        cfg.cluster.stream
                    ));
                }
                if m("consumer") != consumer {
                    p.push(format!(
                        "{at}: consumer {:?}, the workers of {:?} share {consumer:?}",
                        m("consumer"),
                        cfg.model.size
                    ));
                }
                if cfg.cluster.credentials_file.is_none() && m("account") != "$G" {
                    p.push(format!(
                        "{at}: account {:?}; without credentials the jobs are in the global account $G",
                        m("account")
                    ));
                }
                let capacity = cfg.deployment.num_replicas as u64 * cfg.batching.max_batch_size as u64;
                if m("lagThreshold").parse::<u64>().ok() != Some(capacity) {
                    p.push(format!(
                        "{at}: lagThreshold {:?}, one worker pod works on num_replicas × max_batch_size = {capacity}",
                        m("lagThreshold")
                    ));
                }
                // <release>-headless.<ns>.svc:<monitor port>, beside <release>.<ns>.svc:4222.
                let endpoint = m("natsServerMonitoringEndpoint");
                let (host, port) = endpoint.rsplit_once(':').unwrap_or((endpoint.as_str(), ""));
                if port.parse::<i64>().ok() != Some(monitor_port) {
                    p.push(format!(
                        "{at}: natsServerMonitoringEndpoint {endpoint:?}: NATS monitors on {monitor_port}"
                    ));
                }
                if let Some((nats_host, _)) = nats_host_port(&cfg.cluster.nats_url) {
                    let (svc, rest) = nats_host.split_once('.').unwrap_or((nats_host.as_str(), ""));
                    let want = format!("{svc}-headless.{rest}");
                    if host != want {
                        p.push(format!("{at}: natsServerMonitoringEndpoint host {host:?}, want the release's headless Service {want:?}"));
                    }
                }
            }
        }
    }
    problems
}

// ------------------------------------------------------------ Dockerfiles

/// Instructions of a Dockerfile: comment lines dropped, continuations joined.
fn dockerfile_instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with('#') {
            continue;
        }
        let (body, cont) = match line.trim_end().strip_suffix('\\') {
            Some(b) => (b, true),
            None => (line, false),
        };
        cur.push_str(body);
        cur.push(' ');
        if !cont {
            let t = cur.trim();
            if !t.is_empty() {
                let (op, rest) = t.split_once(char::is_whitespace).unwrap_or((t, ""));
                out.push((op.to_ascii_uppercase(), rest.trim().to_string()));
            }
            cur.clear();
        }
    }
    out
}

fn dockerfile_env(text: &str) -> Vec<(String, String)> {
    dockerfile_instructions(text)
        .into_iter()
        .filter(|(op, _)| op == "ENV")
        .flat_map(|(_, rest)| {
            rest.split_whitespace()
                .filter_map(|kv| {
                    kv.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

fn dockerfile_user(text: &str) -> Option<i64> {
    dockerfile_instructions(text)
        .into_iter()
        .rfind(|(op, _)| op == "USER")
        .and_then(|(_, u)| u.split(':').next().and_then(|u| u.parse().ok()))
}

fn dockerfile_json(text: &str, op: &str) -> Vec<String> {
    let (_, rest) = dockerfile_instructions(text)
        .into_iter()
        .rfind(|(o, _)| o == op)
        .unwrap_or_else(|| panic!("no {op}"));
    serde_json::from_str(&rest).unwrap_or_else(|e| panic!("{op} {rest}: not the exec (JSON) form: {e}"))
}

/// Where `COPY config.json DEST` puts the repository's config in the image.
fn dockerfile_config_path(text: &str) -> Option<String> {
    dockerfile_instructions(text).into_iter().find_map(|(op, rest)| {
        let parts: Vec<&str> = rest.split_whitespace().collect();
        (op == "COPY" && parts.len() == 2 && parts[0] == "config.json").then(|| parts[1].to_string())
    })
}

/// The config the image's default command runs with.
fn image_config(dockerfile: &str, extra_env: Vec<(String, String)>) -> Result<Config, String> {
    let mut env = dockerfile_env(dockerfile);
    env.extend(extra_env);
    Config::from_sources(Some(read("config.json").as_str()), env).map_err(|e| e.to_string())
}

fn check_dockerfile(name: &str, text: &str) -> Vec<String> {
    let mut p = Vec::new();
    let defaults = Config::default();
    let exposed: Vec<u16> = dockerfile_instructions(text)
        .into_iter()
        .filter(|(op, _)| op == "EXPOSE")
        .flat_map(|(_, rest)| {
            rest.split_whitespace()
                .filter_map(|x| x.split('/').next()?.parse().ok())
                .collect::<Vec<_>>()
        })
        .collect();
    let cfg = match image_config(text, vec![]) {
        Ok(c) => c,
        Err(e) => {
            p.push(format!("{name}: config.json with the image's ENV: {e}"));
            return p;
        }
    };
    for (what, port) in [
        ("server.port", cfg.server.port),
        ("cluster.worker_port", cfg.cluster.worker_port),
    ] {
        if !exposed.contains(&port) {
            p.push(format!("{name}: EXPOSE {exposed:?} lacks {what} {port}"));
        }
    }
    if cfg.cluster.worker_port != defaults.cluster.worker_port || cfg.server.port != defaults.server.port {
        p.push(format!(
            "{name}: the image's ports differ from the binary's defaults"
        ));
    }
    let entry = dockerfile_json(text, "ENTRYPOINT");
    if entry.len() != 1 || Path::new(&entry[0]).file_name().and_then(|n| n.to_str()) != Some(BINARY) {
        p.push(format!("{name}: ENTRYPOINT {entry:?} is not the {BINARY} binary"));
    }
    let cmd = dockerfile_json(text, "CMD");
    let config_path = dockerfile_config_path(text);
    check_cli(&format!("{name}: CMD"), &cmd, "serve", &mut p);
    if cmd.first().map(String::as_str) != Some("serve") || config_arg(&cmd) != config_path {
        p.push(format!(
            "{name}: CMD {cmd:?}, want serve --config {config_path:?}"
        ));
    }
    if dockerfile_user(text).is_none_or(|u| u == 0) {
        p.push(format!("{name}: no non-root USER"));
    }
    let volumes: String = dockerfile_instructions(text)
        .into_iter()
        .filter(|(op, _)| op == "VOLUME")
        .map(|(_, r)| r)
        .collect();
    for (what, dir) in [
        ("model.model_dir", &cfg.model.model_dir),
        ("jobs.dir", &cfg.jobs.dir),
    ] {
        if !volumes.contains(&format!("\"{}\"", dir.display())) {
            p.push(format!("{name}: {what} {} is not a VOLUME", dir.display()));
        }
    }
    p
}

// ------------------------------------------------------------ docker compose

fn compose_words(svc: &Value) -> Vec<String> {
    match value_at(svc, &["command"]) {
        Some(Value::Sequence(items)) => items.iter().filter_map(|v| str_at(v, &[])).collect(),
        Some(Value::String(line)) => line.split_whitespace().map(str::to_string).collect(),
        _ => vec![],
    }
}

fn compose_env(svc: &Value) -> Vec<(String, String)> {
    match value_at(svc, &["environment"]) {
        Some(Value::Mapping(m)) => m
            .iter()
            .filter_map(|(k, v)| Some((k.as_str()?.to_string(), str_at(v, &[]).unwrap_or_default())))
            .collect(),
        Some(Value::Sequence(items)) => items
            .iter()
            .filter_map(|v| {
                v.as_str()?
                    .split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect(),
        _ => vec![],
    }
}

/// Container ports a service publishes ("8000:8000", "127.0.0.1:8000:8000/tcp", long form).
fn compose_published(svc: &Value) -> Vec<u16> {
    value_at(svc, &["ports"])
        .and_then(Value::as_sequence)
        .map(|ports| {
            ports
                .iter()
                .filter_map(|p| match p {
                    Value::Mapping(_) => int_at(p, &["target"]).map(|t| t as u16),
                    other => {
                        let text = str_at(other, &[])?;
                        let last = text.rsplit(':').next()?;
                        last.split('/').next()?.parse().ok()
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

fn compose_volume_targets(svc: &Value) -> Vec<(String, String)> {
    value_at(svc, &["volumes"])
        .and_then(Value::as_sequence)
        .map(|vols| {
            vols.iter()
                .filter_map(|v| match v {
                    Value::String(text) => {
                        let mut parts = text.split(':');
                        Some((parts.next()?.to_string(), parts.next()?.to_string()))
                    }
                    Value::Mapping(_) => Some((str_at(v, &["source"])?, str_at(v, &["target"])?)),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

fn duration_s(text: &str) -> Option<u64> {
    let t = text.trim();
    if let Some(m) = t.strip_suffix('m') {
        return m.parse::<u64>().ok().map(|m| m * 60);
    }
    t.strip_suffix('s').unwrap_or(t).parse().ok()
}

fn check_compose(doc: &Value, dockerfile: &str) -> Vec<String> {
    let mut p = Vec::new();
    let Some(services) = value_at(doc, &["services"]).and_then(Value::as_mapping) else {
        return vec!["docker-compose.yml: no services".into()];
    };
    let image_config_path = dockerfile_config_path(dockerfile);
    // Services that pull the model: the workers must wait for them.
    let pull_services: Vec<String> = services
        .iter()
        .filter(|(_, svc)| compose_words(svc).starts_with(&["models".into(), "pull".into()]))
        .filter_map(|(name, _)| name.as_str().map(str::to_string))
        .collect();
    let mut gateways = 0;
    let mut workers = 0;
    for (name, svc) in services {
        let name = name.as_str().unwrap_or_default().to_string();
        let w = compose_words(svc);
        let at = format!("docker-compose.yml: service {name}");
        let role = w.first().map(String::as_str);
        if !matches!(role, Some("gateway" | "worker" | "models" | "serve")) {
            continue;
        }
        let want = if role == Some("models") {
            "models pull"
        } else {
            role.unwrap_or_default()
        };
        check_cli(&at, &w, want, &mut p);
        if config_arg(&w) != image_config_path {
            p.push(format!(
                "{at}: --config {:?}, the image has config.json at {image_config_path:?}",
                config_arg(&w)
            ));
        }
        let cfg = match image_config(dockerfile, compose_env(svc)) {
            Ok(c) => c,
            Err(e) => {
                p.push(format!("{at}: config: {e}"));
                continue;
            }
        };
        if matches!(role, Some("gateway" | "worker")) {
            match nats_host_port(&cfg.cluster.nats_url) {
                Some((host, 4222)) if services.contains_key(host.as_str()) => {}
                other => p.push(format!(
                    "{at}: cluster.nats_url {:?} ({other:?}) is not a compose service on 4222",
                    cfg.cluster.nats_url
                )),
            }
            let grace = str_at(svc, &["stop_grace_period"])
                .and_then(|g| duration_s(&g))
                .unwrap_or(10);
            if grace <= cfg.server.shutdown_timeout_s {
                p.push(format!(
                    "{at}: stop_grace_period {grace}s <= server.shutdown_timeout_s {}",
                    cfg.server.shutdown_timeout_s
                ));
            }
        }
        match role {
            Some("gateway") => {
                gateways += 1;
                let gateway_port = flag_arg(&w, "--port")
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(cfg.server.port);
                if !compose_published(svc).contains(&gateway_port) {
                    p.push(format!(
                        "{at}: publishes {:?}, the gateway listens on server.port {}",
                        compose_published(svc),
                        gateway_port
                    ));
                }
            }
            Some("worker") => {
                workers += int_at(svc, &["deploy", "replicas"]).unwrap_or(1);
                let model_dir = cfg.model.model_dir.display().to_string();
                if !compose_volume_targets(svc).iter().any(|(_, t)| *t == model_dir) {
                    p.push(format!("{at}: no volume at model.model_dir {model_dir}"));
                }
                if !compose_published(svc).is_empty() {
                    p.push(format!("{at}: publishes ports; replicas would collide"));
                }
                for dep in &pull_services {
                    if str_at(svc, &["depends_on", dep.as_str(), "condition"]).as_deref()
                        != Some("service_completed_successfully")
                    {
                        p.push(format!(
                            "{at}: does not wait for {dep} to finish pulling the model"
                        ));
                    }
                }
            }
            Some("models")
                if w.get(1).map(String::as_str) == Some("pull") && w.get(2) != Some(&cfg.model.size) =>
            {
                p.push(format!(
                    "{at}: pulls {:?}, model.size is {:?}",
                    w.get(2),
                    cfg.model.size
                ));
            }
            _ => {}
        }
    }
    if gateways != 1 {
        p.push(format!("docker-compose.yml: {gateways} gateway services, want 1"));
    }
    if workers < 1 {
        p.push("docker-compose.yml: no worker".into());
    }
    match services.get("nats") {
        Some(nats) => {
            let w = compose_words(nats);
            if !str_at(nats, &["image"]).unwrap_or_default().starts_with("nats:") {
                p.push("docker-compose.yml: service nats does not run the nats image".into());
            }
            if !w.iter().any(|x| x == "-js" || x == "--jetstream") {
                p.push(format!(
                    "docker-compose.yml: nats command {w:?} does not enable JetStream (-js)"
                ));
            }
            let sd = w
                .iter()
                .position(|x| x == "-sd" || x == "--store_dir")
                .and_then(|i| w.get(i + 1));
            match sd {
                Some(dir) if compose_volume_targets(nats).iter().any(|(_, t)| t == dir) => {}
                other => p.push(format!(
                    "docker-compose.yml: nats store dir {other:?} is not on a volume"
                )),
            }
        }
        None => p.push("docker-compose.yml: no nats service".into()),
    }
    p
}

// ------------------------------------------------------------------ tests

fn assert_none(problems: Vec<String>) {
    assert!(
        problems.is_empty(),
        "{} problem(s):\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}

#[test]
fn kubernetes_manifests_match_the_binary() {
    let k = load_k8s();
    // The files this test is about are all there.
    assert!(
        k.deployments.len() >= 2
            && !k.services.is_empty()
            && k.pdbs.len() >= 2
            && !k.scaled_objects.is_empty()
    );
    assert_none(check_k8s(&k));
}

#[test]
fn dockerfiles_match_the_binary() {
    let cpu = read("Dockerfile");
    let cuda = read("Dockerfile.cuda");
    let mut p = check_dockerfile("Dockerfile", &cpu);
    p.extend(check_dockerfile("Dockerfile.cuda", &cuda));
    // One builder for both: the CUDA image differs only in its runtime stage.
    let builder = |t: &str| {
        let start = t.find("AS builder").expect("a builder stage");
        let end = t[start..]
            .find("\nFROM ")
            .map(|i| start + i)
            .expect("a runtime stage");
        dockerfile_instructions(&t[start..end])
    };
    if builder(&cpu) != builder(&cuda) {
        p.push("Dockerfile and Dockerfile.cuda have different builder stages".into());
    }
    let cpu_cfg = image_config(&cpu, vec![]).expect("Dockerfile config");
    let cuda_cfg = image_config(&cuda, vec![]).expect("Dockerfile.cuda config");
    assert_eq!(
        cuda_cfg.model.device,
        DeviceKind::Cuda,
        "Dockerfile.cuda must run the model on CUDA"
    );
    assert_ne!(cpu_cfg.model.device, DeviceKind::Cuda);
    // Logs go to stdout only in a container.
    assert_eq!(cpu_cfg.logging.file_path(), None, "the image writes a log file");
    assert_none(p);
}

#[test]
fn docker_compose_matches_the_binary() {
    let text = read("docker-compose.yml");
    let docs = yaml_documents("docker-compose.yml", &text);
    assert_eq!(docs.len(), 1);
    assert_none(check_compose(&docs[0], &read("Dockerfile")));
}

// The checks above can fail: break one thing at a time and see it reported.

fn k8s_problems_after(mutate: impl FnOnce(&mut K8s)) -> String {
    let mut k = load_k8s();
    mutate(&mut k);
    let problems = check_k8s(&k);
    assert!(!problems.is_empty(), "the broken manifests passed");
    problems.join("\n")
}

fn deployment_named<'a>(k: &'a mut K8s, file_suffix: &str) -> &'a mut Deployment {
    &mut k
        .deployments
        .iter_mut()
        .find(|(f, _)| f.ends_with(file_suffix))
        .unwrap_or_else(|| panic!("no {file_suffix}"))
        .1
}

fn main_container(d: &mut Deployment) -> &mut Container {
    &mut d.spec.template.spec.as_mut().unwrap().containers[0]
}

#[test]
fn broken_worker_cpu_is_reported() {
    let out = k8s_problems_after(|k| {
        let c = main_container(deployment_named(k, "/worker-deployment.yaml"));
        let res = c.resources.as_mut().unwrap();
        res.requests
            .as_mut()
            .unwrap()
            .insert("cpu".into(), Quantity("3".into()));
    });
    assert!(out.contains("resources.requests.cpu"), "{out}");
}

#[test]
fn broken_probe_path_and_port_are_reported() {
    let out = k8s_problems_after(|k| {
        let c = main_container(deployment_named(k, "/gateway-deployment.yaml"));
        c.readiness_probe
            .as_mut()
            .unwrap()
            .http_get
            .as_mut()
            .unwrap()
            .path = Some("/healthz".into());
        c.liveness_probe.as_mut().unwrap().http_get.as_mut().unwrap().port = IntOrString::Int(8001);
    });
    assert!(out.contains("readinessProbe: path"), "{out}");
    assert!(out.contains("livenessProbe: port"), "{out}");
}

#[test]
fn service_aimed_at_the_wrong_port_or_pods_is_reported() {
    let out = k8s_problems_after(|k| {
        let spec = k.services[0].1.spec.as_mut().unwrap();
        spec.ports.as_mut().unwrap()[0].target_port = Some(IntOrString::Int(8001));
    });
    assert!(out.contains("targets"), "{out}");
    let out = k8s_problems_after(|k| {
        let spec = k.services[0].1.spec.as_mut().unwrap();
        spec.selector
            .as_mut()
            .unwrap()
            .remove("app.kubernetes.io/component");
    });
    assert!(out.contains("also matches the Worker"), "{out}");
}

#[test]
fn keda_names_out_of_step_with_the_config_are_reported() {
    let out = k8s_problems_after(|k| {
        let meta = k.scaled_objects[0].1["spec"]["triggers"][0]["metadata"]
            .as_mapping_mut()
            .unwrap();
        meta.insert("consumer".into(), "workers-tiny".into());
        meta.insert("lagThreshold".into(), "100".into());
    });
    assert!(out.contains("consumer \"workers-tiny\""), "{out}");
    assert!(out.contains("lagThreshold \"100\""), "{out}");
    let out = k8s_problems_after(|k| {
        k.scaled_objects[0].1["spec"]["scaleTargetRef"]["name"] = "whisper-gateway".into();
    });
    assert!(out.contains("is not a worker Deployment"), "{out}");
}

#[test]
fn short_grace_period_bad_config_and_missing_pdb_are_reported() {
    let out = k8s_problems_after(|k| {
        let d = deployment_named(k, "/gateway-deployment.yaml");
        d.spec
            .template
            .spec
            .as_mut()
            .unwrap()
            .termination_grace_period_seconds = Some(30);
        k.pdbs.retain(|(f, _)| !f.ends_with("gateway-pdb.yaml"));
    });
    assert!(out.contains("terminationGracePeriodSeconds 30"), "{out}");
    assert!(out.contains("has no PodDisruptionBudget"), "{out}");
    let out = k8s_problems_after(|k| {
        let data = k.config_maps[0].1.data.as_mut().unwrap();
        let text = data.get_mut("config.json").unwrap();
        *text = text.replace("\"port\": 8000", "\"port\": 8000, \"prot\": 1");
    });
    assert!(out.contains("server.prot"), "{out}");
}

#[test]
fn gpu_worker_without_its_gpus_is_reported() {
    let out = k8s_problems_after(|k| {
        let c = main_container(deployment_named(k, "/worker-deployment-gpu.yaml"));
        c.resources
            .as_mut()
            .unwrap()
            .limits
            .as_mut()
            .unwrap()
            .remove("nvidia.com/gpu");
    });
    assert!(out.contains("nvidia.com/gpu"), "{out}");
}

#[test]
fn broken_compose_is_reported() {
    let text = read("docker-compose.yml");
    let mut doc = yaml_documents("docker-compose.yml", &text).remove(0);
    doc["services"]["worker"]["command"] =
        serde_yaml_ng::from_str("[serve, --config, /etc/whisper-serve/config.json]").unwrap();
    doc["services"]["gateway"]["ports"] = serde_yaml_ng::from_str("[\"8080:8080\"]").unwrap();
    doc["services"]["nats"]["command"] = serde_yaml_ng::from_str("[-sd, /data]").unwrap();
    let out = check_compose(&doc, &read("Dockerfile")).join("\n");
    assert!(out.contains("no worker"), "{out}");
    assert!(out.contains("the gateway listens on server.port 8000"), "{out}");
    assert!(out.contains("does not enable JetStream"), "{out}");
}

#[test]
fn broken_dockerfile_is_reported() {
    let text = read("Dockerfile")
        .replace("EXPOSE 8000 8001", "EXPOSE 8000")
        .replace("USER 10001:10001", "USER root");
    let out = check_dockerfile("Dockerfile", &text).join("\n");
    assert!(out.contains("lacks cluster.worker_port 8001"), "{out}");
    assert!(out.contains("no non-root USER"), "{out}");
}

#[test]
fn misspelt_fields_are_reported() {
    let doc = &yaml_documents("test", &read("deploy/kubernetes/gateway-deployment.yaml"))[0];
    let text = serde_yaml_ng::to_string(doc)
        .unwrap()
        .replace("readinessProbe:", "readinesProbe:");
    let broken: Value = serde_yaml_ng::from_str(&text).unwrap();
    let obj: Deployment = serde_yaml_ng::from_value(broken.clone()).unwrap();
    let mut dropped = Vec::new();
    dropped_fields(&broken, &serde_yaml_ng::to_value(&obj).unwrap(), "", &mut dropped);
    assert_eq!(dropped, ["spec.template.spec.containers[0].readinesProbe"]);
}

#[test]
fn port_flag_is_taken_over_the_config() {
    let out = k8s_problems_after(|k| {
        let c = main_container(deployment_named(k, "/worker-deployment.yaml"));
        c.args
            .as_mut()
            .unwrap()
            .extend(["--port".to_string(), "9001".to_string()]);
    });
    assert!(
        out.contains("containerPort 8001 (Some(\"metrics\")), the Worker listens on 9001"),
        "{out}"
    );
}

#[test]
fn command_lines_the_binary_rejects_are_reported() {
    let out = k8s_problems_after(|k| {
        let c = main_container(deployment_named(k, "/gateway-deployment.yaml"));
        c.args.as_mut().unwrap().push("--workers=2".into());
    });
    assert!(out.contains("does not parse"), "{out}");
    let text = read("docker-compose.yml");
    let mut doc = yaml_documents("docker-compose.yml", &text).remove(0);
    doc["services"]["models-pull"]["command"] =
        serde_yaml_ng::from_str("[models, list, --config, /etc/whisper-serve/config.json]").unwrap();
    let out = check_compose(&doc, &read("Dockerfile")).join("\n");
    assert!(out.contains("runs another command, want models pull"), "{out}");
}
