/*
 * Stable-Diffusion-family folders (optimum's ONNX layout) through the C API from C: the same calls as for
 * mirage's own sets. A reference generation of diffusers reproduced from its initial noise; every sampler;
 * the job API against the blocking call; img2img, inpaint, denoise with previews, the VAE alone, interpolate;
 * a few-step folder without guidance;
 * cancel; and the errors of a broken folder and an unknown sampler.
 *
 * Run by tests/diffusers.rs (c_program_runs_the_folders) as:
 *   test_sd <sd15 folder> <turbo folder> <noise.f32> <reference.rgb> <broken folder>
 * where noise.f32 holds the 1x4x8x8 float32 initial latents of diffusers' run "sd15-pndm-cfg-neg" and
 * reference.rgb its 64x64 RGB8 image. Prints one line per failed check and a summary; exits 0 only if every
 * check passed.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mirage.h"

#include "check.h"

#define SIDE 64
#define PIXELS (SIDE * SIDE)
#define LATENT_VALUES (4 * 8 * 8)

static const char *const PROMPT = "a photo of an astronaut riding a horse on mars";
static const char *const NEGATIVE = "blurry, low quality";

static int read_file(const char *path, void *buf, size_t len) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) return 0;
    size_t got = fread(buf, 1, len, f);
    int extra = fgetc(f) != EOF;
    fclose(f);
    return got == len && !extra;
}

static unsigned steps_seen;

static bool count_steps(uint32_t step, uint32_t total, void *user_data) {
    (void)user_data;
    (void)total;
    steps_seen = step;
    return true;
}

static unsigned previews;

static bool count_previews(uint32_t step, const MirageImage *images, size_t count, void *user_data) {
    (void)user_data;
    if (step >= 1 && count == 1 && images != NULL && images[0].width == SIDE) previews++;
    return true;
}

static bool cancel_at_two(uint32_t step, uint32_t total, void *user_data) {
    (void)total;
    (void)user_data;
    return step < 2;
}

static MirageDiffusionParams base_params(void) {
    MirageDiffusionParams p;
    EXPECT_OK(mirage_diffusion_params_init(&p, sizeof p));
    p.steps = 8;
    p.prompt = PROMPT;
    p.format = MIRAGE_PIXEL_RGB8;
    return p;
}

/* The pixels of image `i` of `batch` (RGB8, packed), or NULL. */
static const uint8_t *pixels(const MirageImageBatch *batch, size_t i) {
    MirageImage image;
    if (mirage_image_batch_get(batch, i, &image) != MIRAGE_OK) return NULL;
    if (image.width != SIDE || image.height != SIDE || image.format != MIRAGE_PIXEL_RGB8) return NULL;
    if (image.stride != 0 && image.stride != SIDE * 3) return NULL;
    return image.data;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s <sd15> <turbo> <noise.f32> <reference.rgb> <broken folder>\n", argv[0]);
        return 2;
    }
    MirageContext *ctx = NULL;
    EXPECT_OK(mirage_context_new(argv[1], NULL, &ctx));
    if (ctx == NULL) {
        fprintf(stderr, "cannot open %s: %s\n", argv[1], last_message);
        return 1;
    }
    uint32_t w = 0, h = 0, c = 0;
    EXPECT_OK(mirage_context_image_size(ctx, &w, &h, &c));
    CHECK(w == SIDE && h == SIDE && c == 3, "image size %ux%ux%u", w, h, c);

    /* diffusers' run, reproduced from its initial noise: the folder's own PNDM, prompt + negative, 7.5. */
    static float noise[LATENT_VALUES];
    static uint8_t want[PIXELS * 3];
    CHECK(read_file(argv[3], noise, sizeof noise), "reading %s", argv[3]);
    CHECK(read_file(argv[4], want, sizeof want), "reading %s", argv[4]);
    MirageLatent *latent = NULL;
    const uint32_t shape[4] = {1, 4, 8, 8};
    EXPECT_OK(mirage_latent_new(noise, LATENT_VALUES, shape, &latent));
    MirageDiffusionParams p = base_params();
    p.negative_prompt = NEGATIVE;
    p.guidance = 7.5f;
    p.noise = latent;
    p.progress = count_steps;
    MirageImageBatch *batch = NULL;
    EXPECT_OK(mirage_generate(ctx, &p, &batch));
    CHECK(steps_seen == 9, "PNDM of 8 steps makes 9 U-Net calls, progress saw %u", steps_seen);
    const uint8_t *got = batch ? pixels(batch, 0) : NULL;
    CHECK(got != NULL, "no 64x64 RGB8 image");
    if (got != NULL) {
        long sum = 0;
        int worst = 0;
        for (size_t i = 0; i < PIXELS * 3; i++) {
            int d = abs((int)got[i] - (int)want[i]);
            sum += d;
            if (d > worst) worst = d;
        }
        /* Rounding of values within 1e-6 of each other: a level at most, on a few pixels. */
        CHECK(worst <= 1 && sum * 255 < PIXELS * 3, "differs from diffusers: max %d, sum %ld", worst, sum);
        printf("diffusers' image reproduced: max difference %d level(s), %ld pixel values off by one\n", worst, sum);
    }

    /* The job API gives the blocking call's pixels exactly. */
    MirageJob *job = NULL;
    p.progress = NULL; /* jobs take no callbacks */
    EXPECT_OK(mirage_job_generate(ctx, &p, NULL, &job));
    MirageJobState state = 0;
    EXPECT_OK(mirage_job_wait(job, MIRAGE_WAIT_FOREVER, &state));
    MirageImageBatch *from_job = NULL;
    EXPECT_OK(mirage_job_take_images(job, &from_job));
    const uint8_t *a = batch ? pixels(batch, 0) : NULL, *b = from_job ? pixels(from_job, 0) : NULL;
    CHECK(a && b && memcmp(a, b, PIXELS * 3) == 0, "the job's image differs from mirage_generate's");
    mirage_job_free(job);
    mirage_image_batch_free(from_job);
    p.noise = NULL;

    /* Every sampler, two images each. */
    const char *samplers[] = {"ddim", "pndm", "euler", "euler-a", "dpm++2m", "dpm++2m-karras", "lcm", "auto"};
    for (size_t s = 0; s < sizeof samplers / sizeof *samplers; s++) {
        MirageDiffusionParams q = base_params();
        q.sampler = samplers[s];
        q.steps = 4;
        q.count = 2;
        MirageImageBatch *out = NULL;
        EXPECT_OK(mirage_generate(ctx, &q, &out));
        CHECK(out != NULL && mirage_image_batch_count(out) == 2 && pixels(out, 1) != NULL, "sampler %s", samplers[s]);
        mirage_image_batch_free(out);
    }

    /* img2img and inpaint of the generated image. */
    MirageImage input = {SIDE, SIDE, 0, MIRAGE_PIXEL_RGB8, (uint8_t *)(batch ? pixels(batch, 0) : want)};
    MirageDiffusionParams q = base_params();
    q.sampler = "euler";
    q.strength = 0.5f;
    MirageImageBatch *out = NULL;
    EXPECT_OK(mirage_img2img(ctx, &input, 1, &q, &out));
    CHECK(out != NULL && pixels(out, 0) != NULL && memcmp(pixels(out, 0), input.data, PIXELS * 3) != 0,
          "img2img returned its input");
    mirage_image_batch_free(out);
    static uint8_t mask_px[PIXELS];
    for (size_t i = 0; i < PIXELS; i++) mask_px[i] = (i % SIDE) < SIDE / 2 ? 255 : 0; /* left half */
    MirageImage mask = {SIDE, SIDE, 0, MIRAGE_PIXEL_GRAY8, mask_px};
    q.strength = 1.0f;
    out = NULL;
    EXPECT_OK(mirage_inpaint(ctx, &input, &mask, 1, &q, &out));
    const uint8_t *inpainted = out ? pixels(out, 0) : NULL;
    int kept = inpainted != NULL, changed = 0;
    for (size_t y = 0; inpainted && y < SIDE; y++)
        for (size_t x = 0; x < SIDE; x++)
            for (size_t k = 0; k < 3; k++) {
                size_t i = (y * SIDE + x) * 3 + k;
                if (x >= SIDE / 2) kept &= inpainted[i] == input.data[i];
                else changed |= inpainted[i] != input.data[i];
            }
    CHECK(kept && changed, "inpaint: right half kept %d, left half changed %d", kept, changed);
    mirage_image_batch_free(out);

    /* denoise (no noise added), with a preview after every step. */
    q = base_params();
    q.sampler = "ddim";
    q.strength = 0.3f;
    q.preview = count_previews;
    out = NULL;
    EXPECT_OK(mirage_denoise(ctx, &input, 1, &q, &out));
    CHECK(out != NULL && pixels(out, 0) != NULL, "denoise: an image");
    CHECK(previews == 2, "denoise at 0.3 of 8 steps: 2 steps previewed, saw %u", previews); /* int(8 * 0.3) */
    mirage_image_batch_free(out);

    /* The VAE alone: encode to the latent distribution, decode its mean. */
    MirageLatent *mean = NULL, *logvar = NULL;
    EXPECT_OK(mirage_vae_encode(ctx, &input, 1, &mean, &logvar));
    uint32_t lshape[4] = {0};
    EXPECT_OK(mirage_latent_shape(mean, lshape));
    CHECK(lshape[0] == 1 && lshape[1] == 4 && lshape[2] == 8 && lshape[3] == 8, "latent shape %u %u %u %u", lshape[0],
          lshape[1], lshape[2], lshape[3]);
    out = NULL;
    EXPECT_OK(mirage_vae_decode(ctx, mean, MIRAGE_PIXEL_RGB8, &out));
    CHECK(out != NULL && pixels(out, 0) != NULL, "vae decode: a 64x64 image");
    mirage_image_batch_free(out);
    mirage_latent_free(mean);
    mirage_latent_free(logvar);

    /* A walk between two prompts. */
    const char *walk[] = {"a red cube", "a blue sphere"};
    q = base_params();
    q.steps = 3;
    out = NULL;
    EXPECT_OK(mirage_interpolate(ctx, walk, 2, 3, &q, &out));
    CHECK(out != NULL && mirage_image_batch_count(out) == 3, "interpolate: 3 frames");
    mirage_image_batch_free(out);

    /* Cancelled from the progress callback; an unknown sampler. */
    q = base_params();
    q.progress = cancel_at_two;
    out = NULL;
    EXPECT_ERR(mirage_generate(ctx, &q, &out), MIRAGE_ERR_CANCELLED, "");
    q = base_params();
    q.sampler = "heun";
    EXPECT_ERR(mirage_generate(ctx, &q, &out), MIRAGE_ERR_INVALID_ARGUMENT, "heun");
    mirage_image_batch_free(batch);
    mirage_latent_free(latent);
    mirage_context_free(ctx);

    /* A few-step folder (SD-Turbo-shaped): one step, no guidance. */
    MirageContext *turbo = NULL;
    EXPECT_OK(mirage_context_new(argv[2], NULL, &turbo));
    q = base_params();
    q.steps = 1;
    q.guidance = 0.0f;
    q.progress = count_steps;
    out = NULL;
    EXPECT_OK(mirage_generate(turbo, &q, &out));
    CHECK(out != NULL && pixels(out, 0) != NULL && steps_seen == 1, "turbo: one step, one image");
    mirage_image_batch_free(out);
    mirage_context_free(turbo);

    /* A folder whose scheduler mirage does not know. */
    MirageContext *broken = NULL;
    EXPECT_ERR(mirage_context_new(argv[5], NULL, &broken), MIRAGE_ERR_INVALID_MODEL, "scheduler");
    CHECK(broken == NULL, "a context came back from a broken folder");

    printf("%d checks, %d failed\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
