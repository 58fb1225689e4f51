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
//!
//! The pipeline owns the diffusion parameters: [`DiffusionParams::validate`] and [`resolve_guidance`] are
//! the only places that decide what is accepted, and [`TextGuidance::request`] the only place that decides
//! when a prompt applies. The C API and the CLI translate their inputs and name their fields in messages:
//! these errors start with the field's name ("steps is 0, ..."), so that a caller can prefix its spelling.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, Result};
use crate::limits::{call_values, check_batch, check_finite, check_guidance, MAX_BATCH, MAX_STEPS};
use crate::manifest::{DiffusionSpace, UNetSpec};
use crate::model_set::{Embeddings, ModelSet};
use crate::rng::Noise;
use crate::sampler::SamplerKind;

/// What to run.
#[derive(Debug, Clone, PartialEq)]
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
    /// Run the U-Net and the VAE decoder with circular padding: images that wrap seamlessly at their edges.
    pub tileable: bool,
    /// The initial noise instead of the seed's: `count` samples of the diffusion shape (generate,
    /// img2img, inpaint; one sample shared by every frame of an interpolation). Stochastic samplers still
    /// draw their later noise from the seed. Denoise adds no noise and refuses it.
    pub noise: Option<std::sync::Arc<[f32]>>,
    /// The noise stochastic samplers draw between steps, in the order they draw it, instead of the seed's:
    /// to reproduce another implementation's stochastic run value for value (e.g. diffusers' Euler
    /// ancestral with the noise its generator gave). Too few values is an error.
    pub step_noise: Option<std::sync::Arc<[f32]>>,
}

impl Default for DiffusionParams {
    fn default() -> Self {
        // 50 DDIM steps: the lecture's and most tools' default trade-off between time and quality.
        DiffusionParams {
            steps: 50,
            sampler: SamplerKind::Auto { eta: 0.0 },
            seed: 0,
            count: 1,
            strength: 1.0,
            tileable: false,
            noise: None,
            step_noise: None,
        }
    }
}

impl DiffusionParams {
    /// The one check of every field. Each message starts with the field's name.
    pub fn validate(&self) -> Result<()> {
        if self.steps == 0 || self.steps > MAX_STEPS {
            return Err(Error::invalid(format!("steps is {}, out of range 1..={MAX_STEPS}", self.steps)));
        }
        if self.count == 0 || self.count > MAX_BATCH {
            return Err(Error::invalid(format!("count is {}, out of range 1..={MAX_BATCH}", self.count)));
        }
        if !(self.strength.is_finite() && self.strength > 0.0 && self.strength <= 1.0) {
            return Err(Error::invalid(format!("strength is {}, must be in (0, 1]", self.strength)));
        }
        if let SamplerKind::Ddim { eta } | SamplerKind::Auto { eta } = self.sampler {
            SamplerKind::check_eta(eta)?;
        }
        if let Some(noise) = &self.noise {
            check_finite(noise, "noise")?;
        }
        if let Some(noise) = &self.step_noise {
            check_finite(noise, "step_noise")?;
        }
        Ok(())
    }

    /// The initial noise of `samples` samples of `per` values: the caller's (checked for size) or the seed's.
    fn initial_noise(&self, samples: usize, per: usize) -> Result<Vec<f32>> {
        let len = call_values(samples, per, "samples")?;
        match &self.noise {
            Some(noise) if noise.len() == len => Ok(noise.to_vec()),
            Some(noise) => Err(Error::invalid(format!(
                "noise holds {} values; {samples} sample(s) of {per} values ({len}) are needed",
                noise.len()
            ))),
            None => Noise::new(self.seed).try_normals(len),
        }
    }
}

/// The guidance scale a call runs with: the caller's (`Some`), or the set's own default (`None`), checked
/// against [`MAX_GUIDANCE`](crate::limits::MAX_GUIDANCE). Errors with Unsupported on a set without text conditioning.
pub fn resolve_guidance(set: &ModelSet, guidance: Option<f32>) -> Result<f32> {
    let g = match guidance {
        Some(g) => g,
        None => set.require_text()?.guidance,
    };
    check_guidance(g)?;
    Ok(g)
}

