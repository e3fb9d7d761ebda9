//! The `telemetry` section: where OpenTelemetry traces go, and how many.
//! Metrics need no settings (`GET /metrics` is always served).

use serde::{Deserialize, Serialize};

use super::{bad, ConfigError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// OTLP/HTTP (protobuf) collector, e.g. `http://otel-collector:4318`
    /// (`/v1/traces` is appended unless the URL already ends with it);
    /// null: no traces are exported.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the exported spans.
    pub service_name: String,
    /// Share of new traces kept, 0-1; a trace begun upstream (a
    /// `traceparent` that says sampled) is always kept.
    pub sample_ratio: f64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self { otlp_endpoint: None, service_name: "whisper-serve".into(), sample_ratio: 1.0 }
    }
}

impl TelemetryConfig {
    /// The endpoint, treating an empty string as none.
    pub fn endpoint(&self) -> Option<&str> {
        self.otlp_endpoint.as_deref().map(str::trim).filter(|e| !e.is_empty())
    }

    /// The URL spans are POSTed to: the endpoint with `/v1/traces`, the
    /// path OTLP/HTTP collectors serve, unless it is already there.
    pub fn traces_url(&self) -> Option<String> {
        let base = self.endpoint()?.trim_end_matches('/');
        Some(if base.ends_with("/v1/traces") { base.to_string() } else { format!("{base}/v1/traces") })
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(e) = self.endpoint() {
            let scheme_ok = e.starts_with("http://") || e.starts_with("https://");
            let parses = e.parse::<axum::http::Uri>().is_ok_and(|u| u.host().is_some_and(|h| !h.is_empty()));
            if !(scheme_ok && parses) {
                return bad("telemetry.otlp_endpoint", &format!("{e:?}"), "an http:// or https:// URL such as http://otel-collector:4318, or null");
            }
        }
        if self.service_name.trim().is_empty() {
            return bad("telemetry.service_name", &"\"\"", "a non-empty name");
        }
        if !(self.sample_ratio.is_finite() && (0.0..=1.0).contains(&self.sample_ratio)) {
            return bad("telemetry.sample_ratio", &self.sample_ratio, "a number in 0-1");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_gets_the_traces_path_once() {
        let mut c = TelemetryConfig::default();
        assert_eq!(c.traces_url(), None);
        c.otlp_endpoint = Some("  ".into());
        assert_eq!(c.traces_url(), None, "blank means none");
        c.otlp_endpoint = Some("http://collector:4318/".into());
        assert_eq!(c.traces_url().as_deref(), Some("http://collector:4318/v1/traces"));
        c.otlp_endpoint = Some("https://c.example/v1/traces".into());
        assert_eq!(c.traces_url().as_deref(), Some("https://c.example/v1/traces"));
    }

    #[test]
    fn bad_values_are_refused() {
        let ok = TelemetryConfig::default();
        ok.validate().expect("defaults");
        for (c, key) in [
            (TelemetryConfig { otlp_endpoint: Some("collector:4318".into()), ..ok.clone() }, "telemetry.otlp_endpoint"),
            (TelemetryConfig { otlp_endpoint: Some("http://".into()), ..ok.clone() }, "telemetry.otlp_endpoint"),
            (TelemetryConfig { service_name: " ".into(), ..ok.clone() }, "telemetry.service_name"),
            (TelemetryConfig { sample_ratio: 1.5, ..ok.clone() }, "telemetry.sample_ratio"),
            (TelemetryConfig { sample_ratio: f64::NAN, ..ok.clone() }, "telemetry.sample_ratio"),
        ] {
            let e = c.validate().expect_err(key);
            assert_eq!(e.key(), Some(key), "{e}");
        }
        TelemetryConfig { otlp_endpoint: Some("https://collector.example:4318".into()), sample_ratio: 0.0, ..ok }
            .validate()
            .expect("valid");
    }
}
