/*
 * Text-to-image through the C API from C: the text shape, mirage_text_embed into host buffers (nothing
 * written on failure), prompts, negative prompts and guidance in mirage_generate / img2img / denoise /
 * inpaint, mirage_interpolate (frames, first frame = a plain generation of the first prompt, batching,
 * progress over all frames, cancel) and every kind of bad input (a status plus a message naming it).
 *
 * Run by tests/capi_text.rs (c_text_program_passes) as: test_text <text set> <plain set>, where the first is
 * the tiny text-conditioned set (real MiniLM encoder, random tiny U-Net, 8 tokens x 384; 28x28 grey) and the
 * second a tiny VAE + U-Net set without text conditioning. Prints one line per failed check and a summary;
 * exits 0 only if every check passed.
 */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mirage.h"

#include "check.h"

#define TOKENS 8
#define WIDTH 384
#define SIDE 28
#define PIXELS (SIDE * SIDE)
#define SENTINEL 7.25f

static const char *const NOT_UTF8 = "\xff\xfe";
/* 14 words, one word piece each: truncated to [CLS] + the first 6 + [SEP]. */
static const char *const LONG_PROMPT = "a very long prompt about a red apple on a wooden table in the sun";
static const char *const LONG_PROMPT_KEPT = "a very long prompt about a";

/* ---- the log callback: remembers whether the truncation warning came ---- */

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static int truncation_warnings;

static void on_log(MirageLogLevel level, const char *message, void *user_data) {
    (void)user_data;
    pthread_mutex_lock(&log_lock);
    if (level == MIRAGE_LOG_WARN && strstr(message, "truncated") != NULL) truncation_warnings++;
    pthread_mutex_unlock(&log_lock);
}

static int truncation_warning_count(void) {
    pthread_mutex_lock(&log_lock);
    int n = truncation_warnings;
    pthread_mutex_unlock(&log_lock);
    return n;
}

/* ---- helpers ---- */

static void fill(float *v, size_t n) {
    for (size_t i = 0; i < n; i++) v[i] = SENTINEL;
}

static int all_sentinel(const float *v, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (v[i] != SENTINEL) return 0;
    return 1;
}

/* |sum of squares - 1| < 2e-4, i.e. an L2 norm within 1e-4 of 1 (without libm's sqrt). */
static int unit_norm(const float *v, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)v[i] * v[i];
    return fabs(s - 1.0) < 2e-4;
}

static int all_finite_not_zero(const float *v, size_t n) {
    int nonzero = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(v[i]) || v[i] == SENTINEL) return 0;
        nonzero |= v[i] != 0.0f;
    }
    return nonzero;
}

static float max_abs_diff(const float *a, const float *b, size_t n) {
    float d = 0.0f;
    for (size_t i = 0; i < n; i++) {
        float x = fabsf(a[i] - b[i]);
        if (x > d) d = x;
    }
    return d;
}

/* The largest difference of one grey level between image i of a and image j of b (GRAY8 28x28); 256 when
 * either is missing or not of that shape. */
static int image_diff(const MirageImageBatch *a, size_t i, const MirageImageBatch *b, size_t j) {
    MirageImage x, y;
    if (!a || !b || mirage_image_batch_get(a, i, &x) != MIRAGE_OK || mirage_image_batch_get(b, j, &y) != MIRAGE_OK)
        return 256;
    if (x.width != SIDE || y.width != SIDE || x.height != SIDE || y.height != SIDE || x.format != MIRAGE_PIXEL_GRAY8 ||
        y.format != MIRAGE_PIXEL_GRAY8)
        return 256;
    int d = 0;
    for (size_t k = 0; k < PIXELS; k++) {
        int e = abs((int)x.data[k] - (int)y.data[k]);
        if (e > d) d = e;
    }
    return d;
}

