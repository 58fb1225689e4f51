"""mirage.Image and the PNG codec, without the library: pixels, conversions, resizing, PNG files of every
kind (made here by a reference encoder that covers what the binding's own encoder does not write)."""

import os
import struct
import tempfile
import unittest
import zlib

from _support import mirage, pattern

from mirage import _png

_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def _chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _pack(samples, depth):
    """A row of samples at `depth` bits, packed MSB first."""
    if depth == 8:
        return bytes(samples)
    if depth == 16:
        return b"".join(struct.pack(">H", s) for s in samples)
    out, acc, n = bytearray(), 0, 0
    for s in samples:
        acc = acc << depth | s
        n += depth
        if n == 8:
            out.append(acc)
            acc, n = 0, 0
    if n:
        out.append(acc << (8 - n))
    return bytes(out)


def _filter(rows, bpp, kinds):
    """Filters rows with the filter types `kinds` (cycled)."""
    out = bytearray()
    prev = bytes(len(rows[0])) if rows else b""
    for i, row in enumerate(rows):
        f = kinds[i % len(kinds)]
        enc = bytearray()
        for x, v in enumerate(row):
            a = row[x - bpp] if x >= bpp else 0
            b = prev[x]
            c = prev[x - bpp] if x >= bpp else 0
            if f == 0:
                pred = 0
            elif f == 1:
                pred = a
            elif f == 2:
                pred = b
            elif f == 3:
                pred = (a + b) // 2
            else:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            enc.append((v - pred) & 0xFF)
        out.append(f)
        out += enc
        prev = row
    return bytes(out)