/// The guidance a request runs with under the rule of [`TextGuidance::request`] (None: no text applies),
/// without encoding anything: a caller that names fields in messages checks its request with this first.
pub fn request_guidance(
    set: &ModelSet,
    prompts: &[&str],
    negative: &[&str],
    guidance: Option<f32>,
) -> Result<Option<f32>> {
    if prompts.iter().chain(negative).all(|p| p.is_empty()) {
        return Ok(None);
    }
    resolve_guidance(set, guidance).map(Some)
}

/// What a text-conditioned generation is steered by: per image the prompt's embeddings (`cond`) and the
/// unconditional side (`uncond`: the negative prompt's embeddings, or the empty prompt's), and the
/// classifier-free guidance scale: eps = uncond + guidance * (cond - uncond). Made only by the constructors
/// below, so its guidance has always been checked.
#[derive(Debug, Clone, PartialEq)]
pub struct TextGuidance {
    cond: Embeddings,   // context [n, L, W], pooled [n, W]
    uncond: Embeddings, // likewise
    /// 1 = the prompt alone (the unconditional side is not even run); 0 = the unconditional side alone.
    guidance: f32,
}

impl TextGuidance {
    /// The one rule for when a prompt applies, for every caller (C API, CLI, Rust): a request steers the
    /// generation only when it names a non-empty prompt or negative prompt. Without either it is None (the
    /// unconditional generation) and `guidance` is ignored, not even checked. Otherwise [`TextGuidance::new`].
    pub fn request(
        set: &ModelSet,
        prompts: &[&str],
        negative: &[&str],
        n: usize,
        guidance: Option<f32>,
    ) -> Result<Option<TextGuidance>> {
        match request_guidance(set, prompts, negative, guidance)? {
            Some(g) => TextGuidance::new(set, prompts, negative, n, Some(g)).map(Some),
            None => Ok(None),
        }
    }

    /// Encodes `prompts` (one per image, or one for all `n`) and `negative` (likewise; empty = none, i.e.
    /// the empty prompt) for the set's text encoder, with `guidance` (None = the set's own, see
    /// [`resolve_guidance`]).
    pub fn new(
        set: &ModelSet,
        prompts: &[&str],
        negative: &[&str],
        n: usize,
        guidance: Option<f32>,
    ) -> Result<TextGuidance> {
        let guidance = resolve_guidance(set, guidance)?;
        let rows = |k: usize, what: &str| -> Result<Vec<usize>> {
            match k {
                1 => Ok(vec![0; n]),
                k if k == n => Ok((0..n).collect()),
                k => Err(Error::invalid(format!("{k} {what} for {n} images: give one, or one per image"))),
            }
        };
        let cond = set.encode_prompts(prompts)?.gather(&rows(prompts.len(), "prompts")?)?;
        let negative: &[&str] = if negative.is_empty() { &[""] } else { negative };
        let uncond = set.encode_prompts(negative)?.gather(&rows(negative.len(), "negative prompts")?)?;
        Ok(TextGuidance { cond, uncond, guidance })
    }

