//! Shared test harness: starts the real `whisper-serve` binary on port 0
//! with the real model, and reads the real speech in ../shared/speech.
#![allow(dead_code)]

pub mod cluster;
pub mod realtime;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn speech() -> PathBuf {
    repo().join("../shared/speech")
}

pub fn jfk_wav() -> PathBuf {
    speech().join("jfk_whisper_cpp/jfk.wav")
}

pub const JFK_TEXT: &str =
    "And so, my fellow Americans, ask not what your country can do for you, ask what you can do for your country.";

/// Where the test models live (`.ci/run` pulls tiny.en there).
pub fn model_dir() -> PathBuf {
    std::env::var_os("WHISPER_SERVE_TEST_MODEL_DIR").map(PathBuf::from).unwrap_or_else(|| repo().join("models"))
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_whisper-serve")
}

/// A config for tests: tiny.en on CPU, console logs only, port 0.
pub fn test_config(overrides: Value) -> Value {
    let mut c = json!({
        "server": {"host": "127.0.0.1", "port": 0, "num_cpus": 2},
        "model": {"size": "tiny.en", "device": "cpu", "model_dir": model_dir()},
        "deployment": {"num_replicas": 1, "cpu_per_replica": 2},
        "logging": {"level": "WARNING", "file": null}
    });
    merge(&mut c, overrides);
    c
}

/// Lays `over` on `base`, object key by key.
pub fn merge_json(base: &mut Value, over: Value) {
    merge(base, over)
}

fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, o) => *b = o,
    }
}

/// A running server; killed on drop.
pub struct Server {
    child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Server {
    pub fn start(config: Value) -> Server {
        Self::start_env(config, &[])
    }

    /// Starts with extra environment variables (e.g. config overrides).
    pub fn start_env(config: Value, env: &[(&str, &str)]) -> Server {
        Self::start_role("serve", config, env, true)
    }

    /// Starts `whisper-serve <role>` (serve, gateway, worker); waits for
    /// `/health` to say 200 when `wait` is set.
    pub fn start_role(role: &str, config: Value, env: &[(&str, &str)], wait: bool) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("config.json");
        let mut config = config;
        // Async jobs of a test stay in its own temp dir unless it says otherwise.
        if config.pointer("/jobs/dir").is_none() {
            merge(&mut config, json!({"jobs": {"dir": dir.path().join("jobs")}}));
        }
        std::fs::write(&path, serde_json::to_vec_pretty(&config).expect("json")).expect("write config");
        let mut child = Command::new(bin())
            .args([role, "--config"])
            .arg(&path)
            .env("WHISPER_SERVE_EXIT_ON_STDIN_EOF", "1")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start whisper-serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut url = None;
        for line in lines.by_ref() {
            let line = line.expect("read stdout");
            if let Some(addr) = line.strip_prefix("listening on ") {
                url = Some(format!("http://{addr}"));
                break;
            }
        }
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let url = url.expect("the server printed no listening address");
        let server = Server { child, url, _dir: dir };
        if wait {
            server.wait_healthy(Duration::from_secs(120));
        }
        server
    }

