//! A context: one model set opened from a directory, a pack file or a pack in memory, with its ONNX
//! sessions (shared with other contexts on the same set) and its job workers.

use std::ffi::{c_char, c_void};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, ThreadId};

use super::boundary::{self, copy_str, handle, handle_type, init_params, out, read_params, take, utf8, Handle};
use super::runtime::{provider_of, provider_value, MirageProvider, MIRAGE_PROVIDER_DEFAULT};
use super::status::MirageStatus;
use crate::error::{Error, Result};
use crate::model_set::{ModelKind, ModelSet};

/// A loaded model set: its manifest and ONNX sessions. Created by `mirage_context_new` or
/// `mirage_context_new_from_memory`, freed by `mirage_context_free`. Thread-safe: any number of threads may
/// call functions on one context at once; the sessions sit behind one lock per model, so calls on the same
/// model run one after the other. Contexts opened on the same model set in one process (the same
/// manifest, provider and unchanged files) share one copy of the sessions: the second open costs almost
/// nothing and no memory, and the sessions live until the last such context is freed.
pub struct MirageContext {
    /// [`Handle`]'s tag.
    tag: u64,
    // Behind Arcs so that a running generation holds what it uses by itself, not through this box: then
    // `mirage_context_free` can cancel it, wait for it and free the box while its frame is still unwinding.
    pub(crate) set: Arc<ModelSet>,
    pub(crate) generations: Arc<Generations>,
    /// The threads that run this context's jobs (started by the first submission).
    pub(crate) workers: crate::jobs::Workers,
}

handle_type!(MirageContext, 0x6d69_7261_6765_4358); // "XCegarim"

/// The generations running on a context: each has its own cancel flag, which `mirage_context_cancel` sets
/// (all of them) and `mirage_context_free` sets before it waits for them to return.
#[derive(Default)]
pub(crate) struct Generations {
    state: Mutex<GenerationsState>,
    /// Notified (with `state` locked) whenever a generation ends.
    ended: Condvar,
}

#[derive(Default)]
struct GenerationsState {
    running: Vec<(ThreadId, Arc<AtomicBool>)>,
    /// Set by `mirage_context_free`: a generation that gets here afterwards is refused (cancelled).
    freed: bool,
}

impl Generations {
    fn lock(&self) -> MutexGuard<'_, GenerationsState> {
        // Nothing panics while holding the lock, but a poisoned registry is still a valid one.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a generation about to start, with a fresh (clear) cancel flag: a cancel that came before
    /// this moment is not seen. Fails with `Cancelled` once the context is being freed.
    pub(crate) fn register(self: &Arc<Generations>) -> Result<Registration> {
        let mut state = self.lock();
        if state.freed {
            return Err(Error::Cancelled);
        }
        let cancel = Arc::new(AtomicBool::new(false));
        state.running.push((thread::current().id(), cancel.clone()));
        Ok(Registration { generations: self.clone(), cancel })
    }

    /// Sets the cancel flag of every running generation.
    fn cancel_all(state: &GenerationsState) {
        for (_, flag) in &state.running {
            flag.store(true, Ordering::Relaxed);
        }
    }
}

/// A generation's registration on its context; dropping it (also while unwinding) unregisters it.
pub(crate) struct Registration {
    generations: Arc<Generations>,
    pub(crate) cancel: Arc<AtomicBool>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut state = self.generations.lock();
        state.running.retain(|(_, flag)| !Arc::ptr_eq(flag, &self.cancel));
        // Notified under the lock; `generations` is our own Arc, so it outlives the context box if freed.
        self.generations.ended.notify_all();
    }
}

