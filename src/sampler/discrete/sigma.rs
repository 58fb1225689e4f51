//! The schedulers that step in sigma = sqrt((1 - alpha_prod) / alpha_prod): Euler, Euler ancestral and
//! DPM-Solver++ (2M). Float32 throughout, in the order of diffusers' torch expressions.

use crate::error::Result;
use crate::rng::Noise;
use crate::sampler::{ModelInput, Sampler};

use super::{check_sizes, Prediction, Sequence};

/// EulerDiscreteScheduler and EulerAncestralDiscreteScheduler: the sample lives in "sigma space" (x0 plus
/// sigma times the noise) and the U-Net sees it divided by sqrt(sigma^2 + 1).
pub(crate) struct Euler {
    /// The full schedule's timesteps (what the U-Net is fed) and sigmas (one more: the final one).
    pub levels: Vec<f32>,
    pub sigmas: Vec<f32>,
    /// Where this run starts in the full schedule (img2img's t_start).
    pub begin: usize,
    pub ancestral: bool,
    pub prediction: Prediction,
    pub init_noise_sigma: f32,
}

impl Euler {
    /// pred_original_sample of one element at sigma `s`.
    fn x0(&self, s: f32, x: f32, out: f32) -> f32 {
        match self.prediction {
            Prediction::Epsilon => x - s * out,
            Prediction::Sample => out,
            Prediction::VPrediction => out * (-s / (s * s + 1.0).sqrt()) + x / (s * s + 1.0),
        }
    }
}

impl Sampler for Euler {
    fn steps(&self) -> usize {
        self.levels.len() - self.begin
    }

    fn input(&self, k: usize) -> ModelInput {
        let s = self.sigmas[self.begin + k];
        ModelInput { scale: 1.0 / (s * s + 1.0).sqrt(), level: self.levels[self.begin + k] }
    }

    fn step(&mut self, k: usize, x: &mut [f32], out: &[f32], noise: &mut Noise) -> Result<()> {
        check_sizes(k, self.steps(), x, out)?;
        let i = self.begin + k;
        let (s, next) = (self.sigmas[i], self.sigmas[i + 1]);
        if self.ancestral {
            let (from2, to2) = (s * s, next * next);
            let up = (to2 * (from2 - to2) / from2).sqrt();
            let dt = (to2 - up * up).sqrt() - s;
            for (v, &o) in x.iter_mut().zip(out) {
                let derivative = (*v - self.x0(s, *v, o)) / s;
                *v += derivative * dt;
            }
            for v in x.iter_mut() {
                *v += noise.normal() * up;
            }
        } else {
            let dt = next - s;
            for (v, &o) in x.iter_mut().zip(out) {
                let derivative = (*v - self.x0(s, *v, o)) / s;
                *v += derivative * dt;
            }
        }
        Ok(())
    }

    fn denoised(&self, k: usize, x: &[f32], out: &[f32]) -> Vec<f32> {
        let s = self.sigmas[self.begin + k];
        x.iter().zip(out).map(|(&v, &o)| self.x0(s, v, o)).collect()
    }

    fn noised(&self, k: usize, x0: &[f32], eps: &[f32]) -> Vec<f32> {
        if k >= self.steps() {
            return x0.to_vec();
        }
        let s = self.sigmas[self.begin + k];
        x0.iter().zip(eps).map(|(&x, &e)| x + e * s).collect()
    }

    fn init_noise_sigma(&self) -> f32 {
        self.init_noise_sigma
    }
}

/// alpha_t and sigma_t of the VP process at sigma: 1 / sqrt(sigma^2 + 1) and sigma * alpha_t.
fn alpha_sigma(sigma: f32) -> (f32, f32) {
    let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
    (alpha, sigma * alpha)
}

/// log(alpha_t) - log(sigma_t): half the log-SNR.
fn lambda(alpha: f32, sigma: f32) -> f32 {
    alpha.ln() - sigma.ln()
}

