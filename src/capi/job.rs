//! Jobs: every operation submitted without blocking, run by the context's worker threads or stepped by the
//! host's own loop on a time budget; polled, waited for, previewed, cancelled, and taken once — into
//! library memory or straight into the host's buffers.

use std::ffi::c_char;
use std::sync::Arc;
use std::time::Duration;

use super::boundary::out as out_ptr;
use super::boundary::{self, handle, handle_type, read_params, slice, take, Handle};
use super::context::MirageContext;
use super::diffusion::{host_images, Call, MirageDiffusionParams, Op};
use super::image::{
    channels_of, read_images, write_targets, MirageImage, MirageImageBatch, MiragePixelFormat, MirageTarget,
};
use super::latent::MirageLatent;
use super::status::MirageStatus;
use crate::error::{Error, Result};
use crate::image::{from_model, to_model};
use crate::jobs::{Job, JobState, Output};
use crate::model_set::ModelSet;

/// A submitted operation: made by the `mirage_job_*` submit functions, freed by `mirage_job_free`. Any
/// thread may poll, wait for, preview or cancel a job while another runs it; it holds its model set (a
/// freed context does not invalidate it). Freeing the job while any other call on it is under way is a
/// use after free, as for every handle (the usual freed-handle check catches most such calls with
/// MIRAGE_ERR_INVALID_ARGUMENT, but cannot promise it).
pub struct MirageJob {
    /// [`Handle`]'s tag.
    tag: u64,
    job: Job,
    set: Arc<ModelSet>,
    /// Stepped by the host (`mirage_job_advance`), not by workers.
    manual: bool,
    /// The pixel format of its images and previews.
    format: MiragePixelFormat,
}

handle_type!(MirageJob, 0x6d69_7261_6765_4a42); // "BJegarim"

/// Who runs a job.
pub type MirageJobMode = u32;
/// The context's worker threads (`MirageContextParams::workers`) run it, in submission order. The default.
pub const MIRAGE_JOB_WORKERS: MirageJobMode = 0;
/// Nobody until the host calls `mirage_job_advance`: a game loop spends a time budget on it each frame on
/// its own thread, with no worker thread at all.
pub const MIRAGE_JOB_MANUAL: MirageJobMode = 1;

/// Where a job is.
pub type MirageJobState = u32;
/// Submitted; no step has run yet.
pub const MIRAGE_JOB_QUEUED: MirageJobState = 1;
/// At least one step has run, not all.
pub const MIRAGE_JOB_RUNNING: MirageJobState = 2;
/// Every step has run: the result waits to be taken.
pub const MIRAGE_JOB_DONE: MirageJobState = 3;
/// A step failed: `mirage_job_take_*` returns the error (status and message).
pub const MIRAGE_JOB_FAILED: MirageJobState = 4;
/// Cancelled before it finished: `mirage_job_take_*` returns MIRAGE_ERR_CANCELLED.
pub const MIRAGE_JOB_CANCELLED: MirageJobState = 5;

/// `mirage_job_wait`'s timeout that never expires.
pub const MIRAGE_WAIT_FOREVER: u32 = u32::MAX;

/// Options of a job. Fill it with `mirage_job_params_init`; NULL where a function takes it = the defaults.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct MirageJobParams {
    /// sizeof(MirageJobParams) as the host was compiled; set by `mirage_job_params_init`.
    pub struct_size: usize,
    /// MIRAGE_JOB_WORKERS (default) or MIRAGE_JOB_MANUAL.
    pub mode: MirageJobMode,
    /// Keep the latest estimate of the images after each step for `mirage_job_preview` (one VAE decode per
    /// step). Default false.
    pub previews: bool,
}

impl boundary::Params for MirageJobParams {
    const OLDER: &'static [(usize, usize)] = &[];
    fn defaults(struct_size: usize) -> Self {
        MirageJobParams { struct_size, mode: MIRAGE_JOB_WORKERS, previews: false }
    }
}

/// Fills `params` with the defaults: MIRAGE_JOB_WORKERS, no previews. Pass `sizeof(MirageJobParams)` as
/// `struct_size`; the struct_size rule is that of `mirage_runtime_init`.
///
/// Errors: MIRAGE_ERR_INVALID_ARGUMENT when `params` is NULL or `struct_size` is too small.
#[no_mangle]
pub unsafe extern "C" fn mirage_job_params_init(params: *mut MirageJobParams, struct_size: usize) -> MirageStatus {
    boundary::run(|| {
        // SAFETY: the caller promises `params` holds `struct_size` writable bytes.
        unsafe { boundary::init_params::<MirageJobParams>(params, struct_size, "params") }
    })
}