/* Whole batches: same count, every image pixel-identical. */
static int same_pixels(const MirageImageBatch *a, const MirageImageBatch *b) {
    size_t n = mirage_image_batch_count(a);
    if (n == 0 || n != mirage_image_batch_count(b)) return 0;
    for (size_t i = 0; i < n; i++)
        if (image_diff(a, i, b, i) != 0) return 0;
    return 1;
}

/* ---- progress: counts calls, checks that steps go 1, 2, ... with one total, may cancel ---- */

struct watch {
    int calls, bad;
    uint32_t last_step, last_total, cancel_at;
};

static bool on_progress(uint32_t step, uint32_t total, void *user_data) {
    struct watch *w = user_data;
    w->calls++;
    if (step != w->last_step + 1 || step > total || (w->last_total && total != w->last_total)) w->bad++;
    w->last_step = step;
    w->last_total = total;
    return w->cancel_at == 0 || step < w->cancel_at;
}

static MirageDiffusionParams params_with(uint32_t steps, uint64_t seed, const char *prompt) {
    MirageDiffusionParams p;
    MirageStatus s = mirage_diffusion_params_init(&p, sizeof p);
    CHECK(s == MIRAGE_OK, "params init");
    p.steps = steps;
    p.seed = seed;
    p.format = MIRAGE_PIXEL_GRAY8;
    p.prompt = prompt;
    return p;
}

/* A generation that must succeed; NULL (and a failed check) otherwise. */
static MirageImageBatch *generate(const MirageContext *ctx, const MirageDiffusionParams *p) {
    MirageImageBatch *b = NULL;
    EXPECT_OK(mirage_generate(ctx, p, &b));
    return b;
}

/* ---- the text shape ---- */

static void test_shape(const MirageContext *text, const MirageContext *plain) {
    uint32_t tokens = 0, width = 0;
    EXPECT_OK(mirage_context_text_shape(text, &tokens, &width));
    CHECK(tokens == TOKENS && width == WIDTH, "text shape %u x %u, expected 8 x 384", tokens, width);
    tokens = width = 77;
    EXPECT_ERR(mirage_context_text_shape(plain, &tokens, &width), MIRAGE_ERR_UNSUPPORTED, "not text-conditioned");
    CHECK(tokens == 77 && width == 77, "a failed text_shape wrote its out-parameters");
    EXPECT_ERR(mirage_context_text_shape(NULL, &tokens, &width), MIRAGE_ERR_INVALID_ARGUMENT, "ctx is NULL");
    EXPECT_ERR(mirage_context_text_shape(text, NULL, &width), MIRAGE_ERR_INVALID_ARGUMENT, "tokens is NULL");
    EXPECT_ERR(mirage_context_text_shape(text, &tokens, NULL), MIRAGE_ERR_INVALID_ARGUMENT, "width is NULL");
    CHECK(tokens == 77 && width == 77, "a failed text_shape wrote its out-parameters");
}

/* ---- mirage_text_embed ---- */

static float pooled[WIDTH + 1], tokens[TOKENS * WIDTH + 1], pooled2[WIDTH + 1], tokens2[TOKENS * WIDTH + 1];

