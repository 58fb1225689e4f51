//! The schedulers that work on alphas_cumprod at integer timesteps: DDIM, PNDM (PLMS form) and LCM.
//! Every formula is evaluated in float32 in the order diffusers' torch expressions evaluate it.

use crate::error::Result;
use crate::rng::Noise;
use crate::sampler::{ModelInput, Sampler};

use super::{check_sizes, Prediction, Sequence};

/// alphas_cumprod and the value "before" timestep 0.
pub(crate) struct Alphas {
    pub cumprod: Vec<f32>,
    /// 1 with set_alpha_to_one, else alphas_cumprod[0].
    pub final_cumprod: f32,
}

impl Alphas {
    /// alpha_prod at `t`, the final one for t < 0.
    fn at(&self, t: i64) -> f32 {
        if t >= 0 {
            self.cumprod[t as usize]
        } else {
            self.final_cumprod
        }
    }

    /// `add_noise`: sqrt(alpha_prod) * x0 + sqrt(1 - alpha_prod) * eps.
    fn add_noise(&self, t: i64, x0: &[f32], eps: &[f32]) -> Vec<f32> {
        let a = self.at(t);
        let (sa, so) = (a.sqrt(), (1.0 - a).sqrt());
        x0.iter().zip(eps).map(|(&x, &e)| sa * x + so * e).collect()
    }

    /// The predicted x0 and eps of one element at alpha_prod `a` (DDIM's and LCM's conversions).
    fn x0_eps(a: f32, prediction: Prediction, x: f32, out: f32) -> (f32, f32) {
        let b = 1.0 - a;
        match prediction {
            Prediction::Epsilon => ((x - b.sqrt() * out) / a.sqrt(), out),
            Prediction::Sample => (out, (x - a.sqrt() * out) / b.sqrt()),
            Prediction::VPrediction => (a.sqrt() * x - b.sqrt() * out, a.sqrt() * out + b.sqrt() * x),
        }
    }
}

fn level(t: i64) -> ModelInput {
    ModelInput { scale: 1.0, level: t as f32 }
}

/// DDIMScheduler: `timesteps` of this run, the previous timestep being t - train / n (diffusers' rule,
/// whatever the spacing).
pub(crate) struct Ddim {
    pub alphas: Alphas,
    pub timesteps: Vec<i64>,
    pub stride: i64,
    pub eta: f32,
    pub prediction: Prediction,
    pub clip: Option<f32>,
}

impl Ddim {
    fn x0(&self, a: f32, x: f32, out: f32) -> (f32, f32) {
        let (x0, eps) = Alphas::x0_eps(a, self.prediction, x, out);
        (self.clip.map_or(x0, |r| x0.clamp(-r, r)), eps)
    }
}

impl Sampler for Ddim {
    fn steps(&self) -> usize {
        self.timesteps.len()
    }

    fn input(&self, k: usize) -> ModelInput {
        level(self.timesteps[k])
    }

    fn step(&mut self, k: usize, x: &mut [f32], out: &[f32], noise: &mut Noise) -> Result<()> {
        check_sizes(k, self.steps(), x, out)?;
        let t = self.timesteps[k];
        let prev = t - self.stride;
        let (a, a_prev) = (self.alphas.at(t), self.alphas.at(prev));
        let (b, b_prev) = (1.0 - a, 1.0 - a_prev);
        let variance = (b_prev / b) * (1.0 - a / a_prev);
        let std = self.eta * variance.sqrt();
        let direction = (1.0 - a_prev - std * std).sqrt();
        let sa_prev = a_prev.sqrt();
        for (v, &o) in x.iter_mut().zip(out) {
            let (x0, eps) = self.x0(a, *v, o);
            *v = sa_prev * x0 + direction * eps;
        }
        if self.eta > 0.0 {
            for v in x.iter_mut() {
                *v += std * noise.normal();
            }
        }
        Ok(())
    }

    fn denoised(&self, k: usize, x: &[f32], out: &[f32]) -> Vec<f32> {
        let a = self.alphas.at(self.timesteps[k]);
        x.iter().zip(out).map(|(&v, &o)| self.x0(a, v, o).0).collect()
    }

    fn noised(&self, k: usize, x0: &[f32], eps: &[f32]) -> Vec<f32> {
        match self.timesteps.get(k) {
            Some(&t) => self.alphas.add_noise(t, x0, eps),
            None => x0.to_vec(),
        }
    }
}

/// PNDMScheduler with skip_prk_steps: pseudo linear multistep (PLMS). Its timesteps repeat the second one:
/// the second call re-runs the first step from the same sample with the mean of both predictions (a Heun
/// step), then Adams-Bashforth steps of order 2, 3 and 4 follow on the remembered predictions.
pub(crate) struct Pndm {
    pub alphas: Alphas,
    pub timesteps: Vec<i64>,
    pub stride: i64,
    pub prediction: Prediction,
    /// Steps done (diffusers' `counter`).
    pub seq: Sequence,
    /// Remembered model outputs, at most 4 (diffusers' `ets`).
    pub ets: Vec<Vec<f32>>,
    /// The sample the first step started from.
    pub first_sample: Vec<f32>,
}

