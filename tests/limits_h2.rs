//! Bounded resources, end to end with the real binary: idle connections
//! (HTTP/2 and HTTP/1) give their places back, one HTTP/2 connection
//! carries at most `server.http2_max_concurrent_streams` requests at once,
//! form fields are capped, and an address that guesses keys is held back.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{client, jfk_wav, test_config, Server};
use serde_json::{json, Value};

fn addr(server: &Server) -> String {
    server.url.trim_start_matches("http://").to_string()
}

/// The sending half of a client HTTP/2 connection.
type H2Sender = hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>;

/// One HTTP/2 (prior knowledge) connection making one GET; returns the
/// status, the sender (dropping it would let the client close the
/// connection itself) and the task that drives the connection (it ends
/// when the server closes the connection).
async fn h2_get(addr: &str, path: &str) -> (u16, H2Sender, tokio::task::JoinHandle<()>) {
    use http_body_util::Empty;
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut send, conn) = hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .handshake::<_, Empty<bytes::Bytes>>(hyper_util::rt::TokioIo::new(stream))
        .await
        .expect("HTTP/2 handshake");
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = hyper::Request::get(format!("http://{addr}{path}")).body(Empty::new()).expect("request");
    let resp = send.send_request(req).await.expect("HTTP/2 response");
    (resp.status().as_u16(), send, driver)
}

#[test]
fn idle_http2_connections_give_their_places_back() {
    let server = Server::start(test_config(json!({"server": {"max_connections": 4, "idle_timeout_s": 2}})));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let a = addr(&server);
    let (_senders, drivers): (Vec<_>, Vec<_>) = rt.block_on(async {
        let mut conns = Vec::new();
        for _ in 0..4 {
            let (status, sender, driver) = h2_get(&a, "/health/live").await;
            assert_eq!(status, 200);
            conns.push((sender, driver));
        }
        conns.into_iter().unzip()
    });
    // Four idle HTTP/2 connections hold every place; a fifth client gets
    // one once the idle deadline closes them.
    let t = Instant::now();
    let r = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
        .get(format!("{}/health/live", server.url))
        .send()
        .expect("a fifth client is served once idle connections are closed");
    let waited = t.elapsed();
    assert_eq!(r.status().as_u16(), 200);
    assert!(waited >= Duration::from_millis(1000), "served while every place was held ({waited:?})");
    assert!(waited < Duration::from_secs(8), "{waited:?}");
    rt.block_on(async {
        for d in drivers {
            tokio::time::timeout(Duration::from_secs(5), d).await.expect("the server closed the idle connection").unwrap();
        }
    });
}

#[test]
fn idle_http1_keep_alive_connections_are_closed_at_the_idle_deadline() {
    // The header timeout alone would hold the idle connection for 30 s.
    let server = Server::start(test_config(json!({"server": {"max_connections": 1, "idle_timeout_s": 2, "header_timeout_s": 30}})));
    let mut keep = TcpStream::connect(addr(&server)).unwrap();
    keep.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    keep.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 4096];
    let n = keep.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let t = Instant::now();
    let r = client().get(format!("{}/health/live", server.url)).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    assert!(matches!(keep.read(&mut buf), Ok(0) | Err(_)), "the idle keep-alive connection is still open");
}

