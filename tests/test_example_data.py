"""The bundled example data loads through the sources layer with every row valid."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

from PIL import Image

from synth.contract import Reject
from synth.sources import (
    ChatRow,
    ComposeRow,
    EditRow,
    SubjectRow,
    T2IRow,
    VQARow,
    iter_source_rows,
    load_sources_file,
)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_example_sources_load_with_zero_rejects() -> None:
    sources = load_sources_file(EXAMPLES / "sources.yaml")
    assert [(s.name, s.kind, s.format) for s in sources.sources] == [
        ("photos", "t2i", "imagefolder"),
        ("photo-edits", "edit", "jsonl"),
        ("photo-subjects", "subject", "jsonl"),
        ("photo-pairs", "compose", "jsonl"),
        ("photo-qa", "vqa", "jsonl"),
        ("small-talk", "chat", "jsonl"),
    ]
    rows = {s.name: list(iter_source_rows(s, sources.base_dir)) for s in sources.sources}
    rejected = [r for items in rows.values() for r in items if isinstance(r, Reject)]
    assert rejected == []
    assert {name: len(items) for name, items in rows.items()} == {
        "photos": 17,
        "photo-edits": 30,
        "photo-subjects": 8,
        "photo-pairs": 10,
        "photo-qa": 28,
        "small-talk": 18,
    }
    kinds = {T2IRow: "photos", EditRow: "photo-edits", SubjectRow: "photo-subjects"}
    kinds |= {ComposeRow: "photo-pairs", VQARow: "photo-qa", ChatRow: "small-talk"}
    for row_type, name in kinds.items():
        assert all(isinstance(r, row_type) for r in rows[name]), name
        ids = [r.row_id for r in rows[name]]  # type: ignore[union-attr]
        assert len(set(ids)) == len(ids), f"{name}: row ids repeat"

    photos = {r.row_id: r for r in rows["photos"] if isinstance(r, T2IRow)}
    for edit in rows["photo-edits"]:
        assert isinstance(edit, EditRow)
        assert edit.source_caption and edit.target_caption and edit.instruction
        assert edit.source_image != edit.target_image, edit.row_id
        assert edit.source_image in {p.image for p in photos.values()}, edit.row_id
    for subject in rows["photo-subjects"]:
        assert isinstance(subject, SubjectRow) and subject.row_id in photos
    # Each composite pairs two different subject photos, captioned as the subject rows are, and
    # is a new picture of its own, at most 512 px on its longest side like every example image:
    # one scene, the first photo with the second's subject placed into it (checked below).
    subjects = {r.image: r.caption for r in rows["photo-subjects"] if isinstance(r, SubjectRow)}
    for pair in rows["photo-pairs"]:
        assert isinstance(pair, ComposeRow)
        assert pair.first_image != pair.second_image, pair.row_id
        assert subjects[pair.first_image] == pair.first_caption, pair.row_id
        assert subjects[pair.second_image] == pair.second_caption, pair.row_id
        assert pair.target_image not in (pair.first_image, pair.second_image), pair.row_id
        assert pair.target_caption, pair.row_id
        assert max(Image.open(io.BytesIO(pair.target_image)).size) <= 512, pair.row_id
    chats = [r for r in rows["small-talk"] if isinstance(r, ChatRow)]
    languages = Counter(any("\u4e00" <= ch <= "\u9fff" for ch in c.turns[0][1]) for c in chats)
    assert languages[True] >= 3 and languages[False] >= 10  # Chinese and English chats


def test_compositions_are_one_scene_as_their_captions_say() -> None:
    """A composite is the first photo with the second subject cut out and placed into it (not
    a collage): same size as the first photo, changed only where the subject was placed, and
    its caption names both subjects and no collage layout."""
    import numpy as np

    from synth.stages.words import content_words

    sources = load_sources_file(EXAMPLES / "sources.yaml")
    (spec,) = [s for s in sources.sources if s.kind == "compose"]
    pairs = [r for r in iter_source_rows(spec, sources.base_dir) if isinstance(r, ComposeRow)]
    assert len(pairs) == 10
    for pair in pairs:
        first = Image.open(io.BytesIO(pair.first_image))
        target = Image.open(io.BytesIO(pair.target_image))
        assert target.size == first.size, pair.row_id
        a = np.asarray(first.convert("L"), dtype=float)
        b = np.asarray(target.convert("L"), dtype=float)
        changed = np.abs(a - b) > 40  # JPEG noise stays well under this
        assert 0.002 < changed.mean() < 0.25, (pair.row_id, changed.mean())
        caption = pair.target_caption.lower()
        for banned in ("side by side", "two photos", "one above the other", "framed picture"):
            assert banned not in caption, (pair.row_id, banned)
        for subject in (pair.first_caption, pair.second_caption):
            assert content_words(subject) & content_words(caption), (pair.row_id, subject)


def test_example_data_stays_small() -> None:
    data = EXAMPLES / "data"
    total = sum(f.stat().st_size for f in data.rglob("*") if f.is_file())
    assert total < 10 * 2**20, f"examples/data is {total / 2**20:.1f} MiB"
    licence = (data / "LICENSE.md").read_text()
    assert licence.count("| `photos/") == 17 and "## Composites" in licence


def test_build_data_remakes_the_committed_files(tmp_path: Path) -> None:
    """The committed data is what build_data.py makes: same text, same images and sizes (JPEG
    bytes may differ across Pillow versions, so images are compared by name and size)."""
    import importlib.util

    import pytest
    import yaml

    for package in ("skimage", "sklearn", "matplotlib"):
        if importlib.util.find_spec(package) is None:
            pytest.skip(f"{package} is not installed (the `examples` extra)")
    spec = importlib.util.spec_from_file_location("build_data", EXAMPLES / "build_data.py")
    assert spec is not None and spec.loader is not None
    build_data = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_data)
    plan = yaml.safe_load((EXAMPLES / "build_data.yaml").read_text("utf-8"))
    build_data.build(plan, tmp_path)

    committed = EXAMPLES / "data"
    made = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert made == sorted(p.relative_to(committed) for p in committed.rglob("*") if p.is_file())
    for rel in made:
        if rel.suffix == ".jpg":
            assert Image.open(tmp_path / rel).size == Image.open(committed / rel).size, rel
        else:
            assert (tmp_path / rel).read_text() == (committed / rel).read_text(), rel


def test_synth_sources_command_reads_the_examples() -> None:
    from typer.testing import CliRunner

    from synth.cli import app

    result = CliRunner().invoke(app, ["sources", str(EXAMPLES / "sources.yaml")])
    assert result.exit_code == 0, result.output
    for name, count in (
        ("photos", 17),
        ("photo-edits", 30),
        ("photo-pairs", 10),
        ("small-talk", 18),
    ):
        line = next(ln for ln in result.output.splitlines() if f" {name} " in ln)
        assert f" {count} " in line, line
