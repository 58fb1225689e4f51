//! diffusers' discrete-timestep schedulers behind [`Sampler`]: DDIM, PNDM (PLMS), Euler, Euler ancestral,
//! DPM-Solver++ (2M, optionally on Karras sigmas) and LCM, with diffusers 0.42's semantics.
//!
//! A diffusers folder names its scheduler in `scheduler/scheduler_config.json`; [`SchedulerConfig`] reads
//! it and [`build`] makes a run of any of these schedulers from it, the way diffusers users switch
//! schedulers (`Class.from_config(pipe.scheduler.config)`): the chosen class takes the keys written in the
//! file and its own defaults for the others (diffusers drops the folder class's defaults on the switch).
//! Img2img (strength < 1) starts the schedule where `StableDiffusionImg2ImgPipeline.get_timesteps` does.
//!
//! Numbers are computed as diffusers computes them (float32 torch arithmetic, float64 numpy where diffusers
//! uses numpy, torch's float64 accumulation in cumprod), so that runs agree with diffusers to float32
//! rounding; the tests check that against values recorded from diffusers itself.

mod config;
mod ddpm;
mod sigma;
mod tables;
#[cfg(test)]
mod tests;

use crate::error::{Error, Result};
use crate::sampler::{Sampler, SamplerKind};

use config::{Class, Raw, Settings, Spacing, SUPPORTED_CLASSES};

/// What the U-Net predicts (`prediction_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prediction {
    /// The noise (`epsilon`).
    Epsilon,
    /// v = alpha_t * eps - sigma_t * x0 (`v_prediction`).
    VPrediction,
    /// The clean sample itself (`sample`).
    Sample,
}

/// `scheduler/scheduler_config.json` of a diffusers folder. Unknown keys are ignored (diffusers writes
/// many); a known key with a value that cannot be honoured is an error naming it.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    raw: Raw,
}

impl SchedulerConfig {
    /// Parses and checks the file. Errors: not JSON, no `_class_name` or one that is not a diffusers
    /// discrete-timestep scheduler, a known key with a wrong type or out-of-range value (the message names
    /// the key). Python's bare `NaN` / `Infinity` / `-Infinity` (as diffusers writes them) are accepted.
    pub fn parse(json: &str) -> Result<SchedulerConfig> {
        Ok(SchedulerConfig { raw: Raw::parse(json)? })
    }

    /// The file's `_class_name`.
    pub fn class_name(&self) -> &str {
        &self.raw.class_name
    }

    /// The sampler the folder names (its own scheduler); other classes are refused naming the supported ones.
    pub fn default_kind(&self) -> Result<SamplerKind> {
        Ok(match Class::from_name(&self.raw.class_name) {
            Some(Class::Pndm) => SamplerKind::Pndm,
            Some(Class::Ddim) => SamplerKind::Ddim { eta: 0.0 },
            Some(Class::Euler) => SamplerKind::Euler,
            Some(Class::EulerAncestral) => SamplerKind::EulerAncestral,
            Some(Class::DpmMultistep) if self.raw.bool("use_karras_sigmas", false) => SamplerKind::DpmSolverPp2mKarras,
            Some(Class::DpmMultistep) => SamplerKind::DpmSolverPp2m,
            Some(Class::Lcm) => SamplerKind::Lcm,
            None => {
                return Err(Error::model(format!(
                    "scheduler {} is not supported; mirage runs {SUPPORTED_CLASSES} (or choose a sampler: \
                     ddim, pndm, euler, euler-a, dpm++2m, dpm++2m-karras, lcm)",
                    crate::limits::quote(&self.raw.class_name)
                )))
            }
        })
    }

    /// What the U-Net predicts, as the config says (epsilon when it does not say).
    pub fn prediction_type(&self) -> Prediction {
        match self.raw.str("prediction_type", "epsilon") {
            "v_prediction" => Prediction::VPrediction,
            "sample" => Prediction::Sample,
            _ => Prediction::Epsilon,
        }
    }
}

/// Most steps a run may have (and at most num_train_timesteps).
const MAX_STEPS: usize = 1000;

