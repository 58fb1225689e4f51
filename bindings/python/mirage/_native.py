"""ctypes declarations of include/mirage.h, and finding and loading libmirage.

Everything here mirrors the header one to one; tests/test_layout.py compiles a C program from mirage.h and
compares every struct's size and field offsets, every constant and every function's parameter list with
what is declared here, so that the binding cannot drift from the header silently.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import threading
import warnings
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    c_bool,
    c_char_p,
    c_float,
    c_size_t,
    c_uint32,
    c_uint64,
    c_void_p,
)
from typing import List, Optional, Tuple

from . import _errors
from ._errors import LibraryNotFound, RuntimeLoadError

# --- constants (#define in mirage.h) -------------------------------------------------------------------------

HEADER_VERSION = "0.1.0"  # MIRAGE_VERSION_STRING of the header this binding declares
VERSION_MAJOR, VERSION_MINOR, VERSION_PATCH = 0, 1, 0

MAX_BATCH = 1024
MAX_STEPS = 1000
MAX_GUIDANCE = 50.0
MAX_THREADS = 256
MAX_WORKERS = 64
MAX_QUEUED_JOBS = 4096
MAX_IMAGE_SIDE = 4096
GUIDANCE_DEFAULT = -1.0
WAIT_FOREVER = 0xFFFFFFFF  # UINT32_MAX

TARGET_BOTTOM_UP = 1
TARGET_PREMULTIPLIED = 2

PROVIDER_DEFAULT = 0
PROVIDER_AUTO = 1
PROVIDER_TENSORRT = 2
PROVIDER_CUDA = 3
PROVIDER_CPU = 4

LOG_DEBUG = 0
LOG_INFO = 1
LOG_WARN = 2
LOG_ERROR = 3

PRECISION_FP32 = 0
PRECISION_INT8 = 1

MODEL_VAE_ENCODER = 1
MODEL_VAE_DECODER = 2
MODEL_UNET = 3
MODEL_TEXT_ENCODER = 4

PIXEL_GRAY8 = 1
PIXEL_RGB8 = 2
PIXEL_RGBA8 = 3
PIXEL_BGRA8 = 4  # MirageTarget only
PIXEL_RGBA32F = 5  # MirageTarget only

#: MIRAGE_PIXEL_* of 8-bit images (batches, host images) -> bytes per pixel (channels)
PIXEL_CHANNELS = {PIXEL_GRAY8: 1, PIXEL_RGB8: 3, PIXEL_RGBA8: 4}
CHANNEL_PIXELS = {1: PIXEL_GRAY8, 3: PIXEL_RGB8, 4: PIXEL_RGBA8}

FILTER_BILINEAR = 0
FILTER_NEAREST = 1

JOB_WORKERS = 0
JOB_MANUAL = 1

JOB_QUEUED = 1
JOB_RUNNING = 2
JOB_DONE = 3
JOB_FAILED = 4
JOB_CANCELLED = 5

# --- types ----------------------------------------------------------------------------------------------------

MirageStatus = c_uint32
MirageProvider = c_uint32
MirageLogLevel = c_uint32
MirageModelKind = c_uint32
MiragePixelFormat = c_uint32
MirageFilter = c_uint32
MirageJobMode = c_uint32
MirageJobState = c_uint32

MirageLogCallback = CFUNCTYPE(None, MirageLogLevel, c_char_p, c_void_p)
MirageProgressCallback = CFUNCTYPE(c_bool, c_uint32, c_uint32, c_void_p)


class MirageRuntimeOptions(Structure):
    _fields_ = [
        ("struct_size", c_size_t),
        ("ort_library_path", c_char_p),
        ("provider", MirageProvider),
        ("strict", c_bool),
        ("intra_threads", c_uint32),
        ("log_callback", MirageLogCallback),
        ("log_user_data", c_void_p),
        ("log_level", MirageLogLevel),
        ("tensorrt_fp16", c_bool),
        ("tensorrt_cache_dir", c_char_p),
        ("digest_cache_dir", c_char_p),
        ("prompt_cache", c_bool),
        ("flags", c_uint64),
    ]


RUNTIME_CUDA_GRAPH = 1


class MirageContextParams(Structure):
    _fields_ = [
        ("struct_size", c_size_t),
        ("provider", MirageProvider),
        ("workers", c_uint32),
        ("max_queued_jobs", c_uint32),
        ("tileable", c_bool),
        ("precision", c_uint32),
    ]


class MirageImage(Structure):
    _fields_ = [
        ("width", c_uint32),
        ("height", c_uint32),
        ("stride", c_uint32),
        ("format", MiragePixelFormat),
        ("data", c_void_p),  # uint8_t *
    ]


class MirageTarget(Structure):
    _fields_ = [
        ("data", c_void_p),
        ("size", c_size_t),
        ("width", c_uint32),
        ("height", c_uint32),
        ("stride", c_size_t),
        ("format", MiragePixelFormat),
        ("flags", c_uint32),
        ("filter", MirageFilter),
    ]


MiragePreviewCallback = CFUNCTYPE(c_bool, c_uint32, POINTER(MirageImage), c_size_t, c_void_p)


class MirageDiffusionParams(Structure):
    _fields_ = [
        ("struct_size", c_size_t),
        ("steps", c_uint32),
        ("sampler", c_char_p),
        ("eta", c_float),
        ("seed", c_uint64),
        ("count", c_uint32),
        ("strength", c_float),
        ("progress", MirageProgressCallback),
        ("preview", MiragePreviewCallback),
        ("user_data", c_void_p),
        ("format", MiragePixelFormat),
        ("prompt", c_char_p),
        ("negative_prompt", c_char_p),
        ("guidance", c_float),
        ("tileable", c_bool),
        ("noise", c_void_p),  # const MirageLatent *
    ]


class MirageJobParams(Structure):
    _fields_ = [
        ("struct_size", c_size_t),
        ("mode", MirageJobMode),
        ("previews", c_bool),
    ]


#: Every struct of the header, by its C name.
STRUCTS = {
    "MirageRuntimeOptions": MirageRuntimeOptions,
    "MirageContextParams": MirageContextParams,
    "MirageImage": MirageImage,
    "MirageTarget": MirageTarget,
    "MirageDiffusionParams": MirageDiffusionParams,
    "MirageJobParams": MirageJobParams,
}

_P = c_void_p  # opaque handles (MirageContext *, MirageLatent *, MirageImageBatch *, MirageJob *)
_PP = POINTER(c_void_p)
_U32P = POINTER(c_uint32)

#: name -> (restype, argtypes): every function of the header.
FUNCTIONS = {
    "mirage_status_str": (c_char_p, [MirageStatus]),
    "mirage_last_error": (c_size_t, [c_void_p, c_size_t]),
    "mirage_version": (c_char_p, []),
    "mirage_provider_name": (c_char_p, [MirageProvider]),
    "mirage_runtime_options_init": (MirageStatus, [POINTER(MirageRuntimeOptions), c_size_t]),
    "mirage_runtime_init": (MirageStatus, [POINTER(MirageRuntimeOptions)]),
    "mirage_context_params_init": (MirageStatus, [POINTER(MirageContextParams), c_size_t]),
    "mirage_context_new": (MirageStatus, [c_char_p, POINTER(MirageContextParams), _PP]),
    "mirage_context_new_from_memory": (MirageStatus, [c_void_p, c_size_t, POINTER(MirageContextParams), _PP]),
    "mirage_context_free": (None, [_P]),
    "mirage_context_cancel": (MirageStatus, [_P]),
    "mirage_context_image_size": (MirageStatus, [_P, _U32P, _U32P, _U32P]),
    "mirage_context_latent_shape": (MirageStatus, [_P, _U32P]),
    "mirage_context_prior_sampleable": (MirageStatus, [_P, POINTER(c_bool)]),
    "mirage_context_provider": (MirageStatus, [_P, MirageModelKind, POINTER(MirageProvider)]),
    "mirage_context_name": (MirageStatus, [_P, c_void_p, c_size_t, POINTER(c_size_t)]),
    "mirage_image_batch_count": (c_size_t, [_P]),
    "mirage_image_batch_get": (MirageStatus, [_P, c_size_t, POINTER(MirageImage)]),
    "mirage_image_batch_write": (MirageStatus, [_P, c_size_t, POINTER(MirageTarget)]),
    "mirage_image_batch_free": (None, [_P]),
    "mirage_latent_new": (MirageStatus, [POINTER(c_float), c_size_t, _U32P, _PP]),
    "mirage_latent_shape": (MirageStatus, [_P, _U32P]),
    "mirage_latent_data": (MirageStatus, [_P, POINTER(POINTER(c_float)), POINTER(c_size_t)]),
    "mirage_latent_free": (None, [_P]),
    "mirage_vae_encode": (MirageStatus, [_P, POINTER(MirageImage), c_size_t, _PP, _PP]),
    "mirage_vae_sample": (MirageStatus, [_P, _P, _P, c_uint64, _PP]),
    "mirage_vae_sample_prior": (MirageStatus, [_P, c_size_t, c_uint64, _PP]),
    "mirage_vae_decode": (MirageStatus, [_P, _P, MiragePixelFormat, _PP]),
    "mirage_vae_decode_into": (MirageStatus, [_P, _P, POINTER(MirageImage), c_size_t]),
    "mirage_diffusion_params_init": (MirageStatus, [POINTER(MirageDiffusionParams), c_size_t]),
    "mirage_generate": (MirageStatus, [_P, POINTER(MirageDiffusionParams), _PP]),
    "mirage_img2img": (MirageStatus, [_P, POINTER(MirageImage), c_size_t, POINTER(MirageDiffusionParams), _PP]),
    "mirage_denoise": (MirageStatus, [_P, POINTER(MirageImage), c_size_t, POINTER(MirageDiffusionParams), _PP]),
    "mirage_inpaint": (
        MirageStatus,
        [_P, POINTER(MirageImage), POINTER(MirageImage), c_size_t, POINTER(MirageDiffusionParams), _PP],
    ),
    "mirage_interpolate": (
        MirageStatus,
        [_P, POINTER(c_char_p), c_size_t, c_uint32, POINTER(MirageDiffusionParams), _PP],
    ),
    "mirage_context_text_shape": (MirageStatus, [_P, _U32P, _U32P]),
    "mirage_text_embed": (MirageStatus, [_P, c_char_p, POINTER(c_float), c_size_t, POINTER(c_float), c_size_t]),
    "mirage_job_params_init": (MirageStatus, [POINTER(MirageJobParams), c_size_t]),
    "mirage_job_generate": (MirageStatus, [_P, POINTER(MirageDiffusionParams), POINTER(MirageJobParams), _PP]),
    "mirage_job_img2img": (
        MirageStatus,
        [_P, POINTER(MirageImage), c_size_t, POINTER(MirageDiffusionParams), POINTER(MirageJobParams), _PP],
    ),
    "mirage_job_denoise": (
        MirageStatus,
        [_P, POINTER(MirageImage), c_size_t, POINTER(MirageDiffusionParams), POINTER(MirageJobParams), _PP],
    ),
    "mirage_job_inpaint": (
        MirageStatus,
        [_P, POINTER(MirageImage), POINTER(MirageImage), c_size_t, POINTER(MirageDiffusionParams),
         POINTER(MirageJobParams), _PP],
    ),
    "mirage_job_interpolate": (
        MirageStatus,
        [_P, POINTER(c_char_p), c_size_t, c_uint32, POINTER(MirageDiffusionParams), POINTER(MirageJobParams), _PP],
    ),
    "mirage_job_encode": (MirageStatus, [_P, POINTER(MirageImage), c_size_t, POINTER(MirageJobParams), _PP]),
    "mirage_job_decode": (MirageStatus, [_P, _P, MiragePixelFormat, POINTER(MirageJobParams), _PP]),
    "mirage_job_poll": (MirageStatus, [_P, POINTER(MirageJobState), _U32P, _U32P]),
    "mirage_job_wait": (MirageStatus, [_P, c_uint32, POINTER(MirageJobState)]),
    "mirage_job_cancel": (MirageStatus, [_P]),
    "mirage_job_advance": (MirageStatus, [_P, c_uint32, c_uint64, _U32P]),
    "mirage_job_preview": (MirageStatus, [_P, MiragePixelFormat, _PP, _U32P]),
    "mirage_job_take_images": (MirageStatus, [_P, _PP]),
    "mirage_job_take_latents": (MirageStatus, [_P, _PP, _PP]),
    "mirage_job_take_into": (MirageStatus, [_P, POINTER(MirageTarget), c_size_t]),
    "mirage_job_free": (None, [_P]),
}


# --- the loaded library ---------------------------------------------------------------------------------------


class Library:
    """A loaded libmirage with every function of the header declared (``lib.mirage_generate(...)``).

    ctypes.CDLL releases the GIL during every call, so other Python threads run while the library works.
    """

    def __init__(self, path: str):
        self.path = path
        self._dll = ctypes.CDLL(path)  # OSError when it cannot be loaded
        missing = []
        for name, (restype, argtypes) in FUNCTIONS.items():
            try:
                fn = getattr(self._dll, name)
            except AttributeError:
                missing.append(name)
                continue
            fn.restype = restype
            fn.argtypes = argtypes
            setattr(self, name, fn)
        if missing:
            raise OSError(f"not a libmirage {HEADER_VERSION}: it lacks {', '.join(missing)}")
        self.version = self.mirage_version().decode("utf-8", "replace")
        major, minor = _major_minor(self.version)
        if (major, minor) != (VERSION_MAJOR, VERSION_MINOR) and (major, minor) != (None, None):
            # The struct_size mechanism keeps params compatible; anything else may have changed.
            warnings.warn(
                f"libmirage {self.version} at {path} is not the {HEADER_VERSION} this binding was written for",
                RuntimeWarning,
                stacklevel=3,
            )

    def __repr__(self) -> str:
        return f"<mirage.Library {self.version} at {self.path!r}>"

    # -- errors --

    def last_error(self) -> str:
        """The calling thread's last error message (read right after the failing call, on the same thread)."""
        n = self.mirage_last_error(None, 0)
        buf = ctypes.create_string_buffer(n + 1)
        self.mirage_last_error(buf, n + 1)
        return buf.value.decode("utf-8", "replace")

    def status_name(self, status: int) -> str:
        return self.mirage_status_str(status).decode("utf-8", "replace")

    def error(self, status: int) -> _errors.Error:
        """The exception for a failed call's status, with the calling thread's detailed message."""
        message = self.last_error()
        return _errors.error_class(status)(message, status=status, status_name=self.status_name(status),
                                           from_library=True)

    def check(self, status: int) -> None:
        if status != _errors.OK:
            raise self.error(status)

    def provider_name(self, provider: int) -> str:
        return self.mirage_provider_name(provider).decode("utf-8", "replace")