    /// The unconditional generation of a text-conditioned set: the empty prompt on both sides (encoded
    /// once; at guidance 1 the unconditional side is never run).
    fn unconditional(set: &ModelSet, n: usize) -> Result<TextGuidance> {
        let cond = set.encode_prompts(&[""])?.gather(&vec![0; n])?;
        Ok(TextGuidance { uncond: cond.clone(), cond, guidance: 1.0 })
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
/// On a text-conditioned set this is the unconditional generation (the empty prompt).
pub fn generate(set: &ModelSet, params: &DiffusionParams, hooks: &mut Hooks) -> Result<Vec<f32>> {
    generate_with(set, params, None, hooks)
}

/// [`generate`] steered by text (required rows: `params.count`); None = unconditional.
pub fn generate_with(
    set: &ModelSet,
    params: &DiffusionParams,
    text: Option<&TextGuidance>,
    hooks: &mut Hooks,
) -> Result<Vec<f32>> {
    run_plan(set, plan_generate(set, params, text)?, hooks)
}

/// [`generate_with`] prepared, not run.
pub fn plan_generate(set: &ModelSet, params: &DiffusionParams, text: Option<&TextGuidance>) -> Result<Plan> {
    let p = DiffusionParams { strength: 1.0, ..params.clone() };
    p.validate()?;
    let per = shape_len(set.diffusion_shape()?);
    let x = p.initial_noise(p.count, per)?; // [count, C, h, w]
    Ok(Plan::single(Denoising::new(set, &p, Start::Noise(x), None, text)?))
}

/// Frames of a walk through prompt space: `frames` images along the path through each prompt in turn
/// (at least two), all from the same initial noise (the seed's), so that only the text changes. Token
/// embeddings are interpolated linearly, pooled embeddings by slerp; the negative prompt (if any) and the
/// guidance are the same for every frame. Frames are generated in batches of `params.count` (at least 1;
/// one at a time with a stochastic sampler, whose noise would otherwise differ between frames). `guidance`
/// None = the set's own.
pub fn interpolate(
    set: &ModelSet,
    prompts: &[&str],
    negative: &str,
    frames: usize,
    guidance: Option<f32>,
    params: &DiffusionParams,
    hooks: &mut Hooks,
) -> Result<Vec<f32>> {
    run_plan(set, plan_interpolate(set, prompts, negative, frames, guidance, params)?, hooks)
}

/// [`interpolate`] prepared, not run: one run per batch of frames.
pub fn plan_interpolate(
    set: &ModelSet,
    prompts: &[&str],
    negative: &str,
    frames: usize,
    guidance: Option<f32>,
    params: &DiffusionParams,
) -> Result<Plan> {
    if prompts.len() < 2 || prompts.len() > MAX_BATCH {
        return Err(Error::invalid(format!(
            "interpolation needs at least 2 prompts (at most {MAX_BATCH}), got {}",
            prompts.len()
        )));
    }
    if !(2..=MAX_BATCH).contains(&frames) {
        return Err(Error::invalid(format!("frames is {frames}, out of range 2..={MAX_BATCH}")));
    }
    let guidance = resolve_guidance(set, guidance)?;
    let p = DiffusionParams { strength: 1.0, count: 1, ..params.clone() };
    p.validate()?;
    let keys = set.encode_prompts(prompts)?;
    let uncond = set.encode_prompts(&[negative])?;
    let (lc, lp) = (keys.context.len() / keys.n, keys.pooled.len() / keys.n);
    let mut path = Embeddings { n: 0, context: Vec::new(), pooled: Vec::new() };
    for f in 0..frames {
        // Position along the path, in prompts: segment i from prompt i to i + 1, fraction u.
        let s = f as f32 * (prompts.len() - 1) as f32 / (frames - 1) as f32;
        let i = (s.floor() as usize).min(prompts.len() - 2);
        let u = s - i as f32;
        let (a, b) = (&keys.context[i * lc..(i + 1) * lc], &keys.context[(i + 1) * lc..(i + 2) * lc]);
        path.context.extend(a.iter().zip(b).map(|(&x, &y)| x + u * (y - x)));
        let (a, b) = (&keys.pooled[i * lp..(i + 1) * lp], &keys.pooled[(i + 1) * lp..(i + 2) * lp]);
        path.pooled.extend(crate::latent::slerp(a, b, u)?);
        path.n += 1;
    }
    let per = shape_len(set.diffusion_shape()?);
    let noise = p.initial_noise(1, per)?; // [C, h, w]
                                          // A stochastic sampler draws its noise for the whole batch from one stream: batched frames would each
                                          // get other noise. One frame per run, all from the same seed, keeps "only the text changes".
    let stochastic = set.resolve_sampler(p.sampler)?.is_stochastic();
    let batch = if stochastic { 1 } else { params.count.max(1) };
    call_values(batch, per, "frames per batch")?;
    let out = crate::limits::try_vec(call_values(frames, set.image_len(), "frames")?, "frames")?;
    let mut runs = Vec::new();
    for start in (0..frames).step_by(batch) {
        let k = batch.min(frames - start);
        let rows: Vec<usize> = (start..start + k).collect();
        let text = TextGuidance { cond: path.gather(&rows)?, uncond: uncond.gather(&vec![0; k])?, guidance };
        let x: Vec<f32> = (0..k).flat_map(|_| noise.iter().copied()).collect();
        runs.push(Denoising::new(set, &DiffusionParams { count: k, ..p.clone() }, Start::Noise(x), None, Some(&text))?);
    }
    Ok(Plan::new(runs, out, None))
}

/// Re-imagines `n` model-space images: pushes them `strength` of the way into noise, then denoises (steered
/// by `text` on a text-conditioned set; None = unconditional). Small strengths stay close to the input; 1
/// ignores it. One output per input.
pub fn img2img(
    set: &ModelSet,
    images: &[f32],
    n: usize,
    params: &DiffusionParams,
    text: Option<&TextGuidance>,
    hooks: &mut Hooks,
) -> Result<Vec<f32>> {
    image_to_image(set, images, n, params, text, hooks, true)
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
    text: Option<&TextGuidance>,
    hooks: &mut Hooks,
) -> Result<Vec<f32>> {
    image_to_image(set, images, n, params, text, hooks, false)
}

/// img2img and denoise: the inputs' normalised latents taken to level `strength`, with fresh noise from
/// the seed (img2img) or as they are, only scaled (denoise), then the remaining steps.
fn image_to_image(
    set: &ModelSet,
    images: &[f32],
    n: usize,
    params: &DiffusionParams,
    text: Option<&TextGuidance>,
    hooks: &mut Hooks,
    add_noise: bool,
) -> Result<Vec<f32>> {
    run_plan(set, plan_image_to_image(set, images, n, params, text, add_noise)?, hooks)
}

/// [`img2img`] (`add_noise`) or [`denoise`] prepared, not run.
pub fn plan_image_to_image(
    set: &ModelSet,
    images: &[f32],
    n: usize,
    params: &DiffusionParams,
    text: Option<&TextGuidance>,
    add_noise: bool,
) -> Result<Plan> {
    let p = DiffusionParams { count: n, ..params.clone() };
    p.validate()?;
    if !add_noise && p.noise.is_some() {
        return Err(Error::invalid("noise is given, but denoise adds no noise: leave it out"));
    }
    let x0 = to_diffusion(set, images, n)?; // [n, C, h, w]
    let eps = if add_noise { p.initial_noise(n, x0.len() / n.max(1))? } else { vec![0.0; x0.len()] };
    Ok(Plan::single(Denoising::new(set, &p, Start::Noised { x0, eps }, None, text)?))
}

/// Fills the region where `mask` is set (one value per pixel in [0, 1], 1 = invent, `n * height * width`)
/// so that it fits the rest of each image; pixels outside the mask are returned as they came in.
pub fn inpaint(
    set: &ModelSet,
    images: &[f32],
    mask: &[f32],
    n: usize,
    params: &DiffusionParams,
    text: Option<&TextGuidance>,
    hooks: &mut Hooks,
) -> Result<Vec<f32>> {
    run_plan(set, plan_inpaint(set, images, mask, n, params, text)?, hooks)
}

/// [`inpaint`] prepared, not run (it keeps copies of `images` and `mask` for the final blend).
pub fn plan_inpaint(
    set: &ModelSet,
    images: &[f32],
    mask: &[f32],
    n: usize,
    params: &DiffusionParams,
    text: Option<&TextGuidance>,
) -> Result<Plan> {
    let p = DiffusionParams { count: n, ..params.clone() };
    p.validate()?;
    let img = set.manifest().image.clone();
    let (ih, iw) = (img.height as usize, img.width as usize);
    check_batch(n, mask.len(), ih * iw, "mask")?;
    check_finite(mask, "mask")?;
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
    let eps = p.initial_noise(n, x0.len() / n.max(1))?;
    // The same start as img2img: the input noised to the starting level (at strength 1 that is nearly pure
    // noise inside the mask); outside the mask the loop keeps re-imposing it.
    let start = Start::Noised { x0: x0.clone(), eps: eps.clone() };
    let known = Known { x0, invent, eps };
    let run = Denoising::new(set, &p, start, Some(known), text)?;
    // Keep the input's own pixels outside the mask (blended by the mask value at soft edges).
    let per = img.channels as usize * ih * iw;
    let (images, mask) = (images.to_vec(), mask.to_vec());
    let blend = move |out: Vec<f32>| -> Result<Vec<f32>> {
        Ok(out
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let (k, pix) = (i / per, i % (ih * iw));
                let m = mask[k * ih * iw + pix].clamp(0.0, 1.0);
                m * v + (1.0 - m) * images[i]
            })
            .collect())
    };
    Ok(Plan::new(vec![run], Vec::new(), Some(Box::new(blend))))
}

