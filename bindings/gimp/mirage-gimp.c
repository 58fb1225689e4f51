/*
 * mirage-gimp: a GIMP 2.10 plug-in over mirage's C API (include/mirage.h).
 *
 * Registers three procedures under Filters > Render > mirage:
 *   plug-in-mirage-generate  Generate from prompt...  a new layer drawn from a prompt
 *   plug-in-mirage-img2img   Reimagine layer...       the drawable re-imagined (img2img)
 *   plug-in-mirage-inpaint   Fill selection...        the selection regenerated (inpaint)
 *
 * Every procedure opens the model set, runs the diffusion (GIMP's progress bar follows the steps) and only
 * then touches the image, in one undo group: a failure (reported with the library's message) or a cancel
 * leaves the image as it was. See README.md for the parameters, the scaling and how cancel works.
 */

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <libgimp/gimp.h>
#include <libgimp/gimpui.h>

#include "mirage.h"

#define PLUG_IN_BINARY "mirage-gimp"
#define PLUG_IN_ROLE "mirage-gimp"
#define PROC_GENERATE "plug-in-mirage-generate"
#define PROC_IMG2IMG "plug-in-mirage-img2img"
#define PROC_INPAINT "plug-in-mirage-inpaint"
#define MENU_PATH "<Image>/Filters/Render/mirage"

/* The model set used when the model-set parameter is empty and MIRAGE_MODELS is unset. */
#ifndef MIRAGE_DEFAULT_MODELS
#define MIRAGE_DEFAULT_MODELS "/usr/local/share/mirage/models/emoji"
#endif

#define PROMPT_MAX 1024
#define PATH_MAX_LEN 4096
#define LAYER_NAME_CHARS 64

typedef enum { OP_GENERATE, OP_IMG2IMG, OP_INPAINT } Op;

/* What the dialog edits and gimp_set_data remembers (one record per procedure). */
typedef struct {
  gchar prompt[PROMPT_MAX];
  gchar negative[PROMPT_MAX];
  guint32 seed;
  gboolean random_seed;
  gint32 steps;
  gdouble guidance;
  gdouble strength;
  gchar models[PATH_MAX_LEN];
} MirageVals;

/* One run's settings; the strings belong to the PDB params or to a MirageVals. */
typedef struct {
  const gchar *prompt;
  const gchar *negative;
  gint32 seed;
  gint32 steps;
  gdouble guidance;
  gdouble strength;
  const gchar *models; /* "" = MIRAGE_MODELS, then MIRAGE_DEFAULT_MODELS */
} Job;

static void query(void);
static void run(const gchar *name, gint nparams, const GimpParam *param, gint *nreturn_vals,
                GimpParam **return_vals);

const GimpPlugInInfo PLUG_IN_INFO = {NULL, NULL, query, run};

MAIN()

/* ------------------------------------------------------------------------------------------------ */
/* Registration                                                                                      */

