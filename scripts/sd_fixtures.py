#!/usr/bin/env python3
"""Build mirage's tiny Stable-Diffusion-family ONNX fixtures and diffusers' reference outputs.

What it makes (everything under tests/fixtures/sd/, see the README.md there):

  sd15/        SD-1.5-shaped folder in the layout Hugging Face optimum exports (model_index.json,
               scheduler/, tokenizer/, text_encoder/, unet/, vae_encoder/, vae_decoder/, each model
               folder with model.onnx + config.json), with TINY random weights (fixed torch seeds)
               but the real architectures (CLIPTextModel, UNet2DConditionModel, AutoencoderKL),
               SD 1.5's real scheduler_config.json (PNDM) and a CLIP tokenizer made from the
               original CLIP BPE file.
  sd21-v/      SD-2.1-shaped: pad token "!" (id 0), EulerAncestral with v_prediction.
  turbo/       SD-Turbo-shaped: the sd21-v models (same files), Euler with "trailing" spacing.
  sd15-fp16/   sd15's models in float16 (weights and every float graph input/output, the timestep too),
               exported from the half-precision torch modules as `optimum-cli export onnx --dtype fp16` does.
  lcm/         LCM-distilled SD-1.5-shaped: sd15's tokenizer, text encoder and VAE (the same files), a U-Net
               with time_cond_proj_dim 32 (extra ONNX input timestep_cond [batch_size, 32], the guidance-scale
               embedding), LCM_Dreamshaper_v7's LCMScheduler config, LatentConsistencyModelPipeline's
               model_index.json.
  reference/   tokens.json, embeddings.json (+ .npy), schedulers.json, pipelines.json (+ .npy/.png).

The CLIP vocabulary: no model hub is reachable, so the original CLIP BPE merges file
(bpe_simple_vocab_16e6.txt.gz) is taken from the PyPI wheel of open-clip-torch (downloaded with
`pip download --no-deps` unless --clip-bpe points at it) and turned into vocab.json + merges.txt the
way Hugging Face's CLIP tokenizer files are built.

Exporter: torch.onnx.export (TorchScript exporter, opset 18) into exactly optimum's names, dtypes and
dynamic axes (optimum-onnx 0.1.0 pins transformers<4.58 / huggingface-hub<1, which diffusers 0.42.1
cannot import with). References: diffusers' own StableDiffusionPipeline / StableDiffusionImg2ImgPipeline
(LatentConsistencyModelPipeline for lcm/) whose text_encoder / unet / vae are replaced by ONNX Runtime
sessions of the exported files, wrapped the way optimum's ORTDiffusionPipeline wraps them (inputs cast to
the session's dtypes, outputs to torch); every case is also run with the PyTorch modules and the
differences are printed and stored. (Checked once in a second venv with optimum-onnx 0.1.0 + diffusers
0.36.0 + transformers 4.57.6: its exporter gives the same interfaces and numbers, and its
ORTStableDiffusion(Img2Img)Pipeline / ORTLatentConsistencyModelPipeline loaded from these folders
reproduces every pipelines.json reference bit for bit; see the README.)

Environment (CPython 3.11; run from the repository root; nothing of it goes in the repo):

  python3 -m venv /work/sdref-venv
  W=.deps/wheels   # scripts/setup.sh torch / ort leave these wheels there
  /work/sdref-venv/bin/pip install $W/torch-2.11.0-cp311-cp311-manylinux_2_28_x86_64.whl
      # with its dependencies: the CUDA build's libtorch needs cudnn/cublas/... even on CPU (about 4.5 GB)
  /work/sdref-venv/bin/pip install diffusers==0.42.1 transformers==5.23.0 onnx==1.23.2 \
      $W/onnxruntime-1.31.1-cp311-cp311-manylinux_2_28_x86_64.whl onnxscript numpy pillow ftfy regex
      # (ftfy + regex only for the report-only cross-check with the original CLIP tokenizer)
  /work/sdref-venv/bin/python scripts/sd_fixtures.py            # everything
  /work/sdref-venv/bin/python scripts/sd_fixtures.py --only tokens,schedulers   # the cheap parts

Stages (--only, comma separated): tokens, schedulers, models, embeddings, pipelines. embeddings and
pipelines read the torch weights that models leaves in --work (default /tmp/sdref-work).
Run time: about 30 seconds on 2 CPU cores (plus the venv: about 2 minutes of pip); every output is
byte-for-byte the same on a rerun.
Run once by hand, not by CI.
"""

from __future__ import annotations

import argparse
import copy
import gzip
import hashlib
import inspect
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "fixtures" / "sd"
REF = OUT / "reference"

OPSET = 18
MAX_LEN = 77
IMAGE = 64  # image size of every folder: unet sample_size 8 * vae_scale_factor 8

# ----------------------------------------------------------------------------------------------
# scheduler configs of the folders (as the real repos ship them)

SD15_SCHEDULER = {
    "_class_name": "PNDMScheduler",
    "_diffusers_version": "0.6.0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
    "clip_sample": False,
}

