//! Diffusion through a context: generate from noise, img2img (and denoise), inpaint, with per-call progress
//! and preview callbacks and cancellation (`mirage_context_cancel`).

use std::ffi::{c_char, c_void};
use std::sync::Arc;

use super::boundary::{self, handle, read_params, slice, utf8};
use super::context::{MirageContext, Registration};
use super::image::{
    channels_of, read_images, MirageImage, MirageImageBatch, MiragePixelFormat, MIRAGE_PIXEL_GRAY8, MIRAGE_PIXEL_RGBA8,
};
use super::latent::MirageLatent;
use super::status::MirageStatus;
use crate::error::{Error, Result};
use crate::image::{from_model, to_model, Image};
use crate::limits::MAX_BATCH;
use crate::model_set::ModelSet;
use crate::pipeline::{self, DiffusionParams, Hooks, Plan, TextGuidance};
use crate::sampler::SamplerKind;

/// Called on the calling thread after every step of a generation with the steps done so far (1 to `total`)
/// and the steps in all; `user_data` is the params' own. Return true to continue, false to cancel (the
/// generation then returns MIRAGE_ERR_CANCELLED). It must not unwind (C++ exceptions, longjmp) into mirage.
pub type MirageProgressCallback = Option<unsafe extern "C" fn(step: u32, total: u32, user_data: *mut c_void) -> bool>;

/// Called on the calling thread after every step with the current estimate of the finished images: `count`
/// images in the params' format, of the set's size. The images and their pixels are borrowed for the
/// duration of the callback only: copy what you keep. Return true to continue, false to cancel. Each call
/// costs one VAE decode. It must not unwind (C++ exceptions, longjmp) into mirage.
pub type MiragePreviewCallback =
    Option<unsafe extern "C" fn(step: u32, images: *const MirageImage, count: usize, user_data: *mut c_void) -> bool>;

