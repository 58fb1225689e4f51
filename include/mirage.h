/*
 * mirage: image generation from latent spaces (a VAE, latent diffusion, text-to-image with negative prompts
 * and walks between prompts) on ONNX Runtime, for C and C++.
 *
 * Thread safety: every function may be called from any thread, a MirageContext may be used by several
 * threads at once, latents and image batches are immutable, and a handle is freed only when no call on
 * it is running (except generations, which mirage_context_free cancels and waits for). Callbacks run on
 * the thread that made the call. Jobs (mirage_job_*) never call back: they run on the context's own worker
 * threads or in mirage_job_advance on the host's thread, and are polled.
 *
 * Conventions: every fallible function returns a MirageStatus (MIRAGE_OK = 0) and writes its
 * out-parameters only on success; mirage_last_error() then copies the calling thread's detailed message.
 * What the library allocates, the library frees (mirage_*_free; NULL is a no-op). Strings are UTF-8.
 * Params structs start with struct_size and are filled by their _init function with sizeof the struct.
 * Handles (MirageContext, MirageLatent, MirageImageBatch, MirageJob) carry a tag that their _free poisons: a handle
 * used after its _free, freed twice, or a pointer to something else is refused with
 * MIRAGE_ERR_INVALID_ARGUMENT (a second _free does nothing and sets the last error), unless its memory has
 * meanwhile been reused for a new handle of the same type. A diagnostic, not a guarantee: such a call is
 * still a bug, and it still reads freed memory (AddressSanitizer and valgrind report it).
 *
 * Usage: text-to-image, then the VAE's latent space. argv[1] is a text-conditioned model set directory
 * (e.g. models/emoji), argv[2] the prompt; error handling through one helper.
 *
 * @code
 * #include <stdio.h>
 * #include <stdlib.h>
 * #include "mirage.h"
 *
 * static int ok(MirageStatus status) {
 *     if (status == MIRAGE_OK) return 1;
 *     char message[512];
 *     mirage_last_error(message, sizeof message); // truncated to fit, always NUL-terminated
 *     fprintf(stderr, "mirage: %s: %s\n", mirage_status_str(status), message);
 *     return 0;
 * }
 *
 * static bool on_progress(uint32_t step, uint32_t total, void *user_data) {
 *     (void)user_data;
 *     if (step == total) printf("%u steps done\n", total);
 *     return true; // false cancels; mirage_context_cancel works from any thread
 * }
 *
 * int main(int argc, char **argv) {
 *     if (argc < 3) return 2;
 *     // Optional: without mirage_runtime_init the first context loads ONNX Runtime with the defaults.
 *     MirageRuntimeOptions options;
 *     if (!ok(mirage_runtime_options_init(&options, sizeof options))) return 1;
 *     options.provider = MIRAGE_PROVIDER_CPU;
 *     if (!ok(mirage_runtime_init(&options))) return 1;
 *
 *     MirageContext *ctx = NULL;
 *     if (!ok(mirage_context_new(argv[1], NULL, &ctx))) return 1;
 *     uint32_t width, height, channels;
 *     if (!ok(mirage_context_image_size(ctx, &width, &height, &channels))) return 1;
 *
 *     // Four images of the prompt, steered away from the negative prompt, 20 DDIM steps from seed 7.
 *     MirageImageBatch *generated = NULL;
 *     MirageDiffusionParams params;
 *     int good = ok(mirage_diffusion_params_init(&params, sizeof params));
 *     if (good) {
 *         params.prompt = argv[2];
 *         params.negative_prompt = "blurry";
 *         params.count = 4;
 *         params.steps = 20;
 *         params.seed = 7;
 *         params.progress = on_progress;
 *         // The set's own pixel format, so that an image can go back into its VAE below.
 *         params.format = channels == 1 ? MIRAGE_PIXEL_GRAY8 : channels == 3 ? MIRAGE_PIXEL_RGB8 : MIRAGE_PIXEL_RGBA8;
 *         good = ok(mirage_generate(ctx, &params, &generated));
 *     }
 *     MirageImage image; // image.data belongs to the batch
 *     for (size_t i = 0; good && i < mirage_image_batch_count(generated); i++)
 *         if (ok(mirage_image_batch_get(generated, i, &image)))
 *             printf("generated %ux%u\n", image.width, image.height);
 *
 *     // The VAE: encode the first image to its latent distribution, draw a latent with seed 42, decode it.
 *     MirageLatent *mean = NULL, *logvar = NULL, *z = NULL;
 *     MirageImageBatch *decoded = NULL;
 *     good = good && ok(mirage_image_batch_get(generated, 0, &image)) &&
 *            ok(mirage_vae_encode(ctx, &image, 1, &mean, &logvar)) &&
 *            ok(mirage_vae_sample(ctx, mean, logvar, 42, &z)) &&
 *            ok(mirage_vae_decode(ctx, z, MIRAGE_PIXEL_RGBA8, &decoded)) &&
 *            ok(mirage_image_batch_get(decoded, 0, &image));
 *     if (good) printf("decoded %ux%u, first pixel %u\n", image.width, image.height, image.data[0]);
 *
 *     mirage_image_batch_free(decoded); // every _free accepts NULL
 *     mirage_latent_free(z);
 *     mirage_latent_free(logvar);
 *     mirage_latent_free(mean);
 *     mirage_image_batch_free(generated);
 *     mirage_context_free(ctx);
 *     return good ? 0 : 1;
 * }
 * @endcode
 */

#ifndef MIRAGE_H
#define MIRAGE_H

/* Generated by cbindgen from src/capi/ (settings: cbindgen.toml). Do not edit: run `make header`. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/** The version of the header: compare MIRAGE_VERSION_STRING with mirage_version() of the loaded library. */
#define MIRAGE_VERSION_MAJOR 0
#define MIRAGE_VERSION_MINOR 1
#define MIRAGE_VERSION_PATCH 0
#define MIRAGE_VERSION_STRING "0.1.0"


/**
 * The most images, latents, frames or prompts one call takes (`count`, `frames`, `prompt_count`); with
 * classifier-free guidance `mirage_generate` takes half as many, since both sides run in one batch.
 */
#define MIRAGE_MAX_BATCH 1024

/**
 * The most sampler steps (`MirageDiffusionParams::steps`).
 */
#define MIRAGE_MAX_STEPS 1000

/**
 * The largest classifier-free guidance scale (`MirageDiffusionParams::guidance`, and a model set's default).
 */
#define MIRAGE_MAX_GUIDANCE 50.0

/**
 * The most intra-op threads (`MirageRuntimeOptions::intra_threads`).
 */
#define MIRAGE_MAX_THREADS 256

/**
 * The most worker threads of a context (`MirageContextParams::workers`).
 */
#define MIRAGE_MAX_WORKERS 64

/**
 * The most jobs a context holds that have not started (`MirageContextParams::max_queued_jobs`).
 */
#define MIRAGE_MAX_QUEUED_JOBS 4096

/**
 * The longest side of a host image or target buffer, in pixels.
 */
#define MIRAGE_MAX_IMAGE_SIDE 4096

/**
 * `MirageRuntimeOptions::flags`: capture and replay CUDA graphs of the U-Net's steps (CUDA provider).
 */
#define MIRAGE_RUNTIME_CUDA_GRAPH 1

/**
 * `MirageTarget::flags`: rows bottom to top (the buffer's first row is the image's last), as OpenGL and
 * Unity textures expect.
 */
#define MIRAGE_TARGET_BOTTOM_UP 1

/**
 * `MirageTarget::flags`: colour multiplied by alpha (premultiplied alpha), as most compositors blend.
 */
#define MIRAGE_TARGET_PREMULTIPLIED 2

/**
 * `MirageDiffusionParams::guidance` value that selects the model set's own guidance scale.
 */
#define MIRAGE_GUIDANCE_DEFAULT -1.0

/**
 * `mirage_job_wait`'s timeout that never expires.
 */
#define MIRAGE_WAIT_FOREVER UINT32_MAX

/**
 * A loaded model set: its manifest and ONNX sessions. Created by `mirage_context_new` or
 * `mirage_context_new_from_memory`, freed by `mirage_context_free`. Thread-safe: any number of threads may
 * call functions on one context at once; the sessions sit behind one lock per model, so calls on the same
 * model run one after the other. Contexts opened on the same model set in one process (the same
 * manifest, provider and unchanged files) share one copy of the sessions: the second open costs almost
 * nothing and no memory, and the sessions live until the last such context is freed.
 */
typedef struct MirageContext MirageContext;

/**
 * Images allocated by the library (what `mirage_vae_decode` returns), all of one size and format. Read
 * them with `mirage_image_batch_count` and `mirage_image_batch_get`; free them with
 * `mirage_image_batch_free`. Immutable, so several threads may read one batch at once.
 */
typedef struct MirageImageBatch MirageImageBatch;

