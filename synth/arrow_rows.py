"""Python rows to an Arrow record batch, built from buffers.

Every ``pa.array`` call on Python objects asks pyarrow's pandas shim whether the input is a
pandas object, which imports pandas on first use: ~0.4 s and ~50 MB on a synthesis run that
never touches a DataFrame. The shard writer's schema uses only strings, binaries, 32/64-bit
integers, lists and structs, so this module lays those out directly (validity bitmaps, int32
offsets, little-endian values) and hands the buffers to ``pa.Array.from_buffers``. The arrays
hold the same values as ``pa.Table.from_pylist`` builds, so the Parquet bytes are the same.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

_INT_CODES = {pa.int32(): "i", pa.int64(): "q"}


def _validity(values: Sequence[Any]) -> tuple[pa.Buffer | None, int]:
    """The LSB-first validity bitmap of ``values`` (None where nothing is null) and its nulls."""
    nulls = sum(v is None for v in values)
    if not nulls:
        return None, 0
    bits = bytearray((len(values) + 7) // 8)
    for i, v in enumerate(values):
        if v is not None:
            bits[i >> 3] |= 1 << (i & 7)
    return pa.py_buffer(bytes(bits)), nulls


def _le(arr: array[Any]) -> pa.Buffer:
    if sys.byteorder != "little":
        arr.byteswap()
    return pa.py_buffer(arr.tobytes())


def _offsets(lengths: Sequence[int]) -> pa.Buffer:
    out = array("i", [0]) * (len(lengths) + 1)
    total = 0
    for i, n in enumerate(lengths, 1):
        total += n
        out[i] = total
    if total > 2**31 - 1:
        raise OverflowError(f"{total} bytes or items exceed one Arrow array's int32 offsets")
    return _le(out)


def build_array(values: Sequence[Any], type_: pa.DataType) -> pa.Array:
    """An Arrow array of ``type_`` holding ``values`` (None is null)."""
    validity, nulls = _validity(values)
    n = len(values)
    if type_ in _INT_CODES:
        data = array(_INT_CODES[type_], (0 if v is None else v for v in values))
        return pa.Array.from_buffers(type_, n, [validity, _le(data)], null_count=nulls)
    if pa.types.is_string(type_) or pa.types.is_binary(type_):
        encoded = [b"" if v is None else v if isinstance(v, bytes) else v.encode() for v in values]
        if pa.types.is_binary(type_) and any(isinstance(v, str) for v in values):
            raise TypeError(f"expected bytes for a {type_} column, got str")
        if pa.types.is_string(type_) and any(isinstance(v, bytes) for v in values):
            raise TypeError(f"expected str for a {type_} column, got bytes")
        offsets = _offsets([len(b) for b in encoded])
        buffers = [validity, offsets, pa.py_buffer(b"".join(encoded))]
        return pa.Array.from_buffers(type_, n, buffers, null_count=nulls)
    if pa.types.is_list(type_):
        items = [() if v is None else v for v in values]
        child = build_array([x for v in items for x in v], type_.value_type)
        offsets = _offsets([len(v) for v in items])
        return pa.Array.from_buffers(
            type_, n, [validity, offsets], null_count=nulls, children=[child]
        )
    if pa.types.is_struct(type_):
        children = [
            build_array([None if v is None else v.get(f.name) for v in values], f.type)
            for f in type_.fields
        ]
        return pa.Array.from_buffers(type_, n, [validity], null_count=nulls, children=children)
    raise TypeError(f"no buffer layout for Arrow type {type_}; add one to synth/arrow_rows.py")


def record_batch(rows: Sequence[dict[str, Any]], schema: pa.Schema) -> pa.RecordBatch:
    """``pa.RecordBatch.from_pylist(rows, schema=schema)`` without importing pandas."""
    columns = [build_array([row.get(f.name) for row in rows], f.type) for f in schema]
    return pa.RecordBatch.from_arrays(columns, schema=schema)
