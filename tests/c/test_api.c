/*
 * The C API from C: a host's whole session (runtime with a log callback, context, encode, seeded sampling,
 * decode into library and host buffers, several threads on one context) and every kind of bad input, each
 * checked as a status plus a non-empty mirage_last_error message, and out-parameters left untouched.
 *
 * Run by tests/capi.rs (c_program_passes) as: test_api <fixture root>, where the root holds
 *   good/     the tiny random-weight VAE set (28x28 grey, latents 2x8x8)
 *   corrupt/  the same with bytes of vae_encoder.onnx flipped (sha256 mismatch)
 *   future/   the same with manifest format_version 2
 * Prints one line per failed check and a summary; exits 0 only if every check passed.
 */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mirage.h"

#include "check.h"

/* ---- log callback: every call must bring back our user_data ---- */

struct log_state {
    pthread_mutex_t lock; /* ONNX Runtime may log from its own threads */
    int lines;
    int wrong_user_data;
    int bad_level;
    char first[256];
};

static struct log_state log_state = {PTHREAD_MUTEX_INITIALIZER, 0, 0, 0, ""};

static void on_log(MirageLogLevel level, const char *message, void *user_data) {
    pthread_mutex_lock(&log_state.lock);
    if (user_data != &log_state) log_state.wrong_user_data++;
    if (level > MIRAGE_LOG_ERROR || message == NULL) log_state.bad_level++;
    if (log_state.lines++ == 0) snprintf(log_state.first, sizeof log_state.first, "%s", message ? message : "");
    pthread_mutex_unlock(&log_state.lock);
}

static void join_path(char *out, size_t len, const char *root, const char *name) {
    snprintf(out, len, "%s/%s", root, name);
}

/* ---- errors that need no runtime ---- */

static void test_statics(void) {
    CHECK(strcmp(mirage_version(), MIRAGE_VERSION_STRING) == 0, "library %s, header %s", mirage_version(),
          MIRAGE_VERSION_STRING);
    char composed[64];
    snprintf(composed, sizeof composed, "%d.%d.%d", MIRAGE_VERSION_MAJOR, MIRAGE_VERSION_MINOR,
             MIRAGE_VERSION_PATCH);
    CHECK(strcmp(composed, MIRAGE_VERSION_STRING) == 0, "%s vs %s", composed, MIRAGE_VERSION_STRING);

    for (MirageStatus s = MIRAGE_OK; s <= MIRAGE_ERR_BUSY; s++) {
        const char *text = mirage_status_str(s);
        CHECK(text && *text && strcmp(text, "unknown status") != 0, "status %u has no text", s);
        for (MirageStatus t = MIRAGE_OK; t < s; t++)
            CHECK(strcmp(text, mirage_status_str(t)) != 0, "statuses %u and %u share \"%s\"", s, t, text);
    }
    CHECK(strcmp(mirage_status_str(9999), "unknown status") == 0, "unknown status value");
    CHECK(strcmp(mirage_provider_name(MIRAGE_PROVIDER_CPU), "cpu") == 0, "provider name");
    CHECK(strcmp(mirage_provider_name(77), "unknown") == 0, "unknown provider name");

    /* Nothing failed yet on this thread. */
    CHECK(mirage_last_error(NULL, 0) == 0, "fresh thread has a message");

    /* Every _free accepts NULL. */
    mirage_context_free(NULL);
    mirage_latent_free(NULL);
    mirage_image_batch_free(NULL);
    CHECK(mirage_image_batch_count(NULL) == 0, "count of NULL batch");
}

