//! DPM-Solver++ (2M) (Lu et al. 2022), the multistep second-order solver of the diffusion ODE in its
//! data-prediction form. With lambda = log(signal / noise) and h = lambda' - lambda:
//!   x' = (noise' / noise) x + signal' (1 - e^-h) D,
//! where D is the x_0 estimate, extrapolated from the previous step's estimate when there is one.

use super::{check, predict_x0, CosineStep};
use crate::error::Result;
use crate::rng::Noise;
use crate::schedule::CosineSchedule;

pub struct DpmSolverPp2m {
    schedule: CosineSchedule,
    /// The previous step's x_0 estimate and its step size h (None before the first step).
    previous: Option<(Vec<f32>, f64)>,
}

impl DpmSolverPp2m {
    pub fn new(schedule: CosineSchedule) -> Self {
        DpmSolverPp2m { schedule, previous: None }
    }
}

impl CosineStep for DpmSolverPp2m {
    fn step(&mut self, x: &mut [f32], eps: &[f32], t: f32, t_next: Option<f32>, _noise: &mut Noise) -> Result<()> {
        check(x, eps)?;
        let r = self.schedule.rates(t);
        let x0: Vec<f32> = x.iter().zip(eps).map(|(&xi, &e)| predict_x0(xi, e, r.signal, r.noise)).collect();
        let Some(t_next) = t_next else {
            x.copy_from_slice(&x0);
            self.previous = None;
            return Ok(());
        };
        let rn = self.schedule.rates(t_next);
        let lambda = |s: f32, n: f32| (s as f64 / n as f64).ln();
        let h = lambda(rn.signal, rn.noise) - lambda(r.signal, r.noise);
        let ratio = (rn.noise / r.noise) as f64;
        let coef = -(rn.signal as f64) * ((-h).exp() - 1.0);
        let previous = self.previous.take().filter(|(p, _)| p.len() == x0.len());
        for i in 0..x.len() {
            let d = match &previous {
                Some((p, h_prev)) => {
                    let r2 = h_prev / h;
                    (1.0 + 1.0 / (2.0 * r2)) * x0[i] as f64 - 1.0 / (2.0 * r2) * p[i] as f64
                }
                None => x0[i] as f64,
            };
            x[i] = (ratio * x[i] as f64 + coef * d) as f32;
        }
        self.previous = Some((x0, h));
        Ok(())
    }
}
