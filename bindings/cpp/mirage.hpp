// mirage.hpp: a header-only C++11 wrapper of the mirage C API (include/mirage.h).
//
// Handles are move-only RAII objects (Context, Latent, ImageBatch) that free themselves; every failing call
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
#ifndef MIRAGE_HPP
#define MIRAGE_HPP

#include <array>
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
    std::string sampler = "ddim";  ///< "ddim" or "dpm++2m"
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

/// Runs `call(const MirageDiffusionParams *, MirageImageBatch **)` with `o` as C params; rethrows a
/// callback's exception, else throws on failure.
template <class Call>
MirageImageBatch *diffuse(const DiffusionOptions &o, Call call) {
    MirageDiffusionParams p;
    check(mirage_diffusion_params_init(&p, sizeof p));
    Callbacks cb{&o, nullptr};
    p.steps = o.steps;
    p.sampler = o.sampler.c_str();
    p.eta = o.eta;
    p.seed = o.seed;
    p.count = o.count;
    p.strength = o.strength;
    p.format = o.format;
    p.prompt = c_str(o.prompt, "prompt");
    p.negative_prompt = c_str(o.negative_prompt, "negative_prompt");
    p.guidance = o.guidance;
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

/// A loaded model set. Thread-safe: share one Context between threads (by reference).
class Context {
public:
    explicit Context(const std::string &model_dir, MirageProvider provider = MIRAGE_PROVIDER_DEFAULT) {
        MirageContextParams params;
        detail::check(mirage_context_params_init(&params, sizeof params));
        params.provider = provider;
        MirageContext *p = nullptr;
        detail::check(mirage_context_new(model_dir.c_str(), &params, &p));
        p_.reset(p);
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
        std::vector<const char *> ptrs;
        ptrs.reserve(prompts.size());
        for (std::size_t i = 0; i < prompts.size(); ++i) {
            if (prompts[i].find('\0') != std::string::npos)
                throw Error(MIRAGE_ERR_INVALID_ARGUMENT, "prompts[" + std::to_string(i) + "] contains a NUL byte");
            ptrs.push_back(prompts[i].c_str());
        }
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
    /// Cancels the generations running on this context, from any thread (see mirage_context_cancel).
    void cancel() const { detail::check(mirage_context_cancel(p_.get())); }

    const MirageContext *get() const noexcept { return p_.get(); }

private:
    std::unique_ptr<MirageContext, detail::Deleter<MirageContext, mirage_context_free>> p_;
};

}  // namespace mirage

#endif  // MIRAGE_HPP