static void test_options_errors(const char *root) {
    MirageRuntimeOptions o;
    EXPECT_ERR(mirage_runtime_options_init(NULL, sizeof o), MIRAGE_ERR_INVALID_ARGUMENT, "options");
    EXPECT_ERR(mirage_runtime_options_init(&o, 0), MIRAGE_ERR_INVALID_ARGUMENT, "struct_size");
    EXPECT_ERR(mirage_runtime_options_init(&o, sizeof o - 1), MIRAGE_ERR_INVALID_ARGUMENT, "struct_size");
    EXPECT_ERR(mirage_runtime_init(NULL), MIRAGE_ERR_INVALID_ARGUMENT, "options is NULL");

    EXPECT_OK(mirage_runtime_options_init(&o, sizeof o));
    CHECK(o.struct_size == sizeof o && o.provider == MIRAGE_PROVIDER_DEFAULT && o.log_level == MIRAGE_LOG_WARN &&
              o.ort_library_path == NULL && !o.strict && o.flags == 0,
          "options defaults");

    MirageRuntimeOptions bad = o;
    bad.struct_size = 0;
    EXPECT_ERR(mirage_runtime_init(&bad), MIRAGE_ERR_INVALID_ARGUMENT, "struct_size");
    bad.struct_size = sizeof(size_t);
    EXPECT_ERR(mirage_runtime_init(&bad), MIRAGE_ERR_INVALID_ARGUMENT, "struct_size");
    bad.struct_size = (size_t)0xdeadbeefcafe; /* what an uninitialised struct_size looks like */
    EXPECT_ERR(mirage_runtime_init(&bad), MIRAGE_ERR_INVALID_ARGUMENT, "implausibly large");
    bad = o;
    bad.provider = 99;
    EXPECT_ERR(mirage_runtime_init(&bad), MIRAGE_ERR_INVALID_ARGUMENT, "provider");
    bad = o;
    bad.log_level = 9;
    EXPECT_ERR(mirage_runtime_init(&bad), MIRAGE_ERR_INVALID_ARGUMENT, "log_level");
    bad = o;
    bad.flags = MIRAGE_RUNTIME_CUDA_GRAPH << 1; /* a bit this library does not know */
    EXPECT_ERR(mirage_runtime_init(&bad), MIRAGE_ERR_INVALID_ARGUMENT, "flags");
    bad = o;
    bad.ort_library_path = "/tmp/\xff\xfe/libonnxruntime.so";
    EXPECT_ERR(mirage_runtime_init(&bad), MIRAGE_ERR_INVALID_ARGUMENT, "UTF-8");

    /* A host built against a newer header: a bigger struct whose unknown tail is set must be refused. */
    struct {
        MirageRuntimeOptions o;
        uint64_t future_fields[2];
    } newer;
    EXPECT_OK(mirage_runtime_options_init(&newer.o, sizeof newer));
    CHECK(newer.o.struct_size == sizeof newer && newer.future_fields[0] == 0 && newer.future_fields[1] == 0,
          "init zeroes the fields it does not know");
    newer.future_fields[1] = 1;
    EXPECT_ERR(mirage_runtime_init(&newer.o), MIRAGE_ERR_INVALID_ARGUMENT, "does not have");

    /* A library path that does not exist: a load error, and nothing is left half-initialised. */
    char missing[1024];
    join_path(missing, sizeof missing, root, "no-such-dir/libonnxruntime.so");
    bad = o;
    bad.ort_library_path = missing;
    EXPECT_ERR(mirage_runtime_init(&bad), MIRAGE_ERR_RUNTIME_LOAD, "no-such-dir");
}

static void test_runtime_init(void) {
    /* The real initialisation goes through the "newer header" path: a bigger struct, unknown tail zero. */
    struct {
        MirageRuntimeOptions o;
        uint64_t future_fields[2];
    } newer;
    EXPECT_OK(mirage_runtime_options_init(&newer.o, sizeof newer));
    newer.o.provider = MIRAGE_PROVIDER_CPU;
    newer.o.intra_threads = 1;
    newer.o.log_callback = on_log;
    newer.o.log_user_data = &log_state;
    newer.o.log_level = MIRAGE_LOG_DEBUG;
    newer.o.flags = MIRAGE_RUNTIME_CUDA_GRAPH; /* no effect on the CPU: everything below runs the same */
    EXPECT_OK(mirage_runtime_init(&newer.o));
    /* Again with the same options: fine. With others: ONNX Runtime cannot be reloaded. */
    EXPECT_OK(mirage_runtime_init(&newer.o));
    MirageRuntimeOptions other;
    EXPECT_OK(mirage_runtime_options_init(&other, sizeof other));
    other.intra_threads = 2;
    EXPECT_ERR(mirage_runtime_init(&other), MIRAGE_ERR_RUNTIME_ALREADY_INITIALISED, "already");
}

