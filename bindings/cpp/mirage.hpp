// mirage.hpp: a header-only C++11 wrapper of the mirage C API (include/mirage.h).
//
// Handles are move-only RAII objects (Context, Latent, ImageBatch, Job) that free themselves; every failing call
// throws mirage::Error, which carries the MirageStatus and the detailed message of mirage_last_error.
// Thread safety is the C API's: one Context may be used by several threads at once; Latent and ImageBatch
// are immutable. Nothing here adds state of its own.
//
//     mirage::Context ctx("models/fashion");
//     auto dist = ctx.encode({image});                      // image: a MirageImage over your pixels
//     mirage::Latent z = ctx.sample(dist.mean, dist.logvar, 42);
//     mirage::ImageBatch out = ctx.decode(z, MIRAGE_PIXEL_RGBA8);
//     MirageImage first = out[0];                           // valid while `out` lives
//
//     mirage::DiffusionOptions o;                           // the C defaults: 50 DDIM steps, RGBA
//     o.seed = 7;
//     o.progress = [](std::uint32_t step, std::uint32_t total) { return step < total / 2; };  // false cancels
//     mirage::ImageBatch images = ctx.generate(o);         // from another thread: ctx.cancel()
//
//     // Text-conditioned sets (ctx.text_shape() does not throw):
//     o.prompt = "a red apple";                             // o.negative_prompt, o.guidance likewise
//     mirage::ImageBatch apples = ctx.generate(o);
//     mirage::ImageBatch morph = ctx.interpolate({"a cat", "a dog"}, 8, o);   // 8 frames, o.prompt unused
//     std::vector<float> pooled = ctx.embed("a red apple").pooled;           // L2-normalised
//
// Callbacks run on the calling thread. An exception thrown by one cancels the generation and is rethrown
// by the call that ran it (it never crosses the C library).
//
// A game loop submits work as jobs instead of blocking a frame (see the mirage_job_* functions): the
// context's worker threads run them, or the loop steps a manual job itself on a time budget.
//
//     mirage::ContextOptions co;                            // the C defaults: 1 worker, 64 queued jobs
//     co.workers = 2;
//     mirage::Context ctx("models/fashion", co);
//     mirage::Job job = ctx.submit_generate(o);             // returns at once; MIRAGE_ERR_BUSY if the queue is full
//     mirage::JobStatus s = job.poll();                     // every frame: s.state, s.step of s.total
//     if (s.ended()) job.take_into(mirage::Target(texture, 28, 28, MIRAGE_PIXEL_BGRA8).bottom_up());
//
//     mirage::Job manual = ctx.submit_generate(o, mirage::JobOptions::manual());
//     manual.advance(UINT32_MAX, std::chrono::microseconds(4000));   // this frame's 4 ms
//
// A Job frees its handle when destroyed, which cancels it if it is still running (never waiting for it);
// it keeps its model set alive, so it may outlive its Context.
#ifndef MIRAGE_HPP
#define MIRAGE_HPP

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "mirage.h"

namespace mirage {

/// A failed mirage call: status() is the MirageStatus, what() the detailed message.
class Error : public std::runtime_error {
public:
    Error(MirageStatus status, const std::string &message)
        : std::runtime_error(std::string(mirage_status_str(status)) + ": " + message), status_(status) {}
    MirageStatus status() const noexcept { return status_; }

private:
    MirageStatus status_;
};

namespace detail {

/// The calling thread's last error message (read right after the failing call, on the same thread).
inline std::string last_error() {
    std::vector<char> buf(mirage_last_error(nullptr, 0) + 1);
    mirage_last_error(buf.data(), buf.size());
    return std::string(buf.data());
}

inline void check(MirageStatus status) {
    if (status != MIRAGE_OK) throw Error(status, last_error());
}

template <class T, void (*Free)(T *)>
struct Deleter {
    void operator()(T *p) const noexcept { Free(p); }
};

}  // namespace detail

/// Sets up the process-wide runtime (optional; see mirage_runtime_init). Fill `options` from
/// runtime_options() and change what you need.
inline MirageRuntimeOptions runtime_options() {
    MirageRuntimeOptions o;
    detail::check(mirage_runtime_options_init(&o, sizeof o));
    return o;
}

inline void init_runtime(const MirageRuntimeOptions &options) { detail::check(mirage_runtime_init(&options)); }

/// The library's version string (compare with MIRAGE_VERSION_STRING).
inline std::string version() { return mirage_version(); }

/// A batch of latents, shape {n, channels, height, width}, floats in NCHW order.
class Latent {
public:
    /// Copies `len` floats; `len` must be the product of `shape`.
    Latent(const float *data, std::size_t len, const std::array<std::uint32_t, 4> &shape) {
        MirageLatent *p = nullptr;
        detail::check(mirage_latent_new(data, len, shape.data(), &p));
        p_.reset(p);
    }
    Latent(const std::vector<float> &data, const std::array<std::uint32_t, 4> &shape)
        : Latent(data.data(), data.size(), shape) {}
    /// Takes ownership of a latent made by the C API.
    explicit Latent(MirageLatent *owned) noexcept : p_(owned) {}

