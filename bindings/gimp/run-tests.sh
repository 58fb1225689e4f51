#!/usr/bin/env bash
# Tests the mirage GIMP plug-in in real GIMP 2.10, headless:
#   1. builds it (bindings/gimp/Makefile; MIRAGE_CFLAGS / MIRAGE_LIBS are passed through) into a temporary
#      folder, with MIRAGE_DEFAULT_MODELS = the model set under test,
#   2. installs it (make install-user PLUGIN_DIR=...) into a throw-away GIMP profile: GIMP2_DIRECTORY is a
#      temporary folder, so the user's own profile is never read or written,
#   3. session 1 (MIRAGE_MODELS unset): `gimp -i -d -f` with Script-Fu (tests/mirage-tests.scm) calling
#      generate, img2img and inpaint on new 64x64 images, the failure cases and a killed run (GIMP's cancel),
#      saving PNGs; session 2 (tests/mirage-env-tests.scm): MIRAGE_MODELS against the parameter and default,
#   4. checks the PNGs and results with tests/check.py (python3, standard library only).
#
# usage: bindings/gimp/run-tests.sh [MODELS_DIR]
#   MODELS_DIR  a folder holding the emoji set (and optionally fashion-text), e.g. the repository's models/
#               or an install's PREFIX/share/mirage/models, or one model set folder (with manifest.json);
#               default: the repository's models/
# env: GIMP (default gimp), GIMP_TIMEOUT seconds per GIMP session (default 150), KEEP=1 keeps the temp folder.
# Exits non-zero on any failure. No display, D-Bus or xvfb needed (-i).
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
TMP=$(mktemp -d "${TMPDIR:-/tmp}/mirage-gimp-test.XXXXXX")
WATCHER=""
cleanup() {
    [ -z "$WATCHER" ] || kill "$WATCHER" 2>/dev/null || true
    if [ "${KEEP:-0}" = 1 ]; then echo "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT

# Script-Fu strings: the paths go in between double quotes.
for p in "$TMP" "$SET" "$GREY" "$HERE"; do
    case $p in *'"'* | *'\'*) fail "path with a quote or backslash: $p" ;; esac
done

BIN=$TMP/build/mirage-gimp
mkdir -p "$TMP/build"
make -s -C "$HERE" BIN="$BIN" MIRAGE_DEFAULT_MODELS="$SET" >/dev/null

# A fresh profile: GIMP asks for these folders (it writes some of them at exit) but needs no more.
PROFILE=$TMP/profile
mkdir -p "$PROFILE"/{plug-ins,scripts,brushes,dynamics,fonts,gradients,palettes,patterns,tool-presets,templates,tmp}
# GIMP queries every plug-in of a new profile at start-up (5 s or more on a busy machine): only the ones the
# test uses are put on the plug-in path, the profile's own (ours) and Script-Fu and PNG saving from GIMP's.
SYS_PLUG_INS=$(gimptool-2.0 --gimpplugindir 2>/dev/null || echo /usr/lib/gimp/2.0)/plug-ins
if [ -x "$SYS_PLUG_INS/script-fu/script-fu" ] && [ -x "$SYS_PLUG_INS/file-png/file-png" ]; then
    mkdir -p "$TMP/sys-plug-ins"
    ln -s "$SYS_PLUG_INS/script-fu" "$SYS_PLUG_INS/file-png" "$TMP/sys-plug-ins/"
    echo "(plug-in-path \"$PROFILE/plug-ins:$TMP/sys-plug-ins\")" >"$PROFILE/gimprc"
fi
PLUGIN_DIR=$PROFILE/plug-ins/mirage-gimp
make -s -C "$HERE" install-user BIN="$BIN" PLUGIN_DIR="$PLUGIN_DIR" MIRAGE_DEFAULT_MODELS="$SET" >/dev/null
INSTALLED=$PLUGIN_DIR/mirage-gimp

OUT=$TMP/out/
mkdir -p "$OUT"

# The cancel check: once the script has written cancel-marker, SIGKILL the plug-in process 2 s into its run,
# as GIMP's Cancel button does (GP_QUIT, then SIGKILL). The process is found by its executable, the copy in
# this temporary profile, so nothing else is touched.
cancel_watcher() {
    local i d pid=""
    for i in $(seq 1500); do [ -e "$OUT/cancel-marker" ] && break; sleep 0.1; done
    [ -e "$OUT/cancel-marker" ] || return 0
    for i in $(seq 300); do
        for d in /proc/[0-9]*; do
            if [ "$(readlink "$d/exe" 2>/dev/null)" = "$INSTALLED" ]; then pid=${d#/proc/}; break 2; fi
        done
        sleep 0.1
    done
    [ -n "$pid" ] || return 0
    sleep 2
    kill -KILL "$pid" 2>/dev/null && echo "$pid" >"$OUT/cancel-killed"
}

# run_gimp LOG SCRIPT RESULTS [VAR=VALUE...]: one headless GIMP session loading tests/common.scm and SCRIPT.
# -i no interface (no display needed), -d no brushes/patterns/..., -f no fonts, -c messages to the console.
# The definitions and the loads share one -b: each -b is evaluated on its own, so a definition made in
# one would not reach the next.
run_gimp() {
    local log=$1 script=$2 results=$3 rc
    shift 3
    set +e
    env -u MIRAGE_MODELS -u MIRAGE_CACHE GIMP2_DIRECTORY="$PROFILE" XDG_CACHE_HOME="$TMP/cache" "$@" timeout -k 10 "$GIMP_TIMEOUT" "$GIMP" -i -d -f -c \
        -b "(define mirage-out \"$OUT\") (define mirage-results \"$results\")
            (define mirage-set \"$SET\") (define mirage-grey-set \"$GREY\")
            (load \"$HERE/tests/common.scm\") (load \"$HERE/tests/$script\")" \
        -b '(gimp-quit 0)' >"$log" 2>&1
    rc=$?
    set -e
    if [ $rc -ne 0 ]; then
        cat "$log" >&2
        { [ $rc -eq 124 ] || [ $rc -eq 137 ]; } && fail "gimp ($script) did not finish within ${GIMP_TIMEOUT}s"
        fail "gimp ($script) exited with status $rc"
    fi
}

echo "gimp: $($GIMP --version)"
echo "model set: $SET${GREY:+, grey set: $GREY}"
cancel_watcher &
WATCHER=$!
run_gimp "$TMP/gimp.log" mirage-tests.scm results.txt
kill "$WATCHER" 2>/dev/null || true
wait "$WATCHER" 2>/dev/null || true
WATCHER=""
run_gimp "$TMP/gimp-env.log" mirage-env-tests.scm results-env.txt MIRAGE_MODELS=/nonexistent/mirage-env-set

# The plug-in's caches (in XDG_CACHE_HOME, here the temporary folder): its prompts were kept.
prompts=$(find "$TMP/cache/mirage/digests/prompts" -name '*.emb' 2>/dev/null | wc -l)
[ "$prompts" -gt 0 ] || fail "the plug-in kept no encoded prompt in $TMP/cache/mirage/digests/prompts"
echo "prompt cache: $prompts encoded prompts kept"

if ! python3 "$HERE/tests/check.py" "$OUT"; then
    for f in "$TMP/gimp.log" "$TMP/gimp-env.log" "$OUT/results.txt" "$OUT/results-env.txt"; do
        echo "--- $f:" >&2
        cat "$f" >&2 || true
    done
    fail "checks failed"
fi
echo "GIMP plug-in tests passed in $(($(date +%s) - start))s"
