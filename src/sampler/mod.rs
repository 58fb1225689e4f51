//! Reverse-diffusion samplers behind one small trait (one file per sampler, as candle's schedulers).
//!
//! The U-Net predicts the noise `eps` in `x_t = signal(t) * x_0 + noise(t) * eps` (see [`crate::schedule`]).
//! From that prediction every sampler can estimate the clean sample `x_0 = (x_t - noise * eps) / signal`
//! and decides how to move to the next, less noisy time. The last step returns that estimate of `x_0`.

mod ddim;
pub mod discrete;
mod dpmpp;

pub use ddim::Ddim;
pub use dpmpp::DpmSolverPp2m;

use crate::error::{Error, Result};
use crate::rng::Noise;
use crate::schedule::CosineSchedule;

/// What the denoiser is fed at one step: the sample multiplied by `scale` (the input scaling of
/// sigma-space samplers such as Euler; 1 elsewhere) and the noise level it is conditioned on (`level`:
/// the noise variance for mirage's own U-Nets, the training timestep for a diffusers U-Net).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelInput {
    pub scale: f32,
    pub level: f32,
}

/// One reverse-diffusion run of a fixed number of steps, whatever its schedule (mirage's cosine time or a
/// diffusers scheduler's discrete timesteps). Step `k` (0-based) starts at that step's noise level and
/// moves the sample to the level of step `k + 1`; after the last step the sample is the one that is
/// decoded. The model's output is what the set's U-Net predicts (the noise, or v for a v-prediction set).
pub trait Sampler: Send {
    /// U-Net calls this run makes.
    fn steps(&self) -> usize;
    /// What the U-Net is fed at step `k` (< steps).
    fn input(&self, k: usize) -> ModelInput;
    /// Step `k`: moves `x` past it given the model output `out` at that step. `noise` feeds stochastic
    /// samplers (drawn in the order the reference implementation draws).
    fn step(&mut self, k: usize, x: &mut [f32], out: &[f32], noise: &mut Noise) -> Result<()>;
    /// The estimate of the clean sample at step `k` (for previews).
    fn denoised(&self, k: usize, x: &[f32], out: &[f32]) -> Vec<f32>;
    /// The clean sample `x0` brought to the level at which step `k` starts with the noise `eps` (img2img's
    /// start, inpainting's known region); `k == steps()` gives `x0` itself.
    fn noised(&self, k: usize, x0: &[f32], eps: &[f32]) -> Vec<f32>;
    /// The factor of the unit-variance noise a generation from pure noise starts with.
    fn init_noise_sigma(&self) -> f32 {
        1.0
    }
}

/// One step of a cosine-time sampler: moves `x` (at time `t`) to time `t_next < t` given the predicted
/// noise `eps`; with `t_next = None` (the last step) writes the estimate of the clean sample instead.
pub trait CosineStep: Send {
    fn step(&mut self, x: &mut [f32], eps: &[f32], t: f32, t_next: Option<f32>, noise: &mut Noise) -> Result<()>;
}

/// The samplers by name, as the CLI and the C API spell them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SamplerKind {
    /// The set's own: DDIM (eta as given) for mirage's sets, the folder's scheduler for a diffusers folder.
    Auto { eta: f32 },
    /// DDIM; eta = 0 is deterministic, eta = 1 is as stochastic as DDPM.
    Ddim { eta: f32 },
    /// DPM-Solver++ (2M), deterministic, second order: good images in fewer steps.
    DpmSolverPp2m,
    /// DPM-Solver++ (2M) on Karras sigmas (diffusers folders).
    DpmSolverPp2mKarras,
    /// Euler (diffusers folders).
    Euler,
    /// Euler ancestral (diffusers folders; stochastic).
    EulerAncestral,
    /// PNDM in its PLMS form (diffusers folders: Stable Diffusion 1.x's own).
    Pndm,
    /// LCM (diffusers folders: latent-consistency and few-step models; stochastic between steps).
    Lcm,
}

/// Every name [`SamplerKind::parse`] takes, for messages.
pub const SAMPLER_NAMES: &str = "auto | ddim | dpm++2m | dpm++2m-karras | euler | euler-a | pndm | lcm";

impl SamplerKind {
    /// The sampler called `name` (case-insensitive; empty = auto) with DDIM's `eta`, which must be in
    /// [0, 1] whatever the sampler (one rule for every caller; the others ignore it). Messages start with
    /// the field's name.
    pub fn parse(name: &str, eta: f32) -> Result<SamplerKind> {
        Self::check_eta(eta)?;
        match name.to_ascii_lowercase().as_str() {
            "" | "auto" | "default" => Ok(SamplerKind::Auto { eta }),
            "ddim" => Ok(SamplerKind::Ddim { eta }),
            "dpm++2m" | "dpmpp2m" | "dpm-solver++" => Ok(SamplerKind::DpmSolverPp2m),
            "dpm++2m-karras" | "dpmpp2m-karras" | "dpm++2m karras" => Ok(SamplerKind::DpmSolverPp2mKarras),
            "euler" => Ok(SamplerKind::Euler),
            "euler-a" | "euler_a" | "euler-ancestral" => Ok(SamplerKind::EulerAncestral),
            "pndm" | "plms" => Ok(SamplerKind::Pndm),
            "lcm" => Ok(SamplerKind::Lcm),
            _ => Err(Error::invalid(format!("sampler {} is not known ({SAMPLER_NAMES})", crate::limits::quote(name)))),
        }
    }