static void test_embed(const MirageContext *text, const MirageContext *plain) {
    const size_t nt = TOKENS * WIDTH;

    /* Both buffers, one float larger than needed: the extra float stays as it was. */
    fill(pooled, WIDTH + 1);
    fill(tokens, nt + 1);
    EXPECT_OK(mirage_text_embed(text, "a red apple", pooled, WIDTH + 1, tokens, nt + 1));
    CHECK(unit_norm(pooled, WIDTH), "the pooled embedding is not L2-normalised");
    CHECK(all_finite_not_zero(pooled, WIDTH), "pooled embedding not filled");
    CHECK(all_finite_not_zero(tokens, nt), "token embeddings not filled");
    CHECK(pooled[WIDTH] == SENTINEL && tokens[nt] == SENTINEL, "wrote past the embedding sizes");

    /* Exact sizes, the same prompt: the same numbers. No token buffer: pooled alone. */
    fill(pooled2, WIDTH + 1);
    fill(tokens2, nt + 1);
    EXPECT_OK(mirage_text_embed(text, "a red apple", pooled2, WIDTH, tokens2, nt));
    CHECK(memcmp(pooled, pooled2, sizeof pooled) == 0 && memcmp(tokens, tokens2, sizeof tokens) == 0,
          "embedding one prompt twice gave different numbers");
    fill(pooled2, WIDTH + 1);
    EXPECT_OK(mirage_text_embed(text, "a red apple", pooled2, WIDTH, NULL, 0));
    CHECK(memcmp(pooled, pooled2, sizeof pooled) == 0, "pooled without a token buffer differs");
    fill(pooled2, WIDTH + 1);
    EXPECT_OK(mirage_text_embed(text, "a blue car", pooled2, WIDTH, NULL, 12345));
    CHECK(unit_norm(pooled2, WIDTH) && max_abs_diff(pooled, pooled2, WIDTH) > 1e-3f,
          "another prompt gave the same pooled embedding");

    /* The empty prompt is the unconditional one: valid, normalised, and not "a red apple". */
    fill(pooled2, WIDTH + 1);
    fill(tokens2, nt + 1);
    EXPECT_OK(mirage_text_embed(text, "", pooled2, WIDTH, tokens2, nt));
    CHECK(unit_norm(pooled2, WIDTH) && all_finite_not_zero(tokens2, nt), "the empty prompt's embedding");
    CHECK(max_abs_diff(pooled, pooled2, WIDTH) > 1e-3f, "the empty prompt embeds as \"a red apple\"");

    /* Longer than 8 tokens: truncated to its start (a warning is logged), not refused. */
    int warned = truncation_warning_count();
    fill(pooled, WIDTH + 1);
    fill(tokens, nt + 1);
    EXPECT_OK(mirage_text_embed(text, LONG_PROMPT, pooled, WIDTH, tokens, nt));
    CHECK(unit_norm(pooled, WIDTH) && all_finite_not_zero(tokens, nt), "the long prompt's embedding");
    CHECK(truncation_warning_count() > warned, "no warning logged for a truncated prompt");
    EXPECT_OK(mirage_text_embed(text, LONG_PROMPT_KEPT, pooled2, WIDTH, tokens2, nt));
    CHECK(max_abs_diff(pooled, pooled2, WIDTH) < 1e-5f && max_abs_diff(tokens, tokens2, nt) < 1e-5f,
          "a truncated prompt does not embed as its first 6 tokens (%g, %g)",
          (double)max_abs_diff(pooled, pooled2, WIDTH), (double)max_abs_diff(tokens, tokens2, nt));

    /* Every session's provider is reportable, the text encoder's too; a plain set has none. */
    MirageProvider prov = 0;
    EXPECT_OK(mirage_context_provider(text, MIRAGE_MODEL_TEXT_ENCODER, &prov));
    CHECK(prov == MIRAGE_PROVIDER_CPU, "text encoder provider %u", prov);
    EXPECT_ERR(mirage_context_provider(plain, MIRAGE_MODEL_TEXT_ENCODER, &prov), MIRAGE_ERR_UNSUPPORTED,
               "text_encoder");

    /* Failures: the right status and message, and neither buffer written. */
    fill(pooled, WIDTH + 1);
    fill(tokens, nt + 1);
    EXPECT_ERR(mirage_text_embed(text, "x", pooled, WIDTH - 1, tokens, nt), MIRAGE_ERR_INVALID_ARGUMENT,
               "pooled_len");
    EXPECT_ERR(mirage_text_embed(text, "x", pooled, 0, NULL, 0), MIRAGE_ERR_INVALID_ARGUMENT, "pooled_len");
    EXPECT_ERR(mirage_text_embed(text, "x", pooled, WIDTH, tokens, nt - 1), MIRAGE_ERR_INVALID_ARGUMENT,
               "tokens_len");
    EXPECT_ERR(mirage_text_embed(text, "x", pooled, WIDTH, tokens, 0), MIRAGE_ERR_INVALID_ARGUMENT, "tokens_len");
    EXPECT_ERR(mirage_text_embed(text, NULL, pooled, WIDTH, tokens, nt), MIRAGE_ERR_INVALID_ARGUMENT,
               "prompt is NULL");
    EXPECT_ERR(mirage_text_embed(text, NOT_UTF8, pooled, WIDTH, tokens, nt), MIRAGE_ERR_INVALID_ARGUMENT, "UTF-8");
    EXPECT_ERR(mirage_text_embed(text, "x", NULL, WIDTH, tokens, nt), MIRAGE_ERR_INVALID_ARGUMENT,
               "pooled is NULL");
    EXPECT_ERR(mirage_text_embed(NULL, "x", pooled, WIDTH, tokens, nt), MIRAGE_ERR_INVALID_ARGUMENT, "ctx is NULL");
    EXPECT_ERR(mirage_text_embed(plain, "x", pooled, WIDTH, tokens, nt), MIRAGE_ERR_UNSUPPORTED,
               "not text-conditioned");
    CHECK(all_sentinel(pooled, WIDTH + 1) && all_sentinel(tokens, nt + 1), "a failed embed wrote its buffers");
}