/// Options of `mirage_context_new`. Fill it with `mirage_context_params_init`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct MirageContextParams {
    /// sizeof(MirageContextParams) as the host was compiled; set by `mirage_context_params_init`.
    pub struct_size: usize,
    /// Provider for this context's sessions; MIRAGE_PROVIDER_DEFAULT = the runtime's.
    pub provider: MirageProvider,
    /// Worker threads that run this context's jobs (`mirage_job_*` in MIRAGE_JOB_WORKERS mode), 1 to
    /// MIRAGE_MAX_WORKERS; default 1: the context's jobs run one at a time, in submission order. With more,
    /// up to that many run at once (their steps interleave on each model's lock; each session already uses
    /// every core, so more workers mostly lower the latency of small jobs behind a big one). The threads
    /// start with the first submitted job.
    pub workers: u32,
    /// Jobs submitted and not yet started that the context holds, 1 to MIRAGE_MAX_QUEUED_JOBS; default 64.
    /// A submission beyond it fails with MIRAGE_ERR_BUSY instead of growing a queue without limit.
    pub max_queued_jobs: u32,
    /// Prepare the tileable sessions (circular padding) now. Otherwise they are made on the first call with
    /// `MirageDiffusionParams::tileable` (a rewrite of the U-Net and the VAE decoder, about as long as
    /// loading them); a context made with `mirage_context_new_from_memory` can only get them this way (or
    /// from another context sharing the same set that prepared them). Default false. A set that cannot make
    /// tileable images (its decoder crops, as the Fashion sets' 8x8 latents to 28x28 images) then fails to open
    /// with MIRAGE_ERR_UNSUPPORTED saying so.
    pub tileable: bool,
    /// The text encoder's precision, MIRAGE_PRECISION_*: FP32 (the default) or INT8, its reduced export (an
    /// int8 embedding table, f16 linear weights, f32 arithmetic: 34 MB instead of 90 MB to read and load, a
    /// start about 1.6x faster; embeddings within cosine 0.999 of FP32's, so images differ slightly from
    /// FP32's for the same seed; packs hold only the FP32 encoder). The U-Net and the VAE run in FP32 either
    /// way. Sets without a text encoder ignore it; a diffusers folder refuses INT8 (MIRAGE_ERR_UNSUPPORTED),
    /// as does an encoder exported before the int8 path (re-export it with `mirage text-encoder export`).
    pub precision: MiragePrecision,
}

/// The precision of a context's text encoder (`MirageContextParams::precision`).
pub type MiragePrecision = u32;

/// 32-bit float weights: the reference.
pub const MIRAGE_PRECISION_FP32: MiragePrecision = 0;
/// The reduced export: int8 embedding table, 16-bit float linear weights, 32-bit float arithmetic.
pub const MIRAGE_PRECISION_INT8: MiragePrecision = 1;

/// Which model of a set (see `mirage_context_provider`).
pub type MirageModelKind = u32;

/// The VAE encoder (image -> latent mean and log-variance).
pub const MIRAGE_MODEL_VAE_ENCODER: MirageModelKind = 1;
/// The VAE decoder (latent -> image).
pub const MIRAGE_MODEL_VAE_DECODER: MirageModelKind = 2;
/// The diffusion U-Net (noise prediction).
pub const MIRAGE_MODEL_UNET: MirageModelKind = 3;
/// The text encoder of a text-conditioned set (prompts -> embeddings).
pub const MIRAGE_MODEL_TEXT_ENCODER: MirageModelKind = 4;

/// Fills `params` with the defaults (the runtime's provider, 1 worker, 64 queued jobs, tileable false,
/// MIRAGE_PRECISION_FP32). Pass `sizeof(MirageContextParams)` as
/// `struct_size`; the struct_size rule is that of `mirage_runtime_init`.
///
/// Errors: MIRAGE_ERR_INVALID_ARGUMENT when `params` is NULL or `struct_size` is too small.
#[no_mangle]
pub unsafe extern "C" fn mirage_context_params_init(
    params: *mut MirageContextParams,
    struct_size: usize,
) -> MirageStatus {
    boundary::run(|| {
        // SAFETY: the caller promises `params` holds `struct_size` writable bytes.
        unsafe { init_params::<MirageContextParams>(params, struct_size, "params") }
    })
}

/// Opens the model set at `model_dir` (UTF-8): a model-set directory, or a pack file made by `mirage pack`
/// (told apart by what the path is). Reads and validates its manifest, checks the sha256 of every model file
/// and creates the ONNX sessions (loading ONNX Runtime with the default options if `mirage_runtime_init` was
/// not called) — or shares those of a context already open on the same set. `params` may be NULL for the
/// defaults.
///
/// On success `*out` receives a new context, owned by the caller and freed with `mirage_context_free`.
/// Nothing is borrowed: `model_dir` and `params` need not outlive the call.
///
/// Errors: MIRAGE_ERR_INVALID_ARGUMENT (NULL `model_dir` or `out`, a path that is not UTF-8, bad params:
/// workers or max_queued_jobs 0 or over their MIRAGE_MAX_*), MIRAGE_ERR_MODEL_NOT_FOUND (no such directory
/// or file, no manifest.json, a listed file missing), MIRAGE_ERR_INVALID_MODEL (bad manifest, other
/// format_version, sha256 mismatch, a file ONNX Runtime rejects, a damaged or foreign pack),
/// MIRAGE_ERR_RUNTIME_LOAD, MIRAGE_ERR_UNSUPPORTED (strict provider unavailable), MIRAGE_ERR_IO.
#[no_mangle]
pub unsafe extern "C" fn mirage_context_new(
    model_dir: *const c_char,
    params: *const MirageContextParams,
    out: *mut *mut MirageContext,
) -> MirageStatus {
    boundary::run(|| {
        // SAFETY: valid pointers when not NULL, by the caller's promise.
        let dir = unsafe { utf8(model_dir, "model_dir") }?;
        // SAFETY: as above.
        let result = unsafe { boundary::out(out, "out") }?;
        // SAFETY: as above.
        let (provider, workers, tileable, precision) = unsafe { context_options(params) }?;
        let set = crate::model_set::open_shared_with(Path::new(dir), provider, precision)?;
        if tileable {
            set.prepare_tileable()?;
        }
        result.write(new_context(set, workers));
        Ok(())
    })
}

