//! The `realtime` section: live transcription sessions over
//! `GET /v1/realtime` (OpenAI's realtime transcription protocol): how many,
//! how often the open turn is decoded again, and the bounds that keep a
//! fast, slow or idle client from holding the server's memory.

use serde::{Deserialize, Serialize};

use super::{bad, ConfigError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RealtimeConfig {
    /// Serve `GET /v1/realtime` at all.
    pub enabled: bool,
    /// Sessions open at once in this process (a gateway: through it; a
    /// worker: on it); one more is told `session_limit_reached` and closed.
    pub max_sessions: usize,
    /// The open turn is decoded again at least this often while audio
    /// arrives (ms), and back to back while the engine has an idle replica;
    /// a word is committed once two consecutive decodes agree on it and the
    /// later one has heard this much audio past it.
    pub step_ms: u64,
    /// The encoder window of those decodes while the turn fits in it (s):
    /// 30 is Whisper's; 15 costs about half as much per decode, more
    /// streams per core and text sooner, at a little accuracy. A turn's
    /// last decode always uses 30.
    pub step_window_s: f64,
    /// Seconds of received audio not yet decoded a session may hold; a
    /// client sending faster than the engine keeps up (or faster than real
    /// time for long) gets an error event and is closed.
    pub max_lag_s: f64,
    /// A session that sends nothing for this long is closed (s).
    pub idle_timeout_s: u64,
    /// The largest client event (OpenAI's limit: 15 MiB). A larger one
    /// (up to twice this) is answered with an error event; past that the
    /// connection is closed (1009).
    pub max_event_mb: u64,
    /// Server events queued for a client that does not read; past it the
    /// client is cut off (1008) rather than queued for without bound.
    pub max_pending_events: usize,
}

impl Default for RealtimeConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_sessions: 32,
            step_ms: 1000,
            step_window_s: 30.0,
            max_lag_s: 60.0,
            idle_timeout_s: 120,
            max_event_mb: 15,
            max_pending_events: 1024,
        }
    }
}

impl RealtimeConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_sessions == 0 {
            return bad("realtime.max_sessions", &0, "a number > 0 (set realtime.enabled to false to turn sessions off)");
        }
        if !(100..=10_000).contains(&self.step_ms) {
            return bad("realtime.step_ms", &self.step_ms, "a number of ms in 100-10000");
        }
        if !(10.0..=30.0).contains(&self.step_window_s) {
            return bad("realtime.step_window_s", &self.step_window_s, "a number of seconds in 10-30");
        }
        if !(self.max_lag_s.is_finite() && self.max_lag_s >= 1.0) {
            return bad("realtime.max_lag_s", &self.max_lag_s, "a number of seconds >= 1");
        }
        if self.idle_timeout_s == 0 {
            return bad("realtime.idle_timeout_s", &0, "a number of seconds > 0");
        }
        if !(1..=256).contains(&self.max_event_mb) {
            return bad("realtime.max_event_mb", &self.max_event_mb, "a number of MB in 1-256");
        }
        if self.max_pending_events < 16 {
            return bad("realtime.max_pending_events", &self.max_pending_events, "a number >= 16");
        }
        Ok(())
    }

    /// The largest client event read whole, in bytes.
    pub fn max_event_bytes(&self) -> usize {
        (self.max_event_mb as usize) << 20
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bounds_refused() {
        assert!(RealtimeConfig::default().validate().is_ok());
        let c = RealtimeConfig { step_ms: 10, ..RealtimeConfig::default() };
        assert!(c.validate().is_err());
        let c = RealtimeConfig { step_window_s: 5.0, ..RealtimeConfig::default() };
        assert!(c.validate().is_err());
        let c = RealtimeConfig { max_sessions: 0, ..RealtimeConfig::default() };
        assert!(c.validate().is_err());
        let c = RealtimeConfig { max_lag_s: f64::NAN, ..RealtimeConfig::default() };
        assert!(c.validate().is_err());
    }
}
