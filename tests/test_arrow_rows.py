from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from synth.arrow_rows import build_array, record_batch
from synth.contract import REJECT_SCHEMA, Reject, arrow_schema
from tests.data_builders import random_samples

ROOT = Path(__file__).resolve().parents[1]


def _parquet(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def test_samples_and_rejects_write_the_same_parquet_bytes_as_from_pylist():
    rows = [s.to_row() for s in random_samples(40, seed=3)]
    schema = arrow_schema()
    ours = pa.Table.from_batches([record_batch(rows, schema)])
    ours.validate(full=True)
    assert ours.equals(pa.Table.from_pylist(rows, schema=schema))
    assert _parquet(ours) == _parquet(pa.Table.from_pylist(rows, schema=schema))

    rejects = [
        Reject(stage="a", reason="parse:wrong-count", detail="5 results, expected 6").model_dump(),
        Reject(stage="b", reason="validate:empty", detail="é 中文", task="t_i_0_0").model_dump(),
    ]
    ours = pa.Table.from_batches([record_batch(rejects, REJECT_SCHEMA)])
    assert _parquet(ours) == _parquet(pa.Table.from_pylist(rejects, schema=REJECT_SCHEMA))


def test_models_as_rows_write_the_same_parquet_bytes_as_their_dicts():
    # The shard writer hands record_batch the samples and rejects themselves, not to_row()'s
    # nested dicts: the Parquet bytes must not depend on which it gets.
    samples = random_samples(40, seed=5)
    schema = arrow_schema()
    from_models = pa.Table.from_batches([record_batch(samples, schema)])
    from_models.validate(full=True)
    assert _parquet(from_models) == _parquet(
        pa.Table.from_batches([record_batch([s.to_row() for s in samples], schema)])
    )
    rejects = [
        Reject(stage="a", reason="llm:error", detail="x"),
        Reject(stage="b", reason="r", detail="中"),
    ]
    assert record_batch(rejects, REJECT_SCHEMA).equals(
        record_batch([r.model_dump() for r in rejects], REJECT_SCHEMA)
    )


def test_objects_with_missing_attributes_and_null_structs_read_as_nulls():
    type_ = pa.struct([("a", pa.int32()), ("b", pa.string())])
    values = [None, SimpleNamespace(a=1, b="x"), SimpleNamespace(a=2), None]
    built = build_array(values, type_)
    built.validate(full=True)
    assert built.to_pylist() == [None, {"a": 1, "b": "x"}, {"a": 2, "b": None}, None]


def test_nulls_at_every_level_and_empty_input():
    type_ = pa.list_(pa.struct([("a", pa.int32()), ("b", pa.list_(pa.string()))]))
    values = [None, [], [None, {"a": None, "b": None}, {"a": 7, "b": ["x", None, ""]}], [{}]]
    built = build_array(values, type_)
    built.validate(full=True)
    assert built.to_pylist() == [
        None,
        [],
        [None, {"a": None, "b": None}, {"a": 7, "b": ["x", None, ""]}],
        [{"a": None, "b": None}],
    ]
    assert len(build_array([], pa.binary())) == 0


def test_wrong_value_types_are_errors():
    with pytest.raises(TypeError, match="expected bytes"):
        build_array(["text"], pa.binary())
    with pytest.raises(TypeError, match="expected str"):
        build_array([b"raw"], pa.string())
    with pytest.raises(TypeError, match="no buffer layout"):
        build_array([1.5], pa.float64())


def test_writing_rows_does_not_import_pandas():
    code = (
        "import sys; from synth.arrow_rows import record_batch; "
        "from synth.contract import arrow_schema; from tests.data_builders import random_samples; "
        "record_batch([s.to_row() for s in random_samples(3)], arrow_schema()); "
        "print('pandas' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_nulls_anywhere_in_arrays_of_any_length_match_pyarrow():
    import random

    rng = random.Random(0)
    struct = pa.struct([("x", pa.int32()), ("y", pa.string())])
    cases = (
        (pa.string(), [None, "a", "猫", ""]),
        (pa.binary(), [None, b"\x00", b""]),
        (pa.int64(), [None, 1, -5]),
        (struct, [None, {"x": 1, "y": "a"}, {"x": None}, {}]),  # a dict may lack keys
        (pa.list_(pa.string()), [None, [], ["a", None], ["b"]]),
    )
    for n in range(0, 35):  # bitmaps of whole and partial bytes
        for type_, choices in cases:
            for _ in range(4):
                values = [rng.choice(choices) for _ in range(n)]
                got = build_array(values, type_)
                got.validate(full=True)
                assert got.equals(pa.array(values, type_)), (type_, values)
