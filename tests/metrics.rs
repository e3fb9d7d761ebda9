//! `/metrics` and OpenTelemetry traces of the real binary (tiny.en, real
//! speech): exact deltas of the Prometheus text between two scrapes around
//! known requests, and spans received by a local OTLP/HTTP collector, from
//! one process and across a gateway and a worker over NATS.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::{cluster_config, wait_ready, Nats};
use common::{client, jfk_wav, test_config, transcribe_file, Server};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use serde_json::json;

// ---------------------------------------------------------------------------
// A small Prometheus text parser

type Labels = BTreeMap<String, String>;

/// One scrape: every sample, and the `# TYPE` of each family.
#[derive(Debug, Default)]
struct Scrape {
    samples: Vec<(String, Labels, f64)>,
    types: HashMap<String, String>,
}

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut s = Scrape::default();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap_or_else(|| panic!("bad TYPE line {line:?}"));
                s.types.insert(name.to_string(), kind.trim().to_string());
            } else if !line.starts_with('#') {
                s.samples.push(parse_sample(line));
            }
        }
        s
    }

    /// The value of the sample with exactly these labels.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: Labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.samples.iter().find(|(n, l, _)| n == name && *l == want).map(|(_, _, v)| *v)
    }

    /// Like `get`, 0 when absent (a counter not yet incremented).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or(0.0)
    }

    fn has_family(&self, name: &str) -> bool {
        self.types.contains_key(name) || self.samples.iter().any(|(n, _, _)| n == name)
    }
}

/// `name{a="x",b="y"} value [timestamp]`.
fn parse_sample(line: &str) -> (String, Labels, f64) {
    let name_end = line.find(['{', ' ']).unwrap_or_else(|| panic!("bad sample {line:?}"));
    let name = line[..name_end].to_string();
    let mut labels = Labels::new();
    let mut rest = &line[name_end..];
    if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices();
        let mut end = None;
        loop {
            // key
            let mut key = String::new();
            let mut closed = false;
            for (i, c) in chars.by_ref() {
                match c {
                    '=' => break,
                    '}' => {
                        end = Some(i);
                        closed = true;
                        break;
                    }
                    ',' | ' ' => {}
                    c => key.push(c),
                }
            }
            if closed {
                break;
            }
            assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "label value must be quoted: {line:?}");
            let mut value = String::new();
            while let Some((_, c)) = chars.next() {
                match c {
                    '\\' => match chars.next().map(|(_, c)| c) {
                        Some('n') => value.push('\n'),
                        Some(other) => value.push(other),
                        None => panic!("bad escape in {line:?}"),
                    },
                    '"' => break,
                    c => value.push(c),
                }
            }
            labels.insert(key, value);
        }
        let end = end.unwrap_or_else(|| panic!("unclosed labels in {line:?}"));
        rest = &body[end + 1..];
    }
    let value = rest.split_whitespace().next().unwrap_or_else(|| panic!("no value in {line:?}"));
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().unwrap_or_else(|e| panic!("bad value {v:?} in {line:?}: {e}")),
    };
    (name, labels, value)
}

#[test]
fn parser_reads_labels_escapes_and_specials() {
    let s = Scrape::parse(concat!(
        "# HELP a_total x\n# TYPE a_total counter\na_total{route=\"/v1/jobs/{id}\",status=\"200\"} 3\n",
        "b{q=\"say \\\"hi\\\", ok\"} 1.5 1700000000\nc 4\nh_bucket{le=\"+Inf\"} 7\n",
    ));
    assert_eq!(s.get("a_total", &[("route", "/v1/jobs/{id}"), ("status", "200")]), Some(3.0));
    assert_eq!(s.get("b", &[("q", "say \"hi\", ok")]), Some(1.5));
    assert_eq!(s.get("c", &[]), Some(4.0));
    assert_eq!(s.get("h_bucket", &[("le", "+Inf")]), Some(7.0));
    assert_eq!(s.types.get("a_total").map(String::as_str), Some("counter"));
}

fn scrape(server: &Server) -> Scrape {
    let r = client().get(format!("{}/metrics", server.url)).send().expect("scrape");
    assert_eq!(r.status().as_u16(), 200);
    let ct = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    assert!(ct.starts_with("text/plain"), "content type {ct}");
    Scrape::parse(&r.text().expect("metrics text"))
}

