"""Bad input of every kind gives the binding's normal errors (a mirage.Error with the library's message, or
TypeError / ValueError for Python-level mistakes) and the process goes on."""

import os
import tempfile
import unittest

from _support import context, grey, mirage, model_dir, pattern

from mirage import _errors


class ErrorClassesTest(unittest.TestCase):
    def test_one_class_per_status(self):
        lib = mirage.load_library()
        for status in range(1, _errors.ERR_BUSY + 1):
            cls = _errors.error_class(status)
            self.assertTrue(issubclass(cls, mirage.Error))
            self.assertEqual(cls.STATUS, status)
            self.assertEqual(cls("x").status_name, lib.status_name(status))
        self.assertIs(_errors.error_class(999), mirage.Error)
        self.assertTrue(issubclass(mirage.ModelNotFound, mirage.ModelError))
        self.assertTrue(issubclass(mirage.InvalidModel, mirage.ModelError))
        self.assertTrue(issubclass(mirage.InvalidArgument, ValueError))
        e = mirage.Error("something", status=999, status_name="unknown status")
        self.assertEqual((e.status, str(e)), (999, "unknown status: something"))


class BadInputTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.ctx = context("fashion")

    def assertLibraryError(self, cls, call, *fragments):
        with self.assertRaises(cls) as cm:
            call()
        e = cm.exception
        self.assertTrue(e.from_library, f"{e!r} should carry the library's message")
        self.assertEqual(e.status, cls.STATUS)
        for f in fragments:
            self.assertIn(f, str(e))
        return e

    def test_model_dirs(self):
        self.assertLibraryError(mirage.ModelNotFound, lambda: mirage.Context("/no/such/models"), "/no/such/models")
        with tempfile.TemporaryDirectory() as tmp:
            self.assertLibraryError(mirage.ModelNotFound, lambda: mirage.Context(tmp), "manifest.json")
            with open(os.path.join(tmp, "manifest.json"), "w") as f:
                f.write("{ not json")
            self.assertLibraryError(mirage.InvalidModel, lambda: mirage.Context(tmp))
        self.assertLibraryError(mirage.InvalidArgument, lambda: mirage.Context(b"/tmp/\xff\xfe"), "UTF-8")
        for bad in (None, 3, ["models"]):
            with self.assertRaises(TypeError):
                mirage.Context(bad)
        with self.assertRaises(mirage.InvalidArgument):
            mirage.Context("models\0/fashion")
        with self.assertRaises(mirage.InvalidArgument):
            mirage.Context(model_dir("fashion"), provider="quantum")
        with self.assertRaises(TypeError):
            mirage.Context(model_dir("fashion"), provider=1.5)
        self.assertLibraryError(mirage.InvalidArgument, lambda: mirage.Context(model_dir("fashion"), provider=77),
                                "provider")

    def test_parameters(self):
        g = self.ctx.generate
        self.assertLibraryError(mirage.InvalidArgument, lambda: g(steps=0), "steps")
        self.assertLibraryError(mirage.InvalidArgument, lambda: g(steps=1001), "steps")
        self.assertLibraryError(mirage.InvalidArgument, lambda: g(steps=2, count=0), "count")
        self.assertLibraryError(mirage.InvalidArgument, lambda: g(steps=2, sampler="euler"), "sampler")
        self.assertLibraryError(mirage.InvalidArgument, lambda: g(steps=2, eta=2.0), "eta")
        self.assertLibraryError(mirage.InvalidArgument, lambda: g(steps=2, eta=float("nan")), "eta")
        self.assertLibraryError(mirage.InvalidArgument, lambda: self.ctx.img2img(grey(28, 28), strength=1.5, steps=2),
                                "strength")
        self.assertLibraryError(mirage.InvalidArgument, lambda: self.ctx.sample_prior(0), "count")
        for bad in (-1, 1 << 32):
            with self.assertRaises(mirage.InvalidArgument):  # does not fit uint32_t: refused before the call
                g(steps=bad)
        with self.assertRaises(mirage.InvalidArgument):
            g(steps=2, seed=-1)
        with self.assertRaises(mirage.InvalidArgument):
            g(steps=2, format="cmyk")
        for kwargs in ({"steps": "4"}, {"steps": 2.0}, {"steps": True}, {"seed": None}, {"count": "2"},
                       {"eta": "0"}, {"guidance": "3"}, {"sampler": 3}, {"format": 3}, {"on_progress": 3},
                       {"on_preview": "no"}):
            with self.assertRaises(TypeError, msg=str(kwargs)):
                g(**dict({"steps": 2}, **kwargs))
        with self.assertRaises(TypeError):
            g(steps=2, unknown=1)

    def test_images(self):
        op = self.ctx.img2img
        self.assertLibraryError(mirage.InvalidArgument, lambda: op(grey(32, 32), steps=2), "32x32", "28x28")
        self.assertLibraryError(mirage.InvalidArgument, lambda: op(pattern(28, 28, 3), steps=2), "channels")
        self.assertLibraryError(mirage.InvalidArgument, lambda: op([], steps=2), "count")
        self.assertLibraryError(mirage.InvalidArgument, lambda: self.ctx.encode(grey(27, 28)), "27x28")
        for bad in (None, 3, b"\x89PNG", object(), [grey(28, 28), None]):
            with self.assertRaises(TypeError, msg=repr(bad)):
                op(bad, steps=2)
        with self.assertRaises(FileNotFoundError):
            op("/no/such/image.png", steps=2)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "bad.png")
            with open(path, "wb") as f:
                f.write(b"\x89PNG\r\n\x1a\nbroken")
            with self.assertRaises(mirage.ImageError):
                op(path, steps=2)

    def test_masks(self):
        img = grey(28, 28, 100)
        inpaint = self.ctx.inpaint
        self.assertLibraryError(mirage.InvalidArgument, lambda: inpaint(img, grey(14, 14), steps=2), "masks[0]",
                                "14x14")
        self.assertLibraryError(mirage.InvalidArgument, lambda: inpaint(img, pattern(28, 28, 3), steps=2), "GRAY8")
        self.assertEqual(len(inpaint(img, pattern(28, 28, 3), steps=2, convert=True)), 1)
        self.assertEqual(len(inpaint(img, grey(14, 14, 255), steps=2, resize=True)), 1)
        with self.assertRaises(TypeError):
            inpaint(img, None, steps=2)
        with self.assertRaises(mirage.InvalidArgument):
            inpaint([img, img], [grey(28, 28)] * 3, steps=2)

    def test_latents(self):
        decode = self.ctx.decode
        self.assertLibraryError(mirage.InvalidArgument, lambda: decode(mirage.Tensor([0.0] * 16, (1, 1, 4, 4))),
                                "shape")
        self.assertLibraryError(mirage.InvalidArgument,
                                lambda: decode(mirage.Tensor([float("inf")] * 192, (1, 3, 8, 8))), "infinite")
        with self.assertRaises(mirage.InvalidArgument):
            decode(mirage.Tensor([0.0] * 16, (2, 2, 2, 2, 1)))  # 5-D: not a latent batch
        for bad in (None, [0.0] * 192, "latents"):
            with self.assertRaises(TypeError):
                decode(bad)
        z = self.ctx.sample_prior(1)
        bad = mirage.Tensor([0.0] * 16, (1, 1, 4, 4))
        self.assertLibraryError(mirage.InvalidArgument, lambda: self.ctx.sample(z, bad), "shape")

    def test_process_survives_and_context_still_works(self):
        self.assertEqual(len(self.ctx.generate(steps=2)), 1)


if __name__ == "__main__":
    unittest.main()
