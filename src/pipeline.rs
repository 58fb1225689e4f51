//! Reverse diffusion, from noise (or from a partly noised image) to pixels: one readable loop.
//!
//! Follow one generation:
//! 1. the starting sample: seeded pure noise (generate), or the image's latent noised to the level that
//!    `strength` picks (img2img, denoise, inpaint);
//! 2. for each step of the sampler: the U-Net predicts the noise at the current level; the sampler moves the
//!    sample to the next, lower level; inpainting re-imposes the known region at that level; the host's
//!    progress callback may cancel, its preview callback sees the current estimate of the clean image;
//! 3. the sample is un-normalised and decoded by the VAE (or is already pixels, for a pixel-space set).
//!
//! Everything runs in the U-Net's normalised space: x = (z - data_mean) / data_std per channel, where z is
//! a VAE latent (or a model-space image), so that the data has unit variance as the cosine schedule assumes.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, Result};
use crate::manifest::{DiffusionSpace, UNetSpec};
use crate::rng::Noise;
use crate::sampler::SamplerKind;
use crate::vae::ModelSet;

/// More steps than this are refused: 1000 is the number of levels DDPM trains with; beyond it a sampler
/// only repeats itself while the host waits.
pub const MAX_STEPS: usize = 1000;

/// What to run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DiffusionParams {
    /// Sampler steps for a full generation (img2img runs the `strength` fraction of them, at least one).
    pub steps: usize,
    pub sampler: SamplerKind,
    /// Seed of the initial noise (and of stochastic samplers).
    pub seed: u64,
    /// Images generated together, in one U-Net batch.
    pub count: usize,
    /// img2img / denoise / inpaint: how far into the noise the input is pushed, in (0, 1]. 1 = generate anew.
    pub strength: f32,
}

impl Default for DiffusionParams {
    fn default() -> Self {
        // 50 DDIM steps: the lecture's and most tools' default trade-off between time and quality.
        DiffusionParams { steps: 50, sampler: SamplerKind::Ddim { eta: 0.0 }, seed: 0, count: 1, strength: 1.0 }
    }
}

impl DiffusionParams {
    pub fn validate(&self) -> Result<()> {
        if self.steps == 0 || self.steps > MAX_STEPS {
            return Err(Error::invalid(format!("steps must be 1..={MAX_STEPS}, got {}", self.steps)));
        }
        if self.count == 0 || self.count > crate::vae::MAX_BATCH {
            return Err(Error::invalid(format!("count must be 1..={}, got {}", crate::vae::MAX_BATCH, self.count)));
        }
        if !(self.strength.is_finite() && self.strength > 0.0 && self.strength <= 1.0) {
            return Err(Error::invalid(format!("strength must be in (0, 1], got {}", self.strength)));
        }
        if let SamplerKind::Ddim { eta } = self.sampler {
            SamplerKind::parse("ddim", eta)?;
        }
        Ok(())
    }
}

/// Progress hook: (steps done, steps in all) -> continue?
pub type ProgressFn<'a> = &'a mut dyn FnMut(usize, usize) -> bool;
/// Preview hook: (steps done, model-space images) -> continue?
pub type PreviewFn<'a> = &'a mut dyn FnMut(usize, &[f32]) -> bool;

/// The host's view into a running generation. Every hook is called on the thread that runs the generation.
#[derive(Default)]
pub struct Hooks<'a> {
    /// Called after every step with (steps done, steps in all); return false to cancel.
    pub progress: Option<ProgressFn<'a>>,
    /// Called after every step with (steps done, the current clean-image estimate as model-space images,
    /// `count` of them). Costs one VAE decode per step; return false to cancel.
    pub preview: Option<PreviewFn<'a>>,
    /// Set from any thread to cancel at the next step boundary.
    pub cancel: Option<&'a AtomicBool>,
}

/// The known part of an inpainting job, in diffusion space.
struct Known {
    /// Normalised clean sample x_0 of the input.
    x0: Vec<f32>,
    /// 1 where the model must invent (the mask), 0 where the input is kept; per diffusion-space value.
    invent: Vec<f32>,
    /// The fixed noise used to bring x0 to each level (one draw, so the known region moves smoothly).
    eps: Vec<f32>,
}

/// Generates `params.count` images from pure noise. Returns model-space images (NCHW, about [-1, 1]).
pub fn generate(set: &ModelSet, params: &DiffusionParams, hooks: &mut Hooks) -> Result<Vec<f32>> {
    let p = DiffusionParams { strength: 1.0, ..*params };
    p.validate()?;
    let per = shape_len(set.diffusion_shape()?);
    let x = Noise::new(p.seed).normals(p.count * per);
    run(set, &p, x, None, hooks)
}

