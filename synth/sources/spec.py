"""The sources file: which single-turn datasets feed the composer, and how to read each one.

```yaml
sources:
  - name: my-t2i
    kind: t2i            # t2i | edit | subject | vqa | chat
    path: data/t2i.parquet
    columns: {image: image, caption: caption}   # optional when the names are already these
```

Relative paths resolve against the sources file's folder. ``format`` is detected from the path
when left out (``.parquet`` or a folder of them: parquet; ``.jsonl``: jsonl; a folder saved by
``datasets`` or a Hub id ``owner/name``: hf; a folder of images: imagefolder) and written back
into the loaded spec, so the resolved file saved next to an output says exactly what was read.
Every mistake is reported with the line of the file it sits on, all of them at once.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

Kind = Literal["t2i", "edit", "subject", "vqa", "chat"]
Format = Literal["parquet", "jsonl", "imagefolder", "hf"]

# The fields a row of each kind is made of. ``columns`` maps these names to the data's columns;
# a field left out of ``columns`` is read from the column of the same name. ``id`` is optional
# for every kind: when mapped, it names the row instead of its index.
KIND_FIELDS: dict[str, tuple[str, ...]] = {
    "t2i": ("image", "caption"),
    "edit": ("source_image", "source_caption", "instruction", "target_image", "target_caption"),
    "subject": ("image", "caption"),
    "vqa": ("image", "question", "answer"),
    # Either a list of messages in `turns`, or one exchange in `user` + `assistant`.
    "chat": ("turns", "user", "assistant"),
}
# Fields a row must have; the others may be absent from the data (editing datasets such as
# MagicBrush carry no captions, single-exchange chat data has no `turns`).
REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "t2i": ("image", "caption"),
    "edit": ("source_image", "instruction", "target_image"),
    "subject": ("image", "caption"),
    "vqa": ("image", "question", "answer"),
    "chat": (),
}
_LITERALS: dict[str, Any] = {"kind": Kind, "format": Format}
IMAGE_FIELDS = frozenset({"image", "source_image", "target_image"})
ID_FIELD = "id"

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_DATASETS_DIR_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})


class SourceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, pattern=r"^[\w.-]+$", description="unique; cited by rows")
    kind: Kind
    path: str = Field(min_length=1, description="file, folder, or Hugging Face dataset id")
    format: Format | None = Field(default=None, description="detected from path when left out")
    columns: dict[str, str] = Field(default_factory=dict, description="row field -> data column")
    split: str = Field(default="train", description="split to read (hf only)")
    subset: str | None = Field(default=None, description="dataset configuration name (hf only)")
    license: str | None = None
    attribution: str | None = None

    def column(self, field: str) -> str:
        """The data column that holds ``field``."""
        return self.columns.get(field, field)

    def field_columns(self) -> dict[str, str]:
        """Every field of this kind (and ``id`` when mapped) -> the column it is read from."""
        out = {f: self.column(f) for f in KIND_FIELDS[self.kind]}
        if ID_FIELD in self.columns:
            out[ID_FIELD] = self.columns[ID_FIELD]
        return out

    def location(self, base_dir: Path) -> Path | str:
        """The local path this source reads, or the Hub id when it names a remote dataset."""
        local = (base_dir / self.path).expanduser()
        if self.format == "hf" and not local.exists():
            return self.path
        return local


class SourcesFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sources: list[SourceSpec] = Field(min_length=1)
    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)

    @property
    def base_dir(self) -> Path:
        """The folder relative paths resolve against: the sources file's folder."""
        return self._base_dir

    def get(self, name: str) -> SourceSpec:
        for spec in self.sources:
            if spec.name == name:
                return spec
        raise KeyError(f"no source named {name!r} (sources: {[s.name for s in self.sources]})")

    def of_kind(self, *kinds: str) -> list[SourceSpec]:
        return [s for s in self.sources if s.kind in kinds]


def detect_format(path: str, base_dir: Path) -> Format:
    """What a path holds, judged from its name and, for a folder, its files."""
    local = (base_dir / path).expanduser()
    if local.is_dir():
        names = {p.name for p in local.iterdir()}
        if names & set(_DATASETS_DIR_MARKERS):
            return "hf"
        files = [p for p in local.rglob("*") if p.is_file()]
        if any(p.suffix.lower() in IMAGE_SUFFIXES for p in files):
            return "imagefolder"
        if files and all(p.suffix == ".parquet" for p in files if not p.name.startswith(".")):
            return "parquet"
        raise ValueError(
            f"cannot tell what folder {path!r} holds (no images, no Parquet files, not saved by "
            "`datasets`); set `format:` to parquet, jsonl, imagefolder or hf"
        )
    suffix = local.suffix.lower()
    if suffix == ".parquet":
        return "parquet"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if not local.exists():
        # `owner/name` is a Hub id, unless `owner` is a local folder: then it is a typo.
        if _HUB_ID.match(path) and not (base_dir / path.split("/")[0]).exists():
            return "hf"
        raise ValueError(
            f"path {path!r} does not exist (resolved to {local}); "
            "for a Hugging Face Hub dataset id set `format: hf`"
        )
    raise ValueError(f"cannot tell the format of {path!r} from its name; set `format:`")