# stabilityai/stable-diffusion-2-1's scheduler config (a DDIM one there, no timestep_spacing key, so
# each class's default applies), with the class switched to EulerAncestral as the brief asks.
SD21V_SCHEDULER = {
    "_class_name": "EulerAncestralDiscreteScheduler",
    "_diffusers_version": "0.10.0.dev0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}

# stabilityai/sd-turbo's scheduler config.
TURBO_SCHEDULER = {
    "_class_name": "EulerDiscreteScheduler",
    "_diffusers_version": "0.24.0.dev0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "sample_max_value": 1.0,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "trailing",
    "trained_betas": None,
    "use_karras_sigmas": False,
}

# SimianLuo/LCM_Dreamshaper_v7's scheduler config (an LCM-distilled SD 1.5 model), as remembered (no hub
# access here to re-check it); only LCMScheduler's own keys matter to the sampling.
LCM_SCHEDULER = {
    "_class_name": "LCMScheduler",
    "_diffusers_version": "0.22.0.dev0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "clip_sample_range": 1.0,
    "dynamic_thresholding_ratio": 0.995,
    "num_train_timesteps": 1000,
    "original_inference_steps": 50,
    "prediction_type": "epsilon",
    "rescale_betas_zero_snr": False,
    "sample_max_value": 1.0,
    "set_alpha_to_one": True,
    "steps_offset": 1,
    "thresholding": False,
    "timestep_scaling": 10.0,
    "timestep_spacing": "leading",
    "trained_betas": None,
}

FOLDER_SCHEDULER = {"sd15": SD15_SCHEDULER, "sd15-fp16": SD15_SCHEDULER, "sd21-v": SD21V_SCHEDULER,
                    "turbo": TURBO_SCHEDULER, "lcm": LCM_SCHEDULER}

# mirage sampler name -> (diffusers class name, from_config overrides)
SAMPLERS = {
    "ddim": ("DDIMScheduler", {}),
    "pndm": ("PNDMScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler-a": ("EulerAncestralDiscreteScheduler", {}),
    "dpm++2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpm++2m-karras": ("DPMSolverMultistepScheduler",
                       {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True}),
    "lcm": ("LCMScheduler", {}),
}

SCHEDULER_RULE = ("scheduler = Class.from_config(FolderClass.from_config(base_config).config, **overrides) "
                  "where FolderClass = diffusers.<base_config['_class_name']>, Class = the sampler's class, "
                  "overrides = the sampler's from_config keyword arguments (dpm++2m: algorithm_type='dpmsolver++', "
                  "solver_order=2; dpm++2m-karras: the same plus use_karras_sigmas=True). What carries over: the "
                  "keys written in base_config only. FolderClass fills the keys absent from the file with its own "
                  "defaults but lists them in config['_use_default_values'], and from_config drops those, so the "
                  "new class applies ITS defaults to them (e.g. sd15's PNDM config has no timestep_spacing: PNDM "
                  "uses 'leading', but Euler made from it uses Euler's default 'linspace', DDIM 'leading', "
                  "DPM-Solver 'linspace', LCM 'leading'). Each case's 'config' is the resulting scheduler config.")

# ----------------------------------------------------------------------------------------------
# prompts

PROMPTS = [
    "",
    "a photo of an astronaut riding a horse on mars",
    "A PHOTO OF AN ASTRONAUT RIDING A HORSE ON MARS",
    "ALL CAPS with MiXeD CaSe",
    "Hello, world! How are you?",
    "a.b,c!d?",
    "...!!!???",
    "1234567890 and 3.14159 and 2024-01-01",
    "it's a dog, don't you think? they're we've I'm you'll he'd",
    "  lots   of\tspaces\t\tand\nnew\n\nlines  ",
    "tab\tseparated\tvalues",
    "café naïve résumé Ångström",
    "combining accent: cafe\u0301 and precomposed caf\u00e9",
    "东京的夜景，非常美丽",
    "日本語のテキスト と 한국어",
    "a cat 🐱 with a hat 🎩🎉",
    "emoji family 👨\u200d👩\u200d👧\u200d👦 and flag 🇺🇸",
    "before <|endoftext|> after",
    "<|startoftext|>literal start",
    "<b>bold</b> &amp; <i>italic</i> &lt;tag&gt;",
    "masterpiece, best quality, (highly detailed:1.2), [ugly], {bad}",
    "hyphen-ated words, under_scores and slashes/back\\slashes",
    "quotes \u201ccurly\u201d and \u2018single\u2019 and \"straight\"",
    "\ufb01 ligature and full-width \uff21\uff22\uff23\uff11\uff12\uff13",
    ("a highly detailed oil painting of a majestic castle on a hill at sunset, surrounded by a lush forest, "
     "with a winding river, small boats, flying birds, dramatic clouds, golden light, by a famous old master, "
     "trending on artstation, 8k, ultra realistic, cinematic lighting, volumetric fog, intricate details, "
     "sharp focus, award winning photograph, wide angle lens, depth of field"),
]

EMBED_PROMPTS = ["", "a photo of an astronaut riding a horse on mars", "a red cube on a blue sphere, café 🐱"]

# ----------------------------------------------------------------------------------------------
# helpers


def log(*a):
    print(*a, flush=True)


def write_json(path: Path, obj, indent=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=indent)
        f.write("\n")


def flist(t) -> list:
    """float32 tensor/array -> list of Python floats (exact float32 values)."""
    import torch

    if isinstance(t, torch.Tensor):
        t = t.detach().to(torch.float32).cpu().numpy()
    return [float(v) for v in np.asarray(t, dtype=np.float32).reshape(-1)]


def jsonable(v):
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, np.ndarray):
        return jsonable(v.tolist())
    return v


def config_json(config) -> dict:
    """A scheduler config as JSON; '_use_default_values' is built from a set, so it is sorted here."""
    c = jsonable(dict(config))
    if "_use_default_values" in c:
        c["_use_default_values"] = sorted(c["_use_default_values"])
    return c


# ----------------------------------------------------------------------------------------------
# CLIP tokenizer files


def bytes_to_unicode():
    """The byte -> unicode table of CLIP/GPT-2 byte-level BPE, in CLIP's order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def find_clip_bpe(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    cache = Path(tempfile.gettempdir()) / "sdref-clip-bpe"
    target = cache / "bpe_simple_vocab_16e6.txt.gz"
    if target.is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    log("downloading open-clip-torch==3.3.0 (no deps) from PyPI for its CLIP BPE file")
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "open-clip-torch==3.3.0", "-d",
                    str(cache)], check=True)
    import zipfile

    whl = next(cache.glob("open_clip_torch-*.whl"))
    with zipfile.ZipFile(whl) as z:
        target.write_bytes(z.read("open_clip/bpe_simple_vocab_16e6.txt.gz"))
    return target


def clip_vocab_and_merges(bpe_gz: Path):
    lines = gzip.open(bpe_gz).read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]  # as CLIP's SimpleTokenizer: 48894 merges
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    for m in merges:
        vocab.append("".join(m.split()))
    vocab.extend(["<|startoftext|>", "<|endoftext|>"])
    assert len(vocab) == 49408, len(vocab)
    assert len(set(vocab)) == 49408
    return {t: i for i, t in enumerate(vocab)}, merges


def write_tokenizer_folder(d: Path, vocab: dict, merges: list, pad: str):
    d.mkdir(parents=True, exist_ok=True)
    with open(d / "vocab.json", "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(d / "merges.txt", "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for m in merges:
            f.write(m + "\n")
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": pad,
               "unk_token": "<|endoftext|>"}
    write_json(d / "special_tokens_map.json", special, indent=2)
    cfg = {"add_prefix_space": False, "do_lower_case": True, "errors": "replace", "model_max_length": MAX_LEN,
           "tokenizer_class": "CLIPTokenizer", **special}
    write_json(d / "tokenizer_config.json", cfg, indent=2)


def build_tokenizers(work: Path, bpe: Path):
    """Writes work/tok-sd15 and work/tok-sd21 and returns {'sd15': tok, 'sd21-v': tok}."""
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocab_and_merges(bpe)
    out = {}
    for key, pad in (("sd15", "<|endoftext|>"), ("sd21-v", "!")):
        d = work / f"tok-{key}"
        write_tokenizer_folder(d, vocab, merges, pad)
        tok = CLIPTokenizer.from_pretrained(str(d))
        assert tok.model_max_length == MAX_LEN
        out[key] = (d, tok)
    assert out["sd15"][1].pad_token_id == 49407 and out["sd21-v"][1].pad_token_id == 0
    return out


def sd_tokenize(tok, prompts):
    """As StableDiffusionPipeline.encode_prompt tokenizes."""
    return tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True,
               return_tensors="np").input_ids.astype(np.int64)


def stage_tokens(args, work):
    from transformers import CLIPTokenizerFast

    bpe = find_clip_bpe(args.clip_bpe)
    log(f"CLIP BPE: {bpe} sha256={hashlib.sha256(bpe.read_bytes()).hexdigest()}")
    toks = build_tokenizers(work, bpe)
    result = {}
    for key, (d, tok) in toks.items():
        ids = sd_tokenize(tok, PROMPTS)
        fast = CLIPTokenizerFast.from_pretrained(str(d))
        ids_fast = sd_tokenize(fast, PROMPTS)
        assert (ids == ids_fast).all(), "CLIPTokenizerFast differs"
        assert ids.shape == (len(PROMPTS), MAX_LEN)
        result[key] = {"prompts": PROMPTS, "ids": ids.tolist(), "pad_id": int(tok.pad_token_id),
                       "bos_id": int(tok.bos_token_id), "eos_id": int(tok.eos_token_id), "max_length": MAX_LEN,
                       "tokenizer": f"transformers {type(tok).__name__} from tokenizer/vocab.json + merges.txt, "
                                    "padding='max_length', max_length=77, truncation=True"}
    write_json(REF / "tokens.json", result)
    log(f"wrote {REF / 'tokens.json'} ({len(PROMPTS)} prompts)")
    # Cross-check with the original CLIP tokenizer (open_clip's SimpleTokenizer: ftfy + html.unescape +
    # whitespace clean + lower); only reported, the references are what diffusers/transformers do.
    try:
        import importlib.util
        import zipfile

        cache = bpe.parent
        whl = next(cache.glob("open_clip_torch-*.whl"), None)
        if whl is not None:
            with zipfile.ZipFile(whl) as z:
                src = z.read("open_clip/tokenizer.py").decode()
            p = work / "oc_tokenizer.py"
            p.write_text(src)
            shutil.copy(bpe, work / bpe.name)  # its default bpe path, evaluated at import
            spec = importlib.util.spec_from_file_location("oc_tokenizer", p)
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            st = mod.SimpleTokenizer(str(bpe))
            for i, prompt in enumerate(PROMPTS):
                a = [49406] + st.encode(prompt)[:75] + [49407]
                b = [x for x in result["sd15"]["ids"][i]]
                b = b[: b.index(49407) + 1] if prompt != "before <|endoftext|> after" else b
                if a != b[: len(a)]:
                    log(f"  note: original CLIP tokenizer differs on prompt {i} {prompt!r}:\n    clip={a}\n    hf  ={b[:len(a)+2]}")
    except Exception as e:  # noqa: BLE001
        log(f"  (skipped original-CLIP cross-check: {e})")
    return toks


# ----------------------------------------------------------------------------------------------
# schedulers


def sched_class(name):
    import diffusers

    return getattr(diffusers, name)


def make_scheduler(base_config: dict, sampler: str | None):
    folder_cls = sched_class(base_config["_class_name"])
    folder = folder_cls.from_config(base_config)
    if sampler is None or sampler == "auto":
        return folder
    cls_name, over = SAMPLERS[sampler]
    return sched_class(cls_name).from_config(folder.config, **over)


class NoiseRecorder:
    """Monkeypatches randn_tensor in the given modules and records what it returns, in order."""

    def __init__(self, *modules):
        self.modules = [m if not isinstance(m, str) else sys.modules[m] for m in modules]
        self.draws = {id(m): [] for m in self.modules}
        self.all = []

    def __enter__(self):
        self.saved = []
        for m in self.modules:
            if not hasattr(m, "randn_tensor"):  # this scheduler never draws noise
                continue
            orig = m.randn_tensor
            self.saved.append((m, orig))

            def rec(*a, _orig=orig, _m=m, **k):
                t = _orig(*a, **k)
                self.draws[id(_m)].append(t.detach().clone())
                self.all.append(t.detach().clone())
                return t

            m.randn_tensor = rec
        return self

    def __exit__(self, *exc):
        for m, orig in self.saved:
            m.randn_tensor = orig

    def of(self, module):
        module = sys.modules[module] if isinstance(module, str) else module
        return self.draws[id(module)]


class _FakePipe:
    def __init__(self, scheduler):
        self.scheduler = scheduler


def img2img_timesteps(scheduler, steps, strength):
    """diffusers' StableDiffusionImg2ImgPipeline.get_timesteps, run on the scheduler itself."""
    from diffusers import StableDiffusionImg2ImgPipeline

    return StableDiffusionImg2ImgPipeline.get_timesteps(_FakePipe(scheduler), steps, strength, "cpu")


def synthetic_model(m, level):
    import torch

    i = torch.arange(m.numel(), dtype=torch.float32)
    lv = torch.tensor(level, dtype=torch.float32)
    return (torch.tensor(0.5, dtype=torch.float32) * m.reshape(-1).to(torch.float32)
            + torch.tensor(0.1, dtype=torch.float32) * torch.cos(lv * torch.tensor(0.01, dtype=torch.float32) + i)
            ).reshape(m.shape)


def run_scheduler_case(name, base_config, sampler, steps, strength=1.0, eta=None, seed=0):
    import torch

    sch = make_scheduler(base_config, sampler)
    sch.set_timesteps(steps, device="cpu")
    all_timesteps = sch.timesteps.clone()
    if strength < 1.0:
        timesteps, _ = img2img_timesteps(sch, steps, strength)
    else:
        timesteps = sch.timesteps
    x = torch.from_numpy(np.random.RandomState(0).standard_normal((2, 4, 2, 2)).astype(np.float32))
    case = {
        "name": name,
        "base_config": base_config,
        "class": type(sch).__name__,
        "sampler": sampler,
        "steps": steps,
        "strength": strength,
        "eta": eta,
        "seed": seed,
        "config": config_json(sch.config),
        "order": int(sch.order),
        "timestep_dtype": str(timesteps.dtype).replace("torch.", ""),
        "all_timesteps": [float(v) for v in all_timesteps.tolist()],
        "timesteps": [float(v) for v in timesteps.tolist()],
        "init_noise_sigma": float(sch.init_noise_sigma),
    }
    if hasattr(sch, "sigmas") and sch.sigmas is not None:
        case["sigmas"] = [float(v) for v in sch.sigmas.to(torch.float32).tolist()]
    if strength < 1.0:
        x0 = torch.from_numpy(np.random.RandomState(1).standard_normal((2, 4, 2, 2)).astype(np.float32))
        eps = torch.from_numpy(np.random.RandomState(2).standard_normal((2, 4, 2, 2)).astype(np.float32))
        noised = sch.add_noise(x0, eps, timesteps[:1].repeat(x0.shape[0]))
        case["x0"], case["eps"], case["noised"] = flist(x0), flist(eps), flist(noised)
        sample = noised
    else:
        sample = x * sch.init_noise_sigma
    case["start"] = flist(sample)
    gen = torch.Generator().manual_seed(seed)
    step_params = inspect.signature(sch.step).parameters
    kw = {}
    if "eta" in step_params:
        kw["eta"] = 0.0 if eta is None else eta
    if "generator" in step_params:
        kw["generator"] = gen
    steps_out = []
    with NoiseRecorder(type(sch).__module__) as rec:
        for t in timesteps:
            m = sch.scale_model_input(sample, t)
            level = float(t)
            out = synthetic_model(m, level)
            prev = sch.step(out, t, sample, **kw).prev_sample
            steps_out.append({"level": level, "model_input": flist(m), "out": flist(out), "prev": flist(prev)})
            sample = prev
    case["steps_data"] = steps_out
    case["noise"] = [v for d in rec.all for v in flist(d)]
    case["noise_draws"] = len(rec.all)
    case["final"] = flist(sample)
    return case


def stage_schedulers(args, work):
    import diffusers

    cases = []
    names = ["ddim", "pndm", "euler", "euler-a", "dpm++2m", "dpm++2m-karras", "lcm"]
    for s in names:
        cases.append(run_scheduler_case(f"sd15-{s}-8", SD15_SCHEDULER, s, 8))
    for s in names:
        cases.append(run_scheduler_case(f"sd15-{s}-8-img2img-0.6", SD15_SCHEDULER, s, 8, strength=0.6))
    for s in ["ddim", "euler", "euler-a", "dpm++2m"]:
        cases.append(run_scheduler_case(f"sd21v-{s}-8", SD21V_SCHEDULER, s, 8))
    cases.append(run_scheduler_case("sd21v-auto-8", SD21V_SCHEDULER, "euler-a", 8))
    for n in (1, 2, 4):
        cases.append(run_scheduler_case(f"turbo-euler-{n}", TURBO_SCHEDULER, "euler", n))
    cases.append(run_scheduler_case("sd15-ddim-8-eta1", SD15_SCHEDULER, "ddim", 8, eta=1.0, seed=7))
    cases.append(run_scheduler_case("sd15-ddim-8-img2img-0.6-eta1", SD15_SCHEDULER, "ddim", 8, strength=0.6,
                                    eta=1.0, seed=8))
    for n in (1, 2):
        cases.append(run_scheduler_case(f"sd15-pndm-{n}", SD15_SCHEDULER, "pndm", n))
    for n in (1, 2, 3):
        cases.append(run_scheduler_case(f"sd15-dpm++2m-{n}", SD15_SCHEDULER, "dpm++2m", n))
    for n in (1, 4):
        cases.append(run_scheduler_case(f"sd15-lcm-{n}", SD15_SCHEDULER, "lcm", n))
    x = np.random.RandomState(0).standard_normal((2, 4, 2, 2)).astype(np.float32)
    doc = {
        "about": "diffusers scheduler parity data (no models). Per case: set_timesteps(steps); for strength < 1 "
                 "the timesteps are sliced as StableDiffusionImg2ImgPipeline.get_timesteps does (t_start = steps - "
                 "min(int(steps*strength), steps); timesteps[t_start*order:]; set_begin_index(t_start*order)) and "
                 "the start sample is 'noised' = add_noise(x0, eps, timesteps[:1]); for strength 1 the start is "
                 "x * init_noise_sigma (init_noise_sigma read after set_timesteps). Then per timestep t: "
                 "model_input = scale_model_input(sample, t); out = model(model_input, level=float(t)); "
                 "prev = step(out, t, sample, eta=eta (schedulers whose step takes eta; 0.0 unless the case says), "
                 "generator=torch.Generator().manual_seed(seed)).prev_sample. 'noise' = every randn_tensor draw "
                 "of the scheduler module during the steps, flattened in order (noise_draws = how many calls).",
        "diffusers_version": diffusers.__version__,
        "shape": [2, 4, 2, 2],
        "x": flist(x),
        "x_source": "numpy.random.RandomState(0).standard_normal((2,4,2,2)).astype(float32); x0: RandomState(1), "
                    "eps: RandomState(2), same shape",
        "model": "out[i] = 0.5 * m[i] + 0.1 * cos(level * 0.01 + i), float32 torch, m = scale_model_input(sample, t) "
                 "flattened (C order), i = 0..31 as float32, level = float(t)",
        "scheduler_rule": SCHEDULER_RULE,
        "samplers": {k: {"class": v[0], "overrides": v[1]} for k, v in SAMPLERS.items()},
        "cases": cases,
    }
    write_json(REF / "schedulers.json", doc)
    log(f"wrote {REF / 'schedulers.json'} ({len(cases)} cases)")


# ----------------------------------------------------------------------------------------------
# models

TEXT = dict(vocab_size=49408, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
            max_position_embeddings=77, layer_norm_eps=1e-5, projection_dim=16,
            bos_token_id=0, eos_token_id=2, pad_token_id=1)  # the ids SD 1.5/2.1's text_encoder configs carry

UNET = dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), norm_num_groups=8, cross_attention_dim=16)

