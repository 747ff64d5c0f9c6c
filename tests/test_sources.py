"""The sources layer over real files: Parquet (raw bytes and ``datasets`` Image structs), JSONL
with relative image paths, image folders, ``datasets`` folders; column mappings of MagicBrush and
InstructPix2Pix; sources-file errors that name the line; bad rows as rejects."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

# Everything here is local; never let `datasets` reach for the Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from synth.contract import Reject
from synth.sources import (
    ChatRow,
    ComposeRow,
    EditRow,
    SourceSpec,
    SubjectRow,
    T2IRow,
    VQARow,
    iter_source_rows,
    load_sources_file,
)


def encoded(color: str, fmt: str = "PNG", size: tuple[int, int] = (16, 12)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format=fmt)
    return buffer.getvalue()


def sources_yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sources.yaml"
    path.write_text(text)
    return path


def load_one(tmp_path: Path, entry: str) -> list[object]:
    spec_file = sources_yaml(tmp_path, "sources:\n" + entry)
    sources = load_sources_file(spec_file)
    return list(iter_source_rows(sources.sources[0], sources.base_dir))


def rejects(items: list[object]) -> list[tuple[str, str]]:
    return [(r.reason, r.source_row) for r in items if isinstance(r, Reject)]


# --------------------------------------------------------------------------------------------
# Formats


def test_parquet_with_raw_bytes_streams_rows_and_rejects_bad_ones(tmp_path: Path) -> None:
    jpeg = encoded("green", "JPEG", (64, 48))
    table = pa.table(
        {
            "image": [encoded("red"), encoded("blue"), b"", jpeg[: len(jpeg) // 2], jpeg],
            "caption": ["a red square", "", "nothing", "half a picture", "  a green field  "],
        }
    )
    (tmp_path / "data").mkdir()
    pq.write_table(table, tmp_path / "data" / "t2i.parquet", row_group_size=2)
    items = load_one(tmp_path, "  - {name: t, kind: t2i, path: data/t2i.parquet}\n")

    assert [type(i) for i in items] == [T2IRow, Reject, Reject, Reject, T2IRow]
    first, last = items[0], items[4]
    assert isinstance(first, T2IRow) and isinstance(last, T2IRow)
    assert first.image == table["image"][0].as_py() and first.caption == "a red square"
    assert (last.row_id, last.caption, last.ref) == ("4", "a green field", "t:4")
    assert rejects(items) == [
        ("source:no-caption", "1"),
        ("source:bad-image", "2"),
        ("source:bad-image", "3"),
    ]
    zero, truncated = items[2], items[3]
    assert isinstance(zero, Reject) and "zero-size" in zero.detail
    assert isinstance(truncated, Reject) and "not a decodable image" in truncated.detail
    assert zero.stage == "source" and zero.source == "t"
    assert json.loads(zero.payload) == {"caption": "nothing"}  # the non-image fields

    spec = load_sources_file(tmp_path / "sources.yaml").sources[0]
    resumed = list(iter_source_rows(spec, tmp_path, start=3))
    assert [(type(i), i.source_row if isinstance(i, Reject) else i.row_id) for i in resumed] == [
        (Reject, "3"),
        (T2IRow, "4"),
    ]


def test_parquet_with_datasets_image_structs_and_magicbrush_columns(tmp_path: Path) -> None:
    import datasets

    features = datasets.Features(
        {
            "img_id": datasets.Value("string"),
            "turn_index": datasets.Value("int32"),
            "source_img": datasets.Image(),
            "mask_img": datasets.Image(),
            "instruction": datasets.Value("string"),
            "target_img": datasets.Image(),
        }
    )
    rows = {
        "img_id": ["327726", "242679", "000001"],
        "turn_index": [1, 1, 2],
        "source_img": [{"bytes": encoded(c), "path": None} for c in ("red", "teal", "gray")],
        "mask_img": [{"bytes": encoded("white"), "path": None}] * 3,
        "instruction": ["make the sky pink", "put a hat on the dog", "   "],
        "target_img": [{"bytes": encoded(c), "path": None} for c in ("pink", "olive", "gray")],
    }
    datasets.Dataset.from_dict(rows, features=features).to_parquet(tmp_path / "magicbrush.parquet")
    items = load_one(
        tmp_path,
        "  - name: mb\n    kind: edit\n    path: magicbrush.parquet\n"
        "    columns: {source_image: source_img, target_image: target_img, id: img_id}\n",
    )

    edits = [i for i in items if isinstance(i, EditRow)]
    assert [e.row_id for e in edits] == ["327726", "242679"]
    assert edits[0].source_image == encoded("red") and edits[0].target_image == encoded("pink")
    assert (edits[0].instruction, edits[0].source_caption, edits[0].target_caption) == (
        "make the sky pink",
        "",
        "",
    )
    assert edits[1].target_record().source_row == "242679"
    assert rejects(items) == [("source:empty-instruction", "000001")]


def test_instructpix2pix_columns_with_image_structs_written_by_pyarrow(tmp_path: Path) -> None:
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table(
        {
            "original_prompt": ["a photo of a cabin", "a bowl of fruit"],
            "edit_prompt": ["make it winter", "turn the apples blue"],
            "edited_prompt": ["a photo of a cabin in winter", "a bowl of fruit with blue apples"],
            "input_image": pa.array(
                [{"bytes": encoded("brown"), "path": None}, {"bytes": None, "path": None}],
                type=struct,
            ),
            "edited_image": pa.array(
                [{"bytes": encoded("white"), "path": None}, {"bytes": encoded("blue")}],
                type=struct,
            ),
        }
    )
    pq.write_table(table, tmp_path / "ip2p.parquet")
    items = load_one(
        tmp_path,
        "  - name: ip2p\n    kind: edit\n    path: ip2p.parquet\n    columns:\n"
        "      source_image: input_image\n      source_caption: original_prompt\n"
        "      instruction: edit_prompt\n      target_image: edited_image\n"
        "      target_caption: edited_prompt\n",
    )

    edit = items[0]
    assert isinstance(edit, EditRow)
    assert edit.source_caption == "a photo of a cabin"
    assert edit.target_caption == "a photo of a cabin in winter"
    assert edit.instruction == "make it winter"
    assert edit.source_record().caption == "a photo of a cabin"
    bad = items[1]
    assert isinstance(bad, Reject) and bad.reason == "source:bad-image"
    assert "input_image" in bad.detail and "neither bytes nor a path" in bad.detail
    assert json.loads(bad.payload)["edit_prompt"] == "turn the apples blue"


def test_jsonl_with_relative_image_paths_and_a_broken_line(tmp_path: Path) -> None:
    (tmp_path / "data" / "img").mkdir(parents=True)
    (tmp_path / "data" / "img" / "a.png").write_bytes(encoded("red"))
    (tmp_path / "data" / "img" / "empty.png").write_bytes(b"")
    lines = [
        {"image": "img/a.png", "question": "What colour is it?", "answer": "Red."},
        {"image": "img/missing.png", "question": "Is it there?", "answer": "No."},
        "{not json",
        {"image": "img/a.png", "question": "", "answer": "Red."},
        {"image": "img/a.png", "question": "Is it square?", "answer": None},
        {"image": "img/empty.png", "question": "Anything?", "answer": "No."},
        "",
        {"image": str(tmp_path / "data" / "img" / "a.png"), "question": "Red?", "answer": "Yes."},
    ]
    text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines)
    (tmp_path / "data" / "vqa.jsonl").write_text(text + "\n")
    items = load_one(tmp_path, "  - {name: q, kind: vqa, path: data/vqa.jsonl}\n")

    good = [i for i in items if isinstance(i, VQARow)]
    assert [(g.row_id, g.answer) for g in good] == [("0", "Red."), ("6", "Yes.")]
    assert good[0].image == encoded("red")
    assert rejects(items) == [
        ("source:bad-image", "1"),
        ("source:bad-json", "2"),
        ("source:no-question", "3"),
        ("source:no-answer", "4"),
        ("source:bad-image", "5"),
    ]
    assert "missing.png" in next(r.detail for r in items if isinstance(r, Reject))


def test_compose_rows_from_parquet_with_a_subjects200k_like_column_mapping(
    tmp_path: Path,
) -> None:
    """Two subjects and the image of both, under the data's own column names; a row missing a
    subject's caption or holding a broken image is a reject; the target caption is optional."""
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])

    def images(*colors: str | None) -> pa.Array:
        return pa.array(
            [{"bytes": encoded(c) if c else b"broken", "path": None} for c in colors], type=struct
        )

    table = pa.table(
        {
            "uid": ["p0", "p1", "p2", "p3"],
            "subject_1": images("white", "orange", "gray", "white"),
            "subject_1_text": ["a white cat", "an orange fox", "a grey owl", ""],
            "subject_2": images("gold", "green", None, "gold"),
            "subject_2_text": ["a golden retriever", "a green frog", "a grey mouse", "a dog"],
            "composite": images("silver", "lime", "gray", "silver"),
            "composite_text": ["a white cat beside a golden retriever", None, "", "x"],
        }
    )
    pq.write_table(table, tmp_path / "pairs.parquet")
    mapping = (
        "{id: uid, first_image: subject_1, first_caption: subject_1_text, second_image: "
        "subject_2, second_caption: subject_2_text, target_image: composite, "
        "target_caption: composite_text}"
    )
    items = load_one(
        tmp_path, f"  - {{name: x2i, kind: compose, path: pairs.parquet, columns: {mapping}}}\n"
    )

    rows = [i for i in items if isinstance(i, ComposeRow)]
    assert [(r.row_id, r.first_caption, r.second_caption, r.target_caption) for r in rows] == [
        ("p0", "a white cat", "a golden retriever", "a white cat beside a golden retriever"),
        ("p1", "an orange fox", "a green frog", ""),  # no target caption: still a row
    ]
    first = rows[0]
    assert (first.first_image, first.second_image) == (encoded("white"), encoded("gold"))
    assert first.target_image == encoded("silver")
    records = [first.first_record(), first.second_record(), first.target_record()]
    assert [(r.source, r.source_row, r.caption) for r in records] == [
        ("x2i", "p0", "a white cat"),
        ("x2i", "p0", "a golden retriever"),
        ("x2i", "p0", "a white cat beside a golden retriever"),
    ]
    assert rejects(items) == [("source:bad-image", "p2"), ("source:no-caption", "p3")]
    bad_image, no_caption = (i for i in items if isinstance(i, Reject))
    assert "'subject_2' (second_image)" in bad_image.detail
    assert "'subject_1_text' (first_caption)" in no_caption.detail
    assert set(json.loads(no_caption.payload)) == {
        "uid",
        "subject_1_text",
        "subject_2_text",
        "composite_text",
    }  # the text fields, never the image bytes

    # A column the kind requires and the data lacks is a configuration error, before any row.
    pq.write_table(table.drop(["subject_2_text"]), tmp_path / "pairs.parquet")
    sources = load_sources_file(tmp_path / "sources.yaml")
    with pytest.raises(ValueError, match=r"no column for second_caption <- 'subject_2_text'"):
        list(iter_source_rows(sources.sources[0], sources.base_dir))


