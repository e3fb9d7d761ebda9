//! The HTTP side of every role: our own accept loop over hyper (axum's
//! `serve` has no TLS, no header-read timeout and no connection limit),
//! HTTPS through rustls, bounds on what a connection may hold (streams per
//! HTTP/2 connection, an idle deadline), the middleware stack in the order
//! requests meet it, and a per-request deadline on the body.
//!
//! The body deadline is ours rather than tower-http's
//! `RequestBodyTimeoutLayer`: that one restarts its timer at every frame,
//! so a client trickling a byte a second would never meet it, and its error
//! reaches the handler as a multipart error (400), not our 408.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
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
    /// Closes a connection with no request in flight this long; None: never.
    pub idle_timeout: Option<Duration>,
    pub http2_max_concurrent_streams: u32,
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
            idle_timeout: (config.server.idle_timeout_s > 0).then(|| Duration::from_secs(config.server.idle_timeout_s)),
            http2_max_concurrent_streams: config.server.http2_max_concurrent_streams,
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

/// How long an HTTP/2 peer has to answer a keep-alive ping before its
/// connection is taken for dead.
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// Requests in flight on one connection, and a wake-up when that changes:
/// what tells an idle connection from a busy one, for either protocol.
#[derive(Default)]
struct Activity {
    in_flight: AtomicUsize,
    changed: Notify,
}

impl Activity {
    /// Resolves once no request has been in flight for `limit`.
    async fn idle_for(&self, limit: Duration) {
        loop {
            // Made before the count is read: `notify_waiters` reaches a
            // `Notified` from the moment it exists, so no change is missed.
            let changed = self.changed.notified();
            if self.in_flight.load(Ordering::SeqCst) > 0 {
                changed.await;
            } else if tokio::time::timeout(limit, changed).await.is_err() && self.in_flight.load(Ordering::SeqCst) == 0 {
                return;
            }
        }
    }
}

/// One request in flight, from its head until its response body is sent
/// (or the request is dropped).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: &Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::SeqCst);
        activity.changed.notify_waiters();
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.changed.notify_waiters();
    }
}

/// A response body that keeps its request counted as in flight until it
/// has been sent: a long download is not an idle connection.
struct TrackedBody {
    inner: Body,
    _in_flight: InFlight,
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
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
    let stopping = CancellationToken::new();
    let connections = TaskTracker::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(opts.header_timeout).keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        // `max_connections` bounds connections; this bounds what each carries.
        .max_concurrent_streams(opts.http2_max_concurrent_streams.max(1))
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(H2_PING_TIMEOUT);
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
        let activity = Arc::new(Activity::default());
        let svc = {
            let (app, activity) = (app.clone(), activity.clone());
            tower::service_fn(move |mut req: axum::http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                let in_flight = InFlight::start(&activity);
                let app = app.clone();
                async move {
                    let resp = app.oneshot(req).await?;
                    Ok::<_, std::convert::Infallible>(resp.map(|inner| Body::new(TrackedBody { inner, _in_flight: in_flight })))
                }
            })
        };
        let svc = hyper_util::service::TowerToHyperService::new(svc);
        let (builder, tls, stopping) = (builder.clone(), opts.tls.clone(), stopping.clone());
        let (header_timeout, idle_timeout) = (opts.header_timeout, opts.idle_timeout);
        connections.spawn(async move {
            let _permit = permit;
            // hyper-util's auto builder waits for the first bytes (to tell
            // HTTP/1 from HTTP/2) with no timeout of its own: a client that
            // connects and says nothing gets `header_timeout` to start (for
            // TLS, the handshake's own timeout below does this).
            let mut first = [0u8; 1];
            let said = tokio::select! {
                r = tokio::time::timeout(header_timeout, stream.peek(&mut first)) => matches!(r, Ok(Ok(n)) if n > 0),
                _ = stopping.cancelled() => return,
            };
            if !said {
                tracing::debug!(peer = %peer, "closed a connection that sent nothing");
                return;
            }
            let io = match tls.and_then(|t| t.acceptor()) {
                None => Either::Left(stream),
                Some(acceptor) => {
                    let handshake = tokio::select! {
                        r = tokio::time::timeout(header_timeout, acceptor.accept(stream)) => r,
                        _ = stopping.cancelled() => return,
                    };
                    match handshake {
                        Ok(Ok(tls_stream)) => Either::Right(tls_stream),
                        // Plain HTTP on the TLS port, a bad client, or a stalled one.
                        Ok(Err(e)) => return tracing::debug!(peer = %peer, error = %e, "TLS handshake failed"),
                        Err(_) => return tracing::debug!(peer = %peer, "TLS handshake timed out"),
                    }
                }
            };
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
            tokio::pin!(conn);
            let idle = async {
                match idle_timeout {
                    Some(limit) => activity.idle_for(limit).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = stopping.cancelled() => {}
                // Its place may be wanted by a connection in the backlog.
                _ = idle => tracing::debug!(peer = %peer, "closing an idle connection"),
            }
            // HTTP/2: GOAWAY, then the streams open finish; HTTP/1: the
            // request in flight (if any) finishes, then the connection closes.
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        });
    }
    drop(listener);
    stopping.cancel();
    connections.close();
    connections.wait().await;
    Ok(())
}

/// Peer address of a request, for logs.
pub fn peer(req: &Request) -> Option<SocketAddr> {
    req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0)
}
