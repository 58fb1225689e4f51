//! The cosine diffusion schedule, in one place for the trainer and the runtime.
//!
//! Diffusion time t runs over [0, 1]. A noisy sample is `x_t = signal_rate(t) * x_0 + noise_rate(t) * eps`,
//! with signal = cos(angle) and noise = sin(angle), the angle moving linearly from acos(max_signal_rate) at
//! t = 0 to acos(min_signal_rate) at t = 1 (the lecture's reference: 0.95 and 0.02). Because the two rates
//! are the cosine and sine of one angle, signal^2 + noise^2 = 1 at every t: the variance of unit-variance data
//! stays 1 all along the way, which is what the U-Net sees.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A cosine schedule. Stored in the manifest so that runtime and trainer agree.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CosineSchedule {
    /// Signal rate at t = 0 (the least noisy level trained). Below 1 so that the network never has to
    /// predict noise from a sample that holds none.
    pub max_signal_rate: f32,
    /// Signal rate at t = 1 (the noisiest level): near 0, so sampling can start from pure noise.
    pub min_signal_rate: f32,
}

impl Default for CosineSchedule {
    /// The lecture's reference values (Keras DDIM example): 0.95 and 0.02.
    fn default() -> Self {
        CosineSchedule { max_signal_rate: 0.95, min_signal_rate: 0.02 }
    }
}

/// Signal and noise rates at one diffusion time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    pub signal: f32,
    pub noise: f32,
}

impl CosineSchedule {
    /// Checks 0 < min < max < 1 (both finite).
    pub fn validate(&self) -> Result<()> {
        let (lo, hi) = (self.min_signal_rate, self.max_signal_rate);
        if !(lo.is_finite() && hi.is_finite() && 0.0 < lo && lo < hi && hi < 1.0) {
            return Err(Error::invalid(format!(
                "cosine schedule needs 0 < min_signal_rate < max_signal_rate < 1, got {lo} and {hi}"
            )));
        }
        Ok(())
    }

    /// The rates at diffusion time `t` (clamped to [0, 1]). Computed in f64 so that trainer and runtime,
    /// which may evaluate it on different devices, agree to the last f32 bit.
    pub fn rates(&self, t: f32) -> Rates {
        let t = (t as f64).clamp(0.0, 1.0);
        let start = (self.max_signal_rate as f64).acos();
        let end = (self.min_signal_rate as f64).acos();
        let angle = start + t * (end - start);
        Rates { signal: angle.cos() as f32, noise: angle.sin() as f32 }
    }

    /// `steps + 1` diffusion times from `start` down to 0, evenly spaced: step k goes from times[k] to times[k+1].
    /// `start` = 1 is generation from pure noise; less is img2img / denoising from a partly noisy image.
    pub fn timesteps(&self, steps: usize, start: f32) -> Result<Vec<f32>> {
        if steps == 0 {
            return Err(Error::invalid("steps must be at least 1"));
        }
        if !(start.is_finite() && start > 0.0 && start <= 1.0) {
            return Err(Error::invalid(format!("start time must be in (0, 1], got {start}")));
        }
        Ok((0..=steps).map(|k| start * (1.0 - k as f32 / steps as f32)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_a_rotation_monotone_and_end_as_configured() {
        let s = CosineSchedule::default();
        let mut last = Rates { signal: 2.0, noise: -1.0 };
        for k in 0..=1000 {
            let r = s.rates(k as f32 / 1000.0);
            assert!((r.signal * r.signal + r.noise * r.noise - 1.0).abs() < 1e-6);
            assert!(r.signal < last.signal && r.noise > last.noise, "not monotone at {k}");
            last = r;
        }
        assert!((s.rates(0.0).signal - 0.95).abs() < 1e-7);
        assert!((s.rates(1.0).signal - 0.02).abs() < 1e-7);
        assert_eq!(s.rates(-3.0), s.rates(0.0));
    }

    #[test]
    fn timesteps_and_validation() {
        let s = CosineSchedule::default();
        assert_eq!(s.timesteps(4, 1.0).unwrap(), vec![1.0, 0.75, 0.5, 0.25, 0.0]);
        assert_eq!(s.timesteps(2, 0.5).unwrap(), vec![0.5, 0.25, 0.0]);
        assert!(s.timesteps(0, 1.0).is_err());
        assert!(s.timesteps(3, 0.0).is_err());
        assert!(s.timesteps(3, f32::NAN).is_err());
        assert!(CosineSchedule { max_signal_rate: 0.5, min_signal_rate: 0.6 }.validate().is_err());
        assert!(CosineSchedule::default().validate().is_ok());
    }
}