    std::array<std::uint32_t, 4> shape() const {
        std::array<std::uint32_t, 4> s{};
        detail::check(mirage_latent_shape(p_.get(), s.data()));
        return s;
    }
    /// The floats, valid while this Latent lives.
    const float *data() const { return view().first; }
    std::size_t size() const { return view().second; }
    std::vector<float> to_vector() const {
        auto v = view();
        return std::vector<float>(v.first, v.first + v.second);
    }
    const MirageLatent *get() const noexcept { return p_.get(); }

private:
    std::pair<const float *, std::size_t> view() const {
        const float *d = nullptr;
        std::size_t n = 0;
        detail::check(mirage_latent_data(p_.get(), &d, &n));
        return {d, n};
    }
    std::unique_ptr<MirageLatent, detail::Deleter<MirageLatent, mirage_latent_free>> p_;
};

/// Host memory one image is written into (see MirageTarget): a zeroed MirageTarget with its buffer, size
/// and format set, then what differs from the defaults (packed rows, top-down, straight alpha, bilinear)
/// set by the chained setters. It is a MirageTarget, so it goes wherever one does.
///
///     std::vector<std::uint8_t> texture(28 * 4 * 28);
///     batch.write(0, mirage::Target(texture, 28, 28, MIRAGE_PIXEL_BGRA8).bottom_up());
struct Target : MirageTarget {
    /// `size` bytes at `data`, for a `width` x `height` image in `format`, rows `stride` bytes apart (0 =
    /// packed).
    Target(void *data, std::size_t size, std::uint32_t width, std::uint32_t height, MiragePixelFormat format,
           std::size_t stride = 0)
        : MirageTarget() {
        this->data = data;
        this->size = size;
        this->width = width;
        this->height = height;
        this->format = format;
        this->stride = stride;
    }
    /// The whole of `buffer` (which must outlive the write).
    template <class T>
    Target(std::vector<T> &buffer, std::uint32_t width, std::uint32_t height, MiragePixelFormat format,
           std::size_t stride = 0)
        : Target(buffer.data(), buffer.size() * sizeof(T), width, height, format, stride) {}

