//! `whisper-serve loadtest`: a closed-loop load generator for any server
//! with this API, the Rust successor of the peers' `loadtest.py`. It prints
//! the same table (plus throughput and the change against the previous run)
//! and writes it as Markdown, JSON and an SVG chart.

mod chart;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bytes::Bytes;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::multipart::{Form, Part};
use reqwest::Url;
use serde::Serialize;
use serde_json::{json, Value};

/// Bad arguments or input files: the command exits with status 2, as clap
/// does for the errors it catches itself.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Endpoint {
    /// `POST /transcribe`, multipart field `audio_file`.
    Transcribe,
    /// `POST /v1/audio/transcriptions`, fields `file` and `model=whisper-1`.
    Openai,
}

impl Endpoint {
    fn path(self) -> &'static str {
        match self {
            Endpoint::Transcribe => "/transcribe",
            Endpoint::Openai => "/v1/audio/transcriptions",
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Base URL of the server, e.g. http://127.0.0.1:8000
    #[arg(value_parser = parse_base_url)]
    pub url: Url,
    /// Audio files to send, cycled through in order.
    #[arg(long, num_args = 1.., required = true)]
    pub audio: Vec<PathBuf>,
    /// Concurrency levels, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "4,8,16,32,64,128,192,256,512",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub levels: Vec<u32>,
    /// Requests per level (at least the level's concurrency are sent).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    pub per_level: u32,
    /// Seconds before a request counts as failed.
    #[arg(long, default_value_t = 600.0, value_parser = parse_positive_secs)]
    pub timeout: f64,
    #[arg(long, value_enum, default_value_t = Endpoint::Transcribe)]
    pub endpoint: Endpoint,
    /// Folder for <name>.md, <name>.json and <name>.svg.
    #[arg(long, default_value = "bench/out")]
    pub out: PathBuf,
    #[arg(long, default_value = "loadtest")]
    pub name: String,
    /// A previous run's JSON to compare with (default: <out>/<name>.json, if there).
    #[arg(long)]
    pub compare: Option<PathBuf>,
}

fn parse_base_url(s: &str) -> Result<Url, String> {
    let url = Url::parse(s).map_err(|e| format!("not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err("expected an http:// or https:// URL with a host".into());
    }
    Ok(url)
}

fn parse_positive_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err("expected a positive number of seconds".into()),
    }
}

struct AudioFile {
    path: PathBuf,
    name: String,
    bytes: Bytes,
    duration_s: f64,
}

/// One finished request.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub latency_s: f64,
    pub ok: bool,
    pub audio_s: f64,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LevelStats {
    pub concurrency: u32,
    pub requests: usize,
    pub errors: usize,
    pub error_rate: f64,
    pub avg_latency_s: f64,
    pub p50_latency_s: f64,
    pub p95_latency_s: f64,
    pub max_latency_s: f64,
    pub requests_per_s: f64,
    pub audio_s_per_s: f64,
    pub wall_s: f64,
    /// Audio seconds of the successful requests.
    pub audio_s: f64,
    pub first_error: Option<String>,
    /// Change against the previous run's same level, in %.
    pub avg_latency_change_pct: Option<f64>,
    pub audio_s_per_s_change_pct: Option<f64>,
}

/// The `p`-th percentile by the nearest-rank method: the smallest value
/// with at least p% of the values at or below it. Integer arithmetic, so
/// that 95% of 20 is rank 19 and not 20 through rounding.
pub fn nearest_rank(sorted: &[f64], p: u32) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let n = sorted.len();
    let rank = (p as usize * n).div_ceil(100).clamp(1, n);
    sorted[rank - 1]
}

pub fn mean(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        0.0
    } else {
        xs.iter().sum::<f64>() / xs.len() as f64
    }
}

/// Relative change in %, or None where there is nothing to compare with.
pub fn change_pct(previous: f64, now: f64) -> Option<f64> {
    if previous.is_finite() && now.is_finite() && previous != 0.0 {
        Some((now - previous) / previous * 100.0)
    } else {
        None
    }
}