/// A raw HTTP/2 frame: (type, flags, stream, payload).
fn read_frame(s: &mut TcpStream) -> (u8, u8, u32, Vec<u8>) {
    let mut head = [0u8; 9];
    s.read_exact(&mut head).expect("frame header");
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).expect("frame payload");
    (head[3], head[4], stream, payload)
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_be_bytes();
    let mut f = vec![len[1], len[2], len[3], kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

const SETTINGS: u8 = 0x4;
const HEADERS: u8 = 0x1;
const DATA: u8 = 0x0;
const RST_STREAM: u8 = 0x3;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const REFUSED_STREAM: u32 = 0x7;
const MAX_CONCURRENT_STREAMS: u16 = 0x3;

#[test]
fn one_http2_connection_carries_at_most_the_configured_streams() {
    let server = Server::start(test_config(json!({"server": {"http2_max_concurrent_streams": 4}})));
    let a = addr(&server);
    let mut s = TcpStream::connect(&a).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    s.write_all(&frame(SETTINGS, 0, 0, &[])).unwrap();
    // The server's first frame is its SETTINGS, with the stream limit.
    let (kind, flags, _, payload) = read_frame(&mut s);
    assert_eq!((kind, flags & 1), (SETTINGS, 0), "expected the server's SETTINGS");
    let advertised = payload
        .chunks(6)
        .find(|p| u16::from_be_bytes([p[0], p[1]]) == MAX_CONCURRENT_STREAMS)
        .map(|p| u32::from_be_bytes([p[2], p[3], p[4], p[5]]));
    assert_eq!(advertised, Some(4), "SETTINGS_MAX_CONCURRENT_STREAMS");
    s.write_all(&frame(SETTINGS, 1, 0, &[])).unwrap();

    // 100 GETs at once; HPACK by hand: indexed :method GET (2) and
    // :scheme http (6), literal :path (4) and :authority (1), no Huffman.
    let mut burst = Vec::new();
    for i in 0..100u32 {
        let mut block = vec![0x82, 0x86, 0x04, 12];
        block.extend_from_slice(b"/health/live");
        block.extend_from_slice(&[0x01, a.len() as u8]);
        block.extend_from_slice(a.as_bytes());
        burst.extend(frame(HEADERS, END_HEADERS | END_STREAM, 2 * i + 1, &block));
    }
    s.write_all(&burst).unwrap();
    let (mut answered, mut refused, mut ended) = (0, 0, 0);
    while ended < 100 {
        let (kind, flags, stream, payload) = read_frame(&mut s);
        match kind {
            HEADERS => {
                answered += 1;
                ended += usize::from(flags & END_STREAM != 0);
            }
            DATA => ended += usize::from(flags & END_STREAM != 0),
            RST_STREAM => {
                let code = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
                assert_eq!(code, REFUSED_STREAM, "stream {stream} reset");
                refused += 1;
                ended += 1;
            }
            GOAWAY => panic!("the server gave up on the connection"),
            _ => {}
        }
    }
    assert_eq!(answered + refused, 100);
    assert!(answered >= 4, "{answered} answered");
    assert!(refused > 0, "all {answered} served at once, over the limit of 4");

    // A client that honours the SETTINGS queues the rest: all answered.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        use http_body_util::Empty;
        let stream = tokio::net::TcpStream::connect(&a).await.unwrap();
        let (send, conn) = hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .handshake::<_, Empty<bytes::Bytes>>(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        // Until the server's SETTINGS arrive a client may assume no limit
        // (and see streams over it refused): one request first.
        let mut first = send.clone();
        let status = first.send_request(hyper::Request::get(format!("http://{a}/health/live")).body(Empty::new()).unwrap()).await;
        assert_eq!(status.expect("answered").status().as_u16(), 200);
        let mut all = Vec::new();
        for _ in 0..100 {
            let mut send = send.clone();
            let uri = format!("http://{a}/health/live");
            all.push(tokio::spawn(async move {
                send.ready().await.unwrap();
                send.send_request(hyper::Request::get(uri).body(Empty::new()).unwrap()).await.map(|r| r.status().as_u16())
            }));
        }
        for t in all {
            assert_eq!(t.await.unwrap().map_err(|e| format!("{e:?}")), Ok(200));
        }
    });
    let (s, _) = server.get_json("/health");
    assert_eq!(s, 200);
}

/// POSTs a form of `parts` (name, text) plus the audio under `file_field`
/// (before the text fields when `file_first`).
fn post_form(url: &str, file_field: &str, parts: &[(&str, String)], file_first: bool) -> (u16, String) {
    let file = || reqwest::blocking::multipart::Part::bytes(std::fs::read(jfk_wav()).unwrap()).file_name("jfk.wav");
    let mut form = reqwest::blocking::multipart::Form::new();
    if file_first {
        form = form.part(file_field.to_string(), file());
    }
    for (k, v) in parts {
        form = form.text(k.to_string(), v.clone());
    }
    if !file_first {
        form = form.part(file_field.to_string(), file());
    }
    let r = client().post(url).multipart(form).send().expect("request");
    (r.status().as_u16(), r.text().unwrap_or_default())
}

