//! The `cluster` section (gateway and workers over NATS JetStream) and the
//! `jobs` section (asynchronous jobs, in both modes): keys, defaults and
//! their checks.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{bad, ConfigError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    File,
    Memory,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// One URL or several, comma-separated (`nats://a:4222,nats://b:4222`).
    pub nats_url: String,
    /// A NATS credentials file (`.creds`: JWT and NKey seed).
    pub credentials_file: Option<PathBuf>,
    /// PEM CA bundle that signs the NATS servers' certificates.
    pub tls_ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM) for mutual TLS.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// Insist on TLS even when the URL says `nats://`.
    pub tls_required: bool,
    /// First token of every subject: `<prefix>.jobs.<model>`.
    pub subject_prefix: String,
    /// The work-queue stream of jobs.
    pub stream: String,
    /// Where jobs that failed `max_deliver` times are copied.
    pub dead_letter_stream: String,
    /// Object store bucket of uploaded audio.
    pub audio_bucket: String,
    /// Key-value bucket of job records (status and result), kept `jobs.result_ttl_s`.
    pub jobs_bucket: String,
    /// Key-value bucket of worker heartbeats.
    pub workers_bucket: String,
    /// Seconds a worker may hold a job without acking or a progress ack
    /// before JetStream gives it to another worker.
    pub ack_wait_s: u64,
    /// Deliveries of one job before it is marked failed and dead-lettered.
    pub max_deliver: i64,
    /// Where JetStream keeps streams and buckets: file or memory.
    pub storage: StorageKind,
    /// Copies of each stream and bucket in a NATS cluster (1-5).
    pub replicas: usize,
    /// The worker's own port (`/health`, `/metrics`); 0 = any free port.
    pub worker_port: u16,
    /// Seconds between worker heartbeats; a worker is gone after 3 missed.
    pub heartbeat_s: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            nats_url: "nats://127.0.0.1:4222".into(),
            credentials_file: None,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_required: false,
            subject_prefix: "whisper".into(),
            stream: "WHISPER_JOBS".into(),
            dead_letter_stream: "WHISPER_DEAD".into(),
            audio_bucket: "whisper-audio".into(),
            jobs_bucket: "whisper-jobs".into(),
            workers_bucket: "whisper-workers".into(),
            ack_wait_s: 30,
            max_deliver: 3,
            storage: StorageKind::File,
            replicas: 1,
            worker_port: 8001,
            heartbeat_s: 5,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobsConfig {
    /// Where `serve` keeps async jobs and their audio (an SQLite database
    /// and one file per job).
    pub dir: PathBuf,
    /// Seconds a finished job (and its result) is kept.
    pub result_ttl_s: u64,
    /// HMAC-SHA256 key for webhook signatures; null: webhooks unsigned.
    pub webhook_secret: Option<String>,
    /// Webhook deliveries before giving up (backoff 1 s, 2 s, 4 s, ...).
    pub webhook_max_attempts: u32,
    /// Seconds one webhook POST may take.
    pub webhook_timeout_s: u64,
    /// Internal receivers callbacks may reach on purpose: host names,
    /// addresses, CIDRs. Others inside (loopback, private, ...) are refused.
    pub webhook_allow_hosts: Vec<String>,
    /// Jobs `serve` keeps queued; more answer 503.
    pub max_queued: usize,
    /// Times a job may be started before it is failed instead of tried
    /// again: a job that keeps taking the process down (or a worker, in a
    /// cluster: `cluster.max_deliver`) must not crash-loop it.
    pub max_attempts: u32,
    /// Jobs one key may have queued or running at once; 0 = no limit.
    pub max_queued_per_key: usize,
    /// MB of uploads one key may have queued or running at once; 0 = no limit.
    pub max_queued_mb_per_key: u64,
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("jobs"),
            result_ttl_s: 86_400,
            webhook_secret: None,
            webhook_max_attempts: 5,
            webhook_timeout_s: 10,
            webhook_allow_hosts: Vec::new(),
            max_queued: 10_000,
            max_attempts: 3,
            max_queued_per_key: 1_000,
            max_queued_mb_per_key: 10_240,
        }
    }
}

