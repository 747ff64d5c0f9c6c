"""Column paths: how a sources file names a value inside a row as the data ships it.

``caption`` is a column; ``description.description_0`` is a field of a struct (or of a JSON
object); ``input_images[0]`` is an item of a list; ``json.caption`` reads the ``caption`` key of a
WebDataset sample's ``.json`` member. A name that exists as it is (a column called ``a.b``)
always wins over its reading as a path.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


@lru_cache(maxsize=256)
def parse_path(expr: str) -> tuple[str | int, ...]:
    """``"a.b[0].c"`` -> ``("a", "b", 0, "c")``; ``ValueError`` for a malformed path."""
    steps: list[str | int] = []
    pos = 0
    while pos < len(expr):
        if expr[pos] == "." and steps and pos + 1 < len(expr):
            pos += 1
        match = _STEP.match(expr, pos)
        if match is None:
            raise ValueError(f"cannot read column path {expr!r} at character {pos + 1}")
        steps.append(match.group(1) if match.group(1) is not None else int(match.group(2)))
        pos = match.end()
    if not steps or not isinstance(steps[0], str):
        raise ValueError(f"column path {expr!r} must start with a column name")
    return tuple(steps)


def top_column(expr: str, available: set[str] | None = None) -> str:
    """The stored column a path starts from (``description`` for ``description.item``)."""
    if available is not None and expr in available:
        return expr
    first = parse_path(expr)[0]
    assert isinstance(first, str)
    return first


def lookup(values: dict[str, Any], expr: str) -> Any:
    """The value at ``expr`` in a row, or ``MISSING`` when any step is absent."""
    if expr in values:
        return values[expr]
    node: Any = values
    for step in parse_path(expr):
        if isinstance(step, int):
            if not isinstance(node, list | tuple) or not -len(node) <= step < len(node):
                return MISSING
            node = node[step]
        elif isinstance(node, dict) and step in node:
            node = node[step]
        else:
            return MISSING
    return node
