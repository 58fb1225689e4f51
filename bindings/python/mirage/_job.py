"""mirage.Job: an operation submitted without blocking (``mirage_job_*``), run by the context's worker threads
or stepped by the caller's own loop; polled, waited for, previewed, cancelled, and its result taken once."""

from __future__ import annotations

import contextlib
import enum
import math
import threading
import time
from ctypes import byref, c_uint32, c_void_p
from typing import Any, NamedTuple, Optional

from . import _context, _errors, _native
from ._errors import ClosedError, InvalidArgument
from ._target import as_targets, c_targets, check_count

__all__ = ["Job", "JobState", "JobStatus", "Preview"]

_NO_LIMIT = 0xFFFFFFFF
_WAIT_SLICE_MS = 100  # mirage_job_wait in slices, so that Ctrl-C (and close() from another thread) get in


class JobState(enum.IntEnum):
    """Where a job is (MIRAGE_JOB_*)."""

    #: submitted; no step has run yet
    QUEUED = _native.JOB_QUEUED
    #: at least one step has run, not all
    RUNNING = _native.JOB_RUNNING
    #: every step has run: the result waits to be taken
    DONE = _native.JOB_DONE
    #: a step failed: ``result()`` raises the error
    FAILED = _native.JOB_FAILED
    #: cancelled before it finished: ``result()`` raises :class:`mirage.Cancelled`
    CANCELLED = _native.JOB_CANCELLED

    @property
    def ended(self) -> bool:
        """DONE, FAILED or CANCELLED: nothing more will run."""
        return self in (JobState.DONE, JobState.FAILED, JobState.CANCELLED)


class JobStatus(NamedTuple):
    """What :meth:`Job.poll` says: the state, and the sampler steps done and in all (a VAE job has one step)."""

    state: JobState
    step: int
    total: int

    @property
    def ended(self) -> bool:
        return self.state.ended


class Preview(list):
    """The latest estimate of a job's images (a list of :class:`mirage.Image`) and the step it is from."""

    def __init__(self, images, step: int):
        super().__init__(images)
        #: the step after which the estimate was made (1 to total)
        self.step = step

    def __repr__(self) -> str:
        return f"<mirage.Preview of {len(self)} image{'s' if len(self) != 1 else ''} after step {self.step}>"


def _seconds(value: Any, name: str) -> float:
    t = _context._real(value, name)
    if not t >= 0:  # also NaN
        raise InvalidArgument(f"{name} is {t}; it must be a number of seconds >= 0")
    return t


