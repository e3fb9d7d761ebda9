//! The `models` section: models besides `model.size` loaded on demand (a
//! request's `model` field), how long an idle one stays loaded and how
//! many may be loaded at once.

use serde::{Deserialize, Serialize};

use super::{bad, ConfigError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelsConfig {
    /// Seconds an on-demand model stays loaded after its last request:
    /// 0 = unloaded as soon as nothing uses it, -1 = kept until unloaded
    /// by `DELETE /v1/models/{id}/load` (speaches' `ttl`). The default
    /// model (`model.size`) is always kept.
    pub ttl_s: i64,
    /// Models loaded at once, the default one included; loading one more
    /// evicts the least recently used idle one, and when none is idle the
    /// request is answered 503 with `Retry-After`.
    pub max_loaded: usize,
    /// A request naming a known model (`small`, `Systran/faster-whisper-small`)
    /// that is not in `model.model_dir` downloads it first. Off by default:
    /// any key holder could otherwise fill the disk with downloads.
    pub pull_on_demand: bool,
    /// A model is loaded only while the machine has its size on disk plus
    /// this much memory available (MB), so a load cannot take the process
    /// out of memory; otherwise 503 with `Retry-After`.
    pub min_free_memory_mb: u64,
}

impl Default for ModelsConfig {
    fn default() -> Self {
        Self { ttl_s: 300, max_loaded: 2, pull_on_demand: false, min_free_memory_mb: 512 }
    }
}

impl ModelsConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.ttl_s < -1 {
            return bad("models.ttl_s", &self.ttl_s, "a number of seconds >= 0, or -1 (keep loaded)");
        }
        if self.max_loaded == 0 {
            return bad("models.max_loaded", &0, "a number >= 1 (the default model counts)");
        }
        Ok(())
    }

    /// How long an idle model stays loaded; None = until unloaded by hand.
    pub fn ttl(&self) -> Option<std::time::Duration> {
        u64::try_from(self.ttl_s).ok().map(std::time::Duration::from_secs)
    }
}