static void query(void) {
  static const GimpParamDef generate_args[] = {
      {GIMP_PDB_INT32, "run-mode", "The run mode { RUN-INTERACTIVE (0), RUN-NONINTERACTIVE (1), RUN-WITH-LAST-VALS (2) }"},
      {GIMP_PDB_IMAGE, "image", "Input image"},
      {GIMP_PDB_DRAWABLE, "drawable", "Input drawable (the new layer goes above the active layer)"},
      {GIMP_PDB_STRING, "prompt", "What to draw (UTF-8); empty = unconditional"},
      {GIMP_PDB_STRING, "negative-prompt", "What to steer away from (UTF-8); empty = nothing"},
      {GIMP_PDB_INT32, "seed", "Seed of the noise (negative values are taken modulo 2^32)"},
      {GIMP_PDB_INT32, "steps", "Sampler steps (1 to 1000)"},
      {GIMP_PDB_FLOAT, "guidance", "Classifier-free guidance scale (0 to 50); below 0 = the model set's default"},
      {GIMP_PDB_STRING, "model-set", "Model set directory; empty = $MIRAGE_MODELS, else the installed default"},
  };
  static const GimpParamDef generate_return[] = {
      {GIMP_PDB_LAYER, "layer", "The new layer"},
  };
  static const GimpParamDef edit_args[] = {
      {GIMP_PDB_INT32, "run-mode", "The run mode { RUN-INTERACTIVE (0), RUN-NONINTERACTIVE (1), RUN-WITH-LAST-VALS (2) }"},
      {GIMP_PDB_IMAGE, "image", "Input image"},
      {GIMP_PDB_DRAWABLE, "drawable", "Input drawable"},
      {GIMP_PDB_STRING, "prompt", "What to draw (UTF-8); empty = unconditional"},
      {GIMP_PDB_STRING, "negative-prompt", "What to steer away from (UTF-8); empty = nothing"},
      {GIMP_PDB_INT32, "seed", "Seed of the noise (negative values are taken modulo 2^32)"},
      {GIMP_PDB_INT32, "steps", "Sampler steps of a full generation (1 to 1000); strength x steps of them run"},
      {GIMP_PDB_FLOAT, "guidance", "Classifier-free guidance scale (0 to 50); below 0 = the model set's default"},
      {GIMP_PDB_STRING, "model-set", "Model set directory; empty = $MIRAGE_MODELS, else the installed default"},
      {GIMP_PDB_FLOAT, "strength", "How far into the noise the input is pushed, in (0, 1]"},
  };

  gimp_install_procedure(
      PROC_GENERATE, "Draw an image from a text prompt with a mirage model set",
      "Generates one image with the model set's latent diffusion U-Net from the prompt (and the negative "
      "prompt), scales it to the image size (bicubic) and adds it as a new layer named after the prompt, "
      "above the active layer. The image is not changed when the call fails.",
      "mirage contributors", "mirage contributors", "2025", "_Generate from prompt...", "RGB*, GRAY*",
      GIMP_PLUGIN, G_N_ELEMENTS(generate_args), G_N_ELEMENTS(generate_return), generate_args,
      generate_return);
  gimp_plugin_menu_register(PROC_GENERATE, MENU_PATH);

  gimp_install_procedure(
      PROC_IMG2IMG, "Re-imagine a layer with a mirage model set (img2img)",
      "Scales the drawable down to the model set's size (area average), pushes it 'strength' of the way "
      "into noise, denoises it towards the prompt, scales the result back up (bicubic) and replaces the "
      "drawable's content (within the selection, if any) in one undo step. A layer without alpha gets an "
      "alpha channel when the result has transparent pixels.",
      "mirage contributors", "mirage contributors", "2025", "_Reimagine layer...", "RGB*, GRAY*",
      GIMP_PLUGIN, G_N_ELEMENTS(edit_args), 0, edit_args, NULL);
  gimp_plugin_menu_register(PROC_IMG2IMG, MENU_PATH);

  gimp_install_procedure(
      PROC_INPAINT, "Fill the selection with a mirage model set (inpaint)",
      "Scales the drawable and the selection (the mask: selected = regenerate) down to the model set's "
      "size (area average), regenerates the selected region so that it fits the rest, scales the result "
      "back up (bicubic) and writes it through the selection in one undo step. Needs a selection.",
      "mirage contributors", "mirage contributors", "2025", "_Fill selection...", "RGB*, GRAY*",
      GIMP_PLUGIN, G_N_ELEMENTS(edit_args), 0, edit_args, NULL);
  gimp_plugin_menu_register(PROC_INPAINT, MENU_PATH);
}

/* ------------------------------------------------------------------------------------------------ */
/* Small helpers                                                                                     */

/* Copies src into dst (size bytes), cut at a UTF-8 character boundary. */
static void copy_utf8(gchar *dst, gsize size, const gchar *src) {
  if (!src) src = "";
  if (strlen(src) < size) {
    strcpy(dst, src);
    return;
  }
  gsize n = size - 1;
  while (n > 0 && ((guchar)src[n] & 0xC0) == 0x80) n--;
  memcpy(dst, src, n);
  dst[n] = '\0';
}

/* "<status>: <message>" of the calling thread's last mirage failure, newly allocated. Some messages
 * already start with the status's name ("invalid argument: params->steps is 0, ..."), others do not
 * ("model file not found: ..."): the name is added only where it is missing. */
static gchar *mirage_error_text(MirageStatus status) {
  size_t len = mirage_last_error(NULL, 0);
  gchar *message = g_malloc(len + 1);
  mirage_last_error(message, len + 1);
  const gchar *name = mirage_status_str(status);
  gchar *text = g_str_has_prefix(message, name) ? g_strdup(message)
                                                : g_strdup_printf("%s: %s", name, message);
  g_free(message);
  return text;
}

/* GIMP 2.10 starts the plug-in afresh for every call, so every call opens the model set from nothing. The
   runtime's load cache (verified digests, ONNX Runtime's optimized graphs) and prompt cache spare the
   repeated work: an unchanged set is not hashed again, and a prompt drawn before (Filters > Repeat, a
   script's fixed prompts) does not load the text encoder at all. The folder is the mirage CLI's default,
   $XDG_CACHE_HOME/mirage/digests (else ~/.cache/...); MIRAGE_CACHE=off turns both caches off. A failure
   here is only reported: the context's own error says what is wrong. */
static void init_runtime(void) {
  const gchar *env = g_getenv("MIRAGE_CACHE");
  if (env && g_ascii_strcasecmp(env, "off") == 0) return;
  MirageRuntimeOptions options;
  if (mirage_runtime_options_init(&options, sizeof options) != MIRAGE_OK) return;
  gchar *dir = g_build_filename(g_get_user_cache_dir(), "mirage", "digests", NULL);
  options.digest_cache_dir = dir;
  options.prompt_cache = true;
  MirageStatus status = mirage_runtime_init(&options); /* copies the path */
  if (status != MIRAGE_OK) {
    gchar *text = mirage_error_text(status);
    g_printerr("mirage: the runtime's caches are off: %s\n", text);
    g_free(text);
  }
  g_free(dir);
}

