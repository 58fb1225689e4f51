"""Float arrays (latents, embeddings) without numpy: a shape and an array('f')."""

from __future__ import annotations

from array import array
from typing import Any, Sequence, Tuple

__all__ = ["Tensor", "Latent"]


class Tensor:
    """A row-major float32 array: `shape` (a tuple) and `data` (an ``array.array('f')`` of the values).

    What the binding returns for latents and embeddings when numpy is not installed (numpy arrays otherwise).
    ``numpy.asarray(tensor)`` is a view of `data` (no copy), ``tolist()`` nests lists by the shape.
    """

    __slots__ = ("shape", "data")

    def __init__(self, data: Any, shape: Sequence[int]):
        shape = tuple(int(d) for d in shape)
        if any(d < 0 for d in shape):
            raise ValueError(f"shape {shape} has a negative dimension")
        if not (isinstance(data, array) and data.typecode == "f"):
            data = array("f", data)
        n = 1
        for d in shape:
            n *= d
        if len(data) != n:
            raise ValueError(f"{len(data)} values for shape {shape} ({n} expected)")
        self.shape: Tuple[int, ...] = shape
        self.data = data

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return len(self.data)

    def __len__(self) -> int:
        return self.shape[0] if self.shape else 1

    @property
    def __array_interface__(self):
        return {"version": 3, "shape": self.shape, "typestr": "<f4" if _little() else ">f4", "data": self.data}

    def tolist(self):
        """The values as nested lists, one level per dimension."""
        values = self.data.tolist()

        def nest(flat, dims):
            if len(dims) <= 1:
                return flat
            step = len(flat) // dims[0] if dims[0] else 0
            return [nest(flat[i * step : (i + 1) * step], dims[1:]) for i in range(dims[0])]

        return nest(values, self.shape)

    def __eq__(self, other):
        if not isinstance(other, Tensor):
            return NotImplemented
        return self.shape == other.shape and self.data == other.data

    __hash__ = None  # mutable (data is an array)

    def __repr__(self) -> str:
        return f"<mirage.Tensor shape={self.shape}>"


#: Latents are Tensors shaped (n, channels, height, width).
Latent = Tensor


def _little() -> bool:
    import sys

    return sys.byteorder == "little"
