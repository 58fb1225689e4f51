// The header as C++ (included twice, with the C++ wrapper) and bindings/cpp/mirage.hpp in use: encode,
// seeded sampling, decode to library and host buffers, errors as exceptions carrying status and message.
// Run by tests/header.rs (cpp_wrapper_runs) as: test_header <model set dir>. Exits 0 and prints
// "test_header: ok" only if every check passed.
#include "mirage.h"
#include "mirage.h"
#include "mirage.hpp"

#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "check.hpp"

int main(int argc, char **argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s <model set dir>\n", argv[0]);
        return 2;
    }
    try {
        CHECK(mirage::version() == MIRAGE_VERSION_STRING);
        MirageRuntimeOptions options = mirage::runtime_options();
        options.provider = MIRAGE_PROVIDER_CPU;
        mirage::init_runtime(options);

        mirage::Context ctx(argv[1]);
        mirage::ImageSize size = ctx.image_size();
        CHECK(size.width == 28 && size.height == 28 && size.channels == 1);
        CHECK(ctx.name() == "random");
        CHECK(ctx.provider(MIRAGE_MODEL_VAE_DECODER) == MIRAGE_PROVIDER_CPU);
        std::array<std::uint32_t, 3> ls = ctx.latent_shape();

        std::vector<std::uint8_t> pixels(28 * 28);
        for (std::size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<std::uint8_t>(i * 7);
        MirageImage image = {28, 28, 0, MIRAGE_PIXEL_GRAY8, pixels.data()};
        mirage::Distribution dist = ctx.encode({image});
        std::array<std::uint32_t, 4> shape = dist.mean.shape();
        CHECK(shape[0] == 1 && shape[1] == ls[0] && shape[2] == ls[1] && shape[3] == ls[2]);

        mirage::Latent a = ctx.sample(dist.mean, dist.logvar, 3);
        mirage::Latent b = ctx.sample(dist.mean, dist.logvar, 3);
        CHECK(a.to_vector() == b.to_vector());
        mirage::Latent moved = std::move(b);  // move-only handles
        CHECK(moved.size() == a.size());

        mirage::ImageBatch batch = ctx.decode(a, MIRAGE_PIXEL_RGB8);
        CHECK(batch.size() == 1);
        MirageImage rgb = batch[0];
        std::vector<std::uint8_t> grey(28 * 28, 0);
        ctx.decode_into(a, {MirageImage{28, 28, 0, MIRAGE_PIXEL_GRAY8, grey.data()}});
        bool same = true;
        for (std::size_t i = 0; i < grey.size(); ++i) same = same && rgb.data[3 * i] == grey[i];
        CHECK(same);

        mirage::Latent prior = ctx.sample_prior(2, 9);
        CHECK(prior.shape()[0] == 2);
        CHECK(ctx.decode(prior, MIRAGE_PIXEL_RGBA8).size() == 2);

        // Diffusion (the fixture has a U-Net): callbacks as lambdas, seeded, cancel, exceptions, img2img,
        // inpaint.
        mirage::DiffusionOptions o;
        CHECK(o.steps == 50 && o.count == 1 && o.strength == 1.0f && o.format == MIRAGE_PIXEL_RGBA8);
        o.steps = 4;
        o.seed = 11;
        o.format = MIRAGE_PIXEL_GRAY8;
        int progress_calls = 0, preview_calls = 0;
        o.progress = [&](std::uint32_t step, std::uint32_t total) {
            ++progress_calls;
            return step <= total;
        };
        o.preview = [&](std::uint32_t, const MirageImage *images, std::size_t count) {
            preview_calls += count == 1 && images[0].width == 28;
            return true;
        };
        mirage::ImageBatch g1 = ctx.generate(o);
        CHECK(progress_calls == 4 && preview_calls == 4);
        o.progress = nullptr;
        o.preview = nullptr;
        mirage::ImageBatch g2 = ctx.generate(o);
        CHECK(g1.size() == 1 && std::memcmp(g1[0].data, g2[0].data, 28 * 28) == 0);
        ctx.cancel();  // idle: nothing to cancel, and the next generation runs
        CHECK(ctx.generate(o).size() == 1);

        o.progress = [](std::uint32_t step, std::uint32_t) { return step < 2; };
        expect_error([&] { ctx.generate(o); }, MIRAGE_ERR_CANCELLED);
        o.progress = [](std::uint32_t, std::uint32_t) -> bool { throw std::logic_error("from a callback"); };
        bool rethrown = false;
        try {
            ctx.generate(o);
        } catch (const std::logic_error &e) {
            rethrown = std::string(e.what()) == "from a callback";
        }
        CHECK(rethrown);
        o.progress = nullptr;

        o.strength = 0.4f;
        mirage::ImageBatch denoised = ctx.img2img({image}, o);
        CHECK(denoised.size() == 1);
        std::vector<std::uint8_t> mask(28 * 28, 0);
        for (std::size_t i = 0; i < 28 * 14; ++i) mask[i] = 255;  // invent the top half
        o.strength = 1.0f;
        mirage::ImageBatch filled = ctx.inpaint({image}, {MirageImage{28, 28, 0, MIRAGE_PIXEL_GRAY8, mask.data()}}, o);
        bool kept = true;
        for (std::size_t i = 28 * 14; i < 28 * 28; ++i) kept = kept && filled[0].data[i] == pixels[i];
        CHECK(kept);
        o.sampler = "euler";
        expect_error([&] { ctx.generate(o); }, MIRAGE_ERR_INVALID_ARGUMENT);

        expect_error([] { mirage::Context missing("/nonexistent/mirage-model-set"); }, MIRAGE_ERR_MODEL_NOT_FOUND);
        expect_error([] { mirage::Latent bad(std::vector<float>(5, 0.0f), {1, 2, 2, 2}); }, MIRAGE_ERR_INVALID_ARGUMENT);
        expect_error([&] { (void)batch[1]; }, MIRAGE_ERR_INVALID_ARGUMENT);
        expect_error([&] { ctx.encode({}); }, MIRAGE_ERR_INVALID_ARGUMENT);
    } catch (const mirage::Error &e) {
        std::fprintf(stderr, "FAIL: unexpected mirage::Error: %s\n", e.what());
        return 1;
    }
    return summary("test_header");
}