/// Steps `plan` to the end (what every blocking call does), checking `hooks.cancel` before each step.
pub fn run_plan(set: &ModelSet, mut plan: Plan, hooks: &mut Hooks) -> Result<Vec<f32>> {
    while !plan.is_done() {
        if hooks.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Err(Error::Cancelled);
        }
        plan.step(set, hooks)?;
    }
    plan.finish()
}

/// Post-processing of a plan's images (inpainting's blend with the input).
type Post = Box<dyn FnOnce(Vec<f32>) -> Result<Vec<f32>> + Send>;

/// A diffusion call prepared and not yet run (`plan_generate`, `plan_image_to_image`, `plan_inpaint`,
/// `plan_interpolate`): its runs, one after the other (one per batch of frames for an interpolation, one
/// otherwise), then the post-processing of their images. [`Plan::step`] advances one sampler step and
/// reports progress and previews over the whole plan, so that the blocking calls ([`run_plan`]) and a caller
/// that spreads the steps over time or threads see the same numbers and get the same images.
pub struct Plan {
    runs: std::collections::VecDeque<Denoising>,
    /// The images of the runs that have finished, in order.
    out: Vec<f32>,
    post: Option<Post>,
    total: usize,
    done: usize,
    /// The final samples of the latest finished run (what [`Plan::samples`] shows after its last step).
    last: Vec<f32>,
}