/// DPMSolverMultistepScheduler with algorithm_type dpmsolver++: multistep, on data predictions, order 1
/// or 2 (midpoint or Heun form of the second-order correction).
pub(crate) struct DpmPp {
    /// The full schedule; this run starts at `begin`.
    pub timesteps: Vec<i64>,
    pub sigmas: Vec<f32>,
    pub begin: usize,
    pub prediction: Prediction,
    pub solver_order: usize,
    pub heun: bool,
    pub lower_order_final: bool,
    pub euler_at_final: bool,
    pub final_zero: bool,
    pub seq: Sequence,
    /// The previous step's data prediction (for the second-order update).
    pub previous: Option<Vec<f32>>,
    /// Steps done at low order so far (diffusers' `lower_order_nums`, capped at the order).
    pub lower_order_nums: usize,
}

impl DpmPp {
    fn x0(&self, i: usize, x: &[f32], out: &[f32]) -> Vec<f32> {
        let (alpha, sigma) = alpha_sigma(self.sigmas[i]);
        x.iter()
            .zip(out)
            .map(|(&v, &o)| match self.prediction {
                Prediction::Epsilon => (v - sigma * o) / alpha,
                Prediction::Sample => o,
                Prediction::VPrediction => alpha * v - sigma * o,
            })
            .collect()
    }
}

impl Sampler for DpmPp {
    fn steps(&self) -> usize {
        self.timesteps.len() - self.begin
    }

    fn input(&self, k: usize) -> ModelInput {
        ModelInput { scale: 1.0, level: self.timesteps[self.begin + k] as f32 }
    }

    fn step(&mut self, k: usize, x: &mut [f32], out: &[f32], _noise: &mut Noise) -> Result<()> {
        check_sizes(k, self.steps(), x, out)?;
        if self.seq.begin(k)? {
            self.previous = None;
            self.lower_order_nums = 0;
        }
        let i = self.begin + k;
        let len = self.timesteps.len();
        let lower_final =
            i == len - 1 && (self.euler_at_final || (self.lower_order_final && len < 15) || self.final_zero);
        let m0 = self.x0(i, x, out);
        let (alpha_t, sigma_t) = alpha_sigma(self.sigmas[i + 1]);
        let (alpha_s0, sigma_s0) = alpha_sigma(self.sigmas[i]);
        let h = lambda(alpha_t, sigma_t) - lambda(alpha_s0, sigma_s0);
        let keep = sigma_t / sigma_s0;
        let coeff = alpha_t * ((-h).exp() - 1.0);
        match self.previous.as_ref() {
            Some(m1) if self.solver_order == 2 && self.lower_order_nums >= 1 && !lower_final => {
                let (alpha_s1, sigma_s1) = alpha_sigma(self.sigmas[i - 1]);
                let h0 = lambda(alpha_s0, sigma_s0) - lambda(alpha_s1, sigma_s1);
                let inv_r0 = 1.0 / (h0 / h);
                let c1 = if self.heun { alpha_t * (((-h).exp() - 1.0) / h + 1.0) } else { 0.5 * coeff };
                for ((v, &d0), &p) in x.iter_mut().zip(&m0).zip(m1) {
                    let d1 = inv_r0 * (d0 - p);
                    *v = if self.heun { keep * *v - coeff * d0 + c1 * d1 } else { keep * *v - coeff * d0 - c1 * d1 };
                }
            }
            _ => {
                for (v, &d0) in x.iter_mut().zip(&m0) {
                    *v = keep * *v - coeff * d0;
                }
            }
        }
        self.previous = (self.solver_order == 2).then_some(m0);
        self.lower_order_nums = (self.lower_order_nums + 1).min(self.solver_order);
        self.seq.done(k);
        Ok(())
    }

    fn denoised(&self, k: usize, x: &[f32], out: &[f32]) -> Vec<f32> {
        self.x0(self.begin + k, x, out)
    }

    fn noised(&self, k: usize, x0: &[f32], eps: &[f32]) -> Vec<f32> {
        if k >= self.steps() {
            return x0.to_vec();
        }
        let (alpha, sigma) = alpha_sigma(self.sigmas[self.begin + k]);
        x0.iter().zip(eps).map(|(&x, &e)| alpha * x + sigma * e).collect()
    }
}
