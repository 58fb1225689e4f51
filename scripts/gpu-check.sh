#!/usr/bin/env bash
# One prepared GPU check (docs/gpu.md): which execution provider each model really gets, speed per step and per
# image at batch 1/4/16 on TensorRT, CUDA and CPU, TensorRT's engine build (first run and second run), and how
# far GPU images are from CPU images of the same seed. Everything goes into one Markdown file, the raw figures
# as JSON at its end.
#   scripts/gpu-check.sh [OUT_FILE]     default docs/gpu-results.md
# Where there is no GPU, or no .deps/onnxruntime-gpu (scripts/setup.sh ort-gpu), it records what mirage says when
# asked for tensorrt / cuda (with --strict: the refusal; without: the CPU fallback warning), still measures CPU,
# and exits 0 with the file written. It downloads nothing.
# Environment (all optional):
#   MIRAGE_BIN          the CLI (default target/release/mirage)
#   MIRAGE_GPU_LIB      folder of the GPU build (default .deps/onnxruntime-gpu/lib): ORT_DYLIB_PATH and
#                       LD_LIBRARY_PATH point there when it holds libonnxruntime.so
#   GPU_CHECK_MODELS    model set (default models/emoji; models/fashion when the emoji set's text encoder,
#                       models/minilm/text_encoder.onnx, is missing)
#   GPU_CHECK_ITERS     timed calls per figure in `mirage bench` (default 20)
#   GPU_CHECK_BUDGET_S  wall-clock budget in seconds (default 450): each command gets at most what is left, and
#                       what does not fit is reported as skipped
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/docs/gpu-results.md}"
mkdir -p "$(dirname "$out")"
out="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"
export GPU_CHECK_ROOT="$root"
export GPU_CHECK_MIRAGE="${MIRAGE_BIN:-$root/target/release/mirage}"
gpu_lib="${MIRAGE_GPU_LIB:-$root/.deps/onnxruntime-gpu/lib}"
export GPU_CHECK_GPU_LIB="$gpu_lib"
if [[ -e "$gpu_lib/libonnxruntime.so" ]]; then
  export ORT_DYLIB_PATH="$gpu_lib/libonnxruntime.so"
  # After our folder: the CUDA 13 libraries of a Python environment's nvidia-* wheels (torch cu130's, say), for
  # a folder carried with only the ONNX Runtime libraries in it.
  py_nv="$(python3 -c '
import glob, os
try:
    import nvidia
except Exception:
    raise SystemExit
print(":".join(sorted({os.path.dirname(p) for d in nvidia.__path__ for p in glob.glob(os.path.join(d, "*", "lib", "*.so*"))})))
' 2>/dev/null || true)"
  export GPU_CHECK_PY_NVIDIA="$py_nv"
  export LD_LIBRARY_PATH="$gpu_lib${py_nv:+:$py_nv}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
exec python3 - "$out" <<'PY'
import datetime, glob, json, math, os, platform, re, shutil, struct, subprocess, sys, tempfile, time, zlib

T0 = time.monotonic()
OUT = sys.argv[1]
ROOT = os.environ["GPU_CHECK_ROOT"]
MIRAGE = os.environ["GPU_CHECK_MIRAGE"]
GPU_LIB = os.environ["GPU_CHECK_GPU_LIB"]
BUDGET = float(os.environ.get("GPU_CHECK_BUDGET_S") or 450)
ITERS = int(os.environ.get("GPU_CHECK_ITERS") or 20)
PROMPT = "a red apple"
REPORT_RESERVE = 15  # seconds kept for writing the report
WORK = tempfile.mkdtemp(prefix="gpu-check.")
PROVIDERS = ["tensorrt", "cuda", "cpu"]
data = {"started_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"), "budget_s": BUDGET,
        "iters": ITERS, "notes": []}


def log(msg):
    print(f"gpu-check [{time.monotonic() - T0:5.0f} s] {msg}", file=sys.stderr, flush=True)


def left():
    return BUDGET - (time.monotonic() - T0)


def rel(p):
    return os.path.relpath(p, ROOT) if p.startswith(ROOT + "/") else p


