#!/usr/bin/env bash
# Installs the library as a C library is installed (`make install PREFIX=... [DESTDIR=...]` calls this after
# `make lib`). Layout under DESTDIR/PREFIX:
#   lib/libmirage.so.X.Y.Z       stripped; SONAME libmirage.so.X (X = major version; see README "Versions")
#   lib/libmirage.so.X, lib/libmirage.so    symlinks
#   lib/.debug/libmirage.so.X.Y.Z.debug     its debug info (line tables), found by gdb via .gnu_debuglink
#   lib/libmirage.a              the static library (debug info stripped)
#   lib/libonnxruntime.so.1.31.1 ONNX Runtime (CPU), beside libmirage, where it looks first: no env var needed
#   include/mirage.h, include/mirage.hpp    the C header and the C++ wrapper
#   lib/pkgconfig/mirage.pc      Libs carry an rpath to lib/, so programs run with nothing else set
#   lib/cmake/mirage/mirageConfig.cmake, mirageConfigVersion.cmake   imported targets mirage::mirage and
#                                mirage::mirage_static, MIRAGE_MODELS_DIR (relocatable: paths are relative)
#   share/mirage/models/{emoji,fashion,fashion-text,minilm}   the shipped model sets and their text encoder
#   share/doc/mirage/README.md
# Usage: scripts/install.sh DESTDIR PREFIX BUILD_DIR (BUILD_DIR holds libmirage.so and libmirage.a)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
destdir="$1" prefix="$2" build="$3"
[[ "$prefix" = /* ]] || { echo "install: PREFIX must be an absolute path, not '$prefix'" >&2; exit 2; }
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -n1)"
major="${version%%.*}"
ort=libonnxruntime.so.1.31.1
out="$destdir$prefix"
for f in "$build/libmirage.so" "$build/libmirage.a" "$root/.deps/onnxruntime/lib/$ort" "$root/models/minilm/encoder.json"; do
  [[ -f "$f" ]] || { echo "install: $f is missing (make lib, scripts/setup.sh ort, make test or make demo make it)" >&2; exit 1; }
done
soname="$(readelf -d "$build/libmirage.so" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')"
[[ "$soname" = "libmirage.so.$major" ]] || {
  echo "install: $build/libmirage.so has SONAME '$soname', not libmirage.so.$major (build it with make lib)" >&2; exit 1; }

install -d "$out/lib/.debug" "$out/lib/pkgconfig" "$out/lib/cmake/mirage" "$out/include" \
  "$out/share/mirage/models" "$out/share/doc/mirage"
real="libmirage.so.$version"
objcopy --only-keep-debug "$build/libmirage.so" "$out/lib/.debug/$real.debug"
chmod 0644 "$out/lib/.debug/$real.debug"
objcopy --strip-unneeded --remove-section=.comment "$build/libmirage.so" "$out/lib/$real.tmp"
(cd "$out/lib" && objcopy --add-gnu-debuglink=".debug/$real.debug" "$real.tmp" && mv "$real.tmp" "$real")
chmod 0755 "$out/lib/$real"
ln -sfn "$real" "$out/lib/libmirage.so.$major"
ln -sfn "libmirage.so.$major" "$out/lib/libmirage.so"
install -m 0644 "$build/libmirage.a" "$out/lib/libmirage.a"
strip --strip-debug "$out/lib/libmirage.a"
install -m 0755 "$root/.deps/onnxruntime/lib/$ort" "$out/lib/$ort"
install -m 0644 "$root/include/mirage.h" "$root/bindings/cpp/mirage.hpp" "$out/include/"

# Libraries a static link of libmirage.a needs (rustc --print native-static-libs for this crate).
static_libs="-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc"
sed -e "s|@PREFIX@|$prefix|g" -e "s|@VERSION@|$version|g" -e "s|@STATIC_LIBS@|$static_libs|g" \
  "$root/scripts/install/mirage.pc.in" > "$out/lib/pkgconfig/mirage.pc"
cmake_libs="$(echo ${static_libs//-l/} | sed 's/ c$//' | tr ' ' ';')"
sed -e "s|@VERSION@|$version|g" -e "s|@MAJOR@|$major|g" -e "s|@STATIC_LIBS@|$cmake_libs|g" \
  "$root/scripts/install/mirageConfig.cmake.in" > "$out/lib/cmake/mirage/mirageConfig.cmake"
sed -e "s|@VERSION@|$version|g" -e "s|@MAJOR@|$major|g" \
  "$root/scripts/install/mirageConfigVersion.cmake.in" > "$out/lib/cmake/mirage/mirageConfigVersion.cmake"

models="$out/share/mirage/models"
for set in emoji fashion fashion-text; do
  install -d "$models/$set"
  install -m 0644 "$root/models/$set/manifest.json" "$root/models/$set/README.md" "$models/$set/"
  for f in "$root/models/$set"/*.onnx; do install -m 0644 "$f" "$models/$set/"; done
done
install -d "$models/minilm"
install -m 0644 "$root/models/minilm/"{encoder.json,text_encoder.onnx,tokenizer.json,README.md} "$models/minilm/"
install -m 0644 "$root/README.md" "$out/share/doc/mirage/"
echo "installed mirage $version into $out"