/**
 * A submitted operation: made by the `mirage_job_*` submit functions, freed by `mirage_job_free`. Any
 * thread may poll, wait for, preview or cancel a job while another runs it; it holds its model set (a
 * freed context does not invalidate it). Freeing the job while any other call on it is under way is a
 * use after free, as for every handle (the usual freed-handle check catches most such calls with
 * MIRAGE_ERR_INVALID_ARGUMENT, but cannot promise it).
 */
typedef struct MirageJob MirageJob;

/**
 * A batch of latents: shape {n, channels, height, width} and n * channels * height * width floats in that
 * (NCHW, row-major) order. Made by `mirage_latent_new` or the `mirage_vae_*` functions, freed by
 * `mirage_latent_free`. Immutable, so several threads may read one latent at once.
 */
typedef struct MirageLatent MirageLatent;

/**
 * The result of every fallible mirage call: `MIRAGE_OK` (0) or one of the `MIRAGE_ERR_*` values.
 *
 * Values are never renumbered or reused; new ones are only ever added. `mirage_status_str` names any
 * value, and `mirage_last_error` gives the detailed message of the calling thread's last failure.
 */
typedef uint32_t MirageStatus;

/**
 * An execution provider (the hardware backend ONNX Runtime runs a model on).
 */
typedef uint32_t MirageProvider;

/**
 * Severity of a log line.
 */
typedef uint32_t MirageLogLevel;

/**
 * Receives one log line. `message` is UTF-8, NUL-terminated and valid only during the call; `user_data`
 * is the pointer given with the callback.
 *
 * Called from whichever thread logs: the thread inside a mirage call, or an ONNX Runtime worker thread.
 * So it must be thread-safe, return quickly, not call back into mirage and not throw (C++) or longjmp.
 */
typedef void (*MirageLogCallback)(MirageLogLevel level, const char *message, void *user_data);

/**
 * How ONNX Runtime is set up for this process. Fill it with `mirage_runtime_options_init`, change the
 * fields you need, pass it to `mirage_runtime_init`.
 */
typedef struct MirageRuntimeOptions {
    /**
     * sizeof(MirageRuntimeOptions) as the host was compiled; set by `mirage_runtime_options_init`.
     */
    size_t struct_size;
    /**
     * Path of libonnxruntime (UTF-8), or NULL to search: ORT_DYLIB_PATH, then beside libmirage and the
     * executable, then the project's `.deps/onnxruntime/lib`. Copied; need not outlive the call.
     */
    const char *ort_library_path;
    /**
     * Default provider of every session (MIRAGE_PROVIDER_DEFAULT = AUTO).
     */
    MirageProvider provider;
    /**
     * Fail with MIRAGE_ERR_UNSUPPORTED instead of falling back to CPU when the provider is unavailable.
     */
    bool strict;
    /**
     * Threads per session for intra-op parallelism, 0 to MIRAGE_MAX_THREADS; 0 = ONNX Runtime's default (one per core).
     * More threads than cores only slows every call down; larger values are refused.
     */
    uint32_t intra_threads;
    /**
     * Receives the library's log lines (and ONNX Runtime's); NULL = warnings and errors to stderr.
     */
    MirageLogCallback log_callback;
    /**
     * Passed back unchanged to every `log_callback` call; mirage never dereferences it.
     */
    void *log_user_data;
    /**
     * The lowest level delivered (default MIRAGE_LOG_WARN).
     */
    MirageLogLevel log_level;
    /**
     * TensorRT: build fp16 engines.
     */
    bool tensorrt_fp16;
    /**
     * TensorRT: folder (UTF-8) for the engine and timing caches, or NULL for none (engines are rebuilt
     * in every process). Copied; need not outlive the call.
     */
    const char *tensorrt_cache_dir;
    /**
     * Folder (UTF-8; made when first needed) of a cache of verified model-file digests, or NULL (the
     * default) for none: every load then hashes every file. With it, a file whose device, inode, size,
     * mtime and ctime are unchanged since its digest was verified is not hashed again (the text encoder's
     * 90 MB cost about 0.1 s a start); a file changed in any way, even with its mtime restored, is hashed
     * again. On CPU the folder's `sessions/` also keeps ONNX Runtime's optimized form of each verified model
     * (ORT format, keyed by the model's sha256, ONNX Runtime's version and this CPU; about 100 ms less to
     * create the emoji U-Net's session; the text encoder's is mapped and used in place: its session about
     * 0.1 s instead of 0.25 s), at most 1 GiB of them. A damaged or unwritable cache only costs the hashing
     * or the optimizing, never a load. The folder is the library's: do not truncate its files while a
     * process uses them. Copied; need not outlive the call.
     */
    const char *digest_cache_dir;
    /**
     * Keep encoded prompts in `digest_cache_dir`'s `prompts/` (ignored without that folder; default false).
     * A prompt drawn before, with the same text encoder, tokenizer, context length, provider, ONNX Runtime
     * and CPU, is taken from there instead of being encoded, and a text-to-image context creates its text
     * encoder's session only when a prompt is not there (on the CPU; a context on a GPU provider makes it at
     * once): a host with a fixed set of prompts never loads the encoder (on CPU about three quarters of a
     * text-to-image set's start). The encoder's files are still checked when the context is created. Entries are embeddings of the prompts (not their text), damaged
     * ones are never used, at most 2048 are kept. Added in version 3 of this struct.
     */
    bool prompt_cache;
    /**
     * MIRAGE_RUNTIME_* bits, 0 by default; other bits are refused. Added in version 4 of this struct.
     * MIRAGE_RUNTIME_CUDA_GRAPH: on CUDA, the U-Net's steps are captured as a CUDA graph per batch shape
     * (at that shape's first steps) and replayed after; its inputs and outputs stay in tensors on the
     * device. A model ONNX Runtime cannot capture runs without graphs (a warning is logged). No effect on
     * TensorRT (not yet tried there) or the CPU.
     */
    uint64_t flags;
} MirageRuntimeOptions;

/**
 * The precision of a context's text encoder (`MirageContextParams::precision`).
 */
typedef uint32_t MiragePrecision;

/**
 * Options of `mirage_context_new`. Fill it with `mirage_context_params_init`.
 */
typedef struct MirageContextParams {
    /**
     * sizeof(MirageContextParams) as the host was compiled; set by `mirage_context_params_init`.
     */
    size_t struct_size;
    /**
     * Provider for this context's sessions; MIRAGE_PROVIDER_DEFAULT = the runtime's.
     */
    MirageProvider provider;
    /**
     * Worker threads that run this context's jobs (`mirage_job_*` in MIRAGE_JOB_WORKERS mode), 1 to
     * MIRAGE_MAX_WORKERS; default 1: the context's jobs run one at a time, in submission order. With more,
     * up to that many run at once (their steps interleave on each model's lock; each session already uses
     * every core, so more workers mostly lower the latency of small jobs behind a big one). The threads
     * start with the first submitted job.
     */
    uint32_t workers;
    /**
     * Jobs submitted and not yet started that the context holds, 1 to MIRAGE_MAX_QUEUED_JOBS; default 64.
     * A submission beyond it fails with MIRAGE_ERR_BUSY instead of growing a queue without limit.
     */
    uint32_t max_queued_jobs;
    /**
     * Prepare the tileable sessions (circular padding) now. Otherwise they are made on the first call with
     * `MirageDiffusionParams::tileable` (a rewrite of the U-Net and the VAE decoder, about as long as
     * loading them); a context made with `mirage_context_new_from_memory` can only get them this way (or
     * from another context sharing the same set that prepared them). Default false. A set that cannot make
     * tileable images (its decoder crops, as the Fashion sets' 8x8 latents to 28x28 images) then fails to open
     * with MIRAGE_ERR_UNSUPPORTED saying so.
     */
    bool tileable;
    /**
     * The text encoder's precision, MIRAGE_PRECISION_*: FP32 (the default) or INT8, its reduced export (an
     * int8 embedding table, f16 linear weights, f32 arithmetic: 34 MB instead of 90 MB to read and load, a
     * start about 1.6x faster; embeddings within cosine 0.999 of FP32's, so images differ slightly from
     * FP32's for the same seed; packs hold only the FP32 encoder). The U-Net and the VAE run in FP32 either
     * way. Sets without a text encoder ignore it; a diffusers folder refuses INT8 (MIRAGE_ERR_UNSUPPORTED),
     * as does an encoder exported before the int8 path (re-export it with `mirage text-encoder export`).
     */
    MiragePrecision precision;
} MirageContextParams;

/**
 * Which model of a set (see `mirage_context_provider`).
 */
typedef uint32_t MirageModelKind;

/**
 * Layout of 8-bit pixels, channels interleaved, rows top to bottom.
 */
typedef uint32_t MiragePixelFormat;