/// Options of `mirage_generate`, `mirage_img2img` and `mirage_inpaint`. Fill it with
/// `mirage_diffusion_params_init`, then set what you need. The params are read during the call and not
/// kept (the `sampler` string too).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct MirageDiffusionParams {
    /// sizeof(MirageDiffusionParams) as the host was compiled; set by `mirage_diffusion_params_init`.
    pub struct_size: usize,
    /// Sampler steps of a full generation, 1 to 1000; default 50. img2img and inpaint run the `strength`
    /// fraction of them (at least one; a diffusers folder runs `int(steps * strength)` as diffusers does, and
    /// refuses 0, and its PNDM scheduler makes one U-Net call more than its steps: `progress` counts calls).
    pub steps: u32,
    /// NULL or "" or "auto" (default): the set's own — "ddim" for mirage's sets, the folder's scheduler for a
    /// diffusers folder. "ddim", "dpm++2m" (DPM-Solver++ 2M: good images in fewer steps); diffusers folders
    /// also "dpm++2m-karras", "euler", "euler-a", "pndm", "lcm". UTF-8, case-insensitive.
    pub sampler: *const c_char,
    /// DDIM's randomness in [0, 1]: 0 (default) is deterministic, 1 as stochastic as DDPM. Must be 0 to 1
    /// for any sampler; dpm++2m ignores it.
    pub eta: f32,
    /// Seed of the initial noise and of stochastic sampling: the same inputs and seed give the same pixels
    /// (on one machine and provider). Default 0.
    pub seed: u64,
    /// `mirage_generate` only: images made together, 1 to 1024; default 1. img2img and inpaint make one
    /// image per input and ignore it.
    pub count: u32,
    /// img2img and inpaint: how far into the noise the input is pushed, in (0, 1]. Default 1, which keeps
    /// nothing of the input: callers of img2img set it (0.5 to 0.8 to re-imagine; "denoise" is img2img at
    /// 0.3 to 0.5 with the deterministic DDIM). Inpaint works at 1 (the mask's region is invented anew);
    /// lower values keep more of what the region held. `mirage_generate` ignores it.
    pub strength: f32,
    /// Optional (NULL = none): progress after each step; may cancel.
    pub progress: MirageProgressCallback,
    /// Optional (NULL = none): the current estimate of the images after each step; may cancel.
    pub preview: MiragePreviewCallback,
    /// Passed unchanged to `progress` and `preview`.
    pub user_data: *mut c_void,
    /// MIRAGE_PIXEL_* of the results and of the previews; default MIRAGE_PIXEL_RGBA8. Converted from the
    /// set's channels as `mirage_vae_decode` converts.
    pub format: MiragePixelFormat,
    /// Text-conditioned sets (`mirage_context_text_shape` succeeds): what to draw, UTF-8. NULL or "" (the
    /// default) = unconditional. Prompts longer than the set's token count are truncated (logged as a
    /// warning). A set without text conditioning refuses a non-empty prompt (MIRAGE_ERR_UNSUPPORTED).
    pub prompt: *const c_char,
    /// What to steer away from, UTF-8: classifier-free guidance pushes away from it instead of from the
    /// empty prompt. NULL or "" (the default) = nothing.
    pub negative_prompt: *const c_char,
    /// Classifier-free guidance scale: prediction = uncond + guidance * (cond - uncond). In [0, 50]; 1 uses
    /// the prompt alone (one U-Net run per step instead of two), higher follows the prompt more closely.
    /// MIRAGE_GUIDANCE_DEFAULT (-1, the default) takes the set's own (from its manifest). NaN, other negative
    /// values and values over MIRAGE_MAX_GUIDANCE (50) are refused. It applies only with a prompt or a negative
    /// prompt (and to `mirage_interpolate`): without either the generation is unconditional and `guidance`
    /// is ignored, not even checked. The CLI's `--guidance` follows the same rule.
    pub guidance: f32,
    /// Images that wrap seamlessly at their edges (textures, patterns): the U-Net and the VAE decoder run
    /// with circular padding (see `MirageContextParams::tileable` for when those sessions are made). Applies
    /// to generate, img2img, inpaint and interpolate. Default false. A set whose decoder crops (the Fashion
    /// sets: 8x8 latents to 28x28 images) cannot wrap and refuses it with MIRAGE_ERR_UNSUPPORTED.
    pub tileable: bool,
    /// Optional (NULL = from `seed`, the default): the initial noise, a latent of the set's diffusion shape
    /// (`mirage_context_latent_shape` for a latent-space set) holding one sample per image — `count` for
    /// generate, one per input image for img2img and inpaint, exactly 1 for interpolate (shared by every
    /// frame). Reproduces a generation across runs and implementations; rolling it by a multiple of the
    /// U-Net's downsampling factor rolls a tileable image. Read during the call (or the submission) and not
    /// kept. Stochastic sampling (eta > 0) still draws its later noise from `seed`. `mirage_denoise` adds
    /// no noise and refuses it.
    pub noise: *const MirageLatent,
}

/// `MirageDiffusionParams::guidance` value that selects the model set's own guidance scale.
pub const MIRAGE_GUIDANCE_DEFAULT: f32 = -1.0;

/// Fills `params` with the defaults: 50 steps, the set's own sampler (`sampler` NULL), eta 0, seed 0, count 1, strength 1,
/// no callbacks, user_data NULL, format MIRAGE_PIXEL_RGBA8, no prompt and no negative prompt, guidance
/// MIRAGE_GUIDANCE_DEFAULT, tileable false, noise NULL. Pass `sizeof(MirageDiffusionParams)` as
/// `struct_size`; the struct_size rule is that of `mirage_runtime_init`. img2img and inpaint callers then
/// set `strength`.
///
/// Errors: MIRAGE_ERR_INVALID_ARGUMENT when `params` is NULL or `struct_size` is too small.
#[no_mangle]
pub unsafe extern "C" fn mirage_diffusion_params_init(
    params: *mut MirageDiffusionParams,
    struct_size: usize,
) -> MirageStatus {
    boundary::run(|| {
        // SAFETY: the caller promises `params` holds `struct_size` writable bytes.
        unsafe { boundary::init_params::<MirageDiffusionParams>(params, struct_size, "params") }
    })
}

impl boundary::Params for MirageDiffusionParams {
    /// Version 1 (0.1.0 until the job API): up to `guidance`.
    const OLDER: &'static [(usize, usize)] = &[boundary::older_version!(MirageDiffusionParams, guidance, f32)];

