"""mirage.Image: 8-bit pixels in memory, and turning what callers pass (Pillow images, numpy arrays, PNG
paths) into one."""

from __future__ import annotations

import io
import os
from typing import Any, List, Optional, Tuple

from . import _png
from ._errors import ImageError

__all__ = ["Image"]

_MODES = {1: "L", 3: "RGB", 4: "RGBA"}
_NAMES = {"l": 1, "gray": 1, "grey": 1, "rgb": 3, "rgba": 4}


def channels_of(mode: Any, name: str = "mode") -> int:
    """1, 3 or 4 for a mode name: "gray" (or "grey", "L"), "rgb", "rgba" (case-insensitive)."""
    if not isinstance(mode, str):
        raise TypeError(f"{name} must be a str (\"gray\", \"rgb\" or \"rgba\"), not {type(mode).__name__}")
    try:
        return _NAMES[mode.lower()]
    except KeyError:
        from ._errors import InvalidArgument

        raise InvalidArgument(f"{name} is {mode!r}; use \"gray\", \"rgb\" or \"rgba\"") from None


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not hasattr(type(value), "__index__"):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    return value.__index__()


class Image:
    """An image of 8-bit pixels: `height` packed rows of `width` pixels with `channels` channels interleaved
    (1 grey, 3 RGB, 4 RGBA; straight alpha), rows top to bottom. Immutable: the pixels are a ``bytes``.

    ``numpy.asarray(image)`` is a read-only view of the pixels (no copy), shaped (height, width) for grey and
    (height, width, channels) otherwise; ``numpy.array(image)`` copies.
    """

    __slots__ = ("_data", "_width", "_height", "_channels", "__weakref__")

    def __init__(self, data, width: int, height: int, channels: Optional[int] = None):
        if isinstance(data, str) or data is None:
            raise TypeError(f"data must be bytes-like, not {type(data).__name__}")
        if not isinstance(data, bytes):
            try:
                data = memoryview(data).tobytes()
            except TypeError:
                raise TypeError(f"data must be bytes-like, not {type(data).__name__}") from None
        width, height = _int(width, "width"), _int(height, "height")
        if width <= 0 or height <= 0:
            raise ValueError(f"the image is {width}x{height}: width and height must be > 0")
        if channels is None:
            channels, rest = divmod(len(data), width * height)
            if rest:
                channels = 0
        channels = _int(channels, "channels")
        if channels not in _MODES:
            raise ValueError(f"channels is {channels}; mirage images have 1 (grey), 3 (RGB) or 4 (RGBA)")
        if len(data) != width * height * channels:
            raise ValueError(
                f"{len(data)} bytes for a {width}x{height} image with {channels} channels "
                f"({width * height * channels} expected)"
            )
        self._data = data
        self._width = width
        self._height = height
        self._channels = channels

    # --- what it is ---

    @property
    def width(self) -> int:
        return self._width

    @property
    def height(self) -> int:
        return self._height

    @property
    def channels(self) -> int:
        return self._channels

    @property
    def size(self) -> Tuple[int, int]:
        """(width, height), as Pillow's ``Image.size``."""
        return self._width, self._height

    @property
    def mode(self) -> str:
        """The Pillow mode of the pixels: "L", "RGB" or "RGBA"."""
        return _MODES[self._channels]

    @property
    def data(self) -> memoryview:
        """The pixels, read-only, without a copy."""
        return memoryview(self._data)

    def tobytes(self) -> bytes:
        """The packed pixels (the image's own bytes; immutable, so not copied)."""
        return self._data

    def getpixel(self, x: int, y: int):
        """The pixel at column `x`, row `y`: an int for grey, a tuple otherwise."""
        if not (0 <= x < self._width and 0 <= y < self._height):
            raise IndexError(f"({x}, {y}) is outside the {self._width}x{self._height} image")
        i = (y * self._width + x) * self._channels
        return self._data[i] if self._channels == 1 else tuple(self._data[i : i + self._channels])

    @property
    def __array_interface__(self):
        shape = (self._height, self._width) if self._channels == 1 else (self._height, self._width, self._channels)
        return {"version": 3, "shape": shape, "typestr": "|u1", "data": self._data, "strides": None}

    def __eq__(self, other):
        if not isinstance(other, Image):
            return NotImplemented
        return self.size == other.size and self._channels == other._channels and self._data == other._data

    def __hash__(self):
        return hash((self._width, self._height, self._channels, self._data))

    def __repr__(self) -> str:
        return f"<mirage.Image {self._width}x{self._height} {self.mode}>"

    # --- conversions ---

    def convert(self, mode: str) -> "Image":
        """This image in another channel layout ("gray", "rgb", "rgba"): grey is replicated into RGB, alpha
        added is 255 and dropped alpha is discarded, RGB to grey is Pillow's luma (ITU-R 601-2)."""
        return self._with_channels(channels_of(mode))

    def _with_channels(self, channels: int) -> "Image":
        if channels == self._channels:
            return self
        return Image(_convert(self._data, self._width * self._height, self._channels, channels), self._width,
                     self._height, channels)

    def resize(self, size, height: Optional[int] = None) -> "Image":
        """This image resampled to `size` = (width, height) (or ``resize(width, height)``) with a bilinear
        filter that averages when it shrinks (as Pillow's BILINEAR), in pure Python."""
        if height is None:
            try:
                width, height = size
            except (TypeError, ValueError):
                raise TypeError("size must be a (width, height) pair") from None
        else:
            width = size
        width, height = _int(width, "width"), _int(height, "height")
        if width <= 0 or height <= 0:
            raise ValueError(f"cannot resize to {width}x{height}")
        if (width, height) == self.size:
            return self
        c = self._channels
        planes = [
            _resample(self._data[k::c], self._width, self._height, width, height) for k in range(c)
        ]
        out = bytearray(width * height * c)
        for k, plane in enumerate(planes):
            out[k::c] = plane
        return Image(bytes(out), width, height, c)

    # --- files ---

    def to_png(self) -> bytes:
        """The image as PNG bytes (8-bit, non-interlaced)."""
        return _png.encode(self._data, self._width, self._height, self._channels)

    def save(self, path) -> None:
        """Writes the image to `path`: PNG (the binding's own encoder, no Pillow needed) when the name ends in
        .png or has no extension; other formats through Pillow (``to_pil().save(path)``)."""
        path = os.fspath(path)
        ext = os.path.splitext(path)[1].lower()
        if ext in (".png", "", b".png", b""):
            with open(path, "wb") as f:
                f.write(self.to_png())
            return
        self.to_pil().save(path)

    @classmethod
    def open(cls, path) -> "Image":
        """Reads an image file. PNG (any kind: every bit depth, palette, alpha, interlacing) is read by the
        binding itself; other formats need Pillow. Grey + alpha and palettes with transparency come back as
        RGBA, other palettes as RGB, 16-bit samples as their high byte."""
        path = os.fspath(path)
        with open(path, "rb") as f:
            blob = f.read()
        if blob.startswith(_png.SIGNATURE):
            return cls.from_png(blob, name=os.fsdecode(path))
        try:
            from PIL import Image as PILImage
        except ImportError:
            raise ImageError(f"{os.fsdecode(path)} is not a PNG file; other formats need Pillow") from None
        try:
            with PILImage.open(io.BytesIO(blob)) as im:
                im.load()
                return cls.from_pil(im)
        except (OSError, ValueError) as e:
            raise ImageError(f"{os.fsdecode(path)}: {e}") from None

    @classmethod
    def from_png(cls, blob: bytes, name: str = "PNG data") -> "Image":
        """Decodes PNG bytes (see :meth:`open`)."""
        try:
            w, h, c, data = _png.decode(blob)
        except _png.PNGError as e:
            raise ImageError(f"{name}: {e}") from None
        return cls(data, w, h, c)

    # --- other libraries ---

    def to_pil(self):
        """A Pillow image (mode "L", "RGB" or "RGBA") with a copy of the pixels. Needs Pillow."""
        try:
            from PIL import Image as PILImage
        except ImportError:
            raise ImportError("Image.to_pil() needs Pillow (pip install Pillow)") from None
        return PILImage.frombytes(self.mode, self.size, self._data)

    @classmethod
    def from_pil(cls, im) -> "Image":
        """A copy of a Pillow image's pixels. Modes other than L, RGB and RGBA are converted first: "1", "I",
        "I;16" and "F" to L, modes with alpha (LA, PA, RGBa, P with transparency) to RGBA, the rest to RGB."""
        mode = im.mode
        if mode not in ("L", "RGB", "RGBA"):
            if mode in ("1", "I", "F") or mode.startswith("I;"):
                target = "L"
            elif "A" in im.getbands() or "a" in im.getbands() or (mode == "P" and "transparency" in im.info):
                target = "RGBA"
            else:
                target = "RGB"
            im = im.convert(target)
        return cls(im.tobytes(), im.width, im.height, {"L": 1, "RGB": 3, "RGBA": 4}[im.mode])

    @classmethod
    def from_array(cls, array) -> "Image":
        """A copy of a numpy uint8 array shaped (H, W) (grey) or (H, W, C) with C 1, 3 or 4 (any strides)."""
        import numpy as np

        a = np.asarray(array)
        if a.dtype != np.uint8:
            raise TypeError(f"an image array must have dtype uint8, not {a.dtype} (convert it: a.astype(np.uint8))")
        if a.ndim == 2:
            channels = 1
        elif a.ndim == 3 and a.shape[2] in (1, 3, 4):
            channels = a.shape[2]
        else:
            raise ValueError(
                f"an image array must be shaped (H, W) or (H, W, C) with C 1, 3 or 4, not {tuple(a.shape)}"
            )
        if a.shape[0] == 0 or a.shape[1] == 0:
            raise ValueError(f"the image array is {a.shape[1]}x{a.shape[0]}: width and height must be > 0")
        return cls(np.ascontiguousarray(a).tobytes(), a.shape[1], a.shape[0], channels)