impl Plan {
    fn single(run: Denoising) -> Plan {
        Plan::new(vec![run], Vec::new(), None)
    }

    fn new(runs: Vec<Denoising>, out: Vec<f32>, post: Option<Post>) -> Plan {
        let total = runs.iter().map(Denoising::steps).sum();
        Plan { runs: runs.into(), out, post, total, done: 0, last: Vec::new() }
    }

    /// Sampler steps in all.
    pub fn steps(&self) -> usize {
        self.total
    }

    /// Sampler steps done.
    pub fn steps_done(&self) -> usize {
        self.done
    }

    /// Whether every step has run (then [`Plan::finish`] gives the images).
    pub fn is_done(&self) -> bool {
        self.runs.is_empty()
    }

    /// The samples after the latest step, [n, C, h, w] in normalised diffusion space (for a diffusers
    /// folder: the scheduler's latents, as diffusers holds them between steps); empty before the first.
    pub fn samples(&self) -> &[f32] {
        match self.runs.front() {
            Some(r) if r.k > 0 => &r.x,
            _ => &self.last,
        }
    }

    /// Runs the next sampler step. The hooks see (steps done, steps in all) over the whole plan, and
    /// previews show the images of the running batch; either may cancel (`Error::Cancelled`, after which
    /// the plan should be dropped). Does nothing once every step has run.
    pub fn step(&mut self, set: &ModelSet, hooks: &mut Hooks) -> Result<()> {
        let Some(run) = self.runs.front_mut() else { return Ok(()) };
        // The hooks of the run count its own steps; those of the plan count from the runs before it.
        let (before, total) = (self.done - run.steps_done(), self.total);
        let mut progress = |d: usize, _: usize| hooks.progress.as_mut().is_none_or(|f| f(before + d, total));
        let wants_preview = hooks.preview.is_some();
        let mut preview = |d: usize, images: &[f32]| hooks.preview.as_mut().is_none_or(|f| f(before + d, images));
        let preview: Option<PreviewFn> = if wants_preview { Some(&mut preview) } else { None };
        run.step(set, &mut Hooks { progress: Some(&mut progress), preview, cancel: hooks.cancel })?;
        self.done += 1;
        if run.is_done() {
            let run = self.runs.pop_front().expect("the run just stepped");
            self.last.clone_from(&run.x);
            let images = run.finish(set)?;
            self.out.try_reserve(images.len()).map_err(|_| Error::invalid("the results do not fit in memory"))?;
            self.out.extend(images);
        }
        Ok(())
    }

    /// The model-space images of a plan whose every step has run.
    pub fn finish(self) -> Result<Vec<f32>> {
        if !self.is_done() {
            return Err(Error::invalid(format!("{} of {} steps run: not finished", self.done, self.total)));
        }
        match self.post {
            Some(post) => post(self.out),
            None => Ok(self.out),
        }
    }
}

/// Where a run starts, in normalised diffusion space.
enum Start {
    /// Pure noise (a generation): unit-variance values, scaled by the sampler's initial sigma.
    Noise(Vec<f32>),
    /// Clean samples brought to the level of the first step with the noise `eps` (img2img, inpainting;
    /// zeros for denoise, which adds none).
    Noised { x0: Vec<f32>, eps: Vec<f32> },
}

