"""``synth run stage-a|stage-b|stage-c``: thin commands over ``synth.stages.run``.

The three commands share one option set (one function, registered three times), so a YAML
``--config`` file that drives one stage drives the others; the command line overrides it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

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


def _command(stage: str) -> Any:
    def command(
        out: Annotated[
            Path | None, typer.Option(help="output directory (shards, manifest)")
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
        llm: Annotated[str | None, typer.Option(help="template | local | openai | gemini")] = None,
        model: Annotated[str | None, typer.Option(help="model name")] = None,
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
        concurrency: Annotated[int | None, typer.Option(help="LLM requests in flight")] = None,
        rpm: Annotated[float | None, typer.Option(help="requests per minute limit")] = None,
        tpm: Annotated[float | None, typer.Option(help="tokens per minute limit")] = None,
        seed: Annotated[int | None, typer.Option(help="seed of every random choice")] = None,
        limit: Annotated[int | None, typer.Option(help="work items of the whole run")] = None,
        num_shards: Annotated[int | None, typer.Option(help="shards the run is split in")] = None,
        shard_index: Annotated[int | None, typer.Option(help="this shard, 0-based")] = None,
        progress: Annotated[
            bool | None, typer.Option("--progress/--no-progress", help="live progress bar")
        ] = None,
    ) -> None:
        options = dict(locals())  # first: only the parameters
        from synth.stages import load_run_config, run

        config_file = options.pop("config")
        options["in"] = options.pop("in_")
        try:
            cfg = load_run_config(stage, config_file, options)  # type: ignore[arg-type]
            manifest = run(cfg)
        except ValueError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2) from None
        typer.echo(
            f"stage {stage}: {manifest.samples} samples, {sum(manifest.reject_counts.values())} "
            f"rejects in {cfg.out} (part {cfg.shard_index} of {cfg.num_shards})"
        )

    command.__doc__ = _HELP[stage]
    return command


for _stage in ("a", "b", "c"):
    run_app.command(f"stage-{_stage}", help=_HELP[_stage])(_command(_stage))