def text_of(v):
    if v is None:
        return ""
    return v.decode(errors="replace") if isinstance(v, bytes) else v


def run(args, cap, env_extra=None):
    """Runs a command in the repo root with a time limit of min(cap, what the budget has left)."""
    cmd = " ".join(rel(a) if a.startswith(ROOT) else (f'"{a}"' if " " in a else a) for a in args)
    limit = min(cap, left() - REPORT_RESERVE)
    if limit < 5:
        log(f"skipped (time budget spent): {cmd}")
        return {"cmd": cmd, "skipped": "the time budget was spent", "rc": None, "stdout": "", "stderr": "", "wall_s": 0}
    env = dict(os.environ, **(env_extra or {}))
    log(f"{cmd}  (limit {limit:.0f} s)")
    t = time.monotonic()
    try:
        p = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, timeout=limit)
        rc, so, se, timed_out = p.returncode, text_of(p.stdout), text_of(p.stderr), False
    except subprocess.TimeoutExpired as e:
        rc, so, se, timed_out = None, text_of(e.stdout), text_of(e.stderr), True
    except OSError as e:
        rc, so, se, timed_out = None, "", str(e), False
    r = {"cmd": cmd, "rc": rc, "wall_s": round(time.monotonic() - t, 3), "timed_out": timed_out, "limit_s": round(limit),
         "stdout": so, "stderr": se}
    if env_extra:
        r["env"] = env_extra
    if timed_out:
        log(f"  timed out after {limit:.0f} s")
    elif rc != 0:
        log(f"  exit {rc}: {one_line(last_error(r))}")
    return r


def one_line(s, n=400):
    s = re.sub(r"\s*\n\s*", " ", s or "").strip()
    return s if len(s) <= n else s[: n - 3] + "..."


def last_error(r):
    lines = [l for l in (r.get("stderr") or "").splitlines() if l.strip()]
    errs = [l for l in lines if "error" in l.lower()]
    return (errs or lines or [""])[-1]


def sessions(r):
    """model -> provider from `mirage -v` lines "<model>: session on <provider>"."""
    got = {}
    for m in re.finditer(r"^mirage info: (.+?): session on (\w+)\s*$", r.get("stderr") or "", re.M):
        name = re.sub(r" \(.*\)$", "", m.group(1))
        got[name] = m.group(2)
    return got


def fallback_warnings(r):
    # A warning's ONNX Runtime text may span lines: join each "mirage warn:" with its continuation.
    out, cur = [], None
    for l in (r.get("stderr") or "").splitlines():
        if l.startswith("mirage warn:"):
            if cur:
                out.append(cur)
            cur = l
        elif l.startswith("mirage ") or l.startswith("model set"):
            if cur:
                out.append(cur)
            cur = None
        elif cur is not None:
            cur += " " + l.strip()
    if cur:
        out.append(cur)
    return [one_line(w, 600) for w in out]


# ---------------------------------------------------------------- PNG (stdlib only: no numpy needed)
def png_pixels(path):
    with open(path, "rb") as f:
        b = f.read()
    if b[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path}: not a PNG")
    pos, idat, w = 8, b"", None
    while pos < len(b):
        n, kind = struct.unpack(">I4s", b[pos : pos + 8])
        body = b[pos + 8 : pos + 8 + n]
        pos += 12 + n
        if kind == b"IHDR":
            w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
            if depth != 8 or interlace or ctype not in (0, 2, 4, 6):
                raise ValueError(f"{path}: only 8-bit non-interlaced grey/RGB/RGBA PNGs (depth {depth}, type {ctype})")
            ch = {0: 1, 2: 3, 4: 2, 6: 4}[ctype]
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    raw, stride = zlib.decompress(idat), w * ch
    px, prev, i = bytearray(), bytearray(stride), 0
    for _ in range(h):
        ft, line = raw[i], bytearray(raw[i + 1 : i + 1 + stride])
        i += 1 + stride
        for x in range(stride):
            a = line[x - ch] if x >= ch else 0
            c = prev[x - ch] if x >= ch else 0
            up = prev[x]
            if ft == 1:
                line[x] = (line[x] + a) & 255
            elif ft == 2:
                line[x] = (line[x] + up) & 255
            elif ft == 3:
                line[x] = (line[x] + (a + up) // 2) & 255
            elif ft == 4:
                p = a + up - c
                pa, pb, pc = abs(p - a), abs(p - up), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else up if pb <= pc else c)) & 255
        px += line
        prev = line
    return (w, h, ch), bytes(px)


