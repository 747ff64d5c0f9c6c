"""Where a source's data files are, and what format they are in, judged as ``datasets`` and the
Hub judge them.

A local folder is resolved the way ``load_dataset`` resolves a repository: the ``configs:`` of
its dataset card (``README.md``) when it declares data files, else the split-name patterns of
``datasets.data_files`` (``data/train-00000-of-00003-*.parquet``, ``train.jsonl``,
``train/...``). So a downloaded Hub snapshot, a ``to_parquet`` folder and an imagefolder with
``train/`` and ``test/`` subfolders all give the files of the configured ``split`` and nothing
else: MagicBrush's ``data/dev-*`` files never mix into ``split: train``. A folder written by
``save_to_disk`` is read by ``datasets`` itself (format ``hf``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import yaml

from synth.sources.errors import SourceError

Format = Literal["parquet", "jsonl", "json", "imagefolder", "webdataset", "coco", "hf"]

DATASETS_DIR_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
SUFFIX_FORMATS: dict[str, Format] = {
    ".parquet": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".tar": "webdataset",
}
# Files of a repository or folder that are never data.
_NOT_DATA = re.compile(r"(^|/)(\.[^/]*|README\.md|LICENSE[^/]*)$", re.IGNORECASE)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def is_saved_dataset(folder: Path) -> bool:
    return folder.is_dir() and any((folder / m).exists() for m in DATASETS_DIR_MARKERS)


def split_files(folder: Path, split: str, subset: str | None = None) -> list[Path]:
    """The data files of ``split`` under ``folder``, in order."""
    from datasets.data_files import DataFilesDict, get_data_patterns

    try:
        patterns = _card_patterns(folder, subset) or get_data_patterns(str(folder))
        by_split = DataFilesDict.from_patterns(patterns, base_path=str(folder))
    except FileNotFoundError as err:  # datasets' EmptyDatasetError, DataFilesNotFoundError
        raise SourceError(str(folder), f"holds no data files ({err})") from None
    name = _pick_split(split, [str(s) for s in by_split], folder)
    files = [Path(f) for f in by_split[name]]
    return sorted(f for f in files if not _NOT_DATA.search(f.relative_to(folder).as_posix()))


def _pick_split(split: str, found: list[str], folder: Path) -> str:
    """``split`` as found, or its ``datasets`` alias (``dev`` is ``validation``, and back)."""
    from datasets.data_files import SPLIT_KEYWORDS

    if split in found:
        return split
    for canonical, keywords in SPLIT_KEYWORDS.items():
        names = {str(canonical), *keywords}
        if split in names:
            match = [name for name in found if name in names]
            if len(match) == 1:
                return match[0]
    raise SourceError(
        str(folder),
        f"has no split {split!r} (splits: {', '.join(sorted(found))})",
        fix="set `split:` to one of them",
    )


def _card_patterns(folder: Path, subset: str | None) -> dict[str, list[str]] | None:
    """The data files a dataset card's ``configs:`` declares for one config, by split."""
    card = folder / "README.md"
    if not card.is_file():
        return None
    text = card.read_text(encoding="utf-8", errors="replace")
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, re.DOTALL)
    if match is None:
        return None
    try:
        meta = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError:
        return None
    configs = (
        [c for c in meta.get("configs") or [] if isinstance(c, dict)]
        if isinstance(meta, dict)
        else []
    )
    if not configs:
        return None
    chosen = (
        [c for c in configs if c.get("config_name") == subset]
        if subset
        else [c for c in configs if c.get("default") or c.get("config_name") == "default"]
        or configs[:1]
    )
    if not chosen:
        names = [str(c.get("config_name")) for c in configs]
        raise SourceError(
            str(card), f"declares no config {subset!r} (configs: {names})", fix="set `subset:`"
        )
    data_files = chosen[0].get("data_files")
    if isinstance(data_files, str):
        return {"train": [data_files]}
    out: dict[str, list[str]] = {}
    for entry in data_files or []:
        if isinstance(entry, dict) and "split" in entry:
            paths = entry.get("path")
            out[str(entry["split"])] = [paths] if isinstance(paths, str) else list(paths or [])
    return out or None


def format_of_files(files: list[Path], where: str) -> Format:
    """The format a list of data files is in."""
    suffixes = {f.suffix.lower() for f in files}
    if ".tar" in suffixes:
        return "webdataset"  # img2dataset's .parquet and _stats.json beside the tars are not data
    if suffixes & IMAGE_SUFFIXES:
        return "imagefolder"
    formats = {SUFFIX_FORMATS[s] for s in suffixes if s in SUFFIX_FORMATS}
    if len(formats) == 1:
        fmt = formats.pop()
        return json_kind(files[0]) if fmt == "json" else fmt
    what = (
        "no images, Parquet, JSON(L) or WebDataset files"
        if not formats
        else f"mixed {sorted(formats)}"
    )
    raise ValueError(
        f"cannot tell what {where!r} holds ({what}); set `format:` to parquet, jsonl, json, "
        "imagefolder, webdataset, coco or hf"
    )


def json_kind(file: Path) -> Format:
    """A ``.json`` file is an array of rows (``json``) or COCO-style annotations (``coco``)."""
    import ijson

    with file.open("rb") as handle:
        head = handle.read(4096).lstrip()
        if head.startswith(b"["):
            return "json"
        handle.seek(0)
        if head.startswith(b"{"):
            try:
                for prefix, event, value in ijson.parse(handle):
                    if prefix == "" and event == "map_key" and value in ("images", "annotations"):
                        return "coco"
            except ijson.JSONError:
                pass
    raise ValueError(
        f"{file.name} is neither a JSON array of rows nor COCO-style annotations (an object with "
        "`images` and `annotations`); set `format:`"
    )


def detect_format(
    path: str, base_dir: Path, split: str = "train", subset: str | None = None
) -> Format:
    """What a path holds, judged from its name and, for a folder, the files of ``split``."""
    local = (base_dir / path).expanduser()
    if local.is_dir():
        if is_saved_dataset(local):
            return "hf"
        return format_of_files(split_files(local, split, subset), path)
    if local.is_file():
        suffix = local.suffix.lower()
        if suffix == ".json":
            return json_kind(local)
        if suffix in SUFFIX_FORMATS:
            return SUFFIX_FORMATS[suffix]
        raise ValueError(f"cannot tell the format of {path!r} from its name; set `format:`")
    # `owner/name` is a Hub id, unless `owner` is a local folder: then it is a typo.
    if _HUB_ID.match(path) and not (base_dir / path.split("/")[0]).exists():
        return "hf"
    raise ValueError(
        f"path {path!r} does not exist (resolved to {local}); "
        "for a Hugging Face Hub dataset id set `format: hf`"
    )
