"""Arrow <-> numpy without pandas.

pyarrow imports pandas (0.35 s here) the first time an array is built from Python or numpy objects, a Python scalar
meets a compute function, or `to_numpy()` runs. The read cache's refresh runs in processes that never need pandas
(`kdgat runs`, the TUI's refresh worker), so it moves data through buffers instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from kdgat_core.query.connection import LazyModule, pa

if TYPE_CHECKING:
    import numpy as np
else:
    np = LazyModule("numpy")  # the leaderboard path imports this module but never numpy (test_import_hygiene)
_NUMPY = {"int64": "int64", "uint64": "uint64", "int32": "int32", "double": "float64"}


def values(col: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The values of a fixed-width column as numpy (a copy where chunks are joined; nulls hold arbitrary values)."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if arr.type == pa.bool_():
        bits = np.frombuffer(arr.buffers()[1], dtype=np.uint8) if len(arr) else np.zeros(0, np.uint8)
        return np.unpackbits(bits, bitorder="little")[arr.offset : arr.offset + len(arr)].astype(bool)
    dtype = np.dtype(_NUMPY[str(arr.type)])
    if len(arr) == 0:
        return np.zeros(0, dtype=dtype)
    return np.frombuffer(arr.buffers()[1], dtype=dtype, count=len(arr), offset=arr.offset * dtype.itemsize)


def valid(col: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """True where the column is not null."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if arr.null_count == 0 or arr.buffers()[0] is None:
        return np.ones(len(arr), dtype=bool)
    bits = np.frombuffer(arr.buffers()[0], dtype=np.uint8)
    return np.unpackbits(bits, bitorder="little")[arr.offset : arr.offset + len(arr)].astype(bool)


def array(data: np.ndarray, mask_valid: np.ndarray | None = None) -> pa.Array:
    """numpy (int64, uint64, int32, float64 or bool) -> Arrow; `mask_valid` False makes a null."""
    data = np.ascontiguousarray(data)
    bitmap = None if mask_valid is None else pa.py_buffer(np.packbits(mask_valid.astype(bool), bitorder="little"))
    if data.dtype == bool:
        return pa.Array.from_buffers(
            pa.bool_(), len(data), [bitmap, pa.py_buffer(np.packbits(data, bitorder="little"))]
        )
    typ = {
        np.dtype(np.int64): pa.int64(),
        np.dtype(np.uint64): pa.uint64(),
        np.dtype(np.int32): pa.int32(),
        np.dtype(np.float64): pa.float64(),
    }[data.dtype]
    return pa.Array.from_buffers(typ, len(data), [bitmap, pa.py_buffer(data)])


def strings(items: Iterable[str]) -> pa.Array:
    """Python strings -> an Arrow string array."""
    encoded = [s.encode() for s in items]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int32)
    if encoded:
        np.cumsum([len(b) for b in encoded], out=offsets[1:])
    return pa.Array.from_buffers(
        pa.string(), len(encoded), [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))]
    )