    /// What `mirage_diffusion_params_init` fills in: the pipeline's defaults.
    fn defaults(struct_size: usize) -> MirageDiffusionParams {
        let d = DiffusionParams::default();
        MirageDiffusionParams {
            struct_size,
            steps: d.steps as u32,
            sampler: std::ptr::null(),
            eta: 0.0,
            seed: d.seed,
            count: d.count as u32,
            strength: d.strength,
            progress: None,
            preview: None,
            user_data: std::ptr::null_mut(),
            format: MIRAGE_PIXEL_RGBA8,
            prompt: std::ptr::null(),
            negative_prompt: std::ptr::null(),
            guidance: MIRAGE_GUIDANCE_DEFAULT,
            tileable: false,
            noise: std::ptr::null(),
        }
    }
}

/// Generates `params->count` images from noise with the set's U-Net, then decodes them (through the VAE for
/// a latent-space set). On success `*out` receives a new batch of `count` images of the set's size in
/// `params->format`, owned by the caller and freed with `mirage_image_batch_free`.
///
/// Callbacks run on the calling thread, between steps. The call can be cancelled by its progress or preview
/// callback returning false, or by `mirage_context_cancel` from any thread: it then returns
/// MIRAGE_ERR_CANCELLED within one step and `*out` is not written. Runs the U-Net (and the VAE decoder)
/// session, locking each for one step at a time, so generations on one context interleave step by step.
///
/// Errors: MIRAGE_ERR_INVALID_ARGUMENT (a NULL argument, bad params: steps 0 or over 1000, an unknown or
/// non-UTF-8 sampler, eta NaN or outside [0, 1], count 0 or over 1024 (over 512 with guidance), an unknown
/// format, a non-UTF-8 prompt or negative prompt, with a prompt or negative prompt a guidance NaN, negative
/// (other than MIRAGE_GUIDANCE_DEFAULT) or over 50, struct_size), MIRAGE_ERR_UNSUPPORTED (the set has no diffusion
/// U-Net, or a prompt or negative prompt was given to a set that is not text-conditioned),
/// MIRAGE_ERR_CANCELLED, MIRAGE_ERR_INFERENCE.
#[no_mangle]
pub unsafe extern "C" fn mirage_generate(
    ctx: *const MirageContext,
    params: *const MirageDiffusionParams,
    out: *mut *mut MirageImageBatch,
) -> MirageStatus {
    boundary::run(|| {
        // SAFETY: valid pointers when not NULL, by the caller's promise.
        let (call, result) = unsafe { (Call::new(ctx, params, true)?, boundary::out(out, "out")?) };
        result.write(call.run(Op::Generate, None)?);
        Ok(())
    })
}

/// Re-imagines `count` host images: pushes each `params->strength` of the way into noise, then denoises it
/// with the U-Net. Small strengths stay close to the input; 1 ignores it. To remove noise from an image
/// without adding any, use `mirage_denoise`. On success `*out` receives a new batch of `count`
/// images (one per input, in order) in `params->format`, owned by the caller.
///
/// `images` is an array of `count` (1 to 1024) host images, read during the call and not kept, each of the
/// set's width, height and channel count (`mirage_context_image_size`), any stride. `params->count` is
/// ignored. Callbacks, cancellation and locking as `mirage_generate`.
///
/// Errors: as `mirage_generate`, plus MIRAGE_ERR_INVALID_ARGUMENT for `count`, an image of the wrong size or
/// format, a bad stride, NULL data, and a strength NaN or outside (0, 1]; MIRAGE_ERR_UNSUPPORTED also when a
/// latent-space set has no VAE.
#[no_mangle]
pub unsafe extern "C" fn mirage_img2img(
    ctx: *const MirageContext,
    images: *const MirageImage,
    count: usize,
    params: *const MirageDiffusionParams,
    out: *mut *mut MirageImageBatch,
) -> MirageStatus {
    // SAFETY: forwarded with the caller's promises.
    unsafe { image_to_image(ctx, images, count, params, out, false) }
}

