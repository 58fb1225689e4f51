/* A program built only from what `make install` installed (tests/install/run.sh builds it with pkg-config,
 * with CMake's find_package(mirage), and statically): text-to-image on the installed emoji set, then
 * reports which libmirage and libonnxruntime the process loaded (from /proc/self/maps), so the test can
 * check that both come from the prefix. argv[1]: a model set directory. */
#include <stdio.h>
#include <string.h>
#include "mirage.h"

static int ok(MirageStatus status, const char *what) {
    if (status == MIRAGE_OK) return 1;
    char message[600];
    mirage_last_error(message, sizeof message);
    fprintf(stderr, "%s: %s: %s\n", what, mirage_status_str(status), message);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    if (strcmp(mirage_version(), MIRAGE_VERSION_STRING) != 0) {
        fprintf(stderr, "header %s, library %s\n", MIRAGE_VERSION_STRING, mirage_version());
        return 1;
    }
    MirageContext *ctx = NULL;
    if (!ok(mirage_context_new(argv[1], NULL, &ctx), "context")) return 1;
    MirageDiffusionParams params;
    if (!ok(mirage_diffusion_params_init(&params, sizeof params), "params")) return 1;
    params.prompt = "a red apple";
    params.steps = 4;
    params.seed = 1;
    MirageImageBatch *batch = NULL;
    if (!ok(mirage_generate(ctx, &params, &batch), "generate")) return 1;
    MirageImage img;
    if (!ok(mirage_image_batch_get(batch, 0, &img), "image")) return 1;
    unsigned long sum = 0;
    for (uint32_t i = 0; i < img.width * img.height * 4; i++) sum += img.data[i];
    printf("generated %ux%u, pixel sum %lu\n", img.width, img.height, sum);
    mirage_image_batch_free(batch);
    mirage_context_free(ctx);

    FILE *maps = fopen("/proc/self/maps", "r");
    char line[4096];
    while (maps && fgets(line, sizeof line, maps)) {
        char *path = strchr(line, '/');
        if (path && (strstr(path, "libmirage") || strstr(path, "libonnxruntime"))) printf("loaded %s", path);
    }
    if (maps) fclose(maps);
    return 0;
}
