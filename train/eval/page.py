"""The generation report's HTML page: a pure function of its JSONL rows and the run's facts.

Rendered by jinja2 with autoescape on and undefined variables refused, so every string from the
data (dialogue text, ids, captions) is shown as text and can never become markup. The page loads
nothing but the images beside it (relative paths): no script, no stylesheet, no font from a
network.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2

TEMPLATE = "generation.html.j2"

_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
)


def render_page(rows: Sequence[Mapping[str, Any]], meta: Mapping[str, Any]) -> str:
    """``rows``: ``generation.jsonl``'s rows in order; ``meta``: checkpoint, step, seed,
    options, counts, seconds."""
    numbered = [{**row, "index": i} for i, row in enumerate(rows, start=1)]
    return _ENV.get_template(TEMPLATE).render(rows=numbered, meta=meta)


def write_page(rows: Sequence[Mapping[str, Any]], meta: Mapping[str, Any], path: Path) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(render_page(rows, meta), encoding="utf-8")
    os.replace(tmp, path)
    return path