static const gchar *resolve_models(const gchar *param) {
  if (param && *param) return param;
  const gchar *env = g_getenv("MIRAGE_MODELS");
  if (env && *env) return env;
  return MIRAGE_DEFAULT_MODELS;
}

/* ------------------------------------------------------------------------------------------------ */
/* Resampling: separable, on floats, RGBA premultiplied by alpha so that transparent pixels do not      */
/* bleed their colour. Shrinking averages areas (a box filter over the exact source footprint, as the   */
/* emoji set's training images were made); enlarging uses Catmull-Rom bicubic, clamped.                 */

typedef struct {
  int first; /* first source index */
  int count; /* taps */
  float *w;  /* count weights */
} Taps;

static Taps *make_taps(int in, int out, float **storage) {
  Taps *taps = g_new(Taps, out);
  int max_taps = in > out ? (int)(in / out) + 3 : 4;
  float *w = g_new0(float, (gsize)out * max_taps);
  *storage = w;
  double scale = (double)in / out;
  for (int o = 0; o < out; o++) {
    Taps *t = &taps[o];
    t->w = w + (gsize)o * max_taps;
    if (in >= out) { /* area average */
      double lo = o * scale, hi = (o + 1) * scale;
      int first = (int)lo, last = (int)ceil(hi) - 1;
      if (last > in - 1) last = in - 1;
      t->first = first;
      t->count = last - first + 1;
      for (int i = first; i <= last; i++) {
        double a = MAX(lo, (double)i), b = MIN(hi, (double)i + 1);
        t->w[i - first] = (float)((b - a) / scale);
      }
    } else { /* Catmull-Rom (a = -0.5), edges clamped */
      double x = (o + 0.5) * scale - 0.5;
      int base = (int)floor(x);
      double f = x - base;
      double k[4];
      k[0] = ((-0.5 * f + 1.0) * f - 0.5) * f;
      k[1] = (1.5 * f - 2.5) * f * f + 1.0;
      k[2] = ((-1.5 * f + 2.0) * f + 0.5) * f;
      k[3] = (0.5 * f - 0.5) * f * f;
      int lo = MAX(base - 1, 0), hi = MIN(base + 2, in - 1);
      t->first = lo;
      t->count = hi - lo + 1;
      for (int j = 0; j < 4; j++) {
        int i = CLAMP(base - 1 + j, 0, in - 1);
        t->w[i - lo] += (float)k[j];
      }
    }
  }
  return taps;
}

/* Resamples 8-bit pixels with `ch` channels (4 = RGBA, straight alpha; anything else = independent
 * channels) from sw x sh to dw x dh, packed rows. */
static void resample(const guchar *src, int sw, int sh, int ch, guchar *dst, int dw, int dh) {
  float *xs_storage, *ys_storage;
  Taps *xt = make_taps(sw, dw, &xs_storage);
  Taps *yt = make_taps(sh, dh, &ys_storage);
  gboolean premul = ch == 4;
  /* horizontal pass: sh rows of dw pixels */
  float *tmp = g_new(float, (gsize)dw * sh * ch);
  for (int y = 0; y < sh; y++) {
    const guchar *row = src + (gsize)y * sw * ch;
    float *out = tmp + (gsize)y * dw * ch;
    for (int x = 0; x < dw; x++) {
      const Taps *t = &xt[x];
      float acc[4] = {0, 0, 0, 0};
      for (int k = 0; k < t->count; k++) {
        const guchar *p = row + (gsize)(t->first + k) * ch;
        float w = t->w[k];
        if (premul) {
          float a = p[3] / 255.0f;
          acc[0] += w * a * p[0] / 255.0f;
          acc[1] += w * a * p[1] / 255.0f;
          acc[2] += w * a * p[2] / 255.0f;
          acc[3] += w * a;
        } else {
          for (int c = 0; c < ch; c++) acc[c] += w * p[c] / 255.0f;
        }
      }
      memcpy(out + (gsize)x * ch, acc, sizeof(float) * ch);
    }
  }
  /* vertical pass, straight into 8 bits */
  for (int y = 0; y < dh; y++) {
    const Taps *t = &yt[y];
    guchar *out = dst + (gsize)y * dw * ch;
    for (int x = 0; x < dw; x++) {
      float acc[4] = {0, 0, 0, 0};
      for (int k = 0; k < t->count; k++) {
        const float *p = tmp + ((gsize)(t->first + k) * dw + x) * ch;
        for (int c = 0; c < ch; c++) acc[c] += t->w[k] * p[c];
      }
      guchar *q = out + (gsize)x * ch;
      if (premul) {
        float a = CLAMP(acc[3], 0.0f, 1.0f);
        for (int c = 0; c < 3; c++) {
          float v = a > 0.0f ? CLAMP(acc[c], 0.0f, a) / a : 0.0f;
          q[c] = (guchar)(v * 255.0f + 0.5f);
        }
        q[3] = (guchar)(a * 255.0f + 0.5f);
      } else {
        for (int c = 0; c < ch; c++) q[c] = (guchar)(CLAMP(acc[c], 0.0f, 1.0f) * 255.0f + 0.5f);
      }
    }
  }
  g_free(tmp);
  g_free(xt);
  g_free(yt);
  g_free(xs_storage);
  g_free(ys_storage);
}