/// Opens a model pack (the file `mirage pack` writes) held in memory the host owns: `size` bytes at `data`,
/// e.g. an asset of the host's own archive. The bytes are read during the call only: nothing points into
/// them afterwards, so the host may free or reuse the buffer as soon as this returns. Copies are made only
/// where ONNX Runtime needs its own (the sessions). Otherwise as `mirage_context_new`; set
/// `params->tileable` to be able to generate tileable images (they cannot be prepared later, the buffer
/// being gone).
///
/// Errors: as `mirage_context_new`; a truncated, corrupted or foreign buffer gives
/// MIRAGE_ERR_INVALID_MODEL with what is wrong (bad magic, other format version, header or entry checksum,
/// an entry outside the buffer), NULL `data` MIRAGE_ERR_INVALID_ARGUMENT.
#[no_mangle]
pub unsafe extern "C" fn mirage_context_new_from_memory(
    data: *const c_void,
    size: usize,
    params: *const MirageContextParams,
    out: *mut *mut MirageContext,
) -> MirageStatus {
    boundary::run(|| {
        if data.is_null() {
            return Err(Error::invalid("data is NULL"));
        }
        // SAFETY: `data` holds `size` readable bytes when not NULL, by the caller's promise.
        let bytes = unsafe { boundary::slice(data.cast::<u8>(), size, "data") }?;
        // SAFETY: valid pointers when not NULL, by the caller's promise.
        let result = unsafe { boundary::out(out, "out") }?;
        // SAFETY: as above.
        let (provider, workers, tileable, precision) = unsafe { context_options(params) }?;
        let set = crate::model_set::open_memory_shared_with(bytes, provider, tileable, precision)?;
        result.write(new_context(set, workers));
        Ok(())
    })
}

/// Reads and checks the context params (NULL = the defaults): provider, a worker pool, tileable.
///
/// # Safety
/// `params` is NULL or valid (the export's caller promises).
unsafe fn context_options(
    params: *const MirageContextParams,
) -> Result<(Option<crate::runtime::Provider>, crate::jobs::Workers, bool, crate::text::Precision)> {
    if params.is_null() {
        return Ok((None, crate::jobs::Workers::new(1, 64)?, false, crate::text::Precision::Fp32));
    }
    // SAFETY: by the caller's promise.
    let p = unsafe { read_params(params, "params") }?;
    let provider = provider_of(p.provider, "params->provider")?;
    let workers = crate::jobs::Workers::new(p.workers as usize, p.max_queued_jobs as usize)
        .map_err(|e| e.prefixed("params->"))?;
    let precision = match p.precision {
        MIRAGE_PRECISION_FP32 => crate::text::Precision::Fp32,
        MIRAGE_PRECISION_INT8 => crate::text::Precision::Int8,
        other => {
            return Err(Error::invalid(format!(
                "params->precision is {other}: MIRAGE_PRECISION_FP32 (0) or MIRAGE_PRECISION_INT8 (1)"
            )))
        }
    };
    Ok((provider, workers, p.tileable, precision))
}

fn new_context(set: Arc<ModelSet>, workers: crate::jobs::Workers) -> *mut MirageContext {
    Box::into_raw(Box::new(MirageContext { tag: MirageContext::LIVE, set, generations: Arc::default(), workers }))
}