    /// Rows bottom to top (MIRAGE_TARGET_BOTTOM_UP), as OpenGL and Unity textures expect.
    Target &bottom_up(bool on = true) { return flag(MIRAGE_TARGET_BOTTOM_UP, on); }
    /// Colour multiplied by alpha (MIRAGE_TARGET_PREMULTIPLIED).
    Target &premultiplied(bool on = true) { return flag(MIRAGE_TARGET_PREMULTIPLIED, on); }
    /// How the image is resized to the target's size (MIRAGE_FILTER_*).
    Target &resized_with(MirageFilter f) {
        filter = f;
        return *this;
    }

private:
    Target &flag(std::uint32_t bit, bool on) {
        flags = on ? (flags | bit) : (flags & ~bit);
        return *this;
    }
};

/// Images allocated by the library; each MirageImage it hands out is valid while the batch lives.
class ImageBatch {
public:
    explicit ImageBatch(MirageImageBatch *owned) noexcept : p_(owned) {}
    std::size_t size() const noexcept { return mirage_image_batch_count(p_.get()); }
    MirageImage operator[](std::size_t i) const {
        MirageImage img;
        detail::check(mirage_image_batch_get(p_.get(), i, &img));
        return img;
    }
    /// Writes image `i` into host memory: resized, converted, in the target's row order and alpha mode (see
    /// mirage_image_batch_write). Nothing is written when the target is refused.
    void write(std::size_t i, const MirageTarget &target) const {
        detail::check(mirage_image_batch_write(p_.get(), i, &target));
    }
    const MirageImageBatch *get() const noexcept { return p_.get(); }

private:
    std::unique_ptr<MirageImageBatch, detail::Deleter<MirageImageBatch, mirage_image_batch_free>> p_;
};

/// The latent distribution of encoded images.
struct Distribution {
    Latent mean;
    Latent logvar;
};

/// Image size of a model set.
struct ImageSize {
    std::uint32_t width, height, channels;
};

/// The text conditioning of a set (see mirage_context_text_shape).
struct TextShape {
    std::uint32_t tokens;  ///< per prompt, [CLS] and [SEP] included
    std::uint32_t width;   ///< floats per token (384 for MiniLM-L6)
};

/// A prompt's embeddings (see mirage_text_embed).
struct TextEmbedding {
    std::vector<float> pooled;  ///< width floats, L2-normalised
    std::vector<float> tokens;  ///< tokens x width floats, row-major; empty unless asked for
};

/// Options of Context::generate, img2img, inpaint and interpolate (see MirageDiffusionParams): the C
/// defaults, with std::function callbacks that run on the calling thread and return true to continue, false
/// to cancel.
struct DiffusionOptions {
    DiffusionOptions() {
        MirageDiffusionParams p;
        detail::check(mirage_diffusion_params_init(&p, sizeof p));
        steps = p.steps;
        eta = p.eta;
        seed = p.seed;
        count = p.count;
        strength = p.strength;
        format = p.format;
        guidance = p.guidance;
    }
    std::uint32_t steps;
    std::string sampler;  ///< empty = the set's own; "ddim", "dpm++2m" (diffusers folders also "euler", "euler-a", "pndm", "lcm", "dpm++2m-karras")
    float eta;
    std::uint64_t seed;
    std::uint32_t count;  ///< generate only
    float strength;       ///< img2img / denoise / inpaint: set it (e.g. 0.3-0.5 to denoise)
    MiragePixelFormat format;
    /// Text-conditioned sets: what to draw; "" (the default) = unconditional. interpolate ignores it.
    std::string prompt;
    /// What to steer away from; "" (the default) = nothing.
    std::string negative_prompt;
    /// Classifier-free guidance in [0, 50]; MIRAGE_GUIDANCE_DEFAULT (the default) = the set's own.
    float guidance;
    /// Images that wrap seamlessly at their edges (see MirageDiffusionParams::tileable).
    bool tileable = false;
    /// The initial noise instead of one drawn from `seed` (see MirageDiffusionParams::noise); borrowed, read
    /// during the call or the submission only. nullptr (the default) = from `seed`.
    const Latent *noise = nullptr;
    /// (step done, steps in all) -> continue?
    std::function<bool(std::uint32_t step, std::uint32_t total)> progress;
    /// (step done, images borrowed for the call only, their count) -> continue?
    std::function<bool(std::uint32_t step, const MirageImage *images, std::size_t count)> preview;
};

namespace detail {

/// What the C callbacks' user_data points to: the options, and the first exception a callback threw.
struct Callbacks {
    const DiffusionOptions *options;
    std::exception_ptr error;
};

inline bool progress_trampoline(std::uint32_t step, std::uint32_t total, void *user_data) {
    Callbacks *cb = static_cast<Callbacks *>(user_data);
    try {
        return cb->options->progress(step, total);
    } catch (...) {
        cb->error = std::current_exception();
        return false;
    }
}

inline bool preview_trampoline(std::uint32_t step, const MirageImage *images, std::size_t count, void *user_data) {
    Callbacks *cb = static_cast<Callbacks *>(user_data);
    try {
        return cb->options->preview(step, images, count);
    } catch (...) {
        cb->error = std::current_exception();
        return false;
    }
}

/// `s` as a C string; a NUL byte inside would silently cut it there, so it is refused.
inline const char *c_str(const std::string &s, const char *name) {
    if (s.find('\0') != std::string::npos)
        throw Error(MIRAGE_ERR_INVALID_ARGUMENT, std::string(name) + " contains a NUL byte");
    return s.c_str();
}

/// `o` as C params, without callbacks (its strings are borrowed: `o` must outlive the call).
inline MirageDiffusionParams params_of(const DiffusionOptions &o) {
    MirageDiffusionParams p;
    check(mirage_diffusion_params_init(&p, sizeof p));
    p.steps = o.steps;
    p.sampler = c_str(o.sampler, "sampler");
    p.eta = o.eta;
    p.seed = o.seed;
    p.count = o.count;
    p.strength = o.strength;
    p.format = o.format;
    p.prompt = c_str(o.prompt, "prompt");
    p.negative_prompt = c_str(o.negative_prompt, "negative_prompt");
    p.guidance = o.guidance;
    p.tileable = o.tileable;
    p.noise = o.noise ? o.noise->get() : nullptr;
    return p;
}

/// Runs `call(const MirageDiffusionParams *, MirageImageBatch **)` with `o` as C params; rethrows a
/// callback's exception, else throws on failure.
template <class Call>
MirageImageBatch *diffuse(const DiffusionOptions &o, Call call) {
    MirageDiffusionParams p = params_of(o);
    Callbacks cb{&o, nullptr};
    p.progress = o.progress ? progress_trampoline : nullptr;
    p.preview = o.preview ? preview_trampoline : nullptr;
    p.user_data = &cb;
    MirageImageBatch *b = nullptr;
    MirageStatus status = call(&p, &b);
    if (cb.error) std::rethrow_exception(cb.error);
    check(status);
    return b;
}

}  // namespace detail

/// Options of a job (see MirageJobParams): the C defaults (the context's workers run it, no previews).
struct JobOptions {
    JobOptions() {
        MirageJobParams p;
        detail::check(mirage_job_params_init(&p, sizeof p));
        mode = p.mode;
        previews = p.previews;
    }
    /// A MIRAGE_JOB_MANUAL job: nobody runs it until Job::advance.
    static JobOptions manual(bool previews = false) {
        JobOptions o;
        o.mode = MIRAGE_JOB_MANUAL;
        o.previews = previews;
        return o;
    }
    /// A job of the context's workers that keeps a preview after each step (one VAE decode per step).
    static JobOptions with_previews() {
        JobOptions o;
        o.previews = true;
        return o;
    }
    MirageJobMode mode;  ///< MIRAGE_JOB_WORKERS or MIRAGE_JOB_MANUAL
    bool previews;       ///< keep the latest estimate for Job::preview
};

/// Where a job is: its state (MIRAGE_JOB_*) and the sampler steps done of all (a VAE job has one).
struct JobStatus {
    MirageJobState state;
    std::uint32_t step;
    std::uint32_t total;
    /// Done, failed or cancelled: nothing runs any more, the result (or error) waits to be taken.
    bool ended() const noexcept {
        return state == MIRAGE_JOB_DONE || state == MIRAGE_JOB_FAILED || state == MIRAGE_JOB_CANCELLED;
    }
};

/// A job's latest preview: the estimate of the finished images after `step`; empty (false, step 0) before
/// the first step.
struct Preview {
    ImageBatch images;
    std::uint32_t step;
    explicit operator bool() const noexcept { return images.get() != nullptr; }
};

/// A submitted operation (see MirageJob): made by the Context::submit_* functions, movable, not copyable.
/// Any thread may poll, wait for, preview or cancel it while another runs it. Destroying it frees the
/// handle, which cancels a job that has not ended (without waiting: a worker stops within one step). It
/// holds its model set: it may outlive its Context (whose free cancels its worker jobs, not manual ones).
class Job {
public:
    /// Takes ownership of a job made by the C API.
    explicit Job(MirageJob *owned) noexcept : p_(owned) {}

