"""Text-to-image on models/fashion-text (28x28 grey, MiniLM text encoder): prompts, negative prompts,
guidance, embeddings, interpolation; and what a set without text says."""

import math
import os
import subprocess
import sys
import tempfile
import textwrap
import unittest
from unittest import mock

from _support import context, flat, grey, mirage, model_dir

STEPS = 3


class FashionTextTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.ctx = context("fashion-text")

    def test_info(self):
        info = self.ctx.info
        self.assertEqual(info.name, "fashion-text")
        self.assertTrue(info.text_conditioned)
        tokens, width = info.text_shape
        self.assertEqual(width, 384)
        self.assertGreater(tokens, 2)
        self.assertIn("text_encoder", info.providers)

    def test_generate_with_prompts(self):
        a = self.ctx.generate("a pair of trousers", steps=STEPS, seed=1)
        self.assertEqual(a, self.ctx.generate("a pair of trousers", steps=STEPS, seed=1))
        self.assertNotEqual(a, self.ctx.generate("an ankle boot", steps=STEPS, seed=1))
        neg = self.ctx.generate("a shirt", negative="stripes", guidance=4.0, steps=STEPS, seed=1, count=2)
        self.assertEqual(len(neg), 2)
        self.assertEqual(self.ctx.generate(b"a pair of trousers", steps=STEPS, seed=1), a)  # UTF-8 bytes
        self.assertEqual(self.ctx.generate("", steps=STEPS, seed=1), self.ctx.generate(steps=STEPS, seed=1))
        self.assertEqual(len(self.ctx.generate("a shirt", guidance=1.0, steps=STEPS)), 1)
        with self.assertRaises(mirage.InvalidArgument) as cm:
            self.ctx.generate("a shirt", guidance=99.0, steps=STEPS)
        self.assertIn("guidance", str(cm.exception))

    def test_image_ops_with_prompts(self):
        src = self.ctx.generate("a bag", steps=STEPS, seed=2)[0]
        self.assertEqual(len(self.ctx.img2img(src, "a sneaker", strength=0.6, steps=STEPS)), 1)
        self.assertEqual(len(self.ctx.inpaint(src, grey(28, 28, 255), "a sneaker", steps=STEPS)), 1)
        self.assertEqual(len(self.ctx.denoise(src, prompt="a bag", steps=STEPS)), 1)

    def test_embed(self):
        pooled = self.ctx.embed("a red dress")
        values = flat(pooled)  # a numpy array, or array('f') without numpy
        self.assertEqual(len(values), 384)
        self.assertAlmostEqual(math.sqrt(sum(v * v for v in values)), 1.0, places=4)
        both = self.ctx.embed("a red dress", with_tokens=True)
        self.assertIsInstance(both, mirage.Embedding)
        self.assertEqual(tuple(both.tokens.shape), self.ctx.info.text_shape)
        self.assertEqual(flat(both.pooled), values)
        self.assertNotEqual(flat(self.ctx.embed("a coat")), values)

    def test_embed_without_numpy(self):
        from array import array

        with mock.patch("mirage._context._numpy", return_value=None):
            pooled = self.ctx.embed("a red dress")
            self.assertIsInstance(pooled, array)
            self.assertEqual(pooled.typecode, "f")
            both = self.ctx.embed("a red dress", with_tokens=True)
            self.assertIsInstance(both.tokens, mirage.Tensor)
            self.assertEqual(both.tokens.shape, self.ctx.info.text_shape)

    def test_interpolate(self):
        progress = []
        frames = self.ctx.interpolate(["a shirt", "a boot", "a bag"], 4, steps=STEPS, seed=3,
                                      on_progress=lambda s, t: progress.append((s, t)))
        self.assertEqual(len(frames), 4)
        self.assertEqual(progress[-1], (4 * STEPS, 4 * STEPS))  # counted over all frames
        again = self.ctx.interpolate(("a shirt", "a boot", "a bag"), 4, steps=STEPS, seed=3, batch=2)
        self.assertEqual(len(again), 4)
        with self.assertRaises(mirage.InvalidArgument):
            self.ctx.interpolate(["only one"], 4, steps=STEPS)
        with self.assertRaises(mirage.InvalidArgument):
            self.ctx.interpolate(["a", "b"], 1, steps=STEPS)
        with self.assertRaises(TypeError):
            self.ctx.interpolate("a shirt", 4)
        with self.assertRaises(TypeError):
            self.ctx.interpolate(["a", None], 4)
        with self.assertRaises(mirage.InvalidArgument):
            self.ctx.interpolate(["a", "b\0c"], 4)
        with self.assertRaises(mirage.InvalidArgument) as cm:
            self.ctx.interpolate(["a", b"\xff\xfe"], 2, steps=STEPS)
        self.assertTrue(cm.exception.from_library)
        self.assertIn("prompts[1]", str(cm.exception))
        with self.assertRaises(mirage.Cancelled):
            self.ctx.interpolate(["a", "b"], 2, steps=STEPS, on_progress=lambda s, t: False)

    def test_bad_text(self):
        with self.assertRaises(mirage.InvalidArgument) as cm:
            self.ctx.generate(b"caf\xe9", steps=STEPS)  # Latin-1, not UTF-8
        self.assertTrue(cm.exception.from_library)
        self.assertIn("UTF-8", str(cm.exception))
        with self.assertRaises(mirage.InvalidArgument) as cm:
            self.ctx.embed(b"\xc3")
        self.assertTrue(cm.exception.from_library)
        for text in ("a\0b", b"a\0b"):
            with self.assertRaises(mirage.InvalidArgument) as cm:
                self.ctx.embed(text)
            self.assertFalse(cm.exception.from_library)
            self.assertIn("NUL", str(cm.exception))
            with self.assertRaises(ValueError):  # InvalidArgument is a ValueError too
                self.ctx.generate(text, steps=STEPS)
            with self.assertRaises(mirage.InvalidArgument):
                self.ctx.generate(negative=text, steps=STEPS)
        with self.assertRaises(mirage.InvalidArgument):
            self.ctx.generate("\ud800", steps=STEPS)  # a lone surrogate cannot be UTF-8
        for bad in (None, 3, ["a"]):
            with self.assertRaises(TypeError):
                self.ctx.embed(bad)
        with self.assertRaises(TypeError):
            self.ctx.generate(prompt=3, steps=STEPS)