/// Frees a context and its sessions (those shared with another context live on with it). NULL does
/// nothing. The latents and image batches made with it stay valid (they do not borrow it). Its jobs in
/// MIRAGE_JOB_WORKERS mode are cancelled and its worker threads stopped (each within one step); the job
/// handles stay valid (state MIRAGE_JOB_CANCELLED unless they had ended) until `mirage_job_free`. Jobs in
/// MIRAGE_JOB_MANUAL mode keep the model set alive and still run.
///
/// Generations (`mirage_generate`, `mirage_img2img`, `mirage_denoise`, `mirage_inpaint`, `mirage_interpolate`) may
/// be running on it on other threads: they are cancelled, and this call waits until they have returned (within one
/// step; they return MIRAGE_ERR_CANCELLED), so that no callback of this context runs after it returns. Called from
/// inside a callback of a generation on this context, it does not wait for that generation (it would wait for
/// itself): that one returns MIRAGE_ERR_CANCELLED after the callback (or MIRAGE_OK if it was the last step). Every
/// other call (the VAE functions, getters) must have returned, and no call may start with a context once its free
/// has begun: as for any freed handle, that is undefined behaviour.
#[no_mangle]
pub unsafe extern "C" fn mirage_context_free(ctx: *mut MirageContext) {
    boundary::run_or((), || {
        // SAFETY: made by mirage_context_new and, by the caller's promise, freed once (a second free is
        // usually caught by the tag and ignored).
        if let Some(ctx) = unsafe { take(ctx, "ctx") } {
            let me = thread::current().id();
            let mut state = ctx.generations.lock();
            state.freed = true;
            Generations::cancel_all(&state);
            while state.running.iter().any(|(t, _)| *t != me) {
                state = ctx.generations.ended.wait(state).unwrap_or_else(|p| p.into_inner());
            }
            drop(state);
            drop(ctx);
        }
    })
}

/// Cancels every generation running on `ctx` (`mirage_generate`, `mirage_img2img`, `mirage_denoise`,
/// `mirage_inpaint`, `mirage_interpolate`, on any thread): each returns MIRAGE_ERR_CANCELLED before its next step,
/// so within one step. Also cancels every job of the context's workers, queued or running (not
/// MIRAGE_JOB_MANUAL jobs: cancel those with `mirage_job_cancel`). Safe to call from any thread, including from inside a callback. Locks the context's short
/// list of running generations.
///
/// A cancel reaches only the generations running when it is made: one that starts afterwards runs normally
/// (each generation starts with its own clear flag). So a cancel on an idle context does nothing and returns
/// MIRAGE_OK, and a cancel racing with the start of a generation may be dropped; to stop one generation
/// among several, return false from its progress callback instead.
///
/// Errors: MIRAGE_ERR_INVALID_ARGUMENT (NULL `ctx`).
#[no_mangle]
pub unsafe extern "C" fn mirage_context_cancel(ctx: *const MirageContext) -> MirageStatus {
    boundary::run(|| {
        // SAFETY: a live context when not NULL, by the caller's promise.
        let ctx = unsafe { handle(ctx, "ctx") }?;
        Generations::cancel_all(&ctx.generations.lock());
        ctx.workers.cancel_all();
        Ok(())
    })
}

/// The size of the images the set works on: `*width`, `*height` in pixels and `*channels` (1 grey, 3 RGB,
/// 4 RGBA). Images passed to `mirage_vae_encode` must have exactly this size and channel count.
///
/// Errors: MIRAGE_ERR_INVALID_ARGUMENT (a NULL argument).
#[no_mangle]
pub unsafe extern "C" fn mirage_context_image_size(
    ctx: *const MirageContext,
    width: *mut u32,
    height: *mut u32,
    channels: *mut u32,
) -> MirageStatus {
    boundary::run(|| {
        // SAFETY: valid pointers when not NULL, by the caller's promise.
        let (ctx, w, h, c) =
            unsafe { (handle(ctx, "ctx")?, out(width, "width")?, out(height, "height")?, out(channels, "channels")?) };
        let spec = &ctx.set.manifest().image;
        w.write(spec.width);
        h.write(spec.height);
        c.write(spec.channels);
        Ok(())
    })
}