def test_compose_rows_from_jsonl_with_relative_paths(tmp_path: Path) -> None:
    for name, color in (("cat", "white"), ("cup", "red"), ("both", "pink")):
        (tmp_path / f"{name}.png").write_bytes(encoded(color))
    (tmp_path / "empty.png").write_bytes(b"")
    pair = {"first_image": "cat.png", "first_caption": "a cat", "second_image": "cup.png",
            "second_caption": "a red cup", "target_image": "both.png",
            "target_caption": "a cat beside a red cup"}  # fmt: skip
    lines = [
        pair,
        {**pair, "second_caption": "  "},  # source:no-caption
        {**pair, "target_image": "empty.png"},  # source:bad-image (zero bytes)
        {**pair, "first_image": "nowhere.png"},  # source:bad-image (missing file)
        {k: v for k, v in pair.items() if k != "target_caption"},
    ]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    items = load_one(tmp_path, "  - {name: pairs, kind: compose, path: pairs.jsonl}\n")

    assert [type(i) for i in items] == [ComposeRow, Reject, Reject, Reject, ComposeRow]
    good, last = items[0], items[4]
    assert isinstance(good, ComposeRow) and isinstance(last, ComposeRow)
    assert good.target_image == encoded("pink") and good.target_caption == pair["target_caption"]
    assert last.target_caption == ""
    assert rejects(items) == [
        ("source:no-caption", "1"),
        ("source:bad-image", "2"),
        ("source:bad-image", "3"),
    ]
    details = [i.detail for i in items if isinstance(i, Reject)]
    assert "(second_caption) is empty" in details[0] and "zero-size" in details[1]
    assert "nowhere.png" in details[2]