/// A NATS subject token or stream/bucket name: letters, digits, `-`, `_`.
fn is_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl ClusterConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.nats_url.trim().is_empty() {
            return bad("cluster.nats_url", &"\"\"", "a NATS URL such as nats://127.0.0.1:4222");
        }
        for (key, v) in [
            ("cluster.subject_prefix", &self.subject_prefix),
            ("cluster.stream", &self.stream),
            ("cluster.dead_letter_stream", &self.dead_letter_stream),
            ("cluster.audio_bucket", &self.audio_bucket),
            ("cluster.jobs_bucket", &self.jobs_bucket),
            ("cluster.workers_bucket", &self.workers_bucket),
        ] {
            if !is_name(v) {
                return bad(key, &format!("{v:?}"), "letters, digits, - and _ only");
            }
        }
        if self.stream == self.dead_letter_stream {
            return bad("cluster.dead_letter_stream", &format!("{:?}", self.dead_letter_stream), "a name other than cluster.stream");
        }
        if !(1..=86_400).contains(&self.ack_wait_s) {
            return bad("cluster.ack_wait_s", &self.ack_wait_s, "1-86400");
        }
        if !(1..=100).contains(&self.max_deliver) {
            return bad("cluster.max_deliver", &self.max_deliver, "1-100");
        }
        if !(1..=5).contains(&self.replicas) {
            return bad("cluster.replicas", &self.replicas, "1-5");
        }
        if !(1..=3600).contains(&self.heartbeat_s) {
            return bad("cluster.heartbeat_s", &self.heartbeat_s, "1-3600");
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return bad("cluster.tls_key_file", &"(one of cert/key)", "both tls_cert_file and tls_key_file, or neither");
        }
        Ok(())
    }

    /// The subject token for a model name: NATS tokens cannot hold `.`
    /// (`tiny.en` → `tiny_en`).
    pub fn model_token(model: &str) -> String {
        model.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
    }

    /// The subject jobs for `model` are published on.
    pub fn job_subject(&self, model: &str) -> String {
        format!("{}.jobs.{}", self.subject_prefix, Self::model_token(model))
    }

    /// The durable consumer the workers of `model` share.
    pub fn consumer_name(&self, model: &str) -> String {
        format!("workers-{}", Self::model_token(model))
    }
}

impl JobsConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.dir.as_os_str().is_empty() {
            return bad("jobs.dir", &"\"\"", "a folder");
        }
        if self.result_ttl_s == 0 {
            return bad("jobs.result_ttl_s", &0, "a number > 0");
        }
        if !(1..=20).contains(&self.webhook_max_attempts) {
            return bad("jobs.webhook_max_attempts", &self.webhook_max_attempts, "1-20");
        }
        if self.webhook_timeout_s == 0 {
            return bad("jobs.webhook_timeout_s", &0, "a number > 0");
        }
        if self.max_queued == 0 {
            return bad("jobs.max_queued", &0, "a number > 0");
        }
        if self.max_attempts == 0 {
            return bad("jobs.max_attempts", &0, "a number > 0");
        }
        for entry in &self.webhook_allow_hosts {
            if let Err(e) = crate::jobs::webhook::AllowList::check_entry(entry) {
                return Err(ConfigError::invalid("jobs.webhook_allow_hosts", e));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names_become_subject_tokens() {
        let c = ClusterConfig::default();
        assert_eq!(c.job_subject("tiny.en"), "whisper.jobs.tiny_en");
        assert_eq!(c.consumer_name("large-v3"), "workers-large-v3");
        assert_eq!(ClusterConfig::model_token("/models/my model"), "_models_my_model");
    }

    #[test]
    fn defaults_validate_and_bad_names_do_not() {
        ClusterConfig::default().validate().expect("defaults");
        JobsConfig::default().validate().expect("defaults");
        let c = ClusterConfig { stream: "a.b".into(), ..Default::default() };
        assert!(c.validate().is_err());
        let c = ClusterConfig { dead_letter_stream: "WHISPER_JOBS".into(), ..Default::default() };
        assert!(c.validate().is_err());
        let c = ClusterConfig { max_deliver: 0, ..Default::default() };
        assert!(c.validate().is_err());
        let hosts = |h: &[&str]| JobsConfig { webhook_allow_hosts: h.iter().map(|s| s.to_string()).collect(), ..Default::default() };
        hosts(&["hooks.internal", "127.0.0.1", "10.0.0.0/8", "fd00::/8"]).validate().expect("valid entries");
        for bad in ["http://hooks.internal/", "10.0.0.0/33", ""] {
            assert!(hosts(&[bad]).validate().is_err(), "{bad}");
        }
    }
}
