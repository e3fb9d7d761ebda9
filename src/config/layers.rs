//! The layers `Config::build` merges, later wins:
//! defaults < file < `WHISPER_SERVE__<SECTION>__<KEY>` environment
//! variables. The layers are merged as JSON values, with the layer that set
//! each key path remembered, so an error can name where a value came from.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::{one_of, ConfigError, ENV_PREFIX};

/// Which layer (file path or environment variable) set each key path.
#[derive(Debug, Default)]
pub(super) struct Origins(BTreeMap<String, String>);

impl Origins {
    /// Origin of `key` or of the closest enclosing path that has one
    /// (`model.supported_formats[2]` → `model.supported_formats` → `model`).
    pub(super) fn lookup(&self, key: &str) -> String {
        let mut k = key;
        loop {
            if let Some(o) = self.0.get(k) {
                return o.clone();
            }
            match k.rfind(['.', '[']) {
                Some(i) => k = &k[..i],
                None => return "defaults".into(),
            }
        }
    }
}

/// Recursively merges `over` into `base`: objects key by key, anything else
/// (numbers, strings, arrays, null) replaced whole. Records `origin` for
/// every replaced path.
pub(super) fn merge(base: &mut Value, over: Value, path: &str, origin: &str, origins: &mut Origins) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v, &p, origin, origins),
                    None => {
                        origins.0.insert(p, origin.to_string());
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => {
            origins.0.insert(path.to_string(), origin.to_string());
            *slot = v;
        }
    }
}

/// Rejects sections and keys the defaults do not have, naming them
/// (`model.sise`), with the origin of the offending key.
pub(super) fn check_known_keys(merged: &Value, defaults: &Value, origins: &Origins) -> Result<(), ConfigError> {
    let (Some(m), Some(d)) = (merged.as_object(), defaults.as_object()) else {
        return Ok(());
    };
    for (section, body) in m {
        let Some(dsec) = d.get(section).and_then(Value::as_object) else {
            let known: Vec<&str> = d.keys().map(String::as_str).collect();
            return Err(ConfigError::Parse {
                origin: origins.lookup(section),
                key: section.clone(),
                message: format!("unknown section (expected one of: {})", one_of(&known)),
            });
        };
        if let Some(obj) = body.as_object() {
            for key in obj.keys() {
                if !dsec.contains_key(key) {
                    let path = format!("{section}.{key}");
                    let known: Vec<&str> = dsec.keys().map(String::as_str).collect();
                    return Err(ConfigError::Parse {
                        origin: origins.lookup(&path),
                        message: format!("unknown key (expected one of: {})", one_of(&known)),
                        key: path,
                    });
                }
            }
        }
    }
    Ok(())
}

/// Turns `WHISPER_SERVE__<SECTION>__<KEY>=value` pairs into a JSON object
/// `{section: {key: value}}`, with origins. Other variables are ignored.
pub(super) fn env_layer(
    env: impl IntoIterator<Item = (String, String)>,
    defaults: &Value,
) -> Result<Vec<(String, Value)>, ConfigError> {
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| {
            k.len() >= ENV_PREFIX.len()
                && k.is_char_boundary(ENV_PREFIX.len())
                && k[..ENV_PREFIX.len()].eq_ignore_ascii_case(ENV_PREFIX)
        })
        .collect();
    // Deterministic order when the same key is given twice in different case.
    vars.sort();
    let sections = defaults.as_object();
    let mut out = Vec::new();
    for (var, raw) in vars {
        let rest = &var[ENV_PREFIX.len()..];
        let parts: Vec<&str> = rest.split("__").collect();
        let [section, key] = parts[..] else {
            return Err(ConfigError::UnknownEnvVar {
                reason: format!("expected {ENV_PREFIX}<SECTION>__<KEY>, e.g. {ENV_PREFIX}SERVER__PORT"),
                var,
            });
        };
        let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
        let Some(dsec) = sections.and_then(|s| s.get(&section)).and_then(Value::as_object) else {
            let known: Vec<String> =
                sections.map(|s| s.keys().map(|k| k.to_ascii_uppercase()).collect()).unwrap_or_default();
            return Err(ConfigError::UnknownEnvVar {
                reason: format!("unknown section `{section}` (expected one of: {})", known.join(", ")),
                var,
            });
        };
        let Some(default) = dsec.get(&key) else {
            let known: Vec<String> = dsec.keys().map(|k| k.to_ascii_uppercase()).collect();
            return Err(ConfigError::UnknownEnvVar {
                reason: format!(
                    "unknown key `{section}.{key}` (expected one of: {})",
                    known.join(", ")
                ),
                var,
            });
        };
        let value = env_value(&raw, default);
        let mut sec = Map::new();
        sec.insert(key, value);
        let mut top = Map::new();
        top.insert(section, Value::Object(sec));
        out.push((var, Value::Object(top)));
    }
    Ok(out)
}

/// The value of an override: JSON if it parses, else the raw string. For
/// keys whose default is a string the raw text is kept unless it is a
/// quoted JSON string, so `WHISPER_SERVE__MODEL__SIZE=1` stays "1".
fn env_value(raw: &str, default: &Value) -> Value {
    let parsed = serde_json::from_str::<Value>(raw.trim());
    match (default, parsed) {
        (Value::String(_), Ok(Value::String(s))) => Value::String(s),
        (Value::String(_), _) => Value::String(raw.to_string()),
        (_, Ok(v)) => v,
        (_, Err(_)) => Value::String(raw.to_string()),
    }
}

/// Checks numbers that would otherwise fail deserialisation with a less
/// helpful message (the port is a `u16`).
pub(super) fn precheck(merged: &Value, origins: &Origins) -> Result<(), ConfigError> {
    if let Some(port) = merged.pointer("/server/port") {
        let ok = port.as_u64().is_some_and(|p| p <= u16::MAX as u64);
        if port.is_number() && !ok {
            return Err(ConfigError::Invalid {
                origin: origins.lookup("server.port"),
                key: "server.port".into(),
                reason: format!("invalid value {port} (expected 0-65535)"),
            });
        }
    }
    Ok(())
}

pub(super) fn env_pairs() -> Vec<(String, String)> {
    std::env::vars_os()
        .map(|(k, v)| (k.to_string_lossy().into_owned(), v.to_string_lossy().into_owned()))
        .collect()
}
