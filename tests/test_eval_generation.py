"""The generation report on a tiny random model: one section per dialogue, the dependency turns
outlined and the distractors dimmed, the reference and generated images beside each other, every
string from the data escaped; outputs reproducible for a seed; the JSONL rows match the page;
a killed run resumes with what it had."""

from __future__ import annotations

import io
import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from synth.contract import DialogueSample, Part, Turn
from synth.shards import ShardConfig, ShardWriter
from tests.builders import build_sample
from tests.eval_support import one_torch_thread  # noqa: F401  (autouse fixture)
from tests.infer_support import tiny_assets
from tests.train_fixtures import STAGE_C_TASKS, write_stage_c_shards
from train.data import DataConfig, default_tokenizer_path, load_tokenizer
from train.data.transforms import Transforms
from train.eval.config import GenerationConfig
from train.eval.dataset import load_eval_set
from train.eval.generation import GenerationReport
from train.infer import Assets

TASKS = ("t_ti_i1_n", "t_ti_in_1", "ti_ti_i1_1", "t_ti_0_0")
HOSTILE = '<script>alert("x")</script> & <img src=x onerror=alert(1)> "quoted"'
HOSTILE_ID = '../<b>"evil"</b>'
FAST = GenerationConfig(per_task=1, mode="image", max_tokens=4, max_parts=2, image={"steps": 2})


def _hostile(seed: int) -> DialogueSample:
    """A depth-n dialogue whose id and first user text are markup, and whose reference image is
    a TIFF (a format browsers do not show)."""
    sample = build_sample("t_ti_i1_n", seed=seed)
    first = sample.turns[0]
    turns = (Turn(role="user", parts=(*first.parts, Part.of_text(HOSTILE))), *sample.turns[1:])
    ref = sample.turns[-1].parts[0].image
    assert ref is not None
    buffer = io.BytesIO()
    Image.open(io.BytesIO(sample.images[ref].data)).save(buffer, format="TIFF")
    images = list(sample.images)
    images[ref] = images[ref].model_copy(update={"data": buffer.getvalue()})
    return sample.model_copy(
        update={"sample_id": HOSTILE_ID, "turns": turns, "images": tuple(images)}
    )


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gen_shards")
    samples = [build_sample(task, seed=s) for s in range(3) for task in TASKS]
    samples.append(_hostile(7))
    with ShardWriter(
        out, config={"fixture": "generation"}, shard=ShardConfig(row_group_rows=4)
    ) as w:
        for i, sample in enumerate(samples):
            w.add(sample)
            w.mark(i + 1)
        w.close({"samples": len(samples)})
    return out


@pytest.fixture(scope="module")
def assets() -> Assets:
    return tiny_assets()