pub fn summarize(concurrency: u32, outcomes: &[Outcome], wall_s: f64) -> LevelStats {
    let mut latencies: Vec<f64> = outcomes.iter().map(|o| o.latency_s).collect();
    latencies.sort_by(f64::total_cmp);
    let requests = outcomes.len();
    let errors = outcomes.iter().filter(|o| !o.ok).count();
    // Not `sum()`: an empty f64 sum is -0.0, which prints as "-0.0".
    let audio_s = outcomes.iter().filter(|o| o.ok).fold(0.0, |acc, o| acc + o.audio_s);
    let per_s = |x: f64| if wall_s > 0.0 { x / wall_s } else { 0.0 };
    LevelStats {
        concurrency,
        requests,
        errors,
        error_rate: if requests == 0 { 0.0 } else { errors as f64 / requests as f64 },
        avg_latency_s: mean(&latencies),
        p50_latency_s: nearest_rank(&latencies, 50),
        p95_latency_s: nearest_rank(&latencies, 95),
        max_latency_s: latencies.last().copied().unwrap_or(0.0),
        requests_per_s: per_s(requests as f64),
        audio_s_per_s: per_s(audio_s),
        wall_s,
        audio_s,
        first_error: outcomes.iter().find_map(|o| o.error.clone()),
        avg_latency_change_pct: None,
        audio_s_per_s_change_pct: None,
    }
}

/// Fills in the change columns from a previous run's JSON, level by level.
pub fn compare_with(stats: &mut LevelStats, previous: &Value) {
    let Some(levels) = previous["levels"].as_array() else { return };
    let Some(old) = levels.iter().find(|l| l["concurrency"].as_u64() == Some(stats.concurrency as u64)) else {
        return;
    };
    let old_f = |key: &str| old[key].as_f64().unwrap_or(f64::NAN);
    stats.avg_latency_change_pct = change_pct(old_f("avg_latency_s"), stats.avg_latency_s);
    stats.audio_s_per_s_change_pct = change_pct(old_f("audio_s_per_s"), stats.audio_s_per_s);
}

pub const TABLE_HEADER: &str = "| concurrency | avg latency (s) | p95 latency (s) | error rate | req/s | audio s/s | change vs previous |\n|---|---|---|---|---|---|---|";

pub fn table_row(s: &LevelStats) -> String {
    let pct = |p: Option<f64>| p.map_or("n/a".to_string(), |p| format!("{p:+.1}%"));
    let change = if s.avg_latency_change_pct.is_none() && s.audio_s_per_s_change_pct.is_none() {
        "n/a".to_string()
    } else {
        format!("latency {}, audio s/s {}", pct(s.avg_latency_change_pct), pct(s.audio_s_per_s_change_pct))
    };
    format!(
        "| {} | {:.2} | {:.2} | {:.1}% | {:.2} | {:.1} | {} |",
        s.concurrency,
        s.avg_latency_s,
        s.p95_latency_s,
        s.error_rate * 100.0,
        s.requests_per_s,
        s.audio_s_per_s,
        change
    )
}

/// Whether a finished HTTP exchange counts as a success; the error otherwise.
pub fn check_response(endpoint: Endpoint, status: u16, body: &[u8]) -> Result<(), String> {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let ok = status == 200
        && match (endpoint, &json) {
            (Endpoint::Transcribe, Some(v)) => v["success"] == Value::Bool(true),
            (Endpoint::Openai, Some(v)) => v["text"].is_string(),
            (_, None) => false,
        };
    if ok {
        return Ok(());
    }
    let detail = match &json {
        Some(v) => match (&v["error"], &v["detail"]) {
            (Value::String(e), _) | (_, Value::String(e)) => e.clone(),
            (e, _) if !e.is_null() => e.to_string(),
            _ => v.to_string(),
        },
        None => String::from_utf8_lossy(body).into_owned(),
    };
    let detail: String = detail.chars().take(200).collect();
    Err(format!("HTTP {status}: {detail}"))
}