static void test_context_errors(const char *root) {
    char path[1024];
    MirageContext *const sentinel = (MirageContext *)&log_state; /* any recognisable non-NULL value */
    MirageContext *ctx = sentinel;
    MirageContextParams p;

    join_path(path, sizeof path, root, "good");
    EXPECT_ERR(mirage_context_new(NULL, NULL, &ctx), MIRAGE_ERR_INVALID_ARGUMENT, "model_dir");
    EXPECT_ERR(mirage_context_new(path, NULL, NULL), MIRAGE_ERR_INVALID_ARGUMENT, "out");
    EXPECT_ERR(mirage_context_params_init(&p, 3), MIRAGE_ERR_INVALID_ARGUMENT, "struct_size");
    EXPECT_OK(mirage_context_params_init(&p, sizeof p));
    p.provider = 1234;
    EXPECT_ERR(mirage_context_new(path, &p, &ctx), MIRAGE_ERR_INVALID_ARGUMENT, "provider");
    p.provider = MIRAGE_PROVIDER_DEFAULT;
    p.struct_size = 0;
    EXPECT_ERR(mirage_context_new(path, &p, &ctx), MIRAGE_ERR_INVALID_ARGUMENT, "struct_size");

    join_path(path, sizeof path, root, "missing");
    EXPECT_ERR(mirage_context_new(path, NULL, &ctx), MIRAGE_ERR_MODEL_NOT_FOUND, "missing");
    join_path(path, sizeof path, root, "corrupt");
    EXPECT_ERR(mirage_context_new(path, NULL, &ctx), MIRAGE_ERR_INVALID_MODEL, "sha256");
    join_path(path, sizeof path, root, "future");
    EXPECT_ERR(mirage_context_new(path, NULL, &ctx), MIRAGE_ERR_INVALID_MODEL, "format_version 2");
    join_path(path, sizeof path, root, "good/\xff\xfe");
    EXPECT_ERR(mirage_context_new(path, NULL, &ctx), MIRAGE_ERR_INVALID_ARGUMENT, "UTF-8");
    CHECK(ctx == sentinel, "a failed mirage_context_new wrote its out-parameter");
}

static void test_getters(const MirageContext *ctx) {
    uint32_t w = 0, h = 0, c = 0, shape[3] = {0, 0, 0};
    EXPECT_OK(mirage_context_image_size(ctx, &w, &h, &c));
    CHECK(w == 28 && h == 28 && c == 1, "image size %ux%ux%u", w, h, c);
    EXPECT_ERR(mirage_context_image_size(NULL, &w, &h, &c), MIRAGE_ERR_INVALID_ARGUMENT, "ctx");
    EXPECT_ERR(mirage_context_image_size(ctx, &w, NULL, &c), MIRAGE_ERR_INVALID_ARGUMENT, "height");
    EXPECT_OK(mirage_context_latent_shape(ctx, shape));
    CHECK(shape[0] == 2 && shape[1] == 8 && shape[2] == 8, "latent shape %u %u %u", shape[0], shape[1], shape[2]);

    MirageProvider prov = 0;
    EXPECT_OK(mirage_context_provider(ctx, MIRAGE_MODEL_VAE_ENCODER, &prov));
    CHECK(prov == MIRAGE_PROVIDER_CPU, "encoder on %s", mirage_provider_name(prov));
    EXPECT_OK(mirage_context_provider(ctx, MIRAGE_MODEL_VAE_DECODER, &prov));
    CHECK(prov == MIRAGE_PROVIDER_CPU, "decoder on %s", mirage_provider_name(prov));
    EXPECT_ERR(mirage_context_provider(ctx, 0, &prov), MIRAGE_ERR_INVALID_ARGUMENT, "kind");

    /* snprintf-style name: "random" (the fixture's manifest name). */
    char buf[16];
    size_t needed = 0;
    EXPECT_OK(mirage_context_name(ctx, buf, sizeof buf, &needed));
    CHECK(strcmp(buf, "random") == 0 && needed == 6, "name %s (%zu)", buf, needed);
    memset(buf, 'x', sizeof buf);
    EXPECT_OK(mirage_context_name(ctx, buf, 3, &needed));
    CHECK(strcmp(buf, "ra") == 0 && needed == 6 && buf[3] == 'x', "truncated name %s", buf);
    EXPECT_OK(mirage_context_name(ctx, NULL, 0, &needed));
    CHECK(needed == 6, "length query %zu", needed);
    EXPECT_ERR(mirage_context_name(ctx, NULL, 5, &needed), MIRAGE_ERR_INVALID_ARGUMENT, "buf");
}

