#!/bin/sh
# Builds and runs the C# binding's tests with mono:
#   1. Mirage.cs alone as Mirage.dll (warnings are errors): the drop-in file compiles on its own;
#   2. the struct layout check: a C program made from mirage.h (tests/layout.awk) prints every struct's
#      sizeof/offsetof and every constant; MirageTests.exe --layout compares them with Marshal.SizeOf/OffsetOf
#      and the binding's enums;
#   3. tests/MirageTests.cs (every method on MODELS_DIR/fashion and fashion-text, emoji when present; jobs, Tasks,
#      targets; a pack of fashion made with LIBDIR/mirage pack, when LIBDIR has the CLI, opened from memory);
#   4. the README's example (tests/Example.cs, checked identical to the README's) against Mirage.dll alone,
#      finding the library through a Mirage.dll.config dllmap instead of LD_LIBRARY_PATH.
# Mirage.cs's Unity and .NET Core branches are compiled too, against stand-ins (tests/PlatformStubs.cs).
# Exits non-zero when anything fails.
#
# usage: bindings/csharp/run-tests.sh LIBDIR MODELS_DIR
#   LIBDIR      the folder of libmirage.so (e.g. target/debug)
#   MODELS_DIR  the folder of the model sets (e.g. models): fashion, fashion-text, minilm[, emoji]
# Needs: mcs and mono (Debian: apt-get install mono-mcs mono-runtime), a C compiler (cc), awk.
set -eu

if [ $# -ne 2 ]; then
    echo "usage: $0 LIBDIR MODELS_DIR" >&2
    exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
libdir=$(cd "$1" && pwd)
models=$(cd "$2" && pwd)
header="$here/../../include/mirage.h"
for tool in mcs mono cc awk; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "$0: $tool not found (Debian: apt-get install mono-mcs mono-runtime gcc)" >&2
        exit 2
    fi
done
if [ ! -f "$libdir/libmirage.so" ]; then
    echo "$0: no libmirage.so in $libdir" >&2
    exit 2
fi

build=$(mktemp -d "${TMPDIR:-/tmp}/mirage-csharp.XXXXXX")
trap 'rm -rf "$build"' EXIT INT TERM
start=$(date +%s)
failed=0

echo "== build: Mirage.dll, MirageTests.exe, Example.exe"
mcs -nologo -warn:4 -warnaserror -target:library -out:"$build/Mirage.dll" "$here/Mirage.cs"
mcs -nologo -warn:4 -warnaserror -debug -out:"$build/MirageTests.exe" "$here/Mirage.cs" "$here/tests/MirageTests.cs"
mkdir "$build/example"
cp "$build/Mirage.dll" "$build/example/"
mcs -nologo -warn:4 -warnaserror -r:"$build/example/Mirage.dll" -out:"$build/example/Example.exe" "$here/tests/Example.cs"
# The Unity and .NET Core 3+ branches of Mirage.cs, against stand-ins of what those platforms provide.
for platform in UNITY_5_3_OR_NEWER NETCOREAPP3_0_OR_GREATER; do
    mcs -nologo -warn:4 -warnaserror -target:library -define:$platform -out:"$build/Mirage-$platform.dll" \
        "$here/Mirage.cs" "$here/tests/PlatformStubs.cs"
done
# README.md's example is tests/Example.cs (after its 3 comment lines).
sed -n '4,$p' "$here/tests/Example.cs" >"$build/example.expected"
awk '/^## A complete example/ { on = 1 } on && /^```csharp$/ { code = 1; next } code && /^```$/ { exit } code' \
    "$here/README.md" >"$build/example.readme"
if ! cmp -s "$build/example.expected" "$build/example.readme"; then
    diff "$build/example.expected" "$build/example.readme" || true
    echo "README.md's example differs from tests/Example.cs"
    failed=1
fi

export LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

echo "== layout: mirage.h (cc) vs Mirage.cs (Marshal)"
awk -f "$here/tests/layout.awk" "$header" >"$build/layout.c"
cc -std=c11 -Wall -Werror -I"$(dirname "$header")" -o "$build/layout" "$build/layout.c"
"$build/layout" >"$build/layout.txt"
if ! mono --debug "$build/MirageTests.exe" --layout "$build/layout.txt" >"$build/layout.log"; then
    cat "$build/layout.log"
    failed=1
fi
tail -n 1 "$build/layout.log"

# Pack files of fashion (and emoji, when present) for the pack and FromMemory tests, made by the CLI when LIBDIR
# has it (target/debug does): `mirage pack DIR -o FILE`.
mkdir "$build/packs"
if [ -x "$libdir/mirage" ]; then
    for set in fashion emoji; do
        [ -d "$models/$set" ] || continue
        echo "== pack: mirage pack $models/$set"
        if ! "$libdir/mirage" pack "$models/$set" -o "$build/packs/$set.mirage" >"$build/pack.log" 2>&1; then
            cat "$build/pack.log"
            echo "mirage pack $set failed"
            failed=1
        fi
    done
else
    echo "== pack: no mirage CLI in $libdir: the pack tests are skipped"
fi

echo "== tests: MirageTests.exe $models"
MIRAGE_TEST_PACKS="$build/packs" mono --debug "$build/MirageTests.exe" "$models" || failed=1

echo "== example: README's example with a dllmap, no LD_LIBRARY_PATH"
cat >"$build/example/Mirage.dll.config" <<EOF
<configuration>
  <dllmap dll="mirage" target="$libdir/libmirage.so" />
</configuration>
EOF
mkdir "$build/example/out"
if (unset LD_LIBRARY_PATH; cd "$build/example" && mono Example.exe "$models/fashion-text" out >example.log 2>&1) &&
    [ "$(ls "$build/example/out" | wc -l)" -eq 7 ] && grep -q "worker: Cancelled" "$build/example/example.log"; then
    echo "example: ok"
else
    cat "$build/example/example.log"
    echo "example: FAILED"
    failed=1
fi

echo "== C# binding: $([ $failed -eq 0 ] && echo passed || echo FAILED) in $(($(date +%s) - start)) s"
exit $failed