VAE = dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
           up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8, 8, 16, 16), layers_per_block=1,
           latent_channels=4, norm_num_groups=4, sample_size=IMAGE, scaling_factor=0.18215)

FLAVOURS = {
    # SD 1.5: CLIP ViT-L/14 text tower (quick_gelu), attention_head_dim = number of heads (8 in SD 1.5)
    "sd15": dict(seed=1500, text=dict(hidden_act="quick_gelu"), unet=dict(attention_head_dim=2)),
    # SD 2.1: OpenCLIP ViT-H text tower (gelu), linear projections, upcast attention, head dim 8 everywhere
    "sd21-v": dict(seed=2100, text=dict(hidden_act="gelu"),
                   unet=dict(attention_head_dim=(2, 4), use_linear_projection=True, upcast_attention=True)),
    # LCM-distilled SD 1.5 (LCM_Dreamshaper_v7's U-Net has time_cond_proj_dim 256): sd15's text encoder and
    # VAE (same seeds, so the same weights), a U-Net of sd15's sizes plus the guidance-embedding projection
    "lcm": dict(seed=1500, unet_seed=1503, text=dict(hidden_act="quick_gelu"),
                unet=dict(attention_head_dim=2, time_cond_proj_dim=32)),
}


def build_torch_models(flavour: str):
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    f = FLAVOURS[flavour]
    torch.manual_seed(f["seed"])
    tcfg = CLIPTextConfig(**TEXT, **f["text"])
    tcfg._attn_implementation = "eager"
    text = CLIPTextModel(tcfg).eval()
    if hasattr(text, "set_attn_implementation"):
        text.set_attn_implementation("eager")
    assert text.config._attn_implementation == "eager", text.config._attn_implementation
    torch.manual_seed(f.get("unet_seed", f["seed"] + 1))
    unet = UNet2DConditionModel(**UNET, **f["unet"]).eval()
    torch.manual_seed(f["seed"] + 2)
    vae = AutoencoderKL(**VAE).eval()
    with torch.no_grad():
        # random init leaves the token/position embeddings at std 0.02 and the decoder's output near 0:
        # widen them so the fixtures' outputs carry signal (pictures that are not flat grey)
        emb = getattr(text, "text_model", text).embeddings  # transformers 5 dropped the .text_model level
        emb.token_embedding.weight.mul_(25.0)
        emb.position_embedding.weight.mul_(25.0)
        unet.conv_out.weight.mul_(3.0)
        vae.decoder.conv_out.weight.mul_(1.2)
    return text, unet, vae


