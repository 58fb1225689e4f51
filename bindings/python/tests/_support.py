"""Shared by the tests: import mirage (installed, or from the source tree next to this folder), find the
repository (header, models), open the model sets once, capture the library's log."""

from __future__ import annotations

import atexit
import os
import sys
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.dirname(HERE)  # bindings/python

try:
    import mirage  # an installed package (pip install bindings/python)
except ImportError:
    sys.path.insert(0, SOURCE)
    import mirage  # noqa: E402  the source tree

# MIRAGE_REQUIRE_OPTIONAL=1 (`make test` sets it): numpy and Pillow must be there; nothing is skipped.
_REQUIRE = os.environ.get("MIRAGE_REQUIRE_OPTIONAL") == "1"
try:
    import numpy
except ImportError:
    if _REQUIRE:
        raise
    numpy = None
    print("numpy is not installed: its tests are skipped", file=sys.stderr)
try:
    import PIL.Image as PILImage
except ImportError:
    if _REQUIRE:
        raise
    PILImage = None
    print("Pillow is not installed: its tests are skipped", file=sys.stderr)


def _repo_root():
    env = os.environ.get("MIRAGE_REPO")
    if env:
        return os.path.abspath(env)
    d = SOURCE
    while True:
        if os.path.isfile(os.path.join(d, "include", "mirage.h")):
            return d
        parent = os.path.dirname(d)
        if parent == d:
            return None
        d = parent


REPO = _repo_root()
HEADER = os.environ.get("MIRAGE_HEADER") or (os.path.join(REPO, "include", "mirage.h") if REPO else None)
MODELS = os.environ.get("MIRAGE_MODELS") or (os.path.join(REPO, "models") if REPO else None)


def model_dir(name):
    return os.path.join(MODELS, name)


# Every log line of the library (and ONNX Runtime) at WARN and above; installed before any context exists.
LOG = []
_log_lock = threading.Lock()


def _capture(level, message):
    with _log_lock:
        LOG.append((level, message))
    if level == "error":
        print(f"[mirage {level}] {message}", file=sys.stderr)


mirage.init_runtime(provider="auto", log_level="warn", log_callback=_capture)

_contexts = {}
_ctx_lock = threading.Lock()


def context(name):
    """The shared Context of models/<name> (opened once per test run)."""
    with _ctx_lock:
        ctx = _contexts.get(name)
        if ctx is None or ctx.closed:
            ctx = _contexts[name] = mirage.Context(model_dir(name))
        return ctx


@atexit.register
def _close_all():
    for ctx in _contexts.values():
        ctx.close()


def grey(width, height, value=0):
    return mirage.Image(bytes([value]) * (width * height), width, height, 1)


def pattern(width, height, channels=1, seed=1):
    """A deterministic test pattern."""
    data = bytes(((x * 7 + y * 13 + c * 50 + seed * 31) * 5) % 256 for y in range(height) for x in range(width)
                 for c in range(channels))
    return mirage.Image(data, width, height, channels)


def flat(values):
    """A flat list of the floats of a numpy array or a mirage.Tensor."""
    if isinstance(values, mirage.Tensor):
        return list(values.data)
    if hasattr(values, "reshape"):  # numpy
        return [float(v) for v in values.reshape(-1)]
    return [float(v) for v in values]  # array('f')
