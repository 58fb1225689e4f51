"""Jobs (Context.submit_*), targets (result_into / preview_into), the new diffusion options (tileable, noise), the
new context options (workers, max_queued_jobs, tileable) and model packs (a pack file, Context.from_memory), on
models/fashion (28x28 grey), models/fashion-text and, for tileable images, models/emoji (32x32 RGBA, text; needs
models/minilm)."""

import gc
import mmap
import os
import shutil
import subprocess
import tempfile
import threading
import time
import unittest
import weakref
from unittest import mock

from _support import REPO, _REQUIRE, context, flat, grey, mirage, model_dir, numpy

np = numpy
STEPS = 4


def _poll_to_end(job, limit=60.0):
    """Every status seen while polling `job` until it ends."""
    seen = [job.poll()]
    deadline = time.monotonic() + limit
    while not seen[-1].ended:
        if time.monotonic() > deadline:
            raise AssertionError(f"the job did not end within {limit} s: {seen[-1]}")
        time.sleep(0.001)
        seen.append(job.poll())
    return seen


def _wait_for_step(job, step=1, limit=60.0):
    deadline = time.monotonic() + limit
    while job.poll().step < step:
        if time.monotonic() > deadline:
            raise AssertionError(f"the job did not reach step {step}")
        time.sleep(0.001)


def _srgb_to_linear(c):
    v = c / 255.0
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


class JobTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.ctx = context("fashion")

    def test_workers_job_polled_to_the_end_equals_the_blocking_call(self):
        want = self.ctx.generate(count=2, steps=STEPS, seed=7)
        with self.ctx.submit_generate(count=2, steps=STEPS, seed=7) as job:
            self.assertIsInstance(job, mirage.Job)
            self.assertEqual((job.kind, job.mode, job.count, job.context), ("generate", "workers", 2, self.ctx))
            seen = _poll_to_end(job)
            for s in seen:
                self.assertIsInstance(s, mirage.JobStatus)
                self.assertIsInstance(s.state, mirage.JobState)
                self.assertEqual(s.total, STEPS)
                self.assertLessEqual(s.step, s.total)
            self.assertEqual([s.step for s in seen], sorted(s.step for s in seen))  # never backwards
            self.assertEqual(seen[-1], (mirage.JobState.DONE, STEPS, STEPS))
            self.assertTrue(job.wait(0))
            self.assertIn("done 4/4", repr(job))
            self.assertEqual(job.result(), want)
        self.assertTrue(job.closed)

    def test_result_waits_for_a_workers_job(self):
        want = self.ctx.img2img(grey(28, 28, 90), strength=0.5, steps=STEPS, seed=2)
        job = self.ctx.submit_img2img(grey(28, 28, 90), strength=0.5, steps=STEPS, seed=2)
        self.assertEqual(job.result(), want)
        job.close()

    def test_manual_job_advanced_with_a_budget_equals_the_blocking_call(self):
        want = self.ctx.generate(steps=10, seed=3, format="rgba")
        job = self.ctx.submit_generate(steps=10, seed=3, format="rgba", mode="manual")
        self.assertEqual(job.mode, "manual")
        self.assertEqual(job.poll(), (mirage.JobState.QUEUED, 0, 10))
        self.assertFalse(job.wait(0.01))  # nobody runs it
        self.assertEqual(job.poll().state, mirage.JobState.QUEUED)
        ran, frames = 0, 0
        while not job.poll().ended:
            n = job.advance(budget=0.0005)  # half a millisecond a "frame": at least one step each time
            self.assertGreaterEqual(n, 1)
            ran += n
            frames += 1
        self.assertEqual(ran, 10)
        self.assertEqual(job.poll(), (mirage.JobState.DONE, 10, 10))
        self.assertEqual(job.advance(), 0)  # an ended job runs nothing
        self.assertEqual(job.result(), want)
        job.close()
        # max_steps, and result() running the rest of a manual job here
        with self.ctx.submit_generate(steps=10, seed=3, format="rgba", mode="manual") as job:
            self.assertEqual(job.advance(max_steps=3), 3)
            self.assertEqual(job.advance(max_steps=0), 0)
            self.assertEqual(job.poll(), (mirage.JobState.RUNNING, 3, 10))
            self.assertEqual(job.result(), want)

    def test_advance_is_for_manual_jobs(self):
        with self.ctx.submit_generate(steps=STEPS, seed=1) as job:
            with self.assertRaises(mirage.InvalidArgument) as cm:
                job.advance(1)
            self.assertIn("MIRAGE_JOB_MANUAL", str(cm.exception))
            job.result()
        with self.ctx.submit_generate(steps=STEPS, mode="manual") as job:
            for bad in (-1.0, float("nan")):
                with self.assertRaises(mirage.InvalidArgument):
                    job.advance(budget=bad)
            with self.assertRaises(mirage.InvalidArgument):
                job.advance(budget=0)
            with self.assertRaises(mirage.InvalidArgument):
                job.advance(max_steps=-1)
            with self.assertRaises(TypeError):
                job.advance(max_steps=1.5)
            with self.assertRaises(TypeError):
                job.advance(budget="1")

    def test_cancel_midway(self):
        # A manual job: two steps of ten, then cancelled.
        job = self.ctx.submit_generate(steps=10, mode="manual")
        job.advance(max_steps=2)
        self.assertEqual(job.poll(), (mirage.JobState.RUNNING, 2, 10))
        job.cancel()
        self.assertEqual(job.poll().state, mirage.JobState.CANCELLED)
        self.assertTrue(job.poll().ended)
        self.assertEqual(job.advance(), 0)
        with self.assertRaises(mirage.Cancelled) as cm:
            job.result()
        self.assertEqual(cm.exception.status, 10)
        with self.assertRaises(mirage.InvalidArgument):  # the error was the take
            job.result()
        job.cancel()  # an ended job: nothing happens
        job.close()
        # A job of the workers, cancelled from this thread while a worker runs it.
        with self.ctx.submit_generate(steps=1000) as job:
            _wait_for_step(job)
            t0 = time.monotonic()
            job.cancel()
            self.assertTrue(job.wait(30))
            self.assertLess(time.monotonic() - t0, 10)
            s = job.poll()
            self.assertEqual(s.state, mirage.JobState.CANCELLED)
            self.assertLess(s.step, 1000)
            with self.assertRaises(mirage.Cancelled):
                job.result()
        self.assertEqual(len(self.ctx.generate(steps=2)), 1)  # the context goes on

    @unittest.skipIf(numpy is None, "numpy is not installed")
    def test_result_twice_raises(self):
        job = self.ctx.submit_generate(steps=2, seed=4)
        first = job.result()
        self.assertEqual(len(first), 1)
        with self.assertRaises(mirage.InvalidArgument) as cm:
            job.result()
        self.assertIn("taken", str(cm.exception))
        with self.assertRaises(mirage.InvalidArgument):
            job.result_into(np.zeros((28, 28), np.uint8))
        job.close()

    def test_busy_when_the_queue_is_full(self):
        with mirage.Context(model_dir("fashion"), workers=1, max_queued_jobs=1) as ctx:
            jobs = []
            try:
                with self.assertRaises(mirage.Busy) as cm:
                    for _ in range(4):  # the worker takes one, the queue holds one: the third at the latest
                        jobs.append(ctx.submit_generate(steps=1000))
                e = cm.exception
                self.assertEqual((e.status, e.STATUS), (12, 12))
                self.assertTrue(e.from_library)
                self.assertIn("max_queued_jobs", str(e))
                self.assertIn(len(jobs), (1, 2))
            finally:
                for job in jobs:
                    job.cancel()
            for job in jobs:
                self.assertTrue(job.wait(30))
                self.assertEqual(job.poll().state, mirage.JobState.CANCELLED)
                with self.assertRaises(mirage.Cancelled):
                    job.result()
                job.close()
            # Room again once the worker has dropped the cancelled jobs. (The library frees a cancelled queued
            # job's place only when a worker takes it off the queue, a moment after the running one stopped.)
            deadline = time.monotonic() + 30
            while True:
                try:
                    job = ctx.submit_generate(steps=2)
                    break
                except mirage.Busy:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.005)
            with job:
                self.assertEqual(len(job.result()), 1)

    def test_several_workers(self):
        with mirage.Context(model_dir("fashion"), workers=3, max_queued_jobs=8) as ctx:
            want = [ctx.generate(steps=STEPS, seed=s) for s in range(5)]
            jobs = [ctx.submit_generate(steps=STEPS, seed=s) for s in range(5)]
            self.assertEqual([j.result() for j in jobs], want)
            for j in jobs:
                j.close()

    def test_context_options_are_checked(self):
        for kwargs, word in (({"workers": 0}, "workers"), ({"workers": mirage.MAX_WORKERS + 1}, "workers"),
                             ({"max_queued_jobs": 0}, "max_queued_jobs"),
                             ({"max_queued_jobs": mirage.MAX_QUEUED_JOBS + 1}, "max_queued_jobs")):
            with self.assertRaises(mirage.InvalidArgument, msg=str(kwargs)) as cm:
                mirage.Context(model_dir("fashion"), **kwargs)
            self.assertIn(word, str(cm.exception))
        with self.assertRaises(mirage.InvalidArgument):
            mirage.Context(model_dir("fashion"), workers=-1)
        with self.assertRaises(TypeError):
            mirage.Context(model_dir("fashion"), workers="2")
        for mode in ("threads", ""):
            with self.assertRaises(mirage.InvalidArgument):
                self.ctx.submit_generate(steps=2, mode=mode)
        with self.assertRaises(TypeError):
            self.ctx.submit_generate(steps=2, mode=1)
        with self.assertRaises(mirage.InvalidArgument):  # checked at submission: nothing was submitted
            self.ctx.submit_generate(steps=0)

    @unittest.skipIf(numpy is None, "numpy is not installed")
    def test_every_kind_of_job_equals_its_blocking_call(self):
        ctx = self.ctx
        src = ctx.generate(count=2, steps=STEPS, seed=5)
        mask = mirage.Image(bytes(255 if x < 14 else 0 for y in range(28) for x in range(28)), 28, 28, 1)
        cases = [
            (lambda **k: ctx.img2img(src, strength=0.5, steps=STEPS, seed=1, **k),
             lambda **k: ctx.submit_img2img(src, strength=0.5, steps=STEPS, seed=1, **k)),
            (lambda **k: ctx.denoise(src[0], strength=0.2, steps=STEPS, **k),
             lambda **k: ctx.submit_denoise(src[0], strength=0.2, steps=STEPS, **k)),
            (lambda **k: ctx.inpaint(src, mask, steps=STEPS, seed=9, **k),
             lambda **k: ctx.submit_inpaint(src, mask, steps=STEPS, seed=9, **k)),
        ]
        for blocking, submit in cases:
            want = blocking()
            for mode in ("workers", "manual"):
                with submit(mode=mode) as job:
                    self.assertEqual(job.count, len(want))
                    self.assertEqual(job.result(), want, (job.kind, mode))
        # the VAE
        dist = ctx.encode(src)
        with ctx.submit_encode(src) as job:
            self.assertEqual((job.kind, job.count), ("encode", None))
            got = job.result()
            self.assertIsInstance(got, mirage.Distribution)
            self.assertEqual(flat(got.mean), flat(dist.mean))
            self.assertEqual(flat(got.logvar), flat(dist.logvar))
            self.assertEqual(job.poll(), (mirage.JobState.DONE, 1, 1))
        with ctx.submit_encode(src, mode="manual") as job:
            with self.assertRaises(mirage.InvalidArgument):
                job.result_into(np.zeros((28, 28), np.uint8))  # latents, not images
            self.assertEqual(flat(job.result().mean), flat(dist.mean))
        with ctx.submit_decode(dist.mean, format="rgb") as job:
            self.assertEqual(job.count, 2)
            self.assertEqual(job.result(), ctx.decode(dist.mean, format="rgb"))
        with ctx.submit_decode(dist.mean[0]) as job:  # (c, h, w): one latent
            self.assertEqual(job.count, 1)
            self.assertEqual(job.result(), ctx.decode(dist.mean[0]))
        with self.assertRaises(mirage.InvalidArgument):
            ctx.submit_decode(np.full((1, 3, 8, 8), np.nan, np.float32))

    def test_interpolate_job(self):
        ctx = context("fashion-text")
        prompts = ["a shirt", "a boot"]
        want = ctx.interpolate(prompts, 3, steps=2, seed=3)
        with ctx.submit_interpolate(prompts, 3, steps=2, seed=3) as job:
            self.assertEqual(job.count, 3)
            self.assertEqual(job.result(), want)
        with ctx.submit_generate("a bag", steps=2, seed=1, mode="manual") as job:
            self.assertEqual(job.result(), ctx.generate("a bag", steps=2, seed=1))

    @unittest.skipIf(numpy is None, "numpy is not installed")
    def test_previews(self):
        with self.ctx.submit_generate(count=2, steps=STEPS, seed=6, format="rgb", mode="manual",
                                      previews=True) as job:
            self.assertIsNone(job.preview())  # no step yet
            a = np.full((28, 28, 4), 9, np.uint8)
            self.assertIsNone(job.preview_into([a, a.copy()], "bgra"))
            self.assertTrue((a == 9).all())  # nothing written
            job.advance(1)
            p = job.preview()
            self.assertIsInstance(p, mirage.Preview)
            self.assertEqual((p.step, len(p), p[0].channels, p[0].size), (1, 2, 3, (28, 28)))
            self.assertEqual(job.preview("gray")[0].channels, 1)
            pair = [np.zeros((28, 28, 4), np.uint8), np.zeros((28, 28, 4), np.uint8)]
            self.assertEqual(job.preview_into(pair, "rgba"), 1)
            self.assertTrue((pair[0] == np.asarray(p[0].convert("rgba"))).all())
            with self.assertRaises(mirage.InvalidArgument):
                job.preview_into(np.zeros((28, 28, 4), np.uint8))  # one target for two images
            job.advance()
            self.assertEqual(job.preview().step, STEPS)
            final = job.result()
            self.assertEqual(job.preview(), final)  # the estimate after the last step is the result
        with self.ctx.submit_generate(steps=2) as job:
            with self.assertRaises(mirage.InvalidArgument) as cm:
                job.preview()
            self.assertIn("previews", str(cm.exception))
            job.result()


