//! The `auth` and `rate_limit` sections: API keys, request rates and daily
//! audio quotas. Keys and checks in one place; the enforcement lives in
//! `crate::security`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{bad, ConfigError};

/// One API key: the key itself (its id is derived from its hash), the key
/// with an id, or only the key's SHA-256 (hex) with an id, so the config
/// file need not hold the secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum ApiKeyEntry {
    Key(String),
    WithId {
        id: String,
        key: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        role: Option<KeyRole>,
    },
    Hashed {
        id: String,
        sha256: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        role: Option<KeyRole>,
    },
}

/// What a key may see beyond its own work. `user` (the default) sees only
/// the jobs it made; `admin` sees, lists and cancels every key's jobs and
/// every request in `/v1/stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyRole {
    #[default]
    User,
    Admin,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Keys that may call the API; none (and no file) = no authentication.
    pub api_keys: Vec<ApiKeyEntry>,
    /// A JSON file with a list of entries like `api_keys`, read at start-up
    /// and again on SIGHUP.
    pub api_keys_file: Option<PathBuf>,
    /// `/metrics` needs a key too (when keys are configured).
    pub metrics_requires_key: bool,
    /// Wrong keys a client address may present per minute (a token
    /// bucket, this many at once); past it the address is answered 429
    /// without its key being checked. 0 = no limit.
    pub failed_attempts_per_minute: u32,
}

impl AuthConfig {
    /// Whether callers are told apart by keys. A keys file counts even if
    /// empty now: SIGHUP may fill it.
    pub fn keys_in_use(&self) -> bool {
        !self.api_keys.is_empty() || self.api_keys_file.is_some()
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self { api_keys: Vec::new(), api_keys_file: None, metrics_requires_key: false, failed_attempts_per_minute: 10 }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Requests a key (or, without keys, a client address) may make per
    /// minute, as a token bucket; 0 = no limit.
    pub requests_per_minute: u32,
    /// Requests that may come at once before the rate applies; 0 = the
    /// per-minute number.
    pub burst: u32,
    /// Seconds of (decoded) audio a key may transcribe per UTC day; 0 = no quota.
    pub audio_seconds_per_day: f64,
}

impl AuthConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        for (i, e) in self.api_keys.iter().enumerate() {
            let key = format!("auth.api_keys[{i}]");
            check_entry(&key, e)?;
        }
        Ok(())
    }
}

/// Checks one key entry (from the config or the keys file).
pub fn check_entry(key: &str, e: &ApiKeyEntry) -> Result<(), ConfigError> {
    match e {
        ApiKeyEntry::Key(k) | ApiKeyEntry::WithId { key: k, .. } if k.trim().len() < 8 => {
            bad(key, &"(a key)", "a key of at least 8 characters")
        }
        ApiKeyEntry::WithId { id, .. } | ApiKeyEntry::Hashed { id, .. } if id.trim().is_empty() => {
            bad(key, &"(an empty id)", "a non-empty id")
        }
        ApiKeyEntry::Hashed { sha256, .. } if sha256.len() != 64 || hex::decode(sha256).is_err() => {
            bad(key, &"(a sha256)", "64 hex digits")
        }
        _ => Ok(()),
    }
}

impl RateLimitConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !(self.audio_seconds_per_day.is_finite() && self.audio_seconds_per_day >= 0.0) {
            return bad("rate_limit.audio_seconds_per_day", &self.audio_seconds_per_day, "a number >= 0");
        }
        Ok(())
    }
}
