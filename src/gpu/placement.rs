//! Which GPU each replica runs on. `deployment.gpu_per_replica` is Ray
//! Serve's fractional GPU: 0.1 lets up to 10 replicas share a device, 0.5
//! two, 1 gives each its own. Replicas are dealt round-robin over every
//! visible device (CUDA_VISIBLE_DEVICES decides which those are; indices
//! here are CUDA's, counted among the visible ones), so load spreads before
//! it stacks. Replicas on one device share one copy of the weights when
//! every device gets the same number of replicas (CTranslate2 sets replicas
//! per device once per model); an uneven deal loads one copy per replica.
//! A replica runs on one device: values above 1 count as 1. 0 (the
//! original config's default) puts no limit on replicas per device.

/// More replicas than the visible devices can hold at this fraction.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{replicas} replicas at deployment.gpu_per_replica {fraction} need {needed} GPUs; {visible} visible (lower num_replicas or gpu_per_replica, or make more GPUs visible)")]
pub struct PlacementError {
    pub replicas: usize,
    pub fraction: f64,
    pub needed: usize,
    pub visible: usize,
}

/// Replicas one device takes at `fraction` (None: no limit).
pub fn per_device(fraction: f64) -> Option<usize> {
    if !(fraction.is_finite() && fraction > 0.0) {
        return None;
    }
    // 1e-9: 0.1 is not exactly a tenth, and 1/0.1 must still give 10.
    Some(((1.0 / fraction.min(1.0)) + 1e-9).floor().max(1.0) as usize)
}

/// The device index of each of `replicas` replicas over `visible` devices.
pub fn device_indices(replicas: usize, fraction: f64, visible: usize) -> Result<Vec<i32>, PlacementError> {
    let replicas = replicas.max(1);
    let visible = visible.max(1);
    if let Some(per) = per_device(fraction) {
        if replicas > per * visible {
            return Err(PlacementError { replicas, fraction, needed: replicas.div_ceil(per), visible });
        }
    }
    Ok((0..replicas).map(|i| (i % visible) as i32).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions_set_replicas_per_device() {
        assert_eq!(per_device(0.1), Some(10));
        assert_eq!(per_device(0.25), Some(4));
        assert_eq!(per_device(0.3), Some(3));
        assert_eq!(per_device(0.5), Some(2));
        assert_eq!(per_device(1.0), Some(1));
        assert_eq!(per_device(2.0), Some(1));
        assert_eq!(per_device(0.0), None);
        assert_eq!(per_device(f64::NAN), None);
    }

    #[test]
    fn replicas_spread_round_robin_over_visible_devices() {
        // The original config: 4 replicas x 0.1 GPU on one GPU share it.
        assert_eq!(device_indices(4, 0.1, 1), Ok(vec![0, 0, 0, 0]));
        // Two GPUs: dealt evenly, two per device (one copy of the weights each).
        assert_eq!(device_indices(4, 0.1, 2), Ok(vec![0, 1, 0, 1]));
        assert_eq!(device_indices(4, 0.5, 2), Ok(vec![0, 1, 0, 1]));
        assert_eq!(device_indices(2, 1.0, 2), Ok(vec![0, 1]));
        // Fewer replicas than devices: one each, the rest idle.
        assert_eq!(device_indices(2, 0.1, 4), Ok(vec![0, 1]));
        // No limit per device.
        assert_eq!(device_indices(3, 0.0, 1), Ok(vec![0, 0, 0]));
    }

    #[test]
    fn too_many_replicas_for_the_devices_is_an_error() {
        let e = device_indices(3, 1.0, 2).expect_err("3 whole GPUs on 2");
        assert_eq!((e.needed, e.visible), (3, 2));
        assert!(e.to_string().contains("need 3 GPUs; 2 visible"), "{e}");
        assert!(device_indices(11, 0.1, 1).is_err());
        assert!(device_indices(10, 0.1, 1).is_ok());
        assert!(device_indices(20, 0.1, 2).is_ok());
    }
}