@unittest.skipIf(numpy is None, "numpy is not installed")
class TargetTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.ctx = context("fashion")
        cls.rgba = np.asarray(cls.ctx.generate(count=2, steps=STEPS, seed=8, format="rgba")[0])

    def job(self, count=1, **kwargs):
        return self.ctx.submit_generate(count=count, steps=STEPS, seed=8, **kwargs)

    def test_bottom_up_bgra_is_the_blocking_rgba_flipped_and_swizzled(self):
        a = np.zeros((28, 28, 4), np.uint8)
        with self.job(count=2) as job:
            b = np.zeros((28, 28, 4), np.uint8)
            job.result_into([a, b], "bgra", bottom_up=True)
        want = self.rgba[::-1, :, [2, 1, 0, 3]]
        self.assertTrue(np.array_equal(a, want))
        # premultiplied with opaque alpha changes nothing; a Target carries its own options
        c = np.zeros((28, 28, 4), np.uint8)
        with self.job(count=2) as job:
            job.result_into([mirage.Target(c, "bgra", bottom_up=True, premultiplied=True),
                             np.zeros((28, 28), np.uint8)])
        self.assertTrue(np.array_equal(c, want))
        # a (N, H, W, C) array: one target per image
        batch = np.zeros((2, 28, 28, 4), np.uint8)
        with self.job(count=2, format="rgba") as job:
            job.result_into(batch)
        self.assertTrue(np.array_equal(batch[0], self.rgba))

    def test_formats_sizes_and_strides(self):
        # grey and RGB
        g = np.zeros((28, 28), np.uint8)
        with self.job() as job:
            job.result_into(g)
        self.assertTrue(np.array_equal(g, self.rgba[:, :, 0]))
        rgb = np.zeros((28, 28, 3), np.uint8)
        with self.job() as job:
            job.result_into(rgb)
        self.assertTrue(np.array_equal(rgb, self.rgba[:, :, :3]))
        # rows apart: a region of a bigger texture; what is around it is left as it was
        atlas = np.full((40, 50, 4), 7, np.uint8)
        with self.job() as job:
            job.result_into(atlas[5:33, 10:38], "rgba")
        self.assertTrue(np.array_equal(atlas[5:33, 10:38], self.rgba))
        outside = atlas.copy()
        outside[5:33, 10:38] = 7
        self.assertTrue((outside == 7).all())
        # any size: resized (nearest at twice the size repeats every pixel)
        big = np.zeros((56, 56, 4), np.uint8)
        with self.job() as job:
            job.result_into(big, filter="nearest")
        self.assertTrue(np.array_equal(big[::2, ::2], self.rgba))
        self.assertTrue(np.array_equal(big[1::2, 1::2], self.rgba))
        small = np.zeros((9, 13, 4), np.uint8)
        with self.job() as job:
            job.result_into(small)
        self.assertTrue((small[:, :, 3] == 255).all())
        # linear float RGBA: sRGB to linear light of the 8-bit result, alpha as is
        f = np.zeros((28, 28, 4), np.float32)
        with self.job() as job:
            job.result_into(f)
        self.assertTrue(np.allclose(f[:, :, :3], _srgb_to_linear(self.rgba[:, :, :3].astype(np.float64)),
                                    atol=1e-5))
        self.assertTrue((f[:, :, 3] == 1.0).all())

    def test_a_bad_target_raises_before_the_library_and_the_result_stays(self):
        lib = self.ctx.library
        job = self.job()
        self.assertTrue(job.wait(60))
        a = np.zeros((28, 28, 4), np.uint8)
        ro = np.zeros((28, 28, 4), np.uint8)
        ro.flags.writeable = False
        bad = [
            (TypeError, [a.astype(np.float64)], {}),  # wrong dtype
            (TypeError, [a.astype(np.float32)], {"format": "bgra"}),  # float for an 8-bit format
            (TypeError, [a.astype(">f4")], {}),  # not native float32
            (TypeError, [[[0] * 4] * 28], {}),  # not a numpy array
            (TypeError, [None], {}),
            (mirage.InvalidArgument, [np.zeros((28, 28, 3), np.uint8)], {"format": "bgra"}),  # too few channels
            (mirage.InvalidArgument, [np.zeros((28, 28, 2), np.uint8)], {}),
            (mirage.InvalidArgument, [np.zeros((0, 28, 4), np.uint8)], {}),  # empty
            (mirage.InvalidArgument, [np.zeros((28, 0), np.uint8)], {}),
            (mirage.InvalidArgument, [np.zeros((mirage.MAX_IMAGE_SIDE + 1, 1), np.uint8)], {}),
            (mirage.InvalidArgument, [np.zeros((28,), np.uint8)], {}),
            (mirage.InvalidArgument, [ro], {}),  # read-only
            (mirage.InvalidArgument, [a[::-1]], {}),  # rows backwards
            (mirage.InvalidArgument, [a[:, ::2]], {}),  # pixels of a row apart
            (mirage.InvalidArgument, [np.zeros((28, 28, 8), np.uint8)[:, :, ::2]], {}),  # channels apart
            (mirage.InvalidArgument, [np.broadcast_to(np.zeros((1, 28, 4), np.uint8), (28, 28, 4))], {}),
            (mirage.InvalidArgument, [a, a.copy()], {}),  # two targets for one image
            (mirage.InvalidArgument, [[]], {}),
            (mirage.InvalidArgument, [a], {"format": "cmyk"}),
            (mirage.InvalidArgument, [a], {"filter": "bicubic"}),
        ]
        with mock.patch.object(lib, "mirage_job_take_into", side_effect=AssertionError("called the library")):
            for cls, args, kwargs in bad:
                target = args[0] if len(args) == 1 else args
                with self.assertRaises(cls, msg=f"{getattr(target, 'shape', target)!r} {kwargs}"):
                    job.result_into(target, **kwargs)
        self.assertEqual(job.poll().state, mirage.JobState.DONE)
        job.result_into(a)
        self.assertTrue(np.array_equal(a, self.rgba))
        with self.assertRaises(mirage.InvalidArgument):  # now it is taken
            job.result()
        job.close()
        # overlapping targets of one call
        with self.job(count=2) as job:
            shared = np.zeros((30, 28, 4), np.uint8)
            with mock.patch.object(lib, "mirage_job_take_into", side_effect=AssertionError("called the library")):
                with self.assertRaises(mirage.InvalidArgument) as cm:
                    job.result_into([shared[:28], shared[2:]])
            self.assertIn("overlap", str(cm.exception))
            self.assertEqual(len(job.result()), 2)


class DiffusionOptionsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.ctx = context("fashion")

    @unittest.skipIf(numpy is None, "numpy is not installed")
    def test_tileable(self):
        # models/emoji: 32x32 images from 8x8 latents, so its images can wrap (fashion's 28x28 cannot).
        ctx = context("emoji")
        plain = ctx.generate("a cat", steps=STEPS, seed=2)
        tiled = ctx.generate("a cat", steps=STEPS, seed=2, tileable=True)
        self.assertEqual((tiled[0].size, tiled[0].channels), ((32, 32), 4))
        self.assertEqual(tiled, ctx.generate("a cat", steps=STEPS, seed=2, tileable=True))
        self.assertNotEqual(tiled, plain)
        with ctx.submit_generate("a cat", steps=STEPS, seed=2, tileable=True) as job:
            self.assertEqual(job.result(), tiled)
        with ctx.submit_generate("a cat", steps=STEPS, seed=2, tileable=True, mode="manual") as job:
            self.assertEqual(job.result(), tiled)
        self.assertEqual(len(ctx.img2img(plain, strength=0.5, steps=STEPS, tileable=True)), 1)
        self.assertEqual(len(ctx.denoise(plain, steps=STEPS, tileable=True)), 1)
        # The image wraps: noise rolled by a multiple of the U-Net's downsampling (4 latent cells of 8, here 16
        # pixels) rolls the tileable image (up to rounding), and not the plain one.
        noise = np.random.default_rng(3).standard_normal((1, 4, 8, 8)).astype(np.float32)
        rolled = np.roll(noise, 4, axis=3)

        def pixels(**kwargs):
            return np.asarray(ctx.generate("a cat", steps=STEPS, **kwargs)[0]).astype(int)

        shifted = np.roll(pixels(noise=noise, tileable=True), 16, axis=1)
        self.assertLessEqual(int(np.abs(shifted - pixels(noise=rolled, tileable=True)).max()), 2)
        plain_shifted = np.roll(pixels(noise=noise), 16, axis=1)
        self.assertGreater(int(np.abs(plain_shifted - pixels(noise=rolled)).max()), 16)
        with mirage.Context(model_dir("emoji"), tileable=True) as ready:  # sessions made at opening
            self.assertEqual(ready.generate("a cat", steps=STEPS, seed=2, tileable=True), tiled)

    @unittest.skipIf(numpy is None, "numpy is not installed")
    def test_noise(self):
        rng = np.random.default_rng(1)
        noise = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
        a = self.ctx.generate(count=2, steps=STEPS, noise=noise)
        self.assertEqual(a, self.ctx.generate(count=2, steps=STEPS, noise=noise))
        self.assertEqual(a, self.ctx.generate(count=2, steps=STEPS, noise=noise, seed=99))  # the seed is not used
        self.assertNotEqual(a, self.ctx.generate(count=2, steps=STEPS, seed=0))
        self.assertNotEqual(a, self.ctx.generate(count=2, steps=STEPS, noise=noise[::-1].copy()))
        t = mirage.Tensor(noise.reshape(-1).tolist(), noise.shape)
        self.assertEqual(self.ctx.generate(count=2, steps=STEPS, noise=t), a)
        self.assertEqual(self.ctx.generate(count=2, steps=STEPS, noise=noise.astype(np.float64)), a)
        # a job reads the noise at submission: changing the array afterwards changes nothing
        mine = noise.copy()
        with self.ctx.submit_generate(count=2, steps=STEPS, noise=mine, mode="manual") as job:
            mine[:] = 0
            self.assertEqual(job.result(), a)
        # img2img and inpaint: one sample per image
        src = self.ctx.generate(steps=STEPS, seed=1)
        one = noise[:1]
        b = self.ctx.img2img(src, strength=0.7, steps=STEPS, noise=one)
        self.assertEqual(b, self.ctx.img2img(src, strength=0.7, steps=STEPS, noise=one[0]))  # (c, h, w)
        with self.ctx.submit_img2img(src, strength=0.7, steps=STEPS, noise=one) as job:
            self.assertEqual(job.result(), b)
        self.assertEqual(len(self.ctx.inpaint(src, grey(28, 28, 255), steps=STEPS, noise=one)), 1)
        # what the library refuses
        with self.assertRaises(mirage.InvalidArgument) as cm:
            self.ctx.generate(steps=STEPS, noise=np.zeros((1, 4, 8, 8), np.float32))
        self.assertIn("noise", str(cm.exception))
        with self.assertRaises(mirage.Error):
            self.ctx.generate(count=1, steps=STEPS, noise=noise)  # two samples for one image
        with self.assertRaises(TypeError):
            self.ctx.generate(steps=STEPS, noise=[0.0] * 192)
        with self.assertRaises(TypeError):
            self.ctx.denoise(src, noise=one)  # denoise adds no noise