/* ---- prompts in generate, img2img, denoise, inpaint ---- */

static void test_generate(const MirageContext *text, const MirageContext *plain) {
    MirageDiffusionParams p;
    EXPECT_OK(mirage_diffusion_params_init(&p, sizeof p));
    CHECK(p.prompt == NULL && p.negative_prompt == NULL && p.guidance == MIRAGE_GUIDANCE_DEFAULT,
          "text defaults: prompt %p, negative %p, guidance %g", (const void *)p.prompt,
          (const void *)p.negative_prompt, (double)p.guidance);

    p = params_with(4, 3, "a red apple");
    MirageImageBatch *apple = generate(text, &p);
    MirageImageBatch *again = generate(text, &p);
    CHECK(same_pixels(apple, again), "a prompt with one seed is not reproducible");
    mirage_image_batch_free(again);

    /* The set's own guidance (2.5 in the fixture) is what MIRAGE_GUIDANCE_DEFAULT takes. */
    p.guidance = 2.5f;
    again = generate(text, &p);
    CHECK(same_pixels(apple, again), "MIRAGE_GUIDANCE_DEFAULT is not the set's guidance 2.5");
    mirage_image_batch_free(again);

    MirageImageBatch *other;
    p = params_with(4, 3, "a blue car");
    other = generate(text, &p);
    CHECK(other && !same_pixels(apple, other), "another prompt gave the same pixels");
    mirage_image_batch_free(other);
    p = params_with(4, 3, "a red apple");
    p.guidance = 1.0f;
    other = generate(text, &p);
    CHECK(other && !same_pixels(apple, other), "another guidance gave the same pixels");
    mirage_image_batch_free(other);
    p = params_with(4, 3, "a red apple");
    p.negative_prompt = "green";
    other = generate(text, &p);
    CHECK(other && !same_pixels(apple, other), "a negative prompt changed nothing");
    mirage_image_batch_free(other);
    p = params_with(4, 4, "a red apple");
    other = generate(text, &p);
    CHECK(other && !same_pixels(apple, other), "another seed gave the same pixels");
    mirage_image_batch_free(other);

    /* Guidance 0 is the unconditional side alone: the prompt no longer matters. 50 is accepted. */
    p = params_with(4, 3, "a red apple");
    p.guidance = 0.0f;
    MirageImageBatch *g0 = generate(text, &p);
    p.prompt = "a blue car";
    other = generate(text, &p);
    CHECK(g0 && other && same_pixels(g0, other), "guidance 0 still follows the prompt");
    mirage_image_batch_free(other);
    mirage_image_batch_free(g0);
    p.guidance = 50.0f;
    other = generate(text, &p);
    mirage_image_batch_free(other);

    /* Several images with one prompt: each its own noise. */
    p = params_with(4, 3, "a red apple");
    p.count = 2;
    other = generate(text, &p);
    CHECK(mirage_image_batch_count(other) == 2 && image_diff(other, 0, other, 1) > 0,
          "two images of one prompt share their noise");
    CHECK(image_diff(other, 0, apple, 0) <= 1, "image 0 of a batch of 2 differs from a single generation by %d",
          image_diff(other, 0, apple, 0));
    mirage_image_batch_free(other);

    /* No prompt (NULL or "") on both sets: the unconditional generation; "" equals NULL. */
    p = params_with(4, 3, NULL);
    MirageImageBatch *uncond = generate(text, &p);
    MirageImageBatch *uncond_ref = generate(text, &p);
    p.prompt = "";
    p.negative_prompt = "";
    other = generate(text, &p);
    CHECK(uncond && other && same_pixels(uncond, other), "an empty prompt differs from no prompt");
    mirage_image_batch_free(other);
    mirage_image_batch_free(uncond);
    other = generate(plain, &p);
    CHECK(mirage_image_batch_count(other) == 1, "no batch from the plain set with an empty prompt");
    mirage_image_batch_free(other);

    /* Without a prompt and a negative prompt the guidance is ignored, not even checked (the header's rule,
     * the CLI's too): any value gives the unconditional images, on a text set and on a plain one. */
    const float ignored[] = {NAN, 7.0f, -3.0f, 1e9f};
    for (size_t i = 0; i < sizeof ignored / sizeof ignored[0]; i++) {
        p = params_with(4, 3, NULL);
        p.guidance = ignored[i];
        other = generate(text, &p);
        CHECK(other && same_pixels(uncond_ref, other), "guidance %g without a prompt changed the result",
              (double)ignored[i]);
        mirage_image_batch_free(other);
        other = generate(plain, &p);
        CHECK(mirage_image_batch_count(other) == 1, "guidance %g without a prompt failed on the plain set",
              (double)ignored[i]);
        mirage_image_batch_free(other);
    }
    mirage_image_batch_free(uncond_ref);

    /* Bad input: a status, a message naming it, *out untouched. */
    MirageImageBatch *const sentinel = (MirageImageBatch *)&p;
    MirageImageBatch *out = sentinel;
    const float bad_guidance[] = {NAN, -0.5f, 1000.0f, 50.5f, INFINITY, -INFINITY};
    for (size_t i = 0; i < sizeof bad_guidance / sizeof bad_guidance[0]; i++) {
        p = params_with(4, 3, "a red apple");
        p.guidance = bad_guidance[i];
        EXPECT_ERR(mirage_generate(text, &p, &out), MIRAGE_ERR_INVALID_ARGUMENT, "params->guidance");
    }
    p = params_with(4, 3, NOT_UTF8);
    EXPECT_ERR(mirage_generate(text, &p, &out), MIRAGE_ERR_INVALID_ARGUMENT, "params->prompt");
    p = params_with(4, 3, "a red apple");
    p.negative_prompt = NOT_UTF8;
    EXPECT_ERR(mirage_generate(text, &p, &out), MIRAGE_ERR_INVALID_ARGUMENT, "params->negative_prompt");
    p = params_with(4, 3, "a red apple");
    EXPECT_ERR(mirage_generate(plain, &p, &out), MIRAGE_ERR_UNSUPPORTED, "not text-conditioned");
    p = params_with(4, 3, NULL);
    p.negative_prompt = "green";
    EXPECT_ERR(mirage_generate(plain, &p, &out), MIRAGE_ERR_UNSUPPORTED, "not text-conditioned");
    CHECK(out == sentinel, "a failed generation wrote its out-parameter");

    mirage_image_batch_free(apple);
}

