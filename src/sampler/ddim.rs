//! DDIM (Song et al. 2020): estimate x_0, then re-noise it to the next time along the predicted noise.
//! eta = 0 follows the deterministic path; eta > 0 replaces part of the predicted noise with fresh noise
//! (eta = 1 matches the variance of DDPM's ancestral sampling).

use super::{check, predict_x0, CosineStep};
use crate::error::Result;
use crate::rng::Noise;
use crate::schedule::CosineSchedule;

pub struct Ddim {
    schedule: CosineSchedule,
    eta: f32,
}

impl Ddim {
    pub fn new(schedule: CosineSchedule, eta: f32) -> Self {
        Ddim { schedule, eta }
    }
}

impl CosineStep for Ddim {
    fn step(&mut self, x: &mut [f32], eps: &[f32], t: f32, t_next: Option<f32>, noise: &mut Noise) -> Result<()> {
        check(x, eps)?;
        let r = self.schedule.rates(t);
        let Some(t_next) = t_next else {
            x.iter_mut().zip(eps).for_each(|(xi, &e)| *xi = predict_x0(*xi, e, r.signal, r.noise));
            return Ok(());
        };
        let rn = self.schedule.rates(t_next);
        // With abar = signal^2: sigma = eta * sqrt((1 - abar') / (1 - abar)) * sqrt(1 - abar / abar').
        let (a, an) = (r.signal * r.signal, rn.signal * rn.signal);
        let sigma = if self.eta > 0.0 {
            self.eta * ((1.0 - an) / (1.0 - a)).sqrt() * (1.0 - a / an).max(0.0).sqrt()
        } else {
            0.0
        };
        let dir = (rn.noise * rn.noise - sigma * sigma).max(0.0).sqrt();
        for (xi, &e) in x.iter_mut().zip(eps) {
            let x0 = predict_x0(*xi, e, r.signal, r.noise);
            let z = if sigma > 0.0 { noise.normal() } else { 0.0 };
            *xi = rn.signal * x0 + dir * e + sigma * z;
        }
        Ok(())
    }
}