/// Removes noise from `count` host images: each image's latent is taken to be a diffusion sample at the level
/// `params->strength` as it is (scaled by that level's signal rate, no noise added) and the remaining steps
/// take out what the U-Net sees as noise. Nothing random is added, so the result stays close to the input;
/// pick the strength that matches the input's noise (0.05 to 0.2 for mild noise, higher for noisier input).
/// On success `*out` receives a new batch of `count` images in `params->format`, owned by the caller.
///
/// Arguments, callbacks, cancellation, locking and errors as `mirage_img2img`.
#[no_mangle]
pub unsafe extern "C" fn mirage_denoise(
    ctx: *const MirageContext,
    images: *const MirageImage,
    count: usize,
    params: *const MirageDiffusionParams,
    out: *mut *mut MirageImageBatch,
) -> MirageStatus {
    // SAFETY: forwarded with the caller's promises.
    unsafe { image_to_image(ctx, images, count, params, out, true) }
}

/// The shared body of `mirage_img2img` and `mirage_denoise`: one image in, one image out, per input.
///
/// # Safety
/// As the two exports: pointers valid when not NULL, `images` holds `count` host images.
unsafe fn image_to_image(
    ctx: *const MirageContext,
    images: *const MirageImage,
    count: usize,
    params: *const MirageDiffusionParams,
    out: *mut *mut MirageImageBatch,
    denoise: bool,
) -> MirageStatus {
    boundary::run(|| {
        // SAFETY: valid pointers when not NULL, by the caller's promise.
        let (call, result) = unsafe { (Call::new(ctx, params, true)?, boundary::out(out, "out")?) };
        // SAFETY: `count` host images (caller's promise).
        let images = unsafe { call.model_images(images, count) }?;
        let op = if denoise { Op::Denoise { images, n: count } } else { Op::Img2img { images, n: count } };
        result.write(call.run(op, None)?);
        Ok(())
    })
}

/// Fills the masked region of `count` host images so that it fits the rest of each image; pixels where the
/// mask is 0 come back exactly as they went in (when `params->format` is the images' format). On success
/// `*out` receives a new batch of `count` images in `params->format`, owned by the caller.
///
/// `images` as in `mirage_img2img`. `masks` is an array of `count` MIRAGE_PIXEL_GRAY8 host images of the
/// same size: 255 = invent this pixel, 0 = keep it, values between blend (soft edges). Both are read during
/// the call and not kept. `params->strength` is usually 1. Callbacks, cancellation and locking as
/// `mirage_generate`.
///
/// Errors: as `mirage_img2img`, plus MIRAGE_ERR_INVALID_ARGUMENT for a mask that is not GRAY8, of another
/// size, or with NULL data.
#[no_mangle]
pub unsafe extern "C" fn mirage_inpaint(
    ctx: *const MirageContext,
    images: *const MirageImage,
    masks: *const MirageImage,
    count: usize,
    params: *const MirageDiffusionParams,
    out: *mut *mut MirageImageBatch,
) -> MirageStatus {
    boundary::run(|| {
        // SAFETY: valid pointers when not NULL, by the caller's promise.
        let (call, result) = unsafe { (Call::new(ctx, params, true)?, boundary::out(out, "out")?) };
        // SAFETY: `count` host images and masks (caller's promise).
        let (images, masks) = unsafe { (call.model_images(images, count)?, call.masks(masks, count)?) };
        result.write(call.run(Op::Inpaint { images, masks, n: count }, None)?);
        Ok(())
    })
}

