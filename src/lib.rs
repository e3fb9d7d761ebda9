//! whisper-serve: OpenAI Whisper speech-to-text over HTTP, on CTranslate2.
pub mod api;
pub mod audio;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod engine;
pub mod error;
pub mod formats;
pub mod gpu;
pub mod jobs;
pub mod loadtest;
pub mod models;
pub mod options;
pub mod pypi_index;
pub mod realtime;
pub mod security;
pub mod dispatch;
pub mod server;
pub mod state;
pub mod telemetry;
pub mod vad;
pub mod web;
pub mod wyoming;

#[cfg(feature = "wheel")]
pub use ct2rs as ct2;
#[cfg(all(feature = "source-build", not(feature = "wheel")))]
pub use ct2rs_source as ct2;