/// reqwest's Display hides the cause ("error sending request"); the chain
/// says what happened (connection refused, timed out, ...).
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".into();
    }
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

async fn send(client: &reqwest::Client, url: &Url, endpoint: Endpoint, file: &AudioFile) -> Result<(), String> {
    // A stream part shares the file's bytes instead of copying them per request.
    let part = Part::stream_with_length(reqwest::Body::from(file.bytes.clone()), file.bytes.len() as u64)
        .file_name(file.name.clone());
    let form = match endpoint {
        Endpoint::Transcribe => Form::new().part("audio_file", part),
        Endpoint::Openai => Form::new().part("file", part).text("model", "whisper-1"),
    };
    let response = client.post(url.clone()).multipart(form).send().await.map_err(|e| describe(&e))?;
    let status = response.status().as_u16();
    let body = response.bytes().await.map_err(|e| describe(&e))?;
    check_response(endpoint, status, &body)
}

async fn run_level(
    client: &reqwest::Client,
    url: &Url,
    endpoint: Endpoint,
    files: &Arc<Vec<AudioFile>>,
    concurrency: u32,
    total: usize,
) -> anyhow::Result<(Vec<Outcome>, f64)> {
    let bar = ProgressBar::new(total as u64);
    let style = ProgressStyle::with_template("{prefix:>8} [{bar:30}] {pos}/{len} requests, {elapsed}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style.progress_chars("=> "));
    bar.set_prefix(format!("C={concurrency}"));
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::with_capacity(concurrency as usize);
    for _ in 0..concurrency {
        let (client, url, files, next, bar) = (client.clone(), url.clone(), files.clone(), next.clone(), bar.clone());
        workers.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return outcomes;
                }
                let file = &files[i % files.len()];
                let t = Instant::now();
                let result = send(&client, &url, endpoint, file).await;
                let latency_s = t.elapsed().as_secs_f64();
                outcomes.push(Outcome {
                    latency_s,
                    ok: result.is_ok(),
                    audio_s: file.duration_s,
                    error: result.err(),
                });
                bar.inc(1);
            }
        }));
    }
    let mut outcomes = Vec::with_capacity(total);
    for worker in workers {
        outcomes.extend(worker.await.context("a load worker failed")?);
    }
    let wall_s = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    Ok((outcomes, wall_s))
}

fn load_files(paths: &[PathBuf]) -> Result<Vec<AudioFile>, UsageError> {
    let mut files = Vec::with_capacity(paths.len());
    for path in paths {
        let bytes = std::fs::read(path).map_err(|e| UsageError(format!("cannot read {}: {e}", path.display())))?;
        let samples = crate::audio::decode(&bytes, f64::INFINITY)
            .map_err(|e| UsageError(format!("{}: not usable audio: {e}", path.display())))?;
        let name = path.file_name().map_or_else(|| "audio".into(), |n| n.to_string_lossy().into_owned());
        let duration_s = samples.len() as f64 / crate::audio::SAMPLE_RATE as f64;
        files.push(AudioFile { path: path.clone(), name, bytes: Bytes::from(bytes), duration_s });
    }
    Ok(files)
}

/// The previous run to compare with: `--compare` must be readable; the
/// default one is used only if it is there and parses.
fn load_previous(args: &Args, default: &Path) -> Result<Option<(PathBuf, Value)>, UsageError> {
    let read = |p: &Path| -> Result<Value, String> {
        let text = std::fs::read_to_string(p).map_err(|e| e.to_string())?;
        serde_json::from_str(&text).map_err(|e| e.to_string())
    };
    match &args.compare {
        Some(p) => read(p)
            .map(|v| Some((p.clone(), v)))
            .map_err(|e| UsageError(format!("--compare {}: {e}", p.display()))),
        None if default.exists() => match read(default) {
            Ok(v) => Ok(Some((default.to_path_buf(), v))),
            Err(e) => {
                eprintln!("not comparing with {}: {e}", default.display());
                Ok(None)
            }
        },
        None => Ok(None),
    }
}