/// Morphs between prompts: `frames` images (2 to 1024) along a path through the `prompt_count` prompts (at
/// least 2) in turn, all from the same initial noise (`params->seed`), so that only the text changes from
/// frame to frame: token embeddings are interpolated linearly, pooled embeddings by slerp. On success `*out`
/// receives a new batch of `frames` images in `params->format`, in path order, owned by the caller.
///
/// `prompts` is an array of `prompt_count` UTF-8 strings, read during the call and not kept.
/// `params->prompt` is ignored; `negative_prompt`, `guidance`, `steps`, `sampler`, `eta`, callbacks and
/// `format` apply to every frame; `params->count` is how many frames run in one U-Net batch (1 = one at a
/// time). Progress and preview count steps over all frames; a preview shows the frames of the running batch.
/// Cancellation and locking as `mirage_generate`.
///
/// Errors: as `mirage_generate`, plus MIRAGE_ERR_INVALID_ARGUMENT for fewer than 2 prompts, a NULL or
/// non-UTF-8 prompt, `frames` outside 2..=1024; MIRAGE_ERR_UNSUPPORTED when the set is not
/// text-conditioned.
#[no_mangle]
pub unsafe extern "C" fn mirage_interpolate(
    ctx: *const MirageContext,
    prompts: *const *const c_char,
    prompt_count: usize,
    frames: u32,
    params: *const MirageDiffusionParams,
    out: *mut *mut MirageImageBatch,
) -> MirageStatus {
    boundary::run(|| {
        // SAFETY: valid pointers when not NULL, by the caller's promise.
        let (call, result) = unsafe { (Call::new(ctx, params, false)?, boundary::out(out, "out")?) };
        // SAFETY: `prompt_count` string pointers (caller's promise).
        let prompts = unsafe { call.walk_prompts(prompts, prompt_count) }?;
        result.write(call.run(Op::Interpolate { prompts, frames: frames as usize }, None)?);
        Ok(())
    })
}

/// A test-only export (cargo feature `test-panic`, never in the header): a generation on `ctx` whose
/// progress hook panics at step 2, inside the loop. Proves that the boundary catches it and that the
/// context forgets the generation (a later cancel, generation and free still work).
#[cfg(feature = "test-panic")]
#[no_mangle]
pub unsafe extern "C" fn mirage_debug_panic_in_generation(ctx: *const MirageContext) -> MirageStatus {
    boundary::run(|| {
        let mut c = <MirageDiffusionParams as boundary::Params>::defaults(size_of::<MirageDiffusionParams>());
        c.steps = 5;
        c.format = MIRAGE_PIXEL_GRAY8;
        // SAFETY: `ctx` is NULL or live (caller's promise); `c` is a whole params struct of this library's size.
        let call = unsafe { Call::new(ctx, &c, true) }?;
        let mut hook = |step: usize, _: usize| {
            assert!(step < 2, "panic in the generation loop at step {step}");
            true
        };
        call.run(Op::Generate, Some(&mut hook)).map(|_| ())
    })
}

/// What one call runs, with the inputs of its own kind, read and checked.
pub(crate) enum Op {
    /// `params->count` images from noise.
    Generate,
    /// One output per input: `n` model-space images [n, C, H, W].
    Img2img {
        images: Vec<f32>,
        n: usize,
    },
    Denoise {
        images: Vec<f32>,
        n: usize,
    },
    /// As img2img, with `n` masks [n, H, W] in [0, 1] (1 = invent).
    Inpaint {
        images: Vec<f32>,
        masks: Vec<f32>,
        n: usize,
    },
    /// `frames` images along the path through `prompts`.
    Interpolate {
        prompts: Vec<String>,
        frames: usize,
    },
}

/// A call on a context, checked: what it runs on (held by Arc, not through the host's context pointer, see
/// `mirage_context_free`), the host's params and callbacks.
pub(crate) struct Call {
    set: Arc<ModelSet>,
    /// The host's params as read; every field is checked by the pipeline when the call runs (`Call::run`).
    host: MirageDiffusionParams,
    sampler: SamplerKind,
    /// The params' prompt and negative prompt ("" when NULL); what they mean is the pipeline's rule.
    prompt: String,
    negative: String,
    /// Channels of `host.format`.
    channels: u32,
    /// `params->noise`, read (shape checked per sample; the count by the pipeline).
    noise: Option<Arc<[f32]>>,
    /// The call's registration on the context (cancel flag; what `mirage_context_free` waits for); None for
    /// a job's submission (jobs are cancelled through the job or the context's workers). Declared
    /// last so that it is dropped last: when free sees it gone, the call holds nothing of the context any
    /// more (its `set` Arc, the sessions' last owner after a free, is already dropped).
    registration: Option<Registration>,
}