/**
 * A view of 8-bit pixels: a plain struct, no ownership implied.
 *
 * Hosts fill it to pass their own pixels (`mirage_vae_encode` reads them, `mirage_vae_decode_into` writes
 * them); the library fills it to show pixels it owns (`mirage_image_batch_get`). Row `y` starts at
 * `data + y * stride`; a row holds `width` pixels of the format's size, and the bytes between the end of a
 * row and the next row's start are never read or written.
 */
typedef struct MirageImage {
    /**
     * Pixels per row.
     */
    uint32_t width;
    /**
     * Rows.
     */
    uint32_t height;
    /**
     * Bytes from the start of one row to the start of the next; at least width * bytes per pixel.
     * 0 means exactly width * bytes per pixel (packed rows).
     */
    uint32_t stride;
    /**
     * One of MIRAGE_PIXEL_*.
     */
    MiragePixelFormat format;
    /**
     * The first pixel of the first row.
     */
    uint8_t *data;
} MirageImage;

/**
 * How an image is resized to a `MirageTarget` of another size.
 */
typedef uint32_t MirageFilter;

/**
 * Memory the host owns that one image is written into (a texture being uploaded, a frame buffer), with its
 * layout. The library resizes the image to `width` x `height` with `filter`, converts it to `format`, and
 * writes `height` rows of `width` pixels, `stride` bytes apart, inside the `size` bytes at `data`; bytes
 * between rows are left as they are. Every field of every target of a call is checked before the first
 * byte is written, so a wrong size or stride is an error, never a write outside the buffer. Zero the
 * struct (`MirageTarget t = {0};`), then set the fields.
 */
typedef struct MirageTarget {
    /**
     * The first byte of the buffer (the first row top-down, or the image's last row with
     * MIRAGE_TARGET_BOTTOM_UP); aligned to 4 bytes for MIRAGE_PIXEL_RGBA32F.
     */
    void *data;
    /**
     * Bytes available at `data`: at least (height - 1) * stride + width * bytes per pixel.
     */
    size_t size;
    /**
     * Pixels per row, 1 to MIRAGE_MAX_IMAGE_SIDE; need not be the set's: the image is resized.
     */
    uint32_t width;
    /**
     * Rows, 1 to MIRAGE_MAX_IMAGE_SIDE.
     */
    uint32_t height;
    /**
     * Bytes from the start of one row to the start of the next; at least width * bytes per pixel. 0 means
     * exactly that (packed rows).
     */
    size_t stride;
    /**
     * MIRAGE_PIXEL_GRAY8, _RGB8, _RGBA8, _BGRA8 or _RGBA32F.
     */
    MiragePixelFormat format;
    /**
     * MIRAGE_TARGET_* flags, or-ed; 0 = top-down, straight alpha.
     */
    uint32_t flags;
    /**
     * MIRAGE_FILTER_*; 0 = bilinear.
     */
    MirageFilter filter;
} MirageTarget;

/**
 * Called on the calling thread after every step of a generation with the steps done so far (1 to `total`)
 * and the steps in all; `user_data` is the params' own. Return true to continue, false to cancel (the
 * generation then returns MIRAGE_ERR_CANCELLED). It must not unwind (C++ exceptions, longjmp) into mirage.
 */
typedef bool (*MirageProgressCallback)(uint32_t step, uint32_t total, void *user_data);

/**
 * Called on the calling thread after every step with the current estimate of the finished images: `count`
 * images in the params' format, of the set's size. The images and their pixels are borrowed for the
 * duration of the callback only: copy what you keep. Return true to continue, false to cancel. Each call
 * costs one VAE decode. It must not unwind (C++ exceptions, longjmp) into mirage.
 */
typedef bool (*MiragePreviewCallback)(uint32_t step,
                                      const struct MirageImage *images,
                                      size_t count,
                                      void *user_data);

/**
 * Options of `mirage_generate`, `mirage_img2img` and `mirage_inpaint`. Fill it with
 * `mirage_diffusion_params_init`, then set what you need. The params are read during the call and not
 * kept (the `sampler` string too).
 */
typedef struct MirageDiffusionParams {
    /**
     * sizeof(MirageDiffusionParams) as the host was compiled; set by `mirage_diffusion_params_init`.
     */
    size_t struct_size;
    /**
     * Sampler steps of a full generation, 1 to 1000; default 50. img2img and inpaint run the `strength`
     * fraction of them (at least one; a diffusers folder runs `int(steps * strength)` as diffusers does, and
     * refuses 0, and its PNDM scheduler makes one U-Net call more than its steps: `progress` counts calls).
     */
    uint32_t steps;
    /**
     * NULL or "" or "auto" (default): the set's own — "ddim" for mirage's sets, the folder's scheduler for a
     * diffusers folder. "ddim", "dpm++2m" (DPM-Solver++ 2M: good images in fewer steps); diffusers folders
     * also "dpm++2m-karras", "euler", "euler-a", "pndm", "lcm". UTF-8, case-insensitive.
     */
    const char *sampler;
    /**
     * DDIM's randomness in [0, 1]: 0 (default) is deterministic, 1 as stochastic as DDPM. Must be 0 to 1
     * for any sampler; dpm++2m ignores it.
     */
    float eta;
    /**
     * Seed of the initial noise and of stochastic sampling: the same inputs and seed give the same pixels
     * (on one machine and provider). Default 0.
     */
    uint64_t seed;
    /**
     * `mirage_generate` only: images made together, 1 to 1024; default 1. img2img and inpaint make one
     * image per input and ignore it.
     */
    uint32_t count;
    /**
     * img2img and inpaint: how far into the noise the input is pushed, in (0, 1]. Default 1, which keeps
     * nothing of the input: callers of img2img set it (0.5 to 0.8 to re-imagine; "denoise" is img2img at
     * 0.3 to 0.5 with the deterministic DDIM). Inpaint works at 1 (the mask's region is invented anew);
     * lower values keep more of what the region held. `mirage_generate` ignores it.
     */
    float strength;
    /**
     * Optional (NULL = none): progress after each step; may cancel.
     */
    MirageProgressCallback progress;
    /**
     * Optional (NULL = none): the current estimate of the images after each step; may cancel.
     */
    MiragePreviewCallback preview;
    /**
     * Passed unchanged to `progress` and `preview`.
     */
    void *user_data;
    /**
     * MIRAGE_PIXEL_* of the results and of the previews; default MIRAGE_PIXEL_RGBA8. Converted from the
     * set's channels as `mirage_vae_decode` converts.
     */
    MiragePixelFormat format;
    /**
     * Text-conditioned sets (`mirage_context_text_shape` succeeds): what to draw, UTF-8. NULL or "" (the
     * default) = unconditional. Prompts longer than the set's token count are truncated (logged as a
     * warning). A set without text conditioning refuses a non-empty prompt (MIRAGE_ERR_UNSUPPORTED).
     */
    const char *prompt;
    /**
     * What to steer away from, UTF-8: classifier-free guidance pushes away from it instead of from the
     * empty prompt. NULL or "" (the default) = nothing.
     */
    const char *negative_prompt;
    /**
     * Classifier-free guidance scale: prediction = uncond + guidance * (cond - uncond). In [0, 50]; 1 uses
     * the prompt alone (one U-Net run per step instead of two), higher follows the prompt more closely.
     * MIRAGE_GUIDANCE_DEFAULT (-1, the default) takes the set's own (from its manifest). NaN, other negative
     * values and values over MIRAGE_MAX_GUIDANCE (50) are refused. It applies only with a prompt or a negative
     * prompt (and to `mirage_interpolate`): without either the generation is unconditional and `guidance`
     * is ignored, not even checked. The CLI's `--guidance` follows the same rule.
     */
    float guidance;
    /**
     * Images that wrap seamlessly at their edges (textures, patterns): the U-Net and the VAE decoder run
     * with circular padding (see `MirageContextParams::tileable` for when those sessions are made). Applies
     * to generate, img2img, inpaint and interpolate. Default false. A set whose decoder crops (the Fashion
     * sets: 8x8 latents to 28x28 images) cannot wrap and refuses it with MIRAGE_ERR_UNSUPPORTED.
     */
    bool tileable;
    /**
     * Optional (NULL = from `seed`, the default): the initial noise, a latent of the set's diffusion shape
     * (`mirage_context_latent_shape` for a latent-space set) holding one sample per image — `count` for
     * generate, one per input image for img2img and inpaint, exactly 1 for interpolate (shared by every
     * frame). Reproduces a generation across runs and implementations; rolling it by a multiple of the
     * U-Net's downsampling factor rolls a tileable image. Read during the call (or the submission) and not
     * kept. Stochastic sampling (eta > 0) still draws its later noise from `seed`. `mirage_denoise` adds
     * no noise and refuses it.
     */
    const struct MirageLatent *noise;
} MirageDiffusionParams;

/**
 * Who runs a job.
 */
typedef uint32_t MirageJobMode;

