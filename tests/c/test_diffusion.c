/*
 * Diffusion through the C API from C: generate with progress and preview callbacks (user_data round trip),
 * seeded reproducibility, cancelling from a callback, from a second thread and on an idle context, freeing
 * a context while a generation runs on another thread, img2img, inpaint, and every kind of bad input
 * (a status plus a non-empty message, out-parameters untouched).
 *
 * Run by tests/capi.rs (c_diffusion_program_passes, and under valgrind) as:
 * test_diffusion <diffusion set> <VAE-only set>, where the first is the tiny random VAE + U-Net set (28x28
 * grey, latents 2x8x8) and the second has no U-Net.
 * Prints one line per failed check and a summary; exits 0 only if every check passed.
 */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mirage.h"

#include "check.h"

/* ---- callbacks: they count their calls, check user_data, and may cancel or signal ---- */

struct watch {
    pthread_mutex_t lock;
    pthread_cond_t started_cond;
    int progress_calls, preview_calls, wrong_user_data, bad_args;
    uint32_t last_step, last_total;
    uint32_t cancel_at; /* progress returns false at this step (0 = never) */
    int started;        /* set at the first progress call, signalled on started_cond */
    int finished;       /* set by generate_thread when its call has returned, signalled on started_cond */
    uint8_t preview_first[28 * 28];
};

static void watch_init(struct watch *w) {
    memset(w, 0, sizeof *w);
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->started_cond, NULL);
}

static void watch_destroy(struct watch *w) {
    pthread_cond_destroy(&w->started_cond);
    pthread_mutex_destroy(&w->lock);
}

static int progress_count(struct watch *w) {
    pthread_mutex_lock(&w->lock);
    int n = w->progress_calls;
    pthread_mutex_unlock(&w->lock);
    return n;
}

static bool on_progress(uint32_t step, uint32_t total, void *user_data) {
    struct watch *w = user_data;
    pthread_mutex_lock(&w->lock);
    w->progress_calls++;
    if (step != w->last_step + 1 || step > total || (w->last_total && total != w->last_total)) w->bad_args++;
    w->last_step = step;
    w->last_total = total;
    if (!w->started) {
        w->started = 1;
        pthread_cond_broadcast(&w->started_cond);
    }
    bool go_on = w->cancel_at == 0 || step < w->cancel_at;
    pthread_mutex_unlock(&w->lock);
    /* The long generations that another thread cancels or frees under: block briefly after each step, so that
     * the other thread gets to run. Under valgrind, which runs one thread at a time, a generation that never
     * blocks can otherwise keep the CPU for all its 1000 steps before the canceller is scheduled. */
    if (total >= 1000) {
        struct timespec pause = {0, 200 * 1000};
        nanosleep(&pause, NULL);
    }
    return go_on;
}

static bool on_preview(uint32_t step, const MirageImage *images, size_t count, void *user_data) {
    struct watch *w = user_data;
    pthread_mutex_lock(&w->lock);
    w->preview_calls++;
    if (step == 0 || count != 1 || images == NULL || images[0].width != 28 || images[0].height != 28 ||
        images[0].format != MIRAGE_PIXEL_GRAY8 || images[0].data == NULL)
        w->bad_args++;
    else if (step == 1)
        memcpy(w->preview_first, images[0].data, sizeof w->preview_first); /* borrowed: copy what we keep */
    pthread_mutex_unlock(&w->lock);
    return true;
}

/* Blocks until the generation watched by `w` has made its first step, or has returned without one (it
 * failed: then the caller's checks report it instead of this waiting forever). Returns whether it started. */
static int wait_started(struct watch *w) {
    pthread_mutex_lock(&w->lock);
    while (!w->started && !w->finished) pthread_cond_wait(&w->started_cond, &w->lock);
    int started = w->started;
    pthread_mutex_unlock(&w->lock);
    return started;
}

static MirageDiffusionParams params_with(uint32_t steps, uint64_t seed, struct watch *w) {
    MirageDiffusionParams p;
    MirageStatus s = mirage_diffusion_params_init(&p, sizeof p);
    CHECK(s == MIRAGE_OK, "params init");
    p.steps = steps;
    p.seed = seed;
    p.format = MIRAGE_PIXEL_GRAY8;
    if (w) {
        p.progress = on_progress;
        p.user_data = w;
    }
    return p;
}