/// Re-imagines `n` model-space images: pushes them `strength` of the way into noise, then denoises.
/// Small strengths stay close to the input (that is "denoise"); 1 ignores it. One output per input.
pub fn img2img(
    set: &ModelSet,
    images: &[f32],
    n: usize,
    params: &DiffusionParams,
    hooks: &mut Hooks,
) -> Result<Vec<f32>> {
    let p = DiffusionParams { count: n, ..*params };
    p.validate()?;
    let x0 = to_diffusion(set, images, n)?;
    let mut noise = Noise::new(p.seed);
    let r = schedule(set)?.rates(p.strength);
    let x = x0.iter().map(|&v| r.signal * v + r.noise * noise.normal()).collect();
    run(set, &p, x, None, hooks)
}

/// Removes noise from `n` model-space images: their (normalised) latents are taken to be a diffusion sample
/// at level `strength` as they are — scaled by that level's signal rate, with no noise added — and the
/// remaining steps remove what the U-Net sees as noise. Unlike img2img nothing random is added, so the result
/// stays close to the input; pick the strength whose noise level matches the input's (higher = noisier).
pub fn denoise(
    set: &ModelSet,
    images: &[f32],
    n: usize,
    params: &DiffusionParams,
    hooks: &mut Hooks,
) -> Result<Vec<f32>> {
    let p = DiffusionParams { count: n, ..*params };
    p.validate()?;
    let x0 = to_diffusion(set, images, n)?;
    let r = schedule(set)?.rates(p.strength);
    let x = x0.iter().map(|&v| r.signal * v).collect();
    run(set, &p, x, None, hooks)
}

/// Fills the region where `mask` is set (one value per pixel in [0, 1], 1 = invent, `n * height * width`)
/// so that it fits the rest of each image; pixels outside the mask are returned as they came in.
pub fn inpaint(
    set: &ModelSet,
    images: &[f32],
    mask: &[f32],
    n: usize,
    params: &DiffusionParams,
    hooks: &mut Hooks,
) -> Result<Vec<f32>> {
    let p = DiffusionParams { count: n, ..*params };
    p.validate()?;
    let img = set.manifest().image.clone();
    let (ih, iw) = (img.height as usize, img.width as usize);
    crate::vae::check_batch(n, mask.len(), ih * iw, "mask")?;
    crate::vae::check_finite(mask, "mask")?;
    let [c, h, w] = set.diffusion_shape()?;
    let (c, h, w) = (c as usize, h as usize, w as usize);
    // The mask at diffusion resolution: a latent cell is invented when any pixel it covers is masked, so
    // that the known region never holds a half-masked cell whose latent would smear the edge.
    let mut invent = vec![0f32; n * c * h * w];
    for k in 0..n {
        for y in 0..h {
            for x in 0..w {
                let (y0, y1) = (y * ih / h, ((y + 1) * ih).div_ceil(h));
                let (x0, x1) = (x * iw / w, ((x + 1) * iw).div_ceil(w));
                let m = (y0..y1)
                    .flat_map(|py| (x0..x1).map(move |px| (py, px)))
                    .map(|(py, px)| mask[k * ih * iw + py * iw + px].clamp(0.0, 1.0))
                    .fold(0.0, f32::max);
                for ch in 0..c {
                    invent[((k * c + ch) * h + y) * w + x] = m;
                }
            }
        }
    }
    let x0 = to_diffusion(set, images, n)?;
    let mut noise = Noise::new(p.seed);
    let eps = noise.normals(x0.len());
    let r = schedule(set)?.rates(p.strength);
    // The same start as img2img: the input noised to the starting level (at strength 1 that is nearly pure
    // noise inside the mask); outside the mask the loop keeps re-imposing it.
    let x = x0.iter().zip(&eps).map(|(&v, &e)| r.signal * v + r.noise * e).collect();
    let known = Known { x0, invent, eps };
    let out = run(set, &p, x, Some(&known), hooks)?;
    // Keep the input's own pixels outside the mask (blended by the mask value at soft edges).
    let per = img.channels as usize * ih * iw;
    Ok(out
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let (k, pix) = (i / per, i % (ih * iw));
            let m = mask[k * ih * iw + pix].clamp(0.0, 1.0);
            m * v + (1.0 - m) * images[i]
        })
        .collect())
}

