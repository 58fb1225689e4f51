/*
 * The game-loop API from C, the acceptance test of the job API: a context with two worker threads and a
 * small queue; generations, a VAE decode and a VAE encode submitted as jobs and polled once per frame of a
 * fixed-timestep loop that sleeps a few milliseconds a frame; a job's previews read on the "render thread";
 * one job cancelled midway; one MIRAGE_JOB_MANUAL job stepped on a 4 ms budget per frame; results taken
 * straight into a bottom-up BGRA buffer with padded rows and checked byte for byte against the blocking
 * mirage_generate; a resize (nearest, 2x) and a linear float target; the bounded queue (MIRAGE_ERR_BUSY);
 * every kind of bad target (refused, and the result stays takeable); and a running job and a context freed
 * without waiting for the job's steps.
 *
 * Freed handles are not tested here (that reads freed memory, which valgrind reports): tests/nulls.rs and
 * tests/hostile.rs cover NULL and freed handles.
 *
 * Run by tests/gameloop.rs (c_gameloop_program_passes, and under valgrind) as: test_gameloop <model set>,
 * where the set is the tiny random VAE + U-Net set (28x28 grey). Prints one line per failed check, a few
 * progress lines and a summary; exits 0 only if every check passed.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mirage.h"

#include "check.h"

/* The set's image size, read once the context is open. */
static uint32_t W, H, CH;

#define SENTINEL 0xAB /* what the padding bytes of a host buffer hold, and must still hold afterwards */
#define PAD 12        /* bytes of padding after each row of a host buffer */

/* The manual job's steps: enough that a tiny set's steps (a fraction of a millisecond each) take a few
 * frames of 4 ms. The jobs that are cancelled or freed while they run have MIRAGE_MAX_STEPS, so that they
 * cannot end by themselves between two polls, even under valgrind. */
#define MANUAL_STEPS 100

/* ---- small helpers ---- */

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void sleep_ms(long ms) {
    struct timespec t;
    t.tv_sec = ms / 1000;
    t.tv_nsec = (ms % 1000) * 1000000L;
    nanosleep(&t, NULL);
}

static const char *state_name(MirageJobState s) {
    switch (s) {
    case MIRAGE_JOB_QUEUED: return "queued";
    case MIRAGE_JOB_RUNNING: return "running";
    case MIRAGE_JOB_DONE: return "done";
    case MIRAGE_JOB_FAILED: return "failed";
    case MIRAGE_JOB_CANCELLED: return "cancelled";
    default: return "?";
    }
}

static int ended(MirageJobState s) {
    return s == MIRAGE_JOB_DONE || s == MIRAGE_JOB_FAILED || s == MIRAGE_JOB_CANCELLED;
}

static MirageDiffusionParams diffusion(uint32_t steps, uint64_t seed, const char *sampler) {
    MirageDiffusionParams p;
    MirageStatus s = mirage_diffusion_params_init(&p, sizeof p);
    CHECK(s == MIRAGE_OK, "diffusion params init");
    p.steps = steps;
    p.seed = seed;
    p.sampler = sampler;
    p.format = MIRAGE_PIXEL_RGBA8;
    return p;
}

static MirageJobParams job_params(MirageJobMode mode, bool previews) {
    MirageJobParams p;
    MirageStatus s = mirage_job_params_init(&p, sizeof p);
    CHECK(s == MIRAGE_OK, "job params init");
    p.mode = mode;
    p.previews = previews;
    return p;
}

/* The job's state (and steps), or 0 with a failed check when the poll itself fails. */
static MirageJobState poll_job(const MirageJob *job, uint32_t *step, uint32_t *total) {
    MirageJobState st = 0;
    MirageStatus s = mirage_job_poll(job, &st, step, total);
    if (s != MIRAGE_OK) {
        mirage_last_error(last_message, sizeof last_message);
        CHECK(0, "mirage_job_poll -> %s: %s", mirage_status_str(s), last_message);
        return 0;
    }
    return st;
}

/* Polls `job` (sleeping 1 ms between polls) until `until` says yes or `seconds` have passed. */
static MirageJobState poll_until(const MirageJob *job, int (*until)(MirageJobState, uint32_t), double seconds,
                                 uint32_t *step) {
    double deadline = now_s() + seconds;
    uint32_t s = 0;
    MirageJobState st = poll_job(job, &s, NULL);
    while (!until(st, s) && st != 0 && now_s() < deadline) {
        sleep_ms(1);
        st = poll_job(job, &s, NULL);
    }
    if (step) *step = s;
    return st;
}

static bool keep_going(uint32_t step, uint32_t total, void *user_data) {
    (void)step;
    (void)total;
    (void)user_data;
    return true;
}

static int has_stepped(MirageJobState st, uint32_t step) { return ended(st) || step >= 1; }

/* ---- host buffers ---- */

/* A bottom-up BGRA8 buffer of the set's size, rows PAD bytes longer than the pixels, all SENTINEL. */
struct host_buffer {
    uint8_t *data;
    size_t stride, size;
};

static struct host_buffer padded_buffer(void) {
    struct host_buffer b;
    b.stride = (size_t)W * 4 + PAD;
    b.size = b.stride * H;
    b.data = malloc(b.size);
    if (b.data) memset(b.data, SENTINEL, b.size);
    CHECK(b.data != NULL, "malloc");
    return b;
}

static MirageTarget bgra_target(const struct host_buffer *b) {
    MirageTarget t;
    memset(&t, 0, sizeof t);
    t.data = b->data;
    t.size = b->size;
    t.width = W;
    t.height = H;
    t.stride = b->stride;
    t.format = MIRAGE_PIXEL_BGRA8;
    t.flags = MIRAGE_TARGET_BOTTOM_UP;
    t.filter = MIRAGE_FILTER_BILINEAR; /* the native size: nothing is resized */
    return t;
}

/* What a bottom-up BGRA8 buffer with `stride` holds once `rgba` (packed RGBA8 of the set's size) is written
 * into it: the rows reversed, red and blue swapped, and the padding SENTINEL as before. */
