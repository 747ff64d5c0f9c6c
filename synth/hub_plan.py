"""What ``synth push`` will upload, decided locally and without network: the push plan.

The repo layout is one folder per configuration, so ``load_dataset(NAME, "stage-c")`` reads
exactly ``data/stage-c/*.parquet``::

    README.md                          the dataset card (configs, features, tables)
    data/<config>/<dir>-train-P-S.parquet   samples; <config> is a stage (stage-c) or a task
    rejects/<dir>-rejects-P-S.parquet  only with --with-rejects, as the "rejects" config
    meta/<dir>/manifest-P.json         each run's manifest (config, versions, run summary)
    meta/stats.json                    the numbers the card shows, for machines

A shard whose rows all fall in one configuration is uploaded as it is; a shard that mixes
configurations (several tasks, when configs are per task) is split at upload time into one file
per configuration, row group by row group, so nothing is ever loaded whole.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import pyarrow.parquet as pq

from synth.card import CardSpec, ConfigSpec, render_card, resolve_license
from synth.shards import read_manifest, reject_files, sample_files
from synth.stats import DatasetStats, compute_stats, dumps

ConfigBy = Literal["stage", "task"]
ALL_CONFIG = "all"
REJECTS_CONFIG = "rejects"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")


@dataclass(frozen=True)
class PushOptions:
    repo_id: str
    config_by: ConfigBy = "stage"
    private: bool = False
    revision: str | None = None
    exist_ok: bool = False
    with_rejects: bool = False
    license: str | None = None
    # Publish samples whose texts the offline template backend wrote (the card says so).
    allow_template: bool = False
    # Bounded commits make an interrupted push resumable at commit granularity.
    files_per_commit: int = 50
    bytes_per_commit: int = 4 << 30

    def __post_init__(self) -> None:
        if not _REPO_ID.match(self.repo_id):
            raise ValueError(
                f"--repo-id {self.repo_id!r} must be <namespace>/<name> (your user or "
                "organisation, then the dataset), e.g. alice/chatumm-dialogues"
            )
        if self.config_by not in ("stage", "task"):
            raise ValueError(f"--config-by is 'stage' or 'task', got {self.config_by!r}")
        if self.files_per_commit < 1 or self.bytes_per_commit < 1:
            raise ValueError("files_per_commit and bytes_per_commit must be positive")


@dataclass(frozen=True)
class PlannedFile:
    path_in_repo: str
    config: str
    source: str  # the local shard it comes from
    rows: int
    # None: upload the shard as it is; else only its rows whose split column equals this key
    split_key: str | None = None
    split_column: str | None = None


@dataclass
class PushPlan:
    options: PushOptions
    dirs: list[str]
    files: list[PlannedFile]
    configs: list[ConfigSpec]
    card: str
    meta: dict[str, bytes] = field(repr=False)
    template_calls: int = 0  # calls behind the samples the template backend answered
    llm_calls: int = 0

    def template_refusal(self) -> str | None:
        """Why this plan may not be pushed as it is (template-made texts), else None."""
        if not self.template_calls or self.options.allow_template:
            return None
        return (
            f"{self.template_calls:,} of the {self.llm_calls:,} LLM calls behind these samples "
            "were answered by the offline template backend (sentence frames, not a model): "
            "a dry run's data, not training data; run the stages with --llm openai|gemini, or "
            "pass --allow-template to publish it anyway (its card says so at the top)"
        )

    @property
    def managed_prefixes(self) -> tuple[str, ...]:
        """Remote folders this push owns: files there that it does not upload are stale."""
        prefixes = [
            f"data/{c.name}/" for c in self.configs if c.kind == "samples" and c.name != ALL_CONFIG
        ]
        if self.options.with_rejects:
            prefixes.append("rejects/")
        return (*prefixes, "meta/")

    def to_json(self) -> dict[str, Any]:
        return {
            "repo_id": self.options.repo_id,
            "revision": self.options.revision or "main",
            "private": self.options.private,
            "config_by": self.options.config_by,
            "dirs": self.dirs,
            "configs": [asdict(c) for c in self.configs],
            "files": [asdict(f) for f in self.files],
            "meta_files": sorted(self.meta),
            "card": "README.md",
            "deletes": f"remote files under {', '.join(self.managed_prefixes)} that this plan "
            "does not list are deleted in the final commit",
        }


def config_name(config_by: ConfigBy, key: str) -> str:
    return f"stage-{key}" if config_by == "stage" else key


def dir_tags(dirs: list[Path]) -> list[str]:
    """A file-name prefix per directory: its name, made unique with a hash of its path."""
    names = [re.sub(r"[^\w.-]+", "-", d.resolve().name).strip("-") or "out" for d in dirs]
    counts = Counter(names)
    return [
        name
        if counts[name] == 1
        else f"{name}-{hashlib.sha1(str(d.resolve()).encode()).hexdigest()[:6]}"
        for name, d in zip(names, dirs, strict=True)
    ]


def _column_counts(path: Path, column: str) -> Counter[str]:
    return Counter(pq.read_table(path, columns=[column]).column(column).to_pylist())


def _config_order(name: str) -> tuple[int, str]:
    return (0 if name.startswith("stage-") else 1, name)


def plan_push(dirs: list[str | Path], options: PushOptions) -> PushPlan:
    paths = [Path(d) for d in dirs]
    if len({p.resolve() for p in paths}) != len(paths):
        raise ValueError(f"a directory is given twice in {[str(p) for p in paths]}")
    manifests = [read_manifest(p) for p in paths]
    stats = compute_stats(paths)
    if stats.samples == 0:
        raise ValueError(f"nothing to push: {', '.join(map(str, paths))} hold no samples")
    column = options.config_by  # the "stage" or "task" column of a sample row
    files: list[PlannedFile] = []
    tags = dir_tags(paths)
    # the uploaded stats name directories by tag: local paths stay local
    meta: dict[str, bytes] = {"meta/stats.json": dumps(replace(stats, dirs=tags)).encode()}
    for directory, tag in zip(paths, tags, strict=True):
        for shard in sample_files(directory):
            counts = _column_counts(shard, column)
            mixed = len(counts) > 1
            for key, rows in sorted(counts.items()):
                config = config_name(options.config_by, key)
                files.append(
                    PlannedFile(
                        f"data/{config}/{tag}-{shard.name}",
                        config,
                        str(shard),
                        rows,
                        key if mixed else None,
                        column if mixed else None,
                    )
                )
        if options.with_rejects:
            for shard in reject_files(directory):
                rows = pq.ParquetFile(shard).metadata.num_rows
                files.append(
                    PlannedFile(f"rejects/{tag}-{shard.name}", REJECTS_CONFIG, str(shard), rows)
                )
        for manifest_file in sorted(directory.glob("manifest-*.json")):
            meta[f"meta/{tag}/{manifest_file.name}"] = manifest_file.read_bytes()
    configs = _configs(files, stats)
    license_id, note = resolve_license(
        options.license, [m.config for m in manifests], sorted(stats.image_sources)
    )
    sample_configs = [c for c in configs if c.kind == "samples"]
    spec = CardSpec(
        repo_id=options.repo_id,
        revision=options.revision if options.revision not in (None, "main") else None,
        config_by=options.config_by,
        configs=tuple(configs),
        default_config=ALL_CONFIG if len(sample_configs) > 1 else sample_configs[0].name,
        stats=stats,
        license=license_id,
        license_note=note,
    )
    return PushPlan(
        options,
        [str(p) for p in paths],
        files,
        configs,
        render_card(spec),
        meta,
        template_calls=stats.template_calls,
        llm_calls=stats.llm_calls,
    )


def _configs(files: list[PlannedFile], stats: DatasetStats) -> list[ConfigSpec]:
    rows: Counter[str] = Counter()
    count: Counter[str] = Counter()
    for f in files:
        rows[f.config] += f.rows
        count[f.config] += 1
    names = sorted((c for c in rows if c != REJECTS_CONFIG), key=_config_order)
    configs = [ConfigSpec(n, (f"data/{n}/*.parquet",), rows[n], count[n]) for n in names]
    assert sum(rows[n] for n in names) == stats.samples, "every sample lands in one config"
    if len(configs) > 1:
        patterns = tuple(p for c in configs for p in c.patterns)
        configs.insert(
            0, ConfigSpec(ALL_CONFIG, patterns, stats.samples, sum(count[n] for n in names))
        )
    if REJECTS_CONFIG in rows:
        configs.append(
            ConfigSpec(
                REJECTS_CONFIG,
                ("rejects/*.parquet",),
                rows[REJECTS_CONFIG],
                count[REJECTS_CONFIG],
                "rejects",
            )
        )
    return configs


def write_plan(plan: PushPlan, out_dir: str | Path) -> Path:
    """The dry run: the card and the plan as files, nothing sent anywhere."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "README.md").write_text(plan.card, encoding="utf-8")
    (out / "plan.json").write_text(
        json.dumps(plan.to_json(), indent=2, ensure_ascii=False), encoding="utf-8"
    )
    return out
