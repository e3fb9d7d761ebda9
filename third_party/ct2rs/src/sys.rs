//! Rust bindings to CTranslate2's C++ API (from ct2rs 0.10.3).
pub use config::*;
pub use model_memory_reader::*;
pub use scoring::*;
pub use storage_view::*;
pub use types::*;
pub use whisper::*;

mod config;
mod model_memory_reader;
mod scoring;
mod storage_view;
mod types;
mod whisper;
