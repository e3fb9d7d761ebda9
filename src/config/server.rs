//! The `server` section: where the service listens, its CPU budget, TLS,
//! CORS and HTTP connection limits, with their defaults and checks.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{bad, quoted, ConfigError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    /// true: the replicas share all `num_cpus` between them (threads per
    /// replica = num_cpus / num_replicas); false: each gets `cpu_per_replica`.
    pub dedicated_cpu: bool,
    /// CPU cores the service may use; 0 = every core of the machine.
    pub num_cpus: u32,
    /// On SIGTERM/SIGINT: seconds to finish in-flight and queued work
    /// before exiting.
    pub shutdown_timeout_s: u64,
    /// PEM certificate chain and private key: serve HTTPS (reloaded on SIGHUP).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Origins allowed by CORS (`*` for any); empty = no CORS headers.
    pub cors_origins: Vec<String>,
    /// Seconds a client has to send a request's headers (and the TLS
    /// handshake); also how long an idle keep-alive connection stays open.
    pub header_timeout_s: u64,
    /// Seconds a client has to send a request's body; 0 = 30 s plus 10 s
    /// per MB of `limits.max_upload_mb`.
    pub body_timeout_s: u64,
    /// Open connections at most; more wait to be accepted.
    pub max_connections: usize,
    /// Seconds a connection (HTTP/1 keep-alive or HTTP/2) may stay open
    /// with no request in flight before it is closed (HTTP/2: GOAWAY);
    /// 0 = no deadline beyond `header_timeout_s` for HTTP/1.
    pub idle_timeout_s: u64,
    /// Requests one HTTP/2 connection may have in flight at once.
    pub http2_max_concurrent_streams: u32,
    /// Serve the pages (`/`, `/dashboard`) and the API reference (`/docs`,
    /// `/openapi.json`); off for an API-only deployment.
    pub web_ui: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: "0.0.0.0".into(),
            port: 8000,
            dedicated_cpu: false,
            num_cpus: 0,
            shutdown_timeout_s: 30,
            tls_cert: None,
            tls_key: None,
            cors_origins: Vec::new(),
            header_timeout_s: 10,
            body_timeout_s: 0,
            max_connections: 1024,
            idle_timeout_s: 60,
            http2_max_concurrent_streams: 32,
            web_ui: true,
        }
    }
}

impl ServerConfig {
    /// How long a request's body may take to arrive.
    pub fn body_timeout(&self, max_upload_mb: u64) -> std::time::Duration {
        let s = if self.body_timeout_s > 0 { self.body_timeout_s } else { 30 + 10 * max_upload_mb };
        std::time::Duration::from_secs(s)
    }

    /// The first check of [`super::Config::validate`]: the host.
    pub(super) fn validate_host(&self) -> Result<(), ConfigError> {
        if self.host.trim().is_empty() {
            return bad("server.host", &quoted(&self.host), "a host name or IP address");
        }
        // port: u16 already; 0 means "any free port".
        Ok(())
    }

    /// TLS files and connection limits, checked after the other sections'
    /// basic checks (see [`super::Config::validate`] for the order).
    pub(super) fn validate_connections(&self) -> Result<(), ConfigError> {
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return bad("server.tls_key", &"(one of tls_cert/tls_key)", "both server.tls_cert and server.tls_key, or neither");
        }
        if self.header_timeout_s == 0 {
            return bad("server.header_timeout_s", &0, "a number > 0");
        }
        if self.max_connections == 0 {
            return bad("server.max_connections", &0, "a number > 0");
        }
        if self.http2_max_concurrent_streams == 0 {
            return bad("server.http2_max_concurrent_streams", &0, "a number > 0");
        }
        Ok(())
    }

    /// The shutdown deadline, checked after `limits.max_field_bytes`.
    pub(super) fn validate_shutdown(&self) -> Result<(), ConfigError> {
        if self.shutdown_timeout_s > 3600 {
            return bad("server.shutdown_timeout_s", &self.shutdown_timeout_s, "0-3600");
        }
        Ok(())
    }
}
