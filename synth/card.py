"""The dataset card (``README.md``) of a pushed dataset: YAML front matter the Hub and ``datasets``
read (configs, features, licence, languages, task categories), then tables made from the same
``DatasetStats`` as ``synth stats``, so the card cannot disagree with the shards it describes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from jinja2 import FileSystemLoader, StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

from synth.stats import DatasetStats
from synth.stats_view import ordered
from taxonomy import TASKS
from taxonomy.names import DEPTHS

TEMPLATE_DIR = Path(__file__).parent / "templates"
CARD_TEMPLATE = "dataset_card.md.j2"


@dataclass(frozen=True)
class ConfigSpec:
    """One ``load_dataset(repo, name)`` configuration: its files and what they hold."""

    name: str
    patterns: tuple[str, ...]
    rows: int
    files: int
    kind: str = "samples"  # or "rejects"


@dataclass(frozen=True)
class CardSpec:
    repo_id: str
    revision: str | None
    config_by: str
    configs: tuple[ConfigSpec, ...]
    default_config: str
    stats: DatasetStats
    license: str
    license_note: str


def find_licenses(value: Any) -> Iterator[str]:
    """Every ``license``/``licence`` string in a run config (e.g. its sources), at any depth."""
    if isinstance(value, dict):
        for key, sub in value.items():
            if key in ("license", "licence") and isinstance(sub, str) and sub:
                yield sub
            else:
                yield from find_licenses(sub)
    elif isinstance(value, list):
        for item in value:
            yield from find_licenses(item)


def resolve_license(
    option: str | None, run_configs: list[dict[str, Any]], sources: list[str]
) -> tuple[str, str]:
    """(Hub licence id, sentence for the card). An explicit ``--license`` wins; else the one
    licence all sources share; else ``other`` with the sources named, since a synthetic dataset
    inherits the terms of the images and captions it was built from."""
    found = sorted({lic for config in run_configs for lic in find_licenses(config)})
    named = ", ".join(sources) or "the source datasets"
    if option:
        return option, f"Released under `{option}`. Images and captions come from {named}."
    if len(found) == 1:
        return found[0], f"The sources ({named}) share the licence `{found[0]}`."
    if found:
        return "other", (
            f"Mixed: the sources carry the licences {', '.join(f'`{x}`' for x in found)}. Each "
            "image keeps its source's licence (`images[].source` names it)."
        )
    return "other", (
        f"Images and captions come from {named}; each keeps its source's licence "
        "(`images[].source` names it). Check those licences before redistribution."
    )


def task_categories(stats: DatasetStats) -> list[str]:
    categories: list[str] = []
    names = list(stats.tasks)
    if any(t.startswith("t_") for t in names):
        categories.append("text-to-image")
    if any(t.startswith("ti_") for t in names):
        categories.append("image-to-image")
    if "vqa" in names:
        categories.append("visual-question-answering")
    if "chat" in names:
        categories.append("text-generation")
    return categories


def size_category(n: int) -> str:
    bounds: tuple[tuple[int, str], ...] = (
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
        (10_000_000, "1M<n<10M"),
        (100_000_000, "10M<n<100M"),
    )
    return next((label for bound, label in bounds if n < bound), "n>100M")


def front_matter(spec: CardSpec) -> dict[str, Any]:
    from datasets import Features

    from synth.contract import REJECT_SCHEMA, dataset_features

    features = {
        "samples": dataset_features()._to_yaml_list(),
        "rejects": Features.from_arrow_schema(REJECT_SCHEMA)._to_yaml_list(),
    }
    languages = sorted(k for k in spec.stats.languages if k != "unknown")
    configs = []
    for c in spec.configs:
        entry: dict[str, Any] = {"config_name": c.name}
        if c.name == spec.default_config:
            entry["default"] = True
        paths = list(c.patterns)
        entry["data_files"] = [{"split": "train", "path": paths[0] if len(paths) == 1 else paths}]
        configs.append(entry)
    dataset_info = [
        {
            "config_name": c.name,
            "features": features[c.kind],
            "splits": [{"name": "train", "num_examples": c.rows}],
        }
        for c in spec.configs
    ]
    return {
        "license": spec.license,
        "language": languages,
        "task_categories": task_categories(spec.stats),
        "size_categories": [size_category(spec.stats.samples)],
        "tags": ["synthetic", "multi-turn", "interleaved", "image-generation", "chatumm"]
        + (["template-made"] if spec.stats.template_calls else []),
        "pretty_name": f"{spec.repo_id.split('/')[-1]} (chatumm dialogues)",
        "configs": configs,
        "dataset_info": dataset_info,
    }


def _share(n: int, total: int) -> str:
    return f"{100 * n / total:.1f}%" if total else "-"


def render_card(spec: CardSpec) -> str:
    stats = spec.stats
    env = SandboxedEnvironment(
        loader=FileSystemLoader(TEMPLATE_DIR),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    task_rows = [
        {
            "task": task,
            "stage": TASKS[task].stage if task in TASKS else "-",
            "depth": TASKS[task].name.depth if task in TASKS else "aux",
            "count": n,
            "share": _share(n, stats.samples),
        }
        for task, n in sorted(stats.tasks.items())
    ]
    sample_configs = [c for c in spec.configs if c.kind == "samples"]
    rejects = [c.name for c in spec.configs if c.kind == "rejects"]
    body = env.get_template(CARD_TEMPLATE).render(
        title=spec.repo_id.split("/")[-1],
        repo_id=spec.repo_id,
        repo_name=spec.repo_id.split("/")[-1],
        revision=spec.revision,
        config_by=spec.config_by,
        configs=spec.configs,
        default_config=spec.default_config,
        example_config=sample_configs[-1].name if sample_configs else spec.default_config,
        rejects_config=rejects[0] if rejects else None,
        stats=stats,
        task_rows=task_rows,
        depth_rows=[(d, stats.depth[d]) for d in (*DEPTHS, "aux") if stats.depth[d]],
        distractor_rows=ordered(stats.distractors),
        language_rows=[(k, n, _share(n, stats.samples)) for k, n in ordered(stats.languages)],
        backend_rows=ordered(stats.backends),
        template_rows=sorted(stats.templates.items()),
        reject_rows=ordered(stats.reject_reasons),
        source_rows=ordered(stats.image_sources),
        license_note=spec.license_note,
        template_calls=stats.template_calls,
    )
    header = yaml.dump(
        front_matter(spec), Dumper=_NoAliasDumper, sort_keys=False, allow_unicode=True, width=100
    )
    return f"---\n{header}---\n\n{body}"


class _NoAliasDumper(yaml.SafeDumper):
    """Writes each config's (shared) feature list in full: no ``&id001`` anchors in the card."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def parse_card(text: str) -> tuple[dict[str, Any], str]:
    """(front matter, body) of a card; the inverse the tests and a rerun use."""
    if not text.startswith("---\n"):
        raise ValueError("a dataset card starts with a '---' YAML front matter block")
    _, header, body = text.split("---\n", 2)
    return yaml.safe_load(header), body
