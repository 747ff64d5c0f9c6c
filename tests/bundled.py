"""The bundled dataset taken through stages a -> b -> c with the offline template backend.

Shared by the tests that need real synthesized shards (the notebook, training)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tests.stages_support import EXAMPLES, run_stage


@dataclass(frozen=True)
class BundledRun:
    stage_a: Path
    stage_b: Path
    stage_c: Path  # interleaved forms of the stage-a and stage-b output: all ten stage-c tasks


def synthesize_bundled(root: Path) -> BundledRun:
    run = BundledRun(root / "stage-a", root / "stage-b", root / "stage-c")
    run_stage("a", sources=EXAMPLES, out=run.stage_a)
    run_stage("b", **{"in": run.stage_a}, out=run.stage_b)
    run_stage("c", **{"in": [run.stage_a, run.stage_b]}, out=run.stage_c)
    return run