# --- pixel work in pure Python --------------------------------------------------------------------------------


def _convert(data: bytes, n: int, cin: int, cout: int) -> bytes:
    if cout == 1:
        # Pillow's L = R * 299/1000 + G * 587/1000 + B * 114/1000, in its fixed-point form.
        return bytes(
            (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16
            for r, g, b in zip(data[0::cin], data[1::cin], data[2::cin])
        )
    out = bytearray(n * cout)
    if cin == 1:
        for k in range(3):
            out[k::cout] = data
    else:
        for k in range(3):
            out[k::cout] = data[k::cin]
    if cout == 4:
        out[3::4] = data[3::4] if cin == 4 else b"\xff" * n
    return bytes(out)


def _weights(insize: int, outsize: int) -> List[Tuple[int, List[float]]]:
    """Per output coordinate: the first input index and the normalised weights of a triangle filter whose
    support widens with the reduction (Pillow's BILINEAR)."""
    scale = insize / outsize
    filterscale = max(scale, 1.0)
    support = filterscale
    table = []
    for i in range(outsize):
        center = (i + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), insize)
        ws = [max(0.0, 1.0 - abs((x - center + 0.5) / filterscale)) for x in range(lo, hi)]
        total = sum(ws)
        if total <= 0:
            lo, ws = min(max(int(center), 0), insize - 1), [1.0]
        else:
            ws = [w / total for w in ws]
        table.append((lo, ws))
    return table


