//! The `vad` section: which voice activity detector `vad_filter`, the
//! decoder's no-speech second opinion and the realtime sessions' server VAD
//! use, and where its model comes from.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{bad, ConfigError};

/// The detector behind every VAD decision in the process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VadEngine {
    /// Silero VAD v6, computed as faster-whisper 1.2.1 does (its model is
    /// compiled into the binary).
    #[default]
    Silero,
    /// WebRTC's GMM VAD behind an adaptive energy gate: no model, about as
    /// cheap as a VAD gets, less sure in noise.
    Webrtc,
}

impl VadEngine {
    pub fn as_str(self) -> &'static str {
        match self {
            VadEngine::Silero => "silero",
            VadEngine::Webrtc => "webrtc",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VadConfig {
    pub engine: VadEngine,
    /// A Silero VAD ONNX file to load instead of the built-in v6 (same
    /// inputs and outputs: `input` [N, 576], `h`/`c` [1, 1, 128]). Read at
    /// start-up; a file that is missing or does not load stops the start.
    pub silero_model: Option<PathBuf>,
}

impl VadConfig {
    /// Only the value's shape: whether the file exists and loads is checked
    /// when the detector is built at start-up (validation never touches the
    /// file system).
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(p) = &self.silero_model {
            if p.as_os_str().is_empty() {
                return bad("vad.silero_model", &"\"\"", "the path of an ONNX file, or null for the built-in model");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_to_silero_with_the_built_in_model() {
        let c = VadConfig::default();
        assert_eq!(c.engine, VadEngine::Silero);
        assert!(c.silero_model.is_none());
        assert!(c.validate().is_ok());
        let c: VadConfig = serde_json::from_str(r#"{"engine": "webrtc"}"#).expect("webrtc");
        assert_eq!(c.engine, VadEngine::Webrtc);
        assert!(serde_json::from_str::<VadConfig>(r#"{"engine": "pyannote"}"#).is_err());
        let c = VadConfig { silero_model: Some(PathBuf::new()), ..VadConfig::default() };
        assert!(c.validate().is_err());
    }
}