def make_png(pixels, width, height, ctype, depth, interlace=False, palette=None, trns=None, filters=(0, 1, 2, 3, 4)):
    """`pixels`: row-major tuples of full-precision samples."""
    spp = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[ctype]
    bpp = max(1, depth * spp // 8)
    passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
    raw = b""
    for x0, y0, dx, dy in passes:
        xs, ys = range(x0, width, dx), range(y0, height, dy)
        if not xs or not ys:
            continue
        rows = [_pack([s for x in xs for s in pixels[y * width + x]], depth) for y in ys]
        raw += _filter(rows, bpp, filters)
    png = _png.SIGNATURE + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, ctype, 0, 0, int(interlace)))
    if palette:
        png += _chunk(b"PLTE", b"".join(bytes(p) for p in palette))
    if trns is not None:
        png += _chunk(b"tRNS", trns)
    png += _chunk(b"tEXt", b"Comment\0ancillary chunks are skipped")
    idat = zlib.compress(raw)
    png += _chunk(b"IDAT", idat[: len(idat) // 2]) + _chunk(b"IDAT", idat[len(idat) // 2 :])  # split IDAT
    return png + _chunk(b"IEND", b"")


class ImageTest(unittest.TestCase):
    def test_construction_and_properties(self):
        img = mirage.Image(bytes(range(24)), 4, 2, 3)
        self.assertEqual((img.width, img.height, img.channels, img.size, img.mode), (4, 2, 3, (4, 2), "RGB"))
        self.assertEqual(img.tobytes(), bytes(range(24)))
        self.assertEqual(img.getpixel(1, 1), (15, 16, 17))
        self.assertEqual(bytes(img.data), bytes(range(24)))
        self.assertEqual(mirage.Image(bytearray(8), 4, 2).channels, 1)  # inferred
        self.assertEqual(repr(img), "<mirage.Image 4x2 RGB>")
        self.assertEqual(img, mirage.Image(bytes(range(24)), 4, 2, 3))
        self.assertNotEqual(img, mirage.Image(bytes(24), 4, 2, 3))
        self.assertEqual(hash(img), hash(mirage.Image(bytes(range(24)), 4, 2, 3)))

    def test_bad_construction(self):
        with self.assertRaises(ValueError):
            mirage.Image(bytes(7), 4, 2, 1)  # wrong length
        with self.assertRaises(ValueError):
            mirage.Image(bytes(16), 4, 2, 2)  # 2 channels
        with self.assertRaises(ValueError):
            mirage.Image(b"", 0, 2, 1)
        with self.assertRaises(TypeError):
            mirage.Image("pixels", 1, 1, 1)
        with self.assertRaises(TypeError):
            mirage.Image(None, 1, 1, 1)
        with self.assertRaises(TypeError):
            mirage.Image(bytes(4), 2.0, 2, 1)

    def test_array_interface(self):
        img = pattern(5, 3, 4)
        ai = img.__array_interface__
        self.assertEqual((ai["shape"], ai["typestr"], ai["version"]), ((3, 5, 4), "|u1", 3))
        self.assertIs(ai["data"], img.tobytes())  # the image's own bytes: numpy views them without a copy
        self.assertEqual(pattern(5, 3, 1).__array_interface__["shape"], (3, 5))

    def test_convert(self):
        rgb = mirage.Image(bytes([255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30]), 2, 2, 3)
        grey = rgb.convert("gray")
        # Pillow's luma, fixed point
        self.assertEqual(list(grey.tobytes()), [76, 150, 29, (10 * 19595 + 20 * 38470 + 30 * 7471 + 0x8000) >> 16])
        rgba = rgb.convert("RGBA")
        self.assertEqual(rgba.getpixel(1, 1), (10, 20, 30, 255))
        self.assertEqual(rgba.convert("rgb"), rgb)
        g = mirage.Image(bytes([7, 8]), 2, 1, 1)
        self.assertEqual(g.convert("rgba").tobytes(), bytes([7, 7, 7, 255, 8, 8, 8, 255]))
        self.assertEqual(g.convert("rgb").tobytes(), bytes([7, 7, 7, 8, 8, 8]))
        self.assertIs(g.convert("grey"), g)
        with self.assertRaises(mirage.InvalidArgument):
            g.convert("cmyk")
        with self.assertRaises(TypeError):
            g.convert(3)

    def test_resize(self):
        img = mirage.Image(bytes([100]) * (40 * 30 * 3), 40, 30, 3)
        small = img.resize((28, 28))
        self.assertEqual((small.size, small.channels), ((28, 28), 3))
        self.assertEqual(set(small.tobytes()), {100})  # a flat image stays flat
        big = pattern(4, 4).resize(9, 7)
        self.assertEqual(big.size, (9, 7))
        self.assertIs(small.resize((28, 28)), small)
        # shrinking averages: a 2x2 checkerboard of 0/255 to 1x1 is grey
        checker = mirage.Image(bytes([0, 255, 255, 0]), 2, 2, 1)
        self.assertIn(checker.resize((1, 1)).getpixel(0, 0), (127, 128))
        with self.assertRaises(ValueError):
            img.resize((0, 5))
        with self.assertRaises(TypeError):
            img.resize("big")


class PNGTest(unittest.TestCase):
    def test_round_trip_every_channel_count(self):
        for c in (1, 3, 4):
            img = pattern(13, 7, c)
            self.assertEqual(mirage.Image.from_png(img.to_png()), img)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "a.png")
            img = pattern(6, 5, 4)
            img.save(path)
            with open(path, "rb") as f:
                self.assertTrue(f.read(8) == _png.SIGNATURE)
            self.assertEqual(mirage.Image.open(path), img)
            self.assertEqual(mirage.open_image(path), img)

    def test_every_kind_of_png(self):
        w, h = 11, 9
        for ctype, depths in ((0, (1, 2, 4, 8, 16)), (2, (8, 16)), (4, (8, 16)), (6, (8, 16)), (3, (1, 2, 4, 8))):
            for depth in depths:
                for interlace in (False, True):
                    top = (1 << depth) - 1
                    spp = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[ctype]
                    pixels = [tuple(((x * 3 + y * 5 + k * 7) * 37) % (top + 1) for k in range(spp))
                              for y in range(h) for x in range(w)]
                    palette = None
                    if ctype == 3:
                        palette = [((i * 40) % 256, (i * 90) % 256, (i * 150) % 256) for i in range(top + 1)]
                    blob = make_png(pixels, w, h, ctype, depth, interlace, palette)
                    img = mirage.Image.from_png(blob)
                    to8 = (lambda v: v >> 8) if depth == 16 else (lambda v: v * 255 // top)
                    if ctype == 0:
                        want, c = bytes(to8(p[0]) for p in pixels), 1
                    elif ctype == 2:
                        want, c = bytes(to8(v) for p in pixels for v in p), 3
                    elif ctype == 4:
                        want, c = bytes(v for g, a in pixels for v in (to8(g),) * 3 + (to8(a),)), 4
                    elif ctype == 6:
                        want, c = bytes(to8(v) for p in pixels for v in p), 4
                    else:
                        want, c = bytes(v for p in pixels for v in palette[p[0]]), 3
                    label = f"colour type {ctype}, depth {depth}, interlaced {interlace}"
                    self.assertEqual((img.size, img.channels), ((w, h), c), label)
                    self.assertEqual(img.tobytes(), want, label)

    def test_transparency(self):
        pal = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
        img = mirage.Image.from_png(make_png([(0,), (1,), (2,), (1,)], 2, 2, 3, 8, palette=pal, trns=bytes([0, 128])))
        self.assertEqual(img.channels, 4)
        self.assertEqual([img.getpixel(x, y) for y in range(2) for x in range(2)],
                         [(255, 0, 0, 0), (0, 255, 0, 128), (0, 0, 255, 255), (0, 255, 0, 128)])
        img = mirage.Image.from_png(make_png([(5,), (6,)], 2, 1, 0, 8, trns=struct.pack(">H", 6)))
        self.assertEqual(img.tobytes(), bytes([5, 5, 5, 255, 6, 6, 6, 0]))
        img = mirage.Image.from_png(make_png([(1, 2, 3), (4, 5, 6)], 2, 1, 2, 8, trns=struct.pack(">3H", 1, 2, 3)))
        self.assertEqual(img.tobytes(), bytes([1, 2, 3, 0, 4, 5, 6, 255]))

    def test_bad_png(self):
        good = pattern(4, 4, 3).to_png()
        for bad, why in [(b"not a png at all", "signature"), (good[:40], "truncated"),
                         (good[:20] + bytes([good[20] ^ 1]) + good[21:], "CRC")]:
            with self.assertRaises(mirage.ImageError) as cm:
                mirage.Image.from_png(bad)
            self.assertEqual(cm.exception.status, 9)
            self.assertIn(why, str(cm.exception))
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "x.png")
            with open(path, "wb") as f:
                f.write(b"GIF89a....")
            try:
                import PIL  # noqa: F401
            except ImportError:
                with self.assertRaises(mirage.ImageError) as cm:
                    mirage.Image.open(path)
                self.assertIn("Pillow", str(cm.exception))
            else:
                with self.assertRaises(mirage.ImageError):
                    mirage.Image.open(path)
            with self.assertRaises(FileNotFoundError):
                mirage.Image.open(os.path.join(tmp, "missing.png"))


class TensorTest(unittest.TestCase):
    def test_tensor(self):
        t = mirage.Tensor([float(i) for i in range(24)], (2, 3, 4))
        self.assertEqual((t.shape, t.ndim, t.size, len(t)), ((2, 3, 4), 3, 24, 2))
        self.assertEqual(t.tolist()[1][2], [20.0, 21.0, 22.0, 23.0])
        self.assertEqual(t.__array_interface__["shape"], (2, 3, 4))
        self.assertIs(mirage.Latent, mirage.Tensor)
        with self.assertRaises(ValueError):
            mirage.Tensor([1.0, 2.0], (3,))


if __name__ == "__main__":
    unittest.main()