static void expected_bgra(const uint8_t *rgba, uint8_t *out, size_t stride) {
    memset(out, SENTINEL, stride * H);
    for (uint32_t y = 0; y < H; y++) {
        uint8_t *row = out + (size_t)(H - 1 - y) * stride;
        for (uint32_t x = 0; x < W; x++) {
            const uint8_t *s = rgba + ((size_t)y * W + x) * 4;
            row[4 * x + 0] = s[2];
            row[4 * x + 1] = s[1];
            row[4 * x + 2] = s[0];
            row[4 * x + 3] = s[3];
        }
    }
}

/* Bytes of the padding (between the end of a row's pixels and the next row) that are not SENTINEL. */
static size_t padding_touched(const struct host_buffer *b) {
    size_t n = 0;
    for (uint32_t y = 0; y < H; y++)
        for (size_t i = (size_t)W * 4; i < b->stride; i++) n += b->data[y * b->stride + i] != SENTINEL;
    return n;
}

static int all_sentinel(const struct host_buffer *b) {
    for (size_t i = 0; i < b->size; i++)
        if (b->data[i] != SENTINEL) return 0;
    return 1;
}

/* Runs the blocking mirage_generate with `p` and checks that `got` (a job's result written as bgra_target
 * says) holds exactly its pixels, converted by hand, and that mirage_image_batch_write of the blocking
 * result into the same layout gives the same bytes. */
static void check_against_blocking(const MirageContext *ctx, const MirageDiffusionParams *p,
                                   const struct host_buffer *got, const char *what) {
    MirageImageBatch *blocking = NULL;
    EXPECT_OK(mirage_generate(ctx, p, &blocking));
    MirageImage img;
    memset(&img, 0, sizeof img);
    if (!blocking || mirage_image_batch_get(blocking, 0, &img) != MIRAGE_OK) {
        CHECK(0, "%s: no blocking result", what);
        mirage_image_batch_free(blocking);
        return;
    }
    CHECK(img.width == W && img.height == H && img.format == MIRAGE_PIXEL_RGBA8 && img.stride == W * 4,
          "%s: blocking image %ux%u format %u stride %u", what, img.width, img.height, img.format, img.stride);
    uint8_t *want = malloc(got->stride * H);
    struct host_buffer written = padded_buffer();
    if (want && written.data) {
        expected_bgra(img.data, want, got->stride);
        size_t differ = 0, first = (size_t)-1;
        for (size_t i = 0; i < got->stride * H; i++)
            if (got->data[i] != want[i]) {
                if (first == (size_t)-1) first = i;
                differ++;
            }
        CHECK(differ == 0, "%s: %zu bytes differ from the blocking result (first at byte %zu: %u, want %u)", what,
              differ, first, differ ? got->data[first] : 0, differ ? want[first] : 0);
        CHECK(padding_touched(got) == 0, "%s: %zu padding bytes were written", what, padding_touched(got));

        MirageTarget t = bgra_target(&written);
        EXPECT_OK(mirage_image_batch_write(blocking, 0, &t));
        CHECK(memcmp(written.data, want, written.size) == 0, "%s: mirage_image_batch_write differs", what);
    }
    free(want);
    free(written.data);
    mirage_image_batch_free(blocking);
}

/* sRGB to linear light without libm: x^2.4 = (x^(1/5))^12, the fifth root by Newton's method. */
static double srgb_to_linear(uint8_t c) {
    double v = c / 255.0;
    if (v <= 0.04045) return v / 12.92;
    double x = (v + 0.055) / 1.055, r = 1.0;
    for (int i = 0; i < 60; i++) r -= (r * r * r * r * r - x) / (5.0 * r * r * r * r);
    double r2 = r * r, r4 = r2 * r2, r8 = r4 * r4;
    return r8 * r4;
}

/* ---- the game loop ---- */

struct tracked {
    const char *name;
    MirageJob *job;
    uint32_t want_total;
    MirageJobState state;
    uint32_t step, total;
};

static int frame_failures;

/* A check inside the frame loop (it runs every frame): its failures are printed the first 20 times and
 * counted in frame_failures, which is one CHECK after the loop. */
#define FRAME_CHECK(cond, ...)                                                                                  \
    do {                                                                                                        \
        if (!(cond)) {                                                                                          \
            if (frame_failures++ < 20) {                                                                        \
                fprintf(stderr, "FAIL (frame) %s:%d: ", __FILE__, __LINE__);                                    \
                fprintf(stderr, __VA_ARGS__);                                                                   \
                fputc('\n', stderr);                                                                            \
            }                                                                                                   \
        }                                                                                                       \
    } while (0)

