//! Job callbacks cannot be aimed inside (SSRF): a `callback_url` whose host
//! is, or resolves to, an internal address is refused with 400 and no job,
//! in every spelling, unless `jobs.webhook_allow_hosts` lets it through.

mod common;

use std::net::ToSocketAddrs;
use std::time::Duration;

use common::cluster::{poll_job, submit_job, Webhooks};
use common::{jfk_wav, test_config, Server};
use serde_json::{json, Value};
use whisper_serve::jobs::webhook::is_forbidden_ip;

fn server(allow: Value) -> (Server, tempfile::TempDir) {
    let jobs = tempfile::tempdir().unwrap();
    let server = Server::start(test_config(json!({
        "jobs": {"dir": jobs.path(), "webhook_allow_hosts": allow},
    })));
    (server, jobs)
}

fn assert_refused(server: &Server, url: &str) {
    let (s, e) = submit_job(&server.url, &jfk_wav(), &[("callback_url", url)]);
    assert_eq!(s, 400, "{url}: {e}");
    let err = &e["error"];
    assert!(err["message"].as_str().is_some_and(|m| m.contains("callback_url")), "{url}: {e}");
    assert_eq!(err["type"], "invalid_request_error", "{url}: {e}");
    assert_eq!(err["param"], "callback_url", "{url}: {e}");
    assert_eq!(err["code"], "invalid_param", "{url}: {e}");
}

/// This machine's own name, if it resolves only to addresses callbacks
/// may not reach (as /etc/hosts usually makes it).
fn own_internal_hostname() -> Option<String> {
    let name = std::fs::read_to_string("/etc/hostname").ok()?.trim().to_string();
    if name.is_empty() {
        return None;
    }
    let addrs: Vec<_> = (name.as_str(), 80).to_socket_addrs().ok()?.collect();
    (!addrs.is_empty() && addrs.iter().all(|a| is_forbidden_ip(a.ip()))).then_some(name)
}

#[test]
fn internal_callback_urls_are_refused_and_create_no_job() {
    let (server, _jobs) = server(json!([]));
    let long = format!("https://example.com/{}", "a".repeat(2100));
    let mut urls: Vec<String> = [
        "http://localhost/hook",
        "http://LOCALHOST./hook",
        "http://localhost:8000/hook",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:7f00:1]/",
        "http://[::]/",
        "http://[fe80::1]/",
        "http://[fd00::1]/",
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://[2002:a00:1::1]/",
        "http://2130706433/",
        "http://0x7f.1/",
        "http://0177.0.0.1/",
        "http://127.1/",
        "http://127.0.0.1/",
        "http://0.0.0.0/",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.1.2.3/",
        "http://172.16.0.1/",
        "http://192.168.1.1/",
        "http://100.64.0.1/",
        "http://224.0.0.1/",
        "http://255.255.255.255/",
        "http://user:pw@127.0.0.1/",
        "http://no-such-host.invalid/",
        long.as_str(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    match own_internal_hostname() {
        Some(name) => urls.push(format!("http://{name}/hook")),
        None => eprintln!("skipping the own-hostname case: /etc/hostname does not resolve to an internal address only"),
    }
    for url in &urls {
        assert_refused(&server, url);
    }
    let (s, list) = server.get_json("/v1/jobs");
    assert_eq!(s, 200, "{list}");
    assert_eq!(list["data"], json!([]), "refused submissions left jobs: {list}");
}

/// With the receiver's address (or its block) allowed, the callback
/// arrives; other internal addresses stay refused.
#[test]
fn an_allowed_receiver_gets_the_callback() {
    for (allow, spelling) in [(json!(["127.0.0.1"]), "127.0.0.1"), (json!(["127.0.0.0/8"]), "2130706433")] {
        let hooks = Webhooks::start();
        let (server, _jobs) = server(allow.clone());
        let url = hooks.url.replace("127.0.0.1", spelling);
        let (s, job) = submit_job(&server.url, &jfk_wav(), &[("callback_url", &url)]);
        assert_eq!(s, 202, "{allow}: {job}");
        let id = job["id"].as_str().expect("job id");
        let done = poll_job(&server.url, id, &["completed", "failed"], Duration::from_secs(120));
        assert_eq!(done["status"], "completed", "{done}");
        let hook = hooks.next(Duration::from_secs(20)).expect("the callback");
        assert_eq!(hook.header("X-Whisper-Job-Id"), Some(id));
        let body: Value = serde_json::from_slice(&hook.body).expect("json body");
        assert_eq!(body["id"], id);
        assert_refused(&server, "http://169.254.169.254/");
        assert_refused(&server, "http://[::1]/");
    }
}