/// The job params, read (NULL = defaults): (manual, previews).
///
/// # Safety
/// `p` is NULL or valid (the export's caller promises).
unsafe fn job_options(p: *const MirageJobParams) -> Result<(bool, bool)> {
    if p.is_null() {
        return Ok((false, false));
    }
    // SAFETY: by the caller's promise.
    let p = unsafe { read_params(p, "job_params") }?;
    match p.mode {
        MIRAGE_JOB_WORKERS => Ok((false, p.previews)),
        MIRAGE_JOB_MANUAL => Ok((true, p.previews)),
        other => Err(Error::invalid(format!("job_params->mode is {other}, not a MIRAGE_JOB_* value"))),
    }
}

/// Hands `job` to the workers (unless manual) and to C.
fn submit(ctx: &MirageContext, job: Job, manual: bool, format: MiragePixelFormat) -> Result<*mut MirageJob> {
    if !manual {
        ctx.workers.submit(job.clone())?;
    }
    let set = job.set().clone();
    Ok(Box::into_raw(Box::new(MirageJob { tag: MirageJob::LIVE, job, set, manual, format })))
}

/// A diffusion job: `op` made by `make` from the checked call.
///
/// # Safety
/// Pointers valid when not NULL (the export's caller promises).
unsafe fn diffusion_job(
    ctx: *const MirageContext,
    params: *const MirageDiffusionParams,
    job_params: *const MirageJobParams,
    out_job: *mut *mut MirageJob,
    with_prompt: bool,
    make: impl FnOnce(&Call) -> Result<Op>,
) -> MirageStatus {
    boundary::run(|| {
        // SAFETY: valid pointers when not NULL, by the caller's promise.
        let (context, result, (manual, previews)) =
            unsafe { (handle(ctx, "ctx")?, out_ptr(out_job, "out")?, job_options(job_params)?) };
        // SAFETY: as above.
        let call = unsafe { Call::for_job(ctx, params, with_prompt) }?;
        let op = make(&call)?;
        let plan = call.plan(op)?;
        let job = Job::new(call.set().clone(), plan, previews);
        result.write(submit(context, job, manual, call.format())?);
        Ok(())
    })
}

/// Submits `mirage_generate` as a job: checks the arguments, encodes the prompts (milliseconds) and returns
/// at once; `*out` receives a new job, owned by the caller and freed with `mirage_job_free`. `params` as
/// `mirage_generate` (read during the call, not kept), except that `progress` and `preview` must be NULL:
/// poll the job and read its previews instead. `job_params` may be NULL (workers, no previews).
///
/// Errors: as `mirage_generate` for the arguments, plus MIRAGE_ERR_BUSY (the context's queue is full:
/// nothing was submitted) and MIRAGE_ERR_INVALID_ARGUMENT for callbacks or bad job params. Failures while
/// it runs are the job's: `mirage_job_take_images` returns them.
#[no_mangle]
pub unsafe extern "C" fn mirage_job_generate(
    ctx: *const MirageContext,
    params: *const MirageDiffusionParams,
    job_params: *const MirageJobParams,
    out: *mut *mut MirageJob,
) -> MirageStatus {
    // SAFETY: forwarded with the caller's promises.
    unsafe { diffusion_job(ctx, params, job_params, out, true, |_| Ok(Op::Generate)) }
}

/// Submits `mirage_img2img` as a job (the images are read and encoded during the call, not kept).
/// Otherwise as `mirage_job_generate`.
#[no_mangle]
pub unsafe extern "C" fn mirage_job_img2img(
    ctx: *const MirageContext,
    images: *const MirageImage,
    count: usize,
    params: *const MirageDiffusionParams,
    job_params: *const MirageJobParams,
    out: *mut *mut MirageJob,
) -> MirageStatus {
    // SAFETY: forwarded with the caller's promises; `count` host images.
    unsafe {
        diffusion_job(ctx, params, job_params, out, true, |call| {
            Ok(Op::Img2img { images: call.model_images(images, count)?, n: count })
        })
    }
}

