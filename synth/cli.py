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


from synth.stages.cli import run_app  # noqa: E402

app.add_typer(run_app, name="run")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