/// RFC 3339 UTC without a date crate (civil-from-days, H. Hinnant).
fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.name.is_empty() || args.name.contains(['/', '\\']) || args.name.starts_with('.') {
        return Err(UsageError(format!("--name {:?}: expected a plain file name stem", args.name)).into());
    }
    let base = args.url.as_str().trim_end_matches('/');
    let url = Url::parse(&format!("{base}{}", args.endpoint.path()))
        .map_err(|e| UsageError(format!("{}: {e}", args.url)))?;
    // Fail on an unwritable folder now, not after an hour of load.
    std::fs::create_dir_all(&args.out)
        .map_err(|e| UsageError(format!("--out {}: {e}", args.out.display())))?;
    let json_path = args.out.join(format!("{}.json", args.name));
    let previous = load_previous(&args, &json_path)?;

    let paths = args.audio.clone();
    let files = tokio::task::spawn_blocking(move || load_files(&paths)).await.context("decoding the audio")??;
    let total_audio_s: f64 = files.iter().map(|f| f.duration_s).sum();
    let files = Arc::new(files);

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs_f64(args.timeout))
        .pool_max_idle_per_host(usize::MAX)
        .build()
        .context("cannot build the HTTP client")?;

    let header = format!(
        "Load test of {url} ({} file(s), {total_audio_s:.1} s of audio, {} requests per level at least){}",
        files.len(),
        args.per_level,
        previous.as_ref().map_or(String::new(), |(p, v)| format!(
            "; compared with {} ({})",
            p.display(),
            v["timestamp"].as_str().unwrap_or("undated")
        )),
    );
    let started_at = SystemTime::now();
    println!("{header}\n\n{TABLE_HEADER}");
    let mut rows = Vec::with_capacity(args.levels.len());
    for &c in &args.levels {
        let total = (args.per_level as usize).max(c as usize);
        let (outcomes, wall_s) = run_level(&client, &url, args.endpoint, &files, c, total).await?;
        let mut stats = summarize(c, &outcomes, wall_s);
        if let Some((_, prev)) = &previous {
            compare_with(&mut stats, prev);
        }
        println!("{}", table_row(&stats));
        if let Some(e) = &stats.first_error {
            eprintln!("C={c}: {} of {} requests failed, e.g. {e}", stats.errors, stats.requests);
        }
        rows.push(stats);
    }

    let table: Vec<String> = rows.iter().map(table_row).collect();
    let md = format!(
        "{header}\n\nFiles: {}\n\n{TABLE_HEADER}\n{}\n",
        files.iter().map(|f| format!("{} ({:.1} s)", f.path.display(), f.duration_s)).collect::<Vec<_>>().join(", "),
        table.join("\n")
    );
    let report = json!({
        "url": args.url.as_str(),
        "request_url": url.as_str(),
        "endpoint": args.endpoint,
        "timestamp": rfc3339(started_at),
        "per_level": args.per_level,
        "timeout_s": args.timeout,
        "files": files.iter().map(|f| json!({"path": f.path, "duration_s": f.duration_s})).collect::<Vec<_>>(),
        "total_audio_s": total_audio_s,
        "compared_with": previous.as_ref().map(|(p, _)| p),
        "levels": rows,
    });
    let svg = chart::render(&rows, &format!("{url}, {} file(s), {total_audio_s:.1} s of audio", files.len()))?;
    let write = |ext: &str, data: &[u8]| -> anyhow::Result<()> {
        let path = args.out.join(format!("{}.{ext}", args.name));
        std::fs::write(&path, data).with_context(|| format!("cannot write {}", path.display()))
    };
    write("md", md.as_bytes())?;
    write("json", &serde_json::to_vec_pretty(&report)?)?;
    write("svg", svg.as_bytes())?;
    eprintln!("wrote {}", args.out.join(format!("{}.{{md,json,svg}}", args.name)).display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(latency_s: f64, ok: bool) -> Outcome {
        Outcome { latency_s, ok, audio_s: 10.0, error: (!ok).then(|| "x".to_string()) }
    }

    #[test]
    fn nearest_rank_percentiles() {
        let xs: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(nearest_rank(&xs, 95), 19.0);
        assert_eq!(nearest_rank(&xs, 50), 10.0);
        assert_eq!(nearest_rank(&xs, 100), 20.0);
        assert_eq!(nearest_rank(&[1.0, 2.0, 3.0], 95), 3.0);
        assert_eq!(nearest_rank(&[1.0, 2.0, 3.0], 50), 2.0);
        assert_eq!(nearest_rank(&[7.0], 95), 7.0);
        assert_eq!(nearest_rank(&[], 95), 0.0);
        let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(nearest_rank(&hundred, 95), 95.0);
    }

    #[test]
    fn level_summary_and_change() {
        let outcomes = [outcome(1.0, true), outcome(3.0, false), outcome(2.0, true), outcome(4.0, true)];
        let mut s = summarize(2, &outcomes, 2.0);
        assert_eq!((s.requests, s.errors), (4, 1));
        assert_eq!(s.error_rate, 0.25);
        assert_eq!(s.avg_latency_s, 2.5);
        assert_eq!(s.p50_latency_s, 2.0);
        assert_eq!(s.p95_latency_s, 4.0);
        assert_eq!(s.max_latency_s, 4.0);
        assert_eq!(s.requests_per_s, 2.0);
        assert_eq!(s.audio_s_per_s, 15.0); // 3 successes x 10 s over 2 s
        let failed = summarize(1, &[outcome(1.0, false)], 1.0);
        assert!(failed.audio_s_per_s == 0.0 && failed.audio_s_per_s.is_sign_positive());
        assert_eq!(s.first_error.as_deref(), Some("x"));
        assert!(table_row(&s).ends_with("| n/a |"));

        let previous = json!({"levels": [{"concurrency": 2, "avg_latency_s": 2.0, "audio_s_per_s": 20.0}]});
        compare_with(&mut s, &previous);
        assert_eq!(s.avg_latency_change_pct, Some(25.0));
        assert_eq!(s.audio_s_per_s_change_pct, Some(-25.0));
        assert!(table_row(&s).contains("latency +25.0%, audio s/s -25.0%"), "{}", table_row(&s));

        assert_eq!(change_pct(0.0, 5.0), None);
        assert_eq!(change_pct(f64::NAN, 5.0), None);
        assert_eq!(mean(&[]), 0.0);
    }

    #[test]
    fn responses_are_judged_per_endpoint() {
        let ok = br#"{"success":true,"text":"hi","error":null}"#;
        assert!(check_response(Endpoint::Transcribe, 200, ok).is_ok());
        assert!(check_response(Endpoint::Openai, 200, br#"{"text":"hi"}"#).is_ok());
        let e = check_response(Endpoint::Transcribe, 503, br#"{"success":false,"error":"queue full"}"#);
        assert_eq!(e, Err("HTTP 503: queue full".into()));
        assert!(check_response(Endpoint::Transcribe, 200, br#"{"success":false}"#).is_err());
        assert!(check_response(Endpoint::Openai, 404, b"Not Found").is_err());
        assert!(check_response(Endpoint::Openai, 200, br#"{"success":true}"#).is_err());
    }

    #[test]
    fn timestamps_and_urls() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(951_827_696)), "2000-02-29T12:34:56Z");
        assert!(parse_base_url("http://127.0.0.1:8000").is_ok());
        assert!(parse_base_url("127.0.0.1:8000").is_err());
        assert!(parse_base_url("ftp://host/").is_err());
        assert!(parse_positive_secs("0").is_err());
    }
}
