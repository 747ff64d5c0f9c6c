"""What shard directories hold: counts per task, stage, depth, distractors, language, LLM usage.

Computed in streaming passes over the Parquet leaf columns it needs: images, raw prompts and raw
responses are never read, so a directory of any size costs one batch of small columns at a time.
The same numbers feed ``synth stats``, its ``--plot`` and the dataset card ``synth push`` writes.

Each LLM call is counted once. A stage-b or stage-c sample carries its parent's calls first
(they are a prefix of its own list) and adds its own after them; a call inherited from a
parent found in the directories given is the parent's, so stages a, b and c together count
what was asked once. (A parent not among the directories leaves its calls to the child.)
Two kinds of usage are reported: the calls behind the kept samples (from provenance), and what
the engine recorded (from each run's manifest: every paid request, retries and requests for
inputs that ended as rejects included, and the cost); a cost estimate reads the latter.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from synth.contract import AUX_TASKS
from synth.lang import detect_language
from synth.shards import read_manifest, reject_files, sample_files
from taxonomy import TaskName

# Logical column paths (lists flattened away) that the statistics read; nothing else is decoded.
SAMPLE_COLUMNS: tuple[str, ...] = (
    "sample_id",
    "task",
    "stage",
    "turns.role",
    "turns.parts.type",
    "turns.parts.text",
    "turns.parts.call",
    "images.source",
    "provenance.depends_on",
    "provenance.parent_id",
    "provenance.distractor_turns",
    "provenance.llm_calls.operation",
    "provenance.llm_calls.template_version",
    "provenance.llm_calls.backend",
    "provenance.llm_calls.model",
    "provenance.llm_calls.language",
    "provenance.llm_calls.prompt_tokens",
    "provenance.llm_calls.completion_tokens",
)
REJECT_COLUMNS: tuple[str, ...] = ("stage", "reason")
# What a parent's calls are counted by: its id and how many calls it made or inherited.
PARENT_COLUMNS: tuple[str, ...] = ("sample_id", "stage", "provenance.llm_calls.operation")
# The usage the engine records for a run (ops.engine.stats.Usage), as the manifests keep it.
USAGE_KEYS: tuple[str, ...] = (
    "requests",
    "cache_hits",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "thinking_tokens",
    "cost_usd",
)


@dataclass
class DatasetStats:
    """Counts over one or more shard directories. Counter keys are strings so JSON round-trips."""

    dirs: list[str] = field(default_factory=list)
    samples: int = 0
    tasks: Counter[str] = field(default_factory=Counter)
    stages: Counter[str] = field(default_factory=Counter)
    # task depth class: '0', '1', 'n' from the task name, 'aux' for vqa/chat
    depth: Counter[str] = field(default_factory=Counter)
    # rounds between the first dependency and the final query ('0' when it depends on nothing)
    distance: Counter[str] = field(default_factory=Counter)
    rounds: Counter[str] = field(default_factory=Counter)
    distractors: Counter[str] = field(default_factory=Counter)
    # distractor rounds by kind (t2i: an image generated; vqa: an upload and a text answer;
    # chat: text only), and the kind weights the stage-b runs asked for
    distractor_kinds: Counter[str] = field(default_factory=Counter)
    distractor_mix: dict[str, float] = field(default_factory=dict)
    # language of the final user query; language_origin says whether an LLM call named it
    languages: Counter[str] = field(default_factory=Counter)
    language_origin: Counter[str] = field(default_factory=Counter)
    images: int = 0
    image_sources: Counter[str] = field(default_factory=Counter)
    rejects: int = 0
    reject_reasons: Counter[str] = field(default_factory=Counter)
    reject_stages: Counter[str] = field(default_factory=Counter)
    # the calls behind the kept samples, each counted once (see the module docstring)
    llm_calls: int = 0
    backends: Counter[str] = field(default_factory=Counter)  # "backend/model" -> calls
    templates: Counter[str] = field(default_factory=Counter)  # "operation@version" -> calls
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # what the engine recorded (USAGE_KEYS): in all, per stage, per operation
    engine: dict[str, float] = field(default_factory=dict)
    engine_by_stage: dict[str, dict[str, float]] = field(default_factory=dict)
    engine_by_operation: dict[str, dict[str, float]] = field(default_factory=dict)
    incomplete: list[str] = field(default_factory=list)

    @property
    def template_calls(self) -> int:
        """Calls the offline ``template`` backend answered: texts from sentence frames, not a
        model (the card warns about them and ``synth push`` asks for --allow-template)."""
        return sum(n for key, n in self.backends.items() if key.startswith("template/"))

    def merge(self, other: DatasetStats) -> DatasetStats:
        out = DatasetStats()
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if isinstance(a, Counter):
                setattr(out, f.name, a + b)
            elif f.name == "distractor_mix":
                setattr(out, f.name, a or b)  # the runs' setting, not a count
            elif isinstance(a, dict):
                setattr(out, f.name, _add(a, b))
            else:
                setattr(out, f.name, a + b)
        return out

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = dict(value.most_common()) if isinstance(value, Counter) else value
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DatasetStats:
        stats = cls()
        for f in fields(cls):
            value = data[f.name]
            current = getattr(stats, f.name)
            setattr(stats, f.name, Counter(value) if isinstance(current, Counter) else value)
        return stats


def _add(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Sum two dicts of numbers, or of dicts of numbers, key by key."""
    out: dict[str, Any] = {}
    for key in sorted({*a, *b}):
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) or isinstance(y, dict):
            out[key] = _add(x or {}, y or {})
        else:
            out[key] = (x or 0) + (y or 0)
    return out