class NoTextTest(unittest.TestCase):
    def test_a_set_without_text(self):
        ctx = context("fashion")
        for call in (lambda: ctx.generate("a shirt", steps=2), lambda: ctx.generate(negative="x", steps=2),
                     lambda: ctx.embed("a shirt"), lambda: ctx.interpolate(["a", "b"], 2, steps=2)):
            with self.assertRaises(mirage.Unsupported) as cm:
                call()
            self.assertEqual(cm.exception.status, 6)
            self.assertTrue(cm.exception.from_library)
            self.assertIn("text", str(cm.exception))


if __name__ == "__main__":
    unittest.main()


class PromptCacheTest(unittest.TestCase):
    """``init_runtime(prompt_cache=True)``: a prompt drawn before, in another process, loads no text encoder
    and gives the same pixels."""

    CODE = """
        import hashlib, sys
        import mirage
        lines = []
        mirage.init_runtime(log_level="info", log_callback=lambda level, m: lines.append(m),
                            digest_cache_dir=sys.argv[1], prompt_cache=(sys.argv[3] == "on"))
        ctx = mirage.Context(sys.argv[2])
        image = ctx.generate("a pair of trousers", steps=2, seed=3)[0]
        print("PIXELS", hashlib.sha256(image.tobytes()).hexdigest())
        print("ENCODER", any("tokenizer and session made" in m for m in lines))
        print("PROVIDER", ctx.info.providers["text_encoder"])
    """

    def run_once(self, cache, mode):
        env = dict(os.environ, MIRAGE_LIBRARY=mirage.load_library().path,
                   PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(mirage.__file__))))
        r = subprocess.run([sys.executable, "-c", textwrap.dedent(self.CODE), cache, model_dir("fashion-text"), mode],
                           capture_output=True, text=True, env=env, timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        return dict(line.split(" ", 1) for line in r.stdout.splitlines())

    def test_a_cached_prompt_loads_no_text_encoder(self):
        with tempfile.TemporaryDirectory() as cache:
            off = self.run_once(cache, "off")
            self.assertEqual(off["ENCODER"], "True")
            self.assertFalse(os.path.exists(os.path.join(cache, "prompts")))
            first = self.run_once(cache, "on")
            self.assertEqual(first["ENCODER"], "True")
            self.assertEqual(first["PIXELS"], off["PIXELS"])
            self.assertGreater(len(os.listdir(os.path.join(cache, "prompts"))), 0)
            cached = self.run_once(cache, "on")
            self.assertEqual(cached["ENCODER"], "False")
            self.assertEqual(cached["PIXELS"], off["PIXELS"])
            self.assertEqual(cached["PROVIDER"], off["PROVIDER"])