/**
 * Options of a job. Fill it with `mirage_job_params_init`; NULL where a function takes it = the defaults.
 */
typedef struct MirageJobParams {
    /**
     * sizeof(MirageJobParams) as the host was compiled; set by `mirage_job_params_init`.
     */
    size_t struct_size;
    /**
     * MIRAGE_JOB_WORKERS (default) or MIRAGE_JOB_MANUAL.
     */
    MirageJobMode mode;
    /**
     * Keep the latest estimate of the images after each step for `mirage_job_preview` (one VAE decode per
     * step). Default false.
     */
    bool previews;
} MirageJobParams;

/**
 * Where a job is.
 */
typedef uint32_t MirageJobState;

/**
 * Success.
 */
#define MIRAGE_OK 0

/**
 * A NULL pointer, a wrong size, shape, format or struct_size, a NaN, a value out of range, a string that
 * is not UTF-8. The message names the argument.
 */
#define MIRAGE_ERR_INVALID_ARGUMENT 1

/**
 * The ONNX Runtime shared library could not be found or loaded.
 */
#define MIRAGE_ERR_RUNTIME_LOAD 2

/**
 * `mirage_runtime_init` was called after the runtime had been set up with other options (ONNX Runtime
 * can be loaded once per process).
 */
#define MIRAGE_ERR_RUNTIME_ALREADY_INITIALISED 3

/**
 * A model directory, its manifest.json or a model file it lists does not exist.
 */
#define MIRAGE_ERR_MODEL_NOT_FOUND 4

/**
 * A manifest or model file is unusable: bad JSON, another format_version, wrong shapes, sha256 mismatch,
 * a file ONNX Runtime rejects.
 */
#define MIRAGE_ERR_INVALID_MODEL 5

/**
 * The model set lacks what the call needs (e.g. a VAE), or a strict execution provider is unavailable.
 */
#define MIRAGE_ERR_UNSUPPORTED 6

/**
 * ONNX Runtime failed while running a model.
 */
#define MIRAGE_ERR_INFERENCE 7

/**
 * Reading or writing a file failed.
 */
#define MIRAGE_ERR_IO 8

/**
 * An image file could not be decoded or encoded.
 */
#define MIRAGE_ERR_IMAGE 9

/**
 * The host cancelled the operation.
 */
#define MIRAGE_ERR_CANCELLED 10

/**
 * A bug in mirage: a panic was caught at the API boundary. The message says where it came from.
 */
#define MIRAGE_ERR_PANIC 11

/**
 * A bounded queue is full: the context already holds `max_queued_jobs` jobs that have not started
 * (`MirageContextParams`). Nothing was submitted; try again once some of them have started or ended.
 */
#define MIRAGE_ERR_BUSY 12

/**
 * Whatever the level above says: for a context, the runtime's provider; for the runtime, AUTO.
 */
#define MIRAGE_PROVIDER_DEFAULT 0

/**
 * The fastest available: TensorRT, then CUDA, then CPU.
 */
#define MIRAGE_PROVIDER_AUTO 1

/**
 * NVIDIA TensorRT (falls back to CPU unless strict).
 */
#define MIRAGE_PROVIDER_TENSORRT 2

/**
 * NVIDIA CUDA (falls back to CPU unless strict).
 */
#define MIRAGE_PROVIDER_CUDA 3

/**
 * The CPU; always available.
 */
#define MIRAGE_PROVIDER_CPU 4

/**
 * Detail for debugging (includes ONNX Runtime's informational lines).
 */
#define MIRAGE_LOG_DEBUG 0

/**
 * Milestones: the library loaded, the provider each session got.
 */
#define MIRAGE_LOG_INFO 1

/**
 * Something the host should know: e.g. a provider fell back to CPU.
 */
#define MIRAGE_LOG_WARN 2

/**
 * A failure (also returned as a status).
 */
#define MIRAGE_LOG_ERROR 3

/**
 * 32-bit float weights: the reference.
 */
#define MIRAGE_PRECISION_FP32 0

/**
 * The reduced export: int8 embedding table, 16-bit float linear weights, 32-bit float arithmetic.
 */
#define MIRAGE_PRECISION_INT8 1

/**
 * The VAE encoder (image -> latent mean and log-variance).
 */
#define MIRAGE_MODEL_VAE_ENCODER 1

/**
 * The VAE decoder (latent -> image).
 */
#define MIRAGE_MODEL_VAE_DECODER 2

/**
 * The diffusion U-Net (noise prediction).
 */
#define MIRAGE_MODEL_UNET 3

/**
 * The text encoder of a text-conditioned set (prompts -> embeddings).
 */
#define MIRAGE_MODEL_TEXT_ENCODER 4

/**
 * 1 byte per pixel: grey.
 */
#define MIRAGE_PIXEL_GRAY8 1

/**
 * 3 bytes per pixel: red, green, blue.
 */
#define MIRAGE_PIXEL_RGB8 2

/**
 * 4 bytes per pixel: red, green, blue, alpha (straight, not premultiplied).
 */
#define MIRAGE_PIXEL_RGBA8 3

/**
 * 4 bytes per pixel: blue, green, red, alpha (Windows bitmaps, Direct3D, many engines' textures).
 * Only for a `MirageTarget`.
 */
#define MIRAGE_PIXEL_BGRA8 4

/**
 * 16 bytes per pixel: red, green, blue, alpha as native-endian floats, colour converted from sRGB to
 * linear light (alpha as is), what HDR and linear-workflow renderers upload. Only for a `MirageTarget`.
 */
#define MIRAGE_PIXEL_RGBA32F 5

/**
 * Linear interpolation between the four nearest pixels, in premultiplied alpha (no dark fringes around
 * transparent areas). The default (0).
 */
#define MIRAGE_FILTER_BILINEAR 0

/**
 * Each target pixel copies the source pixel it falls in: crisp pixel art at integer scales.
 */
#define MIRAGE_FILTER_NEAREST 1

/**
 * The context's worker threads (`MirageContextParams::workers`) run it, in submission order. The default.
 */
#define MIRAGE_JOB_WORKERS 0

/**
 * Nobody until the host calls `mirage_job_advance`: a game loop spends a time budget on it each frame on
 * its own thread, with no worker thread at all.
 */
#define MIRAGE_JOB_MANUAL 1

/**
 * Submitted; no step has run yet.
 */
#define MIRAGE_JOB_QUEUED 1

/**
 * At least one step has run, not all.
 */
#define MIRAGE_JOB_RUNNING 2

/**
 * Every step has run: the result waits to be taken.
 */
#define MIRAGE_JOB_DONE 3

/**
 * A step failed: `mirage_job_take_*` returns the error (status and message).
 */
#define MIRAGE_JOB_FAILED 4

/**
 * Cancelled before it finished: `mirage_job_take_*` returns MIRAGE_ERR_CANCELLED.
 */
#define MIRAGE_JOB_CANCELLED 5

