"""numpy and Pillow, where installed (each test class is skipped, saying so, when its module is absent)."""

import os
import tempfile
import unittest

from _support import PILImage, context, mirage, numpy, pattern

np = numpy


@unittest.skipIf(numpy is None, "numpy is not installed")
class NumpyTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.ctx = context("fashion")

    def test_asarray_without_copy(self):
        img = pattern(5, 3, 3)
        a = np.asarray(img)
        self.assertEqual((a.shape, a.dtype), ((3, 5, 3), np.uint8))
        self.assertFalse(a.flags.writeable)  # the image is immutable
        import ctypes

        address = ctypes.cast(ctypes.c_char_p(img.tobytes()), ctypes.c_void_p).value
        self.assertEqual(a.__array_interface__["data"][0], address)  # the same memory: no copy
        self.assertEqual(a[1, 2].tolist(), list(img.getpixel(2, 1)))
        g = np.asarray(self.ctx.generate(steps=2)[0])
        self.assertEqual(g.shape, (28, 28))
        c = np.array(img)  # a writable copy
        c[0, 0, 0] = 7
        self.assertEqual(img.getpixel(0, 0)[0], pattern(5, 3, 3).getpixel(0, 0)[0])

    def test_arrays_as_inputs(self):
        img = self.ctx.generate(steps=2, seed=1)[0]
        want = self.ctx.img2img(img, strength=0.5, steps=4)
        a = np.array(img)
        self.assertEqual(self.ctx.img2img(a, strength=0.5, steps=4), want)
        self.assertEqual(self.ctx.img2img(a[:, :, None], strength=0.5, steps=4), want)  # (H, W, 1)
        pair = self.ctx.img2img([img, img], strength=0.5, steps=4)
        self.assertEqual(self.ctx.img2img(np.stack([a, a])[..., None], strength=0.5, steps=4), pair)  # (N, H, W, C)
        self.assertEqual(self.ctx.img2img(np.asfortranarray(a), strength=0.5, steps=4), want)  # any strides
        wide = np.zeros((28, 40), np.uint8)
        self.assertEqual(self.ctx.img2img(wide[:, 6:34], steps=2, strength=0.5)[0].size, (28, 28))  # a view
        rgb = np.repeat(a[:, :, None], 3, axis=2)
        with self.assertRaises(mirage.InvalidArgument):
            self.ctx.img2img(rgb, steps=2)
        self.assertEqual(self.ctx.img2img(rgb, strength=0.5, steps=4, convert=True), want)
        with self.assertRaises(TypeError):
            self.ctx.img2img(a.astype(np.float32), steps=2)
        with self.assertRaises(ValueError):
            self.ctx.img2img(np.zeros((28, 28, 2), np.uint8), steps=2)
        with self.assertRaises(ValueError):
            self.ctx.img2img(np.zeros((28,), np.uint8), steps=2)
        mask = np.zeros((28, 28), bool)
        mask[:, :10] = True
        out = self.ctx.inpaint(img, mask, steps=2)[0]
        self.assertTrue((np.asarray(out)[:, 10:] == a[:, 10:]).all())

    def test_latents_are_arrays(self):
        images = self.ctx.generate(count=2, steps=2)
        dist = self.ctx.encode(images)
        self.assertIsInstance(dist.mean, np.ndarray)
        self.assertEqual((dist.mean.shape, dist.mean.dtype), ((2, 3, 8, 8), np.float32))
        self.assertEqual(self.ctx.decode(dist.mean), self.ctx.decode(dist.mean.astype(np.float64)))
        self.assertEqual(self.ctx.decode(dist.mean[0])[0], self.ctx.decode(dist.mean)[0])  # (c, h, w)
        self.assertEqual(self.ctx.decode(dist.mean[:, :, ::-1, :].copy())[0].size, (28, 28))
        self.assertEqual(self.ctx.decode(dist.mean[:, :, ::-1, :]), self.ctx.decode(dist.mean[:, :, ::-1, :].copy()))
        t = mirage.Tensor(dist.mean.reshape(-1).tolist(), dist.mean.shape)
        self.assertTrue(np.array_equal(np.asarray(t), dist.mean))
        self.assertEqual(self.ctx.decode(t), self.ctx.decode(dist.mean))
        prior = self.ctx.sample_prior(2, seed=3)
        self.assertEqual(prior.shape, (2, 3, 8, 8))
        with self.assertRaises(TypeError):
            self.ctx.decode(np.zeros((1, 3, 8, 8), complex))
        with self.assertRaises(mirage.InvalidArgument):
            self.ctx.decode(np.zeros((3, 8), np.float32))

    def test_embeddings_are_arrays(self):
        ctx = context("fashion-text")
        pooled = ctx.embed("a hat")
        self.assertEqual((pooled.shape, pooled.dtype), ((384,), np.float32))
        self.assertAlmostEqual(float(np.linalg.norm(pooled)), 1.0, places=4)
        e = ctx.embed("a hat", with_tokens=True)
        self.assertEqual(e.tokens.shape, ctx.info.text_shape)
        self.assertTrue(np.array_equal(e.pooled, pooled))