/* Converts straight RGBA8 to the set's own format (4: RGBA8 as is; 3: RGB8 and 1: GRAY8, both composited
 * over black, which is the background of the grey sets). Returns a new buffer and the pixel format. */
static guchar *to_set_format(const guchar *rgba, int n, uint32_t channels, MiragePixelFormat *format) {
  if (channels == 4) {
    *format = MIRAGE_PIXEL_RGBA8;
    return g_memdup2(rgba, (gsize)n * 4);
  }
  guchar *out = g_new(guchar, (gsize)n * (channels == 3 ? 3 : 1));
  for (int i = 0; i < n; i++) {
    const guchar *p = rgba + (gsize)i * 4;
    float a = p[3] / 255.0f;
    float r = p[0] * a, g = p[1] * a, b = p[2] * a;
    if (channels == 3) {
      out[i * 3 + 0] = (guchar)(r + 0.5f);
      out[i * 3 + 1] = (guchar)(g + 0.5f);
      out[i * 3 + 2] = (guchar)(b + 0.5f);
    } else {
      out[i] = (guchar)CLAMP(0.2126f * r + 0.7152f * g + 0.0722f * b + 0.5f, 0.0f, 255.0f);
    }
  }
  *format = channels == 3 ? MIRAGE_PIXEL_RGB8 : MIRAGE_PIXEL_GRAY8;
  return out;
}

/* ------------------------------------------------------------------------------------------------ */
/* The work                                                                                          */

static bool on_progress(uint32_t step, uint32_t total, void *user_data) {
  (void)user_data;
  gimp_progress_update(total ? (gdouble)step / total : 1.0);
  /* GIMP 2.10 has no cancel notification for plug-ins: its Cancel button kills the plug-in process
   * (see README.md), so there is nothing to check here. */
  return true;
}

/* Runs op; on success the image has been changed (one undo group) and *new_layer is the generated layer
 * (generate only). On failure returns FALSE with *error set and the image untouched. */