#ifdef __cplusplus
extern "C" {
#endif // __cplusplus

/**
 * A short static description of `status`, e.g. "invalid argument"; "unknown status" for a value this
 * library does not define. Never NULL; the text is static: do not free it.
 */
const char *mirage_status_str(MirageStatus status);

/**
 * Copies the detailed message of the calling thread's last failed call into `buf`, snprintf-style:
 * at most `len - 1` bytes followed by a NUL (cut at a UTF-8 character boundary, so the copy stays valid
 * UTF-8), and returns the full message length in bytes without the NUL. Call it with `len == 0` (`buf` may
 * then be NULL) to learn the size, then again with `len >= size + 1`.
 *
 * The message is UTF-8 and belongs to the most recent call on this thread that returns `MirageStatus`:
 * every such call clears it, a failing one sets it, so after `MIRAGE_OK` the length is 0. Functions that
 * return no status (the `_free` functions, `mirage_image_batch_count`, `mirage_version`, ...) leave it as it
 * is, so a handle freed between a failing call and this one does not lose its message; only a `_free` of a
 * handle that is not live sets it. Calls on other threads never change it. `buf` is written only when it
 * is not NULL and `len > 0`.
 */
size_t mirage_last_error(char *buf, size_t len);

/**
 * This library's version as "MAJOR.MINOR.PATCH" (Cargo.toml's). Compare it with MIRAGE_VERSION_STRING to
 * detect a header/library mismatch. Never NULL; static: do not free it.
 */
const char *mirage_version(void);

/**
 * The name of a provider ("default", "auto", "tensorrt", "cuda", "cpu"), or "unknown". Static: do not free.
 */
const char *mirage_provider_name(MirageProvider provider);

/**
 * Fills `options` with the defaults (search for ONNX Runtime, AUTO provider, not strict, ORT's thread
 * count, log warnings to stderr, no TensorRT cache, no digest cache, no prompt cache). Pass `sizeof(MirageRuntimeOptions)` as `struct_size`: the library
 * writes exactly that many bytes, zeroing what it does not know, so a host built against an older or
 * newer header is handled (see `mirage_runtime_init`).
 *
 * Errors: MIRAGE_ERR_INVALID_ARGUMENT when `options` is NULL or `struct_size` is smaller than this
 * library's struct and not the size of an earlier version of it.
 */
MirageStatus mirage_runtime_options_init(struct MirageRuntimeOptions *options,
                                         size_t struct_size);

/**
 * Sets up the process-wide runtime: loads ONNX Runtime and installs the log callback. Optional: contexts
 * created without it use the defaults of `mirage_runtime_options_init`. Call it once, before the first
 * context, from one thread. Calling it again with the same runtime options (`ort_library_path`, `provider`,
 * `strict`, `intra_threads`, `tensorrt_fp16`, `tensorrt_cache_dir`, `flags`, ...) succeeds and replaces the log callback,
 * its user data and the level (a NULL callback restores stderr: how a host that unloads the code of its
 * callback, e.g. a scripting engine reloading, detaches it first); with other runtime options it fails with
 * MIRAGE_ERR_RUNTIME_ALREADY_INITIALISED (ONNX Runtime can be loaded once per process; a context created
 * first loads it with the defaults).
 *
 * `options` is read during the call and not kept (its strings are copied); `log_user_data` is kept and
 * handed to `log_callback` until the process ends or another successful `mirage_runtime_init` replaces it.
 *
 * `options->struct_size` (the rule of every params struct): the `sizeof` of an earlier version of the
 * struct (a host built against an older header) reads that version's fields and takes the defaults for the
 * fields added since; another size below this library's is refused; larger (a host built against a newer
 * header) is accepted only when every byte beyond the fields this library knows is zero, so a field the
 * host set is never silently ignored; over 4096 (an uninitialised field) is refused.
 *
 * Errors: MIRAGE_ERR_INVALID_ARGUMENT (NULL `options`, bad struct_size, provider or level values,
 * intra_threads over MIRAGE_MAX_THREADS, a path that is not UTF-8), MIRAGE_ERR_RUNTIME_LOAD, MIRAGE_ERR_RUNTIME_ALREADY_INITIALISED.
 */
MirageStatus mirage_runtime_init(const struct MirageRuntimeOptions *options);

/**
 * Fills `params` with the defaults (the runtime's provider, 1 worker, 64 queued jobs, tileable false,
 * MIRAGE_PRECISION_FP32). Pass `sizeof(MirageContextParams)` as
 * `struct_size`; the struct_size rule is that of `mirage_runtime_init`.
 *
 * Errors: MIRAGE_ERR_INVALID_ARGUMENT when `params` is NULL or `struct_size` is too small.
 */
MirageStatus mirage_context_params_init(struct MirageContextParams *params, size_t struct_size);

/**
 * Opens the model set at `model_dir` (UTF-8): a model-set directory, or a pack file made by `mirage pack`
 * (told apart by what the path is). Reads and validates its manifest, checks the sha256 of every model file
 * and creates the ONNX sessions (loading ONNX Runtime with the default options if `mirage_runtime_init` was
 * not called) — or shares those of a context already open on the same set. `params` may be NULL for the
 * defaults.
 *
 * On success `*out` receives a new context, owned by the caller and freed with `mirage_context_free`.
 * Nothing is borrowed: `model_dir` and `params` need not outlive the call.
 *
 * Errors: MIRAGE_ERR_INVALID_ARGUMENT (NULL `model_dir` or `out`, a path that is not UTF-8, bad params:
 * workers or max_queued_jobs 0 or over their MIRAGE_MAX_*), MIRAGE_ERR_MODEL_NOT_FOUND (no such directory
 * or file, no manifest.json, a listed file missing), MIRAGE_ERR_INVALID_MODEL (bad manifest, other
 * format_version, sha256 mismatch, a file ONNX Runtime rejects, a damaged or foreign pack),
 * MIRAGE_ERR_RUNTIME_LOAD, MIRAGE_ERR_UNSUPPORTED (strict provider unavailable), MIRAGE_ERR_IO.
 */
MirageStatus mirage_context_new(const char *model_dir,
                                const struct MirageContextParams *params,
                                struct MirageContext **out);

/**
 * Opens a model pack (the file `mirage pack` writes) held in memory the host owns: `size` bytes at `data`,
 * e.g. an asset of the host's own archive. The bytes are read during the call only: nothing points into
 * them afterwards, so the host may free or reuse the buffer as soon as this returns. Copies are made only
 * where ONNX Runtime needs its own (the sessions). Otherwise as `mirage_context_new`; set
 * `params->tileable` to be able to generate tileable images (they cannot be prepared later, the buffer
 * being gone).
 *
 * Errors: as `mirage_context_new`; a truncated, corrupted or foreign buffer gives
 * MIRAGE_ERR_INVALID_MODEL with what is wrong (bad magic, other format version, header or entry checksum,
 * an entry outside the buffer), NULL `data` MIRAGE_ERR_INVALID_ARGUMENT.
 */
MirageStatus mirage_context_new_from_memory(const void *data,
                                            size_t size,
                                            const struct MirageContextParams *params,
                                            struct MirageContext **out);

/**
 * Frees a context and its sessions (those shared with another context live on with it). NULL does
 * nothing. The latents and image batches made with it stay valid (they do not borrow it). Its jobs in
 * MIRAGE_JOB_WORKERS mode are cancelled and its worker threads stopped (each within one step); the job
 * handles stay valid (state MIRAGE_JOB_CANCELLED unless they had ended) until `mirage_job_free`. Jobs in
 * MIRAGE_JOB_MANUAL mode keep the model set alive and still run.
 *
 * Generations (`mirage_generate`, `mirage_img2img`, `mirage_denoise`, `mirage_inpaint`, `mirage_interpolate`) may
 * be running on it on other threads: they are cancelled, and this call waits until they have returned (within one
 * step; they return MIRAGE_ERR_CANCELLED), so that no callback of this context runs after it returns. Called from
 * inside a callback of a generation on this context, it does not wait for that generation (it would wait for
 * itself): that one returns MIRAGE_ERR_CANCELLED after the callback (or MIRAGE_OK if it was the last step). Every
 * other call (the VAE functions, getters) must have returned, and no call may start with a context once its free
 * has begun: as for any freed handle, that is undefined behaviour.
 */
void mirage_context_free(struct MirageContext *ctx);

/**
 * Cancels every generation running on `ctx` (`mirage_generate`, `mirage_img2img`, `mirage_denoise`,
 * `mirage_inpaint`, `mirage_interpolate`, on any thread): each returns MIRAGE_ERR_CANCELLED before its next step,
 * so within one step. Also cancels every job of the context's workers, queued or running (not
 * MIRAGE_JOB_MANUAL jobs: cancel those with `mirage_job_cancel`). Safe to call from any thread, including from inside a callback. Locks the context's short
 * list of running generations.
 *
 * A cancel reaches only the generations running when it is made: one that starts afterwards runs normally
 * (each generation starts with its own clear flag). So a cancel on an idle context does nothing and returns
 * MIRAGE_OK, and a cancel racing with the start of a generation may be dropped; to stop one generation
 * among several, return false from its progress callback instead.
 *
 * Errors: MIRAGE_ERR_INVALID_ARGUMENT (NULL `ctx`).
 */
MirageStatus mirage_context_cancel(const struct MirageContext *ctx);

/**
 * The size of the images the set works on: `*width`, `*height` in pixels and `*channels` (1 grey, 3 RGB,
 * 4 RGBA). Images passed to `mirage_vae_encode` must have exactly this size and channel count.
 *
 * Errors: MIRAGE_ERR_INVALID_ARGUMENT (a NULL argument).
 */
MirageStatus mirage_context_image_size(const struct MirageContext *ctx,
                                       uint32_t *width,
                                       uint32_t *height,
                                       uint32_t *channels);

/**
 * The shape of one latent of the set, `shape[3]` = {channels, height, width}. A `MirageLatent` holding
 * `n` of them has the shape {n, channels, height, width}.
 *
 * Errors: MIRAGE_ERR_INVALID_ARGUMENT (a NULL argument), MIRAGE_ERR_UNSUPPORTED (the set has no VAE).
 */
MirageStatus mirage_context_latent_shape(const struct MirageContext *ctx, uint32_t shape[3]);

/**
 * The execution provider a model of the set really runs on (MIRAGE_PROVIDER_TENSORRT, _CUDA or _CPU):
 * it can differ from the one asked for, because an unavailable provider falls back to CPU unless strict.
 *
 * Errors: MIRAGE_ERR_INVALID_ARGUMENT (a NULL argument, an unknown `kind`), MIRAGE_ERR_UNSUPPORTED (the set
 * has no model of that kind).
 */
MirageStatus mirage_context_provider(const struct MirageContext *ctx,
                                     MirageModelKind kind,
                                     MirageProvider *provider);

/**
 * Copies the set's name (manifest.json's "name", UTF-8) into `buf`, snprintf-style as
 * `mirage_last_error`: at most `len - 1` bytes and a NUL; `*needed` (may be NULL) receives the full length
 * without the NUL. `buf` may be NULL when `len` is 0.
 *
 * Errors: MIRAGE_ERR_INVALID_ARGUMENT (NULL `ctx`, NULL `buf` with `len > 0`).
 */
MirageStatus mirage_context_name(const struct MirageContext *ctx, char *buf, size_t len, size_t *needed);

/**
 * The number of images in `batch`; 0 for NULL.
 */
size_t mirage_image_batch_count(const struct MirageImageBatch *batch);

/**
 * Describes image `index` of `batch` in `*image`: packed rows (stride = width * bytes per pixel), the
 * batch's format. `image->data` points into the batch: it stays valid until `mirage_image_batch_free` and
 * must only be read (it is the library's memory).
 *
 * Errors: MIRAGE_ERR_INVALID_ARGUMENT (a NULL argument, `index >= count`).
 */
MirageStatus mirage_image_batch_get(const struct MirageImageBatch *batch,
                                    size_t index,
                                    struct MirageImage *image);

/**
 * Writes image `index` of `batch` into host memory described by `target` (resized, converted, in the
 * target's row order and alpha mode; see `MirageTarget`). Every field is checked before a byte is written;
 * nothing is kept. MIRAGE_PIXEL_RGBA32F holds the 8-bit sRGB pixels converted to linear light (as every
 * target does, whatever its format: images are made at 8 bits per channel).
 *
 * Errors: MIRAGE_ERR_INVALID_ARGUMENT (a NULL argument, `index >= count`, a bad target: NULL data, zero or
 * oversized width or height, a stride smaller than a row, a size smaller than the layout needs, an unknown
 * format, filter or flag).
 */
MirageStatus mirage_image_batch_write(const struct MirageImageBatch *batch,
                                      size_t index,
                                      const struct MirageTarget *target);

/**
 * Frees a batch and its pixels. NULL does nothing. Every `MirageImage` got from it dangles afterwards.
 */
void mirage_image_batch_free(struct MirageImageBatch *batch);

/**
 * Makes a latent from `len` floats at `data` (copied; `data` need not outlive the call) and its
 * `shape[4]` = {n, channels, height, width}; `len` must equal the product of the shape. Any float is
 * accepted here; the `mirage_vae_*` functions refuse NaN and infinity.
 *
 * On success `*out` receives a new latent, owned by the caller and freed with `mirage_latent_free`.
 *
 * Errors: MIRAGE_ERR_INVALID_ARGUMENT (a NULL argument, a zero dimension, `len` not the shape's product).
 */
MirageStatus mirage_latent_new(const float *data,
                               size_t len,
                               const uint32_t shape[4],
                               struct MirageLatent **out);

/**
 * Copies the latent's shape {n, channels, height, width} into `shape[4]`.
 *
 * Errors: MIRAGE_ERR_INVALID_ARGUMENT (a NULL argument).
 */
MirageStatus mirage_latent_shape(const struct MirageLatent *latent, uint32_t shape[4]);

/**
 * Gives the latent's floats: `*data` points to `*len` values in NCHW order. Borrowed: the pointer belongs
 * to the latent, stays valid until `mirage_latent_free`, and must only be read.
 *
 * Errors: MIRAGE_ERR_INVALID_ARGUMENT (a NULL argument).
 */
MirageStatus mirage_latent_data(const struct MirageLatent *latent, const float **data, size_t *len);

/**
 * Frees a latent. NULL does nothing. Pointers got from `mirage_latent_data` dangle afterwards.
 */
void mirage_latent_free(struct MirageLatent *latent);

/**
 * Encodes `count` images into the latent distribution the VAE gives each: on success `*mean` and
 * `*logvar` receive new latents of shape {count, channels, height, width} (see
 * `mirage_context_latent_shape`), owned by the caller and freed with `mirage_latent_free`.
 *
 * `images` is an array of `count` host images, read during the call and not kept. Each must have exactly
 * the set's width, height and channel count (`mirage_context_image_size`: a grey set takes
 * MIRAGE_PIXEL_GRAY8); any stride is honoured. Runs the encoder session (locks it for the call).
 *
 * Errors: MIRAGE_ERR_INVALID_ARGUMENT (a NULL argument, `mean == logvar`, `count` 0 or over 1024, an image
 * of the wrong size or format, a bad stride), MIRAGE_ERR_UNSUPPORTED (no VAE), MIRAGE_ERR_INFERENCE.
 */
MirageStatus mirage_vae_encode(const struct MirageContext *ctx,
                               const struct MirageImage *images,
                               size_t count,
                               struct MirageLatent **mean,
                               struct MirageLatent **logvar);

/**
 * Draws one latent per item from the distributions `mean`, `logvar` (as `mirage_vae_encode` gives them):
 * z = mean + exp(logvar / 2) * eps, with eps standard-normal noise from `seed`. The same inputs and seed
 * give the same bits. On success `*out` receives a new latent of the same shape, owned by the caller.
 *
 * `mean` and `logvar` are read during the call and not kept; they must have the same shape, one that
 * matches the context's latents, and finite values.
 *
 * Errors: MIRAGE_ERR_INVALID_ARGUMENT (a NULL argument, mismatched shapes, NaN or infinite values),
 * MIRAGE_ERR_UNSUPPORTED (no VAE).
 */
MirageStatus mirage_vae_sample(const struct MirageContext *ctx,
                               const struct MirageLatent *mean,
                               const struct MirageLatent *logvar,
                               uint64_t seed,
                               struct MirageLatent **out);

/**
 * Draws `count` random points of the prior N(0, I), shaped as the context's latents: decode them to get
 * new images. The same seed gives the same bits. On success `*out` receives a new latent of shape
 * {count, channels, height, width}, owned by the caller.
 *
 * Errors: MIRAGE_ERR_INVALID_ARGUMENT (NULL `ctx` or `out`, `count` 0 or over 1024),
 * MIRAGE_ERR_UNSUPPORTED (no VAE).
 *
 * Decoded, these points are images only on a set made for it: see `mirage_context_prior_sampleable`.
 */
MirageStatus mirage_vae_sample_prior(const struct MirageContext *ctx,
                                     size_t count,
                                     uint64_t seed,
                                     struct MirageLatent **out);

/**
 * Whether the set's VAE was made for decoding points of its prior N(0, I) (`"prior": "sampleable"` in the
 * set's manifest, e.g. models/fashion-vae): `*sampleable` is true when `mirage_vae_sample_prior` +
 * `mirage_vae_decode` give images, false when they may give blobs (a VAE trained for reconstruction and for
 * diffusion in its latent space; such a set draws new images with `mirage_generate`). Hosts can offer
 * prior sampling and latent walks only where it is true, or warn.
 *
 * Errors: MIRAGE_ERR_INVALID_ARGUMENT (a NULL argument), MIRAGE_ERR_UNSUPPORTED (the set has no VAE).
 */
MirageStatus mirage_context_prior_sampleable(const struct MirageContext *ctx, bool *sampleable);

/**
 * Decodes latents into images of `format` (converted from the set's channels: grey is replicated into
 * RGB, alpha is 255). On success `*out` receives a new batch of n images of the set's size, owned by the
 * caller and freed with `mirage_image_batch_free`. `latents` is read during the call and not kept. Runs
 * the decoder session (locks it for the call).
 *
 * Errors: MIRAGE_ERR_INVALID_ARGUMENT (a NULL argument, a shape that does not match the context's latents,
 * NaN or infinite values, an unknown format), MIRAGE_ERR_UNSUPPORTED (no VAE), MIRAGE_ERR_INFERENCE.
 */
MirageStatus mirage_vae_decode(const struct MirageContext *ctx,
                               const struct MirageLatent *latents,
                               MiragePixelFormat format,
                               struct MirageImageBatch **out);

/**
 * Decodes latents straight into host-owned pixels (a texture, a canvas): `images` is an array of `count`
 * host images, one per latent (`count` must equal the latents' n), each of the set's width and height, in
 * any MIRAGE_PIXEL_* format (converted as in `mirage_vae_decode`) and any stride. Only the pixels of each
 * row are written, and only on success: every argument is checked and the decoder has run before the
 * first byte is written. Nothing is kept after the call.
 *
 * Errors: as `mirage_vae_decode`, plus MIRAGE_ERR_INVALID_ARGUMENT for a wrong `count`, image size, format
 * or stride, or NULL `data`.
 */
MirageStatus mirage_vae_decode_into(const struct MirageContext *ctx,
                                    const struct MirageLatent *latents,
                                    const struct MirageImage *images,
                                    size_t count);

/**
 * Fills `params` with the defaults: 50 steps, the set's own sampler (`sampler` NULL), eta 0, seed 0, count 1, strength 1,
 * no callbacks, user_data NULL, format MIRAGE_PIXEL_RGBA8, no prompt and no negative prompt, guidance
 * MIRAGE_GUIDANCE_DEFAULT, tileable false, noise NULL. Pass `sizeof(MirageDiffusionParams)` as
 * `struct_size`; the struct_size rule is that of `mirage_runtime_init`. img2img and inpaint callers then
 * set `strength`.
 *
 * Errors: MIRAGE_ERR_INVALID_ARGUMENT when `params` is NULL or `struct_size` is too small.
 */
MirageStatus mirage_diffusion_params_init(struct MirageDiffusionParams *params,
                                          size_t struct_size);

/**
 * Generates `params->count` images from noise with the set's U-Net, then decodes them (through the VAE for
 * a latent-space set). On success `*out` receives a new batch of `count` images of the set's size in
 * `params->format`, owned by the caller and freed with `mirage_image_batch_free`.
 *
 * Callbacks run on the calling thread, between steps. The call can be cancelled by its progress or preview
 * callback returning false, or by `mirage_context_cancel` from any thread: it then returns
 * MIRAGE_ERR_CANCELLED within one step and `*out` is not written. Runs the U-Net (and the VAE decoder)
 * session, locking each for one step at a time, so generations on one context interleave step by step.
 *
 * Errors: MIRAGE_ERR_INVALID_ARGUMENT (a NULL argument, bad params: steps 0 or over 1000, an unknown or
 * non-UTF-8 sampler, eta NaN or outside [0, 1], count 0 or over 1024 (over 512 with guidance), an unknown
 * format, a non-UTF-8 prompt or negative prompt, with a prompt or negative prompt a guidance NaN, negative
 * (other than MIRAGE_GUIDANCE_DEFAULT) or over 50, struct_size), MIRAGE_ERR_UNSUPPORTED (the set has no diffusion
 * U-Net, or a prompt or negative prompt was given to a set that is not text-conditioned),
 * MIRAGE_ERR_CANCELLED, MIRAGE_ERR_INFERENCE.
 */
MirageStatus mirage_generate(const struct MirageContext *ctx,
                             const struct MirageDiffusionParams *params,
                             struct MirageImageBatch **out);

/**
 * Re-imagines `count` host images: pushes each `params->strength` of the way into noise, then denoises it
 * with the U-Net. Small strengths stay close to the input; 1 ignores it. To remove noise from an image
 * without adding any, use `mirage_denoise`. On success `*out` receives a new batch of `count`
 * images (one per input, in order) in `params->format`, owned by the caller.
 *
 * `images` is an array of `count` (1 to 1024) host images, read during the call and not kept, each of the
 * set's width, height and channel count (`mirage_context_image_size`), any stride. `params->count` is
 * ignored. Callbacks, cancellation and locking as `mirage_generate`.
 *
 * Errors: as `mirage_generate`, plus MIRAGE_ERR_INVALID_ARGUMENT for `count`, an image of the wrong size or
 * format, a bad stride, NULL data, and a strength NaN or outside (0, 1]; MIRAGE_ERR_UNSUPPORTED also when a
 * latent-space set has no VAE.
 */
MirageStatus mirage_img2img(const struct MirageContext *ctx,
                            const struct MirageImage *images,
                            size_t count,
                            const struct MirageDiffusionParams *params,
                            struct MirageImageBatch **out);

/**
 * Removes noise from `count` host images: each image's latent is taken to be a diffusion sample at the level
 * `params->strength` as it is (scaled by that level's signal rate, no noise added) and the remaining steps
 * take out what the U-Net sees as noise. Nothing random is added, so the result stays close to the input;
 * pick the strength that matches the input's noise (0.05 to 0.2 for mild noise, higher for noisier input).
 * On success `*out` receives a new batch of `count` images in `params->format`, owned by the caller.
 *
 * Arguments, callbacks, cancellation, locking and errors as `mirage_img2img`.
 */
MirageStatus mirage_denoise(const struct MirageContext *ctx,
                            const struct MirageImage *images,
                            size_t count,
                            const struct MirageDiffusionParams *params,
                            struct MirageImageBatch **out);

/**
 * Fills the masked region of `count` host images so that it fits the rest of each image; pixels where the
 * mask is 0 come back exactly as they went in (when `params->format` is the images' format). On success
 * `*out` receives a new batch of `count` images in `params->format`, owned by the caller.
 *
 * `images` as in `mirage_img2img`. `masks` is an array of `count` MIRAGE_PIXEL_GRAY8 host images of the
 * same size: 255 = invent this pixel, 0 = keep it, values between blend (soft edges). Both are read during
 * the call and not kept. `params->strength` is usually 1. Callbacks, cancellation and locking as
 * `mirage_generate`.
 *
 * Errors: as `mirage_img2img`, plus MIRAGE_ERR_INVALID_ARGUMENT for a mask that is not GRAY8, of another
 * size, or with NULL data.
 */
MirageStatus mirage_inpaint(const struct MirageContext *ctx,
                            const struct MirageImage *images,
                            const struct MirageImage *masks,
                            size_t count,
                            const struct MirageDiffusionParams *params,
                            struct MirageImageBatch **out);

/**
 * Morphs between prompts: `frames` images (2 to 1024) along a path through the `prompt_count` prompts (at
 * least 2) in turn, all from the same initial noise (`params->seed`), so that only the text changes from
 * frame to frame: token embeddings are interpolated linearly, pooled embeddings by slerp. On success `*out`
 * receives a new batch of `frames` images in `params->format`, in path order, owned by the caller.
 *
 * `prompts` is an array of `prompt_count` UTF-8 strings, read during the call and not kept.
 * `params->prompt` is ignored; `negative_prompt`, `guidance`, `steps`, `sampler`, `eta`, callbacks and
 * `format` apply to every frame; `params->count` is how many frames run in one U-Net batch (1 = one at a
 * time). Progress and preview count steps over all frames; a preview shows the frames of the running batch.
 * Cancellation and locking as `mirage_generate`.
 *
 * Errors: as `mirage_generate`, plus MIRAGE_ERR_INVALID_ARGUMENT for fewer than 2 prompts, a NULL or
 * non-UTF-8 prompt, `frames` outside 2..=1024; MIRAGE_ERR_UNSUPPORTED when the set is not
 * text-conditioned.
 */
MirageStatus mirage_interpolate(const struct MirageContext *ctx,
                                const char *const *prompts,
                                size_t prompt_count,
                                uint32_t frames,
                                const struct MirageDiffusionParams *params,
                                struct MirageImageBatch **out);

/**
 * The text conditioning of the set: `*tokens` per prompt ([CLS] and [SEP] included; prompts are padded or
 * truncated to it) and the embedding `*width` (384 for MiniLM-L6). A prompt's token embeddings are
 * tokens x width floats, its pooled embedding width floats.
 *
 * Errors: MIRAGE_ERR_INVALID_ARGUMENT (a NULL argument), MIRAGE_ERR_UNSUPPORTED (the set's U-Net is not
 * text-conditioned, or it has none).
 */
MirageStatus mirage_context_text_shape(const struct MirageContext *ctx, uint32_t *tokens, uint32_t *width);

/**
 * Embeds `prompt` (UTF-8; "" is the unconditional prompt) with the set's text encoder, into host buffers:
 * `pooled` receives the L2-normalised sentence embedding (`width` floats, `pooled_len` must be at least
 * that), and `token_embeddings`, unless NULL, the per-token embeddings the U-Net attends to (`tokens` x
 * `width` floats, row-major; `tokens_len` at least that). Sizes from `mirage_context_text_shape`. A prompt
 * longer than the set's token count is truncated (and a warning logged). Nothing is written on failure.
 * Locks the text encoder's session for the call.
 *
 * Errors: MIRAGE_ERR_INVALID_ARGUMENT (NULL `ctx`, `prompt` or `pooled`, a prompt that is not UTF-8, a
 * buffer too small), MIRAGE_ERR_UNSUPPORTED (the set is not text-conditioned), MIRAGE_ERR_INFERENCE.
 */
MirageStatus mirage_text_embed(const struct MirageContext *ctx,
                               const char *prompt,
                               float *pooled,
                               size_t pooled_len,
                               float *token_embeddings,
                               size_t tokens_len);

/**
 * Fills `params` with the defaults: MIRAGE_JOB_WORKERS, no previews. Pass `sizeof(MirageJobParams)` as
 * `struct_size`; the struct_size rule is that of `mirage_runtime_init`.
 *
 * Errors: MIRAGE_ERR_INVALID_ARGUMENT when `params` is NULL or `struct_size` is too small.
 */
MirageStatus mirage_job_params_init(struct MirageJobParams *params, size_t struct_size);

/**
 * Submits `mirage_generate` as a job: checks the arguments, encodes the prompts (milliseconds) and returns
 * at once; `*out` receives a new job, owned by the caller and freed with `mirage_job_free`. `params` as
 * `mirage_generate` (read during the call, not kept), except that `progress` and `preview` must be NULL:
 * poll the job and read its previews instead. `job_params` may be NULL (workers, no previews).
 *
 * Errors: as `mirage_generate` for the arguments, plus MIRAGE_ERR_BUSY (the context's queue is full:
 * nothing was submitted) and MIRAGE_ERR_INVALID_ARGUMENT for callbacks or bad job params. Failures while
 * it runs are the job's: `mirage_job_take_images` returns them.
 */
MirageStatus mirage_job_generate(const struct MirageContext *ctx,
                                 const struct MirageDiffusionParams *params,
                                 const struct MirageJobParams *job_params,
                                 struct MirageJob **out);

/**
 * Submits `mirage_img2img` as a job (the images are read and encoded during the call, not kept).
 * Otherwise as `mirage_job_generate`.
 */
MirageStatus mirage_job_img2img(const struct MirageContext *ctx,
                                const struct MirageImage *images,
                                size_t count,
                                const struct MirageDiffusionParams *params,
                                const struct MirageJobParams *job_params,
                                struct MirageJob **out);

/**
 * Submits `mirage_denoise` as a job. Otherwise as `mirage_job_img2img`.
 */
MirageStatus mirage_job_denoise(const struct MirageContext *ctx,
                                const struct MirageImage *images,
                                size_t count,
                                const struct MirageDiffusionParams *params,
                                const struct MirageJobParams *job_params,
                                struct MirageJob **out);

/**
 * Submits `mirage_inpaint` as a job (images and masks read during the call, not kept). Otherwise as
 * `mirage_job_generate`.
 */
MirageStatus mirage_job_inpaint(const struct MirageContext *ctx,
                                const struct MirageImage *images,
                                const struct MirageImage *masks,
                                size_t count,
                                const struct MirageDiffusionParams *params,
                                const struct MirageJobParams *job_params,
                                struct MirageJob **out);

/**
 * Submits `mirage_interpolate` as a job (the prompts are read and encoded during the call, not kept).
 * Otherwise as `mirage_job_generate`.
 */
MirageStatus mirage_job_interpolate(const struct MirageContext *ctx,
                                    const char *const *prompts,
                                    size_t prompt_count,
                                    uint32_t frames,
                                    const struct MirageDiffusionParams *params,
                                    const struct MirageJobParams *job_params,
                                    struct MirageJob **out);

/**
 * Submits `mirage_vae_encode` as a job of one step: the images are read during the call (not kept); take
 * the latents with `mirage_job_take_latents`. `job_params` as in `mirage_job_generate` (previews do not
 * apply).
 *
 * Errors: as `mirage_vae_encode` for the arguments, plus MIRAGE_ERR_BUSY.
 */
MirageStatus mirage_job_encode(const struct MirageContext *ctx,
                               const struct MirageImage *images,
                               size_t count,
                               const struct MirageJobParams *job_params,
                               struct MirageJob **out);

/**
 * Submits `mirage_vae_decode` as a job of one step: `latents` is copied during the call (not kept);
 * take the images (in `format`) with `mirage_job_take_images` or `mirage_job_take_into`.
 *
 * Errors: as `mirage_vae_decode` for the arguments, plus MIRAGE_ERR_BUSY.
 */
MirageStatus mirage_job_decode(const struct MirageContext *ctx,
                               const struct MirageLatent *latents,
                               MiragePixelFormat format,
                               const struct MirageJobParams *job_params,
                               struct MirageJob **out);

/**
 * Where `job` is, without waiting: `*state` (MIRAGE_JOB_*), and in `*step` and `*total` (each may be
 * NULL) the sampler steps done and in all (a VAE job has one step). Takes a short lock, never held across
 * a step, so it is cheap enough to call every frame.
 *
 * Errors: MIRAGE_ERR_INVALID_ARGUMENT (NULL `job` or `state`, a freed job where the check catches it).
 */
MirageStatus mirage_job_poll(const struct MirageJob *job,
                             MirageJobState *state,
                             uint32_t *step,
                             uint32_t *total);

/**
 * Waits until `job` has ended (done, failed or cancelled) or `timeout_ms` milliseconds have passed
 * (MIRAGE_WAIT_FOREVER: no limit; 0: just look); `*state` (may be NULL) receives the state then. A
 * MIRAGE_JOB_MANUAL job only moves while some thread advances it. Returns MIRAGE_OK either way: compare
 * the state.
 *
 * Errors: MIRAGE_ERR_INVALID_ARGUMENT (NULL `job`).
 */
MirageStatus mirage_job_wait(const struct MirageJob *job, uint32_t timeout_ms, MirageJobState *state);

/**
 * Cancels `job`: a queued job ends at once, a running one before its next step or within the step under
 * way (so within one step); its take then returns MIRAGE_ERR_CANCELLED. Cancelling an ended job does
 * nothing. Any thread; never waits.
 *
 * Errors: MIRAGE_ERR_INVALID_ARGUMENT (NULL `job`).
 */
MirageStatus mirage_job_cancel(const struct MirageJob *job);

/**
 * Runs whole steps of a MIRAGE_JOB_MANUAL job on the calling thread: at most `max_steps`, and no new step
 * once `budget_us` microseconds (0 = no time limit) would be exceeded, judged by the previous step's
 * duration; at least one step runs when `max_steps > 0` and the job has not ended, so that every call
 * makes progress. `*steps_run` (may be NULL) receives the steps run. Stepping a job to its end gives
 * exactly the images of the blocking call with the same parameters. A failing step or a cancel ends the
 * job (its take reports it), not this call.
 *
 * Errors: MIRAGE_ERR_INVALID_ARGUMENT (NULL `job`, a job of the workers, another thread advancing this
 * job at the same moment).
 */
MirageStatus mirage_job_advance(const struct MirageJob *job,
                                uint32_t max_steps,
                                uint64_t budget_us,
                                uint32_t *steps_run);

/**
 * The latest preview of a job made with `previews`: on success `*out` receives a new batch (the estimate
 * of the finished images after step `*step`, in `format`, owned by the caller), or NULL with `*step` 0
 * when no step has run yet. Any thread, no callback: a game polls it on its render thread.
 *
 * Errors: MIRAGE_ERR_INVALID_ARGUMENT (a NULL argument, an unknown format, a job made without previews).
 */
MirageStatus mirage_job_preview(const struct MirageJob *job,
                                MiragePixelFormat format,
                                struct MirageImageBatch **out,
                                uint32_t *step);

/**
 * Takes the images of an ended job (generate, img2img, denoise, inpaint, interpolate, decode): `*out`
 * receives a new batch in the job's format (`params->format`, or the decode's), owned by the caller.
 * Exactly once: a second take is refused. On a failed or cancelled job it returns that error, and the
 * error counts as the take.
 *
 * Errors: MIRAGE_ERR_INVALID_ARGUMENT (a NULL argument, a job that has not ended, a result already
 * taken, an encode job), or the job's own error.
 */
MirageStatus mirage_job_take_images(const struct MirageJob *job, struct MirageImageBatch **out);

/**
 * Takes the latents of an ended `mirage_job_encode`: `*mean` and `*logvar` receive new latents, owned by
 * the caller; `logvar` may be NULL (not wanted), `mean` may not. Exactly once, as `mirage_job_take_images`.
 *
 * Errors: as `mirage_job_take_images` (a job that made images is refused).
 */
MirageStatus mirage_job_take_latents(const struct MirageJob *job,
                                     struct MirageLatent **mean,
                                     struct MirageLatent **logvar);

/**
 * Takes the images of an ended job straight into host memory: `targets` is an array of `count` targets,
 * one per image (`count` must equal the job's image count), each with its own size, format, stride, row
 * order, alpha mode and filter (see `MirageTarget`); the same 8-bit sRGB pixels as `mirage_job_take_images`
 * gives, converted (MIRAGE_PIXEL_RGBA32F: to linear light). Every target is checked before
 * the first byte is written; when one is refused nothing is written and the result stays in the job
 * for another take.
 *
 * Errors: as `mirage_job_take_images`, plus MIRAGE_ERR_INVALID_ARGUMENT for a wrong `count` or a bad target.
 */
MirageStatus mirage_job_take_into(const struct MirageJob *job,
                                  const struct MirageTarget *targets,
                                  size_t count);

/**
 * Frees a job. A job that has not ended is cancelled first; this never waits (a worker running it stops
 * within one step, on its own). NULL does nothing. Every job must be freed, whatever its state.
 */
void mirage_job_free(struct MirageJob *job);

#ifdef __cplusplus
}  // extern "C"
#endif  // __cplusplus

#endif  /* MIRAGE_H */