static int same_pixels(const MirageImageBatch *a, const MirageImageBatch *b) {
    size_t n = mirage_image_batch_count(a);
    if (n == 0 || n != mirage_image_batch_count(b)) return 0;
    for (size_t i = 0; i < n; i++) {
        MirageImage x, y;
        if (mirage_image_batch_get(a, i, &x) != MIRAGE_OK || mirage_image_batch_get(b, i, &y) != MIRAGE_OK) return 0;
        if (x.width != y.width || x.height != y.height || x.format != y.format ||
            memcmp(x.data, y.data, (size_t)x.stride * x.height) != 0)
            return 0;
    }
    return 1;
}

/* ---- generate ---- */

static void test_generate(const MirageContext *ctx) {
    MirageDiffusionParams p;
    EXPECT_OK(mirage_diffusion_params_init(&p, sizeof p));
    CHECK(p.struct_size == sizeof p && p.steps == 50 && p.sampler == NULL && p.eta == 0.0f && p.count == 1 &&
              p.strength == 1.0f && p.progress == NULL && p.preview == NULL && p.user_data == NULL &&
              p.format == MIRAGE_PIXEL_RGBA8,
          "diffusion params defaults");

    struct watch w;
    watch_init(&w);
    p = params_with(6, 42, &w);
    p.preview = on_preview;
    MirageImageBatch *a = NULL, *b = NULL;
    EXPECT_OK(mirage_generate(ctx, &p, &a));
    CHECK(w.progress_calls == 6 && w.preview_calls == 6, "%d progress, %d preview calls for 6 steps",
          w.progress_calls, w.preview_calls);
    CHECK(w.bad_args == 0 && w.last_step == 6 && w.last_total == 6, "callback arguments (%d bad)", w.bad_args);
    CHECK(mirage_image_batch_count(a) == 1, "batch of %zu", mirage_image_batch_count(a));
    MirageImage img;
    EXPECT_OK(mirage_image_batch_get(a, 0, &img));
    CHECK(img.width == 28 && img.height == 28 && img.format == MIRAGE_PIXEL_GRAY8, "generated image");
    watch_destroy(&w);

    /* Same seed, same pixels (without callbacks: they do not change the result); another seed differs. */
    p = params_with(6, 42, NULL);
    EXPECT_OK(mirage_generate(ctx, &p, &b));
    CHECK(same_pixels(a, b), "same seed, different pixels");
    MirageImageBatch *c = NULL;
    p.seed = 43;
    EXPECT_OK(mirage_generate(ctx, &p, &c));
    CHECK(!same_pixels(a, c), "different seeds, same pixels");
    mirage_image_batch_free(c);

    /* Several at once, RGBA, the other sampler. */
    p = params_with(4, 1, NULL);
    p.count = 3;
    p.sampler = "DPM++2M";
    p.format = MIRAGE_PIXEL_RGBA8;
    EXPECT_OK(mirage_generate(ctx, &p, &c));
    CHECK(mirage_image_batch_count(c) == 3, "count 3 gave %zu", mirage_image_batch_count(c));
    EXPECT_OK(mirage_image_batch_get(c, 2, &img));
    CHECK(img.format == MIRAGE_PIXEL_RGBA8 && img.stride == 112 && img.data[3] == 255, "RGBA result");
    mirage_image_batch_free(c);

    mirage_image_batch_free(a);
    mirage_image_batch_free(b);
}

/* ---- cancel ---- */

struct job {
    const MirageContext *ctx;
    MirageDiffusionParams params;
    MirageStatus status;
    MirageImageBatch *out;
    struct watch *w; /* the params' user_data: told when the call has returned */
};

static void *generate_thread(void *arg) {
    struct job *j = arg;
    j->status = mirage_generate(j->ctx, &j->params, &j->out);
    pthread_mutex_lock(&j->w->lock);
    j->w->finished = 1;
    pthread_cond_broadcast(&j->w->started_cond);
    pthread_mutex_unlock(&j->w->lock);
    return NULL;
}

/* After a failed check that a threaded generation was cancelled: free what it made, so that the failure
 * shows as the check's FAIL line and not also as a leak under valgrind. */
static void free_unexpected(struct job *j, MirageImageBatch *sentinel) {
    if (j->out != sentinel) mirage_image_batch_free(j->out);
}