def test_imagefolder_with_datasets_metadata_jsonl(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    (folder / "cat.png").write_bytes(encoded("orange"))
    (folder / "sub" / "dog.jpg").write_bytes(encoded("brown", "JPEG"))
    meta = [
        {"file_name": "sub/dog.jpg", "text": "a brown dog"},
        {"file_name": "cat.png", "text": "an orange cat"},
        {"file_name": "cat.png", "text": ""},
    ]
    (folder / "metadata.jsonl").write_text("\n".join(json.dumps(m) for m in meta))
    items = load_one(
        tmp_path, "  - {name: s, kind: subject, path: photos, columns: {caption: text}}\n"
    )

    assert [(i.row_id, i.caption) for i in items if isinstance(i, SubjectRow)] == [
        ("0", "a brown dog"),
        ("1", "an orange cat"),
    ]
    assert rejects(items) == [("source:no-caption", "2")]


def test_imagefolder_with_caption_files_beside_images(tmp_path: Path) -> None:
    folder = tmp_path / "pics"
    folder.mkdir()
    for stem, color in (("b", "blue"), ("a", "red"), ("c", "lime")):
        (folder / f"{stem}.png").write_bytes(encoded(color))
    (folder / "a.txt").write_text("a red tile\n")
    (folder / "b.txt").write_text("a blue tile")
    items = load_one(tmp_path, "  - {name: p, kind: t2i, path: pics, columns: {id: file_name}}\n")

    assert [(i.row_id, i.caption) for i in items if isinstance(i, T2IRow)] == [
        ("a.png", "a red tile"),
        ("b.png", "a blue tile"),
    ]
    assert rejects(items) == [("source:no-caption", "c.png")]


def test_datasets_folders_saved_to_disk_and_parquet_dirs_through_hf(tmp_path: Path) -> None:
    import datasets

    features = datasets.Features({"image": datasets.Image(), "caption": datasets.Value("string")})
    data = {
        "image": [{"bytes": encoded(c), "path": None} for c in ("red", "navy")],
        "caption": ["a red card", "a navy card"],
    }
    ds = datasets.Dataset.from_dict(data, features=features)
    ds.save_to_disk(str(tmp_path / "saved"))
    datasets.DatasetDict({"validation": ds}).save_to_disk(str(tmp_path / "saved_dict"))
    (tmp_path / "pq").mkdir()
    ds.to_parquet(str(tmp_path / "pq" / "train-00000.parquet"))

    spec_file = sources_yaml(
        tmp_path,
        "sources:\n"
        "  - {name: saved, kind: t2i, path: saved}\n"
        "  - {name: dict, kind: t2i, path: saved_dict, split: validation}\n"
        "  - {name: pqdir, kind: t2i, path: pq, format: hf}\n"
        "  - {name: pqdir-direct, kind: t2i, path: pq}\n",
    )
    sources = load_sources_file(spec_file)
    assert [s.format for s in sources.sources] == ["hf", "hf", "hf", "parquet"]
    for spec in sources.sources:
        items = list(iter_source_rows(spec, sources.base_dir))
        assert all(isinstance(i, T2IRow) for i in items), spec.name
        assert [(i.row_id, i.caption, i.image) for i in items] == [  # type: ignore[union-attr]
            ("0", "a red card", encoded("red")),
            ("1", "a navy card", encoded("navy")),
        ], spec.name

    wrong = SourceSpec(name="x", kind="t2i", path="saved_dict", format="hf", split="train")
    with pytest.raises(
        ValueError, match=r"has no split 'train' \(splits: \['validation'\]\); set `split:`"
    ):
        list(iter_source_rows(wrong, tmp_path))


def test_chat_rows_from_messages_sharegpt_and_single_exchanges(tmp_path: Path) -> None:
    lines = [
        {
            "turns": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"},
            ]
        },
        {"turns": [{"from": "human", "value": "2+2?"}, {"from": "gpt", "value": "4"}]},
        {"user": "你好", "assistant": "你好！有什么可以帮你？"},
        {"turns": [{"role": "user", "content": "only me"}]},
        {"turns": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}]},
        {"user": "no reply"},
    ]
    (tmp_path / "chat.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    items = load_one(tmp_path, "  - {name: c, kind: chat, path: chat.jsonl}\n")

    chats = [i for i in items if isinstance(i, ChatRow)]
    assert [c.turns for c in chats] == [
        (("user", "Hi"), ("assistant", "Hello!")),
        (("user", "2+2?"), ("assistant", "4")),
        (("user", "你好"), ("assistant", "你好！有什么可以帮你？")),
    ]
    assert rejects(items) == [("source:bad-turns", str(i)) for i in (3, 4, 5)]


def test_memory_stays_flat_while_streaming_a_large_parquet(tmp_path: Path) -> None:
    blob = os.urandom(64 * 1024)
    n = 480  # ~30 MB of image column; rows stream by batches of 64
    table = pa.table({"image": [blob] * n, "caption": [f"row {i}" for i in range(n)]})
    pq.write_table(table, tmp_path / "big.parquet", row_group_size=64)
    del table
    spec = SourceSpec(name="big", kind="t2i", path="big.parquet", format="parquet")
    baseline = pa.total_allocated_bytes()
    peak = count = 0
    for item in iter_source_rows(spec, tmp_path):
        assert isinstance(item, Reject) and item.reason == "source:bad-image"
        peak = max(peak, pa.total_allocated_bytes() - baseline)
        count += 1
    assert count == n
    assert peak < n * len(blob) / 4, f"held {peak / 2**20:.1f} MiB while streaming"


# --------------------------------------------------------------------------------------------
# The sources file


def test_sources_file_resolves_paths_and_formats(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.jsonl").write_text("")
    pq.write_table(pa.table({"a": [1]}), tmp_path / "d" / "y.parquet")
    spec_file = sources_yaml(
        tmp_path,
        "sources:\n"
        "  - {name: a, kind: chat, path: d/x.jsonl, license: CC0, attribution: me}\n"
        "  - {name: b, kind: t2i, path: d/y.parquet, columns: {image: img}}\n"
        "  - {name: c, kind: edit, path: some-org/instructpix2pix}\n",
    )
    sources = load_sources_file(spec_file)
    assert sources.base_dir == tmp_path.resolve()
    assert [(s.name, s.format) for s in sources.sources] == [
        ("a", "jsonl"),
        ("b", "parquet"),
        ("c", "hf"),
    ]
    assert sources.get("b").column("image") == "img" and sources.get("b").column("caption") == (
        "caption"
    )
    assert sources.get("c").location(sources.base_dir) == "some-org/instructpix2pix"
    assert [s.name for s in sources.of_kind("t2i", "chat")] == ["a", "b"]
    with pytest.raises(
        ValueError,
        match=r"no column for image <- 'img', caption <- 'caption'; its columns are \['a'\]",
    ):
        list(iter_source_rows(sources.get("b"), sources.base_dir))


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "sources:\n  - name: t\n    kind: t2i\n    path: x.jsonl\n    colums: {image: i}\n",
            "sources.yaml line 5: unknown key 'colums' (known: name, kind, path, format, "
            "columns, split, subset, image_root, crop, max_chars, pairs, captions, license, "
            "attribution)",
        ),
        (
            "sources:\n  - name: t\n    kind: txt2img\n    path: x.jsonl\n",
            "sources.yaml line 3: unknown kind 'txt2img' (known: t2i, edit, subject, compose, "
            "vqa, chat)",
        ),
        (
            "sources:\n  - name: t\n    kind: t2i\n    path: x.jsonl\n    format: csv\n",
            "sources.yaml line 5: unknown format 'csv' (known: parquet, jsonl, json, imagefolder, "
            "webdataset, coco, hf)",
        ),
        (
            "sources:\n  - name: t\n    kind: edit\n    path: x.jsonl\n    columns:\n"
            "      source_image: a\n      instrucion: b\n",
            "sources.yaml line 7: unknown column field 'instrucion' for kind edit (known: "
            "source_image, source_caption, instruction, target_image, target_caption, chain, "
            "turn, id)",
        ),
        (
            "sources:\n  - name: t\n    kind: compose\n    path: x.jsonl\n    columns:\n"
            "      image_a: a\n",
            "sources.yaml line 6: unknown column field 'image_a' for kind compose (known: "
            "first_image, first_caption, second_image, second_caption, target_image, "
            "target_caption, id)",
        ),
        (
            "sources:\n  - name: t\n    kind: t2i\n    path: nowhere.parquet\n",
            "sources.yaml line 4: path 'nowhere.parquet' does not exist",
        ),
        (
            "sources:\n  - {name: t, kind: t2i, path: x.jsonl}\n  - name: t\n"
            "    kind: vqa\n    path: x.jsonl\n",
            "sources.yaml line 3: source name 't' is used twice",
        ),
        (
            "sources:\n  - name: t\n    kind: t2i\n\n    kind: vqa\n    path: x.jsonl\n",
            "sources.yaml line 5: key 'kind' appears twice",
        ),
        (
            "sources:\n  - name: t\n    kind: t2i\n",
            "sources.yaml line 2: missing required key 'path'",
        ),
        ("source:\n  - {name: t, kind: t2i, path: x.jsonl}\n", "line 1: unknown key 'source'"),
    ],
)
def test_sources_file_errors_name_the_line(tmp_path: Path, body: str, expected: str) -> None:
    (tmp_path / "x.jsonl").write_text("")
    with pytest.raises(ValueError) as err:
        load_sources_file(sources_yaml(tmp_path, body))
    assert expected in str(err.value)


