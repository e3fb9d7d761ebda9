//! GPU memory and utilisation from NVML (`libnvidia-ml.so.1`, which comes
//! with the driver), opened at run time by `nvml-wrapper`, so machines
//! without a GPU need no NVIDIA library and get no error: no samples, and
//! `gpu_memory` reads 0. A background thread samples the devices the
//! replicas run on every two seconds for `/metrics`, `/v1/stats` and the
//! original API's `gpu_memory`.

use std::sync::{OnceLock, RwLock};
use std::time::Duration;

use serde::Serialize;

const SAMPLE_EVERY: Duration = Duration::from_secs(2);

/// One device, as last sampled.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema, PartialEq)]
pub struct GpuSample {
    /// The CUDA device index (among the visible devices), as replicas use it.
    pub index: usize,
    pub name: String,
    pub memory_used_bytes: u64,
    pub memory_total_bytes: u64,
    /// Share of the last sample period the GPU was busy (0 to 1).
    pub utilization: f64,
}

static SAMPLES: RwLock<Vec<GpuSample>> = RwLock::new(Vec::new());

/// The last samples (empty without NVML or before the first).
pub fn samples() -> Vec<GpuSample> {
    SAMPLES.read().map(|s| s.clone()).unwrap_or_default()
}

/// GB of memory in use on CUDA device `index` (0 when unknown).
pub fn memory_used_gb(index: usize) -> f64 {
    samples().iter().find(|s| s.index == index).map_or(0.0, |s| s.memory_used_bytes as f64 / 1e9)
}

/// Starts sampling `devices` (CUDA indices), once per process.
pub fn watch(devices: Vec<usize>) {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        let spawned = std::thread::Builder::new().name("gpu-sampler".into()).spawn(move || {
            let nvml = match nvml_wrapper::Nvml::init() {
                Ok(n) => n,
                Err(e) => {
                    tracing::info!(error = %e, "NVML not available: GPU memory and utilisation are not reported");
                    return;
                }
            };
            loop {
                let got = sample(&nvml, &devices);
                for s in &got {
                    crate::telemetry::metrics::gpu_sample(s.index, s.memory_used_bytes, s.utilization);
                }
                if let Ok(mut all) = SAMPLES.write() {
                    *all = got;
                }
                std::thread::sleep(SAMPLE_EVERY);
            }
        });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "no GPU sampler thread");
        }
    });
}

fn sample(nvml: &nvml_wrapper::Nvml, devices: &[usize]) -> Vec<GpuSample> {
    let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    devices
        .iter()
        .filter_map(|&index| {
            let device = match nvml_device(visible.as_deref(), index)? {
                NvmlId::Index(i) => nvml.device_by_index(i).ok()?,
                NvmlId::Uuid(u) => nvml.device_by_uuid(u).ok()?,
            };
            let memory = device.memory_info().ok()?;
            let utilization = device.utilization_rates().map_or(0.0, |u| f64::from(u.gpu) / 100.0);
            Some(GpuSample {
                index,
                name: device.name().unwrap_or_default(),
                memory_used_bytes: memory.used,
                memory_total_bytes: memory.total,
                utilization,
            })
        })
        .collect()
}

/// How NVML names a device (it ignores CUDA_VISIBLE_DEVICES).
#[derive(Debug, PartialEq)]
enum NvmlId {
    Index(u32),
    Uuid(String),
}

/// The NVML device behind CUDA's `index`, given CUDA_VISIBLE_DEVICES
/// (`1,3`, or GPU UUIDs as `nvidia-smi -L` prints them, as Kubernetes sets it).
fn nvml_device(visible: Option<&str>, index: usize) -> Option<NvmlId> {
    let Some(list) = visible.map(str::trim).filter(|v| !v.is_empty()) else {
        return Some(NvmlId::Index(index as u32));
    };
    let entry = list.split(',').map(str::trim).nth(index)?;
    match entry.parse::<u32>() {
        Ok(i) => Some(NvmlId::Index(i)),
        Err(_) if entry.starts_with("GPU-") || entry.starts_with("MIG-") => Some(NvmlId::Uuid(entry.to_string())),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuda_indices_map_through_cuda_visible_devices() {
        assert_eq!(nvml_device(None, 2), Some(NvmlId::Index(2)));
        assert_eq!(nvml_device(Some(""), 0), Some(NvmlId::Index(0)));
        assert_eq!(nvml_device(Some("3,1"), 0), Some(NvmlId::Index(3)));
        assert_eq!(nvml_device(Some("3, 1"), 1), Some(NvmlId::Index(1)));
        assert_eq!(nvml_device(Some("3,1"), 2), None);
        assert_eq!(nvml_device(Some("GPU-8f2a-11"), 0), Some(NvmlId::Uuid("GPU-8f2a-11".into())));
        assert_eq!(nvml_device(Some("nonsense"), 0), None);
    }

    #[test]
    fn without_nvml_there_are_no_samples_and_no_error() {
        // On a machine without the driver NVML cannot open; nothing fails
        // and memory reads 0. (On a GPU machine the device is sampled.)
        match nvml_wrapper::Nvml::init() {
            Err(_) => {
                watch(vec![0]);
                std::thread::sleep(Duration::from_millis(100));
                assert!(samples().is_empty());
                assert_eq!(memory_used_gb(0), 0.0);
            }
            Ok(nvml) => {
                let got = sample(&nvml, &[0]);
                assert!(got.first().is_some_and(|s| s.memory_total_bytes > 0), "{got:?}");
            }
        }
    }
}