    /// Where the job is, without waiting (a short lock: cheap enough for every frame).
    JobStatus poll() const {
        JobStatus s{0, 0, 0};
        detail::check(mirage_job_poll(p_.get(), &s.state, &s.step, &s.total));
        return s;
    }
    /// Waits until the job has ended or `timeout` has passed; returns whether it has ended. A manual job
    /// only moves while some thread advances it.
    bool wait(std::chrono::milliseconds timeout) const {
        std::uint32_t ms = timeout.count() <= 0 ? 0u
                           : timeout.count() >= static_cast<std::chrono::milliseconds::rep>(MIRAGE_WAIT_FOREVER)
                               ? MIRAGE_WAIT_FOREVER
                               : static_cast<std::uint32_t>(timeout.count());
        return wait_ms(ms);
    }
    /// Waits until the job has ended, however long that takes.
    void wait() const { wait_ms(MIRAGE_WAIT_FOREVER); }
    /// Cancels the job: queued, it ends at once; running, within one step. Its take then throws
    /// MIRAGE_ERR_CANCELLED. Any thread; never waits.
    void cancel() const { detail::check(mirage_job_cancel(p_.get())); }
    /// Runs whole steps of a manual job on this thread: at most `max_steps`, and no new step once `budget`
    /// would be exceeded (zero = no time limit; at least one step runs while the job has not ended).
    /// Returns the steps run (0 once it has ended). Throws MIRAGE_ERR_INVALID_ARGUMENT for a workers' job.
    std::uint32_t advance(std::uint32_t max_steps = UINT32_MAX,
                          std::chrono::microseconds budget = std::chrono::microseconds(0)) const {
        std::uint64_t us = budget.count() < 0 ? 1u : static_cast<std::uint64_t>(budget.count());
        std::uint32_t ran = 0;
        detail::check(mirage_job_advance(p_.get(), max_steps, us, &ran));
        return ran;
    }
    /// The latest preview in `format` (for a job submitted with JobOptions::previews); empty before the
    /// first step. Throws MIRAGE_ERR_INVALID_ARGUMENT for a job without previews.
    Preview preview(MiragePixelFormat format = MIRAGE_PIXEL_RGBA8) const {
        MirageImageBatch *b = nullptr;
        std::uint32_t step = 0;
        detail::check(mirage_job_preview(p_.get(), format, &b, &step));
        return Preview{ImageBatch(b), step};
    }
    /// The images of an ended job, once (see mirage_job_take_images); throws the job's own error for a
    /// failed or cancelled job.
    ImageBatch take_images() const {
        MirageImageBatch *b = nullptr;
        detail::check(mirage_job_take_images(p_.get(), &b));
        return ImageBatch(b);
    }
    /// The latents of an ended encode job, once (see mirage_job_take_latents).
    Distribution take_latents() const {
        MirageLatent *mean = nullptr, *logvar = nullptr;
        detail::check(mirage_job_take_latents(p_.get(), &mean, &logvar));
        return Distribution{Latent(mean), Latent(logvar)};
    }
    /// Writes the images of an ended job straight into host memory, one target per image (see
    /// mirage_job_take_into). A refused target writes nothing and leaves the result in the job.
    void take_into(const std::vector<MirageTarget> &targets) const {
        detail::check(mirage_job_take_into(p_.get(), targets.data(), targets.size()));
    }
    /// take_into for a job of one image.
    void take_into(const MirageTarget &target) const { detail::check(mirage_job_take_into(p_.get(), &target, 1)); }

