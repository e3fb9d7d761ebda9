//! The HTTP side of every role: our own accept loop over hyper (axum's
//! `serve` has no TLS, no header-read timeout and no connection limit),
//! HTTPS through rustls, the middleware stack in the order requests meet
//! it, and a per-request deadline on the body.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use bytes::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnFailure, TraceLayer};

use crate::config::Config;
use crate::error::{render_for_path, ApiError};
use crate::security::tls::Tls;
use crate::security::Security;

/// How the listener is served.
pub struct HttpOptions {
    pub tls: Option<Arc<Tls>>,
    pub header_timeout: Duration,
    pub max_connections: usize,
}

impl HttpOptions {
    pub fn from_config(config: &Config) -> Result<HttpOptions, crate::security::tls::TlsError> {
        let tls = match (&config.server.tls_cert, &config.server.tls_key) {
            (Some(c), Some(k)) => Some(Arc::new(Tls::load(c, k)?)),
            _ => None,
        };
        Ok(HttpOptions {
            tls,
            header_timeout: Duration::from_secs(config.server.header_timeout_s),
            max_connections: config.server.max_connections,
        })
    }
}

/// Wraps the API's routes in the service's middleware. Innermost first:
/// the body deadline, keys and limits, panics, error shapes, metrics and
/// the access line run as route layers (after routing, so they know the
/// matched route, including for unknown routes); CORS, the request span
/// and request ids wrap everything.
pub fn stack(routes: Router, config: &Config, security: Arc<Security>) -> Router {
    let body_timeout = config.server.body_timeout(config.limits.max_upload_mb);
    let routes = routes
        .layer(middleware::from_fn(move |req, next| body_deadline(body_timeout, req, next)))
        .layer(middleware::from_fn_with_state(security, crate::security::guard))
        .layer(middleware::from_fn(crate::error::catch_panics))
        .layer(middleware::from_fn(crate::error::shape_errors))
        .layer(middleware::from_fn(crate::telemetry::metrics::track_http))
        .layer(middleware::from_fn(crate::telemetry::access::access_log));
    let routes = match cors(&config.server.cors_origins) {
        Some(c) => routes.layer(c),
        None => routes,
    };
    routes
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-").to_string();
            let span = tracing::info_span!("request", method = %req.method(), request_id = %id);
            // A caller's W3C `traceparent` makes this request part of its trace.
            crate::telemetry::traces::continue_from_http(&span, req.headers());
            span
        })
        // The access line (telemetry::access) reports each response;
        // errors are logged where they are answered (error.rs).
        .on_response(())
        .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

fn cors(origins: &[String]) -> Option<CorsLayer> {
    use axum::http::{header, HeaderName, HeaderValue, Method};
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, HeaderName::from_static("x-api-key"), HeaderName::from_static("x-request-id")])
            .expose_headers([HeaderName::from_static("x-request-id"), header::RETRY_AFTER, header::LOCATION])
            .max_age(Duration::from_secs(600)),
    )
}

/// A request body that fails once its deadline passes, so a client that
/// trickles bytes cannot hold a handler (and an upload slot) for ever.
struct DeadlineBody {
    inner: Body,
    sleep: Pin<Box<tokio::time::Sleep>>,
    fired: Arc<AtomicBool>,
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.sleep.as_mut().poll(cx).is_ready() {
            this.fired.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(axum::Error::new(std::io::Error::new(std::io::ErrorKind::TimedOut, "request body timed out")))));
        }
        Pin::new(&mut this.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

async fn body_deadline(limit: Duration, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let fired = Arc::new(AtomicBool::new(false));
    let flag = fired.clone();
    let req = req.map(|inner| Body::new(DeadlineBody { inner, sleep: Box::pin(tokio::time::sleep(limit)), fired: flag }));
    let resp = next.run(req).await;
    if fired.load(Ordering::Relaxed) {
        return render_for_path(&path, ApiError::BodyTimeout(limit.as_secs()));
    }
    resp
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets the
/// requests in flight finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    opts: HttpOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let scheme = if opts.tls.is_some() { "https" } else { "http" };
    tracing::info!(addr = %listener.local_addr()?, scheme, "listening");
    let slots = Arc::new(Semaphore::new(opts.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(opts.header_timeout).keep_alive(true);
    builder.http2().timer(TokioTimer::new()).keep_alive_interval(Some(Duration::from_secs(30)));
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    loop {
        // At the limit, stop accepting: new connections wait in the backlog.
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    // Out of file descriptors and the like: back off, carry on.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let svc = app.clone().map_request(move |mut req: axum::http::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            req
        });
        let svc = hyper_util::service::TowerToHyperService::new(svc);
        let (builder, tls, watcher) = (builder.clone(), opts.tls.clone(), graceful.watcher());
        let header_timeout = opts.header_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            // hyper-util's auto builder waits for the first bytes (to tell
            // HTTP/1 from HTTP/2) with no timeout of its own: a client that
            // connects and says nothing gets `header_timeout` to start (for
            // TLS, the handshake's own timeout below does this).
            let mut first = [0u8; 1];
            if !matches!(tokio::time::timeout(header_timeout, stream.peek(&mut first)).await, Ok(Ok(n)) if n > 0) {
                tracing::debug!(peer = %peer, "closed a connection that sent nothing");
                return;
            }
            match tls.and_then(|t| t.acceptor()) {
                None => {
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                    let _ = watcher.watch(conn.into_owned()).await;
                }
                Some(acceptor) => match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(tls_stream)) => {
                        let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls_stream), svc);
                        let _ = watcher.watch(conn.into_owned()).await;
                    }
                    // Plain HTTP on the TLS port, a bad client, or a stalled one.
                    Ok(Err(e)) => tracing::debug!(peer = %peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(peer = %peer, "TLS handshake timed out"),
                },
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Peer address of a request, for logs.
pub fn peer(req: &Request) -> Option<SocketAddr> {
    req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0)
}
