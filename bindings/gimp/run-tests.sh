#!/usr/bin/env bash
# Tests the mirage GIMP plug-in in real GIMP 2.10, headless:
#   1. builds it (make -C bindings/gimp; MIRAGE_CFLAGS / MIRAGE_LIBS are passed through),
#   2. installs it into a throw-away GIMP profile (GIMP2_DIRECTORY=a temp dir, so the user's own profile is
#      never read or written),
#   3. runs `gimp -i -d -f` with Script-Fu (tests/mirage-tests.scm) calling generate, img2img and inpaint on
#      new 64x64 images and the failure cases, saving PNGs,
#   4. checks the PNGs and results with tests/check.py (python3, standard library only).
#
# usage: bindings/gimp/run-tests.sh [MODELS_DIR]
#   MODELS_DIR  a folder holding the emoji set (and optionally fashion-text), e.g. the repository's models/,
#               or a model set folder itself (with manifest.json); default: the repository's models/
# env: GIMP (default gimp), GIMP_TIMEOUT seconds (default 150), KEEP=1 keeps the temp folder.
# Exits non-zero on any failure.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MODELS=${1:-$HERE/../../models}
GIMP=${GIMP:-gimp}
GIMP_TIMEOUT=${GIMP_TIMEOUT:-150}

fail() { echo "run-tests.sh: $*" >&2; exit 1; }

[ -d "$MODELS" ] || fail "no such models folder: $MODELS"
MODELS=$(cd "$MODELS" && pwd)
if [ -f "$MODELS/manifest.json" ]; then
    SET=$MODELS
    GREY=""
else
    SET=$MODELS/emoji
    GREY=$MODELS/fashion-text
    [ -f "$GREY/manifest.json" ] || GREY=""
fi
[ -f "$SET/manifest.json" ] || fail "no model set at $SET (expected MODELS_DIR/emoji/manifest.json)"
command -v "$GIMP" >/dev/null || fail "$GIMP not found (Debian: apt-get install gimp libgimp2.0-dev)"
command -v python3 >/dev/null || fail "python3 not found"

start=$(date +%s)
make -s -C "$HERE" >/dev/null

TMP=$(mktemp -d "${TMPDIR:-/tmp}/mirage-gimp-test.XXXXXX")
cleanup() { if [ "${KEEP:-0}" = 1 ]; then echo "kept $TMP"; else rm -rf "$TMP"; fi; }
trap cleanup EXIT

# A fresh profile: GIMP asks for these folders (it writes some of them at exit) but not for more.
PROFILE=$TMP/profile
mkdir -p "$PROFILE"/{plug-ins,scripts,brushes,dynamics,fonts,gradients,palettes,patterns,tool-presets,templates,tmp}
make -s -C "$HERE" install-user PLUGIN_DIR="$PROFILE/plug-ins/mirage-gimp" >/dev/null

OUT=$TMP/out/
mkdir -p "$OUT"
# Script-Fu strings: the paths go in between double quotes. The definitions and the load share one -b
# command: each -b is evaluated on its own, so a definition does not reach the next one.
for p in "$OUT" "$SET" "$GREY" "$HERE"; do
    case $p in *'"'* | *'\'*) fail "path with a quote or backslash: $p" ;; esac
done

# The cancel check: once the script has written cancel-marker, SIGKILL the plug-in process (found by its
# executable, the copy in this temporary profile, so nothing else is touched) 2 s into its run, as GIMP's
# Cancel button does.
BIN=$PROFILE/plug-ins/mirage-gimp/mirage-gimp
cancel_watcher() {
    local i d pid=""
    for i in $(seq 1200); do [ -e "$OUT/cancel-marker" ] && break; sleep 0.1; done
    [ -e "$OUT/cancel-marker" ] || return 0
    for i in $(seq 300); do
        for d in /proc/[0-9]*; do
            if [ "$(readlink "$d/exe" 2>/dev/null)" = "$BIN" ]; then pid=${d#/proc/}; break 2; fi
        done
        sleep 0.1
    done
    [ -n "$pid" ] || return 0
    sleep 2
    kill -KILL "$pid" 2>/dev/null && echo "$pid" >"$OUT/cancel-killed"
}
cancel_watcher &
WATCHER=$!

echo "gimp: $($GIMP --version)"
echo "model set: $SET${GREY:+, grey set: $GREY}"
set +e
# -i no interface (no display needed), -d no patterns/brushes/..., -f no fonts, -c messages to the console.
# MIRAGE_MODELS serves the calls with an empty model-set parameter.
GIMP2_DIRECTORY=$PROFILE MIRAGE_MODELS=$SET timeout -k 10 "$GIMP_TIMEOUT" "$GIMP" -i -d -f -c \
    -b "(define mirage-out \"$OUT\") (define mirage-set \"$SET\") (define mirage-grey-set \"$GREY\")
        (load \"$HERE/tests/mirage-tests.scm\")" \
    -b '(gimp-quit 0)' >"$TMP/gimp.log" 2>&1
rc=$?
set -e
kill "$WATCHER" 2>/dev/null || true
wait "$WATCHER" 2>/dev/null || true
if [ $rc -ne 0 ]; then
    cat "$TMP/gimp.log" >&2
    [ $rc -eq 124 ] || [ $rc -eq 137 ] && fail "gimp did not finish within ${GIMP_TIMEOUT}s"
    fail "gimp exited with status $rc"
fi

if ! python3 "$HERE/tests/check.py" "$OUT"; then
    echo "--- gimp's output:" >&2
    cat "$TMP/gimp.log" >&2
    echo "--- results.txt:" >&2
    cat "$OUT/results.txt" >&2 || true
    fail "checks failed"
fi
echo "GIMP plug-in tests passed in $(( $(date +%s) - start ))s"