static gboolean run_job(Op op, gint32 image, gint32 drawable, const Job *job, gint32 *new_layer,
                        gchar **error) {
  gboolean ok = FALSE;
  MirageContext *ctx = NULL;
  MirageImageBatch *batch = NULL;
  guchar *src = NULL, *mask = NULL, *small = NULL, *small_mask = NULL, *model_in = NULL, *big = NULL;
  MirageStatus status;

  if (!gimp_item_is_valid(drawable) || !gimp_item_is_drawable(drawable)) {
    *error = g_strdup("mirage: the drawable is not valid");
    return FALSE;
  }
  if (gimp_image_base_type(image) == GIMP_INDEXED) {
    *error = g_strdup("mirage: indexed images are not supported (convert to RGB or grayscale first)");
    return FALSE;
  }

  if (op != OP_GENERATE && gimp_item_is_group(drawable)) {
    *error = g_strdup("mirage: a layer group's pixels cannot be changed: pick one of its layers");
    return FALSE;
  }

  gint dw = gimp_drawable_width(drawable), dh = gimp_drawable_height(drawable);
  gint offx = 0, offy = 0;
  gimp_drawable_offsets(drawable, &offx, &offy);
  if (op == OP_INPAINT) {
    gint x, y, w, h;
    if (gimp_selection_is_empty(image)) {
      *error = g_strdup("mirage: Fill selection needs a selection (the region to regenerate)");
      return FALSE;
    }
    if (!gimp_drawable_mask_intersect(drawable, &x, &y, &w, &h)) {
      *error = g_strdup("mirage: the selection does not cover the drawable");
      return FALSE;
    }
  }

  const gchar *models = resolve_models(job->models);
  gimp_progress_init_printf("mirage: loading %s", models);
  gimp_progress_pulse();
  init_runtime();
  status = mirage_context_new(models, NULL, &ctx);
  if (status != MIRAGE_OK) {
    gchar *text = mirage_error_text(status);
    if (job->models && *job->models)
      *error = g_strdup_printf("mirage: cannot open the model set \"%s\": %s", models, text);
    else if (strcmp(models, MIRAGE_DEFAULT_MODELS) != 0)
      *error = g_strdup_printf("mirage: cannot open the model set \"%s\" (from MIRAGE_MODELS): %s", models,
                               text);
    else
      *error = g_strdup_printf("mirage: cannot open the model set \"%s\" (the installed default; choose one "
                               "with the model-set parameter or MIRAGE_MODELS): %s",
                               models, text);
    g_free(text);
    goto out;
  }
  uint32_t mw, mh, mch;
  status = mirage_context_image_size(ctx, &mw, &mh, &mch);
  if (status != MIRAGE_OK) {
    *error = mirage_error_text(status);
    goto out;
  }

  MirageDiffusionParams params;
  status = mirage_diffusion_params_init(&params, sizeof params);
  if (status != MIRAGE_OK) {
    *error = mirage_error_text(status);
    goto out;
  }
  params.steps = job->steps < 0 ? 0u : (uint32_t)job->steps;
  params.seed = (uint32_t)job->seed;
  params.prompt = job->prompt;
  params.negative_prompt = job->negative;
  params.guidance = job->guidance < 0 ? (float)MIRAGE_GUIDANCE_DEFAULT : (float)job->guidance;
  params.strength = (float)job->strength;
  params.format = MIRAGE_PIXEL_RGBA8;
  params.progress = on_progress;

  if (op == OP_GENERATE) {
    gimp_progress_set_text("mirage: generating");
    status = mirage_generate(ctx, &params, &batch);
  } else {
    /* The drawable, scaled down to the set's size. */
    GeglBuffer *buffer = gimp_drawable_get_buffer(drawable);
    src = g_try_malloc((gsize)dw * dh * 4);
    if (!src) {
      g_object_unref(buffer);
      *error = g_strdup("mirage: out of memory");
      goto out;
    }
    gegl_buffer_get(buffer, GEGL_RECTANGLE(0, 0, dw, dh), 1.0, babl_format("R'G'B'A u8"), src,
                    GEGL_AUTO_ROWSTRIDE, GEGL_ABYSS_NONE);
    g_object_unref(buffer);
    small = g_new(guchar, (gsize)mw * mh * 4);
    resample(src, dw, dh, 4, small, (int)mw, (int)mh);
    MiragePixelFormat in_format;
    model_in = to_set_format(small, (int)(mw * mh), mch, &in_format);
    MirageImage input = {mw, mh, 0, in_format, model_in};

    if (op == OP_IMG2IMG) {
      gimp_progress_set_text("mirage: re-imagining");
      status = mirage_img2img(ctx, &input, 1, &params, &batch);
    } else {
      /* The selection over the drawable's area, scaled down the same way: the mask. */
      gint32 selection = gimp_image_get_selection(image);
      GeglBuffer *sel = gimp_drawable_get_buffer(selection);
      mask = g_try_malloc((gsize)dw * dh);
      if (!mask) {
        g_object_unref(sel);
        *error = g_strdup("mirage: out of memory");
        goto out;
      }
      gegl_buffer_get(sel, GEGL_RECTANGLE(offx, offy, dw, dh), 1.0, babl_format("Y u8"), mask,
                      GEGL_AUTO_ROWSTRIDE, GEGL_ABYSS_NONE);
      g_object_unref(sel);
      small_mask = g_new(guchar, (gsize)mw * mh);
      resample(mask, dw, dh, 1, small_mask, (int)mw, (int)mh);
      MirageImage mask_image = {mw, mh, 0, MIRAGE_PIXEL_GRAY8, small_mask};
      gimp_progress_set_text("mirage: filling the selection");
      status = mirage_inpaint(ctx, &input, &mask_image, 1, &params, &batch);
    }
  }
  if (status != MIRAGE_OK) {
    gchar *text = mirage_error_text(status);
    *error = g_strdup_printf("mirage: %s", text);
    g_free(text);
    goto out;
  }

  MirageImage result;
  status = mirage_image_batch_get(batch, 0, &result);
  if (status != MIRAGE_OK) {
    *error = mirage_error_text(status);
    goto out;
  }

  /* Scale up to the target; the image is changed only from here on. */
  gint tw = op == OP_GENERATE ? gimp_image_width(image) : dw;
  gint th = op == OP_GENERATE ? gimp_image_height(image) : dh;
  big = g_try_malloc((gsize)tw * th * 4);
  if (!big) {
    *error = g_strdup("mirage: out of memory");
    goto out;
  }
  resample(result.data, (int)result.width, (int)result.height, 4, big, tw, th);
  gimp_progress_update(1.0);

  if (op == OP_GENERATE) {
    gchar name[LAYER_NAME_CHARS * 4 + 1];
    if (job->prompt && *job->prompt)
      g_utf8_strncpy(name, job->prompt, LAYER_NAME_CHARS);
    else
      strcpy(name, "mirage");
    GimpImageType type = gimp_image_base_type(image) == GIMP_GRAY ? GIMP_GRAYA_IMAGE : GIMP_RGBA_IMAGE;

    gimp_image_undo_group_start(image);
    gint32 layer = gimp_layer_new(image, name, tw, th, type, 100.0, GIMP_LAYER_MODE_NORMAL);
    if (layer == -1) {
      *error = g_strdup("mirage: could not create the layer");
    } else {
      GeglBuffer *buffer = gimp_drawable_get_buffer(layer);
      gegl_buffer_set(buffer, GEGL_RECTANGLE(0, 0, tw, th), 0, babl_format("R'G'B'A u8"), big,
                      GEGL_AUTO_ROWSTRIDE);
      gegl_buffer_flush(buffer);
      g_object_unref(buffer);
      if (!gimp_image_insert_layer(image, layer, -1, -1)) {
        *error = g_strdup_printf("mirage: could not add the layer: %s", gimp_get_pdb_error());
        gimp_item_delete(layer);
      } else {
        gimp_drawable_update(layer, 0, 0, tw, th);
        *new_layer = layer;
        ok = TRUE;
      }
    }
    gimp_image_undo_group_end(image);
  } else {
    gboolean transparent = FALSE;
    for (gsize i = 0; i < (gsize)tw * th && !transparent; i++) transparent = big[i * 4 + 3] != 255;

    gimp_image_undo_group_start(image);
    if (transparent && gimp_item_is_layer(drawable) && !gimp_drawable_has_alpha(drawable))
      gimp_layer_add_alpha(drawable);
    GeglBuffer *shadow = gimp_drawable_get_shadow_buffer(drawable);
    gegl_buffer_set(shadow, GEGL_RECTANGLE(0, 0, tw, th), 0, babl_format("R'G'B'A u8"), big,
                    GEGL_AUTO_ROWSTRIDE);
    gegl_buffer_flush(shadow);
    g_object_unref(shadow);
    if (!gimp_drawable_merge_shadow(drawable, TRUE)) {
      *error = g_strdup_printf("mirage: could not write the result: %s", gimp_get_pdb_error());
    } else {
      gimp_drawable_update(drawable, 0, 0, tw, th);
      ok = TRUE;
    }
    gimp_image_undo_group_end(image);
  }

out:
  gimp_progress_end();
  mirage_image_batch_free(batch);
  mirage_context_free(ctx);
  g_free(src);
  g_free(mask);
  g_free(small);
  g_free(small_mask);
  g_free(model_in);
  g_free(big);
  return ok;
}

