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
def sources(
    sources_file: Path = typer.Argument(..., help="a sources YAML file"),
    limit: int = typer.Option(0, help="read at most this many rows of each source; 0 reads all"),
    show: int = typer.Option(3, help="print the first N rejects of each source"),
) -> None:
    """Check a sources file and read its sources: rows and rejects (by reason) per source."""
    from collections import Counter
    from itertools import islice

    from rich.console import Console
    from rich.table import Table

    from synth.contract import Reject
    from synth.sources import iter_source_rows, load_sources_file

    try:
        parsed = load_sources_file(sources_file)
    except ValueError as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(2) from None
    table = Table("source", "kind", "format", "rows", "rejects", "reasons")
    any_rejects = False
    for spec in parsed.sources:
        rows, reasons = 0, Counter[str]()
        for item in islice(iter_source_rows(spec, parsed.base_dir), limit or None):
            if isinstance(item, Reject):
                if sum(reasons.values()) < show:
                    typer.echo(f"REJECT {spec.name}:{item.source_row} {item.reason}: {item.detail}")
                reasons[item.reason] += 1
            else:
                rows += 1
        any_rejects |= bool(reasons)
        summary = ", ".join(f"{r} {n}" for r, n in reasons.most_common())
        table.add_row(spec.name, spec.kind, spec.format, str(rows), str(reasons.total()), summary)
    Console().print(table)
    raise typer.Exit(1 if any_rejects else 0)


from synth.stages.cli import run_app  # noqa: E402

app.add_typer(run_app, name="run")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