    const MirageJob *get() const noexcept { return p_.get(); }

private:
    bool wait_ms(std::uint32_t ms) const {
        MirageJobState state = 0;
        detail::check(mirage_job_wait(p_.get(), ms, &state));
        return JobStatus{state, 0, 0}.ended();
    }
    std::unique_ptr<MirageJob, detail::Deleter<MirageJob, mirage_job_free>> p_;
};

/// Options of a Context (see MirageContextParams): the C defaults.
struct ContextOptions {
    ContextOptions() {
        MirageContextParams p;
        detail::check(mirage_context_params_init(&p, sizeof p));
        provider = p.provider;
        workers = p.workers;
        max_queued_jobs = p.max_queued_jobs;
        tileable = p.tileable;
        precision = p.precision;
    }
    MirageProvider provider;        ///< MIRAGE_PROVIDER_DEFAULT = the runtime's
    std::uint32_t workers;          ///< threads that run the jobs, 1 to MIRAGE_MAX_WORKERS (default 1)
    std::uint32_t max_queued_jobs;  ///< jobs not yet started before MIRAGE_ERR_BUSY (default 64)
    bool tileable;                  ///< prepare the tileable sessions now (needed for a context from memory)
    MiragePrecision precision;      ///< the text encoder's: MIRAGE_PRECISION_FP32 (default) or _INT8
};

namespace detail {

inline MirageContextParams context_params(const ContextOptions &o) {
    MirageContextParams p;
    check(mirage_context_params_init(&p, sizeof p));
    p.provider = o.provider;
    p.workers = o.workers;
    p.max_queued_jobs = o.max_queued_jobs;
    p.tileable = o.tileable;
    p.precision = o.precision;
    return p;
}

inline MirageJobParams job_params(const JobOptions &o) {
    MirageJobParams p;
    check(mirage_job_params_init(&p, sizeof p));
    p.mode = o.mode;
    p.previews = o.previews;
    return p;
}

/// Runs `call(const MirageDiffusionParams *, const MirageJobParams *, MirageJob **)` with `o` and `jo` as C
/// params. A job runs no callback: options with one are refused here.
template <class Call>
MirageJob *submit(const DiffusionOptions &o, const JobOptions &jo, Call call) {
    if (o.progress || o.preview)
        throw Error(MIRAGE_ERR_INVALID_ARGUMENT,
                    "a job takes no progress or preview callback: poll it (Job::poll) and read its previews "
                    "(Job::preview) instead");
    MirageDiffusionParams p = params_of(o);
    MirageJobParams jp = job_params(jo);
    MirageJob *j = nullptr;
    check(call(&p, &jp, &j));
    return j;
}

/// The prompts as C strings (borrowed from `prompts`); a NUL byte inside one is refused.
inline std::vector<const char *> c_strs(const std::vector<std::string> &prompts) {
    std::vector<const char *> ptrs;
    ptrs.reserve(prompts.size());
    for (std::size_t i = 0; i < prompts.size(); ++i) {
        if (prompts[i].find('\0') != std::string::npos)
            throw Error(MIRAGE_ERR_INVALID_ARGUMENT, "prompts[" + std::to_string(i) + "] contains a NUL byte");
        ptrs.push_back(prompts[i].c_str());
    }
    return ptrs;
}

}  // namespace detail

/// A loaded model set. Thread-safe: share one Context between threads (by reference).
class Context {
public:
    explicit Context(const std::string &model_dir, MirageProvider provider = MIRAGE_PROVIDER_DEFAULT) {
        ContextOptions o;
        o.provider = provider;
        open(model_dir, o);
    }
    /// With options: worker threads, queue bound, tileable sessions (see MirageContextParams).
    Context(const std::string &model_dir, const ContextOptions &options) { open(model_dir, options); }
    /// Opens a model pack (what `mirage pack` writes) held in memory: `size` bytes at `data`, read during
    /// the call only (see mirage_context_new_from_memory).
    static Context from_memory(const void *data, std::size_t size, const ContextOptions &options = ContextOptions()) {
        MirageContextParams params = detail::context_params(options);
        MirageContext *p = nullptr;
        detail::check(mirage_context_new_from_memory(data, size, &params, &p));
        Context c;
        c.p_.reset(p);
        return c;
    }

