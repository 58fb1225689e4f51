//! NULL in every pointer of every export, one at a time. The list of exports and of their pointer
//! parameters is read from include/mirage.h, so a new function or parameter fails this test until the table
//! below says what a NULL there must do: be refused (MIRAGE_ERR_INVALID_ARGUMENT, a message naming the
//! parameter), or be accepted as the header documents (a free of NULL does nothing,
//! `params` NULL means the defaults, ...). Each row first runs with every pointer valid, so that the NULL is
//! what a refusal answers; pointers inside structs and arrays (image data, prompt lists, optional strings)
//! have rows of their own. The context still works after all of it. Case count printed with `--nocapture`.

use std::collections::BTreeMap;
use std::ffi::{c_char, CStr, CString};
use std::path::Path;
use std::ptr::{null, null_mut};

use mirage::capi::*;

use crate::hostile::last_error;
use crate::util::tiny_text_set;

/// What a call gave back.
#[derive(Debug, PartialEq)]
enum Got {
    Status(MirageStatus),
    /// A function without a status: its size or count result, or 1/0 for a non-NULL/NULL pointer result.
    Value(usize),
    Nothing,
}

/// What a NULL in one parameter must give.
#[derive(Clone, Copy, Debug)]
enum WhenNull {
    /// MIRAGE_ERR_INVALID_ARGUMENT with a message containing `needle` (None: "<name> is NULL").
    Refused(Option<&'static str>),
    /// Accepted as documented, with this result.
    Accepted(fn(&Got) -> bool, &'static str),
}
use WhenNull::*;

const REFUSED: WhenNull = Refused(None);

fn ok(g: &Got) -> bool {
    *g == Got::Status(MIRAGE_OK)
}
fn nothing(g: &Got) -> bool {
    *g == Got::Nothing
}
fn zero(g: &Got) -> bool {
    *g == Got::Value(0)
}
fn positive(g: &Got) -> bool {
    matches!(g, Got::Value(n) if *n > 0)
}

/// What every row works on: a context on the tiny text set, a latent of its shape, an image of its size.
struct Fx {
    dir: CString,
    ctx: *mut MirageContext,
    latent: *mut MirageLatent,
    logvar: *mut MirageLatent,
    width: u32,
    height: u32,
    /// The set's pixel format (its channel count).
    format: MiragePixelFormat,
    pixels: Vec<u8>,
    /// The set as a pack (`Fx::pack`).
    pack: Vec<u8>,
}

impl Fx {
    /// The fixture set as a pack, made once.
    fn pack(&mut self) -> &[u8] {
        if self.pack.is_empty() {
            let dir = Path::new(self.dir.to_str().unwrap());
            self.pack = mirage::model_set::pack_set(dir).expect("packing the fixture set");
        }
        &self.pack
    }

    /// A manual 1-step generation job on the context, stepped to its end when `done`.
    ///
    /// # Safety
    /// The context is live.
    unsafe fn job(&mut self, done: bool) -> *mut MirageJob {
        let mut j = null_mut();
        // SAFETY: valid pointers.
        unsafe {
            assert_eq!(mirage_job_generate(self.ctx, &params(1), &manual(), &mut j), MIRAGE_OK, "{}", last_error());
            if done {
                assert_eq!(mirage_job_advance(j, 1, 0, null_mut()), MIRAGE_OK);
            }
        }
        j
    }

    /// A host image over `pixels` (the set's format, packed), or over nothing when `null_data`.
    fn image(&mut self, null_data: bool) -> MirageImage {
        MirageImage {
            width: self.width,
            height: self.height,
            stride: 0,
            format: self.format,
            data: if null_data { null_mut() } else { self.pixels.as_mut_ptr() },
        }
    }
}

fn params(steps: u32) -> MirageDiffusionParams {
    // SAFETY: zeroed is a valid bit pattern for the struct (NULL pointers, None callbacks); init fills it.
    let mut p: MirageDiffusionParams = unsafe { std::mem::zeroed() };
    // SAFETY: `p` is a whole struct of this size.
    assert_eq!(unsafe { mirage_diffusion_params_init(&mut p, size_of::<MirageDiffusionParams>()) }, MIRAGE_OK);
    p.steps = steps;
    p.seed = 5;
    p
}

/// The pointer `p`, or NULL when `which` names `name`.
fn c<T>(which: Option<&str>, name: &str, p: *const T) -> *const T {
    if which == Some(name) {
        null()
    } else {
        p
    }
}
fn m<T>(which: Option<&str>, name: &str, p: *mut T) -> *mut T {
    if which == Some(name) {
        null_mut()
    } else {
        p
    }
}

fn free_batch(b: *mut MirageImageBatch) {
    // SAFETY: NULL or a batch this library made.
    unsafe { mirage_image_batch_free(b) }
}
fn free_latent(l: *mut MirageLatent) {
    // SAFETY: NULL or a latent this library made.
    unsafe { mirage_latent_free(l) }
}

/// Job params of a MIRAGE_JOB_MANUAL job (stepped by the row itself: no worker threads involved).
fn manual() -> MirageJobParams {
    // SAFETY: zeroed is a valid bit pattern; init fills it.
    let mut p: MirageJobParams = unsafe { std::mem::zeroed() };
    // SAFETY: `p` is a whole struct of this size.
    assert_eq!(unsafe { mirage_job_params_init(&mut p, size_of::<MirageJobParams>()) }, MIRAGE_OK);
    p.mode = MIRAGE_JOB_MANUAL;
    p.previews = true;
    p
}

fn context_params() -> MirageContextParams {
    // SAFETY: zeroed is a valid bit pattern; init fills it.
    let mut p: MirageContextParams = unsafe { std::mem::zeroed() };
    // SAFETY: `p` is a whole struct of this size.
    assert_eq!(unsafe { mirage_context_params_init(&mut p, size_of::<MirageContextParams>()) }, MIRAGE_OK);
    p
}

/// A packed RGBA8 target of `w` x `h` over `buf` (or over nothing when `null_data`).
fn target(buf: &mut [u8], w: u32, h: u32, null_data: bool) -> MirageTarget {
    MirageTarget {
        data: if null_data { null_mut() } else { buf.as_mut_ptr().cast() },
        size: buf.len(),
        width: w,
        height: h,
        stride: 0,
        format: MIRAGE_PIXEL_RGBA8,
        flags: 0,
        filter: MIRAGE_FILTER_BILINEAR,
    }
}

/// The submission's status `s`; when it made a manual job `j`, that job is stepped to its end (it must end
/// done) and freed.
///
/// # Safety
/// `j` is NULL or a live job.
unsafe fn finish_job(s: MirageStatus, j: *mut MirageJob) -> Got {
    if j.is_null() {
        return Got::Status(s);
    }
    // SAFETY: a live job.
    unsafe {
        // A manual job is stepped here; one of the workers (job_params NULL) is waited for.
        if mirage_job_advance(j, u32::MAX, 0, null_mut()) != MIRAGE_OK {
            assert_eq!(mirage_job_wait(j, MIRAGE_WAIT_FOREVER, null_mut()), MIRAGE_OK);
        }
        let mut st = 0;
        assert_eq!(mirage_job_poll(j, &mut st, null_mut(), null_mut()), MIRAGE_OK);
        assert_eq!(st, MIRAGE_JOB_DONE, "{}", last_error());
        mirage_job_free(j);
    }
    Got::Status(s)
}

type Call = unsafe fn(&mut Fx, Option<&str>) -> Got;

struct Row {
    export: &'static str,
    /// The pointer parameters in the header's order, then pointers inside structs and arrays (dotted).
    nulls: &'static [(&'static str, WhenNull)],
    /// How the call with every pointer valid must end (most: MIRAGE_OK).
    valid: fn(&Got) -> bool,
    call: Call,
}

