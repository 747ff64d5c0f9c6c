"""The ``synth`` command line."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(
    name="synth",
    help="Turn single-turn image data into multi-turn dialogues (ChatUMM stages a, b, c).",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """Turn single-turn image data into multi-turn dialogues (ChatUMM stages a, b, c)."""


@app.command()
def validate(
    directory: Path = typer.Argument(..., help="a shard directory written by synth"),
) -> None:
    """Check every invariant of the data contract; exit non-zero naming each broken sample."""
    from synth.contract import InvariantError, validate_row
    from synth.shards import iter_rows, read_manifest, sample_files

    manifest = read_manifest(directory)
    broken = checked = 0
    for row in iter_rows(sample_files(directory)):
        checked += 1
        try:
            validate_row(row)
        except InvariantError as err:
            broken += 1
            typer.echo(f"BROKEN {err}", err=True)
    if checked != manifest.samples:
        broken += 1
        typer.echo(
            f"BROKEN manifest lists {manifest.samples} samples, shards hold {checked}", err=True
        )
    typer.echo(f"{checked} samples checked, {broken} broken")
    raise typer.Exit(1 if broken else 0)


@app.command()
def stats(
    directories: list[Path] = typer.Argument(..., help="one or more shard directories"),
    plot: Path | None = typer.Option(None, "--plot", help="also write the charts as one PNG"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of tables"),
) -> None:
    """Counts per task, stage, depth, distractors and language; rejects; LLM usage."""
    from synth.stats import compute_stats, dumps
    from synth.stats_view import plot_stats, render_stats

    try:
        result = compute_stats(directories)
        if plot is not None:
            plot_stats(result, plot)
    except (ValueError, FileNotFoundError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(dumps(result))
    else:
        render_stats(result)
    if plot is not None:
        typer.echo(f"wrote {plot}", err=as_json)


@app.command()
def inspect(
    directory: Path = typer.Argument(..., help="a shard directory"),
    limit: int = typer.Option(5, "--limit", "-n", min=1, help="show at most this many samples"),
    task: str | None = typer.Option(None, "--task", help="only samples of this task"),
    sample_id: str | None = typer.Option(None, "--id", help="only the sample with this id"),
    provenance: bool = typer.Option(
        False, "--provenance", "-p", help="show which LLM call wrote each text"
    ),
    raw: bool = typer.Option(False, "--raw", help="with --provenance: raw prompts and responses"),
) -> None:
    """Print dialogues readably: distractors dimmed, dependencies marked, images summarised."""
    from synth.inspection import Selection, inspect_dir

    try:
        shown = inspect_dir(
            directory,
            Selection(task=task, sample_id=sample_id, limit=limit),
            provenance=provenance,
            raw=raw,
        )
    except FileNotFoundError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    if not shown:
        wanted = " and ".join(
            f for f in (task and f"task {task}", sample_id and f"id {sample_id}") if f
        )
        typer.echo(f"no sample matches {wanted or 'anything'} in {directory}", err=True)
        raise typer.Exit(1)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
