"""The sources file: which single-turn datasets feed the composer, and how to read each one.

```yaml
sources:
  - name: my-t2i
    kind: t2i            # t2i | edit | subject | compose | vqa | chat
    path: data/t2i.parquet
    columns: {image: image, caption: caption}   # optional when the names are already these
```

The kinds: ``t2i`` an image and its caption; ``edit`` a source image, an instruction and the
edited image; ``subject`` one subject's image and caption; ``compose`` two subjects' images and
captions plus the image showing both together (multi-subject data in the style of OmniGen's
X2I, MUSAR or Subjects200K), which feeds the "draw them together" tasks; ``vqa`` understanding
Q&A and ``chat`` text chats, the distractor material of stage b.

Relative paths resolve against the sources file's folder. ``format`` is detected from the path
when left out (``synth.sources.layout``: a file by its suffix, a folder by the files of its
``split``, resolved as ``datasets`` resolves a Hub repository) and written back into the loaded
spec, so the resolved file saved next to an output says exactly what was read. A column may be
a path into the row (``description.description_0``, ``input_images[0]``, ``json.caption``).
Every mistake is reported with the line of the file it sits on, all of them at once.

Beyond ``columns``: ``image_root`` is the folder relative image paths in the data resolve
against (LLaVA's ``--image_folder``, OmniGen's ``--image_path``, COCO's ``train2017/``);
``crop`` cuts a box ``[left, top, right, bottom]`` out of an image field (one view of a
Subjects200K composite); ``max_chars`` rejects a row whose text field is longer (a 1 MB caption
never reaches an LLM); ``pairs`` (vqa from a conversation: its first question/answer pair, or
each) and ``captions`` (COCO: an image's first caption, or one row per caption).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from synth.sources.layout import Format, detect_format
from synth.sources.paths import parse_path

Kind = Literal["t2i", "edit", "subject", "compose", "vqa", "chat"]

# The fields a row of each kind is made of. ``columns`` maps these names to the data's columns;
# a field left out of ``columns`` is read from the column of the same name. ``id`` is optional
# for every kind: when mapped, it names the row instead of its index.
KIND_FIELDS: dict[str, tuple[str, ...]] = {
    "t2i": ("image", "caption"),
    # `chain` + `turn`: rows of one multi-turn editing session (MagicBrush's img_id and
    # turn_index), read as one chain of consecutive edits.
    "edit": (
        "source_image",
        "source_caption",
        "instruction",
        "target_image",
        "target_caption",
        "chain",
        "turn",
    ),
    "subject": ("image", "caption"),
    # Subject A, subject B, and the one image that shows both of them (the composition target).
    "compose": (
        "first_image",
        "first_caption",
        "second_image",
        "second_caption",
        "target_image",
        "target_caption",
    ),
    # Either `question` + `answer`, or a conversation in `turns` (LLaVA's `conversations`).
    "vqa": ("image", "question", "answer", "turns"),
    # Either a list of messages in `turns`, or one exchange in `user` + `assistant`.
    "chat": ("turns", "user", "assistant"),
}
# Kinds whose rows may come from one conversation column instead of these two fields.
CONVERSATION_ALTERNATIVE: dict[str, tuple[str, str]] = {
    "vqa": ("question", "answer"),
    "chat": ("user", "assistant"),
}
# Fields a row must have; the others may be absent from the data (editing datasets such as
# MagicBrush carry no captions, single-exchange chat data has no `turns`). A compose row needs
# both subjects' captions (the requests that generate them are written from them); the target's
# caption is optional, as an edit's is (stage c rejects a sample whose final image has none).
REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "t2i": ("image", "caption"),
    "edit": ("source_image", "instruction", "target_image"),
    "subject": ("image", "caption"),
    "compose": ("first_image", "first_caption", "second_image", "second_caption", "target_image"),
    "vqa": ("image",),  # and `question` + `answer`, or `turns`
    "chat": (),  # `turns`, or `user` + `assistant`
}
_LITERALS: dict[str, Any] = {
    "kind": Kind,
    "format": Format,
    "pairs": Literal["first", "all"],
    "captions": Literal["first", "all"],
}
IMAGE_FIELDS = frozenset({"image", "source_image", "target_image", "first_image", "second_image"})
ID_FIELD = "id"
DEFAULT_MAX_CHARS = 4000


_ONLY_WHEN_MAPPED = (ID_FIELD, "chain", "turn", "turns")


class SourceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, pattern=r"^[\w.-]+$", description="unique; cited by rows")
    kind: Kind
    path: str = Field(min_length=1, description="file, folder, or Hugging Face dataset id")
    format: Format | None = Field(default=None, description="detected from path when left out")
    columns: dict[str, str] = Field(default_factory=dict, description="row field -> data column")
    split: str = Field(default="train", description="split to read from a folder or the Hub")
    subset: str | None = Field(default=None, description="dataset configuration name")
    image_root: str | None = Field(default=None, description="folder relative image paths use")
    crop: dict[str, tuple[int, int, int, int]] = Field(
        default_factory=dict, description="image field -> [left, top, right, bottom] in pixels"
    )
    max_chars: int = Field(default=DEFAULT_MAX_CHARS, ge=1, description="longest text field")
    pairs: Literal["first", "all"] = Field(default="first", description="vqa from `turns`")
    captions: Literal["first", "all"] = Field(default="first", description="coco captions")
    license: str | None = None
    attribution: str | None = None

    def column(self, field: str) -> str:
        """The data column that holds ``field``."""
        return self.columns.get(field, field)

    def field_columns(self) -> dict[str, str]:
        """Every field this source reads -> the column (path) it is read from. Optional fields
        that only mean something when mapped (``id``, ``chain``/``turn``, a conversation's
        ``turns`` for vqa) are left out unless mapped."""
        out = {f: self.column(f) for f in KIND_FIELDS[self.kind] if f not in _ONLY_WHEN_MAPPED}
        for name in _ONLY_WHEN_MAPPED:
            if name in self.columns and name in (*KIND_FIELDS[self.kind], ID_FIELD):
                out[name] = self.columns[name]
        if self.kind == "chat":
            out["turns"] = self.column("turns")
        return out

    @property
    def conversation(self) -> bool:
        """Rows come from a conversation column (``turns``) rather than two fields."""
        return self.kind == "chat" or (self.kind == "vqa" and "turns" in self.columns)

    @property
    def chained(self) -> bool:
        return self.kind == "edit" and "chain" in self.columns

    def image_folder(self, base_dir: Path) -> Path | None:
        """``image_root`` resolved, or None (each data file's own folder is used)."""
        return (base_dir / self.image_root).expanduser() if self.image_root else None

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
        for loc, key, message in _check_spec(spec, base_dir):
            problems.append((_line(root, ("sources", i, *loc), key=key), message))
        fmt = spec.format
        if fmt is None:
            try:
                fmt = detect_format(spec.path, base_dir, spec.split, spec.subset)
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
        if "captions" in spec.model_fields_set and fmt not in (None, "coco"):
            problems.append(
                (_line(root, ("sources", i, "captions"), key=True), "`captions` is for COCO files")
            )
        resolved.append(spec.model_copy(update={"format": fmt}))
    return parsed.model_copy(update={"sources": resolved})


def _check_spec(spec: SourceSpec, base_dir: Path) -> list[tuple[tuple[Any, ...], bool, str]]:
    """(location in the source entry, whether the line is the key's, message) per mistake."""
    out: list[tuple[tuple[Any, ...], bool, str]] = []
    known = (*KIND_FIELDS[spec.kind], ID_FIELD)
    for key, column in spec.columns.items():
        if key not in known:
            out.append(
                (
                    ("columns", key),
                    True,
                    f"unknown column field {key!r} for kind {spec.kind} (known: {', '.join(known)})",
                )
            )
        try:
            parse_path(column)
        except ValueError as err:
            out.append((("columns", key), False, str(err)))
    if ("chain" in spec.columns) != ("turn" in spec.columns):
        out.append((("columns",), False, "map both `chain` and `turn` (e.g. img_id, turn_index)"))
    if spec.chained and ID_FIELD in spec.columns:
        out.append(
            (
                ("columns", ID_FIELD),
                True,
                "a chained source names its rows <chain>#<turn>; remove `id`",
            )
        )
    images = sorted(f for f in KIND_FIELDS[spec.kind] if f in IMAGE_FIELDS)
    for key, (left, top, right, bottom) in spec.crop.items():
        if key not in images:
            out.append(
                (
                    ("crop", key),
                    True,
                    f"`crop` names {key!r}, not an image field of kind "
                    f"{spec.kind} (image fields: {', '.join(images)})",
                )
            )
        if not (0 <= left < right and 0 <= top < bottom):
            out.append(
                (
                    ("crop", key),
                    False,
                    f"crop box {[left, top, right, bottom]} is not "
                    "[left, top, right, bottom] with left < right and top < bottom",
                )
            )
    if "pairs" in spec.model_fields_set and not (spec.kind == "vqa" and spec.conversation):
        out.append((("pairs",), True, "`pairs` is for a vqa source that maps `turns`"))
    folder = spec.image_folder(base_dir)
    if folder is not None and not folder.is_dir():
        out.append(
            (
                ("image_root",),
                False,
                f"image_root {spec.image_root!r} is not a folder (resolved to {folder})",
            )
        )
    return out


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