/* A 28x28 grey test pattern in a buffer whose rows are `stride` bytes, padding bytes set to `pad`. */
static uint8_t *pattern(uint32_t stride, uint8_t pad) {
    uint8_t *p = malloc((size_t)stride * 28);
    memset(p, pad, (size_t)stride * 28);
    for (uint32_t y = 0; y < 28; y++)
        for (uint32_t x = 0; x < 28; x++) p[y * stride + x] = (uint8_t)((x * 9 + y * 5) % 256);
    return p;
}

static int same_floats(const MirageLatent *a, const MirageLatent *b) {
    const float *da, *db;
    size_t na, nb;
    if (mirage_latent_data(a, &da, &na) != MIRAGE_OK || mirage_latent_data(b, &db, &nb) != MIRAGE_OK) return 0;
    return na == nb && memcmp(da, db, na * sizeof(float)) == 0;
}

struct thread_job {
    const MirageContext *ctx;
    const MirageLatent *mean, *logvar, *reference;
    int mismatches;
};

/* Several threads on one context: each samples and decodes, results must equal the single-thread ones. */
static void *thread_main(void *arg) {
    struct thread_job *job = arg;
    for (int i = 0; i < 5; i++) {
        MirageLatent *z = NULL;
        MirageImageBatch *b = NULL;
        if (mirage_vae_sample(job->ctx, job->mean, job->logvar, 7, &z) != MIRAGE_OK || !same_floats(z, job->reference) ||
            mirage_vae_decode(job->ctx, z, MIRAGE_PIXEL_GRAY8, &b) != MIRAGE_OK || mirage_image_batch_count(b) != 1)
            job->mismatches++;
        mirage_image_batch_free(b);
        mirage_latent_free(z);
    }
    return NULL;
}