/* ------------------------------------------------------------------------------------------------ */
/* Dialog                                                                                            */

typedef struct {
  GtkWidget *dialog;
  GtkWidget *models_entry;
} BrowseData;

static void browse_clicked(GtkWidget *button, BrowseData *data) {
  (void)button;
  GtkWidget *chooser = gtk_file_chooser_dialog_new(
      "Choose a mirage model set (a folder with manifest.json)", GTK_WINDOW(data->dialog),
      GTK_FILE_CHOOSER_ACTION_SELECT_FOLDER, "_Cancel", GTK_RESPONSE_CANCEL, "_Open", GTK_RESPONSE_ACCEPT,
      NULL);
  const gchar *current = gtk_entry_get_text(GTK_ENTRY(data->models_entry));
  gchar *start = g_strdup(resolve_models(current));
  if (g_file_test(start, G_FILE_TEST_IS_DIR)) gtk_file_chooser_set_filename(GTK_FILE_CHOOSER(chooser), start);
  g_free(start);
  if (gtk_dialog_run(GTK_DIALOG(chooser)) == GTK_RESPONSE_ACCEPT) {
    gchar *folder = gtk_file_chooser_get_filename(GTK_FILE_CHOOSER(chooser));
    if (folder) {
      gchar *utf8 = g_filename_to_utf8(folder, -1, NULL, NULL, NULL);
      if (utf8) gtk_entry_set_text(GTK_ENTRY(data->models_entry), utf8);
      g_free(utf8);
      g_free(folder);
    }
  }
  gtk_widget_destroy(chooser);
}

static GtkWidget *add_entry(GtkTable *table, int row, const gchar *label, const gchar *text,
                            const gchar *tooltip) {
  GtkWidget *entry = gtk_entry_new();
  gtk_entry_set_text(GTK_ENTRY(entry), text);
  gtk_entry_set_activates_default(GTK_ENTRY(entry), TRUE);
  gtk_entry_set_width_chars(GTK_ENTRY(entry), 40);
  gimp_help_set_help_data(entry, tooltip, NULL);
  gimp_table_attach_aligned(table, 0, row, label, 0.0, 0.5, entry, 2, FALSE);
  return entry;
}

static GtkWidget *add_spin(GtkTable *table, int row, const gchar *label, gdouble value, gdouble lower,
                           gdouble upper, gdouble step, guint digits, const gchar *tooltip) {
  GtkObject *adj = gtk_adjustment_new(value, lower, upper, step, step * 10, 0);
  GtkWidget *spin = gtk_spin_button_new(GTK_ADJUSTMENT(adj), step, digits);
  gtk_spin_button_set_numeric(GTK_SPIN_BUTTON(spin), TRUE);
  gtk_entry_set_activates_default(GTK_ENTRY(spin), TRUE);
  gimp_help_set_help_data(spin, tooltip, NULL);
  gimp_table_attach_aligned(table, 0, row, label, 0.0, 0.5, spin, 1, TRUE);
  return spin;
}