def _major_minor(version: str) -> Tuple[Optional[int], Optional[int]]:
    try:
        major, minor = version.split(".")[:2]
        return int(major), int(minor)
    except ValueError:
        return None, None


# --- finding it -----------------------------------------------------------------------------------------------

if sys.platform == "darwin":
    _NAMES = ("libmirage.0.dylib", "libmirage.dylib")
    _BUILD_NAME = "libmirage.dylib"
elif sys.platform == "win32":
    _NAMES = ("mirage.dll",)
    _BUILD_NAME = "mirage.dll"
else:
    _NAMES = ("libmirage.so.0", "libmirage.so")
    _BUILD_NAME = "libmirage.so"

_lock = threading.Lock()
_loaded = {}  # realpath -> Library
_default: Optional[Library] = None


def _open(path: str, tried: List[Tuple[str, str]]) -> Optional[Library]:
    """Loads `path` (cached by real path); on failure appends (path, reason) to `tried` and returns None."""
    if not os.path.exists(path):
        tried.append((path, "no such file"))
        return None
    real = os.path.realpath(path)
    if real in _loaded:
        return _loaded[real]
    try:
        lib = Library(os.path.abspath(path))
    except OSError as e:
        tried.append((path, f"could not be loaded: {e}"))
        return None
    _loaded[real] = lib
    return lib