// ---------------------------------------------------------------------------
// Metrics

#[test]
fn metrics_move_by_exactly_what_was_sent() {
    let server = Server::start(test_config(json!({})));
    let before = scrape(&server);
    for _ in 0..2 {
        let (status, body) = transcribe_file(&server, &jfk_wav());
        assert_eq!(status, 200, "{body}");
    }
    let unknown = client().get(format!("{}/no/such/route", server.url)).send().expect("request");
    assert_eq!(unknown.status().as_u16(), 404);
    let after = scrape(&server);
    let delta = |name: &str, labels: &[(&str, &str)]| after.value(name, labels) - before.value(name, labels);

    // HTTP, by route template and status; an unknown path is "unmatched",
    // never its raw URI. The first scrape counts itself once it answered.
    assert_eq!(delta("whisper_serve_http_requests_total", &[("route", "/transcribe"), ("status", "200")]), 2.0);
    assert_eq!(delta("whisper_serve_http_requests_total", &[("route", "unmatched"), ("status", "404")]), 1.0);
    assert_eq!(delta("whisper_serve_http_requests_total", &[("route", "/metrics"), ("status", "200")]), 1.0);
    assert!(
        !after.samples.iter().any(|(_, l, _)| l.values().any(|v| v.contains("no/such"))),
        "a raw path became a label"
    );
    assert_eq!(delta("whisper_serve_http_request_duration_seconds_count", &[("route", "/transcribe")]), 2.0);
    assert_eq!(after.types.get("whisper_serve_http_request_duration_seconds").map(String::as_str), Some("histogram"));

    // The pool's counters, as before.
    assert_eq!(delta("whisper_serve_jobs_done_total", &[]), 2.0);
    assert_eq!(delta("whisper_serve_jobs_failed_total", &[]), 0.0);
    let audio = delta("whisper_serve_audio_seconds_total", &[]);
    assert!((audio - 22.0).abs() <= 0.1, "audio seconds +{audio}, expected +22 (2 x 11 s)");
    assert_eq!(after.types.get("whisper_serve_audio_seconds_total").map(String::as_str), Some("counter"));
    assert_eq!(after.get("whisper_serve_ready", &[]), Some(1.0));
    assert_eq!(after.get("whisper_serve_running", &[]), Some(0.0));
    assert_eq!(after.get("whisper_serve_queue_length", &[]), Some(0.0));
    assert!(delta("whisper_serve_batch_steps_total", &[]) >= 1.0);
    assert!(delta("whisper_serve_batch_windows_total", &[]) >= 2.0, "one 30 s window each");
    assert!(after.value("whisper_serve_batch_size_max", &[]) >= 1.0);

    // Distributions: one sample per transcription, one per step.
    for h in ["whisper_serve_queue_wait_seconds", "whisper_serve_inference_seconds", "whisper_serve_real_time_factor"] {
        assert_eq!(after.types.get(h).map(String::as_str), Some("histogram"), "{h}");
        assert_eq!(delta(&format!("{h}_count"), &[]), 2.0, "{h}");
        assert_eq!(after.value(&format!("{h}_bucket"), &[("le", "+Inf")]), after.value(&format!("{h}_count"), &[]), "{h}");
    }
    assert!(after.get("whisper_serve_queue_wait_seconds_bucket", &[("le", "600")]).is_some(), "latency buckets reach 600 s");
    let rtf = delta("whisper_serve_real_time_factor_sum", &[]) / 2.0;
    assert!(rtf > 0.0 && rtf < 5.0, "mean real-time factor {rtf}");
    assert!(delta("whisper_serve_batch_size_count", &[]) >= 1.0);
    assert!(delta("whisper_serve_batch_size_sum", &[]) >= 2.0, "2 windows in all");
    assert!(delta("whisper_serve_replica_busy_seconds_total", &[("replica", "0")]) > 0.0);
    assert_eq!(after.types.get("whisper_serve_replica_busy_seconds_total").map(String::as_str), Some("counter"));

    // Process gauges. On CPU the GPU series is absent (no device to label).
    assert!(after.value("whisper_serve_process_resident_memory_bytes", &[]) > 10e6);
    assert!(after.value("whisper_serve_model_load_seconds", &[]) > 0.0);
    assert!(!after.has_family("whisper_serve_gpu_memory_used_bytes"), "GPU memory on a CPU run");
}