impl Pndm {
    /// `_get_prev_sample`: moves `x` from timestep `t` to `prev` (formula (9) of the PNDM paper).
    fn prev_sample(&self, x: &mut [f32], t: i64, prev: i64, out: &[f32]) {
        let (a, a_prev) = (self.alphas.at(t), self.alphas.at(prev));
        let (b, b_prev) = (1.0 - a, 1.0 - a_prev);
        let sample_coeff = (a_prev / a).sqrt();
        let denom = a * b_prev.sqrt() + (a * b * a_prev).sqrt();
        let diff = a_prev - a;
        let v_pred = self.prediction == Prediction::VPrediction;
        let (sa, sb) = (a.sqrt(), b.sqrt());
        for (v, &o) in x.iter_mut().zip(out) {
            let eps = if v_pred { sa * o + sb * *v } else { o };
            *v = sample_coeff * *v - diff * eps / denom;
        }
    }
}

impl Sampler for Pndm {
    fn steps(&self) -> usize {
        self.timesteps.len()
    }

    fn input(&self, k: usize) -> ModelInput {
        level(self.timesteps[k])
    }

    fn step(&mut self, k: usize, x: &mut [f32], out: &[f32], _noise: &mut Noise) -> Result<()> {
        check_sizes(k, self.steps(), x, out)?;
        if self.seq.begin(k)? {
            self.ets.clear();
            self.first_sample.clear();
        }
        let t = self.timesteps[k];
        let combined: Vec<f32>;
        let (from, to, eps) = if k == 1 {
            // The repeated timestep: redo step 0 from its sample with the mean of both predictions.
            combined = out.iter().zip(&self.ets[0]).map(|(&o, &e)| (o + e) / 2.0).collect();
            x.copy_from_slice(&self.first_sample);
            (t + self.stride, t, &combined[..])
        } else {
            if self.ets.len() == 4 {
                self.ets.remove(0);
            }
            self.ets.push(out.to_vec());
            let e = &self.ets;
            let n = e.len();
            combined = match n {
                1 => out.to_vec(),
                2 => e[1].iter().zip(&e[0]).map(|(&a, &b)| (3.0 * a - b) / 2.0).collect(),
                3 => (0..out.len()).map(|i| (23.0 * e[2][i] - 16.0 * e[1][i] + 5.0 * e[0][i]) / 12.0).collect(),
                _ => {
                    let c = (1.0f64 / 24.0) as f32;
                    (0..out.len())
                        .map(|i| c * (55.0 * e[3][i] - 59.0 * e[2][i] + 37.0 * e[1][i] - 9.0 * e[0][i]))
                        .collect()
                }
            };
            if k == 0 {
                self.first_sample = x.to_vec();
            }
            (t, t - self.stride, &combined[..])
        };
        self.prev_sample(x, from, to, eps);
        self.seq.done(k);
        Ok(())
    }

    fn denoised(&self, k: usize, x: &[f32], out: &[f32]) -> Vec<f32> {
        let a = self.alphas.at(self.timesteps[k]);
        x.iter().zip(out).map(|(&v, &o)| Alphas::x0_eps(a, self.prediction, v, o).0).collect()
    }

    fn noised(&self, k: usize, x0: &[f32], eps: &[f32]) -> Vec<f32> {
        match self.timesteps.get(k) {
            Some(&t) => self.alphas.add_noise(t, x0, eps),
            None => x0.to_vec(),
        }
    }
}

/// LCMScheduler: each step predicts the clean sample through the consistency boundary condition and
/// (but for the last step of the full schedule) noises it again to the next timestep.
pub(crate) struct Lcm {
    pub alphas: Alphas,
    /// The full schedule; this run starts at `begin`.
    pub all: Vec<i64>,
    pub begin: usize,
    pub prediction: Prediction,
    pub clip: Option<f32>,
    pub timestep_scaling: f32,
}

impl Lcm {
    /// c_skip and c_out of the boundary condition at timestep `t` (sigma_data 0.5).
    fn scalings(&self, t: i64) -> (f32, f32) {
        let s = t as f32 * self.timestep_scaling;
        let d = s * s + 0.25;
        (0.25 * (1.0 / d), s / d.sqrt())
    }

    fn denoise(&self, t: i64, x: &[f32], out: &[f32]) -> Vec<f32> {
        let a = self.alphas.at(t);
        let (c_skip, c_out) = self.scalings(t);
        x.iter()
            .zip(out)
            .map(|(&v, &o)| {
                let x0 = Alphas::x0_eps(a, self.prediction, v, o).0;
                let x0 = self.clip.map_or(x0, |r| x0.clamp(-r, r));
                c_out * x0 + c_skip * v
            })
            .collect()
    }
}

impl Sampler for Lcm {
    fn steps(&self) -> usize {
        self.all.len() - self.begin
    }

    fn input(&self, k: usize) -> ModelInput {
        level(self.all[self.begin + k])
    }

    fn step(&mut self, k: usize, x: &mut [f32], out: &[f32], noise: &mut Noise) -> Result<()> {
        check_sizes(k, self.steps(), x, out)?;
        let i = self.begin + k;
        let t = self.all[i];
        let denoised = self.denoise(t, x, out);
        if i + 1 == self.all.len() {
            x.copy_from_slice(&denoised);
        } else {
            let a_prev = self.alphas.at(self.all[i + 1]);
            let (sa, sb) = (a_prev.sqrt(), (1.0 - a_prev).sqrt());
            for (v, d) in x.iter_mut().zip(denoised) {
                *v = sa * d + sb * noise.normal();
            }
        }
        Ok(())
    }

    fn denoised(&self, k: usize, x: &[f32], out: &[f32]) -> Vec<f32> {
        self.denoise(self.all[self.begin + k], x, out)
    }

    fn noised(&self, k: usize, x0: &[f32], eps: &[f32]) -> Vec<f32> {
        match self.all.get(self.begin + k) {
            Some(&t) if k < self.steps() => self.alphas.add_noise(t, x0, eps),
            _ => x0.to_vec(),
        }
    }
}