def compare(ref, other):
    r = {"reference": rel(ref), "image": rel(other)}
    if not (os.path.exists(ref) and os.path.exists(other)):
        r["error"] = "image missing"
        return r
    with open(ref, "rb") as a, open(other, "rb") as b:
        r["files_identical"] = a.read() == b.read()
    try:
        sa, pa = png_pixels(ref)
        sb, pb = png_pixels(other)
    except ValueError as e:
        r["error"] = str(e)
        return r
    if sa != sb:
        r["error"] = f"shapes differ: {sa} vs {sb}"
        return r
    diffs = [abs(x - y) for x, y in zip(pa, pb)]
    n = len(diffs)
    mse = sum(d * d for d in diffs) / n
    r.update(shape=list(sa), pixels_identical=pa == pb, values=n, values_differing=sum(1 for d in diffs if d),
             max_abs_diff=max(diffs), mean_abs_diff=round(sum(diffs) / n, 4),
             psnr_db=None if mse == 0 else round(10 * math.log10(255 * 255 / mse), 2))
    return r


# ---------------------------------------------------------------- the machine
def machine():
    m = {"platform": platform.platform(), "cpu_cores": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            names = re.findall(r"^model name\s*:\s*(.+)$", f.read(), re.M)
        m["cpu"] = names[0] if names else platform.processor()
    except OSError:
        m["cpu"] = platform.processor()
    try:
        with open("/proc/meminfo") as f:
            kb = int(re.search(r"MemTotal:\s+(\d+)", f.read()).group(1))
        m["memory_gib"] = round(kb / 2**20, 1)
    except (OSError, AttributeError):
        pass
    if shutil.which("nvidia-smi"):
        q = run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version,compute_cap", "--format=csv,noheader"], 30)
        m["nvidia_smi"] = q["stdout"].strip() or one_line(q["stderr"])
        head = run(["nvidia-smi"], 30)
        cv = re.search(r"CUDA Version:\s*([\d.]+)", head["stdout"])
        m["driver_cuda_version"] = cv.group(1) if cv else None
    else:
        m["nvidia_smi"] = None
    return m


def gpu_lib_info():
    g = {"folder": rel(GPU_LIB), "present": os.path.exists(os.path.join(GPU_LIB, "libonnxruntime.so"))}
    if g["present"]:
        files = sorted(glob.glob(os.path.join(GPU_LIB, "*")))
        g["bytes"] = sum(os.path.getsize(f) for f in files if os.path.isfile(f) and not os.path.islink(f))
        g["files"] = [os.path.basename(f) for f in files]
        g["tensorrt_libs"] = sorted(os.path.basename(f) for f in files if "nvinfer" in f or "nvonnxparser" in f)
    g["ORT_DYLIB_PATH"] = os.environ.get("ORT_DYLIB_PATH")
    g["LD_LIBRARY_PATH"] = os.environ.get("LD_LIBRARY_PATH")
    g["python_nvidia_lib_dirs"] = [d for d in (os.environ.get("GPU_CHECK_PY_NVIDIA") or "").split(":") if d]
    return g


def pick_models():
    want = os.environ.get("GPU_CHECK_MODELS") or "models/emoji"
    chosen, why = want, None
    try:
        with open(os.path.join(ROOT, want, "manifest.json")) as f:
            man = json.load(f)
    except OSError as e:
        return {"dir": want, "error": str(e)}, None
    text = (man.get("unet") or {}).get("text")
    if text:
        enc = os.path.normpath(os.path.join(ROOT, want, text["encoder"], "text_encoder.onnx"))
        if not os.path.exists(enc) and not os.environ.get("GPU_CHECK_MODELS"):
            why = (f"{rel(enc)} is missing (it is made by `mirage text-encoder export`, about 90 MB, never committed), "
                   "so the text-to-image set cannot open: measured on the unconditional models/fashion instead")
            chosen = "models/fashion"
            with open(os.path.join(ROOT, chosen, "manifest.json")) as f:
                man = json.load(f)
            text = (man.get("unet") or {}).get("text")
    img = man.get("image", {})
    info = {"dir": chosen, "name": man.get("name"), "image": f'{img.get("width")}x{img.get("height")}x{img.get("channels")}',
            "latent": (man.get("vae") or {}).get("latent_shape"), "text_conditioned": bool(text)}
    if why:
        info["substituted_because"] = why
    return info, bool(text)


# ---------------------------------------------------------------- the runs
def probe(p, models):
    # --no-prompt-cache: with it a CPU set defers its text encoder's session, which would then not be listed.
    strict = run([MIRAGE, "-v", "--no-prompt-cache", "--provider", p, "--strict", "info", "--models", models], 120)
    r = {"strict": {"cmd": strict["cmd"], "rc": strict["rc"], "wall_s": strict["wall_s"]}, "sessions": sessions(strict)}
    m = re.search(r"^  providers in this build: (.+)$", strict["stdout"], re.M)
    r["providers_in_build"] = m.group(1) if m else None
    m = re.search(r"^onnxruntime: (.+)$", strict["stdout"], re.M)
    r["onnxruntime"] = m.group(1) if m else None
    r["session_times"] = re.findall(r"^mirage info: (.+session made in \d+ ms)$", strict["stderr"], re.M)
    r["available"] = strict["rc"] == 0 and all(v == p for v in r["sessions"].values()) and bool(r["sessions"])
    if strict["rc"] != 0:
        r["strict"]["error"] = one_line(last_error(strict), 700)
        loose = run([MIRAGE, "-v", "--no-prompt-cache", "--provider", p, "info", "--models", models], 120)
        r["fallback"] = {"cmd": loose["cmd"], "rc": loose["rc"], "sessions": sessions(loose),
                         "warnings": fallback_warnings(loose)}
    r["_raw"] = {"strict_stderr_tail": strict["stderr"][-3000:]}
    return r


# TensorRT's flags (fp16, engine cache folder), set by main() before the first TensorRT run.
TRT_ARGS = []


def generate(p, models, text, png, env_extra=None, graph=False):
    args = [MIRAGE, "--provider", p, "--strict"] + (["--cuda-graph"] if graph else []) + (TRT_ARGS if p == "tensorrt" else []) + ["generate", "--models", models, "--seed", "1", "--count", "4",
            "--steps", "25", "--quiet", "-o", png]
    if text:
        args += ["--prompt", PROMPT]
    r = run(args, 240, env_extra)
    return {k: r.get(k) for k in ("cmd", "rc", "wall_s", "timed_out", "skipped", "env")} | (
        {"error": one_line(last_error(r), 700)} if r.get("rc") not in (0, None) or r.get("timed_out") else {})


def bench(p, models, batches, tag, cap, graph=False):
    jf = os.path.join(WORK, f"bench-{tag}.json")
    args = [MIRAGE, "--provider", p, "--strict"] + (["--cuda-graph"] if graph else []) + (TRT_ARGS if p == "tensorrt" else []) + [
        "bench", "--models", models, "--iters", str(ITERS)]
    for b in batches:
        args += ["--batch", str(b)]
    r = run(args + ["--json", jf], cap)
    out = {k: r.get(k) for k in ("cmd", "rc", "wall_s", "timed_out", "skipped")}
    out["table"] = r["stdout"].strip()
    if r.get("rc") == 0 and os.path.exists(jf):
        with open(jf) as f:
            out["json"] = json.load(f)
    elif not r.get("skipped"):
        out["error"] = "timed out" if r.get("timed_out") else one_line(last_error(r), 700)
    return out


def per_image(row, text_ms):
    b, step, dec = row["batch"], row.get("step_ms"), row.get("vae_decode_ms", 0.0)
    d = {"batch": b, "unet_batch": row.get("unet_batch"), "step_ms": step, "bare_unet_run_ms": row.get("bare_unet_run_ms"),
         "overhead_percent": row.get("overhead_percent"), "vae_decode_ms_per_image": round(dec / b, 3),
         "ms_per_50_step_image": row.get("ms_per_50_step_image")}
    if step is not None:
        d["image_steps_per_s"] = round(b * 1000 / step, 1)
        d["ms_per_25_step_image"] = round((25 * step + dec) / b, 3)
        d["images_per_s_25_steps"] = round(1000 / d["ms_per_25_step_image"], 1)
        if text_ms is not None:
            d["ms_per_25_step_image_with_prompt"] = round((25 * step + dec + text_ms) / b, 3)
    return d


def main():
    log(f"output {OUT}; budget {BUDGET:.0f} s; bench --iters {ITERS}")
    data["machine"] = machine()
    data["libraries"] = gpu_lib_info()
    if not os.access(MIRAGE, os.X_OK):
        data["notes"].append(f"{rel(MIRAGE)} is missing: build it (cargo build --release --bin mirage) or set MIRAGE_BIN")
        return
    models_info, text = pick_models()
    data["model_set"] = models_info
    models = models_info["dir"]
    if models_info.get("substituted_because"):
        data["notes"].append(models_info["substituted_because"])
    if models_info.get("error"):
        data["notes"].append(f"model set {models}: {models_info['error']}")
        return

    data["providers"] = {p: probe(p, models) for p in PROVIDERS}
    avail = [p for p in PROVIDERS if data["providers"][p]["available"]]
    log(f"providers that really run every model: {', '.join(avail) or 'none'}")

    gens, benches = {}, {}
    png = lambda tag: os.path.join(WORK, f"gen-{tag}.png")
    # CPU first: the reference images and the CPU figures are what every machine can give.
    # In order of what matters most if the budget runs short: the CPU reference images (seconds), then
    # TensorRT at batch 1 (the aim), CUDA, the CPU figures, and last TensorRT's second run and batches 4 and 16.
    gens["cpu"] = generate("cpu", models, text, png("cpu"))
    gens["cpu-again"] = generate("cpu", models, text, png("cpu-again"))
    trt, env = {}, {}
    if "tensorrt" in avail:
        # fp16 engines, cached in a folder of this run: the first run builds them, the second loads them.
        cache = os.path.join(WORK, "trt-cache")
        os.makedirs(cache, exist_ok=True)
        TRT_ARGS[:] = ["--tensorrt-fp16", "--tensorrt-cache", cache]
        gens["tensorrt"] = generate("tensorrt", models, text, png("tensorrt"), env)
        cached_files = sorted(os.listdir(cache))
        trt["cache_files_after_first_run"] = cached_files
        trt["env_honoured"] = bool(cached_files)
        trt["precision"] = "fp16 (--tensorrt-fp16)"
        benches["tensorrt"] = bench("tensorrt", models, [1], "tensorrt-b1", 180)
    if "cuda" in avail:
        gens["cuda"] = generate("cuda", models, text, png("cuda"))
        benches["cuda"] = bench("cuda", models, [1, 4, 16], "cuda", 120)
        # The U-Net's steps captured as CUDA graphs (--cuda-graph: inputs and outputs bound on the device,
        # one graph per batch shape); its images against CPU's and plain CUDA's.
        gens["cuda-graph"] = generate("cuda", models, text, png("cuda-graph"), graph=True)
        benches["cuda-graph"] = bench("cuda", models, [1, 4, 16], "cuda-graph", 120, graph=True)
    benches["cpu"] = bench("cpu", models, [1, 4, 16], "cpu", 150)
    if "tensorrt" in avail:
        gens["tensorrt-again"] = generate("tensorrt", models, text, png("tensorrt-again"), env)
        benches["tensorrt-b4-b16"] = bench("tensorrt", models, [4, 16], "tensorrt-b4-b16", 240)
        first, again = gens["tensorrt"].get("wall_s"), gens["tensorrt-again"].get("wall_s")
        trt["first_run_wall_s"] = first
        trt["second_run_wall_s"] = again
        trt["second_run_is_cached"] = trt["env_honoured"]
        if "cuda" in gens and gens["cuda"].get("rc") == 0 and gens["tensorrt"].get("rc") == 0:
            trt["cuda_same_command_wall_s"] = gens["cuda"]["wall_s"]
            trt["engine_build_estimate_s"] = round(first - gens["cuda"]["wall_s"], 2)
    data["tensorrt_engines"] = trt
    data["generate"] = gens
    data["bench"] = benches

    agree = {}
    for tag in ["cpu-again", "cuda", "cuda-graph", "tensorrt", "tensorrt-again"]:
        if tag in gens and gens[tag].get("rc") == 0 and gens["cpu"].get("rc") == 0:
            agree[tag] = compare(png("cpu"), png(tag))
    if all(gens.get(t, {}).get("rc") == 0 for t in ("cuda", "cuda-graph")):
        agree["cuda-graph-vs-cuda"] = compare(png("cuda"), png("cuda-graph"))
    data["agreement_with_cpu"] = agree

    # The figures per provider and batch (25-step images: the aim's), and the H200 aim.
    figures = {}
    for tag, b in benches.items():
        j = b.get("json")
        if not j:
            continue
        prov = "tensorrt" if tag.startswith("tensorrt") else tag
        f = figures.setdefault(prov, {"rows": []})
        for k in ("open_ms", "open_to_first_image_ms", "warm_50_step_image_ms", "text_encoder_ms_per_prompt",
                  "peak_rss_bytes", "model_bytes", "providers"):
            if k in j and k not in f:
                f[k] = j[k]
        f["rows"] += [per_image(r, j.get("text_encoder_ms_per_prompt")) for r in j.get("batches", [])]
    for f in figures.values():
        f["rows"].sort(key=lambda r: r["batch"])
    data["figures"] = figures
    aim = {"target_ms": 30.0, "what": "25-step text-to-image at batch 1 on TensorRT fp16, per image (bench: 25 x step + "
           "VAE decode; also shown with the prompt's encoding)", "model_set_image": models_info["image"]}
    row = next((r for r in figures.get("tensorrt", {}).get("rows", []) if r["batch"] == 1), None)
    if row and "ms_per_25_step_image" in row:
        aim["ms"] = row["ms_per_25_step_image"]
        aim["ms_with_prompt"] = row.get("ms_per_25_step_image_with_prompt")
        aim["met"] = row["ms_per_25_step_image"] < 30.0
        aim["precision"] = trt.get("precision")
    else:
        aim["met"] = None
        aim["why_not_measured"] = "TensorRT did not run every model here (see the provider table)"
    data["aim"] = aim


# ---------------------------------------------------------------- the report
def fmt(v, nd=2):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def report():
    L = []
    m = data.get("machine", {})
    L += ["# mirage GPU check", "",
          f"`scripts/gpu-check.sh` run {data['started_utc']} UTC, {data.get('elapsed_s')} s of a {BUDGET:.0f} s budget, "
          f"`mirage bench --iters {ITERS}` (medians). Raw figures: the JSON at the end.", "", "## Machine", "",
          f"- GPU: {m.get('nvidia_smi') or 'none (no nvidia-smi)'}"
          + (f"; driver's CUDA {m['driver_cuda_version']}" if m.get("driver_cuda_version") else ""),
          f"- CPU: {m.get('cpu')}, {m.get('cpu_cores')} cores, {m.get('memory_gib')} GiB; {m.get('platform')}"]
    lib = data.get("libraries", {})
    if lib.get("present"):
        L.append(f"- ONNX Runtime GPU build: `{lib['folder']}` ({lib['bytes'] / 1e6:.0f} MB, {len(lib['files'])} files; "
                 f"TensorRT libraries: {', '.join(lib['tensorrt_libs']) or 'none'})")
    else:
        L.append(f"- ONNX Runtime GPU build: `{lib.get('folder')}` absent (scripts/setup.sh ort-gpu): the CPU build is used")
    prov = data.get("providers", {})
    any_p = next(iter(prov.values()), {})
    L.append(f"- libonnxruntime: `{any_p.get('onnxruntime')}`; providers in this build: {any_p.get('providers_in_build')}")
    ms = data.get("model_set", {})
    cond = f'text-conditioned (prompt "{PROMPT}")' if ms.get("text_conditioned") else "unconditional"
    L.append(f"- model set `{ms.get('dir')}` ({ms.get('name')}): images {ms.get('image')}, latent {ms.get('latent')}, "
             f"{cond}")
    for n in data["notes"]:
        L.append(f"- note: {n}")
    if prov:
        L += ["", "## Which provider each model got", "",
              "`mirage -v --provider P --strict info`; where strict refuses, the same without `--strict` (the fallback).", "",
              "| asked for | with --strict | without --strict |", "|---|---|---|"]
        sess = lambda d: ", ".join(f"{k}={v}" for k, v in d.items()) or "no session"
        for p, r in prov.items():
            s, fb = r["strict"], r.get("fallback")
            strict = f"sessions {sess(r['sessions'])}" if s["rc"] == 0 else f"refused (exit {s['rc']}): `{s.get('error', '')}`"
            if not fb:
                loose = "-"
            else:
                w = fb["warnings"]
                loose = f"sessions {sess(fb['sessions'])} (exit {fb['rc']})" + (
                    f"; `{w[0]}`" + (f" (and {len(w) - 1} more like it, one per model)" if len(w) > 1 else "") if w else "")
            L.append(f"| {p} | {strict} | {loose} |")
    figs = data.get("figures", {})
    benches = data.get("bench", {})
    if benches:
        L += ["", "## Speed", "",
              "Per step: one sampler step (with classifier-free guidance the U-Net runs twice the images: the U-Net batch); 25-step image = "
              "(25 x step + VAE decode) / batch; images/s from that; 50-step image as `mirage bench` prints it.", "",
              "| provider | batch | U-Net batch | step ms | bare U-Net ms | overhead | image-steps/s | 25-step image ms | "
              "images/s (25 steps) | 25-step image + prompt ms | 50-step image ms | VAE decode ms/image |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for p, f in figs.items():
            for r in f["rows"]:
                L.append(f"| {p} | {r['batch']} | {fmt(r['unet_batch'])} | {fmt(r['step_ms'], 3)} | {fmt(r['bare_unet_run_ms'], 3)} | "
                         f"{fmt(r['overhead_percent'], 1)} % | {fmt(r.get('image_steps_per_s'), 1)} | {fmt(r.get('ms_per_25_step_image'), 2)} | "
                         f"{fmt(r.get('images_per_s_25_steps'), 1)} | {fmt(r.get('ms_per_25_step_image_with_prompt'), 2)} | "
                         f"{fmt(r['ms_per_50_step_image'], 2)} | {fmt(r['vae_decode_ms_per_image'], 3)} |")
        L += [""]
        for p, f in figs.items():
            L.append(f"- {p}: open {fmt(f.get('open_ms'), 0)} ms, open to a first 1-step image {fmt(f.get('open_to_first_image_ms'), 0)} ms, "
                     f"warm 50-step image {fmt(f.get('warm_50_step_image_ms'), 1)} ms, text encoder {fmt(f.get('text_encoder_ms_per_prompt'), 3)} ms "
                     f"per prompt, peak RSS {fmt((f.get('peak_rss_bytes') or 0) / 1e6, 0)} MB; sessions: {', '.join(f.get('providers', []))}")
        for tag, b in benches.items():
            if not b.get("json"):
                L.append(f"- bench {tag}: {b.get('skipped') or b.get('error')} (`{b['cmd']}`)")
    trt = data.get("tensorrt_engines")
    L += ["", "## TensorRT engine build", ""]
    if trt:
        L += [f"- precision: {trt['precision']}",
              f"- first run (empty cache folder) of the 25-step, 4-image generate: {fmt(trt.get('first_run_wall_s'))} s; "
              f"second run: {fmt(trt.get('second_run_wall_s'))} s "
              f"({'engine and timing caches on' if trt['second_run_is_cached'] else 'no cache: the CLI has no cache-folder option, engines are rebuilt'}); "
              f"the same command on CUDA: {fmt(trt.get('cuda_same_command_wall_s'))} s, so the engine builds cost about "
              f"{fmt(trt.get('engine_build_estimate_s'))} s",
              f"- cache folder after the first run: {', '.join(trt['cache_files_after_first_run']) or 'empty'}"]
    else:
        L.append("- not measured: TensorRT did not run every model here")
    agree = data.get("agreement_with_cpu", {})
    prompt_arg = f' --prompt "{PROMPT}"' if ms.get("text_conditioned") else ""
    L += ["", "## Agreement with CPU", "",
          f"`mirage --provider P --strict generate --seed 1 --count 4 --steps 25"
          f"{prompt_arg}`, each PNG against the CPU one (8-bit values).", ""]
    gens = data.get("generate", {})
    if agree:
        L += ["| image | PNG files identical | pixels identical | values differing | max abs diff | mean abs diff | PSNR dB |",
              "|---|---|---|---|---|---|---|"]
        for tag, a in agree.items():
            if a.get("error"):
                L.append(f"| {tag} | {a['error']} | | | | | |")
            else:
                L.append(f"| {tag} vs cpu | {a['files_identical']} | {a['pixels_identical']} | {a['values_differing']} / {a['values']} | "
                         f"{a['max_abs_diff']} | {a['mean_abs_diff']} | {'inf' if a['psnr_db'] is None else a['psnr_db']} |")
    for tag, g in gens.items():
        if g.get("rc") != 0:
            L.append(f"- generate {tag}: {g.get('skipped') or g.get('error') or 'exit ' + str(g.get('rc'))}")
    aim = data.get("aim")
    if aim:
        L += ["", "## H200 aim", "", f"- aim: {aim['what']} under {aim['target_ms']:.0f} ms; this set's images are {aim['model_set_image']}"]
        if aim.get("met") is None:
            L.append(f"- not measured: {aim['why_not_measured']}")
        else:
            L.append(f"- measured: {aim['ms']} ms per image ({aim.get('ms_with_prompt')} ms with the prompt's encoding), "
                     f"{aim['precision']}: {'MET' if aim['met'] else 'NOT met'}")
    L += ["", "## What the CLI cannot do yet", "",
          "- `mirage bench` has no --steps: its per-image figure is for 50 steps; the 25-step figures here are computed "
          "from its per-step median",
          "- no shipped 64x64 text-to-image set: models/emoji is 32x32 (latent 4x8x8)"]
    raw = json.dumps(data, indent=1, default=str)
    L += ["", "## Raw data", "", "```json", raw, "```", ""]
    with open(OUT, "w") as f:
        f.write("\n".join(L))


def summary():
    print(f"gpu-check: wrote {OUT}")
    for p, r in data.get("providers", {}).items():
        s = r["strict"]
        if s["rc"] == 0:
            print(f"  {p}: sessions " + ", ".join(f"{k}={v}" for k, v in r["sessions"].items()))
        else:
            print(f"  {p} --strict: {s.get('error')}")
            for w in (r.get("fallback") or {}).get("warnings", [])[:1]:
                print(f"  {p} without --strict: {w}")
    for p, f in data.get("figures", {}).items():
        for r in f["rows"]:
            print(f"  {p} batch {r['batch']}: step {fmt(r['step_ms'], 3)} ms, 25-step image {fmt(r.get('ms_per_25_step_image'))} ms "
                  f"({fmt(r.get('images_per_s_25_steps'), 1)} images/s), 50-step image {fmt(r['ms_per_50_step_image'])} ms")
    for tag, a in data.get("agreement_with_cpu", {}).items():
        if not a.get("error"):
            print(f"  {tag} vs cpu: files identical {a['files_identical']}, max abs diff {a['max_abs_diff']}, "
                  f"PSNR {'inf' if a['psnr_db'] is None else a['psnr_db']} dB")
    aim = data.get("aim") or {}
    if aim:
        print("  H200 aim (< 30 ms per 25-step image, batch 1, TensorRT): "
              + ("not measured" if aim.get("met") is None else f"{aim['ms']} ms, {'met' if aim['met'] else 'not met'}"))


try:
    main()
except Exception as e:  # the report is still written
    import traceback
    data["notes"].append(f"gpu-check failed: {e!r}")
    data["traceback"] = traceback.format_exc()
    log(f"failed: {e!r}")
data["elapsed_s"] = round(time.monotonic() - T0, 1)
report()
summary()
shutil.rmtree(WORK, ignore_errors=True)
PY