# ---------------------------------------------------------------------------------------------
# Loading with line numbers: pydantic checks the structure, the composed YAML node tree maps
# each error's location back to the line it came from.


def load_sources_file(path: str | Path) -> SourcesFile:
    """Read and check a sources file; raise ``ValueError`` listing every mistake by line."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ValueError(f"{path.name}: not valid YAML: {err}") from None
    problems: list[tuple[int, str]] = []
    if root is not None:
        _find_duplicate_keys(root, problems)
    try:
        parsed = SourcesFile.model_validate(data if data is not None else {})
    except ValidationError as err:
        for error in err.errors():
            problems.append(_describe(error, root, data))
        parsed = None
    if parsed is not None:
        parsed = _resolve(parsed, path.parent.resolve(), root, problems)
    if problems:
        lines = "\n".join(
            f"  {path.name} line {line}: {msg}" if line else f"  {path.name}: {msg}"
            for line, msg in sorted(set(problems))
        )
        raise ValueError(f"{path} has {len(set(problems))} problem(s):\n{lines}")
    assert parsed is not None
    parsed._base_dir = path.parent.resolve()
    return parsed


def _resolve(
    parsed: SourcesFile, base_dir: Path, root: Any, problems: list[tuple[int, str]]
) -> SourcesFile:
    """Checks beyond the structure: unique names, column keys per kind, and the format."""
    seen: dict[str, int] = {}
    resolved: list[SourceSpec] = []
    for i, spec in enumerate(parsed.sources):
        if spec.name in seen:
            problems.append(
                (
                    _line(root, ("sources", i, "name")),
                    f"source name {spec.name!r} is used twice (first on source #{seen[spec.name] + 1})",
                )
            )
        seen.setdefault(spec.name, i)
        known = (*KIND_FIELDS[spec.kind], ID_FIELD)
        for key in spec.columns:
            if key not in known:
                problems.append(
                    (
                        _line(root, ("sources", i, "columns", key), key=True),
                        f"unknown column field {key!r} for kind {spec.kind} "
                        f"(known: {', '.join(known)})",
                    )
                )
        fmt = spec.format
        if fmt is None:
            try:
                fmt = detect_format(spec.path, base_dir)
            except ValueError as err:
                problems.append((_line(root, ("sources", i, "path")), str(err)))
        local = (base_dir / spec.path).expanduser()
        if fmt is not None and fmt != "hf" and not local.exists():
            problems.append(
                (
                    _line(root, ("sources", i, "path")),
                    f"path {spec.path!r} does not exist (resolved to {local})",
                )
            )
        resolved.append(spec.model_copy(update={"format": fmt}))
    return parsed.model_copy(update={"sources": resolved})


def _describe(error: Any, root: Any, data: Any) -> tuple[int, str]:
    loc: tuple[Any, ...] = tuple(error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden":
        owner = SourceSpec if len(loc) >= 2 and loc[0] == "sources" else SourcesFile
        known = ", ".join(owner.model_fields)
        return _line(root, loc, key=True), f"unknown key {loc[-1]!r} (known: {known})"
    if kind == "literal_error":
        choices = get_args(_LITERALS.get(str(loc[-1]), Literal[""]))
        known = ", ".join(choices) or str(error.get("ctx", {}).get("expected", ""))
        return _line(root, loc), f"unknown {loc[-1]} {error['input']!r} (known: {known})"
    if kind == "missing":
        return _line(root, loc[:-1]), f"missing required key {loc[-1]!r}"
    where = ".".join(str(x) for x in loc) or "file"
    return _line(root, loc), f"{where}: {error['msg']}"


def _line(root: Any, loc: Sequence[Any], key: bool = False) -> int:
    """1-based line of the node at ``loc`` (of its key when ``key``); the deepest found."""
    node = root
    line = node.start_mark.line + 1 if node is not None else 0
    for step in loc:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == step), None)
            if match is None:
                break
            line = (match[0] if key else match[1]).start_mark.line + 1
            node = match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int):
            if step >= len(node.value):
                break
            node = node.value[step]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _find_duplicate_keys(node: Any, problems: list[tuple[int, str]]) -> None:
    # yaml.safe_load keeps the last of two equal keys silently; a sources file never means that.
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            if key.value in seen:
                problems.append((key.start_mark.line + 1, f"key {key.value!r} appears twice"))
            seen.add(key.value)
            _find_duplicate_keys(value, problems)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _find_duplicate_keys(item, problems)