@pytest.fixture(scope="module")
def report(shards: Path, assets: Assets, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gen_report")
    generation = GenerationReport(FAST, [shards], holdout=None, seed=0)
    probed = generation.samples[0].sample_id
    probes = [{"sample_id": probed, "ce": {"true": 1.25, "none": 1.5}, "mse": {"true": 0.5}}]
    generation.run(assets, out, checkpoint="tiny <random>", step=None, probes=probes)
    return out


class Page(HTMLParser):
    """The page as a reader sees it: per section, its turns (classes, text, images) and its
    reference and generated answers; plus every tag and URL the page would load."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.sections: list[dict[str, Any]] = []
        self.tags: set[str] = set()
        self.urls: list[str] = []
        self._box: dict[str, Any] | None = None  # the turn or answer being read
        self._depth = 0
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.add(tag)
        self.urls += [a[k] for k in ("src", "href") if k in a]
        classes = a.get("class", "").split()
        if tag == "section":
            self.sections.append({"id": a["data-sample-id"], "turns": [], "answers": {}})
        elif tag == "div" and ("turn" in classes or "answer" in classes):
            self._box = {"classes": set(classes), "text": "", "images": []}
            self._depth = 0
            if "turn" in classes:
                self._box["turn"] = int(a["data-turn"])
                self.sections[-1]["turns"].append(self._box)
            else:
                kind = "reference" if "reference" in classes else "generated"
                self.sections[-1]["answers"][kind] = self._box
        if self._box is not None and tag == "div":
            self._depth += 1
        if self._box is not None and tag == "img":
            self._box["images"].append(a["src"])

    def handle_endtag(self, tag: str) -> None:
        if self._box is not None and tag == "div":
            self._depth -= 1
            if self._depth == 0:
                self._box = None

    def handle_data(self, data: str) -> None:
        if self._box is not None:
            self._box["text"] += data


def _rows(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "generation.jsonl").read_text().splitlines()]


def _paths(parts: list[dict[str, Any]]) -> list[str]:
    return [p["path"] for p in parts if p["type"] == "image"]


def test_one_section_per_dialogue_with_its_history_marked(report: Path, shards: Path) -> None:
    rows = _rows(report)
    page = Page((report / "index.html").read_text(encoding="utf-8"))
    assert [r["task"] for r in rows] == sorted(TASKS)  # one per task, in the probes' order
    assert [s["id"] for s in page.sections] == [r["sample_id"] for r in rows]
    for row, section in zip(rows, page.sections, strict=True):
        turns = section["turns"]
        assert [t["turn"] for t in turns] == [h["turn"] for h in row["history"]]
        marked = {
            kind: {t["turn"] for t in turns if kind in t["classes"]}
            for kind in ("dependency", "distractor", "final")
        }
        assert marked["dependency"] == set(row["depends_on"])
        assert marked["distractor"] == set(row["distractor_turns"])
        assert marked["final"] == {len(turns) - 1}
        assert all("user" in t["classes"] for t in turns[::2])
        assert all("assistant" in t["classes"] for t in turns[1::2])
        for kind in ("reference", "generated"):
            assert section["answers"][kind]["images"] == _paths(row[kind])
        assert section["answers"]["generated"]["images"]  # mode image: it drew
        for h, t in zip(row["history"], turns, strict=True):
            assert t["images"] == _paths(h["parts"])
            assert all(p["text"] in t["text"] for p in h["parts"] if p["type"] == "text")
        for p in row["generated"]:
            if p["type"] == "text":
                assert p["text"] in section["answers"]["generated"]["text"]
    depth_n = [r for r in rows if r["task"] == "t_ti_i1_n"]
    assert depth_n[0]["distractor_turns"] and depth_n[0]["depends_on"]


def test_images_are_files_beside_the_page_and_nothing_is_fetched(report: Path) -> None:
    page = Page((report / "index.html").read_text(encoding="utf-8"))
    assert not page.tags & {"script", "link", "iframe", "object", "embed"}
    for url in page.urls:
        assert url.startswith(("images/", "#")), url
        if url.startswith("images/"):
            path = (report / url).resolve()
            assert path.is_relative_to(report.resolve()) and path.is_file()
            with Image.open(path) as img:
                assert img.format in ("PNG", "JPEG", "WEBP", "GIF")
                img.load()


def test_text_and_ids_from_the_data_are_escaped(
    shards: Path, assets: Assets, tmp_path: Path
) -> None:
    config = FAST.model_copy(update={"per_task": 4})  # every t_ti_i1_n dialogue
    generation = GenerationReport(config, [shards], holdout=None, seed=0, tasks=["t_ti_i1_n"])
    assert HOSTILE_ID in [s.sample_id for s in generation.samples]
    generation.run(assets, tmp_path, checkpoint="<b>ckpt</b>", step=3)
    raw = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert "<script>" not in raw and "<img src=x" not in raw and "<b>" not in raw
    page = Page(raw)
    (section,) = [s for s in page.sections if s["id"] == HOSTILE_ID]
    assert HOSTILE in section["turns"][0]["text"]
    row = next(r for r in _rows(tmp_path) if r["sample_id"] == HOSTILE_ID)
    reference = _paths(row["reference"])
    assert reference and all(p.endswith(".png") for p in reference)  # the TIFF, re-encoded
    assert all(".." not in p for r in _rows(tmp_path) for p in _paths(r["generated"]))


def test_probe_numbers_appear_beside_the_dialogues_they_cover(report: Path) -> None:
    rows = _rows(report)
    assert rows[0]["probes"] == {"ce": {"true": 1.25, "none": 1.5}, "mse": {"true": 0.5}}
    assert all(r["probes"] is None for r in rows[1:])
    raw = (report / "index.html").read_text(encoding="utf-8")
    assert raw.count('class="probes"') == 1 and "1.2500" in raw and "0.5000" in raw


def test_outputs_are_reproducible_for_a_seed_and_a_rerun_resumes(
    shards: Path, assets: Assets, report: Path, tmp_path: Path
) -> None:
    again = tmp_path / "again"
    generation = GenerationReport(FAST, [shards], holdout=None, seed=0)
    done: list[str] = []
    generation.run(assets, again, checkpoint="tiny <random>", step=None, progress=done.append)
    assert len(done) == len(TASKS)
    first, second = _rows(report), _rows(again)
    assert [{**r, "probes": None} for r in first] == second
    for row in first:
        for path in _paths(row["generated"]) + _paths(row["reference"]):
            assert (report / path).read_bytes() == (again / path).read_bytes()
    # killed after all but one dialogue: the rerun generates that one alone, the same way
    key = next((again / "records").iterdir())
    key.unlink()
    (again / "index.html").unlink()
    done.clear()
    generation.run(assets, again, checkpoint="tiny <random>", step=None, progress=done.append)
    assert len(done) == 1 and _rows(again) == second
    # a record of other options (here another seed) is not reused
    other = GenerationReport(FAST, [shards], holdout=None, seed=1)
    other.run(assets, again, checkpoint="tiny <random>", step=None, progress=done.append)
    assert len(done) == 1 + len(TASKS)


def test_another_seed_draws_other_images(shards: Path, assets: Assets, tmp_path: Path) -> None:
    config = FAST.model_copy(update={"per_task": 3})  # every t_ti_0_0 dialogue, whatever the seed
    drawn = []
    for seed in (0, 1):
        generation = GenerationReport(config, [shards], holdout=None, seed=seed, tasks=["t_ti_0_0"])
        generation.run(assets, tmp_path / str(seed), checkpoint="tiny", step=None)
        rows = sorted(_rows(tmp_path / str(seed)), key=lambda r: r["sample_id"])
        drawn.append(
            [(tmp_path / str(seed) / _paths(r["generated"])[0]).read_bytes() for r in rows]
        )
    assert len(drawn[0]) == 3 and all(a != b for a, b in zip(*drawn, strict=True))


def test_the_generated_dialogues_are_the_first_of_the_probes_choice(shards: Path) -> None:
    probed = load_eval_set(
        [shards],
        load_tokenizer(default_tokenizer_path()),
        Transforms.from_config(DataConfig.tiny()),
        holdout=None,
        max_per_task=3,
        seed=5,
    )
    first: dict[str, list[str]] = {}
    for d in probed.dialogues:
        first.setdefault(d.sample.task, []).append(d.sample.sample_id)
    for n in (1, 2):
        config = GenerationConfig(per_task=n)
        chosen = GenerationReport(config, [shards], holdout=None, seed=5).samples
        assert [s.sample_id for s in chosen] == [i for t in sorted(first) for i in first[t][:n]]


def test_a_dialogue_with_an_unreadable_image_is_counted_and_left_out(
    assets: Assets, tmp_path: Path
) -> None:
    shards = write_stage_c_shards(tmp_path / "data", samples=len(STAGE_C_TASKS) + 1, corrupt=(0,))
    task = STAGE_C_TASKS[0]  # samples 0 (its first image is not an image) and 10
    config = GenerationConfig(per_task=2, mode="text", max_tokens=2)
    GenerationReport(config, [shards], holdout=None, seed=0, tasks=[task]).run(
        assets, tmp_path / "out", checkpoint="tiny", step=None
    )
    rows = _rows(tmp_path / "out")
    assert len(rows) == 1 and rows[0]["task"] == task
    raw = (tmp_path / "out/index.html").read_text(encoding="utf-8")
    assert '"skipped_image_decode": 1' in raw  # in the page's counts


def test_config_refuses_what_it_cannot_do() -> None:
    with pytest.raises(ValueError, match="unknown image options"):
        GenerationConfig(image={"stepz": 2})
    with pytest.raises(ValueError, match="steps must be at least 2"):
        GenerationConfig(image={"steps": 1})
    assert GenerationConfig(image={"cfg_interval": [0.2, 0.8]}).image == {
        "cfg_interval": (0.2, 0.8)
    }
    from train.eval.config import EvalConfig

    with pytest.raises(ValueError, match=r"multiple of eval\.every"):
        EvalConfig(every=10, generation={"per_task": 1, "every": 15})