def physical_columns(path: Path, logical: Iterable[str]) -> list[str]:
    """The Parquet leaf paths under each logical path, e.g. ``turns.parts.type`` ->
    ``turns.list.element.parts.list.element.type``; a logical path absent from the file is an
    error naming the file, since every shard shares the contract's schema."""
    schema = pq.ParquetFile(path).schema
    by_logical: dict[str, list[str]] = {}
    for i in range(len(schema)):
        parts = schema.column(i).path.split(".")
        keep, skip = [], 0
        for j, part in enumerate(parts):
            if skip:
                skip -= 1
            elif part == "list" and j + 1 < len(parts):
                skip = 1  # "<name>.list.element": the list's repeated group and its item
            else:
                keep.append(part)
        by_logical.setdefault(".".join(keep), []).append(schema.column(i).path)
    out: list[str] = []
    for name in logical:
        matched = [
            p
            for key, ps in by_logical.items()
            if key == name or key.startswith(f"{name}.")
            for p in ps
        ]
        if not matched:
            raise ValueError(
                f"{path}: no column {name!r}; the file does not follow synth.contract's schema "
                "(was it written by synth.shards.ShardWriter?)"
            )
        out.extend(matched)
    return out


def iter_projected(
    files: Sequence[Path], logical: Sequence[str], batch_size: int = 256
) -> Iterator[dict[str, Any]]:
    """Rows holding only the given logical columns, one batch of one file in memory at a time."""
    for path in files:
        columns = physical_columns(path, logical)
        for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_size, columns=columns):
            yield from batch.to_pylist()


def final_query_language(
    turns: list[dict[str, Any]], calls: list[dict[str, Any]]
) -> tuple[str, str]:
    """(language, origin) of the final user turn's first text: the language its LLM call
    recorded ('llm'), else a script-based guess ('detected')."""
    final = turns[len(turns) - 2]
    for part in final["parts"] or []:
        if part["type"] != "text" or not part["text"]:
            continue
        call = part["call"]
        if call is not None and call < len(calls) and calls[call]["language"]:
            return calls[call]["language"], "llm"
        return detect_language(part["text"]), "detected"
    return "unknown", "detected"


def distractor_kind(turns: list[dict[str, Any]], user_turn: int) -> str:
    """The kind of the distractor round starting at ``user_turn``: t2i (the answer is an
    image), vqa (the question comes with an upload) or chat (text only)."""
    user, reply = turns[user_turn]["parts"] or [], turns[user_turn + 1]["parts"] or []
    if any(p["type"] == "image" for p in reply):
        return "t2i"
    return "vqa" if any(p["type"] == "image" for p in user) else "chat"


