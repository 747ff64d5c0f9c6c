"""Imports run one way: taxonomy < ops < synth < train, and inside ops the engine sits on the
protocol alone. Read from the source (every import statement, in functions and TYPE_CHECKING
blocks too), so a lazy import that runs upward is caught as well as a top-level one."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LEVEL = {"taxonomy": 0, "ops": 1, "synth": 2, "train": 3}
# Modules of ops that the engine (and the records it is given) may build on.
OPS_GROUND = ("ops.protocol", "ops.records")


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            assert node.module is not None
            found.add(node.module)
    return {name for name in found if name.split(".")[0] in LEVEL}


def _sources() -> list[Path]:
    return sorted(p for package in LEVEL for p in (ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_package_imports_one_above_it(path: Path) -> None:
    me = _module(path)
    for name in _imports(path):
        assert LEVEL[name.split(".")[0]] <= LEVEL[me.split(".")[0]], f"{me} imports {name}"


def test_the_engine_and_the_protocol_sit_at_the_bottom_of_ops() -> None:
    for path in sorted((ROOT / "ops").rglob("*.py")):
        me = _module(path)
        ops_imports = {n for n in _imports(path) if n.split(".")[0] == "ops"}
        if me in OPS_GROUND:
            assert not ops_imports, f"{me} imports {ops_imports}"
        elif me.startswith("ops.engine"):
            above = {n for n in ops_imports if not n.startswith(("ops.engine", *OPS_GROUND))}
            assert not above, f"{me} imports {above}"