/// The shape of one latent of the set, `shape[3]` = {channels, height, width}. A `MirageLatent` holding
/// `n` of them has the shape {n, channels, height, width}.
///
/// Errors: MIRAGE_ERR_INVALID_ARGUMENT (a NULL argument), MIRAGE_ERR_UNSUPPORTED (the set has no VAE).
/// cbindgen:ptrs-as-arrays=[[shape;3]]
#[no_mangle]
pub unsafe extern "C" fn mirage_context_latent_shape(ctx: *const MirageContext, shape: *mut u32) -> MirageStatus {
    boundary::run(|| {
        // SAFETY: `shape` holds 3 writable u32 when not NULL, by the caller's promise.
        let (ctx, shape) = unsafe { (handle(ctx, "ctx")?, out(shape.cast::<[u32; 3]>(), "shape")?) };
        shape.write(ctx.set.latent_shape()?);
        Ok(())
    })
}

/// The execution provider a model of the set really runs on (MIRAGE_PROVIDER_TENSORRT, _CUDA or _CPU):
/// it can differ from the one asked for, because an unavailable provider falls back to CPU unless strict.
///
/// Errors: MIRAGE_ERR_INVALID_ARGUMENT (a NULL argument, an unknown `kind`), MIRAGE_ERR_UNSUPPORTED (the set
/// has no model of that kind).
#[no_mangle]
pub unsafe extern "C" fn mirage_context_provider(
    ctx: *const MirageContext,
    kind: MirageModelKind,
    provider: *mut MirageProvider,
) -> MirageStatus {
    boundary::run(|| {
        // SAFETY: valid pointers when not NULL, by the caller's promise.
        let (ctx, result) = unsafe { (handle(ctx, "ctx")?, out(provider, "provider")?) };
        let kind = match kind {
            MIRAGE_MODEL_VAE_ENCODER => ModelKind::VaeEncoder,
            MIRAGE_MODEL_VAE_DECODER => ModelKind::VaeDecoder,
            MIRAGE_MODEL_UNET => ModelKind::UNet,
            MIRAGE_MODEL_TEXT_ENCODER => ModelKind::TextEncoder,
            other => return Err(Error::invalid(format!("kind is {other}, not a MIRAGE_MODEL_* value"))),
        };
        let p = ctx
            .set
            .provider(kind)
            .ok_or_else(|| Error::Unsupported(format!("the model set has no {}", kind.name())))?;
        result.write(provider_value(p));
        Ok(())
    })
}

/// Copies the set's name (manifest.json's "name", UTF-8) into `buf`, snprintf-style as
/// `mirage_last_error`: at most `len - 1` bytes and a NUL; `*needed` (may be NULL) receives the full length
/// without the NUL. `buf` may be NULL when `len` is 0.
///
/// Errors: MIRAGE_ERR_INVALID_ARGUMENT (NULL `ctx`, NULL `buf` with `len > 0`).
#[no_mangle]
pub unsafe extern "C" fn mirage_context_name(
    ctx: *const MirageContext,
    buf: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> MirageStatus {
    boundary::run(|| {
        // SAFETY: valid pointers when not NULL, by the caller's promise.
        let ctx = unsafe { handle(ctx, "ctx") }?;
        // SAFETY: forwarded from this function's caller.
        unsafe { copy_out(&ctx.set.manifest().name, buf, len, needed) }
    })
}

/// The snprintf-style string out-parameter shared by string getters.
///
/// # Safety
/// `buf` must hold `len` writable bytes when not NULL; `needed` must be writable when not NULL.
unsafe fn copy_out(s: &str, buf: *mut c_char, len: usize, needed: *mut usize) -> Result<()> {
    if buf.is_null() && len > 0 {
        return Err(Error::invalid("buf is NULL but len is not 0"));
    }
    // SAFETY: `needed` is a writable size_t when not NULL (caller's promise).
    let needed = if needed.is_null() { None } else { Some(unsafe { out(needed, "needed") }?) };
    // SAFETY: `buf` holds `len` writable bytes (caller's promise).
    let n = unsafe { copy_str(s, buf, len) };
    if let Some(o) = needed {
        o.write(n);
    }
    Ok(())
}

impl boundary::Params for MirageContextParams {
    /// Version 1 (0.1.0 until the job API): `struct_size` and `provider`; version 2 (until the int8 text
    /// encoder): up to `tileable`.
    const OLDER: &'static [(usize, usize)] = &[
        boundary::older_version!(MirageContextParams, provider, MirageProvider),
        boundary::older_version!(MirageContextParams, tileable, bool),
    ];
    fn defaults(struct_size: usize) -> Self {
        MirageContextParams {
            struct_size,
            provider: MIRAGE_PROVIDER_DEFAULT,
            workers: 1,
            max_queued_jobs: 64,
            tileable: false,
            precision: MIRAGE_PRECISION_FP32,
        }
    }
}
