//! NVIDIA GPUs. CTranslate2 (the wheel's library) loads cuBLAS with
//! `dlopen` when a model first goes to a CUDA device, and talks to the
//! driver's `libcuda.so.1`; its CUDA runtime is linked in and this build
//! calls no cuDNN. So the same binary runs on CPU-only machines and on GPUs.
//! This module finds those libraries before the engine does ([`libs`]),
//! fetches cuBLAS from PyPI when the system has none ([`pull`]), maps
//! replicas to devices ([`placement`]) and reads memory and utilisation
//! through NVML ([`nvml`]).

pub mod libs;
pub mod nvml;
pub mod placement;
pub mod pull;

use std::sync::OnceLock;

use crate::config::{Config, DeviceKind};

/// Why CUDA cannot be used here.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CudaError {
    #[error("{0}")]
    Libraries(#[from] libs::LibsError),
    #[error("no CUDA device is visible{0}")]
    NoDevice(String),
    #[error("{0}")]
    Placement(#[from] placement::PlacementError),
}

/// Whether the engine runs on CUDA, from `model.device`: `cpu` never;
/// `cuda` or an error that names what is missing; `auto` when usable, else
/// CPU with a warning that says why (logged once).
pub fn use_cuda(config: &Config) -> Result<bool, CudaError> {
    match config.model.device {
        DeviceKind::Cpu => Ok(false),
        DeviceKind::Cuda => ready(config).map(|_| true),
        DeviceKind::Auto => match ready(config) {
            Ok(_) => Ok(true),
            Err(e) => {
                static WARNED: OnceLock<()> = OnceLock::new();
                WARNED.get_or_init(|| tracing::warn!(reason = %e, "model.device is auto and CUDA is not usable; running on CPU"));
                Ok(false)
            }
        },
    }
}

/// Loads the libraries (once per process) and counts the visible devices.
fn ready(config: &Config) -> Result<usize, CudaError> {
    static LOADED: OnceLock<Result<(), libs::LibsError>> = OnceLock::new();
    LOADED.get_or_init(|| libs::load(&config.cuda_dir()).map(|_| ())).clone()?;
    let n = crate::engine::cuda_device_count();
    if n == 0 {
        let visible = std::env::var("CUDA_VISIBLE_DEVICES")
            .map(|v| format!(" (CUDA_VISIBLE_DEVICES={v:?})"))
            .unwrap_or_default();
        return Err(CudaError::NoDevice(visible));
    }
    Ok(n)
}

/// The CUDA device of each replica, for `count` visible devices.
pub fn device_indices(config: &Config, visible: usize) -> Result<Vec<i32>, CudaError> {
    Ok(placement::device_indices(config.deployment.num_replicas as usize, config.deployment.gpu_per_replica, visible)?)
}

/// Resolves the engine settings from the config: device (finding CUDA's
/// libraries for `cuda`/`auto`), replicas' devices, compute type, threads.
pub fn engine_options(config: &Config) -> Result<crate::engine::EngineOptions, crate::engine::EngineError> {
    let cuda = use_cuda(config).map_err(|e| crate::engine::EngineError::NoCuda(format!(": {e}")))?;
    let device_indices = if cuda {
        device_indices(config, crate::engine::cuda_device_count()).map_err(|e| crate::engine::EngineError::NoCuda(format!(": {e}")))?
    } else {
        Vec::new()
    };
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    Ok(crate::engine::EngineOptions {
        cuda,
        compute_type: config.resolved_compute_type(cuda).to_string(),
        threads_per_replica: config.threads_per_replica(cores),
        num_replicas: config.deployment.num_replicas as usize,
        device_indices,
    })
}