class Job:
    """An operation submitted with one of the ``Context.submit_*`` methods (``mirage_job_*``).

    ``mode="workers"`` (the default): the context's worker threads run it, in submission order, while the
    caller goes on; ``mode="manual"``: nothing runs it until the caller calls :meth:`advance` (a game loop
    spends a time budget on it each frame, with no thread of its own).

    Any thread may :meth:`poll`, :meth:`wait`, :meth:`cancel` or :meth:`preview` a job while another runs it.
    The result is taken exactly once, with :meth:`result` (images, or the latents of an encode job) or
    :meth:`result_into` (straight into the caller's arrays). ``close()`` (or leaving a ``with`` block, or
    garbage collection) frees the job, cancelling it if it has not ended. The job keeps its
    :class:`mirage.Context` alive; closing that context cancels its jobs of the workers (not manual ones).
    """

    def __init__(self, context, ptr: int, *, kind: str, manual: bool, previews: bool, count: Optional[int],
                 pixel_format: int):
        self._ptr: Optional[int] = ptr
        self._lib = context.library
        self._closing = False
        self._cond = threading.Condition(threading.Lock())
        self._active = 0  # calls in flight on this job
        self._context = context
        #: "generate", "img2img", "denoise", "inpaint", "interpolate", "encode" or "decode"
        self.kind = kind
        #: "workers" or "manual"
        self.mode = "manual" if manual else "workers"
        #: whether :meth:`preview` works (the job was submitted with ``previews=True``)
        self.previews = previews
        #: how many images the job makes (None for an encode job, which makes latents)
        self.count = count
        self._format = pixel_format

    # --- lifetime ---

    @contextlib.contextmanager
    def _use(self):
        with self._cond:
            if self._ptr is None or self._closing:
                raise ClosedError("the job is closed")
            self._active += 1
            ptr = self._ptr
        try:
            yield ptr
        finally:
            with self._cond:
                self._active -= 1
                self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._ptr is None or self._closing

    @property
    def context(self):
        """The :class:`mirage.Context` the job was submitted to."""
        return self._context

    def close(self) -> None:
        """Frees the job (``mirage_job_free``), cancelling it first if it has not ended; calls on it from other
        threads (a wait, an advance) return first. Idempotent; an untaken result is dropped."""
        with self._cond:
            if self._ptr is None or self._closing:
                return
            self._closing = True
            ptr = self._ptr
            if self._active:
                self._lib.mirage_job_cancel(ptr)  # ends the waits and advances of other threads
                while self._active:
                    self._cond.wait(0.02)
            self._ptr = None
        self._lib.mirage_job_free(ptr)

    def __enter__(self) -> "Job":
        if self.closed:
            raise ClosedError("the job is closed")
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        ptr = getattr(self, "_ptr", None)
        if ptr is not None and not getattr(self, "_closing", True):
            self._ptr = None
            try:
                self._lib.mirage_job_free(ptr)
            except Exception:  # interpreter shutdown
                pass

    def __repr__(self) -> str:
        if self.closed:
            return f"<mirage.Job {self.kind} closed>"
        try:
            s = self.poll()
        except _errors.Error:
            return f"<mirage.Job {self.kind} {self.mode}>"
        return f"<mirage.Job {self.kind} {self.mode} {s.state.name.lower()} {s.step}/{s.total}>"

    # --- where it is ---

    def poll(self) -> JobStatus:
        """``JobStatus(state, step, total)`` now, without waiting (cheap enough for every frame)."""
        lib = self._lib
        state, step, total = c_uint32(), c_uint32(), c_uint32()
        with self._use() as job:
            lib.check(lib.mirage_job_poll(job, byref(state), byref(step), byref(total)))
        return JobStatus(self._state(state.value), step.value, total.value)

    @property
    def state(self) -> JobState:
        return self.poll().state

    @staticmethod
    def _state(value: int) -> JobState:
        try:
            return JobState(value)
        except ValueError:
            raise _errors.InternalError(f"the library reported the unknown job state {value}") from None

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Waits until the job has ended (done, failed or cancelled), at most `timeout` seconds (None: no limit;
        0: just look). Returns whether it has ended. A manual job moves only while some thread advances it."""
        deadline = None if timeout is None else time.monotonic() + _seconds(timeout, "timeout")
        lib = self._lib
        while True:
            if deadline is None:
                ms = _WAIT_SLICE_MS
            else:
                ms = max(0, min(_WAIT_SLICE_MS, math.ceil((deadline - time.monotonic()) * 1000)))
            state = c_uint32()
            with self._use() as job:
                lib.check(lib.mirage_job_wait(job, ms, byref(state)))
            if self._state(state.value).ended:
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False

    def cancel(self) -> None:
        """Cancels the job from any thread, without waiting: a queued job ends at once, a running one within a
        step; its ``result()`` then raises :class:`mirage.Cancelled`. Nothing happens to an ended job."""
        with self._use() as job:
            self._lib.check(self._lib.mirage_job_cancel(job))

    def advance(self, max_steps: Optional[int] = None, budget: Optional[float] = None) -> int:
        """Runs whole steps of a manual job on the calling thread (``mirage_job_advance``): at most `max_steps`
        (None: no limit), and no new step once `budget` seconds (None: no limit) would be exceeded, judged by the
        previous step's duration. At least one step runs when `max_steps` > 0 and the job has not ended.
        Returns the steps run. A failing step or a cancel ends the job (``result()`` raises it), not this call.
        InvalidArgument for a job of the workers, or while another thread advances this job."""
        steps = _NO_LIMIT if max_steps is None else _context._uint(max_steps, "max_steps")
        if budget is None:
            micros = 0
        else:
            seconds = _seconds(budget, "budget")
            if seconds == 0:
                raise InvalidArgument("budget is 0 seconds; pass None for no time limit")
            micros = max(1, round(seconds * 1e6))
            if micros >= 1 << 64:
                micros = 0
        ran = c_uint32()
        with self._use() as job:
            self._lib.check(self._lib.mirage_job_advance(job, steps, micros, byref(ran)))
        return ran.value

    # --- previews ---

    def _preview_batch(self, pixel_format: int):
        """(the preview's batch handle or None, step)."""
        lib = self._lib
        out, step = c_void_p(), c_uint32()
        with self._use() as job:
            lib.check(lib.mirage_job_preview(job, pixel_format, byref(out), byref(step)))
        return out.value, step.value

    def preview(self, format: Optional[str] = None) -> Optional[Preview]:
        """The latest estimate of the job's images (a :class:`Preview`: a list of images with its ``step``), or
        None before the first step. `format` ("gray", "rgb", "rgba") defaults to the job's. The job must have
        been submitted with ``previews=True`` (else InvalidArgument)."""
        fmt = self._format if format is None else _context._format(format, 1)
        batch, step = self._preview_batch(fmt)
        if not batch:
            return None
        return Preview(_context._take_batch(self._lib, batch), step)

    def preview_into(self, targets, format: Optional[str] = None, *, bottom_up: bool = False,
                     premultiplied: bool = False, filter: str = "bilinear") -> Optional[int]:
        """Writes the latest preview into the caller's arrays, as :meth:`result_into` writes the result (one
        target per previewed image); returns its step, or None (nothing written) before the first step."""
        items = as_targets(targets, format, bottom_up, premultiplied, filter)
        arr, keep = c_targets(items)
        batch, step = self._preview_batch(self._format)
        if not batch:
            return None
        lib = self._lib
        try:
            n = lib.mirage_image_batch_count(batch)
            check_count(items, n, "the preview")
            for k in range(n):
                lib.check(lib.mirage_image_batch_write(batch, k, byref(arr[k])))
        finally:
            lib.mirage_image_batch_free(batch)
        del keep
        return step

    # --- the result ---

    def _finish(self, timeout: Optional[float]) -> None:
        """Makes sure the job has ended: waits for a job of the workers, runs the rest of a manual job here."""
        if self.mode == "manual":
            if not self.poll().ended:
                self.advance()
            return
        if not self.wait(timeout):
            raise TimeoutError(f"the {self.kind} job has not ended after {timeout} s; its result stays in the job")

    def result(self, timeout: Optional[float] = None):
        """The job's result, taken exactly once: a list of :class:`mirage.Image` (in the format asked for at
        submission), or ``Distribution(mean, logvar)`` for an encode job. Raises the job's own error instead
        (:class:`mirage.Cancelled` for a cancelled job; that counts as the take), and InvalidArgument when the
        result was already taken.

        A job of the workers is waited for (at most `timeout` seconds: TimeoutError, the result staying in the
        job); the remaining steps of a manual job run here, on the calling thread (so call it once ``poll()``
        says it ended if another thread advances it)."""
        self._finish(timeout)
        lib = self._lib
        if self.kind == "encode":
            mean, logvar = c_void_p(), c_void_p()
            with self._use() as job:
                lib.check(lib.mirage_job_take_latents(job, byref(mean), byref(logvar)))
            try:
                return _context.Distribution(_context._read_latent(lib, mean.value),
                                             _context._read_latent(lib, logvar.value))
            finally:
                lib.mirage_latent_free(mean.value)
                lib.mirage_latent_free(logvar.value)
        out = c_void_p()
        with self._use() as job:
            lib.check(lib.mirage_job_take_images(job, byref(out)))
        return _context._take_batch(lib, out.value)

    def result_into(self, targets, format: Optional[str] = None, *, bottom_up: bool = False,
                    premultiplied: bool = False, filter: str = "bilinear", timeout: Optional[float] = None) -> None:
        """Takes the job's images straight into the caller's numpy arrays (``mirage_job_take_into``), once, as
        :meth:`result` takes them: written from the model's output, resized to each array's size with `filter`,
        converted to its format, in its row order and alpha mode.

        `targets`: one array (a job of one image), a list with one array per image, or a (N, H, W, C) array;
        each may be a :class:`mirage.Target` with options of its own, the keywords apply to the others (see
        :class:`mirage.Target`: uint8 (H, W[, C]) arrays for "gray", "rgb", "rgba", "bgra", float32 (H, W, 4)
        for "rgba32f"). Every array is checked before the library is called: a wrong one raises (TypeError for a
        wrong type or dtype, InvalidArgument otherwise) and the result stays in the job for another take."""
        if self.kind == "encode":
            raise InvalidArgument("an encode job makes latents, not images: take them with result()")
        items = as_targets(targets, format, bottom_up, premultiplied, filter)
        arr, keep = c_targets(items)
        if self.count is not None:
            check_count(items, self.count, f"this {self.kind} job")
        self._finish(timeout)
        with self._use() as job:
            self._lib.check(self._lib.mirage_job_take_into(job, arr, len(items)))
        del keep