// ---------------------------------------------------------------------------
// Traces

/// A local OTLP/HTTP collector: records the body of every POST /v1/traces.
struct Collector {
    url: String,
    bodies: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Collector {
    fn start() -> Collector {
        let bodies: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let store = bodies.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async move {
                let app = axum::Router::new().route(
                    "/v1/traces",
                    axum::routing::post(move |body: axum::body::Bytes| async move {
                        store.lock().expect("lock").push(body.to_vec());
                        // An empty ExportTraceServiceResponse: all accepted.
                        ([("content-type", "application/x-protobuf")], Vec::<u8>::new())
                    }),
                );
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                axum::serve(listener, app).await.expect("collector");
            });
        });
        Collector { url, bodies }
    }

    /// Every span received so far.
    fn spans(&self) -> Vec<Span> {
        let bodies = self.bodies.lock().expect("lock").clone();
        let mut out = Vec::new();
        for body in bodies {
            assert!(!body.is_empty(), "an empty export");
            let req = ExportTraceServiceRequest::decode(body.as_slice()).expect("OTLP protobuf");
            for rs in req.resource_spans {
                let service = rs
                    .resource
                    .iter()
                    .flat_map(|r| &r.attributes)
                    .find(|kv| kv.key == "service.name")
                    .and_then(|kv| kv.value.as_ref())
                    .and_then(|v| match &v.value {
                        Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s)) => Some(s.clone()),
                        _ => None,
                    })
                    .unwrap_or_default();
                for ss in rs.scope_spans {
                    for s in ss.spans {
                        out.push(Span {
                            service: service.clone(),
                            name: s.name,
                            trace: s.trace_id,
                            id: s.span_id,
                            parent: s.parent_span_id,
                            links: s.links.into_iter().map(|l| l.span_id).collect(),
                        });
                    }
                }
            }
        }
        out
    }

    /// Waits until `done` holds for the spans received.
    fn wait_for(&self, what: &str, done: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        let start = Instant::now();
        loop {
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            let names: Vec<(&str, &str)> = spans.iter().map(|s| (s.service.as_str(), s.name.as_str())).collect();
            assert!(start.elapsed() < Duration::from_secs(30), "no {what} within 30 s; got {names:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[derive(Debug, Clone)]
struct Span {
    service: String,
    name: String,
    trace: Vec<u8>,
    id: Vec<u8>,
    parent: Vec<u8>,
    links: Vec<Vec<u8>>,
}

fn find<'a>(spans: &'a [Span], service: &str, name: &str) -> Option<&'a Span> {
    spans.iter().find(|s| s.service == service && s.name == name)
}

/// Exports every 200 ms instead of 5 s, so spans arrive while the test waits.
const FAST_EXPORT: [(&str, &str); 1] = [("OTEL_BSP_SCHEDULE_DELAY", "200")];

fn traced(service: &str, collector: &Collector) -> serde_json::Value {
    json!({
        // Spans below the log level are not created.
        "logging": {"level": "INFO"},
        "telemetry": {"otlp_endpoint": collector.url, "service_name": service},
    })
}

#[test]
fn spans_of_a_request_reach_the_collector() {
    let collector = Collector::start();
    let mut config = test_config(traced("whisper-serve-test", &collector));
    common::merge_json(&mut config, json!({"batching": {"max_batch_size": 4, "max_wait_ms": 1000}}));
    let server = Server::start_env(config, &FAST_EXPORT);
    let (status, body) = transcribe_file(&server, &jfk_wav());
    assert_eq!(status, 200, "{body}");
    let svc = "whisper-serve-test";
    let names = ["request", "queue_wait", "inference", "decode_step", "encode", "generate"];
    // The health probes of the harness have request spans too: the one
    // wanted is in the trace of the transcription's spans.
    let in_trace = |s: &[Span], n: &str| {
        let queue = find(s, svc, "queue_wait")?;
        s.iter().find(|x| x.service == svc && x.name == n && x.trace == queue.trace).cloned()
    };
    let spans = collector.wait_for("spans of the request", |s| names.iter().all(|n| in_trace(s, n).is_some()));
    let get = |n: &str| in_trace(&spans, n).expect("span");
    let (request, queue, inference, step) = (get("request"), get("queue_wait"), get("inference"), get("decode_step"));
    assert_eq!(request.trace.len(), 16);
    assert!(request.parent.is_empty(), "the request span is the root");
    // The pool's spans hang under the span that submitted the job (the
    // request or one of its children); the step under the transcription.
    assert_eq!(queue.parent, inference.parent);
    assert_eq!(step.parent, inference.id);
    assert_eq!(get("encode").parent, step.id);
    assert_eq!(get("generate").parent, step.id);
    assert!(step.links.is_empty(), "a step of one transcription links to no other");

    // Two at once share steps (an idle replica waits up to max_wait_ms for
    // company): such a step is the child of one transcription and links to
    // the other's `inference` span.
    let url = server.url.clone();
    let both: Vec<_> = (0..2)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || common::post_file(&format!("{url}/transcribe"), "audio_file", "jfk.wav", std::fs::read(jfk_wav()).expect("audio")))
        })
        .collect();
    for t in both {
        let (status, body) = t.join().expect("client");
        assert_eq!(status, 200, "{body}");
    }
    let linked = |s: &[Span]| s.iter().find(|x| x.name == "decode_step" && !x.links.is_empty()).cloned();
    let spans = collector.wait_for("a batched step", |s| {
        linked(s).is_some_and(|st| s.iter().any(|x| x.name == "inference" && st.links.contains(&x.id)))
    });
    let step = linked(&spans).expect("batched step");
    assert_eq!(step.links.len(), 1);
    let other = spans.iter().find(|x| x.name == "inference" && step.links.contains(&x.id)).expect("linked inference");
    assert_ne!(other.trace, step.trace, "the link joins two requests' traces");
}