impl Call {
    /// Reads `ctx` and `params` (strings, enumerations; `params->prompt` only `with_prompt`: interpolation
    /// ignores it), checks that the set can diffuse, and registers the call on the context.
    ///
    /// # Safety
    /// `ctx` and `params` are NULL or valid (the export's caller promises).
    unsafe fn new(ctx: *const MirageContext, params: *const MirageDiffusionParams, with_prompt: bool) -> Result<Call> {
        // SAFETY: forwarded from the caller.
        unsafe { Call::prepare(ctx, params, with_prompt, true) }
    }

    /// [`Call::new`] for a job: not registered as a blocking generation, and no callbacks (a job reports
    /// through polling).
    ///
    /// # Safety
    /// As [`Call::new`].
    pub(crate) unsafe fn for_job(
        ctx: *const MirageContext,
        params: *const MirageDiffusionParams,
        with_prompt: bool,
    ) -> Result<Call> {
        // SAFETY: forwarded from the caller.
        let call = unsafe { Call::prepare(ctx, params, with_prompt, false) }?;
        if call.host.progress.is_some() || call.host.preview.is_some() {
            return Err(Error::invalid(
                "params->progress and params->preview must be NULL for a job: poll it (mirage_job_poll) and read \
                 its previews (mirage_job_preview) instead",
            ));
        }
        Ok(call)
    }

    /// # Safety
    /// As [`Call::new`].
    unsafe fn prepare(
        ctx: *const MirageContext,
        params: *const MirageDiffusionParams,
        with_prompt: bool,
        register: bool,
    ) -> Result<Call> {
        // The context is touched here only: from now on the call uses its own Arcs.
        let (set, generations) = {
            // SAFETY: by the caller's promise.
            let ctx = unsafe { handle(ctx, "ctx") }?;
            (ctx.set.clone(), ctx.generations.clone())
        };
        // SAFETY: by the caller's promise.
        let host = unsafe { read_params(params, "params") }?;
        if !set.has_unet() {
            return Err(Error::Unsupported(format!(
                "model set {:?} has no diffusion U-Net: it can encode and decode, not generate",
                set.manifest().name
            )));
        }
        // SAFETY (the three strings): NULL or NUL-terminated, by the caller's promise.
        let text = |p: *const c_char, name: &str| -> Result<String> {
            // SAFETY: as above.
            Ok(if p.is_null() { String::new() } else { unsafe { utf8(p, name) }?.to_string() })
        };
        let name = text(host.sampler, "params->sampler")?;
        let sampler = SamplerKind::parse(&name, host.eta).map_err(|e| e.prefixed("params->"))?;
        let prompt = if with_prompt { text(host.prompt, "params->prompt")? } else { String::new() };
        let negative = text(host.negative_prompt, "params->negative_prompt")?;
        let channels = channels_of(host.format, "params->format")?;
        let noise = if host.noise.is_null() {
            None
        } else {
            // SAFETY: a live latent when not NULL, by the caller's promise; read now, not kept.
            let latent = unsafe { handle(host.noise, "params->noise") }?;
            let want = set.diffusion_shape()?;
            if latent.shape[1..] != want {
                return Err(Error::invalid(format!(
                    "params->noise has shape {:?}; this set's diffusion samples are [n, {}, {}, {}]",
                    latent.shape, want[0], want[1], want[2]
                )));
            }
            Some(Arc::from(latent.data.as_slice()))
        };
        // Registered once checked, for the rest of the call (also the conversion of the result).
        let registration = if register { Some(generations.register()?) } else { None };
        Ok(Call { set, host, sampler, prompt, negative, channels, noise, registration })
    }

    /// Reads `count` host images of the set's size into one model-space tensor [count, C, H, W].
    ///
    /// # Safety
    /// `images` is NULL or `count` valid host images (the export's caller promises).
    pub(crate) unsafe fn model_images(&self, images: *const MirageImage, count: usize) -> Result<Vec<f32>> {
        let spec = &self.set.manifest().image;
        // SAFETY: by the caller's promise.
        let host = unsafe { read_images(images, count, "images", spec) }?;
        to_model(&host, spec).map_err(|e| e.prefixed("images: "))
    }