/// A run of `kind` (`Auto` = the folder's own scheduler as its file configures it, with its eta for DDIM)
/// made from `config` as diffusers users switch schedulers (dpm++2m / dpm++2m-karras by name set
/// algorithm_type dpmsolver++, solver_order 2 and use_karras_sigmas, as diffusers users do). `steps` is num_inference_steps of a full generation; `strength` in
/// (0, 1] starts img2img where `StableDiffusionImg2ImgPipeline.get_timesteps` does:
/// init_timestep = min(int(steps * strength), steps), t_start = steps - init_timestep, the run being
/// timesteps[t_start..] (refused when init_timestep is 0). `strength` is read as the decimal it prints as
/// (0.7f32 is Python's 0.7), so that int(steps * strength) agrees with Python's.
pub fn build(config: &SchedulerConfig, kind: SamplerKind, steps: usize, strength: f32) -> Result<Box<dyn Sampler>> {
    if !(1..=MAX_STEPS).contains(&steps) {
        return Err(Error::invalid(format!("steps is {steps}, must be in 1..={MAX_STEPS}")));
    }
    if !(strength.is_finite() && strength > 0.0 && strength <= 1.0) {
        return Err(Error::invalid(format!("strength is {strength}, must be in (0, 1]")));
    }
    let auto = matches!(kind, SamplerKind::Auto { .. });
    let kind = match kind {
        SamplerKind::Auto { eta } => match config.default_kind()? {
            SamplerKind::Ddim { .. } => SamplerKind::Ddim { eta },
            own => own,
        },
        other => other,
    };
    let (class, karras, eta) = match kind {
        SamplerKind::Ddim { eta } => {
            SamplerKind::check_eta(eta)?;
            (Class::Ddim, None, eta)
        }
        SamplerKind::Pndm => (Class::Pndm, None, 0.0),
        SamplerKind::Euler => (Class::Euler, None, 0.0),
        SamplerKind::EulerAncestral => (Class::EulerAncestral, None, 0.0),
        SamplerKind::DpmSolverPp2m => (Class::DpmMultistep, Some(false), 0.0),
        SamplerKind::DpmSolverPp2mKarras => (Class::DpmMultistep, Some(true), 0.0),
        SamplerKind::Lcm => (Class::Lcm, None, 0.0),
        SamplerKind::Auto { .. } => unreachable!("resolved above"),
    };
    // The folder's own DPM-Solver runs as its file says; dpm++2m by name is DPM-Solver++ 2M.
    let karras = if auto { None } else { karras };
    let s = Settings::resolve(&config.raw, class, karras)?;
    let train = s.num_train_timesteps;
    if steps > train {
        return Err(Error::invalid(format!(
            "steps is {steps}, more than the scheduler's num_train_timesteps ({train})"
        )));
    }
    // Python: int(num_inference_steps * strength), strength being the decimal the caller typed.
    let strength64: f64 = strength.to_string().parse().unwrap_or(strength as f64);
    let init = ((steps as f64 * strength64) as usize).min(steps);
    if init == 0 {
        return Err(Error::invalid(format!(
            "strength {strength} of {steps} steps leaves no step to run (int(steps * strength) is 0)"
        )));
    }
    let t_start = steps - init;
    let whole = t_start == 0;
    let alphas_cumprod = alphas_cumprod(&s)?;
    let run: Box<dyn Sampler> = match class {
        Class::Ddim | Class::Pndm => {
            let spaced = tables::spaced_timesteps(s.spacing, train, steps, s.steps_offset);
            check_in_table(&spaced, train, &s)?;
            let alphas = ddpm_alphas(alphas_cumprod, &s);
            let stride = (train / steps) as i64;
            if class == Class::Ddim {
                let timesteps = spaced[t_start..].to_vec();
                Box::new(ddpm::Ddim { alphas, timesteps, stride, eta, prediction: s.prediction, clip: s.clip_sample })
            } else {
                // PLMS: the second timestep is repeated (a Heun-like restart of the first step).
                let mut plms = spaced.clone();
                if steps > 1 {
                    plms.insert(1, spaced[1]);
                }
                Box::new(ddpm::Pndm {
                    alphas,
                    timesteps: plms[t_start..].to_vec(),
                    stride,
                    prediction: s.prediction,
                    seq: Sequence::default(),
                    ets: Vec::new(),
                    first_sample: Vec::new(),
                })
            }
        }
        Class::Lcm => {
            let all = lcm_timesteps(&s, steps)?;
            let alphas = ddpm_alphas(alphas_cumprod, &s);
            if whole {
                first_unique(&all.iter().map(|&t| t as f32).collect::<Vec<_>>())?;
            }
            Box::new(ddpm::Lcm {
                alphas,
                all,
                begin: t_start,
                prediction: s.prediction,
                clip: s.clip_sample,
                timestep_scaling: s.timestep_scaling as f32,
            })
        }
        Class::Euler | Class::EulerAncestral => {
            let (levels, sigmas) = euler_schedule(&s, &alphas_cumprod, steps)?;
            if whole {
                first_unique(&levels)?;
            }
            let max = sigmas.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            // diffusers: sigma_max for linspace / trailing spacing, sqrt(sigma_max^2 + 1) for leading.
            let init_noise_sigma = if s.spacing == Spacing::Leading { (max * max + 1.0).sqrt() } else { max };
            Box::new(sigma::Euler {
                levels,
                sigmas,
                begin: t_start,
                ancestral: class == Class::EulerAncestral,
                prediction: s.prediction,
                init_noise_sigma,
            })
        }
        Class::DpmMultistep => {
            let (timesteps, sigmas) = dpm_schedule(&s, &alphas_cumprod, steps)?;
            if t_start >= timesteps.len() {
                return Err(Error::invalid(format!(
                    "strength {strength} of {steps} steps leaves no step of the {} the schedule has",
                    timesteps.len()
                )));
            }
            if whole {
                first_unique(&timesteps.iter().map(|&t| t as f32).collect::<Vec<_>>())?;
            }
            Box::new(sigma::DpmPp {
                timesteps,
                sigmas,
                begin: t_start,
                prediction: s.prediction,
                solver_order: s.solver_order,
                heun: s.heun,
                lower_order_final: s.lower_order_final,
                euler_at_final: s.euler_at_final,
                final_zero: !s.final_sigma_min,
                seq: Sequence::default(),
                previous: None,
                lower_order_nums: 0,
            })
        }
    };
    Ok(run)
}