static void test_cancel(const MirageContext *ctx) {
    /* From the progress callback: false at step 2 cancels right there. */
    struct watch w;
    watch_init(&w);
    w.cancel_at = 2;
    MirageDiffusionParams p = params_with(10, 1, &w);
    MirageImageBatch *const sentinel = (MirageImageBatch *)&w;
    MirageImageBatch *out = sentinel;
    EXPECT_ERR(mirage_generate(ctx, &p, &out), MIRAGE_ERR_CANCELLED, "cancel");
    CHECK(w.progress_calls == 2, "%d progress calls after cancelling at step 2", w.progress_calls);
    CHECK(out == sentinel, "a cancelled generation wrote its out-parameter");
    if (out != sentinel) mirage_image_batch_free(out);
    watch_destroy(&w);

    /* On an idle context: OK, and the next generation is not affected. */
    EXPECT_OK(mirage_context_cancel(ctx));
    EXPECT_OK(mirage_context_cancel(ctx));
    p = params_with(3, 1, NULL);
    out = NULL;
    EXPECT_OK(mirage_generate(ctx, &p, &out));
    mirage_image_batch_free(out);
    EXPECT_ERR(mirage_context_cancel(NULL), MIRAGE_ERR_INVALID_ARGUMENT, "ctx is NULL");

    /* From another thread while a long generation runs: it stops well before its 1000 steps. */
    watch_init(&w);
    struct job j = {ctx, params_with(1000, 3, &w), MIRAGE_OK, sentinel, &w};
    pthread_t t;
    CHECK(pthread_create(&t, NULL, generate_thread, &j) == 0, "pthread_create");
    CHECK(wait_started(&w), "the generation to cancel returned before its first step");
    EXPECT_OK(mirage_context_cancel(ctx));
    pthread_join(t, NULL);
    CHECK(j.status == MIRAGE_ERR_CANCELLED, "cancelled generation returned %s", mirage_status_str(j.status));
    CHECK(j.out == sentinel, "a cancelled generation wrote its out-parameter");
    free_unexpected(&j, sentinel);
    int done = progress_count(&w);
    CHECK(done >= 1 && done < 1000, "%d of 1000 steps ran after the cancel", done);
    if (getenv("TEST_API_VERBOSE")) printf("  cancelled from a thread after %d of 1000 steps\n", done);
    watch_destroy(&w);

    /* ... and the context works on afterwards. */
    out = NULL;
    EXPECT_OK(mirage_generate(ctx, &p, &out));
    mirage_image_batch_free(out);
}

/* Freeing a context while a generation runs on another thread: the generation is cancelled, free waits for
 * it, and no callback runs after free returned. */
static void test_free_while_running(const char *dir) {
    MirageContext *ctx = NULL;
    EXPECT_OK(mirage_context_new(dir, NULL, &ctx));
    if (!ctx) return;
    struct watch w;
    watch_init(&w);
    MirageImageBatch *const sentinel = (MirageImageBatch *)&w;
    struct job j = {ctx, params_with(1000, 5, &w), MIRAGE_OK, sentinel, &w};
    pthread_t t;
    CHECK(pthread_create(&t, NULL, generate_thread, &j) == 0, "pthread_create");
    CHECK(wait_started(&w), "the generation to free under returned before its first step");
    mirage_context_free(ctx);
    int at_free = progress_count(&w);
    pthread_join(t, NULL);
    CHECK(j.status == MIRAGE_ERR_CANCELLED, "generation on a freed context returned %s",
          mirage_status_str(j.status));
    CHECK(progress_count(&w) == at_free, "a callback ran after mirage_context_free returned");
    CHECK(at_free < 1000, "free waited for all %d steps", at_free);
    CHECK(j.out == sentinel, "the cancelled generation wrote its out-parameter");
    free_unexpected(&j, sentinel);
    watch_destroy(&w);
}

/* ---- img2img and inpaint ---- */

