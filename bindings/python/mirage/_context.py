"""mirage.Context: a loaded model set, and everything that runs on one."""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import threading
from array import array
from ctypes import POINTER, byref, c_bool, c_char_p, c_float, c_size_t, c_uint32, c_void_p, sizeof
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from . import _errors, _native
from ._errors import ClosedError, InvalidArgument
from ._image import Image, channels_of, to_image
from ._native import (
    CHANNEL_PIXELS,
    PIXEL_CHANNELS,
    MirageContextParams,
    MirageDiffusionParams,
    MirageImage,
    MirageJobParams,
    MirageLogCallback,
    MirageProgressCallback,
    MiragePreviewCallback,
    MirageRuntimeOptions,
)
from ._tensor import Tensor

__all__ = ["Context", "Info", "Distribution", "init_runtime"]

from . import _job  # noqa: E402  (it uses this module's helpers)

_PROVIDERS = {
    "default": _native.PROVIDER_DEFAULT,
    "auto": _native.PROVIDER_AUTO,
    "tensorrt": _native.PROVIDER_TENSORRT,
    "cuda": _native.PROVIDER_CUDA,
    "cpu": _native.PROVIDER_CPU,
}
_KINDS = {
    "vae_encoder": _native.MODEL_VAE_ENCODER,
    "vae_decoder": _native.MODEL_VAE_DECODER,
    "unet": _native.MODEL_UNET,
    "text_encoder": _native.MODEL_TEXT_ENCODER,
}
_LOG_LEVELS = {"debug": _native.LOG_DEBUG, "info": _native.LOG_INFO, "warn": _native.LOG_WARN,
               "warning": _native.LOG_WARN, "error": _native.LOG_ERROR}
_LOG_NAMES = {v: k for k, v in _LOG_LEVELS.items() if k != "warning"}
_JOB_MODES = {"workers": _native.JOB_WORKERS, "manual": _native.JOB_MANUAL}


# --- argument checks (Python-level: TypeError for a wrong type; InvalidArgument, a ValueError, for a value that
# --- does not fit the C type; every other check is the library's, with its message) -----------------------------


def _uint(value: Any, name: str, bits: int = 32) -> int:
    if isinstance(value, bool) or not hasattr(type(value), "__index__"):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    value = value.__index__()
    if not 0 <= value < 1 << bits:
        raise InvalidArgument(f"{name} is {value}, out of range 0..={(1 << bits) - 1}")
    return value


