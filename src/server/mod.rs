//! The single-machine server: binds first (so /health can say "loading"),
//! then fetches and loads the model in the background, serves until the
//! shutdown future resolves, and drains in-flight work before returning.

pub mod http;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::config::Config;
use crate::dispatch::local::LocalDispatcher;
use crate::dispatch::Dispatcher;
use crate::engine::{self, Engine};
use crate::models;
use crate::state::AppState;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Model(#[from] models::ModelError),
    #[error(transparent)]
    Engine(#[from] engine::EngineError),
    #[error("jobs.dir: {0}")]
    Jobs(#[from] crate::jobs::store::StoreError),
    #[error("{0}")]
    Cluster(String),
    #[error("{0}")]
    Security(String),
    #[error(transparent)]
    Wyoming(#[from] crate::wyoming::WyomingError),
}

pub use crate::gpu::engine_options;

/// Fetches the configured model if missing and loads it.
pub async fn load_engine(config: &Config) -> Result<Engine, ServerError> {
    let _load_timer = crate::telemetry::metrics::model_load_timer();
    let opts = engine_options(config)?;
    let path = models::ensure(&config.model.size, &config.model.model_dir, &models::PullOptions::from_env()).await?;
    tracing::info!(model = %path.display(), cuda = opts.cuda, compute_type = %opts.compute_type,
        replicas = opts.num_replicas, threads_per_replica = opts.threads_per_replica, "loading model");
    let engine = tokio::task::spawn_blocking(move || Engine::load(&path, &opts))
        .await
        .map_err(|e| engine::EngineError::Inference(e.to_string()))??;
    Ok(engine)
}

/// `serve`: the whole service in this process, on `listener`, until
/// `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    // A device that cannot be used is a start-up error, before serving:
    // `cuda` without its libraries or a GPU, too many replicas for the GPUs.
    engine_options(&config)?;
    crate::vad::init(&config.vad)?;
    let config = Arc::new(config);
    let local = LocalDispatcher::open(config.clone())?;
    let state = Arc::new(AppState::new(config.clone(), local.clone()));
    let wyoming = crate::wyoming::start(state.clone()).await?;
    let shutdown = wyoming.stopping_with(shutdown);
    let loader = {
        let (state, local) = (state.clone(), local.clone());
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            match load_engine(&state.config).await {
                Ok(engine) => {
                    let engine = Arc::new(engine);
                    local.attach(engine, started.elapsed().as_secs_f64()).await;
                    tracing::info!("model loaded; ready");
                }
                Err(e) => {
                    tracing::error!(error = %e, "model failed to load");
                    local.fail(e.to_string());
                }
            }
        })
    };
    crate::api::stats::spawn_sampler(&state);
    serve_api(listener, crate::api::router(state.clone()), &config, Some(&state.dispatcher), shutdown).await?;
    // Before the drain: utterances being answered need the dispatcher.
    wyoming.finish().await;
    loader.abort();
    drain(&state).await;
    Ok(())
}

/// Finishes in-flight and queued work, up to `server.shutdown_timeout_s`.
pub async fn drain(state: &AppState) {
    let grace = Duration::from_secs(state.config.server.shutdown_timeout_s);
    // Realtime sessions first: their last turns need the engine.
    state.realtime.shutdown(grace).await;
    state.dispatcher.shutdown(grace).await;
    tracing::info!("stopped");
}

/// Serves `routes` on `listener` behind the whole middleware stack (keys,
/// limits, error shapes, TLS, timeouts) until `shutdown` resolves, then
/// waits for the requests in flight. SIGHUP reloads the keys file and the
/// TLS certificate. With a `dispatcher`, its async jobs count against the
/// audio quota of the key that made them when they finish.
pub async fn serve_api(
    listener: TcpListener,
    routes: axum::Router,
    config: &Arc<Config>,
    dispatcher: Option<&Arc<dyn Dispatcher>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let security = crate::security::Security::new(config.clone()).map_err(|e| ServerError::Security(e.to_string()))?;
    if let Some(d) = dispatcher {
        let sec = Arc::downgrade(&security);
        d.on_job_final(Arc::new(move |rec| {
            if let Some(sec) = sec.upgrade() {
                sec.limits.job_finished(&rec.id, &rec.request.owner, rec.audio_seconds.unwrap_or(0.0));
            }
        }));
    }
    let opts = http::HttpOptions::from_config(config).map_err(|e| ServerError::Security(e.to_string()))?;
    let reloader = tokio::spawn(reload_on_hangup(security.clone(), opts.tls.clone()));
    let app = http::stack(routes, config, security);
    let served = http::serve(listener, app, opts, shutdown).await;
    reloader.abort();
    Ok(served?)
}

async fn reload_on_hangup(security: Arc<crate::security::Security>, tls: Option<Arc<crate::security::tls::Tls>>) {
    #[cfg(unix)]
    {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else { return };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading API keys and TLS certificate");
            security.reload_keys();
            if let Some(t) = &tls {
                match t.reload() {
                    Ok(()) => tracing::info!("TLS certificate reloaded"),
                    Err(e) => tracing::error!(error = %e, "TLS certificate not reloaded; keeping the old one"),
                }
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (security, tls);
}

/// Resolves on SIGTERM or Ctrl-C, or, with WHISPER_SERVE_EXIT_ON_STDIN_EOF=1,
/// when standard input closes (the parent process went away): supervisors
/// and test harnesses use it so no server outlives them.
pub async fn shutdown_signal() {
    let stdin_eof = async {
        if std::env::var("WHISPER_SERVE_EXIT_ON_STDIN_EOF").as_deref() == Ok("1") {
            use tokio::io::AsyncReadExt;
            let mut buf = [0u8; 64];
            let mut stdin = tokio::io::stdin();
            while let Ok(n) = stdin.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        } else {
            std::future::pending::<()>().await;
        }
    };
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {}, _ = stdin_eof => {} }
    tracing::info!("shutdown signal received; finishing in-flight requests");
}
