"""Python rows to an Arrow record batch, built from buffers.

Contract: ``record_batch(rows, schema)`` holds the same values as
``pa.RecordBatch.from_pylist(rows, schema=schema)`` (so the Parquet bytes are the same) for the
types the shard schemas use: strings, binaries, 32/64-bit integers, lists and structs; any other
type is a ``TypeError`` naming it. A row or struct value is a mapping, or an object whose
attributes bear the field names (a ``DialogueSample`` and its nested models), so the shard
writer passes samples as they are.

Why not ``pa.RecordBatch.from_pylist``: every ``pa.array`` call on Python objects asks pyarrow's
pandas shim whether the input is a pandas object, which imports pandas, and a synthesis run then
misses its peak-memory target (bench/results/bench_ops.md). This module lays out the validity
bitmaps, int32 offsets and little-endian values itself and hands them to
``pa.Array.from_buffers``.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Iterable, Sequence
from itertools import accumulate, chain, repeat
from operator import attrgetter, is_, is_not, itemgetter
from types import SimpleNamespace
from typing import Any

import pyarrow as pa

_INT_CODES = {pa.int32(): "i", pa.int64(): "q"}
_DIGITS = bytes.maketrans(b"\x00\x01", b"01")
_INT32_MAX = 2**31 - 1
_NO_FIELDS = SimpleNamespace()  # a null struct among objects: every attribute is missing


def _validity(values: Sequence[Any], nulls: int) -> pa.Buffer | None:
    """The LSB-first validity bitmap of ``values`` (None where nothing is null)."""
    if not nulls:
        return None
    size = (len(values) + 7) // 8
    if nulls == len(values):
        return pa.py_buffer(bytes(size))
    # In C: one byte 0/1 per value, as the digits "0"/"1", read as a base-2 number whose bit i
    # is value i (hence the reversal); little-endian bytes of it are Arrow's LSB-first bitmap.
    present = bytes(map(is_not, values, repeat(None)))
    return pa.py_buffer(int(present.translate(_DIGITS)[::-1], 2).to_bytes(size, "little"))


def _le(arr: array[Any]) -> pa.Buffer:
    if sys.byteorder != "little":
        arr.byteswap()
    return pa.py_buffer(arr.tobytes())


def _offsets(lengths: Iterable[int], total: int) -> pa.Buffer:
    if total > _INT32_MAX:
        raise OverflowError(f"{total} bytes or items exceed one Arrow array's int32 offsets")
    return _le(array("i", accumulate(lengths, initial=0)))


def _joined(items: list[Any], type_: pa.DataType) -> tuple[bytes, Iterable[int]]:
    """The values' bytes end to end and each value's length in bytes.

    Joining checks the value types: ``"".join`` takes only str and ``b"".join`` only bytes-like
    values. ASCII text is one byte a character, so an ASCII column is encoded in one call; other
    text is encoded value by value, once."""
    try:
        if pa.types.is_binary(type_):
            return b"".join(items), map(len, items)
        text = "".join(items)
    except TypeError:
        want = (bytes, bytearray, memoryview) if pa.types.is_binary(type_) else (str,)
        got = next(type(v).__name__ for v in items if not isinstance(v, want))
        raise TypeError(f"expected {want[0].__name__} for a {type_} column, got {got}") from None
    if text.isascii():
        return text.encode(), map(len, items)
    encoded = list(map(str.encode, items))
    return b"".join(encoded), map(len, encoded)


def _fields(values: list[Any], names: list[str]) -> Iterable[Sequence[Any]]:
    """For each of ``names``, its value in each of ``values``, all mappings (an item) or all
    objects (an attribute); None where a value lacks it."""
    if not values:
        return [[] for _ in names]
    get = itemgetter if isinstance(values[0], dict) else attrgetter
    try:  # every value has every field (to_row's dicts, the models): transpose them in C
        if len(names) == 1:
            return [list(map(get(names[0]), values))]
        return zip(*map(get(*names), values), strict=True)
    except (KeyError, AttributeError, TypeError):  # a missing field, or mappings and objects
        return [[_field(v, name) for v in values] for name in names]


def _field(value: Any, name: str) -> Any:
    return value.get(name) if isinstance(value, dict) else getattr(value, name, None)


def build_array(values: Sequence[Any], type_: pa.DataType) -> pa.Array:
    """An Arrow array of ``type_`` holding ``values`` (None is null)."""
    if not isinstance(values, list):
        values = list(values)
    n = len(values)
    # By identity, in C: list.count(None) would call a model's __eq__ on every value.
    nulls = sum(map(is_, values, repeat(None)))
    validity = _validity(values, nulls)
    if type_ in _INT_CODES:
        ints = values if not nulls else [0 if v is None else v for v in values]
        numbers = array(_INT_CODES[type_], ints)
        return pa.Array.from_buffers(type_, n, [validity, _le(numbers)], null_count=nulls)
    if pa.types.is_string(type_) or pa.types.is_binary(type_):
        empty = b"" if pa.types.is_binary(type_) else ""
        texts = values if not nulls else [empty if v is None else v for v in values]
        data, lengths = _joined(texts, type_)
        buffers = [validity, _offsets(lengths, len(data)), pa.py_buffer(data)]
        return pa.Array.from_buffers(type_, n, buffers, null_count=nulls)
    if pa.types.is_list(type_):
        lists = values if not nulls else [() if v is None else v for v in values]
        flat = list(chain.from_iterable(lists))
        child = build_array(flat, type_.value_type)
        offsets = _offsets(map(len, lists), len(flat))
        return pa.Array.from_buffers(
            type_, n, [validity, offsets], null_count=nulls, children=[child]
        )
    if pa.types.is_struct(type_):
        if nulls:  # a null struct is a value without fields, of the kind its column holds
            kind = next(v for v in values if v is not None) if nulls < n else {}
            blank: object = {} if isinstance(kind, dict) else _NO_FIELDS
            values = [blank if v is None else v for v in values]
        children = [
            build_array(column, f.type)
            for f, column in zip(type_.fields, _fields(values, type_.names), strict=True)
        ]
        return pa.Array.from_buffers(type_, n, [validity], null_count=nulls, children=children)
    raise TypeError(f"no buffer layout for Arrow type {type_}; add one to synth/arrow_rows.py")


def record_batch(rows: Sequence[Any], schema: pa.Schema) -> pa.RecordBatch:
    """``pa.RecordBatch.from_pylist(rows, schema=schema)`` without importing pandas; ``rows``
    are mappings or objects with the schema's field names as attributes."""
    fields = _fields(list(rows), schema.names)
    columns = [build_array(column, f.type) for f, column in zip(schema, fields, strict=True)]
    return pa.RecordBatch.from_arrays(columns, schema=schema)
