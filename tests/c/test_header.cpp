// The header as C++ (included twice, with the C++ wrapper) and bindings/cpp/mirage.hpp in use: encode,
// seeded sampling, decode to library and host buffers, errors as exceptions carrying status and message.
// Run by tests/header.rs (cpp_wrapper_runs) as: test_header <model set dir>. Exits 0 and prints
// "test_header: ok" only if every check passed.
#include "mirage.h"
#include "mirage.h"
#include "mirage.hpp"

#include <cstdio>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

static int failures = 0;

#define CHECK(cond)                                                                \
    do {                                                                           \
        if (!(cond)) {                                                             \
            ++failures;                                                            \
            std::fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);   \
        }                                                                          \
    } while (0)

// Runs `f`, which must throw mirage::Error with `want` and a message.
template <class F>
static void expect_error(F f, MirageStatus want) {
    try {
        f();
        ++failures;
        std::fprintf(stderr, "FAIL: no exception, expected %s\n", mirage_status_str(want));
    } catch (const mirage::Error &e) {
        CHECK(e.status() == want);
        CHECK(std::strlen(e.what()) > std::strlen(mirage_status_str(want)) + 2);
    }
}

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

        expect_error([] { mirage::Context missing("/nonexistent/mirage-model-set"); }, MIRAGE_ERR_MODEL_NOT_FOUND);
        expect_error([] { mirage::Latent bad(std::vector<float>(5, 0.0f), {1, 2, 2, 2}); }, MIRAGE_ERR_INVALID_ARGUMENT);
        expect_error([&] { (void)batch[1]; }, MIRAGE_ERR_INVALID_ARGUMENT);
        expect_error([&] { ctx.encode({}); }, MIRAGE_ERR_INVALID_ARGUMENT);
    } catch (const mirage::Error &e) {
        std::fprintf(stderr, "FAIL: unexpected mirage::Error: %s\n", e.what());
        return 1;
    }
    if (failures) {
        std::printf("test_header: %d failures\n", failures);
        return 1;
    }
    std::printf("test_header: ok\n");
    return 0;
}