#[test]
fn trace_continues_from_the_gateway_to_the_worker() {
    let collector = Collector::start();
    let nats = Nats::start();
    let base = cluster_config(&nats, json!({}));
    let with = |service: &str| {
        let mut c = base.clone();
        common::merge_json(&mut c, traced(service, &collector));
        c
    };
    let _worker = Server::start_role("worker", with("whisper-worker"), &FAST_EXPORT, true);
    let gw = Server::start_role("gateway", with("whisper-gateway"), &FAST_EXPORT, false);
    wait_ready(&gw, Duration::from_secs(60));
    let (status, body) = transcribe_file(&gw, &jfk_wav());
    assert_eq!(status, 200, "{body}");
    // The request span of the gateway whose trace the job continues (each
    // process exports on its own, spans as they end).
    let request_of = |s: &[Span]| {
        let job = find(s, "whisper-worker", "job")?;
        s.iter().find(|x| x.service == "whisper-gateway" && x.name == "request" && x.trace == job.trace).cloned()
    };
    let spans = collector.wait_for("the worker's job span in a gateway request's trace", |s| {
        request_of(s).is_some() && find(s, "whisper-worker", "generate").is_some()
    });
    let job = find(&spans, "whisper-worker", "job").expect("the worker's job span");
    let request = request_of(&spans).expect("the gateway's request span");
    let gateway_ids: Vec<&Vec<u8>> = spans.iter().filter(|s| s.service == "whisper-gateway" && s.trace == job.trace).map(|s| &s.id).collect();
    assert!(gateway_ids.contains(&&job.parent), "the job's parent is a gateway span");
    for n in ["audio_decode", "queue_wait", "inference", "decode_step", "encode", "generate"] {
        let s = find(&spans, "whisper-worker", n).unwrap_or_else(|| panic!("no {n} span"));
        assert_eq!(s.trace, request.trace, "the worker's {n} is in the gateway request's trace");
    }
    assert_eq!(find(&spans, "whisper-worker", "audio_decode").map(|s| &s.parent), Some(&job.id));
}

#[test]
fn a_graceful_shutdown_flushes_the_spans() {
    let collector = Collector::start();
    // The default 5 s export delay: only the flush at shutdown sends them in time.
    let mut server = Server::start(test_config(traced("whisper-serve-flush", &collector)));
    let (status, body) = transcribe_file(&server, &jfk_wav());
    assert_eq!(status, 200, "{body}");
    server.signal("-TERM");
    assert!(server.wait_exit(Duration::from_secs(30)).success());
    // Read at once: the exporter's thread had no 5 s tick to send them.
    let spans = collector.spans();
    for n in ["request", "queue_wait", "generate"] {
        assert!(find(&spans, "whisper-serve-flush", n).is_some(), "no {n} span after shutdown");
    }
}
