//! Reverse-diffusion samplers behind one small trait (one file per sampler, as candle's schedulers).
//!
//! The U-Net predicts the noise `eps` in `x_t = signal(t) * x_0 + noise(t) * eps` (see [`crate::schedule`]).
//! From that prediction every sampler can estimate the clean sample `x_0 = (x_t - noise * eps) / signal`
//! and decides how to move to the next, less noisy time. The last step returns that estimate of `x_0`.

mod ddim;
mod dpmpp;

pub use ddim::Ddim;
pub use dpmpp::DpmSolverPp2m;

use crate::error::{Error, Result};
use crate::rng::Noise;
use crate::schedule::CosineSchedule;

/// One reverse-diffusion method.
pub trait Sampler {
    /// Moves `x` (at time `t`) to time `t_next < t` given the predicted noise `eps`; with `t_next = None` (the
    /// last step) writes the estimate of the clean sample instead. `noise` feeds stochastic samplers.
    fn step(&mut self, x: &mut [f32], eps: &[f32], t: f32, t_next: Option<f32>, noise: &mut Noise) -> Result<()>;
}

/// The samplers by name, as the CLI and the C API spell them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SamplerKind {
    /// DDIM; eta = 0 is deterministic, eta = 1 is as stochastic as DDPM.
    Ddim { eta: f32 },
    /// DPM-Solver++ (2M), deterministic, second order: good images in fewer steps.
    DpmSolverPp2m,
}

impl SamplerKind {
    /// The sampler called `name` (case-insensitive) with DDIM's `eta`, which must be in [0, 1] whatever
    /// the sampler (one rule for every caller; the others ignore it). Messages start with the field's name.
    pub fn parse(name: &str, eta: f32) -> Result<SamplerKind> {
        Self::check_eta(eta)?;
        match name.to_ascii_lowercase().as_str() {
            "ddim" => Ok(SamplerKind::Ddim { eta }),
            "dpm++2m" | "dpmpp2m" | "dpm-solver++" => Ok(SamplerKind::DpmSolverPp2m),
            _ => Err(Error::invalid(format!("sampler {} is not known (ddim | dpm++2m)", crate::limits::quote(name)))),
        }
    }

    /// Refuses an eta outside [0, 1] (or NaN).
    pub fn check_eta(eta: f32) -> Result<()> {
        if !(eta.is_finite() && (0.0..=1.0).contains(&eta)) {
            return Err(Error::invalid(format!("eta is {eta}, must be in [0, 1]")));
        }
        Ok(())
    }

    pub fn build(self, schedule: CosineSchedule) -> Box<dyn Sampler + Send> {
        match self {
            SamplerKind::Ddim { eta } => Box::new(Ddim::new(schedule, eta)),
            SamplerKind::DpmSolverPp2m => Box::new(DpmSolverPp2m::new(schedule)),
        }
    }
}

/// x_0 estimate from x_t and the predicted noise.
pub(crate) fn predict_x0(x: f32, eps: f32, signal: f32, noise: f32) -> f32 {
    (x - noise * eps) / signal
}

fn check(x: &[f32], eps: &[f32]) -> Result<()> {
    if x.len() != eps.len() {
        return Err(Error::invalid(format!("sampler: {} latent values but {} noise predictions", x.len(), eps.len())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a sampler with a perfect noise predictor (the true eps) from time `start`.
    fn run_with_true_noise(kind: SamplerKind, start: f32, steps: usize) -> (Vec<f32>, Vec<f32>) {
        let schedule = CosineSchedule::default();
        let mut n = Noise::new(5);
        let x0: Vec<f32> = n.normals(64);
        let eps: Vec<f32> = n.normals(64);
        let r = schedule.rates(start);
        let mut x: Vec<f32> = x0.iter().zip(&eps).map(|(a, e)| r.signal * a + r.noise * e).collect();
        let times = schedule.timesteps(steps, start).unwrap();
        let mut sampler = kind.build(schedule);
        for k in 0..steps {
            // With eta = 0 / deterministic samplers the sample stays on the line x0 + eps: the true noise
            // of the current x is still eps.
            let next = if k + 1 == steps { None } else { Some(times[k + 1]) };
            sampler.step(&mut x, &eps, times[k], next, &mut n).unwrap();
        }
        (x, x0)
    }

    #[test]
    fn with_the_true_noise_deterministic_samplers_return_the_clean_sample() {
        for kind in [SamplerKind::Ddim { eta: 0.0 }, SamplerKind::DpmSolverPp2m] {
            for (start, steps) in [(1.0, 1), (1.0, 10), (0.37, 7), (0.9, 50)] {
                let (x, x0) = run_with_true_noise(kind, start, steps);
                let err = x.iter().zip(&x0).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
                assert!(err < 2e-4, "{kind:?} from t={start} in {steps} steps: max error {err}");
            }
        }
    }

    #[test]
    fn parse_names_and_eta() {
        assert_eq!(SamplerKind::parse("DDIM", 0.0).unwrap(), SamplerKind::Ddim { eta: 0.0 });
        assert_eq!(SamplerKind::parse("dpm++2m", 0.0).unwrap(), SamplerKind::DpmSolverPp2m);
        assert!(SamplerKind::parse("euler", 0.0).is_err());
        assert!(SamplerKind::parse("ddim", f32::NAN).is_err());
        assert!(SamplerKind::parse("ddim", 1.5).is_err());
    }

    #[test]
    fn stochastic_ddim_is_seeded() {
        let schedule = CosineSchedule::default();
        let go = |seed| {
            let mut x = vec![0.5f32; 16];
            let eps = vec![0.1f32; 16];
            let mut s = Ddim::new(schedule, 1.0);
            s.step(&mut x, &eps, 0.8, Some(0.6), &mut Noise::new(seed)).unwrap();
            x
        };
        assert_eq!(go(1), go(1));
        assert_ne!(go(1), go(2));
    }
}