    ImageSize image_size() const {
        ImageSize s{};
        detail::check(mirage_context_image_size(p_.get(), &s.width, &s.height, &s.channels));
        return s;
    }
    std::array<std::uint32_t, 3> latent_shape() const {
        std::array<std::uint32_t, 3> s{};
        detail::check(mirage_context_latent_shape(p_.get(), s.data()));
        return s;
    }
    // Whether prior samples decode to images on this set (see mirage_context_prior_sampleable).
    bool prior_sampleable() const {
        bool b = false;
        detail::check(mirage_context_prior_sampleable(p_.get(), &b));
        return b;
    }
    MirageProvider provider(MirageModelKind kind) const {
        MirageProvider p = MIRAGE_PROVIDER_DEFAULT;
        detail::check(mirage_context_provider(p_.get(), kind, &p));
        return p;
    }
    std::string name() const {
        std::size_t n = 0;
        detail::check(mirage_context_name(p_.get(), nullptr, 0, &n));
        std::vector<char> buf(n + 1);
        detail::check(mirage_context_name(p_.get(), buf.data(), buf.size(), nullptr));
        return std::string(buf.data());
    }

    Distribution encode(const std::vector<MirageImage> &images) const {
        MirageLatent *mean = nullptr, *logvar = nullptr;
        detail::check(mirage_vae_encode(p_.get(), images.data(), images.size(), &mean, &logvar));
        return Distribution{Latent(mean), Latent(logvar)};
    }
    Latent sample(const Latent &mean, const Latent &logvar, std::uint64_t seed) const {
        MirageLatent *z = nullptr;
        detail::check(mirage_vae_sample(p_.get(), mean.get(), logvar.get(), seed, &z));
        return Latent(z);
    }
    Latent sample_prior(std::size_t count, std::uint64_t seed) const {
        MirageLatent *z = nullptr;
        detail::check(mirage_vae_sample_prior(p_.get(), count, seed, &z));
        return Latent(z);
    }
    ImageBatch decode(const Latent &latents, MiragePixelFormat format) const {
        MirageImageBatch *b = nullptr;
        detail::check(mirage_vae_decode(p_.get(), latents.get(), format, &b));
        return ImageBatch(b);
    }
    /// Writes one image per latent into the host's pixels (see mirage_vae_decode_into).
    void decode_into(const Latent &latents, const std::vector<MirageImage> &images) const {
        detail::check(mirage_vae_decode_into(p_.get(), latents.get(), images.data(), images.size()));
    }