def _mirage_cli():
    exe = os.path.join(REPO or "", "target", "debug", "mirage")
    return exe if REPO and os.access(exe, os.X_OK) else None


class PackTest(unittest.TestCase):
    """A pack file made by the CLI (``mirage pack``), opened by path and from memory."""

    @classmethod
    def setUpClass(cls):
        exe = _mirage_cli()
        if exe is None:
            if _REQUIRE:
                raise AssertionError("target/debug/mirage is missing: build it (cargo build) to make a pack")
            raise unittest.SkipTest("target/debug/mirage is missing: no pack to test")
        cls.tmp = tempfile.mkdtemp(prefix="mirage-pack-")
        cls.pack = os.path.join(cls.tmp, "fashion.mirage")
        r = subprocess.run([exe, "pack", model_dir("fashion"), "-o", cls.pack], capture_output=True, text=True,
                           timeout=300)
        if r.returncode != 0:
            shutil.rmtree(cls.tmp, ignore_errors=True)
            raise AssertionError(f"mirage pack failed ({r.returncode}): {r.stderr}")
        with open(cls.pack, "rb") as f:
            cls.blob = f.read()
        cls.want = context("fashion").generate(count=2, steps=STEPS, seed=12)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_pack_file_by_path(self):
        with mirage.Context(self.pack) as ctx:
            self.assertEqual(ctx.info.name, "fashion")
            self.assertEqual(ctx.models_dir, self.pack)
            self.assertEqual(ctx.generate(count=2, steps=STEPS, seed=12), self.want)

    def test_from_memory_equals_the_directory(self):
        with mirage.Context.from_memory(self.blob) as ctx:
            self.assertIsNone(ctx.models_dir)
            self.assertEqual(ctx.info, context("fashion").info)
            self.assertEqual(ctx.generate(count=2, steps=STEPS, seed=12), self.want)
            with ctx.submit_generate(count=2, steps=STEPS, seed=12) as job:
                self.assertEqual(job.result(), self.want)
        # any bytes-like object; the buffer is not needed after the call
        buf = bytearray(self.blob)
        ctx = mirage.Context.from_memory(buf, workers=2, max_queued_jobs=4)
        buf[:] = bytes(len(buf))
        del buf
        gc.collect()
        self.assertEqual(ctx.generate(count=2, steps=STEPS, seed=12), self.want)
        ctx.close()
        with mirage.Context.from_memory(memoryview(self.blob)) as ctx:
            self.assertEqual(ctx.info.name, "fashion")
        with open(self.pack, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            with mirage.Context.from_memory(m) as ctx:
                self.assertEqual(ctx.generate(count=2, steps=STEPS, seed=12), self.want)
        if numpy is not None:
            with mirage.Context.from_memory(np.frombuffer(self.blob, np.uint8)) as ctx:
                self.assertEqual(ctx.info.name, "fashion")

    def test_tileable_from_memory_is_prepared_at_opening(self):
        pack = os.path.join(self.tmp, "emoji.mirage")  # a set whose images can wrap, with its text encoder
        r = subprocess.run([_mirage_cli(), "pack", model_dir("emoji"), "-o", pack], capture_output=True, text=True,
                           timeout=300)
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(pack, "rb") as f:
            blob = f.read()
        os.remove(pack)
        with mirage.Context.from_memory(blob) as ctx:
            self.assertEqual(ctx.info.name, "emoji")
            with self.assertRaises(mirage.Unsupported) as cm:
                ctx.generate("a cat", steps=2, tileable=True)
            self.assertIn("tileable", str(cm.exception))
        with mirage.Context.from_memory(blob, tileable=True) as ctx:
            del blob
            self.assertEqual(ctx.generate("a cat", steps=STEPS, seed=2, tileable=True),
                             context("emoji").generate("a cat", steps=STEPS, seed=2, tileable=True))

    def test_damaged_packs(self):
        cases = {
            "truncated header": self.blob[:10],
            "truncated entries": self.blob[:100],
            "truncated model": self.blob[: len(self.blob) // 2],
            "one byte short": self.blob[:-1],
        }
        for what, data in cases.items():
            with self.assertRaises(mirage.InvalidModel, msg=what) as cm:
                mirage.Context.from_memory(data)
            self.assertTrue(cm.exception.from_library)
            self.assertIn("truncated", str(cm.exception), what)
        with self.assertRaises(mirage.InvalidModel) as cm:
            mirage.Context.from_memory(b"")
        self.assertIn("empty", str(cm.exception))
        with self.assertRaises(mirage.InvalidModel):
            mirage.Context.from_memory(b"not a pack at all, just some bytes" * 10)
        corrupt = bytearray(self.blob)
        corrupt[len(corrupt) // 2] ^= 0xFF
        with self.assertRaises(mirage.InvalidModel):
            mirage.Context.from_memory(corrupt)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "cut.mirage")
            with open(path, "wb") as f:
                f.write(self.blob[:1000])
            with self.assertRaises(mirage.InvalidModel) as cm:
                mirage.Context(path)
            self.assertIn("truncated", str(cm.exception))
        for bad in (None, "fashion.mirage", 3):
            with self.assertRaises(TypeError):
                mirage.Context.from_memory(bad)


class JobLifetimeTest(unittest.TestCase):
    """close(), the context manager, __del__, and jobs outliving their context's Python object."""

    @unittest.skipIf(numpy is None, "numpy is not installed")
    def test_close_cancels_a_running_job(self):
        ctx = context("fashion")
        job = ctx.submit_generate(steps=1000)
        _wait_for_step(job)
        lib = ctx.library
        freed = []
        real = lib.mirage_job_free
        with mock.patch.object(lib, "mirage_job_free", lambda p: (freed.append(p), real(p))):
            ptr = job._ptr
            job.close()
            job.close()  # idempotent
        self.assertEqual(freed, [ptr])
        self.assertTrue(job.closed)
        self.assertIn("closed", repr(job))
        for call in (job.poll, job.cancel, job.result, lambda: job.wait(0), job.advance, job.preview,
                     lambda: job.result_into(np.zeros((28, 28), np.uint8))):
            with self.assertRaises(mirage.ClosedError):
                call()
        with self.assertRaises(mirage.ClosedError):
            with job:
                pass
        self.assertEqual(len(ctx.generate(steps=2)), 1)  # the worker went on to other work

    def test_close_while_another_thread_waits(self):
        job = context("fashion").submit_generate(steps=1000)
        _wait_for_step(job)
        result = {}

        def waiter():
            try:
                result["ended"] = job.wait()  # no timeout
            except BaseException as e:  # noqa: B902
                result["error"] = e

        t = threading.Thread(target=waiter)
        t.start()
        time.sleep(0.05)
        job.close()  # cancels: the wait returns (or the next slice of it finds the job closed)
        t.join(30)
        self.assertFalse(t.is_alive())
        self.assertTrue(result.get("ended") is True or isinstance(result.get("error"), mirage.ClosedError), result)

    def test_del_frees_once(self):
        ctx = context("fashion")
        lib = ctx.library
        freed = []
        real = lib.mirage_job_free
        with mock.patch.object(lib, "mirage_job_free", lambda p: (freed.append(p), real(p))):
            job = ctx.submit_generate(steps=2, mode="manual")
            ref = weakref.ref(job)
            ptr = job._ptr
            del job
            gc.collect()
            self.assertIsNone(ref())
        self.assertEqual(freed, [ptr])

    def test_a_job_keeps_its_context(self):
        ctx = mirage.Context(model_dir("fashion"))
        want = ctx.generate(steps=STEPS, seed=5)
        job = ctx.submit_generate(steps=STEPS, seed=5)
        ref = weakref.ref(ctx)
        del ctx
        gc.collect()
        self.assertIsNotNone(ref())  # not freed under the job (which would cancel it)
        self.assertEqual(job.result(), want)
        job.close()
        del job
        gc.collect()
        self.assertIsNone(ref())

    def test_closing_the_context(self):
        ctx = mirage.Context(model_dir("fashion"))
        want = ctx.generate(steps=STEPS, seed=6)
        running = ctx.submit_generate(steps=1000)
        manual = ctx.submit_generate(steps=STEPS, seed=6, mode="manual")
        _wait_for_step(running)
        ctx.close()
        self.assertTrue(running.wait(30))
        self.assertEqual(running.poll().state, mirage.JobState.CANCELLED)
        with self.assertRaises(mirage.Cancelled):
            running.result()
        self.assertEqual(manual.result(), want)  # a manual job holds the model set and still runs
        with self.assertRaises(mirage.ClosedError):
            ctx.submit_generate(steps=2)
        running.close()
        manual.close()

    def test_result_timeout(self):
        with context("fashion").submit_generate(steps=1000) as job:
            t0 = time.monotonic()
            with self.assertRaises(TimeoutError):
                job.result(timeout=0.05)
            self.assertLess(time.monotonic() - t0, 5)
            self.assertFalse(job.wait(0.01))
            with self.assertRaises(mirage.InvalidArgument):
                job.wait(-1)
            job.cancel()
            self.assertTrue(job.wait(30))


if __name__ == "__main__":
    unittest.main()