static void game_loop(const MirageContext *ctx) {
    /* What the jobs run; the blocking calls at the end repeat exactly these params. A: on the workers, with
     * previews, taken resized 2x. B: on the workers, taken into the bottom-up BGRA buffer. C: on the workers,
     * cancelled midway. M: manual, 4 ms a frame, taken into the BGRA buffer. */
    MirageDiffusionParams pa = diffusion(10, 1, NULL);
    MirageDiffusionParams pb = diffusion(12, 2, "ddim");
    MirageDiffusionParams pc = diffusion(MIRAGE_MAX_STEPS, 3, NULL);
    MirageDiffusionParams pm = diffusion(MANUAL_STEPS, 4, "dpm++2m");
    MirageJobParams workers = job_params(MIRAGE_JOB_WORKERS, false);
    MirageJobParams with_previews = job_params(MIRAGE_JOB_WORKERS, true);
    MirageJobParams manual = job_params(MIRAGE_JOB_MANUAL, false);

    MirageJobParams defaults;
    EXPECT_OK(mirage_job_params_init(&defaults, sizeof defaults));
    CHECK(defaults.struct_size == sizeof defaults && defaults.mode == MIRAGE_JOB_WORKERS && !defaults.previews,
          "job params defaults");

    /* Jobs take no callbacks: they are polled. */
    MirageJob *const sentinel = (MirageJob *)&frame_failures;
    MirageJob *refused = sentinel;
    MirageDiffusionParams with_callback = pa;
    with_callback.progress = keep_going;
    EXPECT_ERR(mirage_job_generate(ctx, &with_callback, NULL, &refused), MIRAGE_ERR_INVALID_ARGUMENT, "progress");
    MirageJobParams bad_mode = job_params(7, false);
    EXPECT_ERR(mirage_job_generate(ctx, &pa, &bad_mode, &refused), MIRAGE_ERR_INVALID_ARGUMENT, "mode");
    MirageDiffusionParams target_only = pa;
    target_only.format = MIRAGE_PIXEL_BGRA8; /* a target's format is no job's format */
    EXPECT_ERR(mirage_job_generate(ctx, &target_only, NULL, &refused), MIRAGE_ERR_INVALID_ARGUMENT, "format");
    CHECK(refused == sentinel, "a refused submission wrote its out-parameter");

    /* The VAE jobs' inputs: two prior latents to decode, a patterned image of the set's format to encode. */
    MirageLatent *prior = NULL;
    EXPECT_OK(mirage_vae_sample_prior(ctx, 2, 5, &prior));
    uint8_t *pattern = malloc((size_t)W * H * CH);
    if (!pattern || !prior) {
        CHECK(0, "setup failed");
        free(pattern);
        mirage_latent_free(prior);
        return;
    }
    for (size_t i = 0; i < (size_t)W * H * CH; i++) pattern[i] = (uint8_t)(i * 7 + 3);
    MirageImage to_encode = {W, H, 0, CH == 1 ? MIRAGE_PIXEL_GRAY8 : CH == 3 ? MIRAGE_PIXEL_RGB8 : MIRAGE_PIXEL_RGBA8,
                             pattern};

    enum { A, B, C, D, E, M, NJOBS };
    struct tracked jobs[NJOBS] = {
        {"A generate+previews", NULL, 10, 0, 0, 0}, {"B generate", NULL, 12, 0, 0, 0},
        {"C generate (cancel)", NULL, MIRAGE_MAX_STEPS, 0, 0, 0}, {"D decode", NULL, 1, 0, 0, 0},
        {"E encode", NULL, 1, 0, 0, 0}, {"M manual generate", NULL, MANUAL_STEPS, 0, 0, 0},
    };
    /* Four worker jobs fit the queue of four whatever the workers have started. */
    EXPECT_OK(mirage_job_generate(ctx, &pa, &with_previews, &jobs[A].job));
    EXPECT_OK(mirage_job_generate(ctx, &pb, &workers, &jobs[B].job));
    EXPECT_OK(mirage_job_generate(ctx, &pc, NULL, &jobs[C].job));
    EXPECT_OK(mirage_job_decode(ctx, prior, MIRAGE_PIXEL_RGBA8, &workers, &jobs[D].job));
    EXPECT_OK(mirage_job_generate(ctx, &pm, &manual, &jobs[M].job));
    for (int k = 0; k < NJOBS; k++)
        if (k != E && !jobs[k].job) {
            CHECK(0, "job %s was not made", jobs[k].name);
            goto out;
        }

    /* Taken too early: refused, and nothing is lost. A manual job does not move by itself. */
    MirageImageBatch *const no_batch = (MirageImageBatch *)&frame_failures;
    MirageImageBatch *early = no_batch;
    EXPECT_ERR(mirage_job_take_images(jobs[M].job, &early), MIRAGE_ERR_INVALID_ARGUMENT, "has not ended");
    EXPECT_ERR(mirage_job_take_images(jobs[C].job, &early), MIRAGE_ERR_INVALID_ARGUMENT, "has not ended");
    struct host_buffer untouched = padded_buffer();
    MirageTarget early_target = bgra_target(&untouched);
    EXPECT_ERR(mirage_job_take_into(jobs[M].job, &early_target, 1), MIRAGE_ERR_INVALID_ARGUMENT, "has not ended");
    CHECK(early == no_batch && all_sentinel(&untouched), "an early take wrote something");
    if (early != no_batch) mirage_image_batch_free(early);
    free(untouched.data);
    uint32_t ran = 77;
    EXPECT_OK(mirage_job_advance(jobs[M].job, 0, 0, &ran));
    CHECK(ran == 0, "advance with max_steps 0 ran %u steps", ran);
    sleep_ms(20);
    uint32_t step = 99, total = 0;
    MirageJobState st = poll_job(jobs[M].job, &step, &total);
    CHECK(st == MIRAGE_JOB_QUEUED && step == 0 && total == MANUAL_STEPS, "untouched manual job: %s %u/%u",
          state_name(st), step, total);
    /* Only a manual job is advanced by the host. */
    ran = 77;
    EXPECT_ERR(mirage_job_advance(jobs[A].job, 1, 0, &ran), MIRAGE_ERR_INVALID_ARGUMENT, "MIRAGE_JOB_MANUAL");
    CHECK(ran == 77, "a refused advance wrote steps_run");
    /* A job made without previews has none to give, and previews come in the plain formats only. */
    MirageImageBatch *pv = no_batch;
    uint32_t pv_step = 0;
    EXPECT_ERR(mirage_job_preview(jobs[B].job, MIRAGE_PIXEL_RGBA8, &pv, &pv_step), MIRAGE_ERR_INVALID_ARGUMENT,
               "previews");
    EXPECT_ERR(mirage_job_preview(jobs[A].job, MIRAGE_PIXEL_BGRA8, &pv, &pv_step), MIRAGE_ERR_INVALID_ARGUMENT,
               "format");
    CHECK(pv == no_batch, "a refused preview wrote its out-parameter");

    int cancelled_c = 0, submitted_e = 0, busy_e = 0, frame = 0, previews_seen = 0, manual_frames = 0;
    uint32_t cancel_step = 0, last_preview_step = 0, manual_ran = 0;
    uint32_t last_step[NJOBS] = {0};
    double start = now_s(), deadline = start + 240.0;
    for (;; frame++) {
        /* The encode joins once the loop runs; the queue may be full of the first four: then retry. */
        if (!submitted_e) {
            MirageStatus s = mirage_job_encode(ctx, &to_encode, 1, &workers, &jobs[E].job);
            size_t n = mirage_last_error(last_message, sizeof last_message);
            if (s == MIRAGE_OK)
                submitted_e = 1;
            else if (s == MIRAGE_ERR_BUSY) {
                busy_e++;
                FRAME_CHECK(n > 0 && strstr(last_message, "max_queued_jobs"), "BUSY without its message: %s",
                            last_message);
            } else {
                CHECK(0, "mirage_job_encode -> %s: %s", mirage_status_str(s), last_message);
                submitted_e = 1; /* nothing to wait for */
            }
        }

        int all_ended = submitted_e;
        for (int k = 0; k < NJOBS; k++) {
            struct tracked *j = &jobs[k];
            if (!j->job) continue;
            j->state = poll_job(j->job, &j->step, &j->total);
            FRAME_CHECK(j->state >= MIRAGE_JOB_QUEUED && j->state <= MIRAGE_JOB_CANCELLED, "%s: state %u", j->name,
                        j->state);
            FRAME_CHECK(j->total == j->want_total && j->step <= j->total, "%s: step %u of %u", j->name, j->step,
                        j->total);
            FRAME_CHECK(j->step >= last_step[k], "%s: step went back from %u to %u", j->name, last_step[k], j->step);
            FRAME_CHECK(j->state != MIRAGE_JOB_QUEUED || j->step == 0, "%s: queued at step %u", j->name, j->step);
            last_step[k] = j->step;
            all_ended = all_ended && ended(j->state);
        }
        if (frame % 50 == 0 || all_ended) {
            printf("frame %4d (%6.2f s):", frame, now_s() - start);
            for (int k = 0; k < NJOBS; k++)
                if (jobs[k].job) printf(" %c %s %u/%u;", "ABCDEM"[k], state_name(jobs[k].state), jobs[k].step,
                                        jobs[k].total);
            printf("\n");
        }
        if (all_ended) break;
        if (now_s() > deadline) {
            CHECK(0, "the jobs did not end within 240 s (frame %d)", frame);
            break;
        }

        /* The render thread shows A's latest preview. */
        if (frame % 3 == 0 || ended(jobs[A].state)) {
            MirageImageBatch *preview = NULL;
            uint32_t at = 0;
            MirageStatus s = mirage_job_preview(jobs[A].job, MIRAGE_PIXEL_RGBA8, &preview, &at);
            FRAME_CHECK(s == MIRAGE_OK, "mirage_job_preview -> %s", mirage_status_str(s));
            if (preview) {
                MirageImage img;
                memset(&img, 0, sizeof img);
                FRAME_CHECK(mirage_image_batch_count(preview) == 1 &&
                                mirage_image_batch_get(preview, 0, &img) == MIRAGE_OK && img.width == W &&
                                img.height == H && img.format == MIRAGE_PIXEL_RGBA8 && img.data[3] == 255,
                            "preview batch of %zu, %ux%u format %u", mirage_image_batch_count(preview), img.width,
                            img.height, img.format);
                FRAME_CHECK(at >= 1 && at <= 10 && at >= last_preview_step, "preview after step %u (before: %u)", at,
                            last_preview_step);
                last_preview_step = at;
                previews_seen++;
            } else {
                FRAME_CHECK(at == 0, "no preview, but step %u", at);
            }
            mirage_image_batch_free(preview);
        }

        /* C is cancelled once it is under way. */
        if (!cancelled_c && jobs[C].state == MIRAGE_JOB_RUNNING && jobs[C].step >= 2) {
            EXPECT_OK(mirage_job_cancel(jobs[C].job));
            cancelled_c = 1;
            cancel_step = jobs[C].step;
        }

        /* The manual job gets 4 ms of this frame. */
        if (!ended(jobs[M].state)) {
            uint32_t n = 0;
            MirageStatus s = mirage_job_advance(jobs[M].job, UINT32_MAX, 4000, &n);
            FRAME_CHECK(s == MIRAGE_OK && n >= 1, "advance -> %s, %u steps", mirage_status_str(s), n);
            manual_ran += n;
            manual_frames++;
        }

        sleep_ms(2);
    }

    /* How each job ended. */
    CHECK(frame_failures == 0, "%d failed checks inside the frame loop", frame_failures);
    MirageJobState want[NJOBS] = {MIRAGE_JOB_DONE,      MIRAGE_JOB_DONE, MIRAGE_JOB_CANCELLED,
                                  MIRAGE_JOB_DONE,      MIRAGE_JOB_DONE, MIRAGE_JOB_DONE};
    for (int k = 0; k < NJOBS; k++) {
        if (!jobs[k].job) continue;
        MirageJobState w = 0;
        EXPECT_OK(mirage_job_wait(jobs[k].job, 0, &w));
        CHECK(w == want[k] && jobs[k].state == want[k], "%s ended %s (wait: %s), expected %s", jobs[k].name,
              state_name(jobs[k].state), state_name(w), state_name(want[k]));
        if (want[k] == MIRAGE_JOB_DONE)
            CHECK(jobs[k].step == jobs[k].total, "%s done at step %u of %u", jobs[k].name, jobs[k].step,
                  jobs[k].total);
    }
    CHECK(cancelled_c && jobs[C].step >= cancel_step && jobs[C].step < MIRAGE_MAX_STEPS,
          "C cancelled at step %u, ended at step %u of %u", cancel_step, jobs[C].step, MIRAGE_MAX_STEPS);
    CHECK(manual_ran == MANUAL_STEPS && manual_frames >= 1 && manual_frames <= MANUAL_STEPS,
          "manual job: %u steps in %d frames", manual_ran, manual_frames);
    /* The last preview of A, once it has ended: after its last step. */
    {
        MirageImageBatch *preview = NULL;
        uint32_t at = 0;
        EXPECT_OK(mirage_job_preview(jobs[A].job, MIRAGE_PIXEL_GRAY8, &preview, &at));
        MirageImage img;
        memset(&img, 0, sizeof img);
        CHECK(preview && mirage_image_batch_get(preview, 0, &img) == MIRAGE_OK && img.format == MIRAGE_PIXEL_GRAY8 &&
                  img.width == W && at == 10 && at >= last_preview_step,
              "A's last preview: after step %u (%d seen in the loop, the last after step %u)", at, previews_seen,
              last_preview_step);
        mirage_image_batch_free(preview);
    }
    ran = 77;
    EXPECT_OK(mirage_job_advance(jobs[M].job, UINT32_MAX, 4000, &ran));
    CHECK(ran == 0, "an ended manual job ran %u more steps", ran);
    printf("game loop: %d frames, %.2f s; C cancelled at step %u (ended at %u); manual job: %d steps in %d frames; "
           "%d previews; the encode found the queue full %d times\n",
           frame, now_s() - start, cancel_step, jobs[C].step, MANUAL_STEPS, manual_frames, previews_seen, busy_e);

    /* C: its take is the cancel, once. */
    MirageImageBatch *batch = no_batch;
    EXPECT_ERR(mirage_job_take_images(jobs[C].job, &batch), MIRAGE_ERR_CANCELLED, "");
    EXPECT_ERR(mirage_job_take_images(jobs[C].job, &batch), MIRAGE_ERR_INVALID_ARGUMENT, "already taken");
    CHECK(batch == no_batch, "a cancelled take wrote its out-parameter");
    if (batch != no_batch) mirage_image_batch_free(batch); /* so that the failure is not also a leak */
    batch = no_batch;

    /* B: every kind of bad target is refused before a byte is written, and the result stays takeable. */
    struct host_buffer buf = padded_buffer();
    float *floats = malloc((size_t)W * H * 16 + 16);
    if (!buf.data || !floats) goto buffers;
    MirageTarget good = bgra_target(&buf), t, two[2];
    EXPECT_ERR(mirage_job_take_into(jobs[B].job, NULL, 1), MIRAGE_ERR_INVALID_ARGUMENT, "targets is NULL");
    EXPECT_ERR(mirage_job_take_into(jobs[B].job, &good, 0), MIRAGE_ERR_INVALID_ARGUMENT, "count is 0");
    two[0] = good;
    two[1] = good;
    EXPECT_ERR(mirage_job_take_into(jobs[B].job, two, 2), MIRAGE_ERR_INVALID_ARGUMENT, "count is 2");
    t = good;
    t.stride = (size_t)W * 4 - 1;
    EXPECT_ERR(mirage_job_take_into(jobs[B].job, &t, 1), MIRAGE_ERR_INVALID_ARGUMENT, "stride");
    t = good;
    t.size = (size_t)(H - 1) * good.stride + (size_t)W * 4 - 1; /* one byte short of the last row */
    EXPECT_ERR(mirage_job_take_into(jobs[B].job, &t, 1), MIRAGE_ERR_INVALID_ARGUMENT, "size");
    t = good;
    t.width = 0;
    EXPECT_ERR(mirage_job_take_into(jobs[B].job, &t, 1), MIRAGE_ERR_INVALID_ARGUMENT, "width");
    t = good;
    t.width = MIRAGE_MAX_IMAGE_SIDE + 1;
    EXPECT_ERR(mirage_job_take_into(jobs[B].job, &t, 1), MIRAGE_ERR_INVALID_ARGUMENT, "width");
    t = good;
    t.height = 0;
    EXPECT_ERR(mirage_job_take_into(jobs[B].job, &t, 1), MIRAGE_ERR_INVALID_ARGUMENT, "height");
    t = good;
    t.data = NULL;
    EXPECT_ERR(mirage_job_take_into(jobs[B].job, &t, 1), MIRAGE_ERR_INVALID_ARGUMENT, "data is NULL");
    t = good;
    t.format = 77;
    EXPECT_ERR(mirage_job_take_into(jobs[B].job, &t, 1), MIRAGE_ERR_INVALID_ARGUMENT, "format");
    t.format = 0;
    EXPECT_ERR(mirage_job_take_into(jobs[B].job, &t, 1), MIRAGE_ERR_INVALID_ARGUMENT, "format");
    t = good;
    t.flags = 0x80 | MIRAGE_TARGET_BOTTOM_UP;
    EXPECT_ERR(mirage_job_take_into(jobs[B].job, &t, 1), MIRAGE_ERR_INVALID_ARGUMENT, "flags");
    t = good;
    t.filter = 9;
    EXPECT_ERR(mirage_job_take_into(jobs[B].job, &t, 1), MIRAGE_ERR_INVALID_ARGUMENT, "filter");
    t = good;
    t.format = MIRAGE_PIXEL_RGBA32F;
    t.data = (uint8_t *)floats + 1;
    t.size = (size_t)W * H * 16;
    t.stride = 0;
    EXPECT_ERR(mirage_job_take_into(jobs[B].job, &t, 1), MIRAGE_ERR_INVALID_ARGUMENT, "aligned");
    MirageLatent *mean = NULL, *logvar = NULL;
    EXPECT_ERR(mirage_job_take_latents(jobs[B].job, &mean, &logvar), MIRAGE_ERR_INVALID_ARGUMENT, "images");
    CHECK(mean == NULL && logvar == NULL, "a refused take wrote latents");
    CHECK(all_sentinel(&buf), "a refused take_into wrote into the buffer");

    /* ... and then taken for real, at the set's size, bottom-up BGRA with padded rows. */
    EXPECT_OK(mirage_job_take_into(jobs[B].job, &good, 1));
    check_against_blocking(ctx, &pb, &buf, "B (workers)");
    EXPECT_ERR(mirage_job_take_into(jobs[B].job, &good, 1), MIRAGE_ERR_INVALID_ARGUMENT, "already taken");
    EXPECT_ERR(mirage_job_take_images(jobs[B].job, &batch), MIRAGE_ERR_INVALID_ARGUMENT, "already taken");

    /* M, stepped frame by frame on a budget: the blocking call's bits too. */
    memset(buf.data, SENTINEL, buf.size);
    EXPECT_OK(mirage_job_take_into(jobs[M].job, &good, 1));
    check_against_blocking(ctx, &pm, &buf, "M (manual)");

    /* A, resized to twice the size with the nearest filter, top-down RGBA: each 2x2 block is one pixel. */
    {
        size_t n = (size_t)W * 2 * H * 2 * 4;
        uint8_t *big = malloc(n);
        MirageImageBatch *blocking = NULL;
        EXPECT_OK(mirage_generate(ctx, &pa, &blocking));
        MirageImage src;
        memset(&src, 0, sizeof src);
        if (big && blocking && mirage_image_batch_get(blocking, 0, &src) == MIRAGE_OK) {
            memset(big, SENTINEL, n);
            memset(&t, 0, sizeof t);
            t.data = big;
            t.size = n;
            t.width = W * 2;
            t.height = H * 2;
            t.format = MIRAGE_PIXEL_RGBA8;
            t.filter = MIRAGE_FILTER_NEAREST;
            EXPECT_OK(mirage_job_take_into(jobs[A].job, &t, 1));
            size_t wrong = 0;
            for (uint32_t y = 0; y < H * 2; y++)
                for (uint32_t x = 0; x < W * 2; x++)
                    wrong += memcmp(big + ((size_t)y * W * 2 + x) * 4, src.data + ((size_t)(y / 2) * W + x / 2) * 4,
                                    4) != 0;
            CHECK(wrong == 0, "A at 2x (nearest): %zu pixels are not their source pixel", wrong);
        } else {
            CHECK(0, "A: no buffer or blocking result");
        }
        mirage_image_batch_free(blocking);
        free(big);
    }

    /* D, two decoded images: the first as linear floats, the second as packed RGBA, against the blocking
     * decode of the same latents. */
    {
        MirageImageBatch *blocking = NULL;
        EXPECT_OK(mirage_vae_decode(ctx, prior, MIRAGE_PIXEL_RGBA8, &blocking));
        uint8_t *rgba = malloc((size_t)W * H * 4);
        MirageImage b0, b1;
        memset(&b0, 0, sizeof b0);
        memset(&b1, 0, sizeof b1);
        if (rgba && blocking && mirage_image_batch_get(blocking, 0, &b0) == MIRAGE_OK &&
            mirage_image_batch_get(blocking, 1, &b1) == MIRAGE_OK) {
            MirageTarget d[2];
            memset(d, 0, sizeof d);
            d[0].data = floats;
            d[0].size = (size_t)W * H * 16;
            d[0].width = W;
            d[0].height = H;
            d[0].format = MIRAGE_PIXEL_RGBA32F;
            d[1].data = rgba;
            d[1].size = (size_t)W * H * 4;
            d[1].width = W;
            d[1].height = H;
            d[1].format = MIRAGE_PIXEL_RGBA8;
            EXPECT_ERR(mirage_job_take_into(jobs[D].job, d, 1), MIRAGE_ERR_INVALID_ARGUMENT, "count is 1");
            /* A good target and a bad one: the good one is not written either. */
            memset(floats, SENTINEL, d[0].size);
            d[1].stride = 1;
            EXPECT_ERR(mirage_job_take_into(jobs[D].job, d, 2), MIRAGE_ERR_INVALID_ARGUMENT, "targets[1].stride");
            size_t touched = 0;
            for (size_t i = 0; i < d[0].size; i++) touched += ((const uint8_t *)floats)[i] != SENTINEL;
            CHECK(touched == 0, "a refused take_into wrote %zu bytes of its good target", touched);
            d[1].stride = 0;
            EXPECT_OK(mirage_job_take_into(jobs[D].job, d, 2));
            CHECK(memcmp(rgba, b1.data, (size_t)W * H * 4) == 0, "D's second image differs from the blocking decode");
            size_t out_of_range = 0, bad_alpha = 0, far = 0;
            double max_diff = 0;
            for (size_t i = 0; i < (size_t)W * H; i++) {
                for (int c = 0; c < 4; c++) {
                    float v = floats[4 * i + c];
                    out_of_range += !(v >= 0.0f && v <= 1.0f);
                    if (c == 3) {
                        bad_alpha += v != b0.data[4 * i + 3] / 255.0f;
                        continue;
                    }
                    double diff = v - srgb_to_linear(b0.data[4 * i + c]);
                    if (diff < 0) diff = -diff;
                    if (diff > max_diff) max_diff = diff;
                    far += diff > 0.006; /* half an 8-bit step where the sRGB curve is steepest, and then some */
                }
            }
            CHECK(out_of_range == 0 && bad_alpha == 0, "D as RGBA32F: %zu values outside [0, 1], %zu alphas wrong",
                  out_of_range, bad_alpha);
            CHECK(far == 0, "D as RGBA32F: %zu values far from the 8-bit decode in linear light (max %g)", far,
                  max_diff);
            printf("D as RGBA32F: largest difference from the 8-bit decode in linear light %.3g\n", max_diff);
        } else {
            CHECK(0, "D: no buffer or blocking result");
        }
        free(rgba);
        mirage_image_batch_free(blocking);
    }

    /* E: latents, not images; the blocking encode's bits. */
    {
        EXPECT_ERR(mirage_job_take_into(jobs[E].job, &good, 1), MIRAGE_ERR_INVALID_ARGUMENT, "latents");
        EXPECT_ERR(mirage_job_take_images(jobs[E].job, &batch), MIRAGE_ERR_INVALID_ARGUMENT, "latents");
        EXPECT_ERR(mirage_job_take_latents(jobs[E].job, &mean, &mean), MIRAGE_ERR_INVALID_ARGUMENT, "same");
        EXPECT_OK(mirage_job_take_latents(jobs[E].job, &mean, &logvar));
        MirageLatent *bm = NULL, *blv = NULL;
        EXPECT_OK(mirage_vae_encode(ctx, &to_encode, 1, &bm, &blv));
        const float *x = NULL, *y = NULL;
        size_t nx = 0, ny = 0;
        if (mean && logvar && bm && blv) {
            EXPECT_OK(mirage_latent_data(mean, &x, &nx));
            EXPECT_OK(mirage_latent_data(bm, &y, &ny));
            CHECK(nx == ny && nx > 0 && memcmp(x, y, nx * sizeof *x) == 0, "E's mean differs from the blocking encode");
            EXPECT_OK(mirage_latent_data(logvar, &x, &nx));
            EXPECT_OK(mirage_latent_data(blv, &y, &ny));
            CHECK(nx == ny && nx > 0 && memcmp(x, y, nx * sizeof *x) == 0,
                  "E's logvar differs from the blocking encode");
        }
        EXPECT_ERR(mirage_job_take_latents(jobs[E].job, &bm, NULL), MIRAGE_ERR_INVALID_ARGUMENT, "already taken");
        mirage_latent_free(bm);
        mirage_latent_free(blv);
        mirage_latent_free(mean);
        mirage_latent_free(logvar);
    }
    CHECK(batch == no_batch, "a refused take wrote its out-parameter");
    if (batch != no_batch) mirage_image_batch_free(batch);

buffers:
    free(floats);
    free(buf.data);
out:
    for (int k = 0; k < NJOBS; k++) mirage_job_free(jobs[k].job);
    mirage_latent_free(prior);
    free(pattern);
}