    /// Generates o.count images from noise (see mirage_generate).
    ImageBatch generate(const DiffusionOptions &o) const {
        const MirageContext *c = p_.get();
        return ImageBatch(detail::diffuse(o, [c](const MirageDiffusionParams *p, MirageImageBatch **b) {
            return mirage_generate(c, p, b);
        }));
    }
    /// Re-imagines (or, at a low o.strength, denoises) host images (see mirage_img2img).
    ImageBatch img2img(const std::vector<MirageImage> &images, const DiffusionOptions &o) const {
        const MirageContext *c = p_.get();
        return ImageBatch(detail::diffuse(o, [c, &images](const MirageDiffusionParams *p, MirageImageBatch **b) {
            return mirage_img2img(c, images.data(), images.size(), p, b);
        }));
    }
    /// Fills where the GRAY8 masks are 255, one mask per image (see mirage_inpaint).
    ImageBatch inpaint(const std::vector<MirageImage> &images, const std::vector<MirageImage> &masks,
                       const DiffusionOptions &o) const {
        if (images.size() != masks.size())
            throw Error(MIRAGE_ERR_INVALID_ARGUMENT, "inpaint: one mask per image is needed");
        const MirageContext *c = p_.get();
        return ImageBatch(
            detail::diffuse(o, [c, &images, &masks](const MirageDiffusionParams *p, MirageImageBatch **b) {
                return mirage_inpaint(c, images.data(), masks.data(), images.size(), p, b);
            }));
    }
    /// Morphs between prompts: `frames` images along the path through `prompts` (at least 2), all from the
    /// same noise (o.seed); o.prompt is unused, o.count is the frames per U-Net batch (see
    /// mirage_interpolate).
    ImageBatch interpolate(const std::vector<std::string> &prompts, std::uint32_t frames,
                           const DiffusionOptions &o) const {
        std::vector<const char *> ptrs = detail::c_strs(prompts);
        const MirageContext *c = p_.get();
        return ImageBatch(
            detail::diffuse(o, [c, &ptrs, frames](const MirageDiffusionParams *p, MirageImageBatch **b) {
                return mirage_interpolate(c, ptrs.data(), ptrs.size(), frames, p, b);
            }));
    }
    /// Tokens per prompt and embedding width; throws MIRAGE_ERR_UNSUPPORTED for a set without text.
    TextShape text_shape() const {
        TextShape s{0, 0};
        detail::check(mirage_context_text_shape(p_.get(), &s.tokens, &s.width));
        return s;
    }
    /// The prompt's pooled embedding, and its token embeddings when `with_tokens` (see mirage_text_embed).
    TextEmbedding embed(const std::string &prompt, bool with_tokens = false) const {
        TextShape s = text_shape();
        TextEmbedding e;
        e.pooled.resize(s.width);
        if (with_tokens) e.tokens.resize(static_cast<std::size_t>(s.tokens) * s.width);
        detail::check(mirage_text_embed(p_.get(), detail::c_str(prompt, "prompt"), e.pooled.data(),
                                        e.pooled.size(), with_tokens ? e.tokens.data() : nullptr,
                                        e.tokens.size()));
        return e;
    }
    /// Cancels the generations running on this context and every job of its workers, queued or running, from
    /// any thread (see mirage_context_cancel); manual jobs go on.
    void cancel() const { detail::check(mirage_context_cancel(p_.get())); }

    // Jobs: each submit checks its arguments, returns at once with the Job, and throws Error with
    // MIRAGE_ERR_BUSY when the context's queue is full (nothing was submitted: try again on a later frame).
    // The options' callbacks must be empty (poll the job instead); images, masks and prompts are read during
    // the call and not kept.