    /// The name [`SamplerKind::parse`] takes for this sampler.
    pub fn name(self) -> &'static str {
        match self {
            SamplerKind::Auto { .. } => "auto",
            SamplerKind::Ddim { .. } => "ddim",
            SamplerKind::DpmSolverPp2m => "dpm++2m",
            SamplerKind::DpmSolverPp2mKarras => "dpm++2m-karras",
            SamplerKind::Euler => "euler",
            SamplerKind::EulerAncestral => "euler-a",
            SamplerKind::Pndm => "pndm",
            SamplerKind::Lcm => "lcm",
        }
    }

    /// Refuses an eta outside [0, 1] (or NaN).
    pub fn check_eta(eta: f32) -> Result<()> {
        if !(eta.is_finite() && (0.0..=1.0).contains(&eta)) {
            return Err(Error::invalid(format!("eta is {eta}, must be in [0, 1]")));
        }
        Ok(())
    }

    /// Whether a run draws noise between steps (then frames of a walk are run one at a time).
    pub fn is_stochastic(self) -> bool {
        match self {
            SamplerKind::Auto { eta } | SamplerKind::Ddim { eta } => eta > 0.0,
            SamplerKind::EulerAncestral | SamplerKind::Lcm => true,
            _ => false,
        }
    }

    /// A run on mirage's cosine schedule: `steps` of a full generation, of which the `strength` fraction
    /// (at least one) is run, from time `strength` down to 0.
    pub fn build_cosine(self, schedule: CosineSchedule, steps: usize, strength: f32) -> Result<Box<dyn Sampler>> {
        let stepper: Box<dyn CosineStep> = match self {
            SamplerKind::Auto { eta } | SamplerKind::Ddim { eta } => Box::new(Ddim::new(schedule, eta)),
            SamplerKind::DpmSolverPp2m => Box::new(DpmSolverPp2m::new(schedule)),
            other => {
                return Err(Error::invalid(format!(
                    "sampler {} is for diffusers-layout folders; this set's samplers are auto, ddim and dpm++2m",
                    other.name()
                )))
            }
        };
        let run = ((steps as f32 * strength).ceil() as usize).clamp(1, steps.max(1));
        let times = schedule.timesteps(run, strength)?; // run + 1 times, from `strength` down to 0
        Ok(Box::new(Cosine { schedule, times, stepper }))
    }
}

/// A run on the cosine schedule: the times of its steps and the method that moves between them.
struct Cosine {
    schedule: CosineSchedule,
    times: Vec<f32>,
    stepper: Box<dyn CosineStep>,
}

impl Sampler for Cosine {
    fn steps(&self) -> usize {
        self.times.len() - 1
    }

    fn input(&self, k: usize) -> ModelInput {
        let r = self.schedule.rates(self.times[k]);
        ModelInput { scale: 1.0, level: r.noise * r.noise }
    }

    fn step(&mut self, k: usize, x: &mut [f32], out: &[f32], noise: &mut Noise) -> Result<()> {
        let next = if k + 1 == self.steps() { None } else { Some(self.times[k + 1]) };
        self.stepper.step(x, out, self.times[k], next, noise)
    }

    fn denoised(&self, k: usize, x: &[f32], out: &[f32]) -> Vec<f32> {
        let r = self.schedule.rates(self.times[k]);
        x.iter().zip(out).map(|(&v, &e)| predict_x0(v, e, r.signal, r.noise)).collect()
    }

    fn noised(&self, k: usize, x0: &[f32], eps: &[f32]) -> Vec<f32> {
        if k >= self.steps() {
            return x0.to_vec();
        }
        let r = self.schedule.rates(self.times[k]);
        x0.iter().zip(eps).map(|(&v, &e)| r.signal * v + r.noise * e).collect()
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
        // A generation of `steps` steps started at `start` runs the `start` fraction of them (img2img).
        let mut sampler = kind.build_cosine(schedule, steps, start).unwrap();
        let run = sampler.steps();
        assert_eq!(run, ((steps as f32 * start).ceil() as usize).max(1));
        let times = schedule.timesteps(run, start).unwrap();
        let mut x = sampler.noised(0, &x0, &eps);
        let r = schedule.rates(start);
        assert_eq!(x, x0.iter().zip(&eps).map(|(a, e)| r.signal * a + r.noise * e).collect::<Vec<_>>());
        for (k, &t) in times.iter().take(run).enumerate() {
            // With eta = 0 / deterministic samplers the sample stays on the line x0 + eps: the true noise
            // of the current x is still eps.
            assert_eq!(sampler.input(k).level, schedule.rates(t).noise.powi(2));
            sampler.step(k, &mut x, &eps, &mut n).unwrap();
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
        assert_eq!(SamplerKind::parse("", 0.5).unwrap(), SamplerKind::Auto { eta: 0.5 });
        assert_eq!(SamplerKind::parse("Euler-A", 0.0).unwrap(), SamplerKind::EulerAncestral);
        assert!(SamplerKind::parse("heun", 0.0).is_err());
        assert!(SamplerKind::Euler.build_cosine(CosineSchedule::default(), 10, 1.0).is_err());
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