fn rows() -> Vec<Row> {
    vec![
        Row {
            export: "mirage_status_str",
            nulls: &[],
            valid: positive,
            call: |_, _| Got::Value(usize::from(!mirage_status_str(MIRAGE_ERR_IO).is_null())),
        },
        Row {
            export: "mirage_last_error",
            nulls: &[("buf", Accepted(positive, "buf may be NULL: the size is returned, nothing is written"))],
            valid: positive,
            call: |_, w| unsafe {
                mirage_context_cancel(null()); // leaves a message
                let mut buf = [0 as c_char; 16];
                Got::Value(mirage_last_error(m(w, "buf", buf.as_mut_ptr()), buf.len()))
            },
        },
        Row {
            export: "mirage_version",
            nulls: &[],
            valid: positive,
            call: |_, _| unsafe { Got::Value(CStr::from_ptr(mirage_version()).to_bytes().len()) },
        },
        Row {
            export: "mirage_provider_name",
            nulls: &[],
            valid: positive,
            call: |_, _| unsafe {
                Got::Value(CStr::from_ptr(mirage_provider_name(MIRAGE_PROVIDER_CPU)).to_bytes().len())
            },
        },
        Row {
            export: "mirage_runtime_options_init",
            nulls: &[("options", REFUSED)],
            valid: ok,
            call: |_, w| unsafe {
                let mut o: MirageRuntimeOptions = std::mem::zeroed();
                Got::Status(mirage_runtime_options_init(m(w, "options", &mut o), size_of::<MirageRuntimeOptions>()))
            },
        },
        Row {
            export: "mirage_runtime_init",
            nulls: &[
                ("options", REFUSED),
                ("options.ort_library_path", Accepted(already, "NULL searches the documented places")),
                ("options.tensorrt_cache_dir", Accepted(already, "NULL: no engine cache")),
                ("options.digest_cache_dir", Accepted(already, "NULL: no digest cache")),
            ],
            // The runtime of this process is up (the fixture's context started it): a valid call is told so.
            valid: already,
            call: |_, w| unsafe {
                let mut o: MirageRuntimeOptions = std::mem::zeroed();
                mirage_runtime_options_init(&mut o, size_of::<MirageRuntimeOptions>());
                let cache = c"/tmp";
                o.tensorrt_cache_dir = c(w, "options.tensorrt_cache_dir", cache.as_ptr());
                o.digest_cache_dir = c(w, "options.digest_cache_dir", cache.as_ptr());
                let lib = c"/nonexistent/libonnxruntime.so";
                o.ort_library_path = c(w, "options.ort_library_path", lib.as_ptr());
                Got::Status(mirage_runtime_init(c(w, "options", &o)))
            },
        },
        Row {
            export: "mirage_context_params_init",
            nulls: &[("params", REFUSED)],
            valid: ok,
            call: |_, w| unsafe {
                let mut p: MirageContextParams = std::mem::zeroed();
                Got::Status(mirage_context_params_init(m(w, "params", &mut p), size_of::<MirageContextParams>()))
            },
        },
        Row {
            export: "mirage_context_new",
            nulls: &[("model_dir", REFUSED), ("params", Accepted(ok, "NULL params: the defaults")), ("out", REFUSED)],
            valid: ok,
            call: |fx, w| unsafe {
                let mut p: MirageContextParams = std::mem::zeroed();
                mirage_context_params_init(&mut p, size_of::<MirageContextParams>());
                let mut ctx = null_mut();
                let s =
                    mirage_context_new(c(w, "model_dir", fx.dir.as_ptr()), c(w, "params", &p), m(w, "out", &mut ctx));
                mirage_context_free(ctx);
                Got::Status(s)
            },
        },
        Row {
            export: "mirage_context_free",
            nulls: &[("ctx", Accepted(nothing, "freeing NULL does nothing"))],
            valid: nothing,
            call: |fx, w| unsafe {
                let mut ctx = null_mut();
                assert_eq!(mirage_context_new(fx.dir.as_ptr(), null(), &mut ctx), MIRAGE_OK);
                mirage_context_free(m(w, "ctx", ctx));
                if w.is_some() {
                    mirage_context_free(ctx);
                }
                Got::Nothing
            },
        },
        Row {
            export: "mirage_context_cancel",
            nulls: &[("ctx", REFUSED)],
            valid: ok,
            call: |fx, w| unsafe { Got::Status(mirage_context_cancel(c(w, "ctx", fx.ctx))) },
        },
        Row {
            export: "mirage_context_image_size",
            nulls: &[("ctx", REFUSED), ("width", REFUSED), ("height", REFUSED), ("channels", REFUSED)],
            valid: ok,
            call: |fx, w| unsafe {
                let (mut a, mut b, mut d) = (0, 0, 0);
                Got::Status(mirage_context_image_size(
                    c(w, "ctx", fx.ctx),
                    m(w, "width", &mut a),
                    m(w, "height", &mut b),
                    m(w, "channels", &mut d),
                ))
            },
        },
        Row {
            export: "mirage_context_latent_shape",
            nulls: &[("ctx", REFUSED), ("shape", REFUSED)],
            valid: ok,
            call: |fx, w| unsafe {
                let mut s = [0u32; 3];
                Got::Status(mirage_context_latent_shape(c(w, "ctx", fx.ctx), m(w, "shape", s.as_mut_ptr())))
            },
        },
        Row {
            export: "mirage_context_prior_sampleable",
            nulls: &[("ctx", REFUSED), ("sampleable", REFUSED)],
            valid: ok,
            call: |fx, w| unsafe {
                let mut b = false;
                Got::Status(mirage_context_prior_sampleable(c(w, "ctx", fx.ctx), m(w, "sampleable", &mut b)))
            },
        },
        Row {
            export: "mirage_context_provider",
            nulls: &[("ctx", REFUSED), ("provider", REFUSED)],
            valid: ok,
            call: |fx, w| unsafe {
                let mut p = 0;
                Got::Status(mirage_context_provider(c(w, "ctx", fx.ctx), MIRAGE_MODEL_UNET, m(w, "provider", &mut p)))
            },
        },
        Row {
            export: "mirage_context_name",
            nulls: &[
                ("ctx", REFUSED),
                ("buf", Refused(Some("buf is NULL but len is not 0"))),
                ("needed", Accepted(ok, "needed may be NULL")),
            ],
            valid: ok,
            call: |fx, w| unsafe {
                let mut buf = [0 as c_char; 64];
                let mut needed = 0;
                Got::Status(mirage_context_name(
                    c(w, "ctx", fx.ctx),
                    m(w, "buf", buf.as_mut_ptr()),
                    buf.len(),
                    m(w, "needed", &mut needed),
                ))
            },
        },
        Row {
            export: "mirage_image_batch_count",
            nulls: &[("batch", Accepted(zero, "0 for NULL"))],
            valid: positive,
            call: |fx, w| unsafe {
                let mut b = null_mut();
                assert_eq!(mirage_vae_decode(fx.ctx, fx.latent, MIRAGE_PIXEL_RGBA8, &mut b), MIRAGE_OK);
                let n = mirage_image_batch_count(c(w, "batch", b));
                free_batch(b);
                Got::Value(n)
            },
        },
        Row {
            export: "mirage_image_batch_get",
            nulls: &[("batch", REFUSED), ("image", REFUSED)],
            valid: ok,
            call: |fx, w| unsafe {
                let mut b = null_mut();
                assert_eq!(mirage_vae_decode(fx.ctx, fx.latent, MIRAGE_PIXEL_RGBA8, &mut b), MIRAGE_OK);
                let mut img: MirageImage = std::mem::zeroed();
                let s = mirage_image_batch_get(c(w, "batch", b), 0, m(w, "image", &mut img));
                free_batch(b);
                Got::Status(s)
            },
        },
        Row {
            export: "mirage_image_batch_free",
            nulls: &[("batch", Accepted(nothing, "freeing NULL does nothing"))],
            valid: nothing,
            call: |fx, w| unsafe {
                let mut b = null_mut();
                assert_eq!(mirage_vae_decode(fx.ctx, fx.latent, MIRAGE_PIXEL_RGBA8, &mut b), MIRAGE_OK);
                mirage_image_batch_free(m(w, "batch", b));
                if w.is_some() {
                    free_batch(b);
                }
                Got::Nothing
            },
        },
        Row {
            export: "mirage_latent_new",
            nulls: &[("data", REFUSED), ("shape", REFUSED), ("out", REFUSED)],
            valid: ok,
            call: |_, w| unsafe {
                let data = [0.5f32; 8];
                let shape = [1u32, 2, 2, 2];
                let mut l = null_mut();
                let s = mirage_latent_new(
                    c(w, "data", data.as_ptr()),
                    8,
                    c(w, "shape", shape.as_ptr()),
                    m(w, "out", &mut l),
                );
                free_latent(l);
                Got::Status(s)
            },
        },
        Row {
            export: "mirage_latent_shape",
            nulls: &[("latent", REFUSED), ("shape", REFUSED)],
            valid: ok,
            call: |fx, w| unsafe {
                let mut s = [0u32; 4];
                Got::Status(mirage_latent_shape(c(w, "latent", fx.latent), m(w, "shape", s.as_mut_ptr())))
            },
        },
        Row {
            export: "mirage_latent_data",
            nulls: &[("latent", REFUSED), ("data", REFUSED), ("len", REFUSED)],
            valid: ok,
            call: |fx, w| unsafe {
                let (mut d, mut n) = (null(), 0);
                Got::Status(mirage_latent_data(c(w, "latent", fx.latent), m(w, "data", &mut d), m(w, "len", &mut n)))
            },
        },
        Row {
            export: "mirage_latent_free",
            nulls: &[("latent", Accepted(nothing, "freeing NULL does nothing"))],
            valid: nothing,
            call: |_, w| unsafe {
                let mut l = null_mut();
                assert_eq!(mirage_latent_new([1.0f32].as_ptr(), 1, [1u32, 1, 1, 1].as_ptr(), &mut l), MIRAGE_OK);
                mirage_latent_free(m(w, "latent", l));
                if w.is_some() {
                    free_latent(l);
                }
                Got::Nothing
            },
        },
        Row {
            export: "mirage_vae_encode",
            nulls: &[
                ("ctx", REFUSED),
                ("images", REFUSED),
                ("mean", REFUSED),
                ("logvar", REFUSED),
                ("images.data", Refused(Some("images[0].data is NULL"))),
            ],
            valid: ok,
            call: |fx, w| unsafe {
                let img = fx.image(w == Some("images.data"));
                let (mut mean, mut logvar) = (null_mut(), null_mut());
                let s = mirage_vae_encode(
                    c(w, "ctx", fx.ctx),
                    c(w, "images", &img),
                    1,
                    m(w, "mean", &mut mean),
                    m(w, "logvar", &mut logvar),
                );
                free_latent(mean);
                free_latent(logvar);
                Got::Status(s)
            },
        },
        Row {
            export: "mirage_vae_sample",
            nulls: &[("ctx", REFUSED), ("mean", REFUSED), ("logvar", REFUSED), ("out", REFUSED)],
            valid: ok,
            call: |fx, w| unsafe {
                let mut z = null_mut();
                let s = mirage_vae_sample(
                    c(w, "ctx", fx.ctx),
                    c(w, "mean", fx.latent),
                    c(w, "logvar", fx.logvar),
                    3,
                    m(w, "out", &mut z),
                );
                free_latent(z);
                Got::Status(s)
            },
        },
        Row {
            export: "mirage_vae_sample_prior",
            nulls: &[("ctx", REFUSED), ("out", REFUSED)],
            valid: ok,
            call: |fx, w| unsafe {
                let mut z = null_mut();
                let s = mirage_vae_sample_prior(c(w, "ctx", fx.ctx), 2, 3, m(w, "out", &mut z));
                free_latent(z);
                Got::Status(s)
            },
        },
        Row {
            export: "mirage_vae_decode",
            nulls: &[("ctx", REFUSED), ("latents", REFUSED), ("out", REFUSED)],
            valid: ok,
            call: |fx, w| unsafe {
                let mut b = null_mut();
                let s = mirage_vae_decode(
                    c(w, "ctx", fx.ctx),
                    c(w, "latents", fx.latent),
                    MIRAGE_PIXEL_RGB8,
                    m(w, "out", &mut b),
                );
                free_batch(b);
                Got::Status(s)
            },
        },
        Row {
            export: "mirage_vae_decode_into",
            nulls: &[
                ("ctx", REFUSED),
                ("latents", REFUSED),
                ("images", REFUSED),
                ("images.data", Refused(Some("images[0].data is NULL"))),
            ],
            valid: ok,
            call: |fx, w| unsafe {
                let img = fx.image(w == Some("images.data"));
                Got::Status(mirage_vae_decode_into(
                    c(w, "ctx", fx.ctx),
                    c(w, "latents", fx.latent),
                    c(w, "images", &img),
                    1,
                ))
            },
        },
        Row {
            export: "mirage_diffusion_params_init",
            nulls: &[("params", REFUSED)],
            valid: ok,
            call: |_, w| unsafe {
                let mut p: MirageDiffusionParams = std::mem::zeroed();
                Got::Status(mirage_diffusion_params_init(m(w, "params", &mut p), size_of::<MirageDiffusionParams>()))
            },
        },
        Row {
            export: "mirage_generate",
            nulls: &[
                ("ctx", REFUSED),
                ("params", REFUSED),
                ("out", REFUSED),
                ("params.sampler", Accepted(ok, "NULL sampler: ddim")),
                ("params.prompt", Accepted(ok, "NULL prompt: unconditional")),
                ("params.negative_prompt", Accepted(ok, "NULL negative prompt: none")),
            ],
            valid: ok,
            call: |fx, w| unsafe {
                let mut p = params(1);
                p.sampler = c(w, "params.sampler", c"dpm++2m".as_ptr());
                p.prompt = c(w, "params.prompt", c"a red apple".as_ptr());
                p.negative_prompt = c(w, "params.negative_prompt", c"blurry".as_ptr());
                let mut b = null_mut();
                let s = mirage_generate(c(w, "ctx", fx.ctx), c(w, "params", &p), m(w, "out", &mut b));
                free_batch(b);
                Got::Status(s)
            },
        },
        Row {
            export: "mirage_img2img",
            nulls: &[
                ("ctx", REFUSED),
                ("images", REFUSED),
                ("params", REFUSED),
                ("out", REFUSED),
                ("images.data", Refused(Some("images[0].data is NULL"))),
            ],
            valid: ok,
            call: |fx, w| unsafe {
                let img = fx.image(w == Some("images.data"));
                let mut p = params(2);
                p.strength = 0.5;
                let mut b = null_mut();
                let s = mirage_img2img(
                    c(w, "ctx", fx.ctx),
                    c(w, "images", &img),
                    1,
                    c(w, "params", &p),
                    m(w, "out", &mut b),
                );
                free_batch(b);
                Got::Status(s)
            },
        },
        Row {
            export: "mirage_denoise",
            nulls: &[
                ("ctx", REFUSED),
                ("images", REFUSED),
                ("params", REFUSED),
                ("out", REFUSED),
                ("images.data", Refused(Some("images[0].data is NULL"))),
            ],
            valid: ok,
            call: |fx, w| unsafe {
                let img = fx.image(w == Some("images.data"));
                let mut p = params(2);
                p.strength = 0.4;
                let mut b = null_mut();
                let s = mirage_denoise(
                    c(w, "ctx", fx.ctx),
                    c(w, "images", &img),
                    1,
                    c(w, "params", &p),
                    m(w, "out", &mut b),
                );
                free_batch(b);
                Got::Status(s)
            },
        },
        Row {
            export: "mirage_inpaint",
            nulls: &[
                ("ctx", REFUSED),
                ("images", REFUSED),
                ("masks", REFUSED),
                ("params", REFUSED),
                ("out", REFUSED),
                ("images.data", Refused(Some("images[0].data is NULL"))),
                ("masks.data", Refused(Some("masks[0].data is NULL"))),
            ],
            valid: ok,
            call: |fx, w| unsafe {
                let img = fx.image(w == Some("images.data"));
                let mut mask_pixels = vec![0u8; (fx.width * fx.height) as usize];
                mask_pixels[..fx.width as usize].fill(255);
                let mask = MirageImage {
                    width: fx.width,
                    height: fx.height,
                    stride: 0,
                    format: MIRAGE_PIXEL_GRAY8,
                    data: m(w, "masks.data", mask_pixels.as_mut_ptr()),
                };
                let p = params(1);
                let mut b = null_mut();
                let s = mirage_inpaint(
                    c(w, "ctx", fx.ctx),
                    c(w, "images", &img),
                    c(w, "masks", &mask),
                    1,
                    c(w, "params", &p),
                    m(w, "out", &mut b),
                );
                free_batch(b);
                Got::Status(s)
            },
        },
        Row {
            export: "mirage_interpolate",
            nulls: &[
                ("ctx", REFUSED),
                ("prompts", REFUSED),
                ("params", REFUSED),
                ("out", REFUSED),
                ("prompts.1", Refused(Some("prompts[1] is NULL"))),
            ],
            valid: ok,
            call: |fx, w| unsafe {
                let prompts = [c"a cat".as_ptr(), c(w, "prompts.1", c"a dog".as_ptr())];
                let p = params(1);
                let mut b = null_mut();
                let s = mirage_interpolate(
                    c(w, "ctx", fx.ctx),
                    c(w, "prompts", prompts.as_ptr()),
                    2,
                    2,
                    c(w, "params", &p),
                    m(w, "out", &mut b),
                );
                free_batch(b);
                Got::Status(s)
            },
        },
        Row {
            export: "mirage_context_new_from_memory",
            nulls: &[("data", REFUSED), ("params", Accepted(ok, "NULL params: the defaults")), ("out", REFUSED)],
            valid: ok,
            call: |fx, w| unsafe {
                let pack = fx.pack();
                let mut ctx = null_mut();
                let s = mirage_context_new_from_memory(
                    c(w, "data", pack.as_ptr().cast()),
                    pack.len(),
                    c(w, "params", &context_params()),
                    m(w, "out", &mut ctx),
                );
                mirage_context_free(ctx);
                Got::Status(s)
            },
        },
        Row {
            export: "mirage_image_batch_write",
            nulls: &[("batch", REFUSED), ("target", REFUSED), ("target.data", Refused(Some("target.data is NULL")))],
            valid: ok,
            call: |fx, w| unsafe {
                let mut b = null_mut();
                assert_eq!(mirage_vae_decode(fx.ctx, fx.latent, MIRAGE_PIXEL_RGBA8, &mut b), MIRAGE_OK);
                let mut buf = vec![0u8; 8 * 8 * 4];
                let t = target(&mut buf, 8, 8, w == Some("target.data"));
                let s = mirage_image_batch_write(c(w, "batch", b), 0, c(w, "target", &t));
                free_batch(b);
                Got::Status(s)
            },
        },
        Row {
            export: "mirage_job_params_init",
            nulls: &[("params", REFUSED)],
            valid: ok,
            call: |_, w| unsafe {
                let mut p: MirageJobParams = std::mem::zeroed();
                Got::Status(mirage_job_params_init(m(w, "params", &mut p), size_of::<MirageJobParams>()))
            },
        },
        Row {
            export: "mirage_job_generate",
            nulls: &[
                ("ctx", REFUSED),
                ("params", REFUSED),
                ("job_params", Accepted(ok, "NULL job params: the defaults (workers)")),
                ("out", REFUSED),
            ],
            valid: ok,
            call: |fx, w| unsafe {
                let (p, jp) = (params(1), manual());
                let mut j = null_mut();
                let s = mirage_job_generate(
                    c(w, "ctx", fx.ctx),
                    c(w, "params", &p),
                    c(w, "job_params", &jp),
                    m(w, "out", &mut j),
                );
                finish_job(s, j)
            },
        },
        Row {
            export: "mirage_job_img2img",
            nulls: &[
                ("ctx", REFUSED),
                ("images", REFUSED),
                ("params", REFUSED),
                ("job_params", Accepted(ok, "NULL job params: the defaults (workers)")),
                ("out", REFUSED),
                ("images.data", Refused(Some("images[0].data is NULL"))),
            ],
            valid: ok,
            call: |fx, w| unsafe {
                let img = fx.image(w == Some("images.data"));
                let (mut p, jp) = (params(2), manual());
                p.strength = 0.5;
                let mut j = null_mut();
                let s = mirage_job_img2img(
                    c(w, "ctx", fx.ctx),
                    c(w, "images", &img),
                    1,
                    c(w, "params", &p),
                    c(w, "job_params", &jp),
                    m(w, "out", &mut j),
                );
                finish_job(s, j)
            },
        },
        Row {
            export: "mirage_job_denoise",
            nulls: &[
                ("ctx", REFUSED),
                ("images", REFUSED),
                ("params", REFUSED),
                ("job_params", Accepted(ok, "NULL job params: the defaults (workers)")),
                ("out", REFUSED),
            ],
            valid: ok,
            call: |fx, w| unsafe {
                let img = fx.image(false);
                let (mut p, jp) = (params(2), manual());
                p.strength = 0.3;
                let mut j = null_mut();
                let s = mirage_job_denoise(
                    c(w, "ctx", fx.ctx),
                    c(w, "images", &img),
                    1,
                    c(w, "params", &p),
                    c(w, "job_params", &jp),
                    m(w, "out", &mut j),
                );
                finish_job(s, j)
            },
        },
        Row {
            export: "mirage_job_inpaint",
            nulls: &[
                ("ctx", REFUSED),
                ("images", REFUSED),
                ("masks", REFUSED),
                ("params", REFUSED),
                ("job_params", Accepted(ok, "NULL job params: the defaults (workers)")),
                ("out", REFUSED),
            ],
            valid: ok,
            call: |fx, w| unsafe {
                let img = fx.image(false);
                let mut mask_px = vec![255u8; (fx.width * fx.height) as usize];
                let mask = MirageImage {
                    width: fx.width,
                    height: fx.height,
                    stride: 0,
                    format: MIRAGE_PIXEL_GRAY8,
                    data: mask_px.as_mut_ptr(),
                };
                let (p, jp) = (params(1), manual());
                let mut j = null_mut();
                let s = mirage_job_inpaint(
                    c(w, "ctx", fx.ctx),
                    c(w, "images", &img),
                    c(w, "masks", &mask),
                    1,
                    c(w, "params", &p),
                    c(w, "job_params", &jp),
                    m(w, "out", &mut j),
                );
                finish_job(s, j)
            },
        },
        Row {
            export: "mirage_job_interpolate",
            nulls: &[
                ("ctx", REFUSED),
                ("prompts", REFUSED),
                ("params", REFUSED),
                ("job_params", Accepted(ok, "NULL job params: the defaults (workers)")),
                ("out", REFUSED),
                ("prompts.0", Refused(Some("prompts[0] is NULL"))),
            ],
            valid: ok,
            call: |fx, w| unsafe {
                let prompts = [c(w, "prompts.0", c"a cat".as_ptr()), c"a dog".as_ptr()];
                let (p, jp) = (params(1), manual());
                let mut j = null_mut();
                let s = mirage_job_interpolate(
                    c(w, "ctx", fx.ctx),
                    c(w, "prompts", prompts.as_ptr()),
                    2,
                    2,
                    c(w, "params", &p),
                    c(w, "job_params", &jp),
                    m(w, "out", &mut j),
                );
                finish_job(s, j)
            },
        },
        Row {
            export: "mirage_job_encode",
            nulls: &[
                ("ctx", REFUSED),
                ("images", REFUSED),
                ("job_params", Accepted(ok, "NULL job params: the defaults (workers)")),
                ("out", REFUSED),
            ],
            valid: ok,
            call: |fx, w| unsafe {
                let img = fx.image(false);
                let jp = manual();
                let mut j = null_mut();
                let s = mirage_job_encode(
                    c(w, "ctx", fx.ctx),
                    c(w, "images", &img),
                    1,
                    c(w, "job_params", &jp),
                    m(w, "out", &mut j),
                );
                finish_job(s, j)
            },
        },
        Row {
            export: "mirage_job_decode",
            nulls: &[
                ("ctx", REFUSED),
                ("latents", REFUSED),
                ("job_params", Accepted(ok, "NULL job params: the defaults (workers)")),
                ("out", REFUSED),
            ],
            valid: ok,
            call: |fx, w| unsafe {
                let jp = manual();
                let mut j = null_mut();
                let s = mirage_job_decode(
                    c(w, "ctx", fx.ctx),
                    c(w, "latents", fx.latent),
                    MIRAGE_PIXEL_RGBA8,
                    c(w, "job_params", &jp),
                    m(w, "out", &mut j),
                );
                finish_job(s, j)
            },
        },
        Row {
            export: "mirage_job_poll",
            nulls: &[
                ("job", REFUSED),
                ("state", REFUSED),
                ("step", Accepted(ok, "NULL step: not wanted")),
                ("total", Accepted(ok, "NULL total: not wanted")),
            ],
            valid: ok,
            call: |fx, w| unsafe {
                let j = fx.job(false);
                let (mut st, mut step, mut total) = (0, 0, 0);
                let s = mirage_job_poll(
                    c(w, "job", j),
                    m(w, "state", &mut st),
                    m(w, "step", &mut step),
                    m(w, "total", &mut total),
                );
                mirage_job_free(j);
                Got::Status(s)
            },
        },
        Row {
            export: "mirage_job_wait",
            nulls: &[("job", REFUSED), ("state", Accepted(ok, "NULL state: not wanted"))],
            valid: ok,
            call: |fx, w| unsafe {
                let j = fx.job(true);
                let mut st = 0;
                let s = mirage_job_wait(c(w, "job", j), 0, m(w, "state", &mut st));
                mirage_job_free(j);
                Got::Status(s)
            },
        },
        Row {
            export: "mirage_job_cancel",
            nulls: &[("job", REFUSED)],
            valid: ok,
            call: |fx, w| unsafe {
                let j = fx.job(false);
                let s = mirage_job_cancel(c(w, "job", j));
                mirage_job_free(j);
                Got::Status(s)
            },
        },
        Row {
            export: "mirage_job_advance",
            nulls: &[("job", REFUSED), ("steps_run", Accepted(ok, "NULL steps_run: not wanted"))],
            valid: ok,
            call: |fx, w| unsafe {
                let j = fx.job(false);
                let mut ran = 0;
                let s = mirage_job_advance(c(w, "job", j), 1, 0, m(w, "steps_run", &mut ran));
                mirage_job_free(j);
                Got::Status(s)
            },
        },
        Row {
            export: "mirage_job_preview",
            nulls: &[("job", REFUSED), ("out", REFUSED), ("step", REFUSED)],
            valid: ok,
            call: |fx, w| unsafe {
                let j = fx.job(true);
                let (mut b, mut step) = (null_mut(), 0);
                let s = mirage_job_preview(
                    c(w, "job", j),
                    MIRAGE_PIXEL_RGBA8,
                    m(w, "out", &mut b),
                    m(w, "step", &mut step),
                );
                free_batch(b);
                mirage_job_free(j);
                Got::Status(s)
            },
        },
        Row {
            export: "mirage_job_take_images",
            nulls: &[("job", REFUSED), ("out", REFUSED)],
            valid: ok,
            call: |fx, w| unsafe {
                let j = fx.job(true);
                let mut b = null_mut();
                let s = mirage_job_take_images(c(w, "job", j), m(w, "out", &mut b));
                free_batch(b);
                mirage_job_free(j);
                Got::Status(s)
            },
        },
        Row {
            export: "mirage_job_take_latents",
            nulls: &[("job", REFUSED), ("mean", REFUSED), ("logvar", Accepted(ok, "NULL logvar: not wanted"))],
            valid: ok,
            call: |fx, w| unsafe {
                let img = fx.image(false);
                let mut j = null_mut();
                assert_eq!(mirage_job_encode(fx.ctx, &img, 1, &manual(), &mut j), MIRAGE_OK);
                assert_eq!(mirage_job_advance(j, 1, 0, null_mut()), MIRAGE_OK);
                let (mut mean, mut logvar) = (null_mut(), null_mut());
                let s = mirage_job_take_latents(c(w, "job", j), m(w, "mean", &mut mean), m(w, "logvar", &mut logvar));
                free_latent(mean);
                free_latent(logvar);
                mirage_job_free(j);
                Got::Status(s)
            },
        },
        Row {
            export: "mirage_job_take_into",
            nulls: &[
                ("job", REFUSED),
                ("targets", REFUSED),
                ("targets.data", Refused(Some("targets[0].data is NULL"))),
            ],
            valid: ok,
            call: |fx, w| unsafe {
                let j = fx.job(true);
                let mut buf = vec![0u8; 8 * 8 * 4];
                let t = target(&mut buf, 8, 8, w == Some("targets.data"));
                let s = mirage_job_take_into(c(w, "job", j), c(w, "targets", &t), 1);
                mirage_job_free(j);
                Got::Status(s)
            },
        },
        Row {
            export: "mirage_job_free",
            nulls: &[("job", Accepted(nothing, "freeing NULL does nothing"))],
            valid: nothing,
            call: |fx, w| unsafe {
                let j = fx.job(false);
                mirage_job_free(m(w, "job", j));
                if w.is_some() {
                    mirage_job_free(j);
                }
                Got::Nothing
            },
        },
        Row {
            export: "mirage_context_text_shape",
            nulls: &[("ctx", REFUSED), ("tokens", REFUSED), ("width", REFUSED)],
            valid: ok,
            call: |fx, w| unsafe {
                let (mut t, mut wd) = (0, 0);
                Got::Status(mirage_context_text_shape(
                    c(w, "ctx", fx.ctx),
                    m(w, "tokens", &mut t),
                    m(w, "width", &mut wd),
                ))
            },
        },
        Row {
            export: "mirage_text_embed",
            nulls: &[
                ("ctx", REFUSED),
                ("prompt", REFUSED),
                ("pooled", REFUSED),
                ("token_embeddings", Accepted(ok, "token_embeddings may be NULL: only the pooled embedding")),
            ],
            valid: ok,
            call: |fx, w| unsafe {
                let (mut t, mut wd) = (0, 0);
                assert_eq!(mirage_context_text_shape(fx.ctx, &mut t, &mut wd), MIRAGE_OK);
                let mut pooled = vec![0f32; wd as usize];
                let mut tokens = vec![0f32; (t * wd) as usize];
                Got::Status(mirage_text_embed(
                    c(w, "ctx", fx.ctx),
                    c(w, "prompt", c"a red apple".as_ptr()),
                    m(w, "pooled", pooled.as_mut_ptr()),
                    pooled.len(),
                    m(w, "token_embeddings", tokens.as_mut_ptr()),
                    tokens.len(),
                ))
            },
        },
    ]
}

