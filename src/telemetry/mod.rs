//! What the service tells its operators: logs ([`logging`]: application
//! and error lines, in the Python [`format`] or JSON ([`event_format`]),
//! with [`rotation`]), one access line per request ([`access`]),
//! Prometheus metrics ([`metrics`]) and OpenTelemetry traces ([`traces`]).

pub mod access;
pub mod event_format;
pub mod format;
pub mod logging;
pub mod metrics;
pub mod rotation;
pub mod stats;
pub mod traces;