/// Submits `mirage_denoise` as a job. Otherwise as `mirage_job_img2img`.
#[no_mangle]
pub unsafe extern "C" fn mirage_job_denoise(
    ctx: *const MirageContext,
    images: *const MirageImage,
    count: usize,
    params: *const MirageDiffusionParams,
    job_params: *const MirageJobParams,
    out: *mut *mut MirageJob,
) -> MirageStatus {
    // SAFETY: forwarded with the caller's promises; `count` host images.
    unsafe {
        diffusion_job(ctx, params, job_params, out, true, |call| {
            Ok(Op::Denoise { images: call.model_images(images, count)?, n: count })
        })
    }
}

/// Submits `mirage_inpaint` as a job (images and masks read during the call, not kept). Otherwise as
/// `mirage_job_generate`.
#[no_mangle]
pub unsafe extern "C" fn mirage_job_inpaint(
    ctx: *const MirageContext,
    images: *const MirageImage,
    masks: *const MirageImage,
    count: usize,
    params: *const MirageDiffusionParams,
    job_params: *const MirageJobParams,
    out: *mut *mut MirageJob,
) -> MirageStatus {
    // SAFETY: forwarded with the caller's promises; `count` host images and masks.
    unsafe {
        diffusion_job(ctx, params, job_params, out, true, |call| {
            Ok(Op::Inpaint { images: call.model_images(images, count)?, masks: call.masks(masks, count)?, n: count })
        })
    }
}

/// Submits `mirage_interpolate` as a job (the prompts are read and encoded during the call, not kept).
/// Otherwise as `mirage_job_generate`.
#[no_mangle]
pub unsafe extern "C" fn mirage_job_interpolate(
    ctx: *const MirageContext,
    prompts: *const *const c_char,
    prompt_count: usize,
    frames: u32,
    params: *const MirageDiffusionParams,
    job_params: *const MirageJobParams,
    out: *mut *mut MirageJob,
) -> MirageStatus {
    // SAFETY: forwarded with the caller's promises; `prompt_count` string pointers.
    unsafe {
        diffusion_job(ctx, params, job_params, out, false, |call| {
            let prompts = call.walk_prompts(prompts, prompt_count)?;
            Ok(Op::Interpolate { prompts, frames: frames as usize })
        })
    }
}

/// Submits `mirage_vae_encode` as a job of one step: the images are read during the call (not kept); take
/// the latents with `mirage_job_take_latents`. `job_params` as in `mirage_job_generate` (previews do not
/// apply).
///
/// Errors: as `mirage_vae_encode` for the arguments, plus MIRAGE_ERR_BUSY.
#[no_mangle]
pub unsafe extern "C" fn mirage_job_encode(
    ctx: *const MirageContext,
    images: *const MirageImage,
    count: usize,
    job_params: *const MirageJobParams,
    out: *mut *mut MirageJob,
) -> MirageStatus {
    boundary::run(|| {
        // SAFETY: valid pointers when not NULL, by the caller's promise.
        let (ctx, result, (manual, _)) =
            unsafe { (handle(ctx, "ctx")?, out_ptr(out, "out")?, job_options(job_params)?) };
        let spec = ctx.set.manifest().image.clone();
        ctx.set.latent_shape()?;
        // SAFETY: `count` host images (caller's promise).
        let host = unsafe { read_images(images, count, "images", &spec) }?;
        let x = to_model(&host, &spec)?;
        let job = Job::once(
            ctx.set.clone(),
            Box::new(move |set: &ModelSet| {
                let (mean, logvar) = set.encode(&x, count)?;
                Ok(Output::Latents { mean, logvar, n: count })
            }),
        );
        result.write(submit(ctx, job, manual, super::image::MIRAGE_PIXEL_RGBA8)?);
        Ok(())
    })
}

