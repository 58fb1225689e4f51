"""mirage.Target: a caller's numpy array that the library writes one image into (``MirageTarget``).

Every array is checked here, before the library is called: its dtype, shape, strides, writability and that no
two targets of one call overlap, so that a wrong array is a Python exception and never a write outside it.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

from . import _native
from ._errors import InvalidArgument
from ._native import MirageTarget

__all__ = ["Target"]

# format name -> (MIRAGE_PIXEL_*, channels, numpy dtype name)
_FORMATS = {
    "gray": (_native.PIXEL_GRAY8, 1, "uint8"),
    "grey": (_native.PIXEL_GRAY8, 1, "uint8"),
    "l": (_native.PIXEL_GRAY8, 1, "uint8"),
    "rgb": (_native.PIXEL_RGB8, 3, "uint8"),
    "rgba": (_native.PIXEL_RGBA8, 4, "uint8"),
    "bgra": (_native.PIXEL_BGRA8, 4, "uint8"),
    "rgba32f": (_native.PIXEL_RGBA32F, 4, "float32"),
}
_FILTERS = {"bilinear": _native.FILTER_BILINEAR, "nearest": _native.FILTER_NEAREST}


def _numpy():
    try:
        import numpy
    except ImportError:
        return None
    return numpy


class Target:
    """Where :meth:`mirage.Job.result_into` or :meth:`mirage.Job.preview_into` writes one image: a writable numpy
    array and how to lay the image out in it.

    `array`: uint8 shaped (H, W) or (H, W, 1) for "gray", (H, W, 3) for "rgb", (H, W, 4) for "rgba" or "bgra";
    float32 shaped (H, W, 4) for "rgba32f" (linear light, alpha as is). Any H and W from 1 to
    ``mirage.MAX_IMAGE_SIDE``: the image is resized with `filter` ("bilinear" or "nearest"). Rows may be apart
    (a view of a bigger array, e.g. a region of a texture atlas: the bytes between rows are left as they are),
    but their stride must be positive and the pixels of a row contiguous.

    `format`: None infers it from the array (uint8 with 4 channels is "rgba"; ask for "bgra" by name).
    `bottom_up`: the array's first row receives the image's last (OpenGL, Unity). `premultiplied`: colour
    multiplied by alpha.
    """

    __slots__ = ("array", "format", "bottom_up", "premultiplied", "filter")

    def __init__(self, array, format: Optional[str] = None, *, bottom_up: bool = False,
                 premultiplied: bool = False, filter: str = "bilinear"):
        self.array = array
        self.format = format
        self.bottom_up = bool(bottom_up)
        self.premultiplied = bool(premultiplied)
        self.filter = filter

    def __repr__(self) -> str:
        shape = getattr(self.array, "shape", "?")
        flags = "".join([", bottom_up" if self.bottom_up else "", ", premultiplied" if self.premultiplied else ""])
        return f"<mirage.Target {shape} {self.format or 'inferred'}{flags}, {self.filter}>"


def _pick(value: Any, table, name: str) -> Any:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    try:
        return table[value.lower()]
    except KeyError:
        choices = ", ".join(repr(k) for k in table if k not in ("grey", "l"))
        raise InvalidArgument(f"{name} is {value!r}; use one of {choices}") from None


def _describe(t: Target, name: str) -> Tuple[MirageTarget, Any]:
    """The MirageTarget of `t`, every field checked (raises before any library call), and the array to keep."""
    np = _numpy()
    if np is None:
        raise TypeError(f"{name}: writing into an array needs numpy")
    a = t.array
    if not isinstance(a, np.ndarray):
        what = "None" if a is None else type(a).__name__
        raise TypeError(f"{name} must be a numpy array (or a mirage.Target of one), not {what}")
    if a.dtype == np.uint8:
        dtype = "uint8"
    elif a.dtype == np.float32:  # native byte order only (a '>f4' array on a little-endian host is not equal)
        dtype = "float32"
    else:
        raise TypeError(f"{name} has dtype {a.dtype}; a target is uint8 (8-bit formats) or native float32 "
                        f"(\"rgba32f\")")
    if a.ndim == 2:
        channels = 1
    elif a.ndim == 3:
        channels = a.shape[2]
    else:
        raise InvalidArgument(f"{name} has shape {tuple(a.shape)}; a target is shaped (H, W) or (H, W, C)")
    if t.format is None:
        if dtype == "float32":
            fmt = "rgba32f"
        else:
            fmt = {1: "gray", 3: "rgb", 4: "rgba"}.get(channels)
            if fmt is None:
                raise InvalidArgument(f"{name} has {channels} channels; a uint8 target has 1, 3 or 4")
    else:
        fmt = t.format
    pixel, want_channels, want_dtype = _pick(fmt, _FORMATS, f"{name}.format")
    if dtype != want_dtype:
        raise TypeError(f"{name} has dtype {a.dtype}, but format {fmt!r} needs {want_dtype}")
    if channels != want_channels:
        raise InvalidArgument(f"{name} has shape {tuple(a.shape)}: {channels} channels, but format {fmt!r} "
                              f"needs {want_channels}")
    height, width = int(a.shape[0]), int(a.shape[1])
    side = _native.MAX_IMAGE_SIDE
    if not (1 <= width <= side and 1 <= height <= side):
        raise InvalidArgument(f"{name} is {width}x{height}; width and height must be 1 to {side}")
    if not a.flags.writeable:
        raise InvalidArgument(f"{name} is read-only")
    if dtype == "float32" and not a.flags.aligned:
        raise InvalidArgument(f"{name} is not aligned to 4 bytes, as float32 pixels need")
    item = a.itemsize
    pixel_bytes = item * channels
    if a.ndim == 3 and channels > 1 and a.strides[2] != item:
        raise InvalidArgument(f"{name}: the channels of a pixel are not contiguous (strides {a.strides})")
    if width > 1 and a.strides[1] != pixel_bytes:
        raise InvalidArgument(f"{name}: the pixels of a row are not contiguous (strides {a.strides}); a row must "
                              f"hold its {width} pixels {pixel_bytes} bytes apart")
    row = width * pixel_bytes
    if height == 1:
        stride = row
    else:
        stride = a.strides[0]
        if stride <= 0:
            raise InvalidArgument(f"{name}: its rows go backwards or repeat (row stride {stride}); pass the "
                                  f"array in memory order and bottom_up=True to flip the image")
        if stride < row:
            raise InvalidArgument(f"{name}: its rows overlap (row stride {stride} < {row} bytes a row)")
    ct = MirageTarget()
    ct.data = a.ctypes.data
    ct.size = (height - 1) * stride + row
    ct.width, ct.height = width, height
    ct.stride = stride
    ct.format = pixel
    ct.flags = (_native.TARGET_BOTTOM_UP if t.bottom_up else 0) | (
        _native.TARGET_PREMULTIPLIED if t.premultiplied else 0)
    ct.filter = _pick(t.filter, _FILTERS, f"{name}.filter")
    return ct, a


def as_targets(targets, format=None, bottom_up=False, premultiplied=False, filter="bilinear") -> List[Target]:
    """The Targets of what a caller passes: one array or Target, a list of them, or a 4-D array (N, H, W, C)
    (one target per image). Options apply to the plain arrays."""
    np = _numpy()

    def one(x):
        return x if isinstance(x, Target) else Target(x, format, bottom_up=bottom_up, premultiplied=premultiplied,
                                                       filter=filter)

    if isinstance(targets, (list, tuple)):
        return [one(x) for x in targets]
    if np is not None and isinstance(targets, np.ndarray) and targets.ndim == 4:
        return [one(targets[i]) for i in range(targets.shape[0])]
    return [one(targets)]


def c_targets(targets: Sequence[Target], name: str = "targets"):
    """(a C array of MirageTarget, the arrays to keep alive while it is used): every target checked, and no two
    overlapping."""
    if not targets:
        raise InvalidArgument(f"{name} is empty: one target per image is needed")
    listed = len(targets) > 1
    described = [_describe(t, f"{name}[{k}]" if listed else name) for k, t in enumerate(targets)]
    spans = sorted((ct.data, ct.data + ct.size, k) for k, (ct, _) in enumerate(described))
    for (_, end, i), (start, _, j) in zip(spans, spans[1:]):
        if start < end:
            raise InvalidArgument(f"{name}[{min(i, j)}] and {name}[{max(i, j)}] overlap in memory")
    arr = (MirageTarget * len(described))(*(ct for ct, _ in described))
    return arr, [a for _, a in described]


def check_count(targets: Sequence[Target], count: int, what: str) -> None:
    if len(targets) != count:
        raise InvalidArgument(f"{len(targets)} target{'s' if len(targets) != 1 else ''} for the {count} "
                              f"image{'s' if count != 1 else ''} of {what}: one target per image")