def export_onnx(model, args, path: Path, input_names, output_names, dynamic_axes):
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(model, args, str(path), input_names=input_names, output_names=output_names,
                          dynamic_axes=dynamic_axes, opset_version=OPSET, do_constant_folding=True, dynamo=False)
    import onnx

    m = onnx.load(str(path))
    onnx.checker.check_model(m)
    # keep weights inline (tiny models), a single model.onnx per folder as optimum writes it
    onnx.save(m, str(path))


def export_models(d: Path, text, unet, vae, dtype):
    """Exports the four ONNX models of a folder as optimum's exporter does (names, dtypes, dynamic axes).
    dtype: torch.float32 or torch.float16 (optimum's --dtype fp16: the torch modules are cast to half and
    every float input/output of the graphs is float16, the timestep included)."""
    import torch

    class TextEnc(torch.nn.Module):  # optimum's "clip-text": input_ids -> last_hidden_state, pooler_output
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids):
            o = self.m(input_ids=input_ids, return_dict=True)
            return o.last_hidden_state, o.pooler_output

    class UnetExp(torch.nn.Module):  # optimum's "unet-2d-condition"
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, sample, timestep, encoder_hidden_states):
            return self.m(sample, timestep, encoder_hidden_states=encoder_hidden_states, return_dict=False)[0]

    class VaeEnc(torch.nn.Module):  # optimum's "vae-encoder": mean and logvar concatenated on channels
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, sample):
            return self.m.encode(sample).latent_dist.parameters

    class VaeDec(torch.nn.Module):  # optimum's "vae-decoder": post_quant_conv + decoder
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, latent_sample):
            return self.m.decode(latent_sample, return_dict=False)[0]

    text, unet, vae = (copy.deepcopy(m).to(dtype) for m in (text, unet, vae))
    # the input ids of the dummy: two different lengths of prompt, eos = the highest id as in real prompts
    ids = torch.tensor([[49406, 320, 1125, 49407] + [49407] * 73, [49406, 49407] + [0] * 75], dtype=torch.int64)
    export_onnx(TextEnc(text), (ids,), d / "text_encoder" / "model.onnx", ["input_ids"],
                ["last_hidden_state", "pooler_output"],
                {"input_ids": {0: "batch_size", 1: "sequence_length"},
                 "last_hidden_state": {0: "batch_size", 1: "sequence_length"},
                 "pooler_output": {0: "batch_size"}})
    W = text.config.hidden_size
    g = torch.Generator().manual_seed(0)
    export_onnx(UnetExp(unet), (torch.randn(2, 4, 8, 8, generator=g).to(dtype), torch.tensor(981.0, dtype=dtype),
                                torch.randn(2, MAX_LEN, W, generator=g).to(dtype)),
                d / "unet" / "model.onnx", ["sample", "timestep", "encoder_hidden_states"], ["out_sample"],
                {"sample": {0: "batch_size", 2: "height", 3: "width"},
                 "encoder_hidden_states": {0: "batch_size", 1: "sequence_length"},
                 "out_sample": {0: "batch_size", 2: "height", 3: "width"}})
    f = 2 ** (len(vae.config.block_out_channels) - 1)
    export_onnx(VaeEnc(vae), (torch.randn(1, 3, IMAGE, IMAGE, generator=g).to(dtype),),
                d / "vae_encoder" / "model.onnx", ["sample"], ["latent_parameters"],
                {"sample": {0: "batch_size", 2: "sample_height", 3: "sample_width"},
                 "latent_parameters": {0: "batch_size", 2: f"sample_height / {f}", 3: f"sample_width / {f}"}})
    export_onnx(VaeDec(vae), (torch.randn(1, 4, IMAGE // f, IMAGE // f, generator=g).to(dtype),),
                d / "vae_decoder" / "model.onnx", ["latent_sample"], ["sample"],
                {"latent_sample": {0: "batch_size", 2: "latent_height", 3: "latent_width"},
                 "sample": {0: "batch_size", 2: f"latent_height * {f}", 3: f"latent_width * {f}"}})


def export_lcm_unet(d: Path, unet):
    """An LCM-distilled U-Net as optimum's "unet-2d-condition" config exports it when the U-Net config has
    time_cond_proj_dim: the inputs ordered by UNet2DConditionModel.forward's signature, so timestep_cond
    (dynamic axes {0: "batch_size"}) comes after encoder_hidden_states."""
    import torch

    class LcmUnetExp(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, sample, timestep, encoder_hidden_states, timestep_cond):
            return self.m(sample, timestep, encoder_hidden_states=encoder_hidden_states, timestep_cond=timestep_cond,
                          return_dict=False)[0]

    unet = copy.deepcopy(unet)
    g = torch.Generator().manual_seed(0)
    dummy = (torch.randn(2, 4, 8, 8, generator=g), torch.tensor(981.0),
             torch.randn(2, MAX_LEN, TEXT["hidden_size"], generator=g),
             torch.randn(2, unet.config.time_cond_proj_dim, generator=g))
    export_onnx(LcmUnetExp(unet), dummy, d / "unet" / "model.onnx",
                ["sample", "timestep", "encoder_hidden_states", "timestep_cond"], ["out_sample"],
                {"sample": {0: "batch_size", 2: "height", 3: "width"},
                 "encoder_hidden_states": {0: "batch_size", 1: "sequence_length"},
                 "timestep_cond": {0: "batch_size"},
                 "out_sample": {0: "batch_size", 2: "height", 3: "width"}})


def stage_models(args, work):
    import torch
    from diffusers import StableDiffusionPipeline

    bpe = find_clip_bpe(args.clip_bpe)
    toks = build_tokenizers(work, bpe)
    for flavour in ("sd15", "sd21-v"):
        text, unet, vae = build_torch_models(flavour)
        d = OUT / flavour
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        tok_dir, tok = toks[flavour]
        shutil.copytree(tok_dir, d / "tokenizer")
        sched = make_scheduler(FOLDER_SCHEDULER[flavour], None)
        pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet, scheduler=sched,
                                       safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        pipe.save_config(str(d))  # model_index.json, as optimum's exporter writes it (the diffusers pipeline's)
        (d / "scheduler").mkdir()
        write_json(d / "scheduler" / "scheduler_config.json", FOLDER_SCHEDULER[flavour], indent=2)
        export_models(d, text, unet, vae, torch.float32)
        # the configs optimum saves next to each model.onnx
        text.config.architectures = ["CLIPTextModel"]
        text.config.export_model_type = "clip-text"
        text.config.save_pretrained(str(d / "text_encoder"))
        unet.save_config(str(d / "unet"))
        vae.save_config(str(d / "vae_encoder"))
        vae.save_config(str(d / "vae_decoder"))
        torch.save({"text": text.state_dict(), "unet": unet.state_dict(), "vae": vae.state_dict()},
                   work / f"torch-{flavour}.pt")
        log(f"exported {d}")
        if flavour == "sd15":
            # sd15-fp16: the same models, configs and tokenizer, exported from the half-precision modules
            d16 = OUT / "sd15-fp16"
            if d16.exists():
                shutil.rmtree(d16)
            shutil.copytree(d, d16)
            export_models(d16, text, unet, vae, torch.float16)
            p = d16 / "text_encoder" / "config.json"
            c = json.loads(p.read_text())
            c["dtype"] = "float16"
            write_json(p, c, indent=2)
            log(f"exported {d16}")

    # turbo: the sd21-v models and tokenizer (the same files), SD-Turbo's scheduler
    d = OUT / "turbo"
    if d.exists():
        shutil.rmtree(d)
    shutil.copytree(OUT / "sd21-v", d)
    write_json(d / "scheduler" / "scheduler_config.json", TURBO_SCHEDULER, indent=2)
    mi = json.loads((d / "model_index.json").read_text())
    mi["scheduler"] = ["diffusers", "EulerDiscreteScheduler"]
    write_json(d / "model_index.json", mi, indent=2)
    log(f"wrote {d}")

    # lcm: sd15's tokenizer, text encoder and VAE (the same files), an LCM U-Net, LCM_Dreamshaper_v7's scheduler
    from diffusers import LatentConsistencyModelPipeline

    text, unet, vae = build_torch_models("lcm")
    sd15 = torch.load(work / "torch-sd15.pt")
    for part, m in (("text", text), ("vae", vae)):  # same seeds and configs as sd15: the same weights
        assert all(torch.equal(v, sd15[part][k]) for k, v in m.state_dict().items()), part
    d = OUT / "lcm"
    if d.exists():
        shutil.rmtree(d)
    shutil.copytree(OUT / "sd15", d)
    shutil.rmtree(d / "unet")
    sched = make_scheduler(LCM_SCHEDULER, None)
    pipe = LatentConsistencyModelPipeline(vae=vae, text_encoder=text, tokenizer=toks["sd15"][1], unet=unet,
                                          scheduler=sched, safety_checker=None, feature_extractor=None,
                                          requires_safety_checker=False)
    pipe.save_config(str(d))
    write_json(d / "scheduler" / "scheduler_config.json", LCM_SCHEDULER, indent=2)
    export_lcm_unet(d, unet)
    unet.save_config(str(d / "unet"))
    torch.save({"text": text.state_dict(), "unet": unet.state_dict(), "vae": vae.state_dict()}, work / "torch-lcm.pt")
    log(f"exported {d}")
    describe_models()


def ort_session(path: Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def describe_models():
    info = {}
    for folder in ("sd15", "sd21-v", "turbo", "sd15-fp16", "lcm"):
        for part in ("text_encoder", "unet", "vae_encoder", "vae_decoder"):
            s = ort_session(OUT / folder / part / "model.onnx")
            info[f"{folder}/{part}"] = {
                "inputs": [(i.name, i.type, i.shape) for i in s.get_inputs()],
                "outputs": [(o.name, o.type, o.shape) for o in s.get_outputs()],
                "bytes": (OUT / folder / part / "model.onnx").stat().st_size,
            }
    for k, v in info.items():
        log(f"  {k}: {v}")
    return info


# ----------------------------------------------------------------------------------------------
# ONNX Runtime components, wrapped as optimum's ORTDiffusionPipeline wraps them


def _np_dtype(ort_type: str):
    return {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
            "tensor(int32)": np.int32, "tensor(double)": np.float64}[ort_type]


class OrtPart:
    """Shared part of the wrappers: cast inputs to the session's dtypes (optimum's _prepare_onnx_inputs),
    return outputs as torch tensors (optimum's _prepare_onnx_outputs)."""

    def _setup(self, path: Path, config):
        import torch

        self.session = ort_session(path)
        self.config = config
        self.input_dtypes = {i.name: i.type for i in self.session.get_inputs()}
        self.output_names = [o.name for o in self.session.get_outputs()]
        types = [i.type for i in self.session.get_inputs()] + [o.type for o in self.session.get_outputs()]
        self._dtype = torch.float16 if "tensor(float16)" in types else torch.float32

    def run(self, **inputs):
        import torch

        feed = {}
        for name, want in self.input_dtypes.items():
            v = inputs[name]
            v = v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)
            feed[name] = v.astype(_np_dtype(want)) if v.dtype != _np_dtype(want) else v
        outs = self.session.run(None, feed)
        return {n: torch.from_numpy(o) for n, o in zip(self.output_names, outs)}


def _module_base():
    import torch

    class Base(torch.nn.Module, OrtPart):
        @property
        def dtype(self):
            return self._dtype

        @property
        def device(self):
            return torch.device("cpu")

    return Base


def make_ort_components(folder: Path, torch_configs):
    """text_encoder, unet, vae (ORT-backed) for diffusers' pipelines."""
    import torch
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
    from diffusers.models.modeling_outputs import AutoencoderKLOutput
    from diffusers.models.autoencoders.vae import DecoderOutput

    Base = _module_base()

    class OrtTextEncoder(Base):
        def __init__(self):
            super().__init__()
            self._setup(folder / "text_encoder" / "model.onnx", torch_configs["text"])

        def forward(self, input_ids, attention_mask=None, output_hidden_states=None, return_dict=True):
            o = self.run(input_ids=input_ids)
            return (o["last_hidden_state"], o["pooler_output"])

    class OrtUnet(Base):
        def __init__(self):
            super().__init__()
            self._setup(folder / "unet" / "model.onnx", torch_configs["unet"])

        def forward(self, sample, timestep, encoder_hidden_states, timestep_cond=None, cross_attention_kwargs=None,
                    added_cond_kwargs=None, return_dict=True):
            # timestep_cond: only read when the graph has the input (an LCM U-Net)
            o = self.run(sample=sample, timestep=timestep, encoder_hidden_states=encoder_hidden_states,
                         timestep_cond=timestep_cond)
            return (o["out_sample"],)

    class OrtVae(Base):
        def __init__(self):
            super().__init__()
            self.enc = ort_session(folder / "vae_encoder" / "model.onnx")
            self._setup(folder / "vae_decoder" / "model.onnx", torch_configs["vae"])
            self.enc_dtype = _np_dtype(self.enc.get_inputs()[0].type)

        def encode(self, x, return_dict=True):
            xin = x.detach().cpu().numpy().astype(self.enc_dtype)
            params = torch.from_numpy(self.enc.run(None, {"sample": xin})[0])
            return AutoencoderKLOutput(latent_dist=DiagonalGaussianDistribution(params))

        def decode(self, z, return_dict=True, generator=None):
            o = self.run(latent_sample=z)
            return (o["sample"],) if not return_dict else DecoderOutput(sample=o["sample"])

    return OrtTextEncoder(), OrtUnet(), OrtVae()


def load_torch_models(flavour, work):
    import torch

    text, unet, vae = build_torch_models(flavour)
    sd = torch.load(work / f"torch-{flavour}.pt")
    text.load_state_dict(sd["text"])
    unet.load_state_dict(sd["unet"])
    vae.load_state_dict(sd["vae"])
    return text, unet, vae


FLAVOUR_OF = {"sd15": "sd15", "sd15-fp16": "sd15", "sd21-v": "sd21-v", "turbo": "sd21-v", "lcm": "lcm"}


def stage_embeddings(args, work):
    import torch
    from transformers import CLIPTokenizer

    doc = {}
    for folder in ("sd15", "sd21-v"):
        tok = CLIPTokenizer.from_pretrained(str(OUT / folder / "tokenizer"))
        ids = sd_tokenize(tok, EMBED_PROMPTS)
        s = ort_session(OUT / folder / "text_encoder" / "model.onnx")
        in_type = _np_dtype(s.get_inputs()[0].type)
        hs = s.run(["last_hidden_state"], {"input_ids": ids.astype(in_type)})[0].astype(np.float32)
        text, _, _ = load_torch_models(FLAVOUR_OF[folder], work)
        with torch.no_grad():
            ref = text(input_ids=torch.from_numpy(ids)).last_hidden_state.numpy()
        diff = float(np.abs(ref - hs).max())
        assert diff < 1e-4, diff
        np.save(REF / f"embeddings_{folder}.npy", hs)
        doc[folder] = {"prompts": EMBED_PROMPTS, "ids": ids.tolist(), "file": f"embeddings_{folder}.npy",
                       "shape": list(hs.shape), "dtype": "float32", "output": "last_hidden_state",
                       "max_abs_diff_onnx_vs_torch": diff}
        log(f"embeddings {folder}: shape {hs.shape}, |onnx - torch| max {diff:.3g}")
    write_json(REF / "embeddings.json", doc)


# ----------------------------------------------------------------------------------------------
# pipelines


def init_image():
    """A fixed synthetic 64x64 RGB picture: gradients, a disc, a square and a stripe."""
    from PIL import Image

    y, x = np.mgrid[0:IMAGE, 0:IMAGE].astype(np.float32)
    r = x / (IMAGE - 1) * 255
    g = y / (IMAGE - 1) * 255
    b = (1 - (x + y) / (2 * (IMAGE - 1))) * 255
    img = np.stack([r, g, b], -1)
    disc = (x - 40) ** 2 + (y - 22) ** 2 < 12**2
    img[disc] = [250, 220, 40]
    sq = (x >= 8) & (x < 28) & (y >= 34) & (y < 54)
    img[sq] = [30, 60, 200]
    stripe = (np.abs(x - y - 10) < 2)
    img[stripe] = [255, 255, 255]
    return Image.fromarray(np.clip(np.round(img), 0, 255).astype(np.uint8), "RGB")


PIPE_CASES = [
    # name, folder, pipeline, sampler, prompt, negative, guidance, steps, strength, eta, seed, n
    ("sd15-pndm-cfg-neg", "sd15", "text2img", "auto", "a photo of an astronaut riding a horse on mars",
     "blurry, low quality", 7.5, 8, 1.0, 0.0, 11, 1),
    ("sd15-ddim", "sd15", "text2img", "ddim", "a red cube on a blue sphere", "", 7.5, 8, 1.0, 0.0, 12, 1),
    ("sd15-euler", "sd15", "text2img", "euler", "a red cube on a blue sphere", "", 7.5, 8, 1.0, 0.0, 13, 1),
    ("sd15-euler-a", "sd15", "text2img", "euler-a", "a red cube on a blue sphere", "", 7.5, 8, 1.0, 0.0, 14, 1),
    ("sd15-dpm++2m", "sd15", "text2img", "dpm++2m", "a red cube on a blue sphere", "", 7.5, 8, 1.0, 0.0, 15, 1),
    ("sd15-dpm++2m-karras", "sd15", "text2img", "dpm++2m-karras", "a red cube on a blue sphere", "", 7.5, 8, 1.0,
     0.0, 16, 1),
    ("sd15-pndm-nocfg", "sd15", "text2img", "auto", "a watercolor fox", "", 1.0, 6, 1.0, 0.0, 17, 1),
    ("sd15-lcm-4", "sd15", "text2img", "lcm", "a watercolor fox", "", 1.0, 4, 1.0, 0.0, 18, 1),
    ("sd15-ddim-eta1", "sd15", "text2img", "ddim", "a watercolor fox", "", 7.5, 6, 1.0, 1.0, 19, 1),
    ("sd15-img2img-ddim-0.5", "sd15", "img2img", "ddim", "an oil painting of shapes", "", 7.5, 8, 0.5, 0.0, 21, 1),
    ("sd15-img2img-ddim-0.8", "sd15", "img2img", "ddim", "an oil painting of shapes", "", 7.5, 8, 0.8, 0.0, 22, 1),
    ("sd15-img2img-euler-0.5", "sd15", "img2img", "euler", "an oil painting of shapes", "", 7.5, 8, 0.5, 0.0, 23,
     1),
    ("sd15-img2img-euler-0.8", "sd15", "img2img", "euler", "an oil painting of shapes", "", 7.5, 8, 0.8, 0.0, 24,
     1),
    ("sd15-dpm++2m-batch2", "sd15", "text2img", "dpm++2m", "a city at night", "", 7.5, 6, 1.0, 0.0, 25, 2),
    ("sd21v-euler-a-neg", "sd21-v", "text2img", "auto", "a photo of an astronaut riding a horse on mars",
     "blurry, low quality", 5.0, 8, 1.0, 0.0, 31, 1),
    ("sd21v-ddim", "sd21-v", "text2img", "ddim", "a red cube on a blue sphere", "", 7.5, 8, 1.0, 0.0, 32, 1),
    ("turbo-1", "turbo", "text2img", "auto", "a cinematic shot of a baby racoon", "", 0.0, 1, 1.0, 0.0, 41, 1),
    ("turbo-4", "turbo", "text2img", "auto", "a cinematic shot of a baby racoon", "", 0.0, 4, 1.0, 0.0, 42, 1),
    ("sd15-fp16-pndm", "sd15-fp16", "text2img", "auto", "a photo of an astronaut riding a horse on mars",
     "blurry, low quality", 7.5, 8, 1.0, 0.0, 11, 1),
    # LatentConsistencyModelPipeline: no CFG batch, guidance_scale - 1 goes in through timestep_cond
    ("lcm-4", "lcm", "text2img", "auto", "a lighthouse on a cliff at dawn", "", 8.0, 4, 1.0, 0.0, 51, 1),
    ("lcm-2-batch2", "lcm", "text2img", "auto", "a bowl of ramen, studio lighting", "", 3.0, 2, 1.0, 0.0, 52, 2),
]

I2I_MODULE = "diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_img2img"
T2I_MODULE = "diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion"
LCM_MODULE = "diffusers.pipelines.latent_consistency_models.pipeline_latent_consistency_text2img"


def run_pipeline(folder, kind, sampler, prompt, negative, guidance, steps, strength, eta, seed, n, components, tok,
                 init_noise):
    import importlib

    import torch
    from diffusers import LatentConsistencyModelPipeline, StableDiffusionImg2ImgPipeline, StableDiffusionPipeline

    text, unet, vae = components
    sched = make_scheduler(FOLDER_SCHEDULER[folder], sampler)
    # the folder's own pipeline class (model_index.json), as DiffusionPipeline.from_pretrained picks it
    lcm = json.loads((OUT / folder / "model_index.json").read_text())["_class_name"] == "LatentConsistencyModelPipeline"
    if lcm:
        assert kind == "text2img" and not negative and eta == 0.0
        cls = LatentConsistencyModelPipeline
    else:
        cls = StableDiffusionPipeline if kind == "text2img" else StableDiffusionImg2ImgPipeline
    pipe = cls(vae=vae, text_encoder=text, tokenizer=tok, unet=unet, scheduler=sched, safety_checker=None,
               feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    steps_lat, lat_dtypes, ts_used = [], set(), []

    def cb(p, i, t, kw):
        ts_used.append(float(t))
        lat_dtypes.add(str(kw["latents"].dtype).replace("torch.", ""))
        steps_lat.append(kw["latents"].detach().to(torch.float32).clone())
        return {}

    gen = torch.Generator().manual_seed(seed)
    kw = dict(prompt=prompt, negative_prompt=negative or None, guidance_scale=guidance, num_inference_steps=steps,
              eta=eta, generator=gen, num_images_per_prompt=n, output_type="np", callback_on_step_end=cb,
              callback_on_step_end_tensor_inputs=["latents"])
    if lcm:  # its __call__ takes neither (no negative prompts; the scheduler's step has no eta)
        del kw["negative_prompt"], kw["eta"]
    i2i = importlib.import_module(I2I_MODULE)
    sched_mod = type(sched).__module__
    orig_retrieve = i2i.retrieve_latents
    if kind == "text2img":
        kw.update(latents=torch.from_numpy(init_noise), height=IMAGE, width=IMAGE)
    else:
        kw.update(image=init_image(), strength=strength)
        # mirage encodes the init image to the latent distribution's mean
        i2i.retrieve_latents = lambda enc, generator=None, sample_mode="sample": orig_retrieve(
            enc, generator=generator, sample_mode="argmax")
    try:
        with NoiseRecorder(sched_mod, I2I_MODULE, T2I_MODULE, LCM_MODULE) as rec:
            with torch.no_grad():
                img = pipe(**kw).images
    finally:
        i2i.retrieve_latents = orig_retrieve
    step_noise = rec.of(sched_mod)
    pipe_noise = rec.of(I2I_MODULE) + rec.of(T2I_MODULE) + rec.of(LCM_MODULE)
    return {
        "image": np.ascontiguousarray(np.asarray(img, dtype=np.float32).transpose(0, 3, 1, 2)),
        "step_latents": torch.stack(steps_lat).numpy() if steps_lat else None,
        "step_noise": (torch.cat([t.reshape(-1).to(torch.float32) for t in step_noise]).numpy()
                       if step_noise else None),
        "pipe_noise": [t.to(torch.float32).numpy() for t in pipe_noise],
        "scheduler_class": type(sched).__name__,
        "timesteps": ts_used,
        "all_timesteps": [float(v) for v in pipe.scheduler.timesteps.tolist()],
        "init_noise_sigma": float(sched.init_noise_sigma),
        "latents_dtype": ",".join(sorted(lat_dtypes)),
        "prompt_embeds_dtype": str(text.dtype).replace("torch.", ""),
    }


def stage_pipelines(args, work):
    from PIL import Image
    from transformers import CLIPTokenizer

    init_image().save(REF / "init_image.png")
    cases, stats = [], []
    torch_cache, ort_cache = {}, {}
    only = set(args.cases.split(",")) if args.cases else None
    for (name, folder, kind, sampler, prompt, negative, guidance, steps, strength, eta, seed, n) in PIPE_CASES:
        if only and name not in only:
            continue
        t0 = time.time()
        flavour = FLAVOUR_OF[folder]
        if flavour not in torch_cache:
            torch_cache[flavour] = load_torch_models(flavour, work)
        if folder not in ort_cache:
            t, u, v = torch_cache[flavour]
            ort_cache[folder] = make_ort_components(OUT / folder, {"text": t.config, "unet": u.config,
                                                                   "vae": v.config})
        tok = CLIPTokenizer.from_pretrained(str(OUT / folder / "tokenizer"))
        init_noise = np.random.RandomState(seed).standard_normal((n, 4, IMAGE // 8, IMAGE // 8)).astype(np.float32)
        common = (folder, kind, sampler, prompt, negative, guidance, steps, strength, eta, seed, n)
        r = run_pipeline(*common, ort_cache[folder], tok, init_noise)
        rt = run_pipeline(*common, torch_cache[flavour], tok, init_noise)
        # both runs must have drawn the same noise
        if r["step_noise"] is not None:
            assert np.array_equal(r["step_noise"], rt["step_noise"])
        files = {}

        def save(key, arr):
            if arr is None:
                files[key] = None
                return
            fn = f"pipe_{name}_{key}.npy"
            np.save(REF / fn, np.ascontiguousarray(arr.astype(np.float32)))
            files[key] = fn

        if kind == "text2img":
            save("init_noise", init_noise)
        else:
            assert len(r["pipe_noise"]) == 1
            save("init_noise", r["pipe_noise"][0])
        save("step_noise", r["step_noise"])
        save("step_latents", r["step_latents"])
        save("image", r["image"])
        png = f"pipe_{name}_image.png"
        Image.fromarray(np.round(r["image"][0].transpose(1, 2, 0) * 255).astype(np.uint8)).save(REF / png)
        lat_diff = float(np.abs(r["step_latents"] - rt["step_latents"]).max())
        img_mean = float(np.abs(r["image"] - rt["image"]).mean())
        img_max = float(np.abs(r["image"] - rt["image"]).max())
        case = {
            "name": name, "folder": folder, "pipeline": kind, "sampler": sampler,
            "scheduler_class": r["scheduler_class"], "prompt": prompt, "negative_prompt": negative,
            "guidance": guidance, "steps": steps, "strength": strength, "eta": eta, "seed": seed,
            "num_images": n, "height": IMAGE, "width": IMAGE,
            "timesteps": r["timesteps"], "all_timesteps": r["all_timesteps"], "init_noise_sigma": r["init_noise_sigma"],
            "init_noise": files["init_noise"], "step_noise": files["step_noise"],
            "init_image": "init_image.png" if kind == "img2img" else None,
            "step_latents": files["step_latents"], "image": files["image"], "image_png": png,
            "unet_calls": int(r["step_latents"].shape[0]),
            "latents_dtype": r["latents_dtype"], "prompt_embeds_dtype": r["prompt_embeds_dtype"],
            "torch_vs_onnx": {"step_latents_max_abs_diff": lat_diff, "image_mean_abs_diff": img_mean,
                              "image_max_abs_diff": img_max},
        }
        cases.append(case)
        stats.append((name, lat_diff, img_mean, img_max))
        log(f"pipeline {name}: {r['step_latents'].shape[0]} steps, image mean {r['image'].mean():.3f} std "
            f"{r['image'].std():.3f}; torch vs onnx: latents max {lat_diff:.3g}, image mean {img_mean:.3g} max "
            f"{img_max:.3g} ({time.time() - t0:.1f}s)")
    doc = {
        "about": "whole-pipeline references: diffusers StableDiffusionPipeline / StableDiffusionImg2ImgPipeline "
                 "with the folder's ONNX models run by ONNX Runtime (CPU) through optimum-style wrappers. "
                 "text2img: latents=init_noise (the pipeline multiplies it by init_noise_sigma). img2img: the init "
                 "image is encoded to the latent distribution's MEAN (retrieve_latents patched to "
                 "sample_mode='argmax'), times vae scaling_factor, then add_noise(., init_noise, timesteps[:1]). "
                 "step_noise = every randn_tensor draw of the scheduler, flattened in order. step_latents = "
                 "latents after each scheduler step [unet calls, n, 4, h, w]. image = output_type='np' as NCHW "
                 "float32 in [0, 1] before rounding; image_png is that rounded, for viewing. Folders whose "
                 "model_index.json names LatentConsistencyModelPipeline (lcm) run that pipeline: no CFG batch, "
                 "timestep_cond = get_guidance_scale_embedding(guidance - 1, time_cond_proj_dim) for every sample, "
                 "the image decoded from the last step's denoised sample (= its latents).",
        "scheduler_rule": SCHEDULER_RULE,
        "cases": cases,
    }
    write_json(REF / "pipelines.json", doc, indent=1)
    log(f"wrote {REF / 'pipelines.json'} ({len(cases)} cases)")


# ----------------------------------------------------------------------------------------------


def dedupe_folders(root: Path = OUT, min_bytes: int = 64 * 1024):
    """Replaces each model folder's file that is byte for byte one of an earlier folder's (sorted order) by a
    relative symlink to it: the five CLIP vocabularies and merges and the shared encoders and VAEs were 16.7 MB
    of copies in the working tree, which must stay under the device machine's 64 MiB. mirage follows links."""
    first = {}
    for f in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink() and p.parent != REF):
        if f.stat().st_size < min_bytes:
            continue
        digest = hashlib.sha256(f.read_bytes()).hexdigest()
        if digest not in first:
            first[digest] = f
            continue
        target = os.path.relpath(first[digest], f.parent)
        f.unlink()
        f.symlink_to(target)
        log(f"{f.relative_to(root)} -> {target}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="tokens,schedulers,models,embeddings,pipelines")
    ap.add_argument("--clip-bpe", default=None, help="path of bpe_simple_vocab_16e6.txt.gz")
    ap.add_argument("--work", default="/tmp/sdref-work", help="scratch folder (torch weights, tokenizers)")
    ap.add_argument("--cases", default=None, help="only these pipeline cases (comma separated)")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    REF.mkdir(parents=True, exist_ok=True)
    import torch

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    t0 = time.time()
    for stage in args.only.split(","):
        t = time.time()
        {"tokens": stage_tokens, "schedulers": stage_schedulers, "models": stage_models,
         "embeddings": stage_embeddings, "pipelines": stage_pipelines}[stage](args, work)
        log(f"[{stage}: {time.time() - t:.1f}s]")
    dedupe_folders()
    log(f"done in {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
