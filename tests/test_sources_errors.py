"""Reader errors as a newcomer meets them: a bad line is a reject naming its file and line
while the good rows go on; a wrong column mapping is one line up front; repeated ids and
oversized texts are rejects with reasons; nothing prints a traceback."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import tracemalloc
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from synth.cli import app
from synth.contract import Reject
from synth.sources import (
    ChatRow,
    SourceError,
    SourceSpec,
    T2IRow,
    VQARow,
    iter_source_rows,
    load_sources_file,
)

ROOT = Path(__file__).resolve().parent.parent
FORMATS = ROOT / "tests" / "data" / "formats"


def png(color: str = "red", size: tuple[int, int] = (16, 12)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def sources_file(tmp_path: Path, entry: str) -> Path:
    path = tmp_path / "sources.yaml"
    path.write_text("sources:\n" + entry)
    return path


def read_all(path: Path) -> list[object]:
    sources = load_sources_file(path)
    return list(iter_source_rows(sources.sources[0], sources.base_dir))


def t2i_jsonl(tmp_path: Path, lines: list[bytes]) -> Path:
    (tmp_path / "a.png").write_bytes(png())
    (tmp_path / "t2i.jsonl").write_bytes(b"".join(line + b"\n" for line in lines))
    return sources_file(tmp_path, "  - {name: t, kind: t2i, path: t2i.jsonl}\n")


def row(caption: str, **extra: object) -> bytes:
    return json.dumps({"image": "a.png", "caption": caption, **extra}).encode()


def test_a_non_utf8_line_is_a_reject_with_file_and_line_and_the_good_rows_go_on(
    tmp_path: Path,
) -> None:
    path = t2i_jsonl(
        tmp_path, [row("one"), b'{"image": "a.png", "caption": "caf\xe9"}', row("three")]
    )
    items = read_all(path)
    assert [type(i) for i in items] == [T2IRow, Reject, T2IRow]
    bad = items[1]
    assert isinstance(bad, Reject) and bad.reason == "source:bad-encoding"
    assert bad.detail.startswith(
        "t2i.jsonl line 2: not UTF-8 text (byte 35: invalid continuation byte)"
    )

    result = CliRunner().invoke(app, ["sources", str(path)])
    assert result.exit_code == 1
    assert "REJECT t:1 source:bad-encoding: t2i.jsonl line 2" in result.output
    assert "Traceback" not in result.output


def test_wrong_column_names_are_one_line_up_front(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(png())
    lines = [json.dumps({"img": "a.png", "text": f"caption {i}"}) for i in range(3)]
    (tmp_path / "t2i.jsonl").write_text("\n".join(lines) + "\n")
    path = sources_file(tmp_path, "  - {name: t, kind: t2i, path: t2i.jsonl}\n")
    with pytest.raises(SourceError) as err:
        read_all(path)
    message = str(err.value)
    assert "\n" not in message
    assert message == (
        "t2i.jsonl (line 1 to line 3): image, caption: source 't' has no column for "
        "image <- 'image', caption <- 'caption'; its columns are ['img', 'text']; map them in "
        "the source's `columns:` (field: column)"
    )
    result = CliRunner().invoke(app, ["sources", str(path)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [f"error: source 't': {message}"]

    done = subprocess.run(
        [sys.executable, "-m", "synth", "run", "stage-a", "--sources", str(path), "--out",
         str(tmp_path / "out"), "--no-progress"],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "has no column for image" in done.stderr


def test_a_column_missing_only_from_some_rows_rejects_those_rows(tmp_path: Path) -> None:
    path = t2i_jsonl(tmp_path, [row("one"), json.dumps({"image": "a.png"}).encode()])
    items = read_all(path)
    assert [getattr(i, "reason", "row") for i in items] == ["row", "source:no-caption"]


def test_repeated_ids_are_rejects_and_never_two_samples_share_an_id(tmp_path: Path) -> None:
    rows = [row("A red fox.", id="x"), row("A green barn.", id="y"), row("A blue kite.", id="x")]
    path = t2i_jsonl(tmp_path, rows)
    path.write_text("sources:\n  - {name: t, kind: t2i, path: t2i.jsonl, columns: {id: id}}\n")
    items = read_all(path)
    assert [i.row_id if isinstance(i, T2IRow) else i.reason for i in items] == [
        "x",
        "y",
        "source:duplicate-id",
    ]
    dup = items[2]
    assert isinstance(dup, Reject) and dup.source_row == "x" and "repeats" in dup.detail

    from synth.shards import iter_samples
    from tests.stages_support import run_stage

    run_stage("a", sources=path, out=tmp_path / "a")
    ids = [s.sample_id for s in iter_samples(tmp_path / "a")]
    assert len(ids) == 2 and len(set(ids)) == 2


def test_a_caption_over_max_chars_is_a_reject_and_the_limit_is_configurable(tmp_path: Path) -> None:
    huge = "a very long caption " * 52_429  # ~1 MB
    path = t2i_jsonl(tmp_path, [row("short"), row(huge)])
    items = read_all(path)
    bad = items[1]
    assert isinstance(bad, Reject) and bad.reason == "source:text-too-long"
    assert f"holds {len(huge.strip())} characters, over max_chars 4000" in bad.detail
    assert len(bad.detail) < 400  # the reason names the length, never carries the text
    assert len(bad.payload) < 4200 and "more characters)" in bad.payload  # nor does the payload

    path.write_text("sources:\n  - {name: t, kind: t2i, path: t2i.jsonl, max_chars: 2000000}\n")
    assert all(isinstance(i, T2IRow) for i in read_all(path))


def test_llava_rows_with_images_are_kept_out_of_text_only_chat(tmp_path: Path) -> None:
    data = FORMATS / "llava/playground/data/llava_v1_5_mix665k.json"
    path = sources_file(
        tmp_path, f"  - {{name: c, kind: chat, path: {data}, columns: {{turns: conversations}}}}\n"
    )
    items = read_all(path)
    assert {getattr(i, "reason", "") for i in items} == {"source:needs-image"}
    # A text-only entry of the mix (no `image`) is a chat; as vqa it is a reject.
    text_only = {
        "id": "x",
        "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}],
    }
    with_image = {"id": "y", "image": str(FORMATS / "coco/train2017/000000037777.jpg"),
                  "conversations": [{"from": "human", "value": "<image>\nColour?"}, {"from": "gpt", "value": "Blue."}]}  # fmt: skip
    (tmp_path / "mix.json").write_text(json.dumps([text_only, with_image]))
    path = sources_file(
        tmp_path, "  - {name: c, kind: chat, path: mix.json, columns: {turns: conversations}}\n"
    )
    chat, needs_image = read_all(path)
    assert isinstance(chat, ChatRow) and chat.turns == (("user", "Hi"), ("assistant", "Hello!"))
    assert isinstance(needs_image, Reject) and needs_image.reason == "source:needs-image"
    path = sources_file(
        tmp_path, "  - {name: q, kind: vqa, path: mix.json, columns: {turns: conversations}}\n"
    )
    reject, vqa = read_all(path)
    assert isinstance(vqa, VQARow) and vqa.question == "Colour?"
    assert isinstance(reject, Reject) and reject.reason == "source:bad-image"
    assert "item 0" in reject.detail and "no image" in reject.detail


def test_openai_image_parts_mean_the_row_needs_an_image(tmp_path: Path) -> None:
    message = {"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                           {"type": "image_url", "image_url": {"url": "data:..."}}]}  # fmt: skip
    line = {"messages": [message, {"role": "assistant", "content": "A cat."}]}
    (tmp_path / "c.jsonl").write_text(json.dumps(line) + "\n")
    (reject,) = read_all(
        sources_file(
            tmp_path, "  - {name: c, kind: chat, path: c.jsonl, columns: {turns: messages}}\n"
        )
    )
    assert isinstance(reject, Reject) and reject.reason == "source:needs-image"


def test_reader_errors_are_one_line_naming_file_and_fix(tmp_path: Path) -> None:
    # A JSON array that stops being JSON part-way: the items before it are read, then one line.
    (tmp_path / "a.png").write_bytes(png())
    good = json.dumps({"image": "a.png", "caption": "fine"})
    (tmp_path / "rows.json").write_text(f'[{good}, {good}, {{"image": ')
    spec = SourceSpec(name="j", kind="t2i", path="rows.json", format="json")
    stream = iter_source_rows(spec, tmp_path)
    with pytest.raises(SourceError) as err:
        list(stream)
    assert str(err.value).startswith("rows.json: stops being valid JSON after 2 item(s)")
    # A split that is not there.
    wrong = SourceSpec(name="m", kind="edit", path=str(FORMATS / "magicbrush"), split="test",
                       columns={"source_image": "source_img", "target_image": "target_img"})  # fmt: skip
    with pytest.raises(
        SourceError, match=r"has no split 'test' \(splits: dev, train\); set `split:`"
    ):
        list(iter_source_rows(wrong, tmp_path))
    # A truncated tar.
    blob = (FORMATS / "webdataset/00000.tar").read_bytes()
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards/00000.tar").write_bytes(blob[:2600])  # inside sample 1's image
    spec = SourceSpec(
        name="w",
        kind="t2i",
        path="shards",
        format="webdataset",
        columns={"image": "jpg", "caption": "txt"},
    )
    with pytest.raises(SourceError) as err:
        list(iter_source_rows(spec, tmp_path))
    assert "shards/00000.tar: is not a readable tar archive after sample" in str(err.value)
    for error in (err.value,):
        assert "\n" not in str(error)


def test_webdataset_reading_streams_with_flat_memory(tmp_path: Path) -> None:
    """1,000 samples of ~12 KB: the reader holds one sample (and one peek window), not the tar."""
    noise = Image.effect_noise((64, 64), 90).convert("RGB")
    buffer = io.BytesIO()
    noise.save(buffer, format="JPEG", quality=95)
    jpeg = buffer.getvalue()
    (tmp_path / "shards").mkdir()
    with tarfile.open(tmp_path / "shards/00000.tar", "w") as tar:
        for i in range(1000):
            for ext, data in (("jpg", jpeg + i.to_bytes(4, "big")), ("txt", f"noise {i}".encode())):
                info = tarfile.TarInfo(f"{i:09d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    size = (tmp_path / "shards/00000.tar").stat().st_size
    spec = SourceSpec(name="w", kind="t2i", path="shards", format="webdataset",
                      columns={"image": "jpg", "caption": "txt", "id": "__key__"})  # fmt: skip
    tracemalloc.start()
    try:
        peaks, count = [], 0
        for item in iter_source_rows(spec, tmp_path):
            assert isinstance(item, T2IRow)
            count += 1
            if count in (100, 1000):
                peaks.append(tracemalloc.get_traced_memory()[1])
    finally:
        tracemalloc.stop()
    assert count == 1000
    assert peaks[1] < size / 4, f"held {peaks[1] / 2**20:.1f} MiB of a {size / 2**20:.1f} MiB tar"
    assert peaks[1] < peaks[0] * 1.5  # flat: the peak does not grow with the samples read


def test_coco_one_row_per_caption(tmp_path: Path) -> None:
    data = FORMATS / "coco/annotations/captions_train2017.json"
    path = sources_file(tmp_path, (
        f"  - {{name: c, kind: t2i, path: {data}, image_root: {FORMATS / 'coco/train2017'}, "
        "captions: all, columns: {image: image.file_name, id: id}}\n"
    ))  # fmt: skip
    rows = read_all(path)
    assert [r.row_id for r in rows] == ["38", "49", "58", "74", "92"]  # type: ignore[attr-defined]


def test_vqa_first_pair_only_by_default(tmp_path: Path) -> None:
    data = FORMATS / "llava/playground/data/llava_v1_5_mix665k.json"
    path = sources_file(
        tmp_path, f"  - {{name: q, kind: vqa, path: {data}, columns: {{turns: conversations}}}}\n"
    )
    rows = read_all(path)
    assert [(r.row_id, r.answer) for r in rows] == [  # type: ignore[attr-defined]
        ("0", "The long rectangle in the picture is red."),
        ("1", "Yes"),
        ("2", "A green triangle on a white background."),
    ]
    assert all(isinstance(r, VQARow) for r in rows)


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("{name: e, kind: edit, path: x.jsonl, columns: {chain: img_id}}", "map both `chain` and `turn`"),
        ("{name: e, kind: edit, path: x.jsonl, columns: {chain: a, turn: b, id: a}}", "remove `id`"),
        ("{name: s, kind: subject, path: x.jsonl, crop: {caption: [0, 0, 1, 1]}}", "not an image field"),
        ("{name: s, kind: subject, path: x.jsonl, crop: {image: [5, 0, 1, 1]}}", "left < right"),
        ("{name: s, kind: t2i, path: x.jsonl, columns: {caption: 'a..b'}}", "cannot read column path"),
        ("{name: s, kind: t2i, path: x.jsonl, captions: all}", "`captions` is for COCO files"),
        ("{name: s, kind: vqa, path: x.jsonl, pairs: all}", "`pairs` is for a vqa source"),
        ("{name: s, kind: t2i, path: x.jsonl, image_root: nowhere}", "image_root 'nowhere' is not a folder"),
    ],
)  # fmt: skip
def test_new_keys_are_checked_with_the_line(tmp_path: Path, entry: str, expected: str) -> None:
    (tmp_path / "x.jsonl").write_text("")
    with pytest.raises(ValueError) as err:
        load_sources_file(sources_file(tmp_path, f"  - {entry}\n"))
    assert "sources.yaml line 2: " in str(err.value) and expected in str(err.value)