/// The loop shared by every mode. `x` starts at level `params.strength`.
fn run(
    set: &ModelSet,
    p: &DiffusionParams,
    mut x: Vec<f32>,
    known: Option<&Known>,
    hooks: &mut Hooks,
) -> Result<Vec<f32>> {
    let schedule = schedule(set)?;
    let n = p.count;
    let steps = ((p.steps as f32 * p.strength).ceil() as usize).clamp(1, p.steps);
    let times = schedule.timesteps(steps, p.strength)?;
    let mut sampler = p.sampler.build(schedule);
    // Stochastic samplers draw from their own stream, so that the initial noise of a seed is the same for
    // every sampler (a seed means the same starting point, whatever the method).
    let mut sampler_noise = Noise::new(p.seed ^ 0x9e37_79b9_7f4a_7c15);
    for k in 0..steps {
        if hooks.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Err(Error::Cancelled);
        }
        let t = times[k];
        let r = schedule.rates(t);
        let eps = set.predict_noise(&x, &vec![r.noise * r.noise; n], n)?;
        let next = if k + 1 == steps { None } else { Some(times[k + 1]) };
        if hooks.preview.is_some() {
            // The clean-image estimate at this step, before the sampler moves on.
            let x0: Vec<f32> = x.iter().zip(&eps).map(|(&v, &e)| (v - r.noise * e) / r.signal).collect();
            let images = from_diffusion(set, &x0, n)?;
            if let Some(preview) = hooks.preview.as_mut() {
                if !preview(k + 1, &images) {
                    return Err(Error::Cancelled);
                }
            }
        }
        sampler.step(&mut x, &eps, t, next, &mut sampler_noise)?;
        if let (Some(kn), Some(tn)) = (known, next) {
            let rn = schedule.rates(tn);
            for (i, xi) in x.iter_mut().enumerate() {
                let noised = rn.signal * kn.x0[i] + rn.noise * kn.eps[i];
                *xi = kn.invent[i] * *xi + (1.0 - kn.invent[i]) * noised;
            }
        }
        if let Some(progress) = hooks.progress.as_mut() {
            if !progress(k + 1, steps) {
                return Err(Error::Cancelled);
            }
        }
    }
    if let Some(kn) = known {
        for (i, xi) in x.iter_mut().enumerate() {
            *xi = kn.invent[i] * *xi + (1.0 - kn.invent[i]) * kn.x0[i];
        }
    }
    if x.iter().any(|v| !v.is_finite()) {
        return Err(Error::Inference("diffusion produced non-finite values".into()));
    }
    from_diffusion(set, &x, n)
}

/// The set's U-Net spec, or the error every diffusion mode gives for a set without one.
fn unet_spec(set: &ModelSet) -> Result<&UNetSpec> {
    set.manifest().unet.as_ref().ok_or_else(|| Error::Unsupported("model set has no diffusion U-Net".into()))
}

fn schedule(set: &ModelSet) -> Result<crate::schedule::CosineSchedule> {
    Ok(unet_spec(set)?.schedule)
}

/// Applies `f(value, channel)` to every value of `n` NCHW samples (per-channel (de)normalisation).
fn per_channel(x: &[f32], n: usize, channels: usize, f: impl Fn(f32, usize) -> f32) -> Vec<f32> {
    let per = x.len() / n;
    let hw = per / channels;
    x.iter().enumerate().map(|(i, &v)| f(v, (i % per) / hw)).collect()
}

fn shape_len(s: [u32; 3]) -> usize {
    s.iter().map(|&d| d as usize).product()
}

/// Model-space images -> normalised diffusion-space samples (through the VAE encoder's mean when latent).
fn to_diffusion(set: &ModelSet, images: &[f32], n: usize) -> Result<Vec<f32>> {
    let spec = unet_spec(set)?;
    let z = match spec.space {
        DiffusionSpace::Latent => set.encode(images, n)?.0,
        DiffusionSpace::Pixel => {
            crate::vae::check_batch(n, images.len(), set.image_len(), "image")?;
            crate::vae::check_finite(images, "image")?;
            images.to_vec()
        }
    };
    Ok(per_channel(&z, n, spec.data_mean.len(), |v, c| (v - spec.data_mean[c]) / spec.data_std[c]))
}

/// Normalised diffusion-space samples -> model-space images.
fn from_diffusion(set: &ModelSet, x: &[f32], n: usize) -> Result<Vec<f32>> {
    let spec = unet_spec(set)?;
    let z = per_channel(x, n, spec.data_mean.len(), |v, c| v * spec.data_std[c] + spec.data_mean[c]);
    match spec.space {
        DiffusionSpace::Latent => set.decode(&z, n),
        DiffusionSpace::Pixel => Ok(z.into_iter().map(|v| v.clamp(-1.0, 1.0)).collect()),
    }
}