static gboolean show_dialog(Op op, const gchar *proc, MirageVals *vals) {
  static const gchar *titles[] = {"mirage: Generate from prompt", "mirage: Reimagine layer",
                                  "mirage: Fill selection"};
  gimp_ui_init(PLUG_IN_BINARY, FALSE);

  GtkWidget *dialog =
      gimp_dialog_new(titles[op], PLUG_IN_ROLE, NULL, 0, gimp_standard_help_func, proc, "_Cancel",
                      GTK_RESPONSE_CANCEL, "_OK", GTK_RESPONSE_OK, NULL);
  gtk_dialog_set_alternative_button_order(GTK_DIALOG(dialog), GTK_RESPONSE_OK, GTK_RESPONSE_CANCEL, -1);
  gtk_dialog_set_default_response(GTK_DIALOG(dialog), GTK_RESPONSE_OK);
  gimp_window_set_transient(GTK_WINDOW(dialog));

  GtkWidget *table = gtk_table_new(8, 3, FALSE);
  gtk_table_set_col_spacings(GTK_TABLE(table), 6);
  gtk_table_set_row_spacings(GTK_TABLE(table), 6);
  gtk_container_set_border_width(GTK_CONTAINER(table), 12);
  gtk_box_pack_start(GTK_BOX(gtk_dialog_get_content_area(GTK_DIALOG(dialog))), table, TRUE, TRUE, 0);

  int row = 0;
  GtkWidget *prompt = add_entry(GTK_TABLE(table), row++, "_Prompt:", vals->prompt,
                                "What to draw; empty = unconditional");
  GtkWidget *negative = add_entry(GTK_TABLE(table), row++, "_Negative prompt:", vals->negative,
                                  "What to steer away from; empty = nothing");

  GtkWidget *seed = gimp_random_seed_new(&vals->seed, &vals->random_seed);
  gimp_table_attach_aligned(GTK_TABLE(table), 0, row++, "_Seed:", 0.0, 0.5, seed, 2, TRUE);

  GtkWidget *steps = add_spin(GTK_TABLE(table), row++, "S_teps:", vals->steps, 1, MIRAGE_MAX_STEPS, 1, 0,
                              "Sampler steps of a full generation");
  GtkWidget *guidance =
      add_spin(GTK_TABLE(table), row++, "_Guidance:", vals->guidance, -1, MIRAGE_MAX_GUIDANCE, 0.5, 1,
               "Classifier-free guidance scale; -1 = the model set's default");
  GtkWidget *strength = NULL;
  if (op != OP_GENERATE)
    strength = add_spin(GTK_TABLE(table), row++, "St_rength:", vals->strength, 0.01, 1.0, 0.05, 2,
                        op == OP_IMG2IMG ? "How much to change: 0.5 to 0.8 re-imagines, 1 ignores the layer"
                                         : "1 invents the selection anew; lower keeps more of it");

  GtkWidget *hbox = gtk_hbox_new(FALSE, 6);
  GtkWidget *models = gtk_entry_new();
  gtk_entry_set_text(GTK_ENTRY(models), vals->models);
  gtk_entry_set_activates_default(GTK_ENTRY(models), TRUE);
  gchar *tip = g_strdup_printf("A model set folder (with manifest.json); empty = $MIRAGE_MODELS if set, "
                               "else %s",
                               MIRAGE_DEFAULT_MODELS);
  gimp_help_set_help_data(models, tip, NULL);
  g_free(tip);
  gtk_box_pack_start(GTK_BOX(hbox), models, TRUE, TRUE, 0);
  GtkWidget *browse = gtk_button_new_with_mnemonic("_Browse...");
  gtk_box_pack_start(GTK_BOX(hbox), browse, FALSE, FALSE, 0);
  gimp_table_attach_aligned(GTK_TABLE(table), 0, row++, "_Model set:", 0.0, 0.5, hbox, 2, FALSE);
  BrowseData browse_data = {dialog, models};
  g_signal_connect(browse, "clicked", G_CALLBACK(browse_clicked), &browse_data);

  gchar *hint = g_strdup_printf("<small>Default model set: %s</small>", resolve_models(""));
  GtkWidget *label = gtk_label_new(NULL);
  gtk_label_set_markup(GTK_LABEL(label), hint);
  g_free(hint);
  gtk_misc_set_alignment(GTK_MISC(label), 0.0, 0.5);
  gtk_table_attach(GTK_TABLE(table), label, 1, 3, row, row + 1, GTK_FILL, GTK_FILL, 0, 0);
  row++;

  gtk_widget_show_all(dialog);
  gboolean run = gimp_dialog_run(GIMP_DIALOG(dialog)) == GTK_RESPONSE_OK;
  if (run) {
    copy_utf8(vals->prompt, sizeof vals->prompt, gtk_entry_get_text(GTK_ENTRY(prompt)));
    copy_utf8(vals->negative, sizeof vals->negative, gtk_entry_get_text(GTK_ENTRY(negative)));
    copy_utf8(vals->models, sizeof vals->models, gtk_entry_get_text(GTK_ENTRY(models)));
    vals->steps = gtk_spin_button_get_value_as_int(GTK_SPIN_BUTTON(steps));
    vals->guidance = gtk_spin_button_get_value(GTK_SPIN_BUTTON(guidance));
    if (strength) vals->strength = gtk_spin_button_get_value(GTK_SPIN_BUTTON(strength));
    /* vals->seed and vals->random_seed are kept up to date by the seed widget. */
  }
  gtk_widget_destroy(dialog);
  return run;
}

