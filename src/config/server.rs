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
    /// TCP port of the Wyoming listener (Home Assistant's speech-to-text
    /// protocol); null = off, 0 = any free port.
    pub wyoming_port: Option<u16>,
    /// Address the Wyoming listener binds. Loopback by default: Wyoming
    /// cannot carry an API key.
    pub wyoming_host: String,
    /// Serve Wyoming on a non-loopback `wyoming_host` even though the
    /// config requires API keys (which Wyoming clients cannot send).
    pub wyoming_allow_unauthenticated: bool,
    /// Seconds a Wyoming client has to send each event (and to read each
    /// answer) before its connection is closed.
    pub wyoming_timeout_s: u64,
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
            wyoming_port: None,
            wyoming_host: "127.0.0.1".into(),
            wyoming_allow_unauthenticated: false,
            wyoming_timeout_s: 60,
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
        if self.wyoming_port.is_some() && self.wyoming_host.trim().is_empty() {
            return bad("server.wyoming_host", &quoted(&self.wyoming_host), "a host name or IP address");
        }
        if self.wyoming_timeout_s == 0 || self.wyoming_timeout_s > 3600 {
            return bad("server.wyoming_timeout_s", &self.wyoming_timeout_s, "1-3600");
        }
        Ok(())
    }

    /// Wyoming's keys policy: its clients cannot send an API key, so where
    /// the config requires keys the listener may only face this machine
    /// (a loopback `wyoming_host`) unless `wyoming_allow_unauthenticated`
    /// says the operator accepts an open port (a firewall or a private
    /// network in front of it).
    pub fn check_wyoming_keys(&self, keys_required: bool) -> Result<(), ConfigError> {
        if self.wyoming_port.is_none() || !keys_required || self.wyoming_allow_unauthenticated {
            return Ok(());
        }
        if is_loopback(&self.wyoming_host) {
            return Ok(());
        }
        bad(
            "server.wyoming_host",
            &quoted(&self.wyoming_host),
            "a loopback address (127.0.0.1, ::1, localhost) while API keys are required: Wyoming clients cannot send a key; \
             set server.wyoming_allow_unauthenticated: true to serve Wyoming without one on this address",
        )
    }

}

/// Whether `host` names this machine only. Host names other than
/// `localhost` count as public: what they resolve to can change.
pub fn is_loopback(host: &str) -> bool {
    let h = host.trim().trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost") || h.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl ServerConfig {
    /// The shutdown deadline, checked after `limits.max_field_bytes`.
    pub(super) fn validate_shutdown(&self) -> Result<(), ConfigError> {
        if self.shutdown_timeout_s > 3600 {
            return bad("server.shutdown_timeout_s", &self.shutdown_timeout_s, "0-3600");
        }
        Ok(())
    }
}
