"""Stable-Diffusion-family folders in optimum's ONNX layout (the tiny random-weight fixtures of
tests/fixtures/sd) through the Python binding: the same Context as for mirage's own sets. diffusers' reference
image reproduced from its initial noise, every sampler, img2img and a job, a broken folder's error."""

import os
import shutil
import tempfile
import unittest

from _support import REPO, PILImage, mirage, numpy

SD = os.path.join(REPO, "tests", "fixtures", "sd") if REPO else None
PROMPT = "a photo of an astronaut riding a horse on mars"


@unittest.skipUnless(SD and os.path.isdir(SD), "tests/fixtures/sd not found")
class DiffusersFolderTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.ctx = mirage.Context(os.path.join(SD, "sd15"))

    @classmethod
    def tearDownClass(cls):
        cls.ctx.close()

    def test_info(self):
        info = self.ctx.info
        self.assertEqual((info.width, info.height, info.channels), (64, 64, 3))
        self.assertEqual(tuple(info.latent_shape), (4, 8, 8))

    @unittest.skipUnless(numpy is not None and PILImage is not None, "needs numpy and Pillow")
    def test_reproduces_diffusers_from_its_noise(self):
        ref = os.path.join(SD, "reference")
        noise = numpy.load(os.path.join(ref, "pipe_sd15-pndm-cfg-neg_init_noise.npy"))
        (image,) = self.ctx.generate(PROMPT, negative="blurry, low quality", guidance=7.5, steps=8, noise=noise)
        got = numpy.asarray(image)[..., :3].astype(int)
        want = numpy.asarray(PILImage.open(os.path.join(ref, "pipe_sd15-pndm-cfg-neg_image.png")).convert("RGB"))
        self.assertLessEqual(int(numpy.abs(got - want.astype(int)).max()), 1)

    def test_every_sampler_and_img2img(self):
        for sampler in ["ddim", "pndm", "euler", "euler-a", "dpm++2m", "dpm++2m-karras", "lcm", None]:
            images = self.ctx.generate("a red cube", count=2, steps=3, sampler=sampler, seed=5)
            self.assertEqual(len(images), 2, sampler)
        (edited,) = self.ctx.img2img(images[0], "a blue sphere", strength=0.5, steps=4, sampler="euler")
        self.assertEqual((edited.width, edited.height), (64, 64))
        job = self.ctx.submit_generate("a red cube", steps=3, seed=5, sampler="euler-a")
        self.assertEqual(len(job.result()), 1)
        with self.assertRaises(mirage.InvalidArgument):
            self.ctx.generate("a red cube", steps=3, sampler="heun")

    def test_precision_is_checked(self):
        with self.assertRaises(mirage.InvalidArgument):
            mirage.Context(os.path.join(SD, "sd15"), precision="fp8")
        with self.assertRaises(mirage.Error) as caught:  # a diffusers folder's encoder runs as exported
            mirage.Context(os.path.join(SD, "sd15"), precision="int8")
        self.assertIn("int8", str(caught.exception))

    def test_a_broken_folder_names_the_problem(self):
        with tempfile.TemporaryDirectory() as tmp:
            folder = os.path.join(tmp, "sd15")
            shutil.copytree(os.path.join(SD, "sd15"), folder)
            os.remove(os.path.join(folder, "scheduler", "scheduler_config.json"))
            with self.assertRaises(mirage.Error) as caught:
                mirage.Context(folder)
            self.assertIn("scheduler_config.json", str(caught.exception))


if __name__ == "__main__":
    unittest.main()