/// Submits `mirage_vae_decode` as a job of one step: `latents` is copied during the call (not kept);
/// take the images (in `format`) with `mirage_job_take_images` or `mirage_job_take_into`.
///
/// Errors: as `mirage_vae_decode` for the arguments, plus MIRAGE_ERR_BUSY.
#[no_mangle]
pub unsafe extern "C" fn mirage_job_decode(
    ctx: *const MirageContext,
    latents: *const MirageLatent,
    format: MiragePixelFormat,
    job_params: *const MirageJobParams,
    out: *mut *mut MirageJob,
) -> MirageStatus {
    boundary::run(|| {
        // SAFETY: valid pointers when not NULL, by the caller's promise.
        let (ctx, latents, result, (manual, _)) = unsafe {
            (handle(ctx, "ctx")?, handle(latents, "latents")?, out_ptr(out, "out")?, job_options(job_params)?)
        };
        channels_of(format, "format")?;
        let [c, h, w] = ctx.set.latent_shape()?;
        if latents.shape[1..] != [c, h, w] {
            return Err(Error::invalid(format!(
                "latents has shape {:?}; this model set's latents are [n, {c}, {h}, {w}]",
                latents.shape
            )));
        }
        let (z, n) = (latents.data.clone(), latents.shape[0] as usize);
        crate::limits::check_finite(&z, "latents")?;
        let job = Job::once(ctx.set.clone(), Box::new(move |set: &ModelSet| set.decode(&z, n).map(Output::Images)));
        result.write(submit(ctx, job, manual, format)?);
        Ok(())
    })
}

fn state_value(s: JobState) -> MirageJobState {
    match s {
        JobState::Queued => MIRAGE_JOB_QUEUED,
        JobState::Running => MIRAGE_JOB_RUNNING,
        JobState::Done => MIRAGE_JOB_DONE,
        JobState::Failed => MIRAGE_JOB_FAILED,
        JobState::Cancelled => MIRAGE_JOB_CANCELLED,
    }
}

/// Where `job` is, without waiting: `*state` (MIRAGE_JOB_*), and in `*step` and `*total` (each may be
/// NULL) the sampler steps done and in all (a VAE job has one step). Takes a short lock, never held across
/// a step, so it is cheap enough to call every frame.
///
/// Errors: MIRAGE_ERR_INVALID_ARGUMENT (NULL `job` or `state`, a freed job where the check catches it).
#[no_mangle]
pub unsafe extern "C" fn mirage_job_poll(
    job: *const MirageJob,
    state: *mut MirageJobState,
    step: *mut u32,
    total: *mut u32,
) -> MirageStatus {
    boundary::run(|| {
        // SAFETY: valid pointers when not NULL, by the caller's promise.
        let (job, state) = unsafe { (handle(job, "job")?, out_ptr(state, "state")?) };
        let s = job.job.status();
        state.write(state_value(s.state));
        // SAFETY: as above; NULL means "not wanted".
        unsafe {
            if !step.is_null() {
                out_ptr(step, "step")?.write(s.steps_done as u32);
            }
            if !total.is_null() {
                out_ptr(total, "total")?.write(s.steps as u32);
            }
        }
        Ok(())
    })
}

/// Waits until `job` has ended (done, failed or cancelled) or `timeout_ms` milliseconds have passed
/// (MIRAGE_WAIT_FOREVER: no limit; 0: just look); `*state` (may be NULL) receives the state then. A
/// MIRAGE_JOB_MANUAL job only moves while some thread advances it. Returns MIRAGE_OK either way: compare
/// the state.
///
/// Errors: MIRAGE_ERR_INVALID_ARGUMENT (NULL `job`).
#[no_mangle]
pub unsafe extern "C" fn mirage_job_wait(
    job: *const MirageJob,
    timeout_ms: u32,
    state: *mut MirageJobState,
) -> MirageStatus {
    boundary::run(|| {
        // SAFETY: a live job when not NULL, by the caller's promise.
        let job = unsafe { handle(job, "job") }?;
        let timeout =
            if timeout_ms == MIRAGE_WAIT_FOREVER { None } else { Some(Duration::from_millis(timeout_ms.into())) };
        job.job.wait(timeout);
        if !state.is_null() {
            // SAFETY: writable when not NULL, by the caller's promise.
            unsafe { out_ptr(state, "state") }?.write(state_value(job.job.status().state));
        }
        Ok(())
    })
}

/// Cancels `job`: a queued job ends at once, a running one before its next step or within the step under
/// way (so within one step); its take then returns MIRAGE_ERR_CANCELLED. Cancelling an ended job does
/// nothing. Any thread; never waits.
///
/// Errors: MIRAGE_ERR_INVALID_ARGUMENT (NULL `job`).
#[no_mangle]
pub unsafe extern "C" fn mirage_job_cancel(job: *const MirageJob) -> MirageStatus {
    boundary::run(|| {
        // SAFETY: a live job when not NULL, by the caller's promise.
        unsafe { handle(job, "job") }?.job.cancel();
        Ok(())
    })
}

