"""The gallery through the stages: MagicBrush sessions become multi-edit dialogues of real
consecutive edits, dev rows stay out of `split: train`, and stages a and b run on every
public layout at once."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from synth.contract import check_invariants
from synth.shards import iter_rejects, iter_samples, read_manifest
from synth.sources import EditChain, iter_source_rows, load_sources_file
from tests.stages_support import run_stage

ROOT = Path(__file__).resolve().parent.parent
GALLERY = ROOT / "examples" / "sources"
FORMATS = ROOT / "tests" / "data" / "formats"


def test_magicbrush_dev_rows_never_appear_with_split_train(tmp_path: Path) -> None:
    def chains(path: str, split: str) -> set[str]:
        file = tmp_path / f"{split}.yaml"
        file.write_text(yaml.safe_dump({"sources": [{
            "name": "mb", "kind": "edit", "path": path, "split": split,
            "columns": {"source_image": "source_img", "target_image": "target_img",
                        "chain": "img_id", "turn": "turn_index"},
        }]}))  # fmt: skip
        sources = load_sources_file(file)
        items = list(iter_source_rows(sources.sources[0], sources.base_dir))
        steps = [s for i in items for s in (i.steps if isinstance(i, EditChain) else [i])]
        return {s.chain for s in steps}  # type: ignore[union-attr]

    root = str(FORMATS / "magicbrush")
    assert chains(root, "train") == {"242679", "327726", "93841"}
    assert chains(root, "dev") == {"1007"}
    # The data/ folder alone: `datasets` names the dev files' split "validation"; both names work.
    assert chains(f"{root}/data", "train") == {"242679", "327726", "93841"}
    assert chains(f"{root}/data", "dev") == {"1007"}


def test_magicbrush_chains_make_multi_edit_dialogues(tmp_path: Path) -> None:
    out = tmp_path / "a"
    run_stage("a", sources=GALLERY / "magicbrush.yaml", out=out)
    manifest = read_manifest(out)
    assert manifest.complete and not manifest.reject_counts, manifest.reject_counts
    samples = {s.images[-1].source_row: s for s in iter_samples(out)}
    assert sorted(samples) == ["242679#3", "327726#1", "93841#2"]
    assert samples["327726#1"].task == "ti_i_0_0"

    chain = samples["242679#3"]
    check_invariants(chain)
    assert chain.task == "t_i_i1_1"
    users = [t for t in chain.turns if t.role == "user"]
    assert [t.text for t in users] == [
        "put a red square in the middle",
        "add a yellow sun in the corner",
        "make the ground green",
    ]  # the session's own instructions, in order, copied (no LLM call)
    assert [len(t.images) for t in users] == [1, 0, 0]  # the first image is uploaded once
    outputs = [chain.images[t.images[0]] for t in chain.turns if t.role == "assistant"]
    assert [o.source_row for o in outputs] == ["242679#1", "242679#2", "242679#3"]
    assert chain.provenance.depends_on == (3,)  # the final edit works on the previous output
    assert chain.provenance.llm_calls == ()
    source_images = {s.row_id: s for s in next(
        i for i in iter_source_rows(load_sources_file(GALLERY / "magicbrush.yaml").sources[0], GALLERY)
        if isinstance(i, EditChain) and i.row_id == "242679#1-3"
    ).steps}  # fmt: skip
    assert [o.data for o in outputs] == [
        source_images[f"242679#{k}"].target_image for k in (1, 2, 3)
    ]
    assert len(samples["93841#2"].turns) == 4


def _combined_gallery(tmp_path: Path) -> Path:
    """Every gallery source in one sources file (paths made absolute)."""
    entries = []
    for path in sorted(GALLERY.glob("*.yaml")):
        (entry,) = yaml.safe_load(path.read_text())["sources"]
        for key in ("path", "image_root"):
            if key in entry:
                entry[key] = str((GALLERY / entry[key]).resolve())
        entries.append(entry)
    out = tmp_path / "gallery.yaml"
    out.write_text(yaml.safe_dump({"sources": entries}, allow_unicode=True))
    return out


def test_stages_a_and_b_run_on_every_public_layout(tmp_path: Path) -> None:
    sources = _combined_gallery(tmp_path)
    a, b = tmp_path / "a", tmp_path / "b"
    run_stage("a", sources=sources, out=a)
    manifest = read_manifest(a)
    assert manifest.complete and not manifest.reject_counts, manifest.reject_counts
    made = list(iter_samples(a))
    for sample in made:
        check_invariants(sample)
    assert len({s.sample_id for s in made}) == len(made)
    by_source = Counter(s.images[0].source for s in made)
    # Every generation layout feeds stage a; vqa and chat sources are distractor material.
    assert set(by_source) == {
        "coco-captions", "laion-style", "my-photos", "magicbrush", "subjects200k-left", "x2i-edits",
    }  # fmt: skip
    assert by_source["magicbrush"] == 3 and by_source["x2i-edits"] == 3

    run_stage("b", **{"in": a}, sources=sources, out=b)
    deepened = list(iter_samples(b))
    assert deepened, "stage b made nothing"
    for sample in deepened:
        check_invariants(sample)
        assert sample.provenance.distractor_turns
    for sample in deepened:  # no LLaVA `<image>` token or OmniGen placeholder leaks into a turn
        assert not any(
            "<image>" in (t.text or "") or "<|image_" in (t.text or "") for t in sample.turns
        )
    # The MagicBrush chains have no captions: query2dep_q cannot name their earlier image, so
    # stage b rejects them with the operation's input check, and says so.
    rejects = list(iter_rejects(b))
    assert sorted((r.reason, r.source, r.source_row, r.operation) for r in rejects) == [
        ("input:invalid", "magicbrush", "242679#3", "query2dep_q"),
        ("input:invalid", "magicbrush", "93841#2", "query2dep_q"),
    ]
    assert {s.task for s in deepened} == {"t_i_t1_n"}
