// The header as C++ (included twice, with the C++ wrapper) and bindings/cpp/mirage.hpp in use: encode,
// seeded sampling, decode to library and host buffers, errors as exceptions carrying status and message;
// jobs: run on two workers and waited for, a manual job stepped on a budget to the blocking call's pixels,
// previews, results taken into a bottom-up BGRA buffer, a Job moved, cancelled and destroyed while running,
// the bounded queue, and ImageBatch::write into a Target.
// Run by tests/header.rs (cpp_wrapper_runs) as: test_header <model set dir>. Exits 0 and prints
// "test_header: ok" only if every check passed.
#include "mirage.h"
#include "mirage.h"
#include "mirage.hpp"

#include <chrono>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "check.hpp"

// The set's RGBA8 image `rgba` as a bottom-up BGRA8 buffer with rows `stride` bytes apart and the padding
// bytes 0xAB, as a Target with those flags must hold it once written.
static std::vector<std::uint8_t> bottom_up_bgra(const MirageImage &rgba, std::size_t stride) {
    std::vector<std::uint8_t> out(stride * rgba.height, 0xAB);
    for (std::uint32_t y = 0; y < rgba.height; ++y)
        for (std::uint32_t x = 0; x < rgba.width; ++x) {
            const std::uint8_t *s = rgba.data + static_cast<std::size_t>(y) * rgba.stride + 4 * x;
            std::uint8_t *d = &out[(rgba.height - 1 - y) * stride + 4 * x];
            d[0] = s[2];
            d[1] = s[1];
            d[2] = s[0];
            d[3] = s[3];
        }
    return out;
}

static bool same_pixels(const MirageImage &a, const MirageImage &b) {
    return a.width == b.width && a.height == b.height && a.format == b.format && a.stride == b.stride &&
           std::memcmp(a.data, b.data, static_cast<std::size_t>(a.stride) * a.height) == 0;
}