/// Runs whole steps of a MIRAGE_JOB_MANUAL job on the calling thread: at most `max_steps`, and no new step
/// once `budget_us` microseconds (0 = no time limit) would be exceeded, judged by the previous step's
/// duration; at least one step runs when `max_steps > 0` and the job has not ended, so that every call
/// makes progress. `*steps_run` (may be NULL) receives the steps run. Stepping a job to its end gives
/// exactly the images of the blocking call with the same parameters. A failing step or a cancel ends the
/// job (its take reports it), not this call.
///
/// Errors: MIRAGE_ERR_INVALID_ARGUMENT (NULL `job`, a job of the workers, another thread advancing this
/// job at the same moment).
#[no_mangle]
pub unsafe extern "C" fn mirage_job_advance(
    job: *const MirageJob,
    max_steps: u32,
    budget_us: u64,
    steps_run: *mut u32,
) -> MirageStatus {
    boundary::run(|| {
        // SAFETY: a live job when not NULL, by the caller's promise.
        let job = unsafe { handle(job, "job") }?;
        if !job.manual {
            return Err(Error::invalid(
                "the job runs on the context's workers: only a MIRAGE_JOB_MANUAL job is advanced by the host",
            ));
        }
        let budget = if budget_us == 0 { None } else { Some(Duration::from_micros(budget_us)) };
        let ran = job.job.advance(max_steps as usize, budget)?;
        if !steps_run.is_null() {
            // SAFETY: writable when not NULL, by the caller's promise.
            unsafe { out_ptr(steps_run, "steps_run") }?.write(ran as u32);
        }
        Ok(())
    })
}

/// The latest preview of a job made with `previews`: on success `*out` receives a new batch (the estimate
/// of the finished images after step `*step`, in `format`, owned by the caller), or NULL with `*step` 0
/// when no step has run yet. Any thread, no callback: a game polls it on its render thread.
///
/// Errors: MIRAGE_ERR_INVALID_ARGUMENT (a NULL argument, an unknown format, a job made without previews).
#[no_mangle]
pub unsafe extern "C" fn mirage_job_preview(
    job: *const MirageJob,
    format: MiragePixelFormat,
    out: *mut *mut MirageImageBatch,
    step: *mut u32,
) -> MirageStatus {
    boundary::run(|| {
        // SAFETY: valid pointers when not NULL, by the caller's promise.
        let (job, result, step) = unsafe { (handle(job, "job")?, out_ptr(out, "out")?, out_ptr(step, "step")?) };
        let channels = channels_of(format, "format")?;
        if !job.job.has_previews() {
            return Err(Error::invalid("the job was submitted without previews (MirageJobParams::previews)"));
        }
        match job.job.preview() {
            None => {
                result.write(std::ptr::null_mut());
                step.write(0);
            }
            Some(p) => {
                let images = host_images(&p.images, &job.set.manifest().image, channels)?;
                result.write(MirageImageBatch::into_raw(images, format));
                step.write(p.step as u32);
            }
        }
        Ok(())
    })
}

/// The job's output, exactly once, or the error it ended with (status and message, as the blocking call
/// would have returned them; MIRAGE_ERR_CANCELLED for a cancelled job). Before it has ended, and after a
/// successful take, MIRAGE_ERR_INVALID_ARGUMENT saying so.
fn take_output(job: &MirageJob) -> Result<Output> {
    job.job.take()
}

/// Takes the images of an ended job (generate, img2img, denoise, inpaint, interpolate, decode): `*out`
/// receives a new batch in the job's format (`params->format`, or the decode's), owned by the caller.
/// Exactly once: a second take is refused. On a failed or cancelled job it returns that error, and the
/// error counts as the take.
///
/// Errors: MIRAGE_ERR_INVALID_ARGUMENT (a NULL argument, a job that has not ended, a result already
/// taken, an encode job), or the job's own error.
#[no_mangle]
pub unsafe extern "C" fn mirage_job_take_images(
    job: *const MirageJob,
    out: *mut *mut MirageImageBatch,
) -> MirageStatus {
    boundary::run(|| {
        // SAFETY: valid pointers when not NULL, by the caller's promise.
        let (job, result) = unsafe { (handle(job, "job")?, out_ptr(out, "out")?) };
        let channels = channels_of(job.format, "format")?;
        let output = take_output(job)?;
        let images = match output {
            Output::Images(v) => v,
            other => {
                job.job.put_back(other);
                return Err(Error::invalid("the job made latents: take them with mirage_job_take_latents"));
            }
        };
        let host = match host_images(&images, &job.set.manifest().image, channels) {
            Ok(h) => h,
            Err(e) => {
                job.job.put_back(Output::Images(images));
                return Err(e);
            }
        };
        result.write(MirageImageBatch::into_raw(host, job.format));
        Ok(())
    })
}

