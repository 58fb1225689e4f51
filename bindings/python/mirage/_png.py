"""A small PNG encoder and decoder on the standard library (zlib, struct): no Pillow needed.

The encoder writes 8-bit grey, RGB or RGBA, non-interlaced. The decoder reads every PNG of the
specification: colour types 0, 2, 3, 4 and 6, bit depths 1 to 16, Adam7 interlacing and tRNS
transparency. It returns 8-bit grey, RGB or RGBA: grey + alpha becomes RGBA, a palette RGB (RGBA with
tRNS), a tRNS colour key adds an alpha channel, 16-bit samples keep their high byte. It is pure Python:
fine for the small images mirage works on, slow (seconds) for megapixel photos.
"""

from __future__ import annotations

import struct
import zlib
from typing import List, Tuple

SIGNATURE = b"\x89PNG\r\n\x1a\n"

_COLOR_TYPES = {1: 0, 3: 2, 4: 6}  # channels -> PNG colour type


class PNGError(ValueError):
    """The data is not a PNG this decoder can read."""


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode(data: bytes, width: int, height: int, channels: int, level: int = 6) -> bytes:
    """PNG bytes of `height` packed rows of `width` 8-bit pixels with `channels` (1, 3 or 4) channels."""
    if channels not in _COLOR_TYPES:
        raise ValueError(f"channels is {channels}; PNG is written for 1, 3 or 4")
    row = width * channels
    if len(data) != row * height:
        raise ValueError(f"{len(data)} bytes for {width}x{height}x{channels} pixels ({row * height} expected)")
    raw = bytearray()
    view = memoryview(data)
    for y in range(height):
        raw.append(0)  # filter type None
        raw += view[y * row : (y + 1) * row]
    ihdr = struct.pack(">IIBBBBB", width, height, 8, _COLOR_TYPES[channels], 0, 0, 0)
    return SIGNATURE + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(bytes(raw), level)) + _chunk(b"IEND", b"")


# --- decoding -------------------------------------------------------------------------------------------------

_SAMPLES = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel
_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
_MAX_PIXELS = 1 << 28