#[test]
fn oversized_form_fields_are_refused_without_being_echoed() {
    let server = Server::start(test_config(json!({})));
    let huge = "ask not ".repeat(10 * 1024 * 1024 / 8);
    let cases: [(&str, &str, &str, bool); 3] = [
        ("/v1/audio/transcriptions", "file", "prompt", false),
        ("/transcribe", "audio_file", "initial_prompt", false),
        // Jobs stream the audio in first; a field refused after it is answered at once.
        ("/v1/jobs", "file", "prompt", true),
    ];
    for (path, file_field, prompt_field, file_first) in cases {
        let url = format!("{}{path}", server.url);
        let mut parts = vec![(prompt_field, huge.clone())];
        if path.starts_with("/v1/") {
            parts.push(("model", "whisper-1".to_string()));
        }
        let t = Instant::now();
        let (s, body) = post_form(&url, file_field, &parts, file_first);
        assert_eq!(s, 400, "{path}: {body}");
        assert!(body.len() < 300, "{path}: a {}-byte answer", body.len());
        assert!(body.contains(prompt_field) && body.contains("4096"), "{path}: {body}");
        assert!(!body.contains("ask not ask not"), "{path} quoted the value: {body}");
        assert!(t.elapsed() < Duration::from_secs(20), "{path}: {:?}", t.elapsed());
        if path.starts_with("/v1/") {
            let e: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(e["error"]["code"], "field_too_large", "{body}");
        }
        let (s, _) = server.get_json("/health");
        assert_eq!(s, 200, "{path}: not healthy after the refusal");
        let mut normal = vec![(prompt_field, "President Kennedy's inaugural address.".to_string())];
        if path.starts_with("/v1/") {
            normal.push(("model", "whisper-1".to_string()));
        }
        let (s, body) = post_form(&url, file_field, &normal, file_first);
        assert!(s == 200 || s == 202, "{path}: {s} {body}");
    }
    // Other fields have the same cap, and values quoted in errors are cut.
    let url = format!("{}/v1/audio/transcriptions", server.url);
    let (s, body) = post_form(&url, "file", &[("model", "m".repeat(5000))], false);
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("field_too_large"), "{body}");
    let (s, body) = post_form(&url, "file", &[("model", "m".repeat(4000))], false);
    assert_eq!(s, 404, "{body}");
    assert!(body.len() < 400, "the model's name quoted whole: {body}");
}

const KEY: &str = "sk-test-alice-0123456789";

#[test]
fn an_address_that_guesses_keys_is_held_back() {
    let server = Server::start(test_config(json!({"auth": {"api_keys": [{"id": "alice", "key": KEY}]}})));
    let models = |key: Option<&str>| {
        let mut req = client().get(format!("{}/v1/models", server.url));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let r = req.send().unwrap();
        let retry = r.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        (r.status().as_u16(), retry)
    };
    // No key guesses nothing: never held back for it.
    for _ in 0..20 {
        assert_eq!(models(None).0, 401);
    }
    let statuses: Vec<(u16, Option<u64>)> = (0..15).map(|i| models(Some(&format!("sk-wrong-guess-{i:04}")))).collect();
    assert!(statuses[..10].iter().all(|(s, _)| *s == 401), "{statuses:?}");
    for (s, retry) in &statuses[10..] {
        assert_eq!(*s, 429, "{statuses:?}");
        assert!(retry.is_some_and(|r| (1..=7).contains(&r)), "{statuses:?}");
    }
    // Held back, the right key is not even looked at...
    let (s, retry) = models(Some(KEY));
    assert_eq!(s, 429);
    // ...until the bucket has room again.
    std::thread::sleep(Duration::from_secs(retry.unwrap_or(6) + 1));
    assert_eq!(models(Some(KEY)).0, 200);
    // Right keys never count.
    for _ in 0..20 {
        assert_eq!(models(Some(KEY)).0, 200);
    }
}

/// `limits.max_queued_audio_s`: the engine's queue is bounded in seconds of
/// decoded audio as well as in count. A long file is taken into an empty
/// queue; a short one behind it, past the bound, is answered 503 at once,
/// and taken again once the long one is done.
#[test]
fn the_queue_is_bounded_in_audio_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let (long, _) = common::concat_corpus(dir.path(), 240.0);
    let server = Server::start(test_config(json!({
        "deployment": {"num_replicas": 1, "cpu_per_replica": 2},
        "batching": {"max_batch_size": 1},
        "limits": {"max_queued_audio_s": 30},
    })));
    let url = format!("{}/v1/audio/transcriptions", server.url);
    let send = |path: std::path::PathBuf| {
        let part = reqwest::blocking::multipart::Part::bytes(std::fs::read(path).unwrap()).file_name("a.wav");
        let form = reqwest::blocking::multipart::Form::new().part("file", part).text("model", "whisper-1");
        let r = client().post(&url).multipart(form).send().unwrap();
        (r.status().as_u16(), r.json::<Value>().unwrap_or(Value::Null))
    };
    let long_done = std::thread::scope(|scope| {
        let long_req = scope.spawn(|| send(long.clone()));
        // Uploaded and decoded by then; its 4 minutes take the engine
        // several seconds more.
        std::thread::sleep(Duration::from_millis(1500));
        let (s, e) = send(jfk_wav());
        assert_eq!(s, 503, "{e}");
        assert_eq!(e["error"]["code"], "queue_full", "{e}");
        long_req.join().unwrap()
    });
    assert_eq!(long_done.0, 200, "{}", long_done.1);
    let (s, v) = send(jfk_wav());
    assert_eq!(s, 200, "{v}");
}