/// One reverse-diffusion run (one batch) of a [`Plan`], advanced one sampler step at a time: the state
/// between steps (the samples, the sampler's memory, its noise stream, the text embeddings) owned, so that
/// the steps can be spread over time (a frame budget) or threads and still give exactly the images of an
/// uninterrupted run.
struct Denoising {
    n: usize,
    /// [n, C, h, w] at the level of the next step.
    x: Vec<f32>,
    known: Option<Known>,
    text: Option<TextGuidance>,
    /// Classifier-free guidance: the prompt rows then the unconditional rows, run as one batch of 2n.
    cond_and_uncond: Option<Embeddings>,
    steps: usize,
    sampler: Box<dyn crate::sampler::Sampler>,
    sampler_noise: Noise,
    /// Circular padding (the tileable sessions).
    tileable: bool,
    /// Steps done.
    k: usize,
}

impl Denoising {
    fn new(
        set: &ModelSet,
        p: &DiffusionParams,
        start: Start,
        known: Option<Known>,
        text: Option<&TextGuidance>,
    ) -> Result<Denoising> {
        if p.tileable {
            set.check_tileable()?;
        }
        let sampler = set.sampler(p.sampler, p.steps, p.strength)?;
        let x = match start {
            Start::Noise(eps) => {
                let s = sampler.init_noise_sigma();
                eps.into_iter().map(|e| s * e).collect()
            }
            Start::Noised { x0, eps } => sampler.noised(0, &x0, &eps),
        };
        let n = p.count;
        let len = x.len(); // n * C * h * w
        call_values(2 * n, len / n.max(1), "samples with both sides of the guidance")?;
        let text = match (set.text_spec(), text) {
            (Some(_), None) => Some(TextGuidance::unconditional(set, n)?),
            (Some(_), Some(t)) => {
                if set.runs_both_sides(t.guidance) && 2 * n > MAX_BATCH {
                    return Err(Error::invalid(format!(
                        "count is {n} with guidance: at most {} (both sides run in one batch)",
                        MAX_BATCH / 2
                    )));
                }
                if t.cond.n != n || t.uncond.n != n {
                    return Err(Error::invalid(format!(
                        "text embeddings for {} / {} images, {n} asked",
                        t.cond.n, t.uncond.n
                    )));
                }
                Some(t.clone())
            }
            (None, Some(_)) => return Err(set.not_text_conditioned()),
            (None, None) => None,
        };
        // Classifier-free guidance runs both sides in ONE U-Net batch of 2n: x twice, prompt rows then the
        // unconditional rows. Where the set's rule says the unconditional side does not count (guidance 1
        // for mirage's sets, <= 1 for a diffusers folder) it is not run.
        let cond_and_uncond = text.as_ref().filter(|t| set.runs_both_sides(t.guidance)).map(|t| {
            let mut e = t.cond.clone(); // context [2n, L, W], pooled [2n, W]
            e.extend(&t.uncond);
            e
        });
        // Stochastic samplers draw from their own stream, so that the initial noise of a seed is the same for
        // every sampler (a seed means the same starting point, whatever the method).
        let sampler_noise = match &p.step_noise {
            Some(values) => Noise::given(values.clone()),
            None => Noise::new(p.seed ^ 0x9e37_79b9_7f4a_7c15),
        };
        Ok(Denoising {
            n,
            x,
            known,
            text,
            cond_and_uncond,
            steps: sampler.steps(),
            sampler,
            sampler_noise,
            tileable: p.tileable,
            k: 0,
        })
    }

    /// Sampler steps in all.
    fn steps(&self) -> usize {
        self.steps
    }

    /// Sampler steps done.
    fn steps_done(&self) -> usize {
        self.k
    }

    /// Whether every step has run (then [`Denoising::finish`] gives the images).
    fn is_done(&self) -> bool {
        self.k == self.steps
    }

