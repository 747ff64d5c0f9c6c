"""`synth push` runs the real huggingface_hub upload code against a fake Hub on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest
from huggingface_hub import HfApi, constants
from typer.testing import CliRunner

from synth.card import parse_card, resolve_license
from synth.cli import app
from synth.shards import reject_files, sample_files
from tests.bundled import BundledRun
from tests.fakes.dialogues import stage_a, stage_b, stage_c
from tests.fakes.fake_hub import FakeHub

TOKEN = "hf_fake_SECRET_token_0123456789"
REPO = "alice/chatumm-dialogues"


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("shards")
    return [stage_a(root / "stage-a"), stage_b(root / "stage-b"), stage_c(root / "stage-c")]


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    with FakeHub(TOKEN) as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
        # no login cache of the machine running the tests, and the LFS protocol instead of Xet
        monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        # the sources tests set HF_HUB_OFFLINE for their Hub-layout readers; a push talks to
        # the fake Hub whatever ran before
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        yield fake


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["push", *args])
    output = result.output
    assert TOKEN not in output, "the token must never be printed"
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, output


def tree_hashes(directories: list[Path]) -> dict[str, str]:
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest()
        for d in directories
        for p in sorted(d.rglob("*"))
        if p.is_file()
    }


def shard_counts(directories: list[Path], column: str) -> Counter[str]:
    return Counter(
        v
        for d in directories
        for f in sample_files(d)
        for v in pq.read_table(f, columns=[column]).column(column).to_pylist()
    )


def load(tree: Path, config: str, cache: Path) -> datasets.Dataset:
    return datasets.load_dataset(str(tree), config, split="train", cache_dir=str(cache))


def test_push_uploads_shards_and_a_card_that_matches_them(
    hub: FakeHub, dirs: list[Path], tmp_path: Path
) -> None:
    code, out = run(*map(str, dirs), "--repo-id", REPO, "--with-rejects")
    assert code == 0, out
    files = hub.files(REPO)
    assert hub.repos[REPO].private is False
    # every shard arrived byte for byte, under its configuration's folder
    for d in dirs:
        for shard in sample_files(d):
            assert files[f"data/stage-{d.name[-1]}/{d.name}-{shard.name}"] == shard.read_bytes()
        for shard in reject_files(d):
            assert files[f"rejects/{d.name}-{shard.name}"] == shard.read_bytes()
        assert f"meta/{d.name}/manifest-00000.json" in files
    assert {p for p in files if p.startswith("data/")} == {
        f"data/stage-{d.name[-1]}/{d.name}-{s.name}" for d in dirs for s in sample_files(d)
    }
    # the data files went by LFS, the card last, in its own commit
    assert hub.requests["lfs-put"] == sum(len(sample_files(d)) + len(reject_files(d)) for d in dirs)
    assert hub.repos[REPO].commits[-1]["header"]["summary"].startswith("Dataset card")

    front, body = parse_card(files["README.md"].decode())
    stages = shard_counts(dirs, "stage")
    info = {c["config_name"]: c["splits"][0]["num_examples"] for c in front["dataset_info"]}
    assert info == {
        "all": sum(stages.values()),
        **{f"stage-{s}": n for s, n in stages.items()},
        "rejects": 4,
    }
    assert [c["config_name"] for c in front["configs"] if c.get("default")] == ["all"]
    assert front["language"] == ["en", "zh"]
    assert front["task_categories"] == ["text-to-image", "image-to-image"]
    assert front["license"] == "other"
    for task, n in shard_counts(dirs, "task").items():
        assert (
            f"| `{task}` |" in body and f"| {n} |" in body.split(f"| `{task}` |")[1].split("\n")[0]
        )
    assert "| openai/gpt-4o-mini | 23 |" in body and "| gemini/gemini-2.5-flash | 13 |" in body
    assert "| `parse:wrong-count` | 2 |" in body
    assert f'load_dataset("{REPO}", "stage-c", split="train")' in body

    # what the Hub holds loads by configuration name, with the card's counts
    tree = hub.write_tree(REPO, tmp_path / "clone")
    cache = tmp_path / "hf-cache"
    stage_c_ds = load(tree, "stage-c", cache)
    assert len(stage_c_ds) == info["stage-c"] == 4
    assert set(stage_c_ds["task"]) == {"t_ti_0_0", "t_ti_i1_n"}
    assert len(load(tree, "all", cache)) == 15
    assert Counter(load(tree, "rejects", cache)["reason"])["parse:wrong-count"] == 2


def test_private_branch_and_configs_per_task(
    hub: FakeHub, dirs: list[Path], tmp_path: Path
) -> None:
    code, out = run(
        str(dirs[0]), "--repo-id", REPO, "--private", "--revision", "dev", "--config-by", "task"
    )
    assert code == 0, out
    assert hub.repos[REPO].private is True
    assert hub.files(REPO, "main") == {}, "a push to a branch leaves main alone"
    files = hub.files(REPO, "dev")
    front, body = parse_card(files["README.md"].decode())
    tasks = shard_counts(dirs[:1], "task")
    info = {c["config_name"]: c["splits"][0]["num_examples"] for c in front["dataset_info"]}
    assert info == {"all": 8, **tasks}
    assert 'revision="dev"' in body
    # the stage-a shards mix tasks: each was split into one file per task, nothing lost
    tree = hub.write_tree(REPO, tmp_path / "clone", revision="dev")
    local_ids = Counter(
        (row["task"], row["sample_id"])
        for f in sample_files(dirs[0])
        for row in pq.read_table(f, columns=["task", "sample_id"]).to_pylist()
    )
    pushed = Counter()
    for task in tasks:
        ds = load(tree, task, tmp_path / "hf-cache")
        pushed.update(
            (row["task"], row["sample_id"]) for row in ds.select_columns(["task", "sample_id"])
        )
        assert set(ds["task"]) == {task}
    assert pushed == local_ids


def test_dry_run_writes_card_and_plan_and_sends_nothing(
    hub: FakeHub, dirs: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_TOKEN")
    plan_dir = tmp_path / "plan"
    code, out = run(
        *map(str, dirs),
        "--repo-id",
        REPO,
        "--dry-run",
        "--plan-dir",
        str(plan_dir),
        "--license",
        "cc-by-4.0",
    )
    assert code == 0, out
    assert sum(hub.requests.values()) == 0
    plan = json.loads((plan_dir / "plan.json").read_text())
    assert [c["name"] for c in plan["configs"]] == ["all", "stage-a", "stage-b", "stage-c"]
    assert sum(f["rows"] for f in plan["files"]) == 15
    assert {f["source"] for f in plan["files"]} == {str(s) for d in dirs for s in sample_files(d)}
    front, _ = parse_card((plan_dir / "README.md").read_text())
    assert front["dataset_info"][0]["splits"][0]["num_examples"] == 15
    assert front["license"] == "cc-by-4.0"


def test_license_comes_from_the_sources() -> None:
    one = [{"sources": [{"name": "laion-pop", "license": "cc-by-4.0"}]}, {"sources": []}]
    assert resolve_license(None, one, ["laion-pop"])[0] == "cc-by-4.0"
    two = [{"sources": {"a": {"license": "mit"}, "b": {"licence": "cc-by-4.0"}}}]
    license_id, note = resolve_license(None, two, ["a", "b"])
    assert license_id == "other" and "`cc-by-4.0`" in note and "`mit`" in note
    assert resolve_license("apache-2.0", two, ["a"])[0] == "apache-2.0"


def test_no_token_is_a_clear_error(
    hub: FakeHub, dirs: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_TOKEN")
    code, out = run(str(dirs[2]), "--repo-id", REPO)
    assert code == 2
    assert "no Hugging Face token" in out and "HF_TOKEN" in out
    assert sum(hub.requests.values()) == 0


def test_existing_repo_needs_exist_ok_and_a_rerun_skips_everything(
    hub: FakeHub, dirs: list[Path]
) -> None:
    # per task, the stage-c shard is split at upload: the rerun must produce the same bytes
    args = [str(dirs[2]), "--repo-id", REPO, "--config-by", "task"]
    assert run(*args)[0] == 0
    commits = len(hub.repos[REPO].commits)
    code, out = run(*args)
    assert code == 2 and "already exists" in out and "--exist-ok" in out
    code, out = run(*args, "--exist-ok")
    assert code == 0, out
    assert "0 commit(s)" in out and "0 file(s) uploaded" in out
    assert len(hub.repos[REPO].commits) == commits


def test_stale_files_in_a_pushed_config_are_deleted(hub: FakeHub, dirs: list[Path]) -> None:
    assert run(str(dirs[1]), "--repo-id", REPO)[0] == 0
    api = HfApi(endpoint=hub.url, token=TOKEN)
    for path in ("data/stage-b/old-train-00000-00009.parquet", "notes/keep.txt"):
        api.upload_file(
            path_or_fileobj=b"old", path_in_repo=path, repo_id=REPO, repo_type="dataset"
        )
    code, out = run(str(dirs[1]), "--repo-id", REPO, "--exist-ok")
    assert code == 0, out
    files = hub.files(REPO)
    assert "data/stage-b/old-train-00000-00009.parquet" not in files
    assert files["notes/keep.txt"] == b"old", "files outside the pushed configs stay"


def test_network_error_mid_upload_then_rerun_finishes(
    hub: FakeHub, dirs: list[Path], tmp_path: Path
) -> None:
    before = tree_hashes(dirs)
    hub.drop("commit", nth=3)
    args = [*map(str, dirs), "--repo-id", REPO, "--files-per-commit", "1"]
    code, out = run(*args)
    assert code == 2
    assert "interrupted after 2 commit(s)" in out and "--exist-ok" in out
    assert "untouched" in out
    assert tree_hashes(dirs) == before, "a failed push changes nothing locally"
    assert "README.md" not in hub.files(REPO), "no card before all data is there"

    code, out = run(*args, "--exist-ok")
    assert code == 0, out
    assert "2 file(s) already on the Hub" in out
    assert tree_hashes(dirs) == before
    files = hub.files(REPO)
    local = {s.read_bytes() for d in dirs for s in sample_files(d)}
    assert {c for p, c in files.items() if p.startswith("data/")} == local
    # the dropped commit's object was stored by its LFS upload: nothing was sent twice
    assert hub.requests["lfs-put"] == len(local)
    front, _ = parse_card(files["README.md"].decode())
    assert front["dataset_info"][0]["splits"][0]["num_examples"] == 15


def test_unreachable_hub_and_bad_repo_id(
    hub: FakeHub, dirs: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    code, out = run(str(dirs[2]), "--repo-id", REPO)
    assert code == 2 and "could not reach http://127.0.0.1:9" in out
    code, out = run(str(dirs[2]), "--repo-id", "no-namespace")
    assert code == 2 and "<namespace>/<name>" in out
    code, out = run(str(dirs[2]), "--repo-id", REPO, "--config-by", "colour")
    assert code == 2 and "--config-by" in out


def test_template_made_data_is_marked_and_pushed_only_when_allowed(
    hub: FakeHub, bundled_run: BundledRun, tmp_path: Path
) -> None:
    """The bundled run's texts come from the template backend: the card says so at the top,
    and a push stops before any request unless --allow-template is given."""
    dirs = [str(bundled_run.stage_a), str(bundled_run.stage_c)]
    code, out = run(*dirs, "--repo-id", REPO, "--dry-run", "--plan-dir", str(tmp_path / "p"))
    assert code == 0 and "would stop" in out and "--allow-template" in out
    front, body = parse_card((tmp_path / "p" / "README.md").read_text())
    assert "template-made" in front["tags"]
    top = body.split("## Configurations")[0]
    assert "Template-made texts, not model-written" in top and "backend: template" in top

    code, out = run(*dirs, "--repo-id", REPO)
    assert code == 2 and "answered by the offline template backend" in out
    assert "--allow-template" in out and len(out.strip().splitlines()) == 1
    assert sum(hub.requests.values()) == 0

    code, out = run(*dirs, "--repo-id", REPO, "--allow-template")
    assert code == 0, out
    assert "Template-made texts" in hub.files(REPO)["README.md"].decode()


def test_a_model_made_card_has_no_template_warning(dirs: list[Path], tmp_path: Path) -> None:
    code, out = run(*map(str, dirs), "--repo-id", REPO, "--dry-run", "--plan-dir", str(tmp_path))
    assert code == 0 and "would stop" not in out
    front, body = parse_card((tmp_path / "README.md").read_text())
    assert "template-made" not in front["tags"] and "Template-made" not in body