fn already(g: &Got) -> bool {
    *g == Got::Status(MIRAGE_ERR_RUNTIME_ALREADY_INITIALISED)
}

/// Every function the header declares, with the names of its pointer parameters in order.
fn header_exports() -> BTreeMap<String, Vec<String>> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("include/mirage.h")).unwrap();
    // Drop comments, then read declarations: `<type> mirage_x(<params>);` possibly over several lines.
    let mut code = String::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.find("/*") {
        code.push_str(&rest[..i]);
        rest = &rest[i + rest[i..].find("*/").expect("closed comment") + 2..];
    }
    code.push_str(rest);
    let code: String =
        code.lines().filter(|l| !l.trim_start().starts_with("//") && !l.starts_with('#')).collect::<Vec<_>>().join(" ");
    let mut out = BTreeMap::new();
    for decl in code.split(';') {
        let decl = decl.trim();
        let Some(paren) = decl.find('(') else { continue };
        let name = decl[..paren].rsplit([' ', '*']).next().unwrap_or_default().to_string();
        if !name.starts_with("mirage_") {
            continue;
        }
        let params = decl[paren + 1..].trim_end().trim_end_matches(')');
        let pointers = params
            .split(',')
            .map(str::trim)
            .filter(|p| p.contains('*') || p.contains('['))
            .map(|p| {
                let p = &p[..p.find('[').unwrap_or(p.len())];
                p.rsplit([' ', '*']).next().unwrap().to_string()
            })
            .collect();
        out.insert(name, pointers);
    }
    out
}