/* ---- the bounded queue ---- */

static void queue_bound(const MirageContext *ctx) {
    /* Long jobs, submitted as fast as possible: the two workers start two, the queue holds four, and a
     * submission after that is refused with BUSY (nothing submitted, out untouched). */
    enum { MOST = 16 };
    MirageJob *jobs[MOST] = {NULL};
    MirageJob *const sentinel = (MirageJob *)jobs;
    MirageDiffusionParams p = diffusion(MIRAGE_MAX_STEPS, 8, NULL);
    MirageStatus s = MIRAGE_OK;
    int made = 0;
    while (made < MOST) {
        MirageJob *j = sentinel;
        s = mirage_job_generate(ctx, &p, NULL, &j);
        mirage_last_error(last_message, sizeof last_message);
        if (s != MIRAGE_OK) {
            CHECK(j == sentinel, "a refused submission wrote its out-parameter");
            break;
        }
        jobs[made++] = j;
    }
    CHECK(s == MIRAGE_ERR_BUSY, "%d submissions and no BUSY (last: %s)", made, mirage_status_str(s));
    CHECK(made >= 4 && made <= 6, "BUSY after %d submissions to 2 workers and a queue of 4", made);
    CHECK(strstr(last_message, "max_queued_jobs") != NULL, "BUSY message: %s", last_message);
    printf("queue: BUSY after %d submissions: %s\n", made, last_message);
    /* The encode and decode submissions count against the same queue. */
    if (s == MIRAGE_ERR_BUSY) {
        MirageLatent *z = NULL;
        MirageJob *j = sentinel;
        EXPECT_OK(mirage_vae_sample_prior(ctx, 1, 1, &z));
        EXPECT_ERR(mirage_job_decode(ctx, z, MIRAGE_PIXEL_RGBA8, NULL, &j), MIRAGE_ERR_BUSY, "max_queued_jobs");
        CHECK(j == sentinel, "a refused decode wrote its out-parameter");
        if (j != sentinel) mirage_job_free(j);
        mirage_latent_free(z);
    }

    /* Free them all (each is cancelled; nothing waits); the context works on: a game retries a BUSY
     * submission on a later frame until the cancelled jobs have left the queue. */
    double t0 = now_s();
    for (int k = 0; k < made; k++) mirage_job_free(jobs[k]);
    double freed = now_s() - t0;
    CHECK(freed < 1.0, "freeing %d jobs took %.3f s", made, freed);
    MirageDiffusionParams small = diffusion(3, 9, NULL);
    MirageJob *j = NULL;
    int busy = 0;
    double deadline = now_s() + 60.0;
    while ((s = mirage_job_generate(ctx, &small, NULL, &j)) == MIRAGE_ERR_BUSY && now_s() < deadline) {
        busy++;
        sleep_ms(2);
    }
    mirage_last_error(last_message, sizeof last_message);
    CHECK(s == MIRAGE_OK, "a submission after the queue drained -> %s: %s", mirage_status_str(s), last_message);
    printf("queue: the next submission found it full %d times, then went in\n", busy);
    if (s == MIRAGE_OK) {
        MirageJobState st = 0;
        EXPECT_OK(mirage_job_wait(j, 120000, &st));
        CHECK(st == MIRAGE_JOB_DONE, "the job after BUSY ended %s", state_name(st));
        MirageImageBatch *b = NULL;
        EXPECT_OK(mirage_job_take_images(j, &b));
        CHECK(mirage_image_batch_count(b) == 1, "the job after BUSY made %zu images", mirage_image_batch_count(b));
        mirage_image_batch_free(b);
        mirage_job_free(j);
    }
}