static void test_img2img_inpaint(const MirageContext *ctx) {
    uint8_t pixels[28 * 30], mask[28 * 28];
    /* Padded rows (stride 30) with a pattern; the padding must not matter. */
    for (int y = 0; y < 28; y++)
        for (int x = 0; x < 30; x++) pixels[y * 30 + x] = x < 28 ? (uint8_t)((x * 9 + y * 5) % 256) : 0xAB;
    MirageImage image = {28, 28, 30, MIRAGE_PIXEL_GRAY8, pixels};

    MirageDiffusionParams p = params_with(10, 7, NULL);
    p.strength = 0.3f;
    MirageImageBatch *a = NULL, *b = NULL;
    EXPECT_OK(mirage_img2img(ctx, &image, 1, &p, &a));
    EXPECT_OK(mirage_img2img(ctx, &image, 1, &p, &b));
    CHECK(mirage_image_batch_count(a) == 1 && same_pixels(a, b), "img2img not reproducible");
    mirage_image_batch_free(a);
    mirage_image_batch_free(b);

    /* Inpaint the centre square; outside it every pixel must come back unchanged. */
    for (int y = 0; y < 28; y++)
        for (int x = 0; x < 28; x++) mask[y * 28 + x] = (x >= 8 && x < 20 && y >= 8 && y < 20) ? 255 : 0;
    MirageImage m = {28, 28, 0, MIRAGE_PIXEL_GRAY8, mask};
    p = params_with(8, 9, NULL);
    a = NULL;
    EXPECT_OK(mirage_inpaint(ctx, &image, &m, 1, &p, &a));
    MirageImage r;
    EXPECT_OK(mirage_image_batch_get(a, 0, &r));
    int kept = 1, changed = 0;
    for (int y = 0; y < 28; y++)
        for (int x = 0; x < 28; x++) {
            if (mask[y * 28 + x] == 0)
                kept &= r.data[y * 28 + x] == pixels[y * 30 + x];
            else
                changed |= r.data[y * 28 + x] != pixels[y * 30 + x];
        }
    CHECK(kept, "inpaint changed pixels outside the mask");
    CHECK(changed, "inpaint left the masked region exactly as it was");
    mirage_image_batch_free(a);
}

/* ---- bad input ---- */

