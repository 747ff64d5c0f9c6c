"""The storage schema of a dialogue sample, written once as ``datasets`` feature data.

``FEATURES`` is the ``datasets.Features.to_dict()`` form of a row (see ``synth.contract``):
``dataset_features()`` turns it into ``datasets.Features`` (images are ``Image()``, so viewers
display them), and ``arrow_schema()`` into the Parquet schema with that feature metadata
embedded, so ``datasets.load_dataset("parquet", ...)`` restores the image columns. The Arrow
side is converted here without importing ``datasets``, whose import would take most of a run's
start-up and memory budget (bench/results/bench_ops.md); a test checks it equals ``datasets``' own
conversion.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import pyarrow as pa


def _value(dtype: str) -> dict[str, Any]:
    return {"dtype": dtype, "_type": "Value"}


def _list(feature: Any) -> dict[str, Any]:
    return {"feature": feature, "_type": "List"}


_STRING, _INT32, _INT64 = _value("string"), _value("int32"), _value("int64")

_PART = {"type": _STRING, "text": _STRING, "image": _INT32, "origin": _STRING, "call": _INT32}
_LLM_CALL = {
    "operation": _STRING,
    "template_version": _STRING,
    "backend": _STRING,
    "model": _STRING,
    "language": _STRING,
    "prompt": _STRING,
    "response": _STRING,
    "results": _list(_STRING),
    "chosen": _INT32,
    "refused": _list(_STRING),
    "prompt_tokens": _INT64,
    "completion_tokens": _INT64,
}
FEATURES: dict[str, Any] = {
    "sample_id": _STRING,
    "task": _STRING,
    "stage": _STRING,
    "turns": _list({"role": _STRING, "parts": _list(_PART)}),
    "images": _list(
        {"source": _STRING, "source_row": _STRING, "caption": _STRING, "image": {"_type": "Image"}}
    ),
    "provenance": {
        "seed": _INT64,
        "depends_on": _list(_INT32),
        "distractor_turns": _list(_INT32),
        "llm_calls": _list(_LLM_CALL),
        "parent_id": _STRING,
    },
}

_IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def _arrow_type(feature: Any) -> pa.DataType:
    if "_type" not in feature:  # a struct: a mapping of field name -> feature
        return pa.struct([(name, _arrow_type(f)) for name, f in feature.items()])
    kind = feature["_type"]
    if kind == "Value":
        return pa.type_for_alias(feature["dtype"])
    if kind == "List":
        return pa.list_(_arrow_type(feature["feature"]))
    if kind == "Image":
        return _IMAGE_STRUCT
    raise AssertionError(f"no Arrow conversion for feature type {kind}")


def dataset_features() -> Any:
    """``datasets.Features`` of a sample row."""
    from datasets import Features

    return Features.from_dict(FEATURES)


@functools.cache
def arrow_schema() -> pa.Schema:
    """The Parquet schema of a sample row, with the ``datasets`` feature metadata embedded."""
    schema = pa.schema([(name, _arrow_type(f)) for name, f in FEATURES.items()])
    return schema.with_metadata({"huggingface": json.dumps({"info": {"features": FEATURES}})})
