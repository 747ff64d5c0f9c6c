"""Prompt templates: a sandboxed strict Jinja environment, the sentence pools, and versions.

Templates live in the ``prompts`` package (``prompts/<operation>.j2``, shared macros under
``prompts/partials/``). They are checked, not trusted: ``template_variables`` collects every
variable a template and the partials it pulls in refer to, and the registry compares that set
with the operation's declared inputs when it is built. Rendering uses ``StrictUndefined`` in an
immutable sandbox, so a missing variable fails loudly and a hostile value is only ever text.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import yaml
from jinja2 import BaseLoader, FileSystemLoader, StrictUndefined, meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

# The variables a pool-using template declares besides the operation's inputs; the run's seeded
# RNG fills them with one structure per language.
STRUCTURE_VARIABLES = ("en_structure", "zh_structure")


class TemplateContractError(ValueError):
    """A template's variables differ from its operation's declared inputs."""


@dataclass(frozen=True)
class Pool:
    """One sentence-structure pool: English and simplified-Chinese structures."""

    name: str
    en: tuple[str, ...]
    zh: tuple[str, ...]


def prompts_dir() -> str:
    return str(resources.files("prompts"))


def make_environment(loader: BaseLoader | None = None) -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        loader=loader or FileSystemLoader(prompts_dir()),
        undefined=StrictUndefined,
        autoescape=False,  # prompts are plain text; escaping would change what the model reads
        keep_trailing_newline=False,
        auto_reload=False,  # templates are read once per process: no stat() at every render
        trim_blocks=False,
    )
    # No globals (Jinja's range, dict, lipsum, cycler, joiner, namespace): a prompt sees its
    # declared inputs and its partials, nothing else.
    env.globals.clear()
    return env


# libyaml's loader where PyYAML was built with it: the same values, loaded in C.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(text: str) -> Any:
    """``yaml.safe_load``, through libyaml where available."""
    return yaml.load(text, Loader=_YAML_LOADER)


@cache
def load_pools() -> dict[str, Pool]:
    text = resources.files("prompts").joinpath("pools.yaml").read_text(encoding="utf-8")
    raw = load_yaml(text)
    return {name: Pool(name, tuple(p["en"]), tuple(p["zh"])) for name, p in raw.items()}


def _source(env: ImmutableSandboxedEnvironment, name: str) -> str:
    assert env.loader is not None
    source, _, _ = env.loader.get_source(env, name)
    return source


@dataclass(frozen=True)
class TemplateInfo:
    """A template's source and those of the partials it pulls in, and the variables they read."""

    sources: Mapping[str, str]
    variables: frozenset[str]


@cache
def _parsed(
    env: ImmutableSandboxedEnvironment, name: str
) -> tuple[frozenset[str], tuple[str, ...]]:
    """The variables one template reads and the templates it imports or includes (a partial is
    parsed once for all the templates that import it)."""
    ast = env.parse(_source(env, name))
    refs = tuple(meta.find_referenced_templates(ast))
    if None in refs:
        raise TemplateContractError(f"{name}: imports a template by a computed name")
    return frozenset(meta.find_undeclared_variables(ast)), tuple(str(r) for r in refs)


def inspect_template(env: ImmutableSandboxedEnvironment, name: str) -> TemplateInfo:
    """Parse the template and every template it imports or includes, once each."""
    sources: dict[str, str] = {}
    variables: set[str] = set()
    pending = [name]
    while pending:
        current = pending.pop()
        if current in sources:
            continue
        sources[current] = _source(env, current)
        used, refs = _parsed(env, current)
        variables |= used
        pending.extend(refs)
    return TemplateInfo(sources, frozenset(variables))


def template_variables(env: ImmutableSandboxedEnvironment, name: str) -> frozenset[str]:
    """Every variable the template and its partials read from the render context."""
    return inspect_template(env, name).variables


def check_variables(
    operation: str, name: str, used: frozenset[str], declared: frozenset[str]
) -> None:
    if used != declared:
        raise TemplateContractError(
            f"operation {operation!r}: template {name} uses variables {sorted(used)} but the "
            f"operation declares {sorted(declared)}; missing from the template: "
            f"{sorted(declared - used)}, undeclared in the operation: {sorted(used - declared)}. "
            "Make the template's variables and the operation's input model agree."
        )


def template_version(info: TemplateInfo, pool: Pool | None, extra: Mapping[str, str]) -> str:
    """Short sha256 of the template, its partials, its pool and anything else that shapes it."""
    h = hashlib.sha256()
    for ref, source in sorted(info.sources.items()):
        h.update(f"{ref}\0{source}\0".encode())
    if pool is not None:
        h.update(json.dumps([pool.name, pool.en, pool.zh], ensure_ascii=False).encode())
    h.update(json.dumps(dict(sorted(extra.items())), ensure_ascii=False).encode())
    return h.hexdigest()[:12]
