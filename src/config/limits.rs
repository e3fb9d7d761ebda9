//! The `limits` section: upload, audio, queue and form-field bounds, and the
//! largest `beam_size`/`best_of` a request may ask; with their defaults and
//! checks, including the `decoding` section's, which these bounds cap.

use serde::{Deserialize, Serialize};

use super::{bad, ConfigError};
use crate::engine::DecodeOptions;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub max_upload_mb: u64,
    pub max_audio_seconds: f64,
    /// Jobs waiting for an engine replica; a full queue answers 503.
    pub max_queue: usize,
    pub request_timeout_s: u64,
    /// The largest `beam_size` and `best_of` a request may ask.
    pub max_beam_size: usize,
    pub max_best_of: usize,
    /// Seconds of decoded audio the engine's queue may hold (queued and
    /// being transcribed); past it, 503 with `Retry-After`.
    pub max_queued_audio_s: f64,
    /// Uploads decoded to samples at once; 0 = one per core.
    pub max_concurrent_decodes: usize,
    /// Bytes any form field but the audio may hold (`prompt` included).
    pub max_field_bytes: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_upload_mb: 100,
            max_audio_seconds: 14400.0,
            max_queue: 256,
            request_timeout_s: 600,
            max_beam_size: 10,
            max_best_of: 10,
            max_queued_audio_s: 7_200.0,
            max_concurrent_decodes: 0,
            max_field_bytes: 4096,
        }
    }
}

impl LimitsConfig {
    /// Upload, audio, queue and timeout bounds.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let l = self;
        if l.max_upload_mb == 0 {
            return bad("limits.max_upload_mb", &0, "a number > 0");
        }
        if !(l.max_audio_seconds.is_finite() && l.max_audio_seconds > 0.0) {
            return bad("limits.max_audio_seconds", &l.max_audio_seconds, "a number > 0");
        }
        if !(l.max_queued_audio_s.is_finite() && l.max_queued_audio_s > 0.0) {
            return bad("limits.max_queued_audio_s", &l.max_queued_audio_s, "a number > 0");
        }
        if l.max_queue == 0 {
            return bad("limits.max_queue", &0, "a number > 0");
        }
        if l.request_timeout_s == 0 {
            return bad("limits.request_timeout_s", &0, "a number > 0");
        }
        Ok(())
    }

    /// `max_field_bytes`, checked between the server's connection limits and
    /// its shutdown deadline (see [`super::Config::validate`] for the order).
    pub(super) fn validate_field_bytes(&self) -> Result<(), ConfigError> {
        if self.max_field_bytes == 0 {
            return bad("limits.max_field_bytes", &0, "a number > 0");
        }
        Ok(())
    }

    /// The `beam_size`/`best_of` bounds, then the server-wide decoding
    /// defaults (`decoding`) within them; the last checks that run.
    pub(super) fn validate_decoding(&self, dc: &DecodeOptions) -> Result<(), ConfigError> {
        let bounds = self;
        if !(1..=16).contains(&bounds.max_beam_size) {
            return bad("limits.max_beam_size", &bounds.max_beam_size, "1-16");
        }
        if !(1..=16).contains(&bounds.max_best_of) {
            return bad("limits.max_best_of", &bounds.max_best_of, "1-16");
        }
        if !(1..=bounds.max_beam_size).contains(&dc.beam_size) {
            return bad("decoding.beam_size", &dc.beam_size, &format!("1-{} (limits.max_beam_size)", bounds.max_beam_size));
        }
        if !(1..=bounds.max_best_of).contains(&dc.best_of) {
            return bad("decoding.best_of", &dc.best_of, &format!("1-{} (limits.max_best_of)", bounds.max_best_of));
        }
        if dc.temperatures.is_empty() || dc.temperatures.iter().any(|t| !(t.is_finite() && (0.0..=2.0).contains(t))) {
            return bad("decoding.temperatures", &format!("{:?}", dc.temperatures), "a non-empty list of numbers in 0-2");
        }
        if !(dc.patience.is_finite() && dc.patience > 0.0) {
            return bad("decoding.patience", &dc.patience, "a number > 0");
        }
        if !dc.length_penalty.is_finite() {
            return bad("decoding.length_penalty", &dc.length_penalty, "a number");
        }
        if !(dc.max_initial_timestamp.is_finite() && dc.max_initial_timestamp >= 0.0) {
            return bad("decoding.max_initial_timestamp", &dc.max_initial_timestamp, "a number >= 0");
        }
        Ok(())
    }
}