static void test_bad_input(const MirageContext *ctx, const MirageContext *vae_only) {
    uint8_t pixels[28 * 28] = {0}, mask[28 * 28] = {0}, rgb[28 * 28 * 3] = {0};
    MirageImage image = {28, 28, 0, MIRAGE_PIXEL_GRAY8, pixels};
    MirageImage m = {28, 28, 0, MIRAGE_PIXEL_GRAY8, mask};
    MirageImageBatch *const sentinel = (MirageImageBatch *)pixels;
    MirageImageBatch *out = sentinel;
    MirageDiffusionParams good = params_with(4, 1, NULL), p;
    good.strength = 0.5f;

    EXPECT_ERR(mirage_diffusion_params_init(NULL, sizeof p), MIRAGE_ERR_INVALID_ARGUMENT, "params is NULL");
    EXPECT_ERR(mirage_diffusion_params_init(&p, sizeof p - 1), MIRAGE_ERR_INVALID_ARGUMENT, "struct_size");

    EXPECT_ERR(mirage_generate(NULL, &good, &out), MIRAGE_ERR_INVALID_ARGUMENT, "ctx is NULL");
    EXPECT_ERR(mirage_generate(ctx, NULL, &out), MIRAGE_ERR_INVALID_ARGUMENT, "params is NULL");
    EXPECT_ERR(mirage_generate(ctx, &good, NULL), MIRAGE_ERR_INVALID_ARGUMENT, "out is NULL");
    EXPECT_ERR(mirage_generate(vae_only, &good, &out), MIRAGE_ERR_UNSUPPORTED, "U-Net");
    EXPECT_ERR(mirage_img2img(vae_only, &image, 1, &good, &out), MIRAGE_ERR_UNSUPPORTED, "U-Net");
    EXPECT_ERR(mirage_inpaint(vae_only, &image, &m, 1, &good, &out), MIRAGE_ERR_UNSUPPORTED, "U-Net");

    p = good;
    p.struct_size = 8;
    EXPECT_ERR(mirage_generate(ctx, &p, &out), MIRAGE_ERR_INVALID_ARGUMENT, "struct_size");
    p = good;
    p.steps = 0;
    EXPECT_ERR(mirage_generate(ctx, &p, &out), MIRAGE_ERR_INVALID_ARGUMENT, "params->steps");
    p.steps = 1001;
    EXPECT_ERR(mirage_generate(ctx, &p, &out), MIRAGE_ERR_INVALID_ARGUMENT, "params->steps");
    p = good;
    p.eta = NAN;
    EXPECT_ERR(mirage_generate(ctx, &p, &out), MIRAGE_ERR_INVALID_ARGUMENT, "params->eta");
    p.eta = -0.5f;
    EXPECT_ERR(mirage_generate(ctx, &p, &out), MIRAGE_ERR_INVALID_ARGUMENT, "params->eta");
    p = good;
    p.sampler = "euler";
    EXPECT_ERR(mirage_generate(ctx, &p, &out), MIRAGE_ERR_INVALID_ARGUMENT, "euler");
    p.sampler = "dd\xff\xfeim";
    EXPECT_ERR(mirage_generate(ctx, &p, &out), MIRAGE_ERR_INVALID_ARGUMENT, "UTF-8");
    p = good;
    p.count = 0;
    EXPECT_ERR(mirage_generate(ctx, &p, &out), MIRAGE_ERR_INVALID_ARGUMENT, "params->count");
    p.count = 5000;
    EXPECT_ERR(mirage_generate(ctx, &p, &out), MIRAGE_ERR_INVALID_ARGUMENT, "params->count");
    p = good;
    p.format = 77;
    EXPECT_ERR(mirage_generate(ctx, &p, &out), MIRAGE_ERR_INVALID_ARGUMENT, "params->format");

    p = good;
    p.strength = 0.0f;
    EXPECT_ERR(mirage_img2img(ctx, &image, 1, &p, &out), MIRAGE_ERR_INVALID_ARGUMENT, "params->strength");
    p.strength = 1.5f;
    EXPECT_ERR(mirage_img2img(ctx, &image, 1, &p, &out), MIRAGE_ERR_INVALID_ARGUMENT, "params->strength");
    p.strength = NAN;
    EXPECT_ERR(mirage_inpaint(ctx, &image, &m, 1, &p, &out), MIRAGE_ERR_INVALID_ARGUMENT, "params->strength");

    EXPECT_ERR(mirage_img2img(ctx, NULL, 1, &good, &out), MIRAGE_ERR_INVALID_ARGUMENT, "images is NULL");
    EXPECT_ERR(mirage_img2img(ctx, &image, 0, &good, &out), MIRAGE_ERR_INVALID_ARGUMENT, "count");
    MirageImage wrong = image;
    wrong.width = 27;
    EXPECT_ERR(mirage_img2img(ctx, &wrong, 1, &good, &out), MIRAGE_ERR_INVALID_ARGUMENT, "27x28");
    wrong = image;
    wrong.format = MIRAGE_PIXEL_RGB8;
    wrong.data = rgb;
    EXPECT_ERR(mirage_img2img(ctx, &wrong, 1, &good, &out), MIRAGE_ERR_INVALID_ARGUMENT, "28x28x1");
    wrong = image;
    wrong.data = NULL;
    EXPECT_ERR(mirage_img2img(ctx, &wrong, 1, &good, &out), MIRAGE_ERR_INVALID_ARGUMENT, "data is NULL");

    EXPECT_ERR(mirage_inpaint(ctx, &image, NULL, 1, &good, &out), MIRAGE_ERR_INVALID_ARGUMENT, "masks is NULL");
    MirageImage bad_mask = m;
    bad_mask.height = 14;
    EXPECT_ERR(mirage_inpaint(ctx, &image, &bad_mask, 1, &good, &out), MIRAGE_ERR_INVALID_ARGUMENT, "28x14");
    bad_mask = m;
    bad_mask.format = MIRAGE_PIXEL_RGB8;
    bad_mask.data = rgb;
    EXPECT_ERR(mirage_inpaint(ctx, &image, &bad_mask, 1, &good, &out), MIRAGE_ERR_INVALID_ARGUMENT, "GRAY8");

    CHECK(out == sentinel, "a failed call wrote its out-parameter");
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s <diffusion set dir> <VAE-only set dir>\n", argv[0]);
        return 2;
    }
    MirageRuntimeOptions o;
    EXPECT_OK(mirage_runtime_options_init(&o, sizeof o));
    o.provider = MIRAGE_PROVIDER_CPU;
    o.intra_threads = 1;
    EXPECT_OK(mirage_runtime_init(&o));

    MirageContext *ctx = NULL, *vae_only = NULL;
    EXPECT_OK(mirage_context_new(argv[1], NULL, &ctx));
    EXPECT_OK(mirage_context_new(argv[2], NULL, &vae_only));
    if (ctx && vae_only) {
        MirageProvider prov = 0;
        EXPECT_OK(mirage_context_provider(ctx, MIRAGE_MODEL_UNET, &prov));
        EXPECT_ERR(mirage_context_provider(vae_only, MIRAGE_MODEL_UNET, &prov), MIRAGE_ERR_UNSUPPORTED, "unet");
        test_generate(ctx);
        test_cancel(ctx);
        test_img2img_inpaint(ctx);
        test_bad_input(ctx, vae_only);
        test_free_while_running(argv[1]);
    }
    mirage_context_free(vae_only);
    mirage_context_free(ctx);

    printf("test_diffusion: %d checks, %d failed\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
