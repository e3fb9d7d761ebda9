//! API keys: kept as SHA-256 digests, compared in constant time, named by
//! an id in logs. The presented key is never stored, logged or echoed.

use std::path::Path;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{check_entry, ApiKeyEntry, AuthConfig, KeyRole};
use crate::jobs::Caller;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("{0}")]
    Entry(String),
}

/// The configured keys.
#[derive(Clone, Default)]
pub struct KeySet {
    keys: Vec<(String, [u8; 32], KeyRole)>,
}

// Never print digests, even in debug output.
impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _, _)| id.as_str()).collect();
        f.debug_struct("KeySet").field("ids", &ids).finish()
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

impl KeySet {
    /// The keys of the config and of its keys file.
    pub fn load(cfg: &AuthConfig) -> Result<KeySet, KeyError> {
        let mut entries = cfg.api_keys.clone();
        if let Some(path) = &cfg.api_keys_file {
            entries.extend(read_file(path)?);
        }
        let mut keys = Vec::with_capacity(entries.len());
        for e in entries {
            keys.push(match e {
                ApiKeyEntry::Key(k) => {
                    let d = digest(&k);
                    // An id that names the key without revealing it.
                    (format!("key-{}", &hex::encode(d)[..8]), d, KeyRole::User)
                }
                ApiKeyEntry::WithId { id, key, role } => (id, digest(&key), role.unwrap_or_default()),
                ApiKeyEntry::Hashed { id, sha256, role } => {
                    let mut d = [0u8; 32];
                    hex::decode_to_slice(sha256.to_ascii_lowercase(), &mut d)
                        .map_err(|e| KeyError::Entry(format!("key {id}: sha256: {e}")))?;
                    (id, d, role.unwrap_or_default())
                }
            });
        }
        Ok(KeySet { keys })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// The id of the key, if it is one of ours. Every stored digest is
    /// compared, in constant time, whatever matches.
    pub fn lookup(&self, presented: &str) -> Option<&str> {
        self.caller(presented).map(|(id, _)| id)
    }

    /// The key's id and role, if it is one of ours (constant time, as
    /// [`Self::lookup`]).
    pub fn caller(&self, presented: &str) -> Option<(&str, KeyRole)> {
        let d = digest(presented);
        let mut found = None;
        for (id, stored, role) in &self.keys {
            if bool::from(stored.ct_eq(&d)) && found.is_none() {
                found = Some((id.as_str(), *role));
            }
        }
        found
    }

    /// Who a request with this key is, for job ownership.
    pub fn to_caller(&self, presented: &str) -> Option<Caller> {
        self.caller(presented).map(|(id, role)| Caller { id: id.to_string(), admin: role == KeyRole::Admin })
    }
}

fn read_file(path: &Path) -> Result<Vec<ApiKeyEntry>, KeyError> {
    let err = |message: String| KeyError::File { path: path.display().to_string(), message };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let entries: Vec<ApiKeyEntry> =
        serde_json::from_str(&text).map_err(|e| err(format!("expected a JSON list of keys: {e}")))?;
    for (i, e) in entries.iter().enumerate() {
        check_entry(&format!("[{i}]"), e).map_err(|e| err(e.to_string()))?;
    }
    Ok(entries)
}

/// The WebSocket subprotocol a browser names its key in (browsers cannot
/// set headers on a WebSocket): `openai-insecure-api-key.<key>`, as
/// OpenAI's realtime API takes it.
pub const KEY_SUBPROTOCOL: &str = "openai-insecure-api-key.";

/// The key a request presents: `Authorization: Bearer <key>` (what the
/// OpenAI SDKs send), `X-API-Key: <key>`, or on a WebSocket handshake the
/// subprotocol `openai-insecure-api-key.<key>`.
pub fn presented(headers: &axum::http::HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        if v.len() > 7 && v[..7].eq_ignore_ascii_case("bearer ") {
            return Some(v[7..].trim());
        }
    }
    if let Some(k) = headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::trim).filter(|k| !k.is_empty()) {
        return Some(k);
    }
    subprotocols(headers).find_map(|p| p.strip_prefix(KEY_SUBPROTOCOL)).filter(|k| !k.is_empty())
}

/// The subprotocols a WebSocket handshake offers (`Sec-WebSocket-Protocol`,
/// comma-separated, possibly over several headers).
pub fn subprotocols(headers: &axum::http::HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(axum::http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_browser_names_its_key_in_a_subprotocol() {
        let mut h = axum::http::HeaderMap::new();
        h.insert("sec-websocket-protocol", "realtime, openai-insecure-api-key.sk-123, openai-beta.realtime-v1".parse().unwrap());
        assert_eq!(presented(&h), Some("sk-123"));
        h.insert("authorization", "Bearer from-header".parse().unwrap());
        assert_eq!(presented(&h), Some("from-header"));
        let mut h = axum::http::HeaderMap::new();
        h.insert("sec-websocket-protocol", "realtime, openai-insecure-api-key.".parse().unwrap());
        assert_eq!(presented(&h), None);
    }

    #[test]
    fn every_entry_form_matches_its_key_only() {
        let cfg = AuthConfig {
            api_keys: vec![
                ApiKeyEntry::Key("plain-key-123".into()),
                ApiKeyEntry::WithId { id: "alice".into(), key: "alice-key-456".into(), role: None },
                ApiKeyEntry::Hashed { id: "bob".into(), sha256: hex::encode(digest("bob-key-789")), role: Some(KeyRole::Admin) },
            ],
            ..Default::default()
        };
        let keys = KeySet::load(&cfg).unwrap();
        assert_eq!(keys.lookup("alice-key-456"), Some("alice"));
        assert_eq!(keys.lookup("bob-key-789"), Some("bob"));
        assert_eq!(keys.to_caller("bob-key-789"), Some(Caller { id: "bob".into(), admin: true }));
        assert_eq!(keys.to_caller("alice-key-456"), Some(Caller { id: "alice".into(), admin: false }));
        let id = keys.lookup("plain-key-123").unwrap();
        assert!(id.starts_with("key-") && !id.contains("plain"), "{id}");
        assert_eq!(keys.lookup("alice-key-45"), None);
        assert_eq!(keys.lookup(""), None);
        assert!(!format!("{keys:?}").contains(&hex::encode(digest("bob-key-789"))));
    }

    #[test]
    fn both_header_forms_are_read() {
        let mut h = axum::http::HeaderMap::new();
        h.insert("authorization", "Bearer abc-def-ghi".parse().unwrap());
        assert_eq!(presented(&h), Some("abc-def-ghi"));
        let mut h = axum::http::HeaderMap::new();
        h.insert("x-api-key", "xyz-123-456".parse().unwrap());
        assert_eq!(presented(&h), Some("xyz-123-456"));
        let mut h = axum::http::HeaderMap::new();
        h.insert("authorization", "Basic abc".parse().unwrap());
        assert_eq!(presented(&h), None);
    }

    #[test]
    fn a_keys_file_is_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        std::fs::write(&path, r#"[{"id": "carol", "key": "carol-key-000"}]"#).unwrap();
        let cfg = AuthConfig { api_keys_file: Some(path.clone()), ..Default::default() };
        assert_eq!(KeySet::load(&cfg).unwrap().lookup("carol-key-000"), Some("carol"));
        std::fs::write(&path, r#"[{"id": "carol", "key": "short"}]"#).unwrap();
        assert!(KeySet::load(&cfg).is_err());
        std::fs::write(&path, "not json").unwrap();
        assert!(KeySet::load(&cfg).is_err());
    }
}
