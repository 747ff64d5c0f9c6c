"""The gallery (examples/sources/): each file reads its tiny copy of a public release's layout
(tests/data/formats/) with the expected rows and no rejects, and a bad row of each kind,
written the way that format writes it, comes out as a reject with its reason and location."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from synth.contract import Reject
from synth.sources import (
    ChatRow,
    EditChain,
    EditRow,
    SubjectRow,
    T2IRow,
    VQARow,
    iter_source_rows,
    load_sources_file,
)

ROOT = Path(__file__).resolve().parent.parent
GALLERY = ROOT / "examples" / "sources"
FORMATS = ROOT / "tests" / "data" / "formats"

# file -> (kind, detected format, items, row types)
EXPECTED = {
    "llava": ("vqa", "json", 5, {VQARow}),
    "sharegpt": ("chat", "json", 4, {ChatRow}),
    "openai_messages": ("chat", "jsonl", 4, {ChatRow}),
    "magicbrush": ("edit", "parquet", 3, {EditChain, EditRow}),
    "coco": ("t2i", "coco", 3, {T2IRow}),
    "webdataset": ("t2i", "webdataset", 4, {T2IRow}),
    "subjects200k": ("subject", "parquet", 3, {SubjectRow}),
    "omnigen_x2i": ("edit", "jsonl", 3, {EditRow}),
    "imagefolder": ("t2i", "imagefolder", 3, {T2IRow}),
}


def read(gallery_file: Path) -> list[object]:
    sources = load_sources_file(gallery_file)
    assert len(sources.sources) == 1, "a gallery file has one source"
    return list(iter_source_rows(sources.sources[0], sources.base_dir))


def test_the_gallery_has_one_file_per_public_layout() -> None:
    assert sorted(p.stem for p in GALLERY.glob("*.yaml")) == sorted(EXPECTED)
    for path in GALLERY.glob("*.yaml"):
        text = path.read_text()
        assert "Layout: https://" in text and "Mapping:" in text, f"{path.name} cites no layout"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_gallery_file_reads_its_layout_with_no_rejects(name: str) -> None:
    kind, fmt, count, types = EXPECTED[name]
    spec = load_sources_file(GALLERY / f"{name}.yaml").sources[0]
    assert (spec.kind, spec.format) == (kind, fmt)
    items = read(GALLERY / f"{name}.yaml")
    assert [i for i in items if isinstance(i, Reject)] == []
    assert len(items) == count and {type(i) for i in items} == types
    ids = [i.row_id for i in items]  # type: ignore[attr-defined]
    assert len(set(ids)) == len(ids)


def test_llava_conversations_become_qa_rows_with_the_image_attached() -> None:
    rows = read(GALLERY / "llava.yaml")
    first = rows[0]
    assert isinstance(first, VQARow)
    assert (first.row_id, first.question) == (
        "0#1",
        "What colour is the long shape in the picture?",
    )
    image = FORMATS / "llava/playground/data/coco/train2017/000000033471.jpg"
    assert first.image == image.read_bytes()
    questions = [r.question for r in rows if isinstance(r, VQARow)]
    assert not any("<image>" in q for q in questions)
    assert (
        questions[2]
        == "Is the background dark?\nAnswer the question using a single word or phrase."
    )
    assert questions[4] == "What shape is drawn here?"  # `<image>` at the end, removed too
    assert [r.row_id for r in rows] == ["0#1", "0#2", "1#1", "1#2", "2#1"]  # type: ignore[attr-defined]


def test_sharegpt_and_openai_conversations_as_chats() -> None:
    sharegpt = {r.row_id: r.turns for r in read(GALLERY / "sharegpt.yaml")}  # type: ignore[attr-defined]
    assert sharegpt["i6IyJda_0"] == (
        ("user", "What is a good name for a grey cat?"),
        ("assistant", "Smokey, Ash or Pebble all suit a grey cat."),
        ("user", "One more, please."),
        ("assistant", "How about Graphite?"),
    )  # system dropped, chatgpt and bing are the assistant
    # A part opening with a gpt turn loses it; an unanswered last question is dropped.
    assert sharegpt["i6IyJda_1"] == (
        ("user", "How do I boil an egg?"),
        (
            "assistant",
            "Lower it into boiling water for about nine minutes, then cool it in cold water.",
        ),
    )
    chats = [r.turns for r in read(GALLERY / "openai_messages.yaml")]  # type: ignore[attr-defined]
    assert chats[1] == (("user", 'Give me a synonym for\n"happy".'), ("assistant", "Cheerful."))
    assert chats[2] == (
        ("user", "What is the weather like in Paris today?"),
        ("assistant", "It is 18 °C and cloudy in Paris today."),
    )  # the tool call and the tool's result are skipped


def test_magicbrush_sessions_read_as_chains_of_real_consecutive_edits() -> None:
    items = read(GALLERY / "magicbrush.yaml")
    by_id = {i.row_id: i for i in items}  # type: ignore[attr-defined]
    assert sorted(by_id) == ["242679#1-3", "327726#1", "93841#1-2"]
    chain = by_id["242679#1-3"]
    assert isinstance(chain, EditChain) and [s.turn for s in chain.steps] == [1, 2, 3]
    assert [s.instruction for s in chain.steps] == [
        "put a red square in the middle",
        "add a yellow sun in the corner",
        "make the ground green",
    ]
    for before, after in zip(chain.steps, chain.steps[1:], strict=False):
        assert after.source_image == before.target_image  # each edit works on the last output
    assert {s.row_id for s in chain.steps} == {"242679#1", "242679#2", "242679#3"}
    single = by_id["327726#1"]
    assert isinstance(single, EditRow) and single.instruction == "make the ball orange"


def test_coco_captions_joined_to_their_images() -> None:
    rows = read(GALLERY / "coco.yaml")
    assert [(r.row_id, r.caption) for r in rows] == [  # type: ignore[attr-defined]
        ("397133", "A yellow sun above a strip of green grass."),
        ("37777", "A blue square in the middle of a white page."),
        ("252219", "An orange triangle on a grey background."),
    ]
    first = rows[0]
    assert isinstance(first, T2IRow)
    assert first.image == (FORMATS / "coco/train2017/000000397133.jpg").read_bytes()


def test_webdataset_samples_by_key_with_sidecars_ignored() -> None:
    rows = read(GALLERY / "webdataset.yaml")
    assert [(r.row_id, r.caption) for r in rows] == [  # type: ignore[attr-defined]
        ("000000000", "a red apple on a white table"),
        ("000000001", "a green triangle road sign"),
        ("000000003", "a blue square window at night"),  # 000000002 failed to download
        ("000000004", "an orange sun setting over the sea"),
    ]


def test_subjects200k_left_view_cropped_with_its_description() -> None:
    rows = read(GALLERY / "subjects200k.yaml")
    first = rows[0]
    assert isinstance(first, SubjectRow)
    assert first.caption == "A red ceramic teapot stands alone on a light blue backdrop."
    with Image.open(io.BytesIO(first.image)) as im:
        assert (im.format, im.size) == ("JPEG", (512, 512))
        # The 8 px white border is gone: the corner is the view's background.
        assert (
            max(abs(a - b) for a, b in zip(im.getpixel((2, 2)), (150, 200, 240), strict=True)) < 12
        )


def test_omnigen_placeholders_removed_and_paths_under_the_image_root() -> None:
    rows = read(GALLERY / "omnigen_x2i.yaml")
    assert [r.instruction for r in rows] == [  # type: ignore[attr-defined]
        "The umbrella should be red.",
        "Turn the daytime sky in into night.",
        "Find the tree in the picture and hang a yellow lantern on it.",
    ]
    first = rows[0]
    assert isinstance(first, EditRow)
    assert first.source_image == (FORMATS / "omnigen_x2i/images/edit_source_1.png").read_bytes()


def test_imagefolder_split_folders_read_by_split(tmp_path: Path) -> None:
    rows = read(GALLERY / "imagefolder.yaml")
    assert [r.caption for r in rows] == [  # type: ignore[attr-defined]
        "a yellow star-like triangle on blue",
        "a red ball on grass",
        "a black square on white paper",
    ]
    test_split = tmp_path / "test.yaml"
    test_split.write_text(
        f"sources:\n  - {{name: t, kind: t2i, path: {FORMATS / 'imagefolder'}, split: test, "
        "columns: {caption: text}}\n"
    )
    assert [r.caption for r in read(test_split)] == ["a purple circle on grey"]  # type: ignore[attr-defined]


# --------------------------------------------------------------------------------------------
# A bad row of each kind, written into a copy of the layout


def _append_json_item(file: Path, item: object) -> None:
    rows = json.loads(file.read_text())
    file.write_text(json.dumps([*rows, item]))


def _bad_llava(root: Path) -> None:
    _append_json_item(root / "llava/playground/data/llava_v1_5_mix665k.json", {
        "id": "9", "image": "coco/train2017/000000999999.jpg",
        "conversations": [{"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A cat."}],
    })  # fmt: skip


def _bad_sharegpt(root: Path) -> None:
    _append_json_item(root / "sharegpt/ShareGPT_V3_unfiltered_cleaned_split.json", {
        "id": "zzz_0", "conversations": [{"from": "narrator", "value": "Once upon a time"}, {"from": "gpt", "value": "..."}],
    })  # fmt: skip


def _bad_openai(root: Path) -> None:
    with (root / "openai_messages/train.jsonl").open("ab") as handle:
        handle.write(b'{"messages": [{"role": "user", "content": "caf\xe9?"}]}\n')


def _bad_magicbrush(root: Path) -> None:
    table = pq.read_table(root / "magicbrush/data/train-00000-of-00001-a1b2c3d4.parquet")
    row = table.slice(3, 1).to_pylist()[0] | {"img_id": "555", "turn_index": 1, "instruction": " "}
    import pyarrow as pa

    pq.write_table(
        pa.Table.from_pylist([row], schema=table.schema),
        root / "magicbrush/data/train-00001-of-00002-f0f0f0f0.parquet",
    )


def _bad_coco(root: Path) -> None:
    file = root / "coco/annotations/captions_train2017.json"
    data = json.loads(file.read_text())
    data["images"].append({"id": 5, "file_name": "000000000005.jpg", "height": 72, "width": 96})
    data["annotations"].append({"image_id": 5, "id": 101, "caption": "A photo that is not there."})
    file.write_text(json.dumps(data))


def _bad_webdataset(root: Path) -> None:
    with tarfile.open(root / "webdataset/00001.tar", "w") as tar:
        for ext, data in (
            ("jpg", b"\xff\xd8\xff\xe0 not really a jpeg"),
            ("txt", b"a broken photo"),
        ):
            info = tarfile.TarInfo(f"000010000.{ext}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _bad_subjects(root: Path) -> None:
    file = root / "subjects200k/data/train-00000-of-00001.parquet"
    table = pq.read_table(file)
    small = io.BytesIO()
    Image.new("RGB", (300, 150), "white").save(small, format="JPEG")
    row = table.slice(0, 1).to_pylist()[0]
    row["image"] = {"bytes": small.getvalue(), "path": None}
    import pyarrow as pa

    pq.write_table(
        pa.concat_tables([table, pa.Table.from_pylist([row], schema=table.schema)]), file
    )


def _bad_omnigen(root: Path) -> None:
    with (root / "omnigen_x2i/toy_data.jsonl").open("a") as handle:
        handle.write(json.dumps({"task_type": "try-on", "instruction": "<img><|image_1|></img> wears <img><|image_2|></img>.",
                                 "input_images": ["edit_source_1.png", "edit_source_2.png"], "output_image": "edit_target_1.png"}) + "\n")  # fmt: skip


def _bad_imagefolder(root: Path) -> None:
    with (root / "imagefolder/train/metadata.jsonl").open("a") as handle:
        handle.write(json.dumps({"file_name": "0009.png", "text": "a picture never saved"}) + "\n")


BAD: dict[str, tuple[Callable[[Path], None], str, str]] = {
    "llava": (_bad_llava, "source:bad-image", "llava_v1_5_mix665k.json item 3"),
    "sharegpt": (_bad_sharegpt, "source:bad-turns", "item 4"),
    "openai_messages": (_bad_openai, "source:bad-encoding", "train.jsonl line 5"),
    "magicbrush": (_bad_magicbrush, "source:empty-instruction", "train-00001-of-00002-f0f0f0f0.parquet row 0"),
    "coco": (_bad_coco, "source:bad-image", "image 3"),
    "webdataset": (_bad_webdataset, "source:bad-image", "00001.tar sample 000010000"),
    "subjects200k": (_bad_subjects, "source:bad-image", "row 3"),
    "omnigen_x2i": (_bad_omnigen, "source:bad-field", "toy_data.jsonl line 4"),
    "imagefolder": (_bad_imagefolder, "source:bad-image", "metadata.jsonl line 4"),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(BAD))
def test_a_bad_row_of_each_layout_is_rejected_with_its_reason(tmp_path: Path, name: str) -> None:
    corrupt, reason, where = BAD[name]
    (tmp_path / "examples" / "sources").mkdir(parents=True)
    shutil.copy(GALLERY / f"{name}.yaml", tmp_path / "examples" / "sources")
    folder = name if name != "openai_messages" else "openai_messages"
    shutil.copytree(FORMATS / folder, tmp_path / "tests" / "data" / "formats" / folder)
    corrupt(tmp_path / "tests" / "data" / "formats")

    items = read(tmp_path / "examples" / "sources" / f"{name}.yaml")
    rejects = [i for i in items if isinstance(i, Reject)]
    assert [r.reason for r in rejects] == [reason], [r.detail for r in rejects]
    assert where in rejects[0].detail and "\n" not in rejects[0].detail
    assert len(items) - 1 == EXPECTED[name][2]  # the good rows all go on