static void test_image_to_image(const MirageContext *text, const MirageContext *plain) {
    uint8_t pixels[PIXELS], mask[PIXELS];
    for (size_t i = 0; i < PIXELS; i++) {
        pixels[i] = (uint8_t)((i * 7) % 256);
        mask[i] = i < PIXELS / 2 ? 255 : 0; /* invent the top half */
    }
    MirageImage image = {SIDE, SIDE, 0, MIRAGE_PIXEL_GRAY8, pixels};
    MirageImage m = {SIDE, SIDE, 0, MIRAGE_PIXEL_GRAY8, mask};

    MirageDiffusionParams p = params_with(6, 2, "a cat");
    p.strength = 0.6f;
    MirageImageBatch *a = NULL, *b = NULL, *none = NULL;
    EXPECT_OK(mirage_img2img(text, &image, 1, &p, &a));
    EXPECT_OK(mirage_img2img(text, &image, 1, &p, &b));
    CHECK(mirage_image_batch_count(a) == 1 && same_pixels(a, b), "img2img with a prompt is not reproducible");
    p.prompt = NULL;
    EXPECT_OK(mirage_img2img(text, &image, 1, &p, &none));
    CHECK(a && none && !same_pixels(a, none), "img2img ignores its prompt");
    mirage_image_batch_free(a);
    mirage_image_batch_free(b);
    mirage_image_batch_free(none);

    p = params_with(6, 2, "a cat");
    p.strength = 0.3f;
    a = NULL;
    EXPECT_OK(mirage_denoise(text, &image, 1, &p, &a));
    CHECK(mirage_image_batch_count(a) == 1, "denoise with a prompt");
    mirage_image_batch_free(a);

    p = params_with(6, 2, "a cat");
    p.negative_prompt = "a dog";
    a = NULL;
    EXPECT_OK(mirage_inpaint(text, &image, &m, 1, &p, &a));
    MirageImage r;
    int kept = 0;
    if (a && mirage_image_batch_get(a, 0, &r) == MIRAGE_OK) {
        kept = 1;
        for (size_t i = PIXELS / 2; i < PIXELS; i++) kept &= r.data[i] == pixels[i];
    }
    CHECK(kept, "inpaint with a prompt changed pixels outside the mask");
    mirage_image_batch_free(a);

    MirageImageBatch *const sentinel = (MirageImageBatch *)pixels;
    MirageImageBatch *out = sentinel;
    p = params_with(6, 2, "a cat");
    p.strength = 0.5f;
    EXPECT_ERR(mirage_img2img(plain, &image, 1, &p, &out), MIRAGE_ERR_UNSUPPORTED, "not text-conditioned");
    EXPECT_ERR(mirage_inpaint(plain, &image, &m, 1, &p, &out), MIRAGE_ERR_UNSUPPORTED, "not text-conditioned");
    p.guidance = NAN;
    EXPECT_ERR(mirage_img2img(text, &image, 1, &p, &out), MIRAGE_ERR_INVALID_ARGUMENT, "params->guidance");
    CHECK(out == sentinel, "a failed img2img / inpaint wrote its out-parameter");
}