/* ---- freeing what runs ---- */

static void free_while_running(const char *dir) {
    MirageContextParams cp;
    EXPECT_OK(mirage_context_params_init(&cp, sizeof cp));
    cp.workers = 1;
    MirageContext *ctx = NULL;
    EXPECT_OK(mirage_context_new(dir, &cp, &ctx));
    if (!ctx) return;
    MirageDiffusionParams long_run = diffusion(MIRAGE_MAX_STEPS, 11, NULL);
    MirageJobParams manual = job_params(MIRAGE_JOB_MANUAL, false);

    /* A running job freed: the free returns at once (the worker stops within one step, on its own). */
    MirageJob *j = NULL;
    EXPECT_OK(mirage_job_generate(ctx, &long_run, NULL, &j));
    uint32_t step = 0;
    MirageJobState st = poll_until(j, has_stepped, 120.0, &step);
    CHECK(st == MIRAGE_JOB_RUNNING, "the job to free is %s at step %u", state_name(st), step);
    double t0 = now_s();
    mirage_job_free(j);
    double job_free = now_s() - t0;
    CHECK(job_free < 1.0, "mirage_job_free of a running job took %.3f s", job_free);

    /* A running job, one queued behind it (one worker) and a manual one, then the context freed: the
     * workers' jobs are cancelled and the threads joined; the handles stay valid; the manual job still runs. */
    MirageJob *running = NULL, *queued = NULL, *m = NULL;
    EXPECT_OK(mirage_job_generate(ctx, &long_run, NULL, &running));
    EXPECT_OK(mirage_job_generate(ctx, &long_run, NULL, &queued));
    MirageDiffusionParams short_run = diffusion(3, 12, NULL);
    EXPECT_OK(mirage_job_generate(ctx, &short_run, &manual, &m));
    if (running) {
        st = poll_until(running, has_stepped, 120.0, &step);
        CHECK(st == MIRAGE_JOB_RUNNING, "the job running at the context's free is %s", state_name(st));
        /* Waiting with a timeout on a running job: it has not ended. */
        MirageJobState w = 0;
        EXPECT_OK(mirage_job_wait(running, 1, &w));
        CHECK(!ended(w), "a %u-step job ended (%s) within a few steps", MIRAGE_MAX_STEPS, state_name(w));
    }
    t0 = now_s();
    mirage_context_free(ctx);
    double took = now_s() - t0;
    printf("free: a running job freed in %.4f s; the context with a running and a queued job in %.4f s\n",
           job_free, took);
    CHECK(took < 30.0, "mirage_context_free took %.3f s", took);
    if (running) {
        uint32_t at = 0;
        st = poll_job(running, &at, NULL);
        CHECK(st == MIRAGE_JOB_CANCELLED && at < MIRAGE_MAX_STEPS,
              "the running job is %s at step %u after the context's free", state_name(st), at);
        MirageImageBatch *b = NULL;
        EXPECT_ERR(mirage_job_take_images(running, &b), MIRAGE_ERR_CANCELLED, "");
        mirage_image_batch_free(b); /* NULL unless the check above failed */
    }
    if (queued) {
        st = poll_job(queued, &step, NULL);
        CHECK(st == MIRAGE_JOB_CANCELLED && step == 0, "the queued job is %s at step %u after the context's free",
              state_name(st), step);
    }
    if (m) {
        uint32_t ran = 0;
        EXPECT_OK(mirage_job_advance(m, UINT32_MAX, 0, &ran));
        st = poll_job(m, NULL, NULL);
        CHECK(ran == 3 && st == MIRAGE_JOB_DONE, "the manual job after its context's free: %u steps, %s", ran,
              state_name(st));
        MirageImageBatch *b = NULL;
        EXPECT_OK(mirage_job_take_images(m, &b));
        CHECK(mirage_image_batch_count(b) == 1, "the manual job made %zu images", mirage_image_batch_count(b));
        mirage_image_batch_free(b);
    }
    mirage_job_free(running);
    mirage_job_free(queued);
    mirage_job_free(m);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s <model set dir>\n", argv[0]);
        return 2;
    }
    double start = now_s();
    MirageRuntimeOptions o;
    EXPECT_OK(mirage_runtime_options_init(&o, sizeof o));
    o.provider = MIRAGE_PROVIDER_CPU;
    o.intra_threads = 1;
    EXPECT_OK(mirage_runtime_init(&o));

    MirageContextParams cp;
    EXPECT_OK(mirage_context_params_init(&cp, sizeof cp));
    CHECK(cp.struct_size == sizeof cp && cp.workers == 1 && cp.max_queued_jobs == 64 && !cp.tileable,
          "context params defaults: %u workers, %u queued", cp.workers, cp.max_queued_jobs);
    MirageContext *const sentinel = (MirageContext *)&cp;
    MirageContext *ctx = sentinel;
    MirageContextParams bad = cp;
    bad.workers = 0;
    EXPECT_ERR(mirage_context_new(argv[1], &bad, &ctx), MIRAGE_ERR_INVALID_ARGUMENT, "workers");
    bad.workers = MIRAGE_MAX_WORKERS + 1;
    EXPECT_ERR(mirage_context_new(argv[1], &bad, &ctx), MIRAGE_ERR_INVALID_ARGUMENT, "workers");
    bad = cp;
    bad.max_queued_jobs = 0;
    EXPECT_ERR(mirage_context_new(argv[1], &bad, &ctx), MIRAGE_ERR_INVALID_ARGUMENT, "max_queued_jobs");
    bad.max_queued_jobs = MIRAGE_MAX_QUEUED_JOBS + 1;
    EXPECT_ERR(mirage_context_new(argv[1], &bad, &ctx), MIRAGE_ERR_INVALID_ARGUMENT, "max_queued_jobs");
    CHECK(ctx == sentinel, "a refused context was written");

    cp.workers = 2;
    cp.max_queued_jobs = 4;
    ctx = NULL;
    EXPECT_OK(mirage_context_new(argv[1], &cp, &ctx));
    if (ctx) {
        EXPECT_OK(mirage_context_image_size(ctx, &W, &H, &CH));
        CHECK(W > 0 && H > 0 && (CH == 1 || CH == 3 || CH == 4), "image size %ux%ux%u", W, H, CH);
        game_loop(ctx);
        queue_bound(ctx);
        mirage_context_free(ctx);
        free_while_running(argv[1]);
    }

    printf("test_gameloop: %d checks, %d failed (%.1f s)\n", checks, failures, now_s() - start);
    return failures == 0 ? 0 : 1;
}