def _add_sample(stats: DatasetStats, row: dict[str, Any], inherited: int) -> None:
    """Count one sample; its first ``inherited`` calls are its parent's, counted there."""
    task, turns, prov = row["task"], row["turns"] or [], row["provenance"] or {}
    calls = prov.get("llm_calls") or []
    deps, distractors = prov.get("depends_on") or [], prov.get("distractor_turns") or []
    final_round = (len(turns) - 2) // 2
    stats.samples += 1
    stats.tasks[task] += 1
    stats.stages[row["stage"]] += 1
    stats.depth["aux" if task in AUX_TASKS else TaskName.parse(task).depth] += 1
    stats.distance[str(final_round - min(d // 2 for d in deps) if deps else 0)] += 1
    stats.rounds[str(len(turns) // 2)] += 1
    rounds = sorted({t - t % 2 for t in distractors})
    stats.distractors[str(len(rounds))] += 1
    stats.distractor_kinds.update(distractor_kind(turns, t) for t in rounds)
    if len(turns) >= 2:
        language, origin = final_query_language(turns, calls)
        stats.languages[language] += 1
        stats.language_origin[origin] += 1
    sources = [img["source"] for img in row.get("images") or []]
    stats.images += len(sources)
    stats.image_sources.update(sources)
    for call in calls[inherited:]:
        stats.llm_calls += 1
        stats.backends[f"{call['backend']}/{call['model']}"] += 1
        stats.templates[f"{call['operation']}@{call['template_version']}"] += 1
        stats.prompt_tokens += call["prompt_tokens"] or 0
        stats.completion_tokens += call["completion_tokens"] or 0


def _usage(value: Any) -> dict[str, float]:
    value = value if isinstance(value, dict) else {}
    return {k: value.get(k, 0) or 0 for k in USAGE_KEYS}


def parent_calls(dirs: Sequence[str | Path]) -> dict[str, int]:
    """sample_id -> number of LLM calls, for every stage-a and stage-b sample (the samples a
    later stage can take as parent) in ``dirs``."""
    calls: dict[str, int] = {}
    for directory in dirs:
        for row in iter_projected(sample_files(directory), PARENT_COLUMNS):
            if row["stage"] in ("a", "b"):
                calls[row["sample_id"]] = len(row["provenance"]["llm_calls"] or [])
    return calls


def compute_dir_stats(directory: str | Path, parents: dict[str, int] | None = None) -> DatasetStats:
    """One directory's statistics, streaming its sample and reject shards. ``parents`` maps a
    parent's sample_id to its call count (``parent_calls``): those calls are not counted here."""
    directory = Path(directory)
    parents = parents or {}
    manifest = read_manifest(directory)
    stats = DatasetStats(dirs=[str(directory)])
    if not manifest.complete:
        stats.incomplete.append(str(directory))
    for row in iter_projected(sample_files(directory), SAMPLE_COLUMNS):
        _add_sample(stats, row, parents.get((row["provenance"] or {}).get("parent_id") or "", 0))
    for row in iter_projected(reject_files(directory), REJECT_COLUMNS):
        stats.rejects += 1
        stats.reject_reasons[row["reason"]] += 1
        stats.reject_stages[row["stage"]] += 1
    summary = manifest.summary
    run = manifest.config.get("run") or {}
    stage = str(run.get("stage") or summary.get("stage") or manifest.config.get("stage") or "?")
    stats.engine = _usage(summary.get("llm"))
    stats.engine_by_stage = {stage: dict(stats.engine)} if summary.get("llm") else {}
    stats.engine_by_operation = {
        op: _usage(usage) for op, usage in (summary.get("llm_by_operation") or {}).items()
    }
    if stage == "b" and run.get("distractor_mix"):
        stats.distractor_mix = dict(run["distractor_mix"])
    return stats


def compute_stats(dirs: Sequence[str | Path]) -> DatasetStats:
    """Statistics of several directories (e.g. the stage a, b and c outputs) together."""
    if not dirs:
        raise ValueError("give at least one shard directory")
    parents = parent_calls(dirs)
    total = DatasetStats()
    for directory in dirs:
        total = total.merge(compute_dir_stats(directory, parents))
    return total


def dumps(stats: DatasetStats) -> str:
    return json.dumps(stats.to_json(), indent=2, ensure_ascii=False, sort_keys=False)
