"""mirage: image generation from latent spaces (a VAE, latent diffusion, text-to-image) on ONNX Runtime.

A ctypes binding of libmirage's C API (include/mirage.h); pure Python, no compiler needed, numpy and Pillow
optional::

    import mirage

    with mirage.Context("models/fashion-text") as ctx:
        images = ctx.generate("a pair of trousers", count=4, steps=20, seed=7)
        images[0].save("trousers.png")

        job = ctx.submit_generate("a sneaker", steps=20)   # returns at once; worker threads run it
        while not job.wait(0.1):
            print(job.poll())                              # JobStatus(state, step, total)
        sneakers = job.result()

libmirage is found by, in order: ``mirage.load_library(path)`` / ``Context(..., library=path)``, the
environment variable MIRAGE_LIBRARY, ``pkg-config --variable=libdir mirage``, then the repository's build
(``target/release``, ``target/debug``) above this package. See README.md.
"""

from ._context import Context, Distribution, Embedding, Info, init_runtime
from ._errors import (
    Busy,
    Cancelled,
    ClosedError,
    Error,
    ImageError,
    InferenceError,
    InternalError,
    InvalidArgument,
    InvalidModel,
    IoError,
    LibraryNotFound,
    ModelError,
    ModelNotFound,
    RuntimeAlreadyInitialised,
    RuntimeLoadError,
    Unsupported,
)
from ._image import Image
from ._job import Job, JobState, JobStatus, Preview
from ._native import (
    HEADER_VERSION,
    MAX_BATCH,
    MAX_GUIDANCE,
    MAX_IMAGE_SIDE,
    MAX_QUEUED_JOBS,
    MAX_STEPS,
    MAX_THREADS,
    MAX_WORKERS,
    Library,
    find_library,
    load_library,
)
from ._target import Target
from ._tensor import Latent, Tensor

__version__ = "0.1.0"


def version() -> str:
    """The loaded libmirage's version (``mirage_version``); loads the default library if needed."""
    return load_library().version


def open_image(source) -> Image:
    """A mirage.Image of anything the binding takes as an image: a mirage.Image, a Pillow image, a numpy uint8
    array (H, W[, C]) or an image file path (PNG without Pillow)."""
    from ._image import to_image

    return to_image(source)


__all__ = [
    "Context",
    "Info",
    "Distribution",
    "Embedding",
    "Image",
    "Job",
    "JobState",
    "JobStatus",
    "Preview",
    "Target",
    "Tensor",
    "Latent",
    "Library",
    "init_runtime",
    "load_library",
    "find_library",
    "open_image",
    "version",
    "HEADER_VERSION",
    "MAX_BATCH",
    "MAX_STEPS",
    "MAX_GUIDANCE",
    "MAX_THREADS",
    "MAX_WORKERS",
    "MAX_QUEUED_JOBS",
    "MAX_IMAGE_SIDE",
    "Error",
    "InvalidArgument",
    "ClosedError",
    "RuntimeLoadError",
    "RuntimeAlreadyInitialised",
    "ModelError",
    "ModelNotFound",
    "InvalidModel",
    "Unsupported",
    "InferenceError",
    "IoError",
    "ImageError",
    "Cancelled",
    "InternalError",
    "Busy",
    "LibraryNotFound",
]