/// alphas_cumprod of the class's betas (zero-SNR rescaled if asked), checked to stay positive.
fn alphas_cumprod(s: &Settings) -> Result<Vec<f32>> {
    let mut betas = tables::betas(&s.betas, s.num_train_timesteps);
    if s.rescale_zero_snr {
        betas = tables::rescale_zero_terminal_snr(&betas);
    }
    let mut ac = tables::alphas_cumprod(&betas);
    let last = ac.len() - 1;
    if s.rescale_zero_snr && matches!(s.class, Class::Euler | Class::EulerAncestral | Class::DpmMultistep) {
        // diffusers: close to 0 without being 0, so that the first sigma is finite.
        ac[last] = 2f32.powi(-24);
    }
    let checked = if s.rescale_zero_snr { &ac[..last] } else { &ac[..] };
    if let Some(t) = checked.iter().position(|&a| !(a > 0.0 && a.is_finite())) {
        return Err(Error::model(format!(
            "scheduler config: the betas (beta_start, beta_end, beta_schedule, trained_betas) drive \
             alphas_cumprod to {} at timestep {t}",
            ac[t]
        )));
    }
    Ok(ac)
}

fn ddpm_alphas(cumprod: Vec<f32>, s: &Settings) -> ddpm::Alphas {
    let final_cumprod = if s.set_alpha_to_one { 1.0 } else { cumprod[0] };
    ddpm::Alphas { cumprod, final_cumprod }
}

/// Refuses timesteps past the table (a steps_offset too large for leading spacing).
fn check_in_table(timesteps: &[i64], train: usize, s: &Settings) -> Result<()> {
    match timesteps.iter().find(|&&t| t < 0 || t >= train as i64) {
        Some(t) => Err(Error::model(format!(
            "scheduler config: steps_offset {} puts timestep {t} past num_train_timesteps {train}",
            s.steps_offset
        ))),
        None => Ok(()),
    }
}

/// A whole run starts where diffusers' index_for_timestep finds the first timestep: the second match when
/// it occurs twice, which makes diffusers run off the end of its sigmas. Refused instead.
fn first_unique(levels: &[f32]) -> Result<()> {
    if levels.iter().filter(|&&l| l == levels[0]).count() > 1 {
        return Err(Error::model(format!(
            "scheduler config: the schedule repeats its first timestep {} (sigma_min / sigma_max or \
             timestep_spacing with this many steps); diffusers cannot run it either",
            levels[0]
        )));
    }
    Ok(())
}

/// LCM's timesteps: `steps` evenly chosen (floor of an endpoint-free linspace) from the distillation
/// schedule of original_inference_steps timesteps k - 1, 2k - 1, ..., reversed.
fn lcm_timesteps(s: &Settings, steps: usize) -> Result<Vec<i64>> {
    let (train, original) = (s.num_train_timesteps, s.original_inference_steps);
    if original > train {
        return Err(Error::model(format!(
            "scheduler config: original_inference_steps {original} is more than num_train_timesteps {train}"
        )));
    }
    if steps > original {
        return Err(Error::invalid(format!(
            "steps is {steps}, more than the LCM schedule's original_inference_steps ({original})"
        )));
    }
    let k = (train / original) as i64;
    let origin: Vec<i64> = (1..=original as i64).rev().map(|i| i * k - 1).collect();
    Ok(tables::np_linspace(0.0, original as f64, steps, false)
        .into_iter()
        .map(|i| origin[i.floor() as usize])
        .collect())
}