    /// Sends a signal (`-9`, `-TERM`) to the process.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill").args([sig, &self.pid().to_string()]).status().expect("kill").success();
        assert!(ok, "kill {sig} failed");
    }

    /// GETs a JSON route of this process.
    pub fn get_json(&self, path: &str) -> (u16, Value) {
        let r = client().get(format!("{}{path}", self.url)).send().expect("request");
        let status = r.status().as_u16();
        (status, r.json().unwrap_or(Value::Null))
    }

    /// A counter or gauge from this process's /metrics.
    pub fn metric(&self, name: &str) -> f64 {
        let text = client().get(format!("{}/metrics", self.url)).send().expect("metrics").text().expect("text");
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.trim().parse().ok()))
            .unwrap_or(0.0)
    }

    pub fn wait_healthy(&self, limit: Duration) {
        let client = reqwest::blocking::Client::new();
        let start = Instant::now();
        loop {
            if let Ok(r) = client.get(format!("{}/health", self.url)).send() {
                if r.status() == 200 {
                    return;
                }
                let body: Value = r.json().unwrap_or(Value::Null);
                assert_ne!(body["status"], "error", "model failed to load: {body}");
            }
            assert!(start.elapsed() < limit, "server not healthy within {limit:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(start.elapsed() < limit, "the server did not exit within {limit:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.stdin.take().map(|mut s| s.flush());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(900)).build().expect("client")
}

/// POSTs `bytes` as the multipart field `field` named `filename`.
pub fn post_file(url: &str, field: &str, filename: &str, bytes: Vec<u8>) -> (u16, Value) {
    let part = reqwest::blocking::multipart::Part::bytes(bytes).file_name(filename.to_string());
    let form = reqwest::blocking::multipart::Form::new().part(field.to_string(), part);
    let r = client().post(url).multipart(form).send().expect("request");
    let status = r.status().as_u16();
    let text = r.text().unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// POSTs a file with curl, which (like most HTTP clients for large bodies)
/// sends `Expect: 100-continue`, so a refused upload is answered before the
/// body is sent.
pub fn curl_post(url: &str, field: &str, path: &Path) -> (u16, Value) {
    let out = Command::new("curl")
        .args(["-s", "-w", "\\n%{http_code}", "-F"])
        .arg(format!("{field}=@{}", path.display()))
        .arg(url)
        .output()
        .expect("curl is needed by this test (apt-get install curl)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    let body = serde_json::from_str(body).unwrap_or(Value::String(body.to_string()));
    (code.trim().parse().unwrap_or(0), body)
}

pub fn transcribe_file(server: &Server, path: &Path) -> (u16, Value) {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("audio.wav").to_string();
    post_file(&format!("{}/transcribe", server.url), "audio_file", &name, std::fs::read(path).expect("read audio"))
}

/// Every clip with its reference: (path, reference text). The JFK FLAC is
/// the same speech as jfk.wav, so it is counted once (as jfk.wav).
pub fn corpus() -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(speech())
        .expect("../shared/speech")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("refs.tsv").exists())
        .collect();
    dirs.sort();
    for dir in dirs {
        let refs = std::fs::read_to_string(dir.join("refs.tsv")).expect("refs.tsv");
        for line in refs.lines() {
            let Some((file, text)) = line.split_once('\t') else { continue };
            if file == "file" || (dir.ends_with("jfk_openai_whisper") && file == "jfk.flac") {
                continue;
            }
            out.push((dir.join(file), text.to_string()));
        }
    }
    out
}

/// Corpus clips joined, in order, into one 16 kHz mono WAV in `dir`, until
/// `min_seconds` (all of them for `f64::INFINITY`). Returns the file and,
/// for each clip, where it ends in the file (s) and its reference.
pub fn concat_corpus(dir: &Path, min_seconds: f64) -> (PathBuf, Vec<(f64, String)>) {
    let mut parts = Vec::new();
    let mut bounds = Vec::new();
    let mut total = 0.0;
    for (i, (path, reference)) in corpus().iter().enumerate() {
        let out = dir.join(format!("{i:03}.wav"));
        tool("sox", &[path.to_str().unwrap(), "-r", "16000", "-c", "1", "-b", "16", out.to_str().unwrap()]);
        // 16-bit mono at 16 kHz after a 44-byte header (sox writes no other chunk).
        total += (std::fs::metadata(&out).expect("clip").len() - 44) as f64 / 32000.0;
        parts.push(out.to_str().unwrap().to_string());
        bounds.push((total, reference.clone()));
        if total >= min_seconds {
            break;
        }
    }
    let long = dir.join("corpus.wav");
    let mut args: Vec<&str> = parts.iter().map(String::as_str).collect();
    args.push(long.to_str().unwrap());
    tool("sox", &args);
    (long, bounds)
}

pub fn python() -> PathBuf {
    std::env::var_os("WHISPER_SERVE_PYTHON").map(PathBuf::from).unwrap_or_else(|| repo().join(".venv/bin/python"))
}

/// Corpus WER with Whisper's English normaliser (tests/support/wer.py).
pub fn wer(pairs: &[(String, String)]) -> f64 {
    let input: Vec<Value> = pairs.iter().map(|(r, h)| json!({"ref": r, "hyp": h})).collect();
    let mut child = Command::new(python())
        .arg(repo().join("tests/support/wer.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python with jiwer and whisper-normalizer (run .ci/run, or set WHISPER_SERVE_PYTHON)");
    child.stdin.take().expect("stdin").write_all(&serde_json::to_vec(&input).expect("json")).expect("write");
    let out = child.wait_with_output().expect("wer.py");
    assert!(out.status.success(), "wer.py failed");
    String::from_utf8_lossy(&out.stdout).trim().parse().expect("a WER number")
}

/// Runs a command-line tool used to make test audio (sox, ffmpeg).
pub fn tool(cmd: &str, args: &[&str]) {
    let status = Command::new(cmd)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("`{cmd}` is needed by this test (apt-get install sox ffmpeg): {e}"));
    assert!(status.success(), "{cmd} {args:?} failed");
}

/// Normalised cross-correlation of `a` against `b` shifted by `lag`
/// samples, over their overlap.
pub fn ncc(a: &[f32], b: &[f32], lag: isize) -> f64 {
    let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for (i, &x) in a.iter().enumerate() {
        let Some(&y) = usize::try_from(i as isize + lag).ok().and_then(|j| b.get(j)) else {
            continue;
        };
        let (x, y) = (f64::from(x), f64::from(y));
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    ab / (aa * bb).sqrt().max(1e-12)
}

/// What a helper script did, run with a time limit ([`run_limited`]).
pub struct ScriptRun {
    /// It exited 0 (in time).
    pub ok: bool,
    /// It was killed at the limit.
    pub killed: bool,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl ScriptRun {
    /// The last line of stdout that is JSON (the scripts' report), or null.
    pub fn report(&self) -> Value {
        self.stdout.lines().rev().find_map(|l| serde_json::from_str(l).ok()).unwrap_or(Value::Null)
    }
}

/// Runs `cmd` with its output captured, killed after `limit`: a script
/// that hangs fails its test with what it printed instead of hanging it.
pub fn run_limited(mut cmd: Command, limit: Duration) -> ScriptRun {
    use std::io::Read;
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the test's helper (python from .venv: tests/support/requirements.txt; WHISPER_SERVE_PYTHON)");
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("stdout")));
    let err = drain(Box::new(child.stderr.take().expect("stderr")));
    let mut killed = false;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for the helper") {
            break Some(s);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            killed = true;
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = out.join().unwrap_or_default();
    let mut stderr = err.join().unwrap_or_default();
    if killed {
        stderr.push_str(&format!("\n(killed after {limit:?})"));
    }
    ScriptRun { ok: status.is_some_and(|s| s.success()), killed, stdout, stderr, elapsed: start.elapsed() }
}