def _pkg_config_libdir(tried: List[Tuple[str, str]]) -> Optional[str]:
    cmd = os.environ.get("PKG_CONFIG") or "pkg-config"
    try:
        r = subprocess.run(
            [cmd, "--variable=libdir", "mirage"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError) as e:
        tried.append(("pkg-config --variable=libdir mirage", f"could not run {cmd}: {e}"))
        return None
    libdir = r.stdout.strip()
    if r.returncode != 0 or not libdir:
        why = (r.stderr.strip().splitlines() or ["no output"])[0]
        tried.append(("pkg-config --variable=libdir mirage", f"exit status {r.returncode}: {why}"))
        return None
    return libdir


def search_paths(tried: List[Tuple[str, str]], start: Optional[str] = None) -> List[str]:
    """The automatic search after MIRAGE_LIBRARY: the pkg-config prefix, then the repository's builds
    (``target/release``, ``target/debug``) in every folder from this package's up to the root."""
    paths = []
    libdir = _pkg_config_libdir(tried)
    if libdir:
        paths += [os.path.join(libdir, n) for n in _NAMES]
    d = os.path.abspath(start or os.path.dirname(os.path.abspath(__file__)))
    while True:
        for profile in ("release", "debug"):
            paths.append(os.path.join(d, "target", profile, _BUILD_NAME))
        parent = os.path.dirname(d)
        if parent == d:
            break
        d = parent
    return paths


def find_library(path=None, start: Optional[str] = None) -> Library:
    """Loads libmirage: `path` if given; else $MIRAGE_LIBRARY if set; else the search of `search_paths`.

    An explicit path and MIRAGE_LIBRARY are used alone (no silent fallback to another copy). Raises
    :class:`LibraryNotFound` listing every path tried and why it failed.
    """
    tried: List[Tuple[str, str]] = []
    with _lock:
        if path is not None:
            path = os.fsdecode(os.fspath(path))
            lib = _open(path, tried)
            if lib is None:
                raise LibraryNotFound("libmirage could not be loaded from the path given", tried)
            return lib
        env = os.environ.get("MIRAGE_LIBRARY")
        if env:
            lib = _open(env, tried)
            if lib is None:
                raise LibraryNotFound("libmirage could not be loaded from $MIRAGE_LIBRARY", tried)
            return lib
        tried.append(("$MIRAGE_LIBRARY", "not set"))
        for candidate in search_paths(tried, start):
            lib = _open(candidate, tried)
            if lib is not None:
                return lib
        raise LibraryNotFound(
            "libmirage was not found: pass its path (mirage.load_library(path) or Context(..., library=path)), "
            "set MIRAGE_LIBRARY, install it with a pkg-config file, or build it (cargo build); tried",
            tried,
        )


def load_library(path=None) -> Library:
    """Loads libmirage and makes it the library of every later :class:`mirage.Context` (and of
    :func:`mirage.init_runtime`, :func:`mirage.version`) that names none. Without `path`, returns the library
    already loaded, or searches as :func:`find_library` does. Calling it again with another path switches the
    default for later contexts; contexts already open keep theirs."""
    global _default
    if path is None:
        if _default is None:
            lib = find_library()
            with _lock:
                if _default is None:
                    _default = lib
        return _default
    lib = find_library(path)
    with _lock:
        _default = lib
    return lib


def library_for(path=None) -> Library:
    """The library for a Context: `path` (loaded, not made the default) or the default one."""
    return load_library() if path is None else find_library(path)


__all__ = ["Library", "LibraryNotFound", "RuntimeLoadError", "find_library", "load_library"]