def _unfilter(data: bytes, pos: int, width: int, height: int, bits_per_pixel: int) -> Tuple[List[bytes], int]:
    """Undoes the row filters of one (sub-)image starting at `pos`: its rows and the position after it."""
    stride = (width * bits_per_pixel + 7) // 8
    bpp = max(1, bits_per_pixel // 8)
    rows = []
    prev = bytearray(stride)
    for _ in range(height):
        if pos + 1 + stride > len(data):
            raise PNGError("image data is truncated")
        ftype = data[pos]
        cur = bytearray(data[pos + 1 : pos + 1 + stride])
        pos += 1 + stride
        if ftype == 0:
            pass
        elif ftype == 1:  # Sub
            for i in range(bpp, stride):
                cur[i] = (cur[i] + cur[i - bpp]) & 0xFF
        elif ftype == 2:  # Up
            for i in range(stride):
                cur[i] = (cur[i] + prev[i]) & 0xFF
        elif ftype == 3:  # Average
            for i in range(stride):
                left = cur[i - bpp] if i >= bpp else 0
                cur[i] = (cur[i] + ((left + prev[i]) >> 1)) & 0xFF
        elif ftype == 4:  # Paeth
            for i in range(stride):
                a = cur[i - bpp] if i >= bpp else 0
                b = prev[i]
                c = prev[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if (pa <= pb and pa <= pc) else (b if pb <= pc else c)
                cur[i] = (cur[i] + pred) & 0xFF
        else:
            raise PNGError(f"unknown filter type {ftype}")
        rows.append(bytes(cur))
        prev = cur
    return rows, pos


def _samples(row: bytes, count: int, depth: int) -> List[int]:
    """`count` samples of `depth` bits from a packed row, at full precision."""
    if depth == 8:
        return list(row[:count])
    if depth == 16:
        return [row[2 * i] << 8 | row[2 * i + 1] for i in range(count)]
    per_byte = 8 // depth
    mask = (1 << depth) - 1
    out = []
    for i in range(count):
        byte = row[i // per_byte]
        shift = 8 - depth * (i % per_byte + 1)
        out.append((byte >> shift) & mask)
    return out


def decode(blob: bytes) -> Tuple[int, int, int, bytes]:
    """Decodes PNG bytes to (width, height, channels, packed 8-bit pixels); channels is 1, 3 or 4."""
    blob = bytes(blob)
    if not blob.startswith(SIGNATURE):
        raise PNGError("not a PNG file (bad signature)")
    pos = len(SIGNATURE)
    ihdr = None
    palette = None
    trns = None
    idat = []
    while True:
        if pos + 8 > len(blob):
            raise PNGError("truncated: no IEND chunk")
        length, kind = struct.unpack(">I4s", blob[pos : pos + 8])
        data = blob[pos + 8 : pos + 8 + length]
        crc = blob[pos + 8 + length : pos + 12 + length]
        if len(data) != length or len(crc) != 4:
            raise PNGError(f"truncated {kind!r} chunk")
        if struct.unpack(">I", crc)[0] != zlib.crc32(kind + data) & 0xFFFFFFFF:
            raise PNGError(f"CRC mismatch in the {kind.decode('latin-1')} chunk")
        pos += 12 + length
        if kind == b"IHDR":
            if length != 13:
                raise PNGError("bad IHDR chunk")
            ihdr = struct.unpack(">IIBBBBB", data)
        elif ihdr is None:
            raise PNGError("the first chunk is not IHDR")
        elif kind == b"PLTE":
            if length % 3 or not length:
                raise PNGError("bad PLTE chunk")
            palette = [tuple(data[i : i + 3]) for i in range(0, length, 3)]
        elif kind == b"tRNS":
            trns = data
        elif kind == b"IDAT":
            idat.append(data)
        elif kind == b"IEND":
            break
        elif not (kind[0] & 0x20):  # an unknown critical chunk
            raise PNGError(f"unsupported critical chunk {kind.decode('latin-1')}")
    width, height, depth, ctype, comp, filt, interlace = ihdr
    if ctype not in _SAMPLES or depth not in _DEPTHS[ctype]:
        raise PNGError(f"invalid colour type {ctype} with bit depth {depth}")
    if comp != 0 or filt != 0 or interlace not in (0, 1):
        raise PNGError("unknown compression, filter or interlace method")
    if width == 0 or height == 0 or width * height > _MAX_PIXELS:
        raise PNGError(f"unsupported size {width}x{height}")
    if ctype == 3 and palette is None:
        raise PNGError("palette image without PLTE chunk")
    try:
        raw = zlib.decompress(b"".join(idat))
    except zlib.error as e:
        raise PNGError(f"corrupt image data: {e}") from None

    spp = _SAMPLES[ctype]
    bits = depth * spp
    if not interlace and depth == 8 and ctype in (0, 2, 4, 6) and (trns is None or ctype in (4, 6)):
        # The common case: the unfiltered rows are the pixels.
        rows, _ = _unfilter(raw, 0, width, height, bits)
        data = b"".join(rows)
        if ctype != 4:
            return width, height, spp, data
        out = bytearray(width * height * 4)
        grey = data[0::2]
        out[0::4], out[1::4], out[2::4], out[3::4] = grey, grey, grey, data[1::2]
        return width, height, 4, bytes(out)
    # Every pixel as a tuple of full-precision samples, row-major.
    pixels: List = [None] * (width * height)
    passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
    pos = 0
    for x0, y0, dx, dy in passes:
        pw = (width - x0 + dx - 1) // dx
        ph = (height - y0 + dy - 1) // dy
        if pw <= 0 or ph <= 0:
            continue
        rows, pos = _unfilter(raw, pos, pw, ph, bits)
        for j, row in enumerate(rows):
            s = _samples(row, pw * spp, depth)
            base = (y0 + j * dy) * width + x0
            for i in range(pw):
                pixels[base + i * dx] = tuple(s[i * spp : (i + 1) * spp])

    # To 8 bits per sample.
    if ctype == 3:
        alphas = list(trns or b"")
        if alphas:
            out = bytearray()
            for (k,) in pixels:
                if k >= len(palette):
                    raise PNGError(f"palette index {k} out of range")
                out += bytes(palette[k]) + bytes((alphas[k] if k < len(alphas) else 255,))
            return width, height, 4, bytes(out)
        out = bytearray()
        for (k,) in pixels:
            if k >= len(palette):
                raise PNGError(f"palette index {k} out of range")
            out += bytes(palette[k])
        return width, height, 3, bytes(out)

    if depth == 16:
        to8 = lambda v: v >> 8  # noqa: E731
    elif depth == 8:
        to8 = lambda v: v  # noqa: E731
    else:
        top = (1 << depth) - 1
        to8 = lambda v: v * 255 // top  # noqa: E731

    key = None
    if trns is not None and ctype in (0, 2):
        n = 1 if ctype == 0 else 3
        if len(trns) >= 2 * n:
            key = struct.unpack(f">{n}H", trns[: 2 * n])
    if ctype == 0:
        if key is None:
            return width, height, 1, bytes(to8(p[0]) for p in pixels)
        out = bytearray()
        for (g,) in pixels:
            v = to8(g)
            out += bytes((v, v, v, 0 if (g,) == key else 255))
        return width, height, 4, bytes(out)
    if ctype == 2:
        if key is None:
            if depth == 8:
                return width, height, 3, bytes(v for p in pixels for v in p)
            return width, height, 3, bytes(to8(v) for p in pixels for v in p)
        out = bytearray()
        for p in pixels:
            out += bytes((to8(p[0]), to8(p[1]), to8(p[2]), 0 if p == key else 255))
        return width, height, 4, bytes(out)
    if ctype == 4:  # grey + alpha -> RGBA
        out = bytearray()
        for g, a in pixels:
            v = to8(g)
            out += bytes((v, v, v, to8(a)))
        return width, height, 4, bytes(out)
    # ctype 6
    return width, height, 4, bytes(to8(v) for p in pixels for v in p)
