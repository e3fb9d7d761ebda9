//! What the middleware costs per request, in-process (no sockets, no
//! model): `GET /v1/models` through the bare router, through the whole
//! stack with no keys or limits, and through the whole stack with API keys
//! and a rate limit (metrics and the access line are in both stacks).
//! Run: `cargo run --release --example middleware_cost [requests]`.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::Request;
use serde_json::json;
use tower::ServiceExt;
use whisper_serve::config::Config;

fn config(dir: &std::path::Path, extra: serde_json::Value) -> Arc<Config> {
    let mut v = json!({"jobs": {"dir": dir}, "model": {"size": "tiny.en"}});
    if let (Some(a), Some(b)) = (v.as_object_mut(), extra.as_object()) {
        for (k, val) in b {
            a.insert(k.clone(), val.clone());
        }
    }
    Arc::new(Config::from_sources(Some(&v.to_string()), Vec::<(String, String)>::new()).expect("config"))
}

async fn time(name: &str, app: axum::Router, n: usize, key: Option<&str>) -> f64 {
    let req = || {
        let mut r = Request::get("/v1/models");
        if let Some(k) = key {
            r = r.header("authorization", format!("Bearer {k}"));
        }
        r.body(Body::empty()).expect("request")
    };
    for _ in 0..1000 {
        let _ = app.clone().oneshot(req()).await;
    }
    let start = Instant::now();
    for _ in 0..n {
        let r = app.clone().oneshot(req()).await.expect("response");
        assert_eq!(r.status(), 200, "{name}");
    }
    let us = start.elapsed().as_secs_f64() * 1e6 / n as f64;
    println!("{name:<44} {us:8.2} µs/request");
    us
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let key = "sk-bench-0123456789";
    let build = |extra: serde_json::Value, stacked: bool| {
        let cfg = config(dir.path(), extra);
        let local = whisper_serve::dispatch::local::LocalDispatcher::open(cfg.clone()).expect("jobs dir");
        let state = Arc::new(whisper_serve::state::AppState::new(cfg.clone(), local));
        let routes = whisper_serve::api::router(state);
        if stacked {
            let sec = whisper_serve::security::Security::new(cfg.clone()).expect("keys");
            whisper_serve::server::http::stack(routes, &cfg, sec)
        } else {
            routes
        }
    };
    let bare = time("router only", build(json!({}), false), n, None).await;
    let open = time("full stack, no keys, no limits", build(json!({}), true), n, None).await;
    let guarded = time(
        "full stack, 100 keys + rate limit",
        build(
            json!({"auth": {"api_keys": (0..100).map(|i| json!({"id": format!("k{i}"), "key": format!("{key}-{i}")})).chain([json!({"id": "me", "key": key})]).collect::<Vec<_>>()},
                   "rate_limit": {"requests_per_minute": 100000000, "burst": 100000000}}),
            true,
        ),
        n,
        Some(key),
    )
    .await;
    println!("stack (ids, shapes, metrics, access line): {:.2} µs; keys + rate limit on top: {:.2} µs", open - bare, guarded - open);
}