static double seconds_since(std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// Jobs through the wrapper, on a context of two workers and a queue of two.
static void jobs(const char *dir) {
    using std::chrono::milliseconds;
    mirage::ContextOptions co;
    CHECK(co.workers == 1 && co.max_queued_jobs == 64 && !co.tileable && co.provider == MIRAGE_PROVIDER_DEFAULT);
    co.workers = 0;
    expect_error([&] { mirage::Context bad(dir, co); }, MIRAGE_ERR_INVALID_ARGUMENT, "workers");
    co.workers = 2;
    co.max_queued_jobs = 2;
    mirage::Context ctx(dir, co);
    const std::uint32_t w = 28, h = 28;

    // Not a pack, and no buffer at all: refused with what is wrong.
    const char junk[] = "this is not a mirage pack, only some bytes that pretend to be one";
    expect_error([&] { mirage::Context::from_memory(junk, sizeof junk); }, MIRAGE_ERR_INVALID_MODEL);
    expect_error([&] { mirage::Context::from_memory(nullptr, 16); }, MIRAGE_ERR_INVALID_ARGUMENT);

    mirage::JobOptions defaults;
    CHECK(defaults.mode == MIRAGE_JOB_WORKERS && !defaults.previews);
    CHECK(mirage::JobOptions::manual().mode == MIRAGE_JOB_MANUAL && mirage::JobOptions::with_previews().previews);

    mirage::DiffusionOptions o;
    o.steps = 6;
    o.seed = 21;
    o.format = MIRAGE_PIXEL_RGBA8;

    // On the workers, with previews, waited for.
    mirage::Job job = ctx.submit_generate(o, mirage::JobOptions::with_previews());
    mirage::JobStatus s = job.poll();
    CHECK(s.total == 6 && s.step <= 6 && s.state >= MIRAGE_JOB_QUEUED && s.state <= MIRAGE_JOB_DONE);
    expect_error([&] { job.advance(1); }, MIRAGE_ERR_INVALID_ARGUMENT, "MIRAGE_JOB_MANUAL");
    CHECK(job.wait(milliseconds(120000)));
    s = job.poll();
    CHECK(s.ended() && s.state == MIRAGE_JOB_DONE && s.step == 6);
    CHECK(job.wait(milliseconds(0)));
    mirage::Preview last = job.preview(MIRAGE_PIXEL_GRAY8);
    CHECK(last && last.step == 6 && last.images.size() == 1 && last.images[0].format == MIRAGE_PIXEL_GRAY8);
    mirage::ImageBatch blocking = ctx.generate(o);
    mirage::ImageBatch from_job = job.take_images();
    CHECK(from_job.size() == 1 && same_pixels(from_job[0], blocking[0]));
    expect_error([&] { job.take_images(); }, MIRAGE_ERR_INVALID_ARGUMENT, "already taken");

    // Manual, stepped on a 4 ms budget per "frame", taken into a bottom-up BGRA buffer with padded rows.
    o.sampler = "dpm++2m";
    o.seed = 22;
    mirage::Job manual = ctx.submit_generate(o, mirage::JobOptions::manual(true));
    mirage::Preview none = manual.preview();
    CHECK(!none && none.step == 0 && none.images.size() == 0);
    CHECK(manual.advance(0) == 0 && manual.poll().state == MIRAGE_JOB_QUEUED);
    CHECK(!manual.wait(milliseconds(1)));  // nobody else runs it
    expect_error([&] { manual.take_images(); }, MIRAGE_ERR_INVALID_ARGUMENT, "has not ended");
    // Moved mid-way: the new owner goes on where the job was.
    CHECK(manual.advance(1) == 1);
    mirage::Job moved(std::move(manual));
    CHECK(manual.get() == nullptr && moved.poll().step == 1);
    mirage::Job stepped = ctx.submit_decode(ctx.sample_prior(1, 1), MIRAGE_PIXEL_RGBA8, mirage::JobOptions::manual());
    stepped = std::move(moved);  // the decode job is freed here, unrun
    int frames = 0;
    std::uint32_t ran = 0;
    while (!stepped.poll().ended() && frames < 1000) {
        std::uint32_t n = stepped.advance(UINT32_MAX, std::chrono::microseconds(4000));
        CHECK(n >= 1);
        ran += n;
        ++frames;
    }
    CHECK(stepped.poll().state == MIRAGE_JOB_DONE && ran == 5 && stepped.advance() == 0);
    CHECK(stepped.preview().step == 6);
    const std::size_t stride = w * 4 + 12;
    std::vector<std::uint8_t> texture(stride * h, 0xAB);
    std::vector<std::uint8_t> tail(texture.size() + 64, 0xAB);
    // Refused targets write nothing and leave the result in the job.
    expect_error([&] { stepped.take_into(mirage::Target(texture, w, h, MIRAGE_PIXEL_BGRA8, w * 4 - 1)); },
                 MIRAGE_ERR_INVALID_ARGUMENT, "stride");
    expect_error([&] { stepped.take_into(mirage::Target(texture.data(), 100, w, h, MIRAGE_PIXEL_BGRA8, stride)); },
                 MIRAGE_ERR_INVALID_ARGUMENT, "size");
    expect_error([&] { stepped.take_into(std::vector<MirageTarget>()); }, MIRAGE_ERR_INVALID_ARGUMENT, "count");
    CHECK(texture == std::vector<std::uint8_t>(stride * h, 0xAB));
    stepped.take_into(mirage::Target(texture, w, h, MIRAGE_PIXEL_BGRA8, stride).bottom_up());
    mirage::ImageBatch manual_blocking = ctx.generate(o);
    CHECK(texture == bottom_up_bgra(manual_blocking[0], stride));
    expect_error([&] { stepped.take_into(mirage::Target(texture, w, h, MIRAGE_PIXEL_BGRA8, stride)); },
                 MIRAGE_ERR_INVALID_ARGUMENT, "already taken");

    // ImageBatch::write into the same kind of Target gives the same bytes; 2x nearest repeats each pixel.
    std::vector<std::uint8_t> written(stride * h, 0xAB);
    manual_blocking.write(0, mirage::Target(written, w, h, MIRAGE_PIXEL_BGRA8, stride).bottom_up());
    CHECK(written == texture);
    std::vector<std::uint8_t> big(w * 2 * h * 2 * 4, 0);
    manual_blocking.write(0, mirage::Target(big, w * 2, h * 2, MIRAGE_PIXEL_RGBA8).resized_with(MIRAGE_FILTER_NEAREST));
    const MirageImage src = manual_blocking[0];
    bool blocks = true;
    for (std::uint32_t y = 0; y < h * 2; ++y)
        for (std::uint32_t x = 0; x < w * 2; ++x)
            blocks = blocks &&
                     std::memcmp(&big[(y * w * 2 + x) * 4], src.data + (y / 2) * src.stride + (x / 2) * 4, 4) == 0;
    CHECK(blocks);
    expect_error([&] { manual_blocking.write(1, mirage::Target(big, w, h, MIRAGE_PIXEL_RGBA8)); },
                 MIRAGE_ERR_INVALID_ARGUMENT, "index");

    // Encode and decode jobs.
    std::vector<std::uint8_t> grey(w * h);
    for (std::size_t i = 0; i < grey.size(); ++i) grey[i] = static_cast<std::uint8_t>(i * 5);
    mirage::Job enc = ctx.submit_encode({MirageImage{w, h, 0, MIRAGE_PIXEL_GRAY8, grey.data()}});
    mirage::Latent prior = ctx.sample_prior(2, 3);
    mirage::Job dec = ctx.submit_decode(prior, MIRAGE_PIXEL_RGBA8);
    enc.wait();
    dec.wait();
    mirage::Distribution dist = enc.take_latents();
    mirage::Distribution direct = ctx.encode({MirageImage{w, h, 0, MIRAGE_PIXEL_GRAY8, grey.data()}});
    CHECK(dist.mean.to_vector() == direct.mean.to_vector() && dist.logvar.to_vector() == direct.logvar.to_vector());
    std::vector<std::uint8_t> d0(w * h * 4, 0), d1(w * h * 4, 0);
    dec.take_into({mirage::Target(d0, w, h, MIRAGE_PIXEL_RGBA8), mirage::Target(d1, w, h, MIRAGE_PIXEL_RGBA8)});
    mirage::ImageBatch decoded = ctx.decode(prior, MIRAGE_PIXEL_RGBA8);
    CHECK(std::memcmp(d0.data(), decoded[0].data, d0.size()) == 0 &&
          std::memcmp(d1.data(), decoded[1].data, d1.size()) == 0);

    // Jobs take no callbacks.
    mirage::DiffusionOptions with_progress = o;
    with_progress.progress = [](std::uint32_t, std::uint32_t) { return true; };
    expect_error([&] { ctx.submit_generate(with_progress); }, MIRAGE_ERR_INVALID_ARGUMENT, "callback");

    // Cancel a running job; destroy another while it runs (its destructor cancels it, without waiting).
    mirage::DiffusionOptions long_run = o;
    long_run.steps = 200;
    long_run.sampler = "ddim";
    mirage::Job doomed = ctx.submit_generate(long_run);
    {
        mirage::Job dropped = ctx.submit_generate(long_run);
        auto t0 = std::chrono::steady_clock::now();
        while (dropped.poll().step == 0 && seconds_since(t0) < 120) std::this_thread::sleep_for(milliseconds(1));
        CHECK(dropped.poll().state == MIRAGE_JOB_RUNNING);
        t0 = std::chrono::steady_clock::now();
        {
            mirage::Job gone = std::move(dropped);
        }
        CHECK(seconds_since(t0) < 1.0);
    }
    auto t0 = std::chrono::steady_clock::now();
    while (doomed.poll().step < 1 && seconds_since(t0) < 120) std::this_thread::sleep_for(milliseconds(1));
    doomed.cancel();
    CHECK(doomed.wait(milliseconds(120000)));
    mirage::JobStatus c = doomed.poll();
    CHECK(c.state == MIRAGE_JOB_CANCELLED && c.step < 200);
    expect_error([&] { doomed.take_images(); }, MIRAGE_ERR_CANCELLED);

    // The bounded queue: two workers busy, two queued, the next one refused with BUSY; the context goes on.
    std::vector<mirage::Job> queued;
    bool busy = false;
    for (int i = 0; i < 8 && !busy; ++i) {
        try {
            queued.push_back(ctx.submit_generate(long_run));
        } catch (const mirage::Error &e) {
            busy = e.status() == MIRAGE_ERR_BUSY && std::strstr(e.what(), "max_queued_jobs") != nullptr;
        }
    }
    CHECK(busy && queued.size() >= 2 && queued.size() <= 4);
    ctx.cancel();  // every job of the workers, queued or running
    for (std::size_t i = 0; i < queued.size(); ++i) {
        CHECK(queued[i].wait(milliseconds(120000)));
        CHECK(queued[i].poll().state == MIRAGE_JOB_CANCELLED);
    }
    queued.clear();
    o.steps = 2;
    for (int tries = 0;; ++tries) {
        try {
            mirage::Job after = ctx.submit_generate(o);
            CHECK(after.wait(milliseconds(120000)) && after.take_images().size() == 1);
            break;
        } catch (const mirage::Error &e) {
            if (e.status() != MIRAGE_ERR_BUSY || tries > 20000) throw;
            std::this_thread::sleep_for(milliseconds(1));
        }
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
        CHECK(!ctx.prior_sampleable());  // a random set declares no sampleable prior

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

        jobs(argv[1]);
    } catch (const mirage::Error &e) {
        std::fprintf(stderr, "FAIL: unexpected mirage::Error: %s\n", e.what());
        return 1;
    }
    return summary("test_header");
}