/* ------------------------------------------------------------------------------------------------ */
/* Entry point                                                                                       */

static void run(const gchar *name, gint nparams, const GimpParam *param, gint *nreturn_vals,
                GimpParam **return_vals) {
  static GimpParam values[2];
  static gchar *error_message = NULL;
  GimpPDBStatusType status = GIMP_PDB_SUCCESS;
  gchar *error = NULL;
  gint32 new_layer = -1;
  Op op;

  *nreturn_vals = 1;
  *return_vals = values;
  values[0].type = GIMP_PDB_STATUS;

  if (strcmp(name, PROC_GENERATE) == 0)
    op = OP_GENERATE;
  else if (strcmp(name, PROC_IMG2IMG) == 0)
    op = OP_IMG2IMG;
  else if (strcmp(name, PROC_INPAINT) == 0)
    op = OP_INPAINT;
  else {
    values[0].data.d_status = GIMP_PDB_CALLING_ERROR;
    return;
  }
  gint expected = op == OP_GENERATE ? 9 : 10;
  if (nparams < 3) {
    values[0].data.d_status = GIMP_PDB_CALLING_ERROR;
    return;
  }

  gegl_init(NULL, NULL);

  GimpRunMode run_mode = param[0].data.d_int32;
  gint32 image = param[1].data.d_image;
  gint32 drawable = param[2].data.d_drawable;

  MirageVals vals;
  memset(&vals, 0, sizeof vals);
  vals.steps = 20;
  vals.guidance = -1.0;
  vals.strength = op == OP_INPAINT ? 1.0 : 0.6;
  vals.random_seed = FALSE;

  Job job;
  switch (run_mode) {
  case GIMP_RUN_INTERACTIVE:
  case GIMP_RUN_WITH_LAST_VALS:
    if (gimp_get_data_size(name) == (gint)sizeof vals) gimp_get_data(name, &vals);
    if (run_mode == GIMP_RUN_INTERACTIVE && !show_dialog(op, name, &vals)) {
      values[0].data.d_status = GIMP_PDB_CANCEL;
      return;
    }
    if (run_mode == GIMP_RUN_INTERACTIVE && vals.random_seed) vals.seed = g_random_int();
    job.prompt = vals.prompt;
    job.negative = vals.negative;
    job.seed = (gint32)vals.seed;
    job.steps = vals.steps;
    job.guidance = vals.guidance;
    job.strength = vals.strength;
    job.models = vals.models;
    break;
  case GIMP_RUN_NONINTERACTIVE:
    if (nparams != expected) {
      status = GIMP_PDB_CALLING_ERROR;
      error = g_strdup_printf("%s takes %d arguments, not %d", name, expected, nparams);
      break;
    }
    job.prompt = param[3].data.d_string ? param[3].data.d_string : "";
    job.negative = param[4].data.d_string ? param[4].data.d_string : "";
    job.seed = param[5].data.d_int32;
    job.steps = param[6].data.d_int32;
    job.guidance = param[7].data.d_float;
    job.models = param[8].data.d_string ? param[8].data.d_string : "";
    job.strength = op == OP_GENERATE ? 1.0 : param[9].data.d_float;
    break;
  default:
    status = GIMP_PDB_CALLING_ERROR;
    error = g_strdup_printf("%s: unknown run mode %d", name, run_mode);
    break;
  }

  if (status == GIMP_PDB_SUCCESS) {
    if (run_job(op, image, drawable, &job, &new_layer, &error)) {
      if (run_mode != GIMP_RUN_NONINTERACTIVE) gimp_displays_flush();
      if (run_mode == GIMP_RUN_INTERACTIVE) gimp_set_data(name, &vals, sizeof vals);
    } else {
      status = GIMP_PDB_EXECUTION_ERROR;
    }
  }

  values[0].data.d_status = status;
  if (status == GIMP_PDB_SUCCESS) {
    if (op == OP_GENERATE) {
      *nreturn_vals = 2;
      values[1].type = GIMP_PDB_LAYER;
      values[1].data.d_layer = new_layer;
    }
  } else if (error) {
    /* No gimp_message: GIMP itself shows the returned string (from the menus: "Execution error for
     * 'Generate from prompt...'", from a script: "Calling error for procedure ..." unless the caller
     * handles errors itself, Script-Fu's error then carrying it), so a message would show it twice. */
    g_free(error_message);
    error_message = error;
    *nreturn_vals = 2;
    values[1].type = GIMP_PDB_STRING;
    values[1].data.d_string = error_message;
  }
}
