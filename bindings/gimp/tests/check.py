#!/usr/bin/env python3
"""Judges what tests/mirage-tests.scm left in OUT (results.txt and PNGs). Standard library only: the PNGs
are decoded here (zlib + the five row filters; 8-bit grey, grey+alpha, RGB, RGBA, non-interlaced, which
is what file-png-save writes for these layers). Prints one line per check; exits 1 if any failed.

usage: check.py OUT
"""

import os
import struct
import sys
import zlib

CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}
BLUE = (40, 90, 200)


def read_png(path):
    """(width, height, rows): rows[y] is a list of (r, g, b, a) tuples."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path}: not a PNG")
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    width, height, depth, colour, _, _, interlace = header
    if depth != 8 or colour not in CHANNELS or interlace:
        raise ValueError(f"{path}: unsupported PNG (depth {depth}, colour type {colour}, interlace {interlace})")
    bpp = CHANNELS[colour]
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows, prev, at = [], bytearray(stride), 0
    for _ in range(height):
        kind, line = raw[at], bytearray(raw[at + 1 : at + 1 + stride])
        at += 1 + stride
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + a) & 255
            elif kind == 2:
                line[i] = (line[i] + b) & 255
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 255
            elif kind != 0:
                raise ValueError(f"{path}: bad filter {kind}")
        prev = line
        pixels = []
        for x in range(width):
            px = line[x * bpp : (x + 1) * bpp]
            if bpp == 1:
                pixels.append((px[0], px[0], px[0], 255))
            elif bpp == 2:
                pixels.append((px[0], px[0], px[0], px[1]))
            elif bpp == 3:
                pixels.append((px[0], px[1], px[2], 255))
            else:
                pixels.append(tuple(px))
        rows.append(pixels)
    return width, height, rows


def flat(rows):
    return [p for row in rows for p in row]


def spread(pixels):
    """Largest per-channel standard deviation over the visible pixels (0 for a blank image)."""
    visible = [p for p in pixels if p[3] > 0]
    if not visible:
        return 0.0
    best = 0.0
    for c in range(4):
        values = [p[c] for p in visible]
        mean = sum(values) / len(values)
        best = max(best, (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5)
    return best


def mean_diff(a, b):
    return sum(abs(x - y) for p, q in zip(a, b) for x, y in zip(p, q)) / (4 * len(a))


class Checker:
    def __init__(self, out):
        self.out = out
        self.failures = 0
        self.results = self.read("results.txt")
        self.env_results = self.read("results-env.txt")

    def read(self, name):
        results = {}
        path = os.path.join(self.out, name)
        if os.path.exists(path):
            for line in open(path, encoding="utf-8"):
                key, _, value = line.rstrip("\n").partition(" ")
                results[key] = value
        return results

    def check(self, name, ok, detail=""):
        print(f"{'ok  ' if ok else 'FAIL'} {name}" + (f": {detail}" if detail and detail != "ok" else ""))
        if not ok:
            self.failures += 1
        return ok

    def png(self, name):
        path = os.path.join(self.out, name)
        if not self.check(f"{name} saved", os.path.exists(path)):
            return None
        width, height, rows = read_png(path)
        return width, height, flat(rows)

    def result(self, key):
        return self.results.get(key)


def main():
    c = Checker(sys.argv[1])
    r = c.result
    c.check("script ran to the end", r("done") is not None, "" if r("done") is not None else "no 'done' in results.txt")
    c.check("procedures registered", r("registered") == "1 1 1", r("registered"))

    inp = c.png("input.png")
    if inp:
        c.check("input is the fill", all(p == BLUE + (255,) for p in inp[2]))

    # generate
    c.check("generate succeeded", r("generate") == "ok", r("generate"))
    c.check("generate added one layer", r("generate-layers") == "2", r("generate-layers"))
    c.check("layer named after the prompt", r("generate-name") == "a red apple", r("generate-name"))
    c.check("layer has the image's size", r("generate-size") == "64 64", r("generate-size"))
    gen = c.png("generate.png")
    if gen and inp:
        c.check("generated is 64x64", gen[:2] == (64, 64), f"{gen[:2]}")
        c.check("generated is not blank", spread(gen[2]) > 8, f"spread {spread(gen[2]):.1f}")
        c.check("generated is not the input", mean_diff(gen[2], inp[2]) > 10, f"{mean_diff(gen[2], inp[2]):.1f}")
    bg = c.png("generate-bg.png")
    if bg and inp:
        c.check("generate left the input layer alone", bg[2] == inp[2])
    again = c.png("generate-again.png")
    if again and gen:
        c.check("same seed, same pixels", again[2] == gen[2], f"mean diff {mean_diff(again[2], gen[2]):.2f}")
    c.check("empty model set uses the compiled-in default", r("generate-default") == "ok", r("generate-default"))
    default = c.png("generate-default.png")
    if default:
        c.check("default-set generation is not blank", spread(default[2]) > 8, f"spread {spread(default[2]):.1f}")

    # img2img
    c.check("img2img succeeded", r("img2img") == "ok", r("img2img"))
    c.check("img2img added no layer", r("img2img-layers") == "1", r("img2img-layers"))
    i2i = c.png("img2img.png")
    if i2i and inp:
        c.check("img2img is 64x64", i2i[:2] == (64, 64), f"{i2i[:2]}")
        c.check("img2img changed the layer", mean_diff(i2i[2], inp[2]) > 5, f"{mean_diff(i2i[2], inp[2]):.1f}")
        c.check("img2img is not blank", spread(i2i[2]) > 2, f"spread {spread(i2i[2]):.1f}")

    # inpaint
    c.check("inpaint succeeded", r("inpaint") == "ok", r("inpaint"))
    c.check("inpaint added no layer", r("inpaint-layers") == "1", r("inpaint-layers"))
    inp_png = c.png("inpaint.png")
    if inp_png and inp:
        w = inp_png[0]
        inside = [i for i in range(w * w) if 16 <= i % w < 48 and 16 <= i // w < 48]
        outside = [i for i in range(w * w) if not (16 <= i % w < 48 and 16 <= i // w < 48)]
        kept = sum(1 for i in outside if inp_png[2][i][:3] == BLUE and inp_png[2][i][3] == 255)
        changed = sum(1 for i in inside if inp_png[2][i] != inp[2][i])
        c.check("inpaint kept the unselected pixels", kept == len(outside), f"{kept}/{len(outside)}")
        c.check("inpaint changed the selection", changed > len(inside) // 2, f"{changed}/{len(inside)}")

    # failures
    bad = r("bad-generate") or ""
    c.check("missing model set fails", bad.startswith("error"), bad)
    c.check("with the library's message", "model not found" in bad and "/nonexistent/mirage-models" in bad, bad)
    bad = r("bad-img2img") or ""
    c.check("img2img with a missing model set fails", "model not found" in bad, bad)
    bad = r("bad-strength") or ""
    c.check("strength 1.5 fails with the library's message", "invalid argument" in bad and "strength" in bad, bad)
    bad = r("bad-steps") or ""
    c.check("0 steps fails with the library's message", "invalid argument" in bad and "steps" in bad, bad)
    bad = r("bad-inpaint") or ""
    c.check("inpaint without a selection fails", "selection" in bad, bad)
    c.check(
        "failures left the layer count",
        r("bad-layers-before") == "1" and r("bad-layers-after") == "1",
        f"{r('bad-layers-before')} -> {r('bad-layers-after')}",
    )
    badimg = c.png("bad.png")
    if badimg and inp:
        c.check("failures left the pixels", badimg[2] == inp[2])

    # cancel (the plug-in killed mid-generation, as GIMP's Cancel does)
    c.check("watcher killed the plug-in", os.path.exists(os.path.join(c.out, "cancel-killed")))
    c.check("killed run fails", (r("cancel") or "").startswith("error"), r("cancel"))
    c.check("killed run left the layer count", r("cancel-layers") == "1", r("cancel-layers"))
    cancelled = c.png("cancel.png")
    if cancelled and inp:
        c.check("killed run left the pixels", cancelled[2] == inp[2])

    # grey set
    if r("grey-skipped") is None:
        c.check("grey img2img succeeded", r("grey-img2img") == "ok", r("grey-img2img"))
        g = c.png("grey-img2img.png")
        if g:
            c.check("grey img2img changed the layer", any(p[0] != 30 for p in g[2]))
        c.check("grey generate succeeded", r("grey-generate") == "ok", r("grey-generate"))
        c.check("grey generate added a layer", r("grey-generate-layers") == "2", r("grey-generate-layers"))
        g = c.png("grey-generate.png")
        if g:
            c.check("grey generated is not blank", spread(g[2]) > 8, f"spread {spread(g[2]):.1f}")
    else:
        print("skip grey set (no fashion-text set in MODELS_DIR)")

    # session 2: MIRAGE_MODELS=/nonexistent/mirage-env-set
    e = c.env_results.get
    c.check("env session ran to the end", e("done") is not None, "" if e("done") is not None else "no 'done' in results-env.txt")
    empty = e("env-empty") or ""
    c.check("empty model set takes $MIRAGE_MODELS", "model not found" in empty and "/nonexistent/mirage-env-set" in empty, empty)
    c.check("and adds no layer", e("env-empty-layers") == "1", e("env-empty-layers"))
    c.check("an explicit model set beats $MIRAGE_MODELS", e("env-explicit") == "ok", e("env-explicit"))
    c.check("and adds its layer", e("env-explicit-layers") == "2", e("env-explicit-layers"))

    print(f"{c.failures} failed" if c.failures else "all checks passed")
    return 1 if c.failures else 0


if __name__ == "__main__":
    sys.exit(main())
