"""The ``synth`` command line."""

from __future__ import annotations

from pathlib import Path

import typer

from synth.errors import one_line, reported, require_dir
from synth.stages.cli import run_app

app = typer.Typer(
    name="synth",
    help="Turn single-turn image data into multi-turn dialogues (ChatUMM stages a, b, c).",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(run_app, name="run")
_SHARDS_FIX = "give the --out directory of a `synth run` stage"


@app.callback()
def _root() -> None:
    """Turn single-turn image data into multi-turn dialogues (ChatUMM stages a, b, c)."""


@app.command()
@reported
def validate(
    directory: Path = typer.Argument(..., help="a shard directory written by synth"),
) -> None:
    """Check every invariant of the data contract and that no sample_id repeats; exit 1 naming
    each broken sample."""
    from synth.contract import InvariantError, validate_row
    from synth.shards import iter_rows, read_manifest, sample_files

    manifest = read_manifest(require_dir(directory, "shard directory", _SHARDS_FIX))
    broken = checked = 0
    first_seen: dict[str, int] = {}  # sample_id -> the row it first appeared in
    for row in iter_rows(sample_files(directory)):
        checked += 1
        try:
            validate_row(row)
        except InvariantError as err:
            broken += 1
            typer.echo(f"BROKEN {err}", err=True)
        sample_id = str(row.get("sample_id"))
        if sample_id in first_seen:
            broken += 1
            typer.echo(
                f"BROKEN sample_id {sample_id} repeats: rows {first_seen[sample_id]} and "
                f"{checked - 1} (a source with repeated row ids, or a shard written twice)",
                err=True,
            )
        else:
            first_seen[sample_id] = checked - 1
    if checked != manifest.samples:
        broken += 1
        typer.echo(
            f"BROKEN manifest lists {manifest.samples} samples, shards hold {checked}", err=True
        )
    typer.echo(f"{checked} samples checked, {broken} broken")
    raise typer.Exit(1 if broken else 0)


@app.command()
@reported
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

    parsed = load_sources_file(sources_file)
    table = Table("source", "kind", "format", "rows", "rejects", "reasons")
    any_rejects = False
    for spec in parsed.sources:
        rows, reasons = 0, Counter[str]()
        try:
            for item in islice(iter_source_rows(spec, parsed.base_dir), limit or None):
                if isinstance(item, Reject):
                    if sum(reasons.values()) < show:
                        typer.echo(
                            f"REJECT {spec.name}:{item.source_row} {item.reason}: {item.detail}"
                        )
                    reasons[item.reason] += 1
                else:
                    rows += 1
        except ValueError as err:  # SourceError and other reader errors: one line each
            typer.echo(f"error: source {spec.name!r}: {' '.join(str(err).split())}", err=True)
            raise typer.Exit(2) from None
        any_rejects |= bool(reasons)
        summary = ", ".join(f"{r} {n}" for r, n in reasons.most_common())
        table.add_row(spec.name, spec.kind, spec.format, str(rows), str(reasons.total()), summary)
    Console().print(table)
    raise typer.Exit(1 if any_rejects else 0)


@app.command()
@reported
def stats(
    directories: list[Path] = typer.Argument(..., help="one or more shard directories"),
    plot: Path | None = typer.Option(None, "--plot", help="also write the charts as one PNG"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of tables"),
) -> None:
    """Counts per task, stage, depth, distractors and language; rejects; LLM usage."""
    from synth.stats import compute_stats, dumps
    from synth.stats_view import plot_stats, render_stats

    result = compute_stats([require_dir(d, "shard directory", _SHARDS_FIX) for d in directories])
    if plot is not None:
        plot_stats(result, plot)
    if as_json:
        typer.echo(dumps(result))
    else:
        render_stats(result)
    if plot is not None:
        typer.echo(f"wrote {plot}", err=as_json)


@app.command()
@reported
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

    shown = inspect_dir(
        require_dir(directory, "shard directory", _SHARDS_FIX),
        Selection(task=task, sample_id=sample_id, limit=limit),
        provenance=provenance,
        raw=raw,
    )
    if not shown:
        wanted = " and ".join(
            f for f in (task and f"task {task}", sample_id and f"id {sample_id}") if f
        )
        typer.echo(f"no sample matches {wanted or 'anything'} in {directory}", err=True)
        raise typer.Exit(1)


@app.command()
@reported
def push(
    directories: list[Path] = typer.Argument(
        ..., help="shard directories, e.g. the stage a, b, c outputs"
    ),
    repo_id: str = typer.Option(..., "--repo-id", help="<namespace>/<name> of the dataset repo"),
    config_by: str = typer.Option(
        "stage", "--config-by", help="one configuration per 'stage' or per 'task'"
    ),
    private: bool = typer.Option(False, "--private", help="create the repo private"),
    revision: str | None = typer.Option(
        None, "--revision", help="branch to push to (created if needed)"
    ),
    exist_ok: bool = typer.Option(
        False, "--exist-ok", help="upload into an existing repo; finishes an interrupted push"
    ),
    with_rejects: bool = typer.Option(
        False, "--with-rejects", help="also upload the rejects as a 'rejects' configuration"
    ),
    license: str | None = typer.Option(
        None, "--license", help="Hub licence id; default: from the sources, else 'other'"
    ),
    files_per_commit: int = typer.Option(
        50, "--files-per-commit", min=1, help="data files per commit"
    ),
    allow_template: bool = typer.Option(
        False,
        "--allow-template",
        help="publish samples whose texts the offline template backend wrote",
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="write the card and the plan locally; send nothing"
    ),
    plan_dir: Path = typer.Option(
        Path("push-plan"), "--plan-dir", help="where --dry-run writes README.md and plan.json"
    ),
) -> None:
    """Upload shards to the Hugging Face Hub with a generated dataset card (token: HF_TOKEN)."""
    from synth.hub import PushError
    from synth.hub import push as push_plan
    from synth.hub_plan import PushOptions, plan_push, write_plan

    try:
        options = PushOptions(
            repo_id=repo_id,
            config_by=config_by,  # type: ignore[arg-type]  # checked by PushOptions
            private=private,
            revision=revision,
            exist_ok=exist_ok,
            with_rejects=with_rejects,
            license=license,
            allow_template=allow_template,
            files_per_commit=files_per_commit,
        )
        plan = plan_push(list(directories), options)
        if dry_run:
            out = write_plan(plan, plan_dir)
            configs = ", ".join(f"{c.name} ({c.rows})" for c in plan.configs)
            typer.echo(f"dry run: {len(plan.files)} data file(s) in configs {configs}")
            typer.echo(f"wrote {out / 'README.md'} and {out / 'plan.json'}; nothing was sent")
            refusal = plan.template_refusal()
            if refusal is not None:
                typer.echo(f"note: a push of this plan would stop: {refusal}", err=True)
            return
        result = push_plan(plan, log=typer.echo)
    except PushError as err:
        typer.echo(f"error: {one_line(err)}", err=True)
        raise typer.Exit(2) from None
    typer.echo(
        f"pushed to {result.url} ({revision or 'main'}): {result.commits} commit(s), "
        f"{len(result.uploaded)} file(s) uploaded, {len(result.skipped)} already there, "
        f"{len(result.deleted)} stale deleted"
    )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
