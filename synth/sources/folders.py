"""Readers for layouts made of many files: image folders, WebDataset tars, COCO annotations.

- imagefolder (the ``datasets`` layout): ``metadata.jsonl`` / ``metadata.csv`` rows name their
  image in ``file_name`` (read as column ``image``) or ``<column>_file_name`` (read as
  ``<column>``), relative to the metadata file's folder; without metadata, every image in
  sorted order, captioned by the ``<stem>.txt`` beside it. Split subfolders (``train/``,
  ``test/``) are chosen by ``split:`` (``layout.split_files``).
- webdataset: the members of each ``.tar`` grouped by key (the path up to the first dot of the
  file name, as ``webdataset`` and ``datasets``' webdataset builder group them); a sample's
  columns are its extensions (``jpg``, ``txt``, ``json``, ...) plus ``__key__`` and
  ``__url__``; ``txt`` members are read as text and ``json`` members as JSON, so ``json.caption``
  reaches a field. Files beside the tars (img2dataset's ``.parquet`` and ``_stats.json``) are
  not data.
- coco: a COCO-style annotations file (``images`` + ``annotations``), joined on ``image_id``:
  each row is an annotation with its image entry under ``image`` (so ``image.file_name``,
  ``caption``, ``id``), one row per caption (``captions: all``) or an image's first caption
  (``captions: first``, in ``images`` order).
"""

from __future__ import annotations

import re
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from synth.sources.errors import SourceError
from synth.sources.layout import IMAGE_SUFFIXES
from synth.sources.readers import Record, csv_records, display, jsonl_records, source_files
from synth.sources.spec import SourceSpec

_METADATA = ("metadata.jsonl", "metadata.csv")
_TEXT_EXTENSIONS = frozenset({"txt", "text", "caption", "cls"})
_KEY = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")


def read_imagefolder(spec: SourceSpec, base_dir: Path) -> Iterator[Record]:
    location = Path(spec.location(base_dir))
    files = source_files(spec, base_dir, IMAGE_SUFFIXES | {".jsonl", ".csv", ".txt"})
    metadata = [f for f in files if f.name in _METADATA]
    index = 0
    if metadata:
        for meta in metadata:
            root = spec.image_folder(base_dir) or meta.parent
            name = display(meta, base_dir)
            rows = (
                jsonl_records(meta, root, name, index)
                if meta.suffix == ".jsonl"
                else csv_records(meta, root, name)
            )
            for record in rows:
                values = dict(record.values)
                for key in list(values):
                    if key == "file_name":
                        values["image"] = values[key]
                    elif key.endswith("_file_name"):
                        values[key.removesuffix("_file_name")] = values[key]
                yield Record(index, values, root, name, record.position, record.error)
                index += 1
        return
    folder = location if location.is_dir() else location.parent
    for image in (f for f in files if f.suffix.lower() in IMAGE_SUFFIXES):
        caption_file = image.with_suffix(".txt")
        caption = (
            caption_file.read_text(encoding="utf-8").strip() if caption_file.exists() else None
        )
        rel = image.relative_to(folder).as_posix()
        values = {"image": rel, "caption": caption, "file_name": rel}
        yield Record(index, values, folder, display(image, base_dir), "")
        index += 1


def read_webdataset(spec: SourceSpec, base_dir: Path) -> Iterator[Record]:
    index = 0
    for tar_path in source_files(spec, base_dir, frozenset({".tar"})):
        root = spec.image_folder(base_dir) or tar_path.parent
        name = display(tar_path, base_dir)
        for values, error in _tar_samples(tar_path, name):
            yield Record(index, values, root, name, f"sample {values['__key__']}", error)
            index += 1