def _real(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(type(value), "__float__"):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    if isinstance(value, complex):
        raise TypeError(f"{name} must be a real number, not complex")
    return float(value)


def _text(value: Any, name: str, optional: bool = False) -> Optional[bytes]:
    """A C string: str is encoded to UTF-8, bytes pass as they are (the library checks that they are UTF-8)."""
    if value is None and optional:
        return None
    if isinstance(value, str):
        try:
            value = value.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError as e:
            raise InvalidArgument(f"{name} cannot be encoded as UTF-8: {e.reason} at index {e.start}") from None
    elif isinstance(value, (bytes, bytearray)):
        value = bytes(value)
    else:
        what = "None" if value is None else type(value).__name__
        raise TypeError(f"{name} must be a str{' or None' if optional else ''}, not {what}")
    nul = value.find(b"\0")
    if nul >= 0:
        raise InvalidArgument(f"{name} contains a NUL character at byte {nul}; C strings end there")
    return value


def _path(value: Any, name: str) -> bytes:
    if not isinstance(value, (str, bytes, os.PathLike)):
        what = "None" if value is None else type(value).__name__
        raise TypeError(f"{name} must be a path (str, bytes or os.PathLike), not {what}")
    raw = os.fsencode(value)
    if b"\0" in raw:
        raise InvalidArgument(f"{name} contains a NUL character")
    return raw


def _callable(value: Any, name: str) -> None:
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be callable or None, not {type(value).__name__}")


def _format(fmt: Any, default_channels: int) -> int:
    if fmt is None:
        return CHANNEL_PIXELS[default_channels]
    return CHANNEL_PIXELS[channels_of(fmt, "format")]


def _provider(value: Any, name: str = "provider") -> int:
    if value is None:
        return _native.PROVIDER_DEFAULT
    if isinstance(value, str):
        try:
            return _PROVIDERS[value.lower()]
        except KeyError:
            raise InvalidArgument(f"{name} is {value!r}; use one of {', '.join(map(repr, _PROVIDERS))}") from None
    return _uint(value, name)


def _f32(x: float) -> float:
    return c_float(x).value


def _image_steps(steps: int, strength: float) -> int:
    """The steps an image-to-image call runs, as the library counts them: ceil(steps * strength) in f32,
    clamped to 1..steps."""
    product = _f32(float(steps) * _f32(strength))
    if not math.isfinite(product):
        return steps
    return min(max(math.ceil(product), 1), steps)


# --- numbers in and out ---------------------------------------------------------------------------------------


def _numpy():
    try:
        import numpy
    except ImportError:
        return None
    return numpy


def _float_buffer(shape: Tuple[int, ...]):
    """A zeroed float32 buffer of `shape`: (the object returned to the caller, a float* into it)."""
    n = 1
    for d in shape:
        n *= d
    np = _numpy()
    if np is not None:
        a = np.zeros(shape, dtype=np.float32)
        return a, a.ctypes.data_as(POINTER(c_float))
    t = Tensor(array("f", bytes(4 * n)), shape)
    return (t.data if len(shape) == 1 else t), ctypes.cast(t.data.buffer_info()[0], POINTER(c_float))


def _bytes_address(data: Any, name: str):
    """(address, size, what to keep alive) of a bytes-like object's bytes, without a copy where possible."""
    if isinstance(data, str) or data is None:
        raise TypeError(f"{name} must be bytes-like (bytes, bytearray, memoryview, mmap, ...), not "
                        f"{type(data).__name__}")
    if isinstance(data, bytes):
        return ctypes.cast(c_char_p(data), c_void_p).value, len(data), data
    try:
        view = memoryview(data)
    except TypeError:
        raise TypeError(f"{name} must be bytes-like (bytes, bytearray, memoryview, mmap, ...), not "
                        f"{type(data).__name__}") from None
    if not view.c_contiguous:
        raw = view.tobytes()
        return ctypes.cast(c_char_p(raw), c_void_p).value, len(raw), raw
    view = view.cast("B") if (view.format, view.ndim) != ("B", 1) else view
    if view.nbytes and not view.readonly:
        keep = (ctypes.c_char * view.nbytes).from_buffer(view)
        return ctypes.addressof(keep), view.nbytes, keep
    np = _numpy()
    if view.nbytes and np is not None:
        keep = np.frombuffer(view, dtype=np.uint8)
        return keep.ctypes.data, view.nbytes, keep
    raw = view.tobytes()  # read-only and no numpy: a copy
    return ctypes.cast(c_char_p(raw), c_void_p).value, len(raw), raw


def _latent_count(latents: Any) -> Optional[int]:
    shape = getattr(latents, "shape", None)
    if shape is None or len(shape) not in (3, 4):
        return None  # the library says what is wrong
    return 1 if len(shape) == 3 else int(shape[0])


def _read_latent(lib: _native.Library, handle: int):
    """The latent's floats: a numpy array when numpy is installed, else a Tensor."""
    shape = (c_uint32 * 4)()
    lib.check(lib.mirage_latent_shape(handle, shape))
    data = POINTER(c_float)()
    n = c_size_t()
    lib.check(lib.mirage_latent_data(handle, byref(data), byref(n)))
    shape = tuple(shape)
    if n.value != math.prod(shape):
        raise _errors.InternalError(f"a latent of shape {shape} holds {n.value} floats")
    out, ptr = _float_buffer(shape)
    ctypes.memmove(ptr, data, 4 * n.value)
    return out


@contextlib.contextmanager
def _noise_handle(lib: _native.Library, noise: Any):
    """The MirageLatent of `noise` (None: none) for the duration of a call or a submission."""
    if noise is None:
        yield None
    else:
        with _latent_handle(lib, noise, "noise") as handle:
            yield handle


@contextlib.contextmanager
def _latent_handle(lib: _native.Library, latents: Any, name: str):
    """A new MirageLatent holding a copy of `latents` (a numpy array or a Tensor, shaped (n, c, h, w) or
    (c, h, w)), freed when the block ends."""
    np = _numpy()
    if isinstance(latents, Tensor):
        shape, values = latents.shape, latents.data
        addr = values.buffer_info()[0]
        keep = values
        count = len(values)
    elif np is not None and (isinstance(latents, np.ndarray) or hasattr(latents, "__array_interface__")):
        a = np.asarray(latents)
        if a.dtype.kind not in "fiu":
            raise TypeError(f"{name} must hold real numbers, not {a.dtype}")
        keep = a = np.ascontiguousarray(a, dtype=np.float32)
        shape, addr, count = a.shape, a.ctypes.data, a.size
    else:
        what = "None" if latents is None else type(latents).__name__
        raise TypeError(f"{name} must be a numpy array or a mirage.Tensor, not {what}")
    if len(shape) == 3:
        shape = (1,) + tuple(shape)
    if len(shape) != 4:
        raise InvalidArgument(f"{name} has shape {tuple(shape)}; latents are shaped (n, c, h, w) or (c, h, w)")
    dims = (c_uint32 * 4)(*(_uint(d, f"{name}.shape[{k}]") for k, d in enumerate(shape)))
    handle = c_void_p()
    lib.check(lib.mirage_latent_new(ctypes.cast(addr, POINTER(c_float)), count, dims, byref(handle)))
    try:
        yield handle.value
    finally:
        lib.mirage_latent_free(handle.value)
        del keep


def _copy_view(view: MirageImage) -> Image:
    """A mirage.Image with a copy of the pixels a MirageImage points to (library memory, borrowed)."""
    channels = PIXEL_CHANNELS.get(view.format)
    if channels is None:
        raise _errors.InternalError(f"the library returned an image of unknown format {view.format}")
    w, h = view.width, view.height
    row = w * channels
    stride = view.stride or row
    if stride == row:
        data = ctypes.string_at(view.data, row * h)
    else:
        raw = ctypes.string_at(view.data, stride * (h - 1) + row)
        data = b"".join(raw[y * stride : y * stride + row] for y in range(h))
    return Image(data, w, h, channels)


def _take_batch(lib: _native.Library, handle: int) -> List[Image]:
    """Copies every image out of a MirageImageBatch, then frees it (also when copying fails)."""
    try:
        images = []
        for i in range(lib.mirage_image_batch_count(handle)):
            view = MirageImage()
            lib.check(lib.mirage_image_batch_get(handle, i, byref(view)))
            images.append(_copy_view(view))
        return images
    finally:
        lib.mirage_image_batch_free(handle)


def _host_images(images: Sequence[Image]):
    """A C array of MirageImage over the pixels of `images` (which must outlive its use)."""
    arr = (MirageImage * len(images))()
    for k, img in enumerate(images):
        raw = img.tobytes()
        arr[k].width, arr[k].height, arr[k].stride = img.width, img.height, 0
        arr[k].format = CHANNEL_PIXELS[img.channels]
        arr[k].data = ctypes.cast(c_char_p(raw), c_void_p).value  # the bytes' own buffer, read only
    return arr


class _Callbacks:
    """The C callbacks of one generation: call the host's functions, turn an exception into a cancel and
    keep it to re-raise after the call (it never crosses the C library)."""

    def __init__(self, on_progress, on_preview, preview_total: int):
        self.on_progress = on_progress
        self.on_preview = on_preview
        self.preview_total = preview_total
        self.error: Optional[BaseException] = None
        # Always a progress callback: it is where Python code (and so Ctrl-C) gets to run during a generation.
        self.c_progress = MirageProgressCallback(self._progress)
        self.c_preview = MiragePreviewCallback(self._preview) if on_preview is not None else None

    def _progress(self, step, total, _user_data):
        try:
            if self.error is not None:
                return False
            if self.on_progress is None:
                return True
            result = self.on_progress(step, total)
            return result is None or bool(result)
        except BaseException as e:  # noqa: B902 - KeyboardInterrupt too: cancel, re-raise after the call
            self.error = e
            return False

    def _preview(self, step, images, count, _user_data):
        try:
            if self.error is not None:
                return False
            batch = [_copy_view(images[i]) for i in range(count)]
            result = self.on_preview(step, self.preview_total, batch)
            return result is None or bool(result)
        except BaseException as e:  # noqa: B902
            self.error = e
            return False


class Distribution(NamedTuple):
    """What the VAE's encoder gives per image: the mean and log-variance latents, shaped (n, c, h, w)."""

    mean: Any
    logvar: Any


class Embedding(NamedTuple):
    """A prompt's text embeddings: `pooled` (width floats, L2-normalised) and `tokens` (tokens x width)."""

    pooled: Any
    tokens: Any


@dataclass(frozen=True)
class Info:
    """What a model set is (read once, when the Context opens)."""

    #: manifest.json's "name"
    name: str
    width: int
    height: int
    #: 1 grey, 3 RGB, 4 RGBA
    channels: int
    #: (channels, height, width) of one latent; None when the set has no VAE
    latent_shape: Optional[Tuple[int, int, int]]
    #: model kind ("vae_encoder", "vae_decoder", "unet", "text_encoder") -> the provider it really runs on
    #: ("cpu", "cuda", "tensorrt"), for the models the set has
    providers: Mapping[str, str] = field(default_factory=dict)
    #: (tokens per prompt, embedding width) of a text-conditioned set; None otherwise
    text_shape: Optional[Tuple[int, int]] = None
    #: whether the set's VAE was made for decoding prior samples (``vae_sample_prior`` + ``decode`` give images,
    #: e.g. models/fashion-vae); False where they may give blobs or where the set has no VAE
    prior_sampleable: bool = False

    @property
    def size(self) -> Tuple[int, int]:
        """(width, height)"""
        return self.width, self.height

    @property
    def text_conditioned(self) -> bool:
        return self.text_shape is not None


class Context:
    """A loaded model set (``mirage_context_new``): generate, re-imagine, denoise, inpaint, interpolate between
    prompts, use the VAE and the text encoder; block until done, or submit jobs (``submit_*``).

    ``Context(models_dir, provider=None, *, workers=None, max_queued_jobs=None, tileable=False,
    library=None)``: `models_dir` is the set's folder (with its manifest.json) or a pack file made by
    ``mirage pack`` (the library tells them apart); :meth:`from_memory` opens a pack held in memory.
    `provider` one of "auto", "cpu", "cuda", "tensorrt", or None for the runtime's default ("auto" unless
    :func:`init_runtime` chose another); `workers` the threads that run the context's jobs (1 to
    ``MAX_WORKERS``; None: the library's 1, jobs one at a time in submission order); `max_queued_jobs` how many
    submitted jobs that have not started it holds before a submission raises :class:`mirage.Busy` (1 to
    ``MAX_QUEUED_JOBS``; None: the library's 64); `tileable` prepares the sessions of ``tileable=True``
    generations now (else they are made on the first such call); `precision` the text encoder's, "fp32" (None:
    the default) or "int8" (its reduced export: 34 MB instead of 90 MB, a faster start, embeddings within
    cosine 0.999 of fp32's); `library` the path of a libmirage to use
    instead of the default one (see :func:`mirage.load_library`).

    Thread-safe: several threads may use one context at once (calls on the same model run one after the other
    in the library); the GIL is released while the library works. ``close()`` (or leaving a ``with`` block)
    cancels running generations, waits for every call on the context to return, then frees it; calls made
    afterwards raise :class:`mirage.ClosedError`.

    Results are lists of :class:`mirage.Image` in the set's own channels unless `format` ("gray", "rgb",
    "rgba") says otherwise. Latents and embeddings are numpy float32 arrays when numpy is installed, else
    :class:`mirage.Tensor`.

    Callbacks run on the calling thread: ``on_progress(step, total)`` after every step and
    ``on_preview(step, total, images)`` with the current estimate of the results (one VAE decode per step);
    returning False cancels (:class:`mirage.Cancelled`), returning None or True continues. An exception raised
    by a callback cancels the run and is re-raised by the call.
    """

    def __init__(self, models_dir, provider=None, *, workers=None, max_queued_jobs=None, tileable=False,
                 precision=None, library=None):
        self._setup(library)
        path = _path(models_dir, "models_dir")
        params = self._context_params(provider, workers, max_queued_jobs, tileable, precision)
        out = c_void_p()
        self._lib.check(self._lib.mirage_context_new(path, byref(params), byref(out)))
        self._opened(out.value, os.fsdecode(path))

    @classmethod
    def from_memory(cls, data, provider=None, *, workers=None, max_queued_jobs=None, tileable=False,
                    precision=None, library=None) -> "Context":
        """Opens a model pack (the file ``mirage pack`` writes) held in memory: `data` is any bytes-like object
        (bytes, bytearray, memoryview, mmap, a numpy uint8 array), e.g. read from the caller's own archive
        (``mirage_context_new_from_memory``). The bytes are only read during this call: nothing refers to them
        afterwards, so the caller may drop or reuse the buffer as soon as it returns. A damaged, truncated or
        foreign buffer raises :class:`mirage.InvalidModel` saying what is wrong.

        Options as the constructor's, but the tileable sessions cannot be made later (the buffer is gone): pass
        ``tileable=True`` here to generate ``tileable=True`` images with this context. ``models_dir`` is None."""
        self = cls.__new__(cls)
        self._setup(library)
        params = self._context_params(provider, workers, max_queued_jobs, tileable, precision)
        addr, size, keep = _bytes_address(data, "data")
        out = c_void_p()
        self._lib.check(self._lib.mirage_context_new_from_memory(addr, size, byref(params), byref(out)))
        del keep
        self._opened(out.value, None)
        return self

    def _setup(self, library) -> None:
        self._ptr: Optional[int] = None
        self._closing = False
        self._cond = threading.Condition(threading.Lock())
        self._active: Dict[int, int] = {}  # thread id -> calls in flight on this context
        self._lib = _native.library_for(library)

    def _context_params(self, provider, workers, max_queued_jobs, tileable, precision) -> MirageContextParams:
        params = MirageContextParams()
        self._lib.check(self._lib.mirage_context_params_init(byref(params), sizeof(params)))
        params.provider = _provider(provider)
        if workers is not None:
            params.workers = _uint(workers, "workers")
        if max_queued_jobs is not None:
            params.max_queued_jobs = _uint(max_queued_jobs, "max_queued_jobs")
        params.tileable = bool(tileable)
        if precision is not None:
            names = {"fp32": _native.PRECISION_FP32, "int8": _native.PRECISION_INT8}
            if not isinstance(precision, str) or precision.lower() not in names:
                raise InvalidArgument(f"precision must be 'fp32' or 'int8', not {precision!r}")
            params.precision = names[precision.lower()]
        return params

    def _opened(self, ptr: int, models_dir: Optional[str]) -> None:
        self._ptr = ptr
        #: the folder or pack file the set was opened from (None: from memory)
        self.models_dir = models_dir
        try:
            self._info = self._read_info()
        except BaseException:
            self.close()
            raise

    # --- lifetime ---

    @contextlib.contextmanager
    def _use(self):
        me = threading.get_ident()
        with self._cond:
            if self._ptr is None or self._closing:
                raise ClosedError("the context is closed")
            self._active[me] = self._active.get(me, 0) + 1
            ptr = self._ptr
        try:
            yield ptr
        finally:
            with self._cond:
                n = self._active[me] - 1
                if n:
                    self._active[me] = n
                else:
                    del self._active[me]
                self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._ptr is None or self._closing

    def close(self) -> None:
        """Frees the context: cancels its running generations, waits for every call on it (from other
        threads) to return, then frees it. Idempotent; also safe from inside a callback of a generation on it
        (that generation then raises Cancelled, or returns if it was at its last step). Its jobs of the workers
        are cancelled (their ``result()`` raises Cancelled unless they had ended); manual jobs still run."""
        me = threading.get_ident()
        with self._cond:
            if self._ptr is None or self._closing:
                return
            self._closing = True
            ptr = self._ptr
            # A cancel reaches only generations already registered in the library: repeat it until all
            # calls of other threads have returned.
            while any(n for t, n in self._active.items() if t != me):
                self._lib.mirage_context_cancel(ptr)
                self._cond.wait(0.02)
            self._ptr = None
        self._lib.mirage_context_free(ptr)

    def __enter__(self) -> "Context":
        if self.closed:
            raise ClosedError("the context is closed")
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        ptr = getattr(self, "_ptr", None)
        if ptr is not None and not getattr(self, "_closing", True):
            self._ptr = None
            try:
                self._lib.mirage_context_free(ptr)
            except Exception:  # interpreter shutdown
                pass

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{self._info.name!r} {self._info.width}x{self._info.height}"
        return f"<mirage.Context {state}>"

    # --- what the set is ---

    def _read_info(self) -> Info:
        lib = self._lib
        with self._use() as ctx:
            needed = c_size_t()
            lib.check(lib.mirage_context_name(ctx, None, 0, byref(needed)))
            buf = ctypes.create_string_buffer(needed.value + 1)
            lib.check(lib.mirage_context_name(ctx, buf, needed.value + 1, None))
            w, h, c = c_uint32(), c_uint32(), c_uint32()
            lib.check(lib.mirage_context_image_size(ctx, byref(w), byref(h), byref(c)))
            shape = (c_uint32 * 3)()
            status = lib.mirage_context_latent_shape(ctx, shape)
            if status == _errors.ERR_UNSUPPORTED:
                latent_shape = None
            else:
                lib.check(status)
                latent_shape = tuple(shape)
            sampleable = c_bool(False)
            if latent_shape is not None:
                lib.check(lib.mirage_context_prior_sampleable(ctx, byref(sampleable)))
            providers = {}
            for kind, value in _KINDS.items():
                p = c_uint32()
                status = lib.mirage_context_provider(ctx, value, byref(p))
                if status == _errors.ERR_UNSUPPORTED:
                    continue
                lib.check(status)
                providers[kind] = lib.provider_name(p.value)
            tokens, width = c_uint32(), c_uint32()
            status = lib.mirage_context_text_shape(ctx, byref(tokens), byref(width))
            if status == _errors.ERR_UNSUPPORTED:
                text_shape = None
            else:
                lib.check(status)
                text_shape = (tokens.value, width.value)
        return Info(buf.value.decode("utf-8", "replace"), w.value, h.value, c.value, latent_shape, providers,
                    text_shape, sampleable.value)

    @property
    def info(self) -> Info:
        """The set's name, image size and channels, latent shape, providers and text shape."""
        return self._info

    @property
    def library(self) -> _native.Library:
        return self._lib

    # --- diffusion ---

    def _params(self, *, steps, sampler, eta, seed, count, strength, fmt, prompt, negative, guidance,
                tileable=False):
        lib = self._lib
        p = MirageDiffusionParams()
        lib.check(lib.mirage_diffusion_params_init(byref(p), sizeof(p)))
        if steps is not None:
            p.steps = _uint(steps, "steps")
        p.sampler = _text(sampler, "sampler", optional=True)
        p.eta = _real(eta, "eta")
        p.seed = _uint(seed, "seed", 64)
        p.count = _uint(count, "count")
        p.strength = _real(strength, "strength")
        p.format = _format(fmt, self._info.channels)
        p.prompt = _text(prompt, "prompt", optional=True)
        p.negative_prompt = _text(negative, "negative", optional=True)
        p.guidance = _native.GUIDANCE_DEFAULT if guidance is None else _real(guidance, "guidance")
        p.tileable = bool(tileable)
        return p

    def _diffuse(self, call: Callable, params: MirageDiffusionParams, on_progress, on_preview,
                 preview_total: int, noise=None) -> List[Image]:
        _callable(on_progress, "on_progress")
        _callable(on_preview, "on_preview")
        lib = self._lib
        cb = _Callbacks(on_progress, on_preview, preview_total)
        params.progress = cb.c_progress
        if cb.c_preview is not None:
            params.preview = cb.c_preview
        out = c_void_p()
        with _noise_handle(lib, noise) as z, self._use() as ctx:
            params.noise = z
            status = call(ctx, byref(params), byref(out))
            failure = lib.error(status) if status != _errors.OK else None  # this thread's message, now
        error, cb.error = cb.error, None
        if error is not None:
            if status == _errors.OK:
                lib.mirage_image_batch_free(out.value)
            try:
                raise error
            finally:
                error = None
        if failure is not None:
            raise failure
        return _take_batch(lib, out.value)

    def generate(self, prompt=None, negative=None, count=1, steps=None, seed=0, guidance=None, sampler=None,
                 *, eta=0.0, format=None, tileable=False, noise=None, on_progress=None,
                 on_preview=None) -> List[Image]:
        """`count` new images from noise (``mirage_generate``).

        `prompt` (text-conditioned sets) is what to draw, `negative` what to steer away from; `guidance` the
        classifier-free guidance scale (None: the set's own). `steps` defaults to the library's 50; `sampler`
        None is the set's own (ddim, or a diffusers folder's scheduler), else "ddim", "dpm++2m" (diffusers
        folders also "dpm++2m-karras", "euler", "euler-a", "pndm", "lcm"), `eta` DDIM's randomness (0: deterministic). The same arguments and `seed` give
        the same pixels. `tileable=True` makes images that wrap seamlessly at their edges. `noise` replaces the
        initial noise drawn from `seed`: float32 latents shaped (count, c, h, w) (the set's diffusion shape,
        ``info.latent_shape``), a numpy array or a :class:`mirage.Tensor`, copied during the call.
        """
        p = self._params(steps=steps, sampler=sampler, eta=eta, seed=seed, count=count, strength=1.0, fmt=format,
                         prompt=prompt, negative=negative, guidance=guidance, tileable=tileable)
        return self._diffuse(self._lib.mirage_generate, p, on_progress, on_preview, p.steps, noise)

    def _inputs(self, images, name: str, resize: bool, convert: bool, mask: bool = False) -> List[Image]:
        np = _numpy()
        if isinstance(images, (list, tuple)):
            items, listed = list(images), True
        elif np is not None and isinstance(images, np.ndarray) and images.ndim == 4:
            items, listed = list(images), True
        else:
            items, listed = [images], False
        name_of = (lambda k: f"{name}[{k}]") if listed else (lambda k: name)
        target = 1 if mask else self._info.channels
        out = []
        for k, obj in enumerate(items):
            img = to_image(obj, name_of(k), mask=mask)
            if convert and img.channels > target:
                img = img._with_channels(target)
            if resize:
                img = img.resize(self._info.size)
            if convert:
                img = img._with_channels(target)
            out.append(img)
        return out

    def _image_op(self, fn, images, *, strength, steps, seed, guidance, sampler, eta, format, prompt, negative,
                  resize, convert, tileable, noise, on_progress, on_preview) -> List[Image]:
        resize, convert = bool(resize), bool(convert)
        hosts = self._inputs(images, "images", resize, convert)
        p = self._params(steps=steps, sampler=sampler, eta=eta, seed=seed, count=1, strength=strength, fmt=format,
                         prompt=prompt, negative=negative, guidance=guidance, tileable=tileable)
        arr = _host_images(hosts)
        total = _image_steps(p.steps, p.strength)
        return self._diffuse(lambda ctx, params, out: fn(ctx, arr, len(hosts), params, out), p, on_progress,
                             on_preview, total, noise)

    def img2img(self, images, prompt=None, negative=None, strength=0.6, steps=None, seed=0, guidance=None,
                sampler=None, *, eta=0.0, format=None, resize=False, convert=False, tileable=False, noise=None,
                on_progress=None, on_preview=None) -> List[Image]:
        """Re-imagines each image (``mirage_img2img``): pushes it `strength` (0, 1] of the way into noise and
        denoises it again, running that fraction of `steps`. One result per input, in order.

        `images`: one image or a list (a mirage.Image, a Pillow image, a numpy uint8 array, an image path).
        Each must have the set's size and channels; ``resize=True`` resamples it to the set's size and
        ``convert=True`` converts its channels, otherwise the library refuses it (InvalidArgument).
        `tileable` and `noise` (one sample per image) as in :meth:`generate`.
        """
        return self._image_op(self._lib.mirage_img2img, images, strength=strength, steps=steps, seed=seed,
                              guidance=guidance, sampler=sampler, eta=eta, format=format, prompt=prompt,
                              negative=negative, resize=resize, convert=convert, tileable=tileable, noise=noise,
                              on_progress=on_progress, on_preview=on_preview)

    def denoise(self, images, prompt=None, negative=None, strength=0.1, steps=None, seed=0, guidance=None,
                sampler=None, *, eta=0.0, format=None, resize=False, convert=False, tileable=False,
                on_progress=None, on_preview=None) -> List[Image]:
        """Removes noise from each image without adding any (``mirage_denoise``): `strength` is the input's
        noise level (0.05 to 0.2 for mild noise). Arguments as :meth:`img2img` (no `noise`: nothing random is
        added)."""
        return self._image_op(self._lib.mirage_denoise, images, strength=strength, steps=steps, seed=seed,
                              guidance=guidance, sampler=sampler, eta=eta, format=format, prompt=prompt,
                              negative=negative, resize=resize, convert=convert, tileable=tileable, noise=None,
                              on_progress=on_progress, on_preview=on_preview)

    def _inpaint_inputs(self, images, masks, resize, convert):
        resize, convert = bool(resize), bool(convert)
        hosts = self._inputs(images, "images", resize, convert)
        mask_list = self._inputs(masks, "masks", resize, convert, mask=True)
        if len(mask_list) == 1 and len(hosts) > 1:
            mask_list = mask_list * len(hosts)
        if len(mask_list) != len(hosts):
            raise InvalidArgument(f"{len(hosts)} images but {len(mask_list)} masks: one mask per image, or one for all")
        return hosts, mask_list

    def inpaint(self, images, masks, prompt=None, negative=None, strength=1.0, steps=None, seed=0, guidance=None,
                sampler=None, *, eta=0.0, format=None, resize=False, convert=False, tileable=False, noise=None,
                on_progress=None, on_preview=None) -> List[Image]:
        """Fills the masked region of each image (``mirage_inpaint``): mask 255 = invent, 0 = keep, between =
        blend. `masks`: one mask per image, or one for all; grey images of the images' size (a numpy bool
        array counts as 0/255; ``convert=True`` turns colour masks grey, ``resize=True`` resamples them).
        Pixels where the mask is 0 come back exactly when `format` is the images' own. `tileable` and `noise`
        as in :meth:`img2img`."""
        hosts, mask_list = self._inpaint_inputs(images, masks, resize, convert)
        p = self._params(steps=steps, sampler=sampler, eta=eta, seed=seed, count=1, strength=strength, fmt=format,
                         prompt=prompt, negative=negative, guidance=guidance, tileable=tileable)
        arr, marr = _host_images(hosts), _host_images(mask_list)
        total = _image_steps(p.steps, p.strength)
        fn = self._lib.mirage_inpaint
        return self._diffuse(lambda ctx, params, out: fn(ctx, arr, marr, len(hosts), params, out), p, on_progress,
                             on_preview, total, noise)

    @staticmethod
    def _prompts(prompts) -> List[bytes]:
        what = "None" if prompts is None else type(prompts).__name__
        if isinstance(prompts, (str, bytes, bytearray)) or prompts is None:
            raise TypeError(f"prompts must be a list of strings, not {what}")
        try:
            prompts = list(prompts)
        except TypeError:
            raise TypeError(f"prompts must be a list of strings, not {what}") from None
        return [_text(s, f"prompts[{k}]") for k, s in enumerate(prompts)]

    def interpolate(self, prompts, frames, negative=None, steps=None, seed=0, guidance=None, sampler=None, *,
                    eta=0.0, batch=1, format=None, tileable=False, noise=None, on_progress=None) -> List[Image]:
        """`frames` images morphing along `prompts` (at least 2) in turn, all from the noise of `seed`
        (``mirage_interpolate``; text-conditioned sets). `batch` frames run per U-Net batch. `on_progress`
        counts the steps of all frames. (The library gives no previews here, so there is no on_preview.)
        `noise`: one sample, shared by every frame; `tileable` as in :meth:`generate`."""
        encoded = self._prompts(prompts)
        frames = _uint(frames, "frames")
        p = self._params(steps=steps, sampler=sampler, eta=eta, seed=seed, count=batch, strength=1.0, fmt=format,
                         prompt=None, negative=negative, guidance=guidance, tileable=tileable)
        arr = (c_char_p * max(1, len(encoded)))(*encoded)
        fn = self._lib.mirage_interpolate
        n = len(encoded)
        return self._diffuse(lambda ctx, params, out: fn(ctx, arr, n, frames, params, out), p, on_progress, None,
                             p.steps, noise)

    # --- jobs ---

    def _job_params(self, mode, previews) -> MirageJobParams:
        jp = MirageJobParams()
        self._lib.check(self._lib.mirage_job_params_init(byref(jp), sizeof(jp)))
        if not isinstance(mode, str):
            raise TypeError(f"mode must be \"workers\" or \"manual\", not {type(mode).__name__}")
        try:
            jp.mode = _JOB_MODES[mode.lower()]
        except KeyError:
            raise InvalidArgument(f"mode is {mode!r}; use \"workers\" or \"manual\"") from None
        jp.previews = bool(previews)
        return jp

    def _submit(self, kind: str, call: Callable, params: Optional[MirageDiffusionParams], noise, mode, previews,
                count: Optional[int], pixel_format: int) -> "_job.Job":
        """Submits `call(ctx, params_ptr, job_params_ptr, out)` (params_ptr None for a VAE job) as a Job."""
        lib = self._lib
        jp = self._job_params(mode, previews)
        out = c_void_p()
        with _noise_handle(lib, noise) as z, self._use() as ctx:
            if params is not None:
                params.noise = z
            lib.check(call(ctx, None if params is None else byref(params), byref(jp), byref(out)))
        try:
            return _job.Job(self, out.value, kind=kind, manual=jp.mode == _native.JOB_MANUAL,
                            previews=bool(jp.previews), count=count, pixel_format=pixel_format)
        except BaseException:
            lib.mirage_job_free(out.value)
            raise

    def submit_generate(self, prompt=None, negative=None, count=1, steps=None, seed=0, guidance=None,
                        sampler=None, *, eta=0.0, format=None, tileable=False, noise=None, mode="workers",
                        previews=False) -> "_job.Job":
        """Submits :meth:`generate` as a :class:`mirage.Job` and returns at once (``mirage_job_generate``; the
        arguments are checked and the prompts encoded now). `mode`: "workers" (the context's worker threads
        run it) or "manual" (the caller runs it with ``job.advance()``); `previews=True` keeps the estimate of
        the images after each step for ``job.preview()`` (one VAE decode per step). Raises
        :class:`mirage.Busy` when the context's queue is full (nothing was submitted). Failures while the job
        runs are raised by ``job.result()``. The same arguments give the images of :meth:`generate`."""
        p = self._params(steps=steps, sampler=sampler, eta=eta, seed=seed, count=count, strength=1.0, fmt=format,
                         prompt=prompt, negative=negative, guidance=guidance, tileable=tileable)
        fn = self._lib.mirage_job_generate
        return self._submit("generate", fn, p, noise, mode, previews, p.count, p.format)

    def _submit_image_op(self, kind, fn, images, *, strength, steps, seed, guidance, sampler, eta, format, prompt,
                         negative, resize, convert, tileable, noise, mode, previews):
        hosts = self._inputs(images, "images", bool(resize), bool(convert))
        p = self._params(steps=steps, sampler=sampler, eta=eta, seed=seed, count=1, strength=strength, fmt=format,
                         prompt=prompt, negative=negative, guidance=guidance, tileable=tileable)
        arr = _host_images(hosts)
        n = len(hosts)
        return self._submit(kind, lambda ctx, params, jp, out: fn(ctx, arr, n, params, jp, out), p, noise, mode,
                            previews, n, p.format)

    def submit_img2img(self, images, prompt=None, negative=None, strength=0.6, steps=None, seed=0, guidance=None,
                       sampler=None, *, eta=0.0, format=None, resize=False, convert=False, tileable=False,
                       noise=None, mode="workers", previews=False) -> "_job.Job":
        """Submits :meth:`img2img` as a job (the images are read now). `mode` and `previews` as in
        :meth:`submit_generate`."""
        return self._submit_image_op("img2img", self._lib.mirage_job_img2img, images, strength=strength, steps=steps,
                                     seed=seed, guidance=guidance, sampler=sampler, eta=eta, format=format,
                                     prompt=prompt, negative=negative, resize=resize, convert=convert,
                                     tileable=tileable, noise=noise, mode=mode, previews=previews)

    def submit_denoise(self, images, prompt=None, negative=None, strength=0.1, steps=None, seed=0, guidance=None,
                       sampler=None, *, eta=0.0, format=None, resize=False, convert=False, tileable=False,
                       mode="workers", previews=False) -> "_job.Job":
        """Submits :meth:`denoise` as a job. `mode` and `previews` as in :meth:`submit_generate`."""
        return self._submit_image_op("denoise", self._lib.mirage_job_denoise, images, strength=strength, steps=steps,
                                     seed=seed, guidance=guidance, sampler=sampler, eta=eta, format=format,
                                     prompt=prompt, negative=negative, resize=resize, convert=convert,
                                     tileable=tileable, noise=None, mode=mode, previews=previews)

    def submit_inpaint(self, images, masks, prompt=None, negative=None, strength=1.0, steps=None, seed=0,
                       guidance=None, sampler=None, *, eta=0.0, format=None, resize=False, convert=False,
                       tileable=False, noise=None, mode="workers", previews=False) -> "_job.Job":
        """Submits :meth:`inpaint` as a job (images and masks are read now). `mode` and `previews` as in
        :meth:`submit_generate`."""
        hosts, mask_list = self._inpaint_inputs(images, masks, resize, convert)
        p = self._params(steps=steps, sampler=sampler, eta=eta, seed=seed, count=1, strength=strength, fmt=format,
                         prompt=prompt, negative=negative, guidance=guidance, tileable=tileable)
        arr, marr = _host_images(hosts), _host_images(mask_list)
        n = len(hosts)
        fn = self._lib.mirage_job_inpaint
        return self._submit("inpaint", lambda ctx, params, jp, out: fn(ctx, arr, marr, n, params, jp, out), p,
                            noise, mode, previews, n, p.format)

    def submit_interpolate(self, prompts, frames, negative=None, steps=None, seed=0, guidance=None, sampler=None,
                           *, eta=0.0, batch=1, format=None, tileable=False, noise=None, mode="workers",
                           previews=False) -> "_job.Job":
        """Submits :meth:`interpolate` as a job (the prompts are encoded now). `mode` and `previews` as in
        :meth:`submit_generate` (a preview shows the frames of the running batch)."""
        encoded = self._prompts(prompts)
        frames = _uint(frames, "frames")
        p = self._params(steps=steps, sampler=sampler, eta=eta, seed=seed, count=batch, strength=1.0, fmt=format,
                         prompt=None, negative=negative, guidance=guidance, tileable=tileable)
        arr = (c_char_p * max(1, len(encoded)))(*encoded)
        n = len(encoded)
        fn = self._lib.mirage_job_interpolate
        return self._submit("interpolate", lambda ctx, params, jp, out: fn(ctx, arr, n, frames, params, jp, out), p,
                            noise, mode, previews, frames, p.format)

    def submit_encode(self, images, *, resize=False, convert=False, mode="workers") -> "_job.Job":
        """Submits :meth:`encode` as a job of one step (the images are read now); its ``result()`` is a
        ``Distribution(mean, logvar)``."""
        hosts = self._inputs(images, "images", bool(resize), bool(convert))
        arr = _host_images(hosts)
        n = len(hosts)
        fn = self._lib.mirage_job_encode
        return self._submit("encode", lambda ctx, _params, jp, out: fn(ctx, arr, n, jp, out), None, None, mode,
                            False, None, _native.PIXEL_RGBA8)

    def submit_decode(self, latents, *, format=None, mode="workers") -> "_job.Job":
        """Submits :meth:`decode` as a job of one step (the latents are copied now)."""
        lib = self._lib
        fmt = _format(format, self._info.channels)
        fn = lib.mirage_job_decode
        with _latent_handle(lib, latents, "latents") as z:
            return self._submit("decode", lambda ctx, _params, jp, out: fn(ctx, z, fmt, jp, out), None, None, mode,
                                False, _latent_count(latents), fmt)

    def cancel(self) -> None:
        """Cancels every generation running on this context, from any thread (``mirage_context_cancel``): each
        raises :class:`mirage.Cancelled` within one step. Generations started afterwards run normally."""
        with self._use() as ctx:
            self._lib.check(self._lib.mirage_context_cancel(ctx))

    # --- the VAE ---

    def encode(self, images, *, resize=False, convert=False) -> Distribution:
        """Encodes images (as :meth:`img2img` takes them) into the VAE's latent distribution:
        ``Distribution(mean, logvar)``, each shaped (n, c, h, w)."""
        hosts = self._inputs(images, "images", bool(resize), bool(convert))
        arr = _host_images(hosts)
        lib = self._lib
        mean, logvar = c_void_p(), c_void_p()
        with self._use() as ctx:
            lib.check(lib.mirage_vae_encode(ctx, arr, len(hosts), byref(mean), byref(logvar)))
        try:
            return Distribution(_read_latent(lib, mean.value), _read_latent(lib, logvar.value))
        finally:
            lib.mirage_latent_free(mean.value)
            lib.mirage_latent_free(logvar.value)

    def sample(self, mean, logvar, seed=0):
        """One latent per item drawn from N(mean, exp(logvar)) with the noise of `seed`
        (``mirage_vae_sample``)."""
        lib = self._lib
        seed = _uint(seed, "seed", 64)
        out = c_void_p()
        with _latent_handle(lib, mean, "mean") as m, _latent_handle(lib, logvar, "logvar") as lv:
            with self._use() as ctx:
                lib.check(lib.mirage_vae_sample(ctx, m, lv, seed, byref(out)))
        try:
            return _read_latent(lib, out.value)
        finally:
            lib.mirage_latent_free(out.value)

    def sample_prior(self, count=1, seed=0):
        """`count` random latents of the prior N(0, I) (``mirage_vae_sample_prior``): decode them for new
        images."""
        lib = self._lib
        count, seed = _uint(count, "count", 64), _uint(seed, "seed", 64)
        out = c_void_p()
        with self._use() as ctx:
            lib.check(lib.mirage_vae_sample_prior(ctx, count, seed, byref(out)))
        try:
            return _read_latent(lib, out.value)
        finally:
            lib.mirage_latent_free(out.value)

    def decode(self, latents, *, format=None) -> List[Image]:
        """Decodes latents (a numpy array or a Tensor shaped (n, c, h, w) or (c, h, w)) into images
        (``mirage_vae_decode``)."""
        lib = self._lib
        fmt = _format(format, self._info.channels)
        out = c_void_p()
        with _latent_handle(lib, latents, "latents") as z:
            with self._use() as ctx:
                lib.check(lib.mirage_vae_decode(ctx, z, fmt, byref(out)))
        return _take_batch(lib, out.value)

    # --- text ---

    def embed(self, text, *, with_tokens=False):
        """The prompt's pooled embedding (L2-normalised, `width` floats) from the set's text encoder
        (``mirage_text_embed``); with ``with_tokens=True`` an ``Embedding(pooled, tokens)`` whose `tokens` is
        shaped (tokens, width). Raises Unsupported for a set without text conditioning."""
        lib = self._lib
        prompt = _text(text, "text")
        tokens, width = self._info.text_shape or (1, 1)  # no text: the library says so (Unsupported)
        pooled, pooled_ptr = _float_buffer((width,))
        if with_tokens:
            toks, toks_ptr = _float_buffer((tokens, width))
        else:
            toks, toks_ptr = None, None
        with self._use() as ctx:
            lib.check(lib.mirage_text_embed(ctx, prompt, pooled_ptr, width, toks_ptr,
                                            tokens * width if with_tokens else 0))
        return Embedding(pooled, toks) if with_tokens else pooled


# --- the process-wide runtime ---------------------------------------------------------------------------------

_runtime_lock = threading.Lock()
_log_callbacks: List[Any] = []  # every C log callback ever installed: the library may still hold one
_last_options: Optional[MirageRuntimeOptions] = None


def init_runtime(ort_library=None, provider="auto", *, strict=False, intra_threads=0, log_level="warn",
                 log_callback=None, tensorrt_fp16=False, tensorrt_cache_dir=None, digest_cache_dir=None,
                 prompt_cache=False, cuda_graph=False) -> None:
    """Sets up ONNX Runtime for the process (``mirage_runtime_init``); optional, and only before the first
    Context unless the options equal the defaults (then it only replaces the log callback and level).

    `ort_library`: the path of libonnxruntime (None: the library searches). `provider`: "auto", "cpu",
    "cuda", "tensorrt". `strict`: fail instead of falling back to the CPU. `intra_threads`: threads per
    session (0: ONNX Runtime's default). `log_level`: "debug", "info", "warn", "error". `log_callback(level,
    message)`: receives the library's (and ONNX Runtime's) log lines, level as a name, from any thread; it
    must be quick and must not call mirage; exceptions it raises are ignored. None logs to stderr.
    `digest_cache_dir`: a folder where verified model-file digests are kept, so that unchanged files are not
    hashed again by later processes, and (on CPU) each model's optimized graph, so that later processes create
    their sessions faster (None: hash and optimize on every load). `prompt_cache`: also keep encoded prompts
    there (needs `digest_cache_dir`): a prompt drawn before is not encoded again, and a Context loads its text
    encoder only when a prompt is not in the cache. The entries are embeddings of the prompts, not their text.
    `cuda_graph`: on CUDA, capture the U-Net's steps as a CUDA graph per batch shape and replay
    them (``MIRAGE_RUNTIME_CUDA_GRAPH``; no effect on TensorRT or the CPU).
    """
    global _last_options
    lib = _native.load_library()
    o = MirageRuntimeOptions()
    lib.check(lib.mirage_runtime_options_init(byref(o), sizeof(o)))
    o.ort_library_path = None if ort_library is None else _path(ort_library, "ort_library")
    o.provider = _provider(provider)
    o.strict = bool(strict)
    o.intra_threads = _uint(intra_threads, "intra_threads")
    if isinstance(log_level, str):
        try:
            o.log_level = _LOG_LEVELS[log_level.lower()]
        except KeyError:
            raise InvalidArgument(f"log_level is {log_level!r}; use \"debug\", \"info\", \"warn\" or \"error\"") from None
    else:
        o.log_level = _uint(log_level, "log_level")
    o.tensorrt_fp16 = bool(tensorrt_fp16)
    o.tensorrt_cache_dir = None if tensorrt_cache_dir is None else _path(tensorrt_cache_dir, "tensorrt_cache_dir")
    o.digest_cache_dir = None if digest_cache_dir is None else _path(digest_cache_dir, "digest_cache_dir")
    o.prompt_cache = bool(prompt_cache)
    o.flags = _native.RUNTIME_CUDA_GRAPH if cuda_graph else 0
    _callable(log_callback, "log_callback")
    with _runtime_lock:
        if log_callback is not None:

            def deliver(level, message, _user_data, _cb=log_callback):
                try:
                    _cb(_LOG_NAMES.get(level, str(level)), (message or b"").decode("utf-8", "replace"))
                except BaseException:  # noqa: B902 - must not unwind into the library
                    pass

            c_cb = MirageLogCallback(deliver)
            _log_callbacks.append(c_cb)
            o.log_callback = c_cb
        lib.check(lib.mirage_runtime_init(byref(o)))
        _last_options = o if log_callback is not None else None


def _detach_log_callback() -> None:
    """At exit: the same options without the Python log callback, so that no ONNX Runtime thread calls into
    a finalising interpreter."""
    o = _last_options
    if o is None or _native._default is None:
        return
    try:
        o.log_callback = MirageLogCallback()
        _native._default.mirage_runtime_init(byref(o))
    except Exception:
        pass


import atexit  # noqa: E402

atexit.register(_detach_log_callback)