    /// Runs the next step, then the preview and progress hooks (either may cancel: `Error::Cancelled`,
    /// after which the run should be dropped). Does nothing when every step has run.
    fn step(&mut self, set: &ModelSet, hooks: &mut Hooks) -> Result<()> {
        if self.is_done() {
            return Ok(());
        }
        let (k, n, steps) = (self.k, self.n, self.steps);
        let len = self.x.len();
        let input = self.sampler.input(k); // what the U-Net sees: x * scale, at this noise level
        let x = &mut self.x;
        let scaled: std::borrow::Cow<[f32]> = if input.scale == 1.0 {
            (&x[..]).into()
        } else {
            x.iter().map(|&v| v * input.scale).collect::<Vec<_>>().into()
        };
        let out: Vec<f32> = match (&self.cond_and_uncond, &self.text) {
            (Some(e), Some(t)) => {
                let x2: Vec<f32> = scaled.iter().chain(scaled.iter()).copied().collect(); // [2n, C, h, w]
                let out = set.predict(&x2, &vec![input.level; 2 * n], 2 * n, Some(e), self.tileable, t.guidance)?; // [2n, C, h, w]
                let (c, u) = out.split_at(len); // [n, C, h, w] each: prompt rows, unconditional rows
                c.iter().zip(u).map(|(&c, &u)| u + t.guidance * (c - u)).collect()
            }
            _ => set.predict(
                &scaled,
                &vec![input.level; n],
                n,
                self.text.as_ref().map(|t| &t.cond),
                self.tileable,
                self.text.as_ref().map_or(1.0, |t| t.guidance),
            )?,
        }; // [n, C, h, w]
        if hooks.preview.is_some() {
            // The clean-image estimate at this step, before the sampler moves on: [n, C, h, w].
            let x0 = self.sampler.denoised(k, x, &out);
            let images = from_diffusion(set, &x0, n, self.tileable)?;
            if let Some(preview) = hooks.preview.as_mut() {
                if !preview(k + 1, &images) {
                    return Err(Error::Cancelled);
                }
            }
        }
        self.sampler.step(k, x, &out, &mut self.sampler_noise)?; // x now at the level of step k + 1
        if self.sampler_noise.ran_short() {
            return Err(Error::invalid(format!(
                "step_noise ran out at step {} of {steps}: the sampler draws more values than were given",
                k + 1
            )));
        }
        if let (Some(kn), true) = (&self.known, k + 1 < steps) {
            // Inpainting: the known region, noised to the new level, replaces what the sampler made of it.
            let noised = self.sampler.noised(k + 1, &kn.x0, &kn.eps);
            for (i, xi) in x.iter_mut().enumerate() {
                *xi = kn.invent[i] * *xi + (1.0 - kn.invent[i]) * noised[i];
            }
        }
        self.k += 1;
        if let Some(progress) = hooks.progress.as_mut() {
            if !progress(k + 1, steps) {
                return Err(Error::Cancelled);
            }
        }
        Ok(())
    }

    /// The model-space images [n, C, h, w] of a run whose every step has run.
    fn finish(mut self, set: &ModelSet) -> Result<Vec<f32>> {
        if !self.is_done() {
            return Err(Error::invalid(format!("{} of {} steps run: not finished", self.k, self.steps)));
        }
        if let Some(kn) = &self.known {
            for (i, xi) in self.x.iter_mut().enumerate() {
                *xi = kn.invent[i] * *xi + (1.0 - kn.invent[i]) * kn.x0[i];
            }
        }
        if self.x.iter().any(|v| !v.is_finite()) {
            return Err(Error::Inference("diffusion produced non-finite values".into()));
        }
        from_diffusion(set, &self.x, self.n, self.tileable)
    }
}

fn unet_spec(set: &ModelSet) -> Result<&UNetSpec> {
    set.manifest().unet.as_ref().ok_or_else(|| Error::Unsupported("model set has no diffusion U-Net".into()))
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
            check_batch(n, images.len(), set.image_len(), "image")?;
            check_finite(images, "image")?;
            images.to_vec()
        }
    };
    Ok(per_channel(&z, n, spec.data_mean.len(), |v, c| (v - spec.data_mean[c]) / spec.data_std[c]))
}

/// Normalised diffusion-space samples -> model-space images (`tileable`: through the circular decoder).
fn from_diffusion(set: &ModelSet, x: &[f32], n: usize, tileable: bool) -> Result<Vec<f32>> {
    let spec = unet_spec(set)?;
    let z = per_channel(x, n, spec.data_mean.len(), |v, c| v * spec.data_std[c] + spec.data_mean[c]);
    match spec.space {
        DiffusionSpace::Latent => set.decode_with(&z, n, tileable),
        DiffusionSpace::Pixel => Ok(z.into_iter().map(|v| v.clamp(-1.0, 1.0)).collect()),
    }
}