def _resample(plane: bytes, w: int, h: int, nw: int, nh: int) -> bytes:
    rows: List[List[float]] = [list(plane[y * w : (y + 1) * w]) for y in range(h)]
    if nw != w:
        table = _weights(w, nw)
        rows = [[sum(row[lo + k] * wt for k, wt in enumerate(ws)) for lo, ws in table] for row in rows]
    if nh != h:
        table = _weights(h, nh)
        out_rows = []
        for lo, ws in table:
            acc = [0.0] * nw
            for k, wt in enumerate(ws):
                src = rows[lo + k]
                acc = [a + v * wt for a, v in zip(acc, src)]
            out_rows.append(acc)
        rows = out_rows
    return bytes(min(255, max(0, int(v + 0.5))) for row in rows for v in row)


# --- what callers pass ----------------------------------------------------------------------------------------


def _is_pil(obj) -> bool:
    return type(obj).__module__.startswith("PIL.") and hasattr(obj, "mode") and hasattr(obj, "tobytes")


def to_image(obj, name: str = "image", mask: bool = False) -> Image:
    """A mirage.Image of `obj`: a mirage.Image (itself), a Pillow image, a numpy uint8 array (H, W[, C]) (bool
    too for a mask: True = 255), or the path (str or os.PathLike) of an image file (see Image.open)."""
    if isinstance(obj, Image):
        return obj
    if isinstance(obj, (str, os.PathLike)):
        return Image.open(obj)
    if _is_pil(obj):
        return Image.from_pil(obj)
    if hasattr(obj, "__array_interface__") or hasattr(obj, "__array__"):
        try:
            import numpy as np
        except ImportError:
            raise TypeError(f"{name}: an array needs numpy") from None
        a = np.asarray(obj)
        if mask and a.dtype == np.bool_:
            a = a.astype(np.uint8) * 255
        try:
            return Image.from_array(a)
        except (TypeError, ValueError) as e:
            raise type(e)(f"{name}: {e}") from None
    what = "None" if obj is None else type(obj).__name__
    raise TypeError(
        f"{name} must be a mirage.Image, a Pillow image, a numpy uint8 array (H, W[, C]) or an image file path, "
        f"not {what}"
    )
