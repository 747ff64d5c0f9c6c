"""The three synthesis stages and their runner (paper sections 3.3-3.5, Figure 3).

    source rows --stage a--> basic dialogues --stage b--> + distractors --stage c--> + Q&A text

Each stage is a plan (deterministic work items) and a build function per item; ``run`` runs one
shard of one stage into an output directory, resumably. ``synth run stage-a|b|c`` calls it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

from synth.errors import UserError, require_dir, require_file
from synth.stages.config import RunConfig, load_run_config

if TYPE_CHECKING:
    from synth.shards import Manifest

__all__ = ["RunConfig", "load_run_config", "run"]


def run(cfg: RunConfig) -> Manifest:
    """Run shard ``cfg.shard_index`` of stage ``cfg.stage`` into ``cfg.out``; resumes what a
    killed run with the same settings committed there."""
    from synth.sources import load_sources_file
    from synth.stages.runner import input_total, run_shard

    if cfg.out is None:
        raise UserError("--out is required: the directory the shards are written to")
    config: dict[str, Any] = {"run": cfg.public(), "identity": cfg.identity()}
    if cfg.stage == "a":
        if cfg.sources is None:
            raise UserError("stage a reads --sources FILE (a sources YAML; see examples/)")
        if cfg.input:
            raise UserError("stage a reads --sources, not --in (stages b and c read --in)")
        require_file(cfg.sources, "--sources", "give a sources YAML, e.g. examples/sources.yaml")
        from synth.stages.stage_a import StageA

        sources = load_sources_file(cfg.sources)
        config["sources_file"] = str(Path(cfg.sources).resolve())
        config["sources"] = [s.model_dump(mode="json") for s in sources.sources]
        return asyncio.run(run_shard(StageA(cfg, sources), cfg, config))

    if not cfg.input:
        raise UserError(f"stage {cfg.stage} reads --in DIR, the output of an earlier stage")
    in_dirs = [
        require_dir(d, "--in", "give the --out directory of an earlier stage's run")
        for d in cfg.input
    ]
    upstreams = [_complete_manifest(d) for d in in_dirs]
    config["input"] = [str(d.resolve()) for d in in_dirs]
    recorded = [m.config["sources_file"] for m in upstreams if m.config.get("sources_file")]
    sources_file = cfg.sources or (recorded[0] if recorded else None)
    if sources_file:
        config["sources_file"] = str(Path(sources_file).resolve())
    total = input_total(in_dirs, cfg)
    if cfg.stage == "b":
        from synth.stages.stage_b import DistractorPool, StageB

        if not sources_file or not Path(sources_file).exists():
            raise UserError(
                f"stage b draws distractors from the sources stage a read ({sources_file or 'none recorded'}), "
                "which is not there; pass --sources FILE"
            )
        pool = DistractorPool(load_sources_file(sources_file), cfg.distractor_pool)
        return asyncio.run(run_shard(StageB(cfg, in_dirs, pool), cfg, config, total))
    from synth.stages.stage_c import StageC

    return asyncio.run(run_shard(StageC(cfg, in_dirs), cfg, config, total))


def _complete_manifest(in_dir: Path) -> Manifest:
    from synth.shards import read_manifest

    upstream = read_manifest(in_dir)
    parts = len(list(in_dir.glob("manifest-*.json")))
    if not upstream.complete or parts != upstream.num_parts:
        raise UserError(
            f"{in_dir} is not complete ({parts} of {upstream.num_parts} shard(s) there; a run "
            "stopped, or some shards are missing or unfinished); "
            "finish it first: rerun the same command, every shard"
        )
    return upstream
