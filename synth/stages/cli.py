"""``synth run stage-a|stage-b|stage-c``: thin commands over ``synth.stages.run``.

The three commands share one option set (one function, registered three times), so a YAML
``--config`` file that drives one stage drives the others; the command line overrides it. Every
option defaults to None here, so that only what was typed overrides the file; ``--help`` shows
the defaults ``RunConfig`` fills in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ops.engine.config import DEFAULT_BATCH_CONCURRENCY
from synth.errors import reported
from synth.stages.config import RunConfig

run_app = typer.Typer(
    help="Run a synthesis stage: a (basic dialogues), b (distractors), c (interleaved answers).",
    no_args_is_help=True,
)

_HELP = {
    "a": "Stage a: build the basic multi-turn tasks from the rows of --sources FILE.",
    "b": "Stage b: insert distractor turns into stage-a dialogues (--in DIR) and rewrite the "
    "final query to point back across them.",
    "c": "Stage c: append a question to the final query and its answer after the image "
    "(--in DIR: stage-a or stage-b output).",
}


def _default(name: str) -> str | bool:
    """What ``--help`` shows as the option's default: RunConfig's, or False for none."""
    field = RunConfig.model_fields[name]
    value = field.get_default(call_default_factory=True)
    if value is None or value == ():
        return False
    if isinstance(value, bool):
        return f"--{name.replace('_', '-')}" if value else f"--no-{name.replace('_', '-')}"
    return str(value)


def _command(stage: str) -> Any:
    def command(
        out: Annotated[
            Path | None,
            typer.Option(help="output directory (shards, manifest, rejects, the response cache)"),
        ] = None,
        sources: Annotated[
            Path | None, typer.Option(help="sources YAML (stage a; stage b: distractors)")
        ] = None,
        in_: Annotated[
            list[Path] | None,
            typer.Option(
                "--in", help="input: output dir of an earlier stage (repeat to read several)"
            ),
        ] = None,
        config: Annotated[
            Path | None, typer.Option(help="YAML file with any of these options")
        ] = None,
        llm: Annotated[
            str | None,
            typer.Option(help="template | local | openai | gemini", show_default=_default("llm")),
        ] = None,
        model: Annotated[
            str | None,
            typer.Option(
                help="model name; empty: the backend's default (template-v1, smollm2-135m, gpt-4o-mini, gemini-2.0-flash)"
            ),
        ] = None,
        base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible server URL")] = None,
        thinking_budget: Annotated[
            int | None,
            typer.Option(help="gemini 2.5: thinking tokens per answer (-1 dynamic, 0 off)"),
        ] = None,
        vertex: Annotated[
            bool | None,
            typer.Option("--vertex/--no-vertex", help="gemini through Vertex AI (ADC)"),
        ] = None,
        project: Annotated[str | None, typer.Option(help="Vertex AI project id")] = None,
        location: Annotated[str | None, typer.Option(help="Vertex AI region")] = None,
        concurrency: Annotated[
            int | None,
            typer.Option(
                help="LLM requests in flight (with --batch: requests waiting in batches, "
                f"default {DEFAULT_BATCH_CONCURRENCY})",
                show_default=_default("concurrency"),
            ),
        ] = None,
        batch: Annotated[
            bool | None,
            typer.Option(
                "--batch/--no-batch",
                help="openai, gemini: the provider's batch API, half the price, answers within "
                "24 h (README: Bring your data and a model)",
                show_default=_default("batch"),
            ),
        ] = None,
        batch_window_s: Annotated[
            float | None,
            typer.Option(
                help="--batch: a batch goes out this many seconds after its first request",
                show_default=_default("batch_window_s"),
            ),
        ] = None,
        batch_poll_s: Annotated[
            float | None,
            typer.Option(
                help="--batch: first wait before asking after a batch (then 1.5x per ask, up to "
                "batch_poll_max_s)",
                show_default=_default("batch_poll_s"),
            ),
        ] = None,
        rpm: Annotated[
            float | None, typer.Option(help="requests per minute limit; none: no limit")
        ] = None,
        tpm: Annotated[
            float | None, typer.Option(help="tokens per minute limit; none: no limit")
        ] = None,
        seed: Annotated[
            int | None,
            typer.Option(help="seed of every random choice", show_default=_default("seed")),
        ] = None,
        limit: Annotated[
            int | None, typer.Option(help="work items of the whole run; none: all")
        ] = None,
        num_shards: Annotated[
            int | None,
            typer.Option(help="shards the run is split in", show_default=_default("num_shards")),
        ] = None,
        shard_index: Annotated[
            int | None,
            typer.Option(help="this shard, 0-based", show_default=_default("shard_index")),
        ] = None,
        row_group_rows: Annotated[
            int | None,
            typer.Option(
                help="samples per Parquet row group (README: Shards)",
                show_default=_default("row_group_rows"),
            ),
        ] = None,
        progress: Annotated[
            bool | None,
            typer.Option(
                "--progress/--no-progress",
                help="live progress bar",
                show_default=_default("progress"),
            ),
        ] = None,
    ) -> None:
        options = dict(locals())  # first: only the parameters
        from synth.stages import load_run_config, run

        config_file = options.pop("config")
        options["in"] = options.pop("in_")
        cfg = load_run_config(stage, config_file, options)  # type: ignore[arg-type]
        manifest = run(cfg)
        typer.echo(
            f"stage {stage}: {manifest.samples} samples, {sum(manifest.reject_counts.values())} "
            f"rejects in {cfg.out} (part {cfg.shard_index} of {cfg.num_shards})"
        )

    command.__doc__ = _HELP[stage]
    return reported(command)


for _stage in ("a", "b", "c"):
    run_app.command(f"stage-{_stage}", help=_HELP[_stage])(_command(_stage))