static void test_vae(const MirageContext *ctx) {
    /* Encode one image with padded rows and the same pixels packed: the stride must not matter. */
    uint8_t *padded = pattern(32, 0xAB), *packed = pattern(28, 0);
    MirageImage images[2] = {{28, 28, 32, MIRAGE_PIXEL_GRAY8, padded}, {28, 28, 0, MIRAGE_PIXEL_GRAY8, packed}};
    MirageLatent *mean = NULL, *logvar = NULL;
    EXPECT_OK(mirage_vae_encode(ctx, images, 2, &mean, &logvar));
    uint32_t shape[4] = {0, 0, 0, 0};
    EXPECT_OK(mirage_latent_shape(mean, shape));
    CHECK(shape[0] == 2 && shape[1] == 2 && shape[2] == 8 && shape[3] == 8, "mean shape %u %u %u %u", shape[0],
          shape[1], shape[2], shape[3]);
    const float *m = NULL;
    size_t len = 0;
    EXPECT_OK(mirage_latent_data(mean, &m, &len));
    CHECK(len == 256, "mean has %zu values", len);
    int finite = 1;
    for (size_t i = 0; i < len; i++) finite &= isfinite(m[i]) != 0;
    CHECK(finite, "mean has NaN or inf");
    CHECK(memcmp(m, m + 128, 128 * sizeof(float)) == 0, "padded and packed rows encode differently");

    /* Seeded sampling: same seed, same bits; another seed, other values. */
    MirageLatent *one_mean = NULL, *one_logvar = NULL, *z1 = NULL, *z2 = NULL, *z3 = NULL;
    EXPECT_OK(mirage_vae_encode(ctx, images, 1, &one_mean, &one_logvar));
    EXPECT_OK(mirage_vae_sample(ctx, one_mean, one_logvar, 7, &z1));
    EXPECT_OK(mirage_vae_sample(ctx, one_mean, one_logvar, 7, &z2));
    EXPECT_OK(mirage_vae_sample(ctx, one_mean, one_logvar, 8, &z3));
    CHECK(same_floats(z1, z2), "same seed, different latents");
    CHECK(!same_floats(z1, z3), "different seeds, same latents");

    /* Prior samples: shape and reproducibility. */
    MirageLatent *p1 = NULL, *p2 = NULL;
    EXPECT_OK(mirage_vae_sample_prior(ctx, 3, 1, &p1));
    EXPECT_OK(mirage_vae_sample_prior(ctx, 3, 1, &p2));
    EXPECT_OK(mirage_latent_shape(p1, shape));
    CHECK(shape[0] == 3 && shape[1] == 2, "prior shape %u %u", shape[0], shape[1]);
    CHECK(same_floats(p1, p2), "prior not reproducible");

    /* Decode into library images (RGBA from a grey set: grey replicated, alpha 255). */
    MirageImageBatch *rgba = NULL, *grey = NULL;
    EXPECT_OK(mirage_vae_decode(ctx, z1, MIRAGE_PIXEL_RGBA8, &rgba));
    EXPECT_OK(mirage_vae_decode(ctx, z1, MIRAGE_PIXEL_GRAY8, &grey));
    CHECK(mirage_image_batch_count(rgba) == 1, "batch count %zu", mirage_image_batch_count(rgba));
    MirageImage ri, gi, sentinel_img = {1, 2, 3, 4, NULL}, img = sentinel_img;
    EXPECT_OK(mirage_image_batch_get(rgba, 0, &ri));
    EXPECT_OK(mirage_image_batch_get(grey, 0, &gi));
    CHECK(ri.width == 28 && ri.height == 28 && ri.stride == 112 && ri.format == MIRAGE_PIXEL_RGBA8, "rgba image");
    CHECK(gi.stride == 28 && gi.format == MIRAGE_PIXEL_GRAY8, "grey image");
    int consistent = 1, varied = 0;
    for (int i = 0; i < 28 * 28; i++) {
        const uint8_t *px = ri.data + 4 * i;
        consistent &= px[0] == gi.data[i] && px[1] == gi.data[i] && px[2] == gi.data[i] && px[3] == 255;
        varied |= gi.data[i] != gi.data[0];
    }
    CHECK(consistent, "RGBA conversion of the grey image");
    CHECK(varied, "decoded image is flat");
    EXPECT_ERR(mirage_image_batch_get(rgba, 1, &img), MIRAGE_ERR_INVALID_ARGUMENT, "out of range");
    CHECK(memcmp(&img, &sentinel_img, sizeof img) == 0, "failed get wrote its out-parameter");

    /* Decode straight into host buffers: RGB with padded rows; the padding must stay untouched. */
    const uint32_t stride = 28 * 3 + 5;
    uint8_t *host = malloc((size_t)stride * 28);
    memset(host, 0xEE, (size_t)stride * 28);
    MirageImage target = {28, 28, stride, MIRAGE_PIXEL_RGB8, host};
    EXPECT_OK(mirage_vae_decode_into(ctx, z1, &target, 1));
    int same = 1, pad_kept = 1;
    for (uint32_t y = 0; y < 28; y++) {
        for (uint32_t x = 0; x < 28; x++)
            for (int k = 0; k < 3; k++) same &= host[y * stride + 3 * x + k] == gi.data[y * 28 + x];
        for (uint32_t k = 84; k < stride; k++) pad_kept &= host[y * stride + k] == 0xEE;
    }
    CHECK(same, "decode_into differs from decode");
    CHECK(pad_kept, "decode_into wrote between rows");

    /* Wrong input of every kind: a status, a message, out-parameters untouched. */
    MirageLatent *const sentinel = (MirageLatent *)&log_state;
    MirageLatent *out = sentinel, *out2 = sentinel;
    MirageImageBatch *const batch_sentinel = (MirageImageBatch *)&log_state;
    MirageImageBatch *batch_out = batch_sentinel;
    MirageImage wrong = images[1];
    wrong.width = 27;
    EXPECT_ERR(mirage_vae_encode(ctx, &wrong, 1, &out, &out2), MIRAGE_ERR_INVALID_ARGUMENT, "27x28");
    uint8_t rgb[28 * 28 * 3] = {0}; /* an RGB image must come with an RGB-sized buffer */
    wrong = images[1];
    wrong.format = MIRAGE_PIXEL_RGB8;
    wrong.data = rgb;
    EXPECT_ERR(mirage_vae_encode(ctx, &wrong, 1, &out, &out2), MIRAGE_ERR_INVALID_ARGUMENT, "expects 28x28x1");
    wrong = images[1];
    wrong.format = 0;
    EXPECT_ERR(mirage_vae_encode(ctx, &wrong, 1, &out, &out2), MIRAGE_ERR_INVALID_ARGUMENT, "images[0].format");
    wrong = images[1];
    wrong.stride = 20;
    EXPECT_ERR(mirage_vae_encode(ctx, &wrong, 1, &out, &out2), MIRAGE_ERR_INVALID_ARGUMENT, "stride");
    wrong = images[1];
    wrong.data = NULL;
    EXPECT_ERR(mirage_vae_encode(ctx, &wrong, 1, &out, &out2), MIRAGE_ERR_INVALID_ARGUMENT, "data is NULL");
    EXPECT_ERR(mirage_vae_encode(ctx, images, 0, &out, &out2), MIRAGE_ERR_INVALID_ARGUMENT, "count");
    EXPECT_ERR(mirage_vae_encode(ctx, NULL, 1, &out, &out2), MIRAGE_ERR_INVALID_ARGUMENT, "images is NULL");
    EXPECT_ERR(mirage_vae_encode(ctx, images, 1, &out, &out), MIRAGE_ERR_INVALID_ARGUMENT, "same place");
    EXPECT_ERR(mirage_vae_encode(NULL, images, 1, &out, &out2), MIRAGE_ERR_INVALID_ARGUMENT, "ctx is NULL");

    float values[3 * 8 * 8];
    for (int i = 0; i < 3 * 8 * 8; i++) values[i] = 0.1f * (float)(i % 7);
    const uint32_t other_shape[4] = {1, 3, 8, 8}, good_shape[4] = {1, 2, 8, 8};
    MirageLatent *other = NULL, *nan_latent = NULL;
    EXPECT_OK(mirage_latent_new(values, 3 * 8 * 8, other_shape, &other));
    EXPECT_ERR(mirage_latent_new(values, 100, other_shape, &out), MIRAGE_ERR_INVALID_ARGUMENT, "needs 192");
    EXPECT_ERR(mirage_latent_new(NULL, 192, other_shape, &out), MIRAGE_ERR_INVALID_ARGUMENT, "data is NULL");
    EXPECT_ERR(mirage_latent_new(values, 192, NULL, &out), MIRAGE_ERR_INVALID_ARGUMENT, "shape is NULL");
    EXPECT_ERR(mirage_vae_sample(ctx, other, other, 1, &out), MIRAGE_ERR_INVALID_ARGUMENT, "[n, 2, 8, 8]");
    EXPECT_ERR(mirage_vae_sample(ctx, one_mean, other, 1, &out), MIRAGE_ERR_INVALID_ARGUMENT, "logvar");
    EXPECT_ERR(mirage_vae_decode(ctx, other, MIRAGE_PIXEL_GRAY8, &batch_out),
               MIRAGE_ERR_INVALID_ARGUMENT, "shape");
    values[5] = NAN;
    EXPECT_OK(mirage_latent_new(values, 128, good_shape, &nan_latent));
    EXPECT_ERR(mirage_vae_decode(ctx, nan_latent, MIRAGE_PIXEL_GRAY8, &batch_out),
               MIRAGE_ERR_INVALID_ARGUMENT, "NaN");
    EXPECT_ERR(mirage_vae_sample(ctx, nan_latent, one_logvar, 1, &out), MIRAGE_ERR_INVALID_ARGUMENT, "NaN");
    EXPECT_ERR(mirage_vae_decode(ctx, z1, 42, &batch_out), MIRAGE_ERR_INVALID_ARGUMENT, "format");
    EXPECT_ERR(mirage_vae_sample_prior(ctx, 0, 1, &out), MIRAGE_ERR_INVALID_ARGUMENT, "count");
    CHECK(out == sentinel && out2 == sentinel && batch_out == batch_sentinel, "a failed call wrote an out-parameter");

    memset(host, 0xEE, (size_t)stride * 28);
    target.width = 14;
    EXPECT_ERR(mirage_vae_decode_into(ctx, z1, &target, 1), MIRAGE_ERR_INVALID_ARGUMENT, "14x28");
    target.width = 28;
    EXPECT_ERR(mirage_vae_decode_into(ctx, z1, &target, 2), MIRAGE_ERR_INVALID_ARGUMENT, "count");
    EXPECT_ERR(mirage_vae_decode_into(ctx, nan_latent, &target, 1), MIRAGE_ERR_INVALID_ARGUMENT, "NaN");
    int untouched = 1;
    for (size_t i = 0; i < (size_t)stride * 28; i++) untouched &= host[i] == 0xEE;
    CHECK(untouched, "a failed decode_into wrote pixels");

    /* The message belongs to the latest call: a success clears it. */
    EXPECT_OK(mirage_latent_shape(z1, shape));
    CHECK(mirage_last_error(NULL, 0) == 0, "message survived a successful call");

    /* Several threads on one context at once. */
    pthread_t threads[3];
    struct thread_job jobs[3];
    for (int i = 0; i < 3; i++) {
        jobs[i] = (struct thread_job){ctx, one_mean, one_logvar, z1, 0};
        CHECK(pthread_create(&threads[i], NULL, thread_main, &jobs[i]) == 0, "pthread_create");
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(threads[i], NULL);
        CHECK(jobs[i].mismatches == 0, "thread %d: %d mismatches", i, jobs[i].mismatches);
    }

    mirage_latent_free(nan_latent);
    mirage_latent_free(other);
    mirage_image_batch_free(rgba);
    mirage_image_batch_free(grey);
    mirage_latent_free(p1);
    mirage_latent_free(p2);
    mirage_latent_free(z1);
    mirage_latent_free(z2);
    mirage_latent_free(z3);
    mirage_latent_free(one_mean);
    mirage_latent_free(one_logvar);
    mirage_latent_free(mean);
    mirage_latent_free(logvar);
    free(host);
    free(padded);
    free(packed);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s <fixture root with good/, corrupt/, future/>\n", argv[0]);
        return 2;
    }
    const char *root = argv[1];
    test_statics();
    test_options_errors(root);
    test_runtime_init();

    pthread_mutex_lock(&log_state.lock);
    CHECK(log_state.lines > 0, "the log callback was never called");
    CHECK(log_state.bad_level == 0, "log level out of range or NULL message");
    CHECK(log_state.wrong_user_data == 0, "%d log calls lost user_data", log_state.wrong_user_data);
    pthread_mutex_unlock(&log_state.lock);

    test_context_errors(root);
    char good[1024];
    join_path(good, sizeof good, root, "good");
    MirageContextParams params;
    EXPECT_OK(mirage_context_params_init(&params, sizeof params));
    params.provider = MIRAGE_PROVIDER_CPU;
    MirageContext *ctx = NULL;
    EXPECT_OK(mirage_context_new(good, &params, &ctx));
    if (ctx) {
        test_getters(ctx);
        test_vae(ctx);
        mirage_context_free(ctx);
    }

    printf("test_api: %d checks, %d failed; %d log lines reached the callback (first: %s)\n", checks, failures,
           log_state.lines, log_state.first);
    return failures == 0 ? 0 : 1;
}
