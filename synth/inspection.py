"""Read dialogues the way a person reviews them: turns in order, images as one-line summaries.

Selecting by task or id reads only the ``sample_id`` and ``task`` columns of each row group and
decodes a full row group (images included) only when it holds a match, so finding one sample in
a large directory costs two small columns per group. Images are described from their header
(format, size) and are never decoded.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
from PIL import Image, UnidentifiedImageError
from rich.console import Console, Group
from rich.panel import Panel
from rich.text import Text

from synth.contract import DialogueSample, ImageRecord, LLMCall, Part
from synth.shards import sample_files


@dataclass(frozen=True)
class Selection:
    task: str | None = None
    sample_id: str | None = None
    limit: int | None = 5

    def matches(self, sample_id: str, task: str) -> bool:
        return (self.task is None or task == self.task) and (
            self.sample_id is None or sample_id == self.sample_id
        )


def find_samples(directory: str | Path, selection: Selection) -> Iterator[DialogueSample]:
    """Samples of ``directory`` that match, in shard order, at most ``selection.limit``."""
    files = sample_files(directory)
    if not files:
        raise FileNotFoundError(f"{directory} holds no sample shards (train-*.parquet)")
    found = 0
    for path in files:
        pf = pq.ParquetFile(path)
        for group in range(pf.num_row_groups):
            keys = pf.read_row_group(group, columns=["sample_id", "task"]).to_pylist()
            hits = [i for i, k in enumerate(keys) if selection.matches(k["sample_id"], k["task"])]
            if not hits:
                continue
            rows = pf.read_row_group(group).to_pylist()
            for i in hits:
                yield DialogueSample.from_row(rows[i])
                found += 1
                if selection.limit is not None and found >= selection.limit:
                    return


def describe_image(index: int, origin: str, record: ImageRecord) -> str:
    """``[image 2: upload, 512x384 JPEG, 41 KB, source chelsea row 7]`` from the file header."""
    try:
        with Image.open(io.BytesIO(record.data)) as img:  # reads the header only
            shape = f"{img.width}x{img.height} {img.format}"
    except (UnidentifiedImageError, OSError):
        shape = "unreadable image"
    size = len(record.data)
    kb = f"{size / 1024:.0f} KB" if size >= 1024 else f"{size} B"
    return (
        f"[image {index}: {origin}, {shape}, {kb}, source {record.source} row {record.source_row}]"
    )


def describe_call(index: int, call: LLMCall) -> str:
    lang = f", {call.language}" if call.language else ""
    return (
        f"call {index}: {call.operation} · {call.backend}/{call.model} · "
        f"template {call.template_version}{lang}"
    )


def _part_lines(sample: DialogueSample, part: Part, provenance: bool) -> list[Text]:
    if part.type == "image":
        assert part.image is not None and part.origin is not None
        record = sample.images[part.image]
        line = Text(describe_image(part.image, part.origin, record), style="cyan")
        if record.caption:
            line.append(f"  {record.caption}", style="dim")
        return [line]
    lines = [Text(part.text or "")]
    if provenance:
        origin = (
            describe_call(part.call, sample.provenance.llm_calls[part.call])
            if part.call is not None
            else "no LLM call: source text or fixed template"
        )
        lines.append(Text(f"  ↳ {origin}", style="magenta"))
    return lines


def _turn_label(sample: DialogueSample, index: int) -> Text:
    prov = sample.provenance
    role = sample.turns[index].role
    label = Text(f"#{index} {role}", style="bold green" if role == "user" else "bold blue")
    if index in prov.depends_on:
        label.append("  ◆ dependency", style="bold yellow")
    if index in prov.distractor_turns:
        label.append("  distractor", style="dim")
    if index == sample.final_turn:
        label.append("  ▶ final query", style="bold red")
    elif index == sample.final_turn + 1:
        label.append("  ▶ answer", style="bold red")
    return label


def render_sample(
    sample: DialogueSample, console: Console, *, provenance: bool = False, raw: bool = False
) -> None:
    prov = sample.provenance
    body: list[Text] = []
    for index, turn in enumerate(sample.turns):
        dimmed = index in prov.distractor_turns
        lines = [_turn_label(sample, index)]
        for part in turn.parts:
            lines += [line.copy() for line in _part_lines(sample, part, provenance)]
        for line in lines:
            if dimmed:
                line.stylize("dim")
            body.append(line)
        body.append(Text(""))
    if provenance:
        body.append(Text("LLM calls", style="bold"))
        for k, call in enumerate(prov.llm_calls):
            chosen = (
                f", chose {call.chosen + 1} of {len(call.results)}"
                if call.chosen is not None
                else ""
            )
            tokens = f", {call.prompt_tokens}+{call.completion_tokens} tokens"
            body.append(Text(f"  {describe_call(k, call)}{chosen}{tokens}", style="magenta"))
            if raw:
                body.append(Text("    prompt:   ", style="bold") + Text(call.prompt))
                body.append(Text("    response: ", style="bold") + Text(call.response))
    title = f"{sample.sample_id} · {sample.task} · stage {sample.stage} · seed {prov.seed}"
    if prov.parent_id:
        title += f" · from {prov.parent_id}"
    console.print(Panel(Group(*body), title=title, title_align="left"))


def inspect_dir(
    directory: str | Path,
    selection: Selection,
    console: Console | None = None,
    *,
    provenance: bool = False,
    raw: bool = False,
) -> int:
    """Print the selected samples; return how many were shown."""
    console = console or Console()
    shown = 0
    for sample in find_samples(directory, selection):
        render_sample(sample, console, provenance=provenance, raw=raw)
        shown += 1
    return shown
