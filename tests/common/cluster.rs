//! Cluster test parts: a real `nats-server` (JetStream on, file storage in
//! a temp dir, a free port), gateway/worker configs, a webhook receiver.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{client, test_config, Server};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A nats-server of our own; killed on drop. `stop` and `start` keep the
/// port and the store, as a restarted server would.
pub struct Nats {
    child: Option<Child>,
    pub port: u16,
    store: tempfile::TempDir,
    extra: Vec<String>,
}

impl Nats {
    pub fn start() -> Nats {
        Self::start_with(&[])
    }

    /// With extra `nats-server` arguments (e.g. `-c file.conf`).
    pub fn start_with(extra: &[&str]) -> Nats {
        let mut n = Nats { child: None, port: free_port(), store: tempfile::tempdir().expect("temp dir"), extra: extra.iter().map(|s| s.to_string()).collect() };
        n.spawn();
        n
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn store_dir(&self) -> PathBuf {
        self.store.path().to_path_buf()
    }

    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string(), "-sd"])
            .arg(self.store.path())
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server is needed by this test (scripts/test.sh installs it: apt-get install nats-server)");
        self.child = Some(child);
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(start.elapsed() < Duration::from_secs(15), "nats-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            let start = Instant::now();
            while c.try_wait().ok().flatten().is_none() {
                if start.elapsed() > Duration::from_secs(10) {
                    let _ = c.kill();
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// tiny.en, one single-threaded replica per process, the cluster section
/// pointed at `nats`, short ack wait and heartbeats so failures show fast.
pub fn cluster_config(nats: &Nats, extra: Value) -> Value {
    let mut c = test_config(json!({
        "deployment": {"num_replicas": 1, "cpu_per_replica": 1},
        "cluster": {"nats_url": nats.url(), "worker_port": 0, "ack_wait_s": 4, "max_deliver": 3, "heartbeat_s": 1},
        "limits": {"request_timeout_s": 300},
    }));
    super::merge_json(&mut c, extra);
    c
}

pub fn gateway(config: Value) -> Server {
    Server::start_role("gateway", config, &[], false)
}

pub fn worker(config: Value) -> Server {
    Server::start_role("worker", config, &[], true)
}

/// Waits until `f` returns Some, or panics with `what` after `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the gateway's /health is 200 (a worker serves its model).
pub fn wait_ready(gw: &Server, limit: Duration) -> Value {
    wait_for("the gateway to see a worker", limit, || {
        let (s, body) = gw.get_json("/health");
        (s == 200).then_some(body)
    })
}

/// One POST received by [`Webhooks`].
#[derive(Debug, Clone)]
pub struct Hook {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Hook {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// A local HTTP listener that records every request and answers 200.
pub struct Webhooks {
    pub url: String,
    rx: mpsc::Receiver<Hook>,
}

impl Webhooks {
    pub fn start() -> Webhooks {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                if let Some(hook) = read_request(stream) {
                    let _ = tx.send(hook);
                }
            }
        });
        Webhooks { url, rx }
    }

    pub fn next(&self, limit: Duration) -> Option<Hook> {
        self.rx.recv_timeout(limit).ok()
    }
}

fn read_request(mut stream: TcpStream) -> Option<Hook> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut headers = Vec::new();
    let mut length = 0usize;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().ok()?;
            }
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).ok()?;
    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    Some(Hook { headers, body })
}

/// POSTs a file to `/v1/jobs` with extra text fields; returns (status, body).
pub fn submit_job(url: &str, path: &std::path::Path, fields: &[(&str, &str)]) -> (u16, Value) {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("audio.wav").to_string();
    let part = reqwest::blocking::multipart::Part::bytes(std::fs::read(path).expect("audio")).file_name(name);
    let mut form = reqwest::blocking::multipart::Form::new().part("file", part);
    for (k, v) in fields {
        form = form.text(k.to_string(), v.to_string());
    }
    // A refusal sent before the whole upload was read can cut the upload
    // off (status 0 here): callers that expect one retry.
    let Ok(r) = client().post(format!("{url}/v1/jobs")).multipart(form).send() else { return (0, Value::Null) };
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

/// Polls a job until its status is one of `until`.
pub fn poll_job(url: &str, id: &str, until: &[&str], limit: Duration) -> Value {
    wait_for(&format!("job {id} to be {until:?}"), limit, || {
        let r = client().get(format!("{url}/v1/jobs/{id}")).send().ok()?;
        let v: Value = r.json().ok()?;
        until.contains(&v["status"].as_str().unwrap_or("")).then_some(v)
    })
}