    /// Submits generate (see mirage_job_generate).
    Job submit_generate(const DiffusionOptions &o, const JobOptions &jo = JobOptions()) const {
        const MirageContext *c = p_.get();
        return Job(
            detail::submit(o, jo, [c](const MirageDiffusionParams *p, const MirageJobParams *j, MirageJob **out) {
                return mirage_job_generate(c, p, j, out);
            }));
    }
    /// Submits img2img (see mirage_job_img2img).
    Job submit_img2img(const std::vector<MirageImage> &images, const DiffusionOptions &o,
                       const JobOptions &jo = JobOptions()) const {
        const MirageContext *c = p_.get();
        return Job(detail::submit(
            o, jo, [c, &images](const MirageDiffusionParams *p, const MirageJobParams *j, MirageJob **out) {
                return mirage_job_img2img(c, images.data(), images.size(), p, j, out);
            }));
    }
    /// Submits denoise (see mirage_job_denoise and mirage_denoise).
    Job submit_denoise(const std::vector<MirageImage> &images, const DiffusionOptions &o,
                       const JobOptions &jo = JobOptions()) const {
        const MirageContext *c = p_.get();
        return Job(detail::submit(
            o, jo, [c, &images](const MirageDiffusionParams *p, const MirageJobParams *j, MirageJob **out) {
                return mirage_job_denoise(c, images.data(), images.size(), p, j, out);
            }));
    }
    /// Submits inpaint, one GRAY8 mask per image (see mirage_job_inpaint).
    Job submit_inpaint(const std::vector<MirageImage> &images, const std::vector<MirageImage> &masks,
                       const DiffusionOptions &o, const JobOptions &jo = JobOptions()) const {
        if (images.size() != masks.size())
            throw Error(MIRAGE_ERR_INVALID_ARGUMENT, "submit_inpaint: one mask per image is needed");
        const MirageContext *c = p_.get();
        return Job(detail::submit(
            o, jo, [c, &images, &masks](const MirageDiffusionParams *p, const MirageJobParams *j, MirageJob **out) {
                return mirage_job_inpaint(c, images.data(), masks.data(), images.size(), p, j, out);
            }));
    }
    /// Submits interpolate: `frames` images along the path through `prompts` (see mirage_job_interpolate).
    Job submit_interpolate(const std::vector<std::string> &prompts, std::uint32_t frames, const DiffusionOptions &o,
                           const JobOptions &jo = JobOptions()) const {
        std::vector<const char *> ptrs = detail::c_strs(prompts);
        const MirageContext *c = p_.get();
        return Job(detail::submit(
            o, jo, [c, &ptrs, frames](const MirageDiffusionParams *p, const MirageJobParams *j, MirageJob **out) {
                return mirage_job_interpolate(c, ptrs.data(), ptrs.size(), frames, p, j, out);
            }));
    }
    /// Submits a VAE encode (one step); take the result with Job::take_latents (see mirage_job_encode).
    Job submit_encode(const std::vector<MirageImage> &images, const JobOptions &jo = JobOptions()) const {
        MirageJobParams j = detail::job_params(jo);
        MirageJob *out = nullptr;
        detail::check(mirage_job_encode(p_.get(), images.data(), images.size(), &j, &out));
        return Job(out);
    }
    /// Submits a VAE decode (one step) into images of `format` (see mirage_job_decode).
    Job submit_decode(const Latent &latents, MiragePixelFormat format, const JobOptions &jo = JobOptions()) const {
        MirageJobParams j = detail::job_params(jo);
        MirageJob *out = nullptr;
        detail::check(mirage_job_decode(p_.get(), latents.get(), format, &j, &out));
        return Job(out);
    }

    const MirageContext *get() const noexcept { return p_.get(); }

private:
    Context() = default;
    void open(const std::string &model_dir, const ContextOptions &options) {
        MirageContextParams params = detail::context_params(options);
        MirageContext *p = nullptr;
        detail::check(mirage_context_new(detail::c_str(model_dir, "model_dir"), &params, &p));
        p_.reset(p);
    }
    std::unique_ptr<MirageContext, detail::Deleter<MirageContext, mirage_context_free>> p_;
};

}  // namespace mirage

#endif  // MIRAGE_HPP
