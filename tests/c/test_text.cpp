// Text-to-image through the C++ wrapper bindings/cpp/mirage.hpp: text_shape, embed (pooled, with tokens),
// generate with a prompt / negative prompt / guidance, interpolate with a progress lambda, and errors as
// mirage::Error carrying status and message (a set without text, bad guidance, too few prompts, NUL bytes).
// Run by tests/capi_text.rs (cpp_text_wrapper_runs) as: test_text_cpp <text set> <plain set> (see
// test_text.c for the sets). Exits 0 and prints "test_text_cpp: ok" only if every check passed.
#include "mirage.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "check.hpp"

static bool same_image(const mirage::ImageBatch &a, std::size_t i, const mirage::ImageBatch &b, std::size_t j) {
    MirageImage x = a[i], y = b[j];
    return x.width == y.width && x.height == y.height && x.format == y.format &&
           std::memcmp(x.data, y.data, static_cast<std::size_t>(x.stride) * x.height) == 0;
}

static int max_grey_diff(const MirageImage &x, const MirageImage &y) {
    int d = 0;
    for (std::size_t k = 0; k < static_cast<std::size_t>(x.stride) * x.height; ++k)
        d = std::max(d, std::abs(static_cast<int>(x.data[k]) - static_cast<int>(y.data[k])));
    return d;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: %s <text set dir> <plain diffusion set dir>\n", argv[0]);
        return 2;
    }
    try {
        MirageRuntimeOptions options = mirage::runtime_options();
        options.provider = MIRAGE_PROVIDER_CPU;
        options.intra_threads = 1;
        options.log_level = MIRAGE_LOG_ERROR;  // the long prompt's truncation warning is expected
        mirage::init_runtime(options);
        mirage::Context text(argv[1]);
        mirage::Context plain(argv[2]);

        // Text shape and embeddings.
        mirage::TextShape shape = text.text_shape();
        CHECK(shape.tokens == 8 && shape.width == 384);
        expect_error([&] { plain.text_shape(); }, MIRAGE_ERR_UNSUPPORTED, "not text-conditioned");
        mirage::TextEmbedding apple = text.embed("a red apple");
        CHECK(apple.pooled.size() == 384 && apple.tokens.empty());
        double norm2 = 0.0;
        for (float v : apple.pooled) norm2 += static_cast<double>(v) * v;
        CHECK(std::fabs(std::sqrt(norm2) - 1.0) < 1e-4);
        mirage::TextEmbedding full = text.embed("a red apple", true);
        CHECK(full.pooled == apple.pooled && full.tokens.size() == 8 * 384);
        CHECK(text.embed("").pooled.size() == 384);
        CHECK(text.embed("a very long prompt about a red apple on a wooden table in the sun").pooled.size() == 384);
        expect_error([&] { plain.embed("a red apple"); }, MIRAGE_ERR_UNSUPPORTED, "not text-conditioned");
        expect_error([&] { text.embed("\xff\xfe"); }, MIRAGE_ERR_INVALID_ARGUMENT, "UTF-8");
        expect_error([&] { text.embed(std::string("a\0b", 3)); }, MIRAGE_ERR_INVALID_ARGUMENT, "NUL");

        // Options: the C defaults, then generate with a prompt.
        mirage::DiffusionOptions o;
        CHECK(o.prompt.empty() && o.negative_prompt.empty() && o.guidance == MIRAGE_GUIDANCE_DEFAULT);
        o.steps = 4;
        o.seed = 3;
        o.format = MIRAGE_PIXEL_GRAY8;
        o.prompt = "a red apple";
        mirage::ImageBatch a1 = text.generate(o);
        mirage::ImageBatch a2 = text.generate(o);
        CHECK(a1.size() == 1 && same_image(a1, 0, a2, 0));
        o.guidance = 2.5f;  // the fixture's own guidance
        CHECK(same_image(a1, 0, text.generate(o), 0));
        o.guidance = 1.0f;
        CHECK(!same_image(a1, 0, text.generate(o), 0));
        o.guidance = MIRAGE_GUIDANCE_DEFAULT;
        o.negative_prompt = "green";
        CHECK(!same_image(a1, 0, text.generate(o), 0));
        o.negative_prompt.clear();
        o.prompt = "a blue car";
        CHECK(!same_image(a1, 0, text.generate(o), 0));
        o.prompt = "a red apple";
        o.guidance = 1000.0f;
        expect_error([&] { text.generate(o); }, MIRAGE_ERR_INVALID_ARGUMENT, "guidance");
        o.guidance = std::nanf("");
        expect_error([&] { text.generate(o); }, MIRAGE_ERR_INVALID_ARGUMENT, "guidance");
        o.guidance = MIRAGE_GUIDANCE_DEFAULT;
        expect_error([&] { plain.generate(o); }, MIRAGE_ERR_UNSUPPORTED, "not text-conditioned");
        o.prompt = std::string("a\0b", 3);
        expect_error([&] { text.generate(o); }, MIRAGE_ERR_INVALID_ARGUMENT, "prompt contains a NUL byte");
        o.prompt = "a red apple";

        // img2img with a prompt.
        std::vector<std::uint8_t> pixels(28 * 28);
        for (std::size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<std::uint8_t>(i * 7);
        o.strength = 0.6f;
        CHECK(text.img2img({MirageImage{28, 28, 0, MIRAGE_PIXEL_GRAY8, pixels.data()}}, o).size() == 1);
        o.strength = 1.0f;

        // Interpolate: frames, progress over all of them, the first frame on the first prompt.
        std::uint32_t last_step = 0, last_total = 0;
        int progress_calls = 0;
        bool in_order = true;
        o.progress = [&](std::uint32_t step, std::uint32_t total) {
            in_order = in_order && step == last_step + 1 && (last_total == 0 || total == last_total);
            last_step = step;
            last_total = total;
            ++progress_calls;
            return true;
        };
        std::vector<std::string> path;
        path.push_back("a red apple");
        path.push_back("a blue car");
        mirage::ImageBatch walk = text.interpolate(path, 3, o);
        CHECK(walk.size() == 3);
        CHECK(progress_calls == 12 && in_order && last_step == 12 && last_total == 12);
        CHECK(max_grey_diff(walk[0], a1[0]) <= 1);
        CHECK(!same_image(walk, 0, walk, 1));
        o.progress = [](std::uint32_t step, std::uint32_t) { return step < 5; };
        expect_error([&] { text.interpolate(path, 3, o); }, MIRAGE_ERR_CANCELLED, "cancel");
        o.progress = nullptr;
        expect_error([&] { text.interpolate(std::vector<std::string>(1, "a cat"), 3, o); },
                     MIRAGE_ERR_INVALID_ARGUMENT, "prompt_count");
        expect_error([&] { text.interpolate(path, 1, o); }, MIRAGE_ERR_INVALID_ARGUMENT, "frames");
        expect_error([&] { plain.interpolate(path, 3, o); }, MIRAGE_ERR_UNSUPPORTED, "not text-conditioned");
        path.push_back(std::string("x\0y", 3));
        expect_error([&] { text.interpolate(path, 3, o); }, MIRAGE_ERR_INVALID_ARGUMENT, "prompts[2] contains");
    } catch (const mirage::Error &e) {
        std::fprintf(stderr, "FAIL: unexpected mirage::Error: %s\n", e.what());
        return 1;
    }
    return summary("test_text_cpp");
}
