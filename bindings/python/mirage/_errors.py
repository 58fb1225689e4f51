"""The exceptions of the binding: one class per MirageStatus of include/mirage.h."""

from __future__ import annotations

from typing import Dict, Optional, Type

__all__ = [
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

# The MIRAGE_ERR_* values of include/mirage.h (tests/test_layout.py compares them with the header).
OK = 0
ERR_INVALID_ARGUMENT = 1
ERR_RUNTIME_LOAD = 2
ERR_RUNTIME_ALREADY_INITIALISED = 3
ERR_MODEL_NOT_FOUND = 4
ERR_INVALID_MODEL = 5
ERR_UNSUPPORTED = 6
ERR_INFERENCE = 7
ERR_IO = 8
ERR_IMAGE = 9
ERR_CANCELLED = 10
ERR_PANIC = 11
ERR_BUSY = 12


class Error(Exception):
    """A failed mirage call.

    ``status`` is the MirageStatus (an int; None for errors of the binding itself that have no status, such
    as :class:`LibraryNotFound`), ``status_name`` the library's short description of it
    (``mirage_status_str``) and ``message`` the detailed message: the library's own (``mirage_last_error``,
    e.g. "params->steps is 0, out of range 1..=1000") when ``from_library`` is True, else the binding's.
    ``str(error)`` is ``"<status_name>: <message>"`` (a library message that already starts with its kind is
    not prefixed twice).
    """

    #: The MirageStatus this class stands for (None: no status).
    STATUS: Optional[int] = None

    def __init__(self, message: str, status: Optional[int] = None, status_name: Optional[str] = None,
                 *, from_library: bool = False):
        if status is None:
            status = self.STATUS
        self.status = status
        self.status_name = status_name if status_name is not None else _DEFAULT_NAMES.get(status, "error")
        self.message = message
        #: True when `message` is the library's own (mirage_last_error), False when the binding raised it.
        self.from_library = from_library
        # The kind once: libraries that put it in front of the message ("invalid argument: ...") are not
        # prefixed again.
        kind = self.status_name.split(":")[0]
        if from_library and message.lower().startswith(kind.lower()):
            super().__init__(message)
        else:
            super().__init__(f"{self.status_name}: {message}")


class InvalidArgument(Error, ValueError):
    """MIRAGE_ERR_INVALID_ARGUMENT: a bad value (out of range, wrong size or format, not UTF-8, ...).

    Also a :class:`ValueError`, so that ``except ValueError`` catches bad values whichever side found them.
    """

    STATUS = ERR_INVALID_ARGUMENT


class ClosedError(InvalidArgument):
    """A :class:`mirage.Context` or :class:`mirage.Job` was used after ``close()`` (the library is not called)."""


class RuntimeLoadError(Error):
    """MIRAGE_ERR_RUNTIME_LOAD: the ONNX Runtime shared library could not be found or loaded."""

    STATUS = ERR_RUNTIME_LOAD


class RuntimeAlreadyInitialised(Error):
    """MIRAGE_ERR_RUNTIME_ALREADY_INITIALISED: ``init_runtime`` after the runtime was set up otherwise."""

    STATUS = ERR_RUNTIME_ALREADY_INITIALISED


class ModelError(Error):
    """A model set could not be used: :class:`ModelNotFound` or :class:`InvalidModel`."""


class ModelNotFound(ModelError):
    """MIRAGE_ERR_MODEL_NOT_FOUND: the directory, its manifest.json or a file it lists does not exist."""

    STATUS = ERR_MODEL_NOT_FOUND


class InvalidModel(ModelError):
    """MIRAGE_ERR_INVALID_MODEL: a bad manifest, a sha256 mismatch, a file ONNX Runtime rejects."""

    STATUS = ERR_INVALID_MODEL


class Unsupported(Error):
    """MIRAGE_ERR_UNSUPPORTED: the model set lacks what the call needs, or a strict provider is missing."""

    STATUS = ERR_UNSUPPORTED


class InferenceError(Error):
    """MIRAGE_ERR_INFERENCE: ONNX Runtime failed while running a model."""

    STATUS = ERR_INFERENCE


class IoError(Error):
    """MIRAGE_ERR_IO: reading or writing a file failed inside the library."""

    STATUS = ERR_IO


class ImageError(Error):
    """MIRAGE_ERR_IMAGE: an image could not be decoded or encoded (also the binding's PNG reader)."""

    STATUS = ERR_IMAGE


class Cancelled(Error):
    """MIRAGE_ERR_CANCELLED: a callback returned False, or ``Context.cancel()`` / ``close()`` or
    ``Job.cancel()`` was called (a cancelled job's ``result()`` raises it)."""

    STATUS = ERR_CANCELLED


class InternalError(Error):
    """MIRAGE_ERR_PANIC: a bug in mirage (a panic caught at the API boundary); please report it."""

    STATUS = ERR_PANIC


class Busy(Error):
    """MIRAGE_ERR_BUSY: the context already holds ``max_queued_jobs`` jobs that have not started; nothing was
    submitted. Try again once some of them have started or ended."""

    STATUS = ERR_BUSY


class LibraryNotFound(Error):
    """libmirage could not be loaded. ``tried`` lists ``(path, reason)`` for every place looked at."""

    def __init__(self, message: str, tried=()):
        self.tried = list(tried)
        lines = [message] + [f"  {path}: {reason}" for path, reason in self.tried]
        super().__init__("\n".join(lines), status=None, status_name="libmirage not found")


_DEFAULT_NAMES = {
    ERR_INVALID_ARGUMENT: "invalid argument",
    ERR_RUNTIME_LOAD: "ONNX Runtime could not be loaded",
    ERR_RUNTIME_ALREADY_INITIALISED: "runtime already initialised with other options",
    ERR_MODEL_NOT_FOUND: "model not found",
    ERR_INVALID_MODEL: "invalid model",
    ERR_UNSUPPORTED: "unsupported",
    ERR_INFERENCE: "inference failed",
    ERR_IO: "i/o error",
    ERR_IMAGE: "image error",
    ERR_CANCELLED: "cancelled",
    ERR_PANIC: "internal error (panic)",
    ERR_BUSY: "busy: the job queue is full",
}

_BY_STATUS: Dict[int, Type[Error]] = {
    ERR_INVALID_ARGUMENT: InvalidArgument,
    ERR_RUNTIME_LOAD: RuntimeLoadError,
    ERR_RUNTIME_ALREADY_INITIALISED: RuntimeAlreadyInitialised,
    ERR_MODEL_NOT_FOUND: ModelNotFound,
    ERR_INVALID_MODEL: InvalidModel,
    ERR_UNSUPPORTED: Unsupported,
    ERR_INFERENCE: InferenceError,
    ERR_IO: IoError,
    ERR_IMAGE: ImageError,
    ERR_CANCELLED: Cancelled,
    ERR_PANIC: InternalError,
    ERR_BUSY: Busy,
}


def error_class(status: int) -> Type[Error]:
    """The exception class of a MirageStatus; :class:`Error` itself for a status this binding does not know."""
    return _BY_STATUS.get(status, Error)