    /// Reads `count` GRAY8 masks of the set's size as values in [0, 1], one per pixel [count, H, W].
    ///
    /// # Safety
    /// As [`Call::model_images`].
    pub(crate) unsafe fn masks(&self, masks: *const MirageImage, count: usize) -> Result<Vec<f32>> {
        // SAFETY: by the caller's promise.
        for (k, m) in unsafe { slice(masks, count, "masks") }?.iter().enumerate() {
            if m.format != MIRAGE_PIXEL_GRAY8 {
                return Err(Error::invalid(format!(
                    "masks[{k}].format is {}; masks are MIRAGE_PIXEL_GRAY8 (255 = invent, 0 = keep)",
                    m.format
                )));
            }
        }
        // SAFETY: by the caller's promise.
        let host = unsafe { read_images(masks, count, "masks", &self.set.manifest().image) }?;
        Ok(host.iter().flat_map(|m| m.data.iter().map(|&v| v as f32 / 255.0)).collect())
    }

    /// The pipeline's params of `op`: generate and interpolate start from pure noise and ignore `strength`;
    /// the image operations make one output per input and ignore `count`; interpolation runs `count`
    /// frames per batch.
    fn params(&self, op: &Op) -> Result<DiffusionParams> {
        let c = &self.host;
        let n = match op {
            Op::Generate => c.count as usize,
            Op::Img2img { n, .. } | Op::Denoise { n, .. } | Op::Inpaint { n, .. } => *n,
            Op::Interpolate { frames, .. } => (c.count as usize).clamp(1, (*frames).max(1)),
        };
        let strength = if matches!(op, Op::Generate | Op::Interpolate { .. }) { 1.0 } else { c.strength };
        let p = DiffusionParams {
            steps: c.steps as usize,
            sampler: self.sampler,
            seed: c.seed,
            count: n,
            strength,
            tileable: c.tileable,
            noise: self.noise.clone(),
            step_noise: None,
        };
        p.validate().map_err(|e| e.prefixed("params->"))?;
        Ok(p)
    }

    /// Prepares `op` (encoding its prompts, and its input images for the image operations) as a plan.
    pub(crate) fn plan(&self, op: Op) -> Result<Plan> {
        let set = &*self.set;
        let p = self.params(&op)?;
        let n = p.count;
        let c = &self.host;
        let guidance = if c.guidance == MIRAGE_GUIDANCE_DEFAULT { None } else { Some(c.guidance) };
        let negative: &[&str] = if self.negative.is_empty() { &[] } else { &[self.negative.as_str()] };
        let prompt = [self.prompt.as_str()];
        let text = |n: usize| -> Result<Option<TextGuidance>> {
            match pipeline::request_guidance(set, &prompt, negative, guidance).map_err(|e| e.prefixed("params->"))? {
                Some(g) => TextGuidance::new(set, &prompt, negative, n, Some(g)).map(Some),
                None => Ok(None),
            }
        };
        let noise_error = |e: Error| e.prefixed("params->");
        match op {
            Op::Generate => pipeline::plan_generate(set, &p, text(n)?.as_ref()).map_err(noise_error),
            Op::Img2img { images, n } => {
                pipeline::plan_image_to_image(set, &images, n, &p, text(n)?.as_ref(), true).map_err(noise_error)
            }
            Op::Denoise { images, n } => {
                pipeline::plan_image_to_image(set, &images, n, &p, text(n)?.as_ref(), false).map_err(noise_error)
            }
            Op::Inpaint { images, masks, n } => {
                pipeline::plan_inpaint(set, &images, &masks, n, &p, text(n)?.as_ref()).map_err(noise_error)
            }
            Op::Interpolate { prompts, frames } => {
                // `params->prompt` is not part of a walk: the path is `prompts`.
                let prompts: Vec<&str> = prompts.iter().map(String::as_str).collect();
                let negative = negative.first().copied().unwrap_or("");
                let g = pipeline::resolve_guidance(set, guidance).map_err(|e| e.prefixed("params->"))?;
                pipeline::plan_interpolate(set, &prompts, negative, frames, Some(g), &p).map_err(noise_error)
            }
        }
    }

