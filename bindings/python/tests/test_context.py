"""Every Context method on models/fashion (28x28 grey, VAE + U-Net, no text): results, determinism,
callbacks, cancellation, closing, threads, handles."""

import gc
import threading
import time
import unittest
import weakref
from unittest import mock

from _support import LOG, context, flat, grey, mirage, model_dir

STEPS = 4  # few steps: the tests are about the binding, not the images


class FashionTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.ctx = context("fashion")

    def test_info(self):
        info = self.ctx.info
        self.assertEqual((info.name, info.width, info.height, info.channels), ("fashion", 28, 28, 1))
        self.assertEqual(info.size, (28, 28))
        self.assertEqual(info.latent_shape, (3, 8, 8))
        self.assertFalse(info.prior_sampleable)  # models/fashion: a latent for diffusion, not for sampling
        self.assertIsNone(info.text_shape)
        self.assertFalse(info.text_conditioned)
        self.assertEqual(set(info.providers), {"vae_encoder", "vae_decoder", "unet"})
        for p in info.providers.values():
            self.assertIn(p, ("cpu", "cuda", "tensorrt"))
        self.assertIn("fashion", repr(self.ctx))

    def test_generate(self):
        images = self.ctx.generate(count=2, steps=STEPS, seed=1)
        self.assertEqual(len(images), 2)
        for img in images:
            self.assertIsInstance(img, mirage.Image)
            self.assertEqual((img.width, img.height, img.channels), (28, 28, 1))
            self.assertEqual(len(img.tobytes()), 28 * 28)
        self.assertGreater(len(set(images[0].tobytes())), 8)  # not a flat image

    def test_formats(self):
        g = self.ctx.generate(steps=STEPS, seed=2)[0]
        rgb = self.ctx.generate(steps=STEPS, seed=2, format="rgb")[0]
        rgba = self.ctx.generate(steps=STEPS, seed=2, format="RGBA")[0]
        self.assertEqual((rgb.channels, rgba.channels), (3, 4))
        self.assertEqual(rgb, g.convert("rgb"))  # grey replicated
        self.assertEqual(rgba, g.convert("rgba"))  # alpha 255

    def test_determinism(self):
        a = self.ctx.generate(count=2, steps=STEPS, seed=42)
        b = self.ctx.generate(count=2, steps=STEPS, seed=42)
        c = self.ctx.generate(count=2, steps=STEPS, seed=43)
        self.assertEqual([i.tobytes() for i in a], [i.tobytes() for i in b])
        self.assertNotEqual(a[0].tobytes(), c[0].tobytes())
        d = self.ctx.generate(steps=STEPS, seed=42, sampler="dpm++2m")
        self.assertEqual(d, self.ctx.generate(steps=STEPS, seed=42, sampler="DPM++2M"))
        e1 = self.ctx.generate(steps=STEPS, seed=5, eta=1.0)
        self.assertEqual(e1, self.ctx.generate(steps=STEPS, seed=5, eta=1.0))

    def test_img2img_and_denoise(self):
        src = self.ctx.generate(count=2, steps=STEPS, seed=3)
        out = self.ctx.img2img(src, strength=0.5, steps=STEPS, seed=1)
        self.assertEqual(len(out), 2)
        self.assertEqual(out, self.ctx.img2img(src, strength=0.5, steps=STEPS, seed=1))
        one = self.ctx.img2img(src[0], strength=0.5, steps=STEPS, seed=1)
        self.assertEqual(one, [out[0]])
        clean = self.ctx.denoise(src[0], strength=0.1, steps=10)
        self.assertEqual(len(clean), 1)
        self.assertEqual(clean[0].size, (28, 28))
        self.assertEqual(clean, self.ctx.denoise(src[0], strength=0.1, steps=10))

    def test_inputs_of_every_kind(self):
        img = self.ctx.generate(steps=STEPS, seed=4)[0]
        want = self.ctx.img2img(img, strength=0.5, steps=STEPS)
        import os
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "in.png")
            img.save(path)
            self.assertEqual(self.ctx.img2img(path, strength=0.5, steps=STEPS), want)
            import pathlib

            self.assertEqual(self.ctx.img2img(pathlib.Path(path), strength=0.5, steps=STEPS), want)
        # resize / convert only when asked
        big_rgb = img.convert("rgb").resize((56, 56))
        with self.assertRaises(mirage.InvalidArgument) as cm:
            self.ctx.img2img(big_rgb, steps=STEPS)
        self.assertTrue(cm.exception.from_library)
        self.assertIn("28x28", str(cm.exception))
        out = self.ctx.img2img(big_rgb, strength=0.5, steps=STEPS, resize=True, convert=True)
        self.assertEqual((out[0].size, out[0].channels), ((28, 28), 1))

    def test_inpaint(self):
        img = self.ctx.generate(steps=STEPS, seed=5)[0]
        # invent the left half, keep the right half exactly
        mask = mirage.Image(bytes(255 if x < 14 else 0 for y in range(28) for x in range(28)), 28, 28, 1)
        out = self.ctx.inpaint(img, mask, steps=STEPS, seed=9)[0]
        for y in range(28):
            for x in range(14, 28):
                self.assertEqual(out.getpixel(x, y), img.getpixel(x, y))
        self.assertEqual(out, self.ctx.inpaint(img, mask, steps=STEPS, seed=9)[0])
        two = self.ctx.inpaint([img, img], mask, steps=STEPS, seed=9)  # one mask for all
        self.assertEqual(len(two), 2)
        with self.assertRaises(mirage.InvalidArgument):
            self.ctx.inpaint([img, img], [mask, mask, mask], steps=STEPS)

    def test_vae(self):
        images = self.ctx.generate(count=2, steps=STEPS, seed=6)
        dist = self.ctx.encode(images)
        self.assertIsInstance(dist, mirage.Distribution)
        self.assertEqual(tuple(dist.mean.shape), (2, 3, 8, 8))
        self.assertEqual(tuple(dist.logvar.shape), (2, 3, 8, 8))
        z = self.ctx.sample(dist.mean, dist.logvar, seed=1)
        self.assertEqual(flat(z), flat(self.ctx.sample(dist.mean, dist.logvar, seed=1)))
        self.assertNotEqual(flat(z), flat(self.ctx.sample(dist.mean, dist.logvar, seed=2)))
        decoded = self.ctx.decode(z)
        self.assertEqual(len(decoded), 2)
        self.assertEqual(decoded[0].size, (28, 28))
        self.assertEqual(self.ctx.decode(dist.mean, format="rgba")[0].channels, 4)
        prior = self.ctx.sample_prior(3, seed=7)
        self.assertEqual(tuple(prior.shape), (3, 3, 8, 8))
        self.assertEqual(flat(prior), flat(self.ctx.sample_prior(3, seed=7)))
        self.assertEqual(len(self.ctx.decode(prior)), 3)

    def test_vae_without_numpy(self):
        # The numpy-free path (Tensor) whether or not numpy is installed.
        with mock.patch("mirage._context._numpy", return_value=None):
            images = self.ctx.generate(count=2, steps=STEPS, seed=6)
            dist = self.ctx.encode(images)
            self.assertIsInstance(dist.mean, mirage.Tensor)
            self.assertEqual(dist.mean.shape, (2, 3, 8, 8))
            z = self.ctx.sample(dist.mean, dist.logvar, seed=1)
            self.assertIsInstance(z, mirage.Tensor)
            one = mirage.Tensor(z.data[: 3 * 8 * 8], (3, 8, 8))  # (c, h, w) is one latent
            self.assertEqual(self.ctx.decode(one)[0], self.ctx.decode(z)[0])
            self.assertIsInstance(self.ctx.sample_prior(1), mirage.Tensor)

    def test_progress_and_preview(self):
        progress, previews = [], []

        def on_preview(step, total, images):
            previews.append((step, total, len(images), images[0].channels))

        out = self.ctx.generate(count=2, steps=STEPS, seed=1, format="rgb",
                                on_progress=lambda s, t: progress.append((s, t)), on_preview=on_preview)
        self.assertEqual(progress, [(k, STEPS) for k in range(1, STEPS + 1)])
        self.assertEqual(previews, [(k, STEPS, 2, 3) for k in range(1, STEPS + 1)])
        self.assertEqual(out, self.ctx.generate(count=2, steps=STEPS, seed=1, format="rgb"))  # same with callbacks
        # img2img runs ceil(steps * strength) steps; preview's total says so
        previews.clear()
        progress.clear()
        src = out[0].convert("gray")
        self.ctx.img2img(src, strength=0.3, steps=10, on_preview=on_preview,
                         on_progress=lambda s, t: progress.append((s, t)))
        self.assertEqual([(s, t) for s, t, _, _ in previews], progress)
        # 10 * 0.3 is 3.0000000000000004 in f64 (ceil 4) but exactly 3 in f32, as the library counts
        self.assertEqual(progress[-1], (3, 3))

    def test_cancel_by_callback(self):
        seen = []

        def stop_at_two(step, total):
            seen.append(step)
            return step < 2

        with self.assertRaises(mirage.Cancelled) as cm:
            self.ctx.generate(steps=STEPS, on_progress=stop_at_two)
        self.assertEqual(seen, [1, 2])
        self.assertEqual(cm.exception.status, 10)
        with self.assertRaises(mirage.Cancelled):
            self.ctx.generate(steps=STEPS, on_preview=lambda s, t, i: False)
        with self.assertRaises(mirage.Cancelled):
            self.ctx.img2img(grey(28, 28), steps=STEPS, on_progress=lambda s, t: 0)
        # None and truthy values continue
        self.assertEqual(len(self.ctx.generate(steps=2, on_progress=lambda s, t: None)), 1)
        self.assertEqual(len(self.ctx.generate(steps=2, on_progress=lambda s, t: "yes")), 1)
        # the context still works afterwards
        self.assertEqual(len(self.ctx.generate(steps=2)), 1)

    def test_exception_in_callback_is_reraised(self):
        class Boom(Exception):
            pass

        calls = []

        def progress(step, total):
            calls.append(step)
            raise Boom(f"at step {step}")

        try:
            self.ctx.generate(steps=STEPS, on_progress=progress)
        except Boom as e:
            self.assertEqual(str(e), "at step 1")
            import traceback

            frames = [f.name for f in traceback.extract_tb(e.__traceback__)]
            self.assertIn("progress", frames)  # the callback's own traceback is kept
        else:
            self.fail("the callback's exception was lost")
        self.assertEqual(calls, [1])  # the run was cancelled at once

        def preview(step, total, images):
            raise KeyError("preview")

        with self.assertRaises(KeyError):
            self.ctx.inpaint(grey(28, 28), grey(28, 28, 255), steps=STEPS, on_preview=preview)
        # a callback whose truth value raises
        class Ambiguous:
            def __bool__(self):
                raise ValueError("no truth")

        with self.assertRaises(ValueError):
            self.ctx.generate(steps=STEPS, on_progress=lambda s, t: Ambiguous())
        # KeyboardInterrupt (Ctrl-C during a generation) too
        def interrupt(step, total):
            raise KeyboardInterrupt

        with self.assertRaises(KeyboardInterrupt):
            self.ctx.generate(steps=STEPS, on_progress=interrupt)
        self.assertEqual(len(self.ctx.generate(steps=2)), 1)

    def test_cancel_from_another_thread(self):
        started = threading.Event()
        result = {}

        def run():
            try:
                self.ctx.generate(steps=1000, on_progress=lambda s, t: started.set())
                result["error"] = None
            except BaseException as e:  # noqa: B902
                result["error"] = e

        t = threading.Thread(target=run)
        t0 = time.monotonic()
        t.start()
        self.assertTrue(started.wait(30))
        self.ctx.cancel()
        t.join(30)
        self.assertFalse(t.is_alive())
        self.assertIsInstance(result["error"], mirage.Cancelled)
        self.assertLess(time.monotonic() - t0, 20)
        self.ctx.cancel()  # idle: nothing to cancel, fine
        self.assertEqual(len(self.ctx.generate(steps=2)), 1)  # a later generation runs normally

    def test_threads_share_a_context(self):
        want = self.ctx.generate(steps=STEPS, seed=11)
        results, errors = [], []

        def run():
            try:
                results.append(self.ctx.generate(steps=STEPS, seed=11))
            except BaseException as e:  # noqa: B902
                errors.append(e)

        threads = [threading.Thread(target=run) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(errors, [])
        self.assertEqual(results, [want] * 3)

    def test_gil_is_released(self):
        # Another Python thread makes progress while the library generates.
        ticks = []
        stop = threading.Event()

        def ticker():
            while not stop.is_set():
                ticks.append(1)
                time.sleep(0.001)

        t = threading.Thread(target=ticker)
        t.start()
        try:
            before = len(ticks)
            self.ctx.encode(self.ctx.decode(self.ctx.sample_prior(64, seed=1)))
            self.ctx.generate(steps=20, count=4)
            self.assertGreater(len(ticks) - before, 5)
        finally:
            stop.set()
            t.join()

    def test_every_handle_is_freed_once(self):
        lib = self.ctx.library
        freed = []
        real_batch_free, real_latent_free = lib.mirage_image_batch_free, lib.mirage_latent_free

        def batch_free(h):
            freed.append(("batch", h))
            real_batch_free(h)

        def latent_free(h):
            freed.append(("latent", h))
            real_latent_free(h)

        log_before = len(LOG)
        img = grey(28, 28, 128)
        with mock.patch.object(lib, "mirage_image_batch_free", batch_free), \
                mock.patch.object(lib, "mirage_latent_free", latent_free):
            expectations = [
                (lambda: self.ctx.generate(steps=2), {"batch": 1}),
                (lambda: self.ctx.img2img(img, steps=2), {"batch": 1}),
                (lambda: self.ctx.denoise(img, steps=2), {"batch": 1}),
                (lambda: self.ctx.inpaint(img, img, steps=2), {"batch": 1}),
                (lambda: self.ctx.encode([img, img]), {"latent": 2}),
                (lambda: self.ctx.sample_prior(2), {"latent": 1}),
                (lambda: self.ctx.decode(self.ctx.sample_prior(1)), {"latent": 2, "batch": 1}),
                (lambda: self.ctx.sample(*self.ctx.encode(img)), {"latent": 5}),
                # failures free what was made, too
                (lambda: self.ctx.decode(mirage.Tensor([float("nan")] * 192, (1, 3, 8, 8))), {"latent": 1}),
                (lambda: self.ctx.generate(steps=2, on_progress=lambda s, t: False), {}),
                (lambda: self.ctx.generate(steps=2, on_progress=lambda s, t: 1 / 0), {}),
            ]
            for call, want in expectations:
                freed.clear()
                try:
                    call()
                except (mirage.Error, ZeroDivisionError):
                    pass
                kinds = {}
                for kind, h in freed:
                    self.assertTrue(h, "NULL freed")
                    kinds[kind] = kinds.get(kind, 0) + 1
                self.assertEqual(kinds, want)
        # A handle freed twice (or a stale one) is refused by the library with an error log line.
        complaints = [m for _, m in LOG[log_before:] if "not freed" in m or "not a live" in m]
        self.assertEqual(complaints, [])


class LifetimeTest(unittest.TestCase):
    """close(), the context manager and __del__: each on a context of its own."""

    def test_context_manager_and_close(self):
        with mirage.Context(model_dir("fashion"), provider="cpu") as ctx:
            self.assertFalse(ctx.closed)
            self.assertEqual(ctx.info.providers["unet"], "cpu")
            self.assertEqual(len(ctx.generate(steps=2)), 1)
        self.assertTrue(ctx.closed)
        self.assertIn("closed", repr(ctx))
        ctx.close()  # idempotent
        self.assertEqual(ctx.info.name, "fashion")  # what was read at opening stays readable
        lib = ctx.library
        with mock.patch.object(lib, "mirage_generate", side_effect=AssertionError("called the library")):
            calls = [
                lambda: ctx.generate(steps=2),
                lambda: ctx.img2img(grey(28, 28)),
                lambda: ctx.denoise(grey(28, 28)),
                lambda: ctx.inpaint(grey(28, 28), grey(28, 28)),
                lambda: ctx.interpolate(["a", "b"], 2),
                lambda: ctx.encode(grey(28, 28)),
                lambda: ctx.sample_prior(1),
                lambda: ctx.embed("a"),
                lambda: ctx.cancel(),
            ]
            for call in calls:
                with self.assertRaises(mirage.ClosedError):
                    call()
        with self.assertRaises(mirage.ClosedError):
            with ctx:
                pass
        self.assertTrue(issubclass(mirage.ClosedError, mirage.InvalidArgument))

    def test_close_while_generating_on_another_thread(self):
        ctx = mirage.Context(model_dir("fashion"))
        started = threading.Event()
        result = {}

        def run():
            try:
                ctx.generate(steps=1000, on_progress=lambda s, t: started.set())
                result["error"] = None
            except BaseException as e:  # noqa: B902
                result["error"] = e

        t = threading.Thread(target=run)
        t.start()
        self.assertTrue(started.wait(30))
        ctx.close()  # cancels the generation and waits for it
        self.assertTrue(ctx.closed)
        t.join(30)
        self.assertIsInstance(result["error"], mirage.Cancelled)

    def test_close_from_inside_a_callback(self):
        ctx = mirage.Context(model_dir("fashion"))

        def progress(step, total):
            if step == 2:
                ctx.close()

        with self.assertRaises(mirage.Cancelled):
            ctx.generate(steps=STEPS, on_progress=progress)
        self.assertTrue(ctx.closed)

    def test_del_frees(self):
        ctx = mirage.Context(model_dir("fashion"))
        lib = ctx.library
        freed = []
        real = lib.mirage_context_free
        ref = weakref.ref(ctx)
        with mock.patch.object(lib, "mirage_context_free", lambda p: (freed.append(p), real(p))):
            ptr = ctx._ptr
            del ctx
            gc.collect()
            self.assertIsNone(ref())
        self.assertEqual(freed, [ptr])

        ctx = mirage.Context(model_dir("fashion"))
        with mock.patch.object(lib, "mirage_context_free", lambda p: (freed.append(p), real(p))):
            freed.clear()
            ctx.close()
            ctx.close()
            del ctx
            gc.collect()
        self.assertEqual(len(freed), 1)  # exactly once


if __name__ == "__main__":
    unittest.main()