#[test]
fn every_pointer_of_every_export_null_in_turn() {
    let (_tmp, dir) = tiny_text_set();
    let dir = CString::new(dir.to_str().unwrap()).unwrap();
    let mut fx = Fx {
        dir,
        ctx: null_mut(),
        latent: null_mut(),
        logvar: null_mut(),
        width: 0,
        height: 0,
        format: 0,
        pixels: vec![],
        pack: vec![],
    };
    // SAFETY: valid pointers throughout.
    unsafe {
        assert_eq!(mirage_context_new(fx.dir.as_ptr(), null(), &mut fx.ctx), MIRAGE_OK);
        let mut ch = 0;
        assert_eq!(mirage_context_image_size(fx.ctx, &mut fx.width, &mut fx.height, &mut ch), MIRAGE_OK);
        fx.format = match ch {
            1 => MIRAGE_PIXEL_GRAY8,
            3 => MIRAGE_PIXEL_RGB8,
            _ => MIRAGE_PIXEL_RGBA8,
        };
        fx.pixels = (0..fx.width * fx.height * ch).map(|i| (i * 37 % 251) as u8).collect();
        let img = fx.image(false);
        assert_eq!(mirage_vae_encode(fx.ctx, &img, 1, &mut fx.latent, &mut fx.logvar), MIRAGE_OK, "{}", last_error());
    }

    let header = header_exports();
    let rows = rows();
    let table: BTreeMap<&str, &Row> = rows.iter().map(|r| (r.export, r)).collect();
    assert_eq!(table.len(), rows.len(), "one row per export");
    let missing: Vec<_> = header.keys().filter(|k| !table.contains_key(k.as_str())).collect();
    assert!(missing.is_empty(), "exports of include/mirage.h without a row here: {missing:?}");
    let stale: Vec<_> = table.keys().filter(|k| !header.contains_key(**k)).collect();
    assert!(stale.is_empty(), "rows for functions the header does not declare: {stale:?}");

    let mut cases = 0;
    for row in &rows {
        let want: Vec<&str> = row.nulls.iter().map(|(n, _)| *n).filter(|n| !n.contains('.')).collect();
        assert_eq!(want, header[row.export], "{}: the row's pointer parameters are not the header's", row.export);
        // SAFETY: the row's call passes valid pointers, or NULL where the test names one.
        let got = unsafe { (row.call)(&mut fx, None) };
        assert!((row.valid)(&got), "{} with every pointer valid gave {got:?}: {}", row.export, last_error());
        cases += 1;
        for &(name, when) in row.nulls {
            // SAFETY: as above.
            let got = unsafe { (row.call)(&mut fx, Some(name)) };
            cases += 1;
            match when {
                Refused(needle) => {
                    let needle = needle.map_or_else(|| format!("{name} is NULL"), str::to_string);
                    let msg = last_error();
                    assert_eq!(got, Got::Status(MIRAGE_ERR_INVALID_ARGUMENT), "{}({name} NULL): {msg}", row.export);
                    assert!(msg.contains(&needle), "{}({name} NULL): message {msg:?} lacks {needle:?}", row.export);
                }
                Accepted(check, why) => {
                    assert!(check(&got), "{}({name} NULL) gave {got:?}; documented: {why}", row.export);
                }
            }
        }
    }
    // The context still works after all of it.
    // SAFETY: valid pointers.
    unsafe {
        let mut b = null_mut();
        let p = params(2);
        assert_eq!(mirage_generate(fx.ctx, &p, &mut b), MIRAGE_OK, "{}", last_error());
        assert_eq!(mirage_image_batch_count(b), 1);
        free_batch(b);
        free_latent(fx.latent);
        free_latent(fx.logvar);
        mirage_context_free(fx.ctx);
    }
    println!("nulls: {} exports, {cases} cases", rows.len());
}