@unittest.skipIf(PILImage is None, "Pillow is not installed")
class PillowTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.ctx = context("fashion")

    def test_to_and_from_pil(self):
        for c, mode in ((1, "L"), (3, "RGB"), (4, "RGBA")):
            img = pattern(9, 4, c)
            pil = img.to_pil()
            self.assertEqual((pil.mode, pil.size), (mode, (9, 4)))
            self.assertEqual(pil.tobytes(), img.tobytes())
            self.assertEqual(mirage.Image.from_pil(pil), img)
        conversions = {"1": "L", "LA": "RGBA", "P": "RGB", "I;16": "L", "CMYK": "RGB", "F": "L", "YCbCr": "RGB"}
        for mode, want in conversions.items():
            pil = PILImage.new(mode, (3, 2))
            self.assertEqual(mirage.Image.from_pil(pil).mode, want, mode)
        pal = PILImage.new("P", (2, 2))
        pal.info["transparency"] = 0
        self.assertEqual(mirage.Image.from_pil(pal).mode, "RGBA")

    def test_pil_input(self):
        img = self.ctx.generate(steps=2, seed=2)[0]
        want = self.ctx.img2img(img, strength=0.5, steps=4)
        self.assertEqual(self.ctx.img2img(img.to_pil(), strength=0.5, steps=4), want)
        self.assertEqual(self.ctx.img2img(img.to_pil().convert("RGB"), strength=0.5, steps=4, convert=True), want)
        out = self.ctx.inpaint(img.to_pil(), PILImage.new("1", (28, 28)), steps=2)  # a bilevel mask: all keep
        self.assertEqual(out[0], img)

    def test_png_decoder_agrees_with_pillow(self):
        base = PILImage.frombytes("RGBA", (13, 11), pattern(13, 11, 4).tobytes())
        cases = {
            "L": base.convert("L"),
            "LA": base.convert("LA"),
            "RGB": base.convert("RGB"),
            "RGBA": base,
            "P": base.convert("RGB").quantize(16),
            "1": base.convert("1"),
        }
        with tempfile.TemporaryDirectory() as tmp:
            for name, pil in cases.items():
                for bits in ({}, {"bits": 4} if name == "P" else {}):
                    path = os.path.join(tmp, f"{name}.png")
                    pil.save(path, **bits)
                    ours = mirage.Image.open(path)
                    theirs = mirage.Image.from_pil(PILImage.open(path))
                    self.assertEqual(ours, theirs, name)
            # 16-bit grey: we keep the high byte
            i16 = PILImage.new("I;16", (4, 1))
            i16.putdata([0, 256, 0x1234, 0xFFFF])
            path = os.path.join(tmp, "i16.png")
            i16.save(path)
            self.assertEqual(list(mirage.Image.open(path).tobytes()), [0, 1, 0x12, 0xFF])
            # Our PNG files open in Pillow
            for c in (1, 3, 4):
                img = pattern(7, 5, c)
                img.save(os.path.join(tmp, "ours.png"))
                self.assertEqual(mirage.Image.from_pil(PILImage.open(os.path.join(tmp, "ours.png"))), img)
            # Other formats through Pillow
            jpg = os.path.join(tmp, "x.bmp")
            pattern(6, 6, 3).save(jpg)
            self.assertEqual(mirage.Image.open(jpg), pattern(6, 6, 3))

    def test_resize_is_close_to_pillow(self):
        img = pattern(40, 30, 3)
        ours = img.resize((28, 28))
        theirs = mirage.Image.from_pil(img.to_pil().resize((28, 28), PILImage.BILINEAR))
        diff = max(abs(a - b) for a, b in zip(ours.tobytes(), theirs.tobytes()))
        self.assertLessEqual(diff, 2)


if __name__ == "__main__":
    unittest.main()
