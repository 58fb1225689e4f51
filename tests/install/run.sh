#!/usr/bin/env bash
# The install test (run by `make test`): `make install` into a temporary prefix, then programs built only
# from what was installed, run with a clean environment (no LD_LIBRARY_PATH, no ORT_DYLIB_PATH):
#   1. the layout: SONAME, symlinks, stripped library with its .debug file, header, pkg-config, CMake files;
#   2. tests/install/app.c built with `pkg-config --cflags --libs mirage`: runs, and loads libmirage and
#      ONNX Runtime from the prefix;
#   3. the same with CMake's find_package(mirage 0.1) and mirage::mirage, and statically with
#      mirage::mirage_static (with ORT_DYLIB_PATH: a static program has no libmirage folder to look in);
#   4. DESTDIR staging: the tree under the staging root, the final prefix in mirage.pc;
#   5. find_package(mirage 0.2) and (mirage 1.0) are refused (the version rule).
# Usage: tests/install/run.sh [PREFIX] (default: a temporary folder, removed afterwards).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
prefix="${1:-$tmp/prefix}"
fail() { echo "install test: $*" >&2; exit 1; }
clean_env() { env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$HOME" "$@"; }

make -C "$root" --no-print-directory install PREFIX="$prefix" >"$tmp/install.log" 2>&1 \
  || { cat "$tmp/install.log"; fail "make install failed"; }
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -n1)"
lib="$prefix/lib"

# 1. Layout.
[[ "$(readlink "$lib/libmirage.so")" == libmirage.so.0 ]] || fail "libmirage.so is not a link to libmirage.so.0"
[[ "$(readlink "$lib/libmirage.so.0")" == "libmirage.so.$version" ]] || fail "libmirage.so.0 is not a link to the real file"
readelf -d "$lib/libmirage.so.$version" | grep -q 'SONAME.*\[libmirage.so.0\]' || fail "no SONAME libmirage.so.0"
! readelf -S "$lib/libmirage.so.$version" | grep -q '\.debug_' || fail "the installed library is not stripped"
readelf -S "$lib/libmirage.so.$version" | grep -q '\.gnu_debuglink' || fail "no .gnu_debuglink"
readelf -S "$lib/.debug/libmirage.so.$version.debug" | grep -q '\.debug_line' || fail "no debug info kept apart"
for f in lib/libmirage.a lib/libonnxruntime.so.1.31.1 include/mirage.h include/mirage.hpp lib/pkgconfig/mirage.pc \
  lib/cmake/mirage/mirageConfig.cmake lib/cmake/mirage/mirageConfigVersion.cmake \
  share/mirage/models/emoji/manifest.json share/mirage/models/fashion/unet.onnx \
  share/mirage/models/fashion-text/manifest.json share/mirage/models/minilm/text_encoder.onnx; do
  [[ -f "$prefix/$f" ]] || fail "$f was not installed"
done
! nm -D --defined-only "$lib/libmirage.so.$version" | grep -v ' mirage_' | grep -q ' T ' \
  || fail "the library exports functions outside mirage_*: $(nm -D --defined-only "$lib/libmirage.so.$version" | grep ' T ' | grep -v ' mirage_' | head -5)"
echo "layout: ok ($(du -k "$lib/libmirage.so.$version" | cut -f1) KiB stripped, $(nm -D --defined-only "$lib/libmirage.so.$version" | grep -c ' T mirage_') functions)"

models="$prefix/share/mirage/models"
check_run() { # $1 = label, then the command; its output must show a generation and (unless static) both libraries from the prefix
  local label="$1"; shift
  local out; out="$("$@" 2>&1)" || { echo "$out"; fail "$label: the program failed"; }
  grep -q 'generated ' <<<"$out" || { echo "$out"; fail "$label: no image"; }
  grep -q "loaded $lib/libonnxruntime.so.1.31.1" <<<"$out" || { echo "$out"; fail "$label: ONNX Runtime not loaded from the prefix"; }
  echo "$label: $(grep generated <<<"$out")"
}

# 2. pkg-config.
export PKG_CONFIG_PATH="$lib/pkgconfig"
[[ "$(pkg-config --modversion mirage)" == "$version" ]] || fail "pkg-config --modversion"
[[ "$(pkg-config --variable=modelsdir mirage)" == "$models" ]] || fail "pkg-config modelsdir"
# shellcheck disable=SC2046
cc -std=c99 -Wall -Wextra -Werror "$root/tests/install/app.c" $(pkg-config --cflags --libs mirage) -o "$tmp/app_pc"
check_run pkg-config clean_env "$tmp/app_pc" "$models/emoji"
clean_env "$tmp/app_pc" "$models/emoji" | grep -q "loaded $lib/libmirage.so.$version" || fail "libmirage not loaded from the prefix"

# 3. CMake, shared and static.
cmake -S "$root/tests/install" -B "$tmp/build" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Release \
  >"$tmp/cmake.log" 2>&1 || { cat "$tmp/cmake.log"; fail "cmake configure"; }
cmake --build "$tmp/build" >"$tmp/build.log" 2>&1 || { cat "$tmp/build.log"; fail "cmake build"; }
check_run cmake clean_env "$tmp/build/app" "$models/emoji"
check_run cmake-static clean_env ORT_DYLIB_PATH="$lib/libonnxruntime.so.1.31.1" "$tmp/build/app_static" "$models/emoji"
! readelf -d "$tmp/build/app_static" | grep -q 'libmirage' || fail "app_static links libmirage.so"

# 4. DESTDIR stages the same tree under another root, with the final prefix in the files that name it.
make -C "$root" --no-print-directory install DESTDIR="$tmp/stage" PREFIX=/opt/mirage-staged >"$tmp/stage.log" 2>&1 \
  || { cat "$tmp/stage.log"; fail "make install DESTDIR=... failed"; }
[[ -f "$tmp/stage/opt/mirage-staged/lib/libmirage.so.$version" ]] || fail "DESTDIR: nothing under the staging root"
grep -q '^prefix=/opt/mirage-staged$' "$tmp/stage/opt/mirage-staged/lib/pkgconfig/mirage.pc" \
  || fail "DESTDIR: mirage.pc does not name the final prefix"
[[ ! -e /opt/mirage-staged ]] || fail "DESTDIR: something was written to the final prefix"
echo "DESTDIR: ok"

# 5. The version rule.
for want in 0.2 1.0; do
  if cmake -S "$root/tests/install" -B "$tmp/build-$want" -DCMAKE_PREFIX_PATH="$prefix" -DMIRAGE_WANT="$want" \
    >"$tmp/cmake-$want.log" 2>&1; then
    fail "find_package(mirage $want) accepted version $version"
  fi
done
echo "install test: ok"