    /// The prompts of a walk (`mirage_interpolate` and its job): 2 to 1024 UTF-8 strings, on a
    /// text-conditioned set.
    ///
    /// # Safety
    /// `prompts` is NULL or holds `prompt_count` pointers, each NULL or NUL-terminated (the caller's promise).
    pub(crate) unsafe fn walk_prompts(
        &self,
        prompts: *const *const c_char,
        prompt_count: usize,
    ) -> Result<Vec<String>> {
        self.set.require_text()?;
        if !(2..=MAX_BATCH).contains(&prompt_count) {
            return Err(Error::invalid(format!("prompt_count is {prompt_count}: 2..={MAX_BATCH} prompts are needed")));
        }
        // SAFETY: `prompt_count` string pointers (caller's promise).
        let ptrs = unsafe { slice(prompts, prompt_count, "prompts") }?;
        ptrs.iter()
            .enumerate()
            // SAFETY: NUL-terminated when not NULL (caller's promise); NULL is refused by `utf8`.
            .map(|(k, &ptr)| unsafe { utf8(ptr, &format!("prompts[{k}]")) }.map(str::to_string))
            .collect()
    }

    /// The set the call runs on.
    pub(crate) fn set(&self) -> &Arc<ModelSet> {
        &self.set
    }

    /// The pixel format of the results and previews (`params->format`).
    pub(crate) fn format(&self) -> MiragePixelFormat {
        self.host.format
    }

    /// Runs `op` (registered on the context since `Call::new`, so that cancel and free reach it) with the
    /// host's callbacks (and, for tests, one more progress hook), and converts the result for the host.
    fn run(&self, op: Op, mut extra: Option<&mut dyn FnMut(usize, usize) -> bool>) -> Result<*mut MirageImageBatch> {
        let (set, c) = (&*self.set, &self.host);
        let plan = self.plan(op)?;
        let spec = &set.manifest().image;
        let progress = |step: usize, total: usize| {
            // SAFETY: the host's function with its own user_data; it is called on this thread as documented.
            c.progress.is_none_or(|f| unsafe { f(step as u32, total as u32, c.user_data) })
        };
        let mut progress_and_extra =
            |step: usize, total: usize| extra.as_mut().is_none_or(|f| f(step, total)) && progress(step, total);
        // A conversion error inside the preview (a bug) must come out as itself, not as a cancel.
        let mut preview_error = None;
        let mut preview = |step: usize, model: &[f32]| match host_images(model, spec, self.channels) {
            Ok(images) => {
                let views: Vec<MirageImage> = images.iter().map(|img| view(img, c.format)).collect();
                let f = c.preview.expect("preview hook without a preview callback");
                // SAFETY: the host's function; `views` and the pixels they point to live during the call.
                unsafe { f(step as u32, views.as_ptr(), views.len(), c.user_data) }
            }
            Err(e) => {
                preview_error = Some(e);
                false
            }
        };
        let y = {
            let mut hooks = Hooks {
                progress: Some(&mut progress_and_extra),
                preview: if c.preview.is_some() { Some(&mut preview) } else { None },
                cancel: self.registration.as_ref().map(|r| &*r.cancel),
            };
            pipeline::run_plan(set, plan, &mut hooks)
        };
        let y = match (y, preview_error) {
            (Err(Error::Cancelled), Some(e)) => return Err(e),
            (y, _) => y?,
        };
        let images = host_images(&y, spec, self.channels)?;
        Ok(MirageImageBatch::into_raw(images, c.format))
    }
}

/// Model-space images -> host images with `channels` channels.
pub(crate) fn host_images(model: &[f32], spec: &crate::manifest::ImageSpec, channels: u32) -> Result<Vec<Image>> {
    let per = (spec.channels * spec.width * spec.height) as usize;
    from_model(model, model.len() / per.max(1), spec)?.iter().map(|img| img.to_channels(channels)).collect()
}

/// A borrowed view of a library image.
fn view(img: &Image, format: MiragePixelFormat) -> MirageImage {
    MirageImage {
        width: img.width,
        height: img.height,
        stride: img.width * img.channels,
        format,
        // Only ever read through (the preview callback's doc says so).
        data: img.data.as_ptr().cast_mut(),
    }
}