/// Euler's timesteps (fractional where diffusers' are) and sigmas (one more: the final 0 or sigma_min).
fn euler_schedule(s: &Settings, ac: &[f32], steps: usize) -> Result<(Vec<f32>, Vec<f32>)> {
    let train = s.num_train_timesteps;
    let mut timesteps = tables::euler_timesteps(s.spacing, train, steps, s.steps_offset);
    if let Some(t) = timesteps.iter().find(|&&t| t >= train as f32) {
        return Err(Error::model(format!(
            "scheduler config: steps_offset {} puts timestep {t} past num_train_timesteps {train}",
            s.steps_offset
        )));
    }
    let table = tables::sigmas_of(ac);
    let mut sigmas: Vec<f64> = timesteps.iter().map(|&t| tables::np_interp(t as f64, &table)).collect();
    if s.karras && s.class == Class::Euler {
        let min = s.sigma_min.unwrap_or(sigmas[sigmas.len() - 1]);
        let max = s.sigma_max.unwrap_or(sigmas[0]);
        sigmas = tables::karras(min, max, steps);
        let logs: Vec<f32> = table.iter().map(|s| s.ln()).collect();
        timesteps = sigmas.iter().map(|&sg| tables::sigma_to_t(sg, &logs) as f32).collect();
    }
    let last = if s.final_sigma_min { ((1.0 - ac[0]) / ac[0]).sqrt() } else { 0.0 };
    let sigmas: Vec<f32> = sigmas.into_iter().map(|v| v as f32).chain([last]).collect();
    if s.continuous_timesteps {
        timesteps = sigmas[..steps].iter().map(|sg| 0.25 * sg.ln()).collect();
    }
    Ok((timesteps, sigmas))
}

/// DPM-Solver++'s integer timesteps and its sigmas (one more: the final 0 or sigma_min).
fn dpm_schedule(s: &Settings, ac: &[f32], steps: usize) -> Result<(Vec<i64>, Vec<f32>)> {
    let train = s.num_train_timesteps;
    // Timesteps whose lambda is below lambda_min_clipped are not used (torch.searchsorted on the
    // flipped, increasing lambdas).
    let clipped =
        ac.iter().filter(|&&a| ((a.sqrt().ln() - (1.0 - a).sqrt().ln()) as f64) < s.lambda_min_clipped).count();
    let last = train - clipped;
    if last == 0 {
        return Err(Error::model(format!(
            "scheduler config: lambda_min_clipped {} clips every timestep",
            s.lambda_min_clipped
        )));
    }
    let mut timesteps = tables::dpm_timesteps(s.spacing, train, last, steps, s.steps_offset);
    check_in_table(&timesteps, train, s)?;
    let table = tables::sigmas_of(ac);
    let sigmas: Vec<f64> = if s.karras {
        let min = s.sigma_min.unwrap_or(table[0] as f64);
        let max = s.sigma_max.unwrap_or(table[train - 1] as f64);
        let sigmas = tables::karras(min, max, steps);
        let logs: Vec<f32> = table.iter().map(|s| s.ln()).collect();
        timesteps = sigmas
            .iter()
            .map(|&sg| {
                let t = tables::sigma_to_t(sg, &logs);
                if s.squared_cos {
                    t as i64
                } else {
                    tables::np_round(t)
                }
            })
            .collect();
        sigmas
    } else {
        timesteps.iter().map(|&t| tables::np_interp(t as f64, &table)).collect()
    };
    let last = if s.final_sigma_min { ((1.0 - ac[0]) / ac[0]).sqrt() } else { 0.0 };
    let sigmas: Vec<f32> = sigmas.into_iter().map(|v| v as f32).chain([last]).collect();
    // Equal neighbouring sigmas make the solver divide 0 by 0 (too many steps for leading spacing).
    if sigmas[..timesteps.len()].windows(2).any(|w| w[0] == w[1]) {
        return Err(Error::invalid(format!(
            "steps is {steps}: too many for this schedule (timestep_spacing with num_train_timesteps {train} \
             repeats noise levels)"
        )));
    }
    Ok((timesteps, sigmas))
}

/// The order of steps of a run with state between steps: step 0 (re)starts it, any other step must follow
/// the one before.
#[derive(Debug, Default)]
pub(crate) struct Sequence {
    next: usize,
}

impl Sequence {
    /// Checks that step `k` may run now; true when it starts the run afresh.
    fn begin(&mut self, k: usize) -> Result<bool> {
        if k == 0 {
            self.next = 0;
            return Ok(true);
        }
        if k != self.next {
            return Err(Error::invalid(format!(
                "sampler: step {k} out of order (this multistep scheduler's next step is {})",
                self.next
            )));
        }
        Ok(false)
    }

    fn done(&mut self, k: usize) {
        self.next = k + 1;
    }
}

/// Refuses a step past the run or buffers of different sizes.
fn check_sizes(k: usize, steps: usize, x: &[f32], out: &[f32]) -> Result<()> {
    if k >= steps {
        return Err(Error::invalid(format!("sampler: step {k} of a run of {steps} steps")));
    }
    if x.len() != out.len() {
        return Err(Error::invalid(format!("sampler: {} latent values but {} model outputs", x.len(), out.len())));
    }
    Ok(())
}