def _tar_samples(
    tar_path: Path, name: str
) -> Iterator[tuple[dict[str, Any], tuple[str, str] | None]]:
    """(values, error) per sample, members grouped by key in archive order."""
    current: dict[str, Any] = {}
    error: tuple[str, str] | None = None
    last_key = ""
    try:
        with tarfile.open(tar_path, mode="r|*") as archive:
            for member in archive:
                # tarfile keeps every header it has read (`members`, untyped): a shard holds
                # 10k+ samples, so the list would grow with the stream.
                archive.members.clear()  # type: ignore[attr-defined]
                if not member.isfile():
                    continue
                match = _KEY.match(member.name)
                if match is None:
                    continue
                key, ext = match.group(1), match.group(2).lower()
                if current and key != current["__key__"]:
                    yield current, error
                    current, error = {}, None
                if not current:
                    current = {"__key__": key, "__url__": name}
                last_key = key
                handle = archive.extractfile(member)
                data = handle.read() if handle is not None else b""
                if ext in current:
                    error = error or ("source:bad-sample", f"member {member.name} repeats .{ext}")
                    continue
                value, problem = _decode(ext, data, member.name)
                current[ext] = value
                error = error or problem
    except (tarfile.TarError, OSError, EOFError) as err:
        raise SourceError(
            name,
            f"is not a readable tar archive after sample {last_key or '(none)'}: {err}",
            fix="re-download or re-pack the shard (samples already read are kept)",
        ) from None
    if current:
        yield current, error


def _decode(ext: str, data: bytes, member: str) -> tuple[Any, tuple[str, str] | None]:
    last = ext.rsplit(".", 1)[-1]
    try:
        if last in _TEXT_EXTENSIONS:
            return data.decode("utf-8"), None
        if last == "json":
            return orjson.loads(data), None
    except UnicodeDecodeError as err:
        return None, ("source:bad-encoding", f"member {member} is not UTF-8 (byte {err.start + 1})")
    except orjson.JSONDecodeError as err:
        return None, ("source:bad-json", f"member {member} is not valid JSON ({err})")
    return data, None


def read_coco(spec: SourceSpec, base_dir: Path) -> Iterator[Record]:
    import ijson

    index = 0
    for file in source_files(spec, base_dir, frozenset({".json"})):
        root = spec.image_folder(base_dir) or file.parent
        name = display(file, base_dir)
        try:
            images = _coco_images(file)
            rows = _coco_all(file, images) if spec.captions == "all" else _coco_first(file, images)
            for position, values, error in rows:
                yield Record(index, values, root, name, position, error)
                index += 1
        except (ijson.JSONError, UnicodeDecodeError) as err:
            raise SourceError(
                name, f"is not valid COCO JSON: {err}", fix="re-export the file"
            ) from None


def _coco_images(file: Path) -> dict[Any, dict[str, Any]]:
    import ijson

    with file.open("rb") as handle:
        return {
            image.get("id"): image
            for image in ijson.items(handle, "images.item", use_float=True)
            if isinstance(image, dict)
        }


def _coco_all(
    file: Path, images: dict[Any, dict[str, Any]]
) -> Iterator[tuple[str, dict[str, Any], tuple[str, str] | None]]:
    import ijson

    with file.open("rb") as handle:
        for k, ann in enumerate(ijson.items(handle, "annotations.item", use_float=True)):
            image = images.get(ann.get("image_id")) if isinstance(ann, dict) else None
            if image is None:
                detail = f"image_id {ann.get('image_id') if isinstance(ann, dict) else None!r} is not among `images`"
                yield f"annotation {k}", {}, ("source:bad-image", detail)
            else:
                yield f"annotation {k}", {**ann, "image": image}, None


def _coco_first(
    file: Path, images: dict[Any, dict[str, Any]]
) -> Iterator[tuple[str, dict[str, Any], tuple[str, str] | None]]:
    import ijson

    first: dict[Any, dict[str, Any]] = {}
    with file.open("rb") as handle:
        for ann in ijson.items(handle, "annotations.item", use_float=True):
            if isinstance(ann, dict):
                first.setdefault(ann.get("image_id"), ann)
    for k, (image_id, image) in enumerate(images.items()):
        yield f"image {k}", {**first.get(image_id, {}), "image": image}, None