def test_sources_file_reports_every_problem_at_once(tmp_path: Path) -> None:
    body = "sources:\n  - name: a\n    kind: t2\n    path: x.jsonl\n  - name: b\n    kin: t2i\n"
    with pytest.raises(ValueError) as err:
        load_sources_file(sources_yaml(tmp_path, body))
    message = str(err.value)
    assert "problem(s)" in message
    for expected in ("line 3: unknown kind 't2'", "line 6: unknown key 'kin'", "line 5: missing"):
        assert expected in message


def test_synth_sources_command_reports_rejects_and_config_errors(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from synth.cli import app

    (tmp_path / "c.jsonl").write_text('{"user": "hi", "assistant": "hello"}\n{"user": "hi"}\n')
    good = sources_yaml(tmp_path, "sources:\n  - {name: c, kind: chat, path: c.jsonl}\n")
    result = CliRunner().invoke(app, ["sources", str(good)])
    assert result.exit_code == 1
    assert "REJECT c:1 source:bad-turns" in result.output

    bad = sources_yaml(tmp_path, "sources:\n  - {name: c, kind: chats, path: c.jsonl}\n")
    result = CliRunner().invoke(app, ["sources", str(bad)])
    assert result.exit_code == 2
    assert "line 2: unknown kind 'chats'" in result.output


def test_a_hub_like_path_under_an_existing_folder_is_a_typo(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    body = "sources:\n  - {name: t, kind: t2i, path: data/photoz}\n"
    with pytest.raises(ValueError, match=r"line 2: path 'data/photoz' does not exist.*format: hf"):
        load_sources_file(sources_yaml(tmp_path, body))