/* ---- mirage_interpolate ---- */

static void test_interpolate(const MirageContext *text, const MirageContext *plain) {
    const char *const path[] = {"a cat face", "a dog face", "a red apple"};
    const uint32_t steps = 3, frames = 5;

    struct watch w = {0, 0, 0, 0, 0};
    MirageDiffusionParams p = params_with(steps, 5, "ignored: interpolate takes its prompts from the array");
    p.progress = on_progress;
    p.user_data = &w;
    MirageImageBatch *walk = NULL;
    EXPECT_OK(mirage_interpolate(text, path, 3, frames, &p, &walk));
    CHECK(mirage_image_batch_count(walk) == frames, "%zu frames, expected %u", mirage_image_batch_count(walk),
          frames);
    CHECK(w.calls == (int)(frames * steps) && w.bad == 0 && w.last_step == frames * steps &&
              w.last_total == frames * steps,
          "progress over all frames: %d calls, %d out of order, last %u/%u", w.calls, w.bad, w.last_step,
          w.last_total);
    CHECK(image_diff(walk, 0, walk, 1) > 0, "the first two frames are the same");

    /* Frames 0, 2 and 4 sit on the prompts: each a plain generation of its prompt (same seed, steps,
     * guidance). */
    for (size_t k = 0; k < 3; k++) {
        MirageDiffusionParams g = params_with(steps, 5, path[k]);
        MirageImageBatch *direct = generate(text, &g);
        int d = image_diff(walk, 2 * k, direct, 0);
        CHECK(d <= 1, "frame %zu differs from a generation of \"%s\" by %d grey levels", 2 * k, path[k], d);
        mirage_image_batch_free(direct);
    }

    /* Two frames per U-Net batch: the same frames, progress over ceil(5 / 2) runs. */
    struct watch w2 = {0, 0, 0, 0, 0};
    p.user_data = &w2;
    p.count = 2;
    MirageImageBatch *batched = NULL;
    EXPECT_OK(mirage_interpolate(text, path, 3, frames, &p, &batched));
    int worst = 0;
    for (size_t k = 0; k < frames; k++) {
        int d = image_diff(walk, k, batched, k);
        if (d > worst) worst = d;
    }
    CHECK(mirage_image_batch_count(batched) == frames && worst <= 1, "batched frames differ by %d grey levels", worst);
    CHECK(w2.bad == 0 && w2.last_step == 3 * steps && w2.last_total == 3 * steps, "batched progress %u/%u (%d bad)",
          w2.last_step, w2.last_total, w2.bad);
    mirage_image_batch_free(batched);

    /* The negative prompt and the guidance apply to every frame. */
    MirageDiffusionParams q = params_with(steps, 5, NULL);
    q.negative_prompt = "green";
    MirageImageBatch *other = NULL;
    EXPECT_OK(mirage_interpolate(text, path, 3, frames, &q, &other));
    CHECK(other && image_diff(walk, 0, other, 0) > 0, "a negative prompt changed no frame");
    mirage_image_batch_free(other);
    q = params_with(steps, 5, NULL);
    q.guidance = 1.0f;
    other = NULL;
    EXPECT_OK(mirage_interpolate(text, path, 2, 2, &q, &other));
    CHECK(mirage_image_batch_count(other) == 2 && image_diff(walk, 0, other, 0) > 0,
          "another guidance changed no frame");
    mirage_image_batch_free(other);

    /* What interpolate ignores is not checked either: params->prompt (even non-UTF-8) and params->strength. */
    q = params_with(steps, 5, NOT_UTF8);
    q.strength = 0.0f;
    other = NULL;
    EXPECT_OK(mirage_interpolate(text, path, 3, frames, &q, &other));
    CHECK(other && same_pixels(walk, other), "params->prompt or params->strength changed the interpolation");
    mirage_image_batch_free(other);

    /* Cancel from the progress callback in the second frame: CANCELLED, *out untouched. */
    MirageImageBatch *const sentinel = (MirageImageBatch *)&w;
    MirageImageBatch *out = sentinel;
    struct watch wc = {0, 0, 0, 0, steps + 1};
    p = params_with(steps, 5, NULL);
    p.progress = on_progress;
    p.user_data = &wc;
    EXPECT_ERR(mirage_interpolate(text, path, 3, frames, &p, &out), MIRAGE_ERR_CANCELLED, "cancel");
    CHECK(wc.calls == (int)steps + 1, "%d progress calls after cancelling at step %u", wc.calls, steps + 1);
    CHECK(out == sentinel, "a cancelled interpolation wrote its out-parameter");

    /* Bad input. */
    const char *const with_null[] = {"a cat", NULL};
    const char *const with_bad[] = {"a cat", NOT_UTF8};
    p = params_with(steps, 5, NULL);
    EXPECT_ERR(mirage_interpolate(text, path, 1, frames, &p, &out), MIRAGE_ERR_INVALID_ARGUMENT, "prompt_count");
    EXPECT_ERR(mirage_interpolate(text, path, 0, frames, &p, &out), MIRAGE_ERR_INVALID_ARGUMENT, "prompt_count");
    EXPECT_ERR(mirage_interpolate(text, path, 3, 0, &p, &out), MIRAGE_ERR_INVALID_ARGUMENT, "frames");
    EXPECT_ERR(mirage_interpolate(text, path, 3, 1, &p, &out), MIRAGE_ERR_INVALID_ARGUMENT, "frames");
    EXPECT_ERR(mirage_interpolate(text, path, 3, 1025, &p, &out), MIRAGE_ERR_INVALID_ARGUMENT, "frames");
    EXPECT_ERR(mirage_interpolate(text, with_null, 2, frames, &p, &out), MIRAGE_ERR_INVALID_ARGUMENT,
               "prompts[1] is NULL");
    EXPECT_ERR(mirage_interpolate(text, with_bad, 2, frames, &p, &out), MIRAGE_ERR_INVALID_ARGUMENT, "UTF-8");
    EXPECT_ERR(mirage_interpolate(text, with_bad, 2, frames, &p, &out), MIRAGE_ERR_INVALID_ARGUMENT, "prompts[1]");
    EXPECT_ERR(mirage_interpolate(text, NULL, 2, frames, &p, &out), MIRAGE_ERR_INVALID_ARGUMENT, "prompts is NULL");
    EXPECT_ERR(mirage_interpolate(NULL, path, 3, frames, &p, &out), MIRAGE_ERR_INVALID_ARGUMENT, "ctx is NULL");
    EXPECT_ERR(mirage_interpolate(text, path, 3, frames, NULL, &out), MIRAGE_ERR_INVALID_ARGUMENT, "params is NULL");
    EXPECT_ERR(mirage_interpolate(text, path, 3, frames, &p, NULL), MIRAGE_ERR_INVALID_ARGUMENT, "out is NULL");
    p.guidance = NAN;
    EXPECT_ERR(mirage_interpolate(text, path, 3, frames, &p, &out), MIRAGE_ERR_INVALID_ARGUMENT, "params->guidance");
    p = params_with(steps, 5, NULL);
    EXPECT_ERR(mirage_interpolate(plain, path, 3, frames, &p, &out), MIRAGE_ERR_UNSUPPORTED, "not text-conditioned");
    CHECK(out == sentinel, "a failed interpolation wrote its out-parameter");

    mirage_image_batch_free(walk);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s <text set dir> <plain diffusion set dir>\n", argv[0]);
        return 2;
    }
    MirageRuntimeOptions o;
    EXPECT_OK(mirage_runtime_options_init(&o, sizeof o));
    o.provider = MIRAGE_PROVIDER_CPU;
    o.intra_threads = 1;
    o.log_callback = on_log;
    o.log_level = MIRAGE_LOG_WARN;
    EXPECT_OK(mirage_runtime_init(&o));

    MirageContext *text = NULL, *plain = NULL;
    EXPECT_OK(mirage_context_new(argv[1], NULL, &text));
    EXPECT_OK(mirage_context_new(argv[2], NULL, &plain));
    if (text && plain) {
        test_shape(text, plain);
        test_embed(text, plain);
        test_generate(text, plain);
        test_image_to_image(text, plain);
        test_interpolate(text, plain);
    }
    mirage_context_free(plain);
    mirage_context_free(text);

    printf("test_text: %d checks, %d failed\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
