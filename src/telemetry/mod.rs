//! What the service tells its operators: logs ([`logging`]: application
//! and error lines, rotation), one access line per request ([`access`]),
//! Prometheus metrics ([`metrics`]) and OpenTelemetry traces ([`traces`]).

pub mod access;
pub mod logging;
pub mod metrics;
pub mod traces;