/// Takes the latents of an ended `mirage_job_encode`: `*mean` and `*logvar` receive new latents, owned by
/// the caller; `logvar` may be NULL (not wanted), `mean` may not. Exactly once, as `mirage_job_take_images`.
///
/// Errors: as `mirage_job_take_images` (a job that made images is refused).
#[no_mangle]
pub unsafe extern "C" fn mirage_job_take_latents(
    job: *const MirageJob,
    mean: *mut *mut MirageLatent,
    logvar: *mut *mut MirageLatent,
) -> MirageStatus {
    boundary::run(|| {
        // SAFETY: valid pointers when not NULL, by the caller's promise.
        let (job, mean_out) = unsafe { (handle(job, "job")?, out_ptr(mean, "mean")?) };
        // SAFETY: as above; NULL = not wanted.
        let logvar_out = if logvar.is_null() { None } else { Some(unsafe { out_ptr(logvar, "logvar") }?) };
        if mean == logvar {
            return Err(Error::invalid("mean and logvar point to the same place; one result would be lost"));
        }
        let (m, lv, n) = match take_output(job)? {
            Output::Latents { mean, logvar, n } => (mean, logvar, n),
            other => {
                job.job.put_back(other);
                return Err(Error::invalid("the job made images: take them with mirage_job_take_images"));
            }
        };
        let [c, h, w] = job.set.latent_shape()?;
        let shape = [n as u32, c, h, w];
        let (m, lv) = (MirageLatent::new(shape, m)?, MirageLatent::new(shape, lv)?);
        mean_out.write(m.into_raw());
        if let Some(o) = logvar_out {
            o.write(lv.into_raw());
        }
        Ok(())
    })
}

/// Takes the images of an ended job straight into host memory: `targets` is an array of `count` targets,
/// one per image (`count` must equal the job's image count), each with its own size, format, stride, row
/// order, alpha mode and filter (see `MirageTarget`); the same 8-bit sRGB pixels as `mirage_job_take_images`
/// gives, converted (MIRAGE_PIXEL_RGBA32F: to linear light). Every target is checked before
/// the first byte is written; when one is refused nothing is written and the result stays in the job
/// for another take.
///
/// Errors: as `mirage_job_take_images`, plus MIRAGE_ERR_INVALID_ARGUMENT for a wrong `count` or a bad target.
#[no_mangle]
pub unsafe extern "C" fn mirage_job_take_into(
    job: *const MirageJob,
    targets: *const MirageTarget,
    count: usize,
) -> MirageStatus {
    boundary::run(|| {
        // SAFETY: valid pointers when not NULL, by the caller's promise.
        let (job, targets) = unsafe { (handle(job, "job")?, slice(targets, count, "targets")?) };
        if targets.is_empty() {
            return Err(Error::invalid("count is 0: one target per image is needed"));
        }
        let output = take_output(job)?;
        let Output::Images(images) = &output else {
            job.job.put_back(output);
            return Err(Error::invalid("the job made latents: take them with mirage_job_take_latents"));
        };
        let spec = &job.set.manifest().image;
        let per = spec.channels as usize * spec.width as usize * spec.height as usize;
        let n = images.len() / per.max(1);
        let written = from_model(images, n, spec)
            // SAFETY: each target's buffer is writable for its `size` bytes (caller's promise).
            .and_then(|host| unsafe { write_targets(&host, targets, "targets") });
        if let Err(e) = written {
            job.job.put_back(output);
            return Err(if n != targets.len() {
                Error::invalid(format!("count is {count}, but the job made {n} images"))
            } else {
                e
            });
        }
        Ok(())
    })
}

/// Frees a job. A job that has not ended is cancelled first; this never waits (a worker running it stops
/// within one step, on its own). NULL does nothing. Every job must be freed, whatever its state.
#[no_mangle]
pub unsafe extern "C" fn mirage_job_free(job: *mut MirageJob) {
    boundary::run_or((), || {
        // SAFETY: made by this library and, by the caller's promise, freed once (a second free is usually
        // caught by the tag and ignored).
        if let Some(job) = unsafe { take(job, "job") } {
            job.job.cancel();
        }
    })
}
