"""Batch mode through the stages, both providers: a -> b -> c with --batch write exactly the
online run's samples; under the same per-request faults, the same rejects; a run killed
(SIGKILL) while its batches are out and rerun with the same command submits no request twice
and writes the online samples; a server without the batch API stops the run with one line."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from synth.shards import iter_rejects, iter_samples, read_manifest
from synth.stages.report import batch_line, summary_table
from tests.fakes._server import FakeServer, FaultPlan
from tests.fakes.batches import BatchPlan
from tests.fakes.fake_gemini import FakeGemini
from tests.fakes.fake_openai import FakeOpenAI
from tests.stages_support import EXAMPLES, op_answer, run_stage

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-test-batch-stages-7f3a9c"
FAST = {"batch_window_s": 0.05, "batch_poll_s": 0.01, "batch_poll_max_s": 0.05}


@pytest.fixture(params=["openai", "gemini"])
def server(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeServer]:
    monkeypatch.setenv("CHATUMM_TEST_KEY", KEY)
    fake: FakeServer = FakeOpenAI(op_answer) if request.param == "openai" else FakeGemini(op_answer)
    with fake:
        yield fake


def _llm(server: FakeServer) -> dict[str, Any]:
    if isinstance(server, FakeOpenAI):
        return {"llm": "openai", "base_url": server.base_url, "api_key_env": "CHATUMM_TEST_KEY"}
    return {"llm": "gemini", "base_url": server.url, "api_key_env": "CHATUMM_TEST_KEY"}


def _abc(tmp_path: Path, server: FakeServer, **options: Any) -> list[Path]:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    llm = _llm(server)
    run_stage("a", sources=EXAMPLES, out=a, limit=12, **llm, **options)
    run_stage("b", **{"in": a}, out=b, **llm, **options)
    run_stage("c", **{"in": [a, b]}, out=c, **llm, **options)
    return [a, b, c]


def test_stages_a_b_c_in_batch_mode_write_the_online_samples(server: FakeServer, tmp_path: Path) -> None:  # fmt: skip
    online = _abc(tmp_path / "online", server)
    batch = _abc(tmp_path / "batch", server, batch=True, **FAST)
    for want, got in zip(online, batch, strict=True):
        samples = list(iter_samples(got))
        assert samples and samples == list(iter_samples(want))
        assert list(iter_rejects(got)) == list(iter_rejects(want))
    summaries = [read_manifest(out).summary for out in batch]
    # Stage c asks a question, then its answer: two rounds of batches.
    assert [s["batches"]["submitted"] for s in summaries] == [1, 1, 2]
    assert all(s["batches"]["waiting"] == s["batches"]["in_progress"] == 0 for s in summaries)
    for want, got in zip(online, batch, strict=True):
        online_llm, batch_llm = (
            read_manifest(want).summary["llm"],
            read_manifest(got).summary["llm"],
        )
        assert batch_llm["requests"] == online_llm["requests"] > 0
        assert batch_llm["cost_usd"] == pytest.approx(online_llm["cost_usd"] / 2)
    rows = [str(c) for column in summary_table(summaries[2]).columns for c in column._cells]
    assert "batches submitted / resumed" in rows and "2 / 0" in rows


def test_requests_refused_in_a_batch_become_the_online_runs_rejects(server: FakeServer, tmp_path: Path) -> None:  # fmt: skip
    """Keyed faults hit the same requests online and in batches: a 400 line is a reject with
    the server's reason (after the operation's fresh attempts, each in a later batch), a 500
    line goes out again in a later batch."""
    plan = FaultPlan(share={"400": 0.6, "500": 0.15}, seed=11, keyed=True, retry_after_s=None)
    llm = _llm(server)
    outs = {}
    for mode, options in (("online", {}), ("batch", {"batch": True, **FAST})):
        server.set_faults(plan)
        outs[mode] = tmp_path / mode
        run_stage("a", sources=EXAMPLES, out=outs[mode], limit=12, **llm, **options)
    assert list(iter_samples(outs["batch"])) == list(iter_samples(outs["online"]))
    rejects = list(iter_rejects(outs["batch"]))
    assert rejects == list(iter_rejects(outs["online"]))
    refused = [r for r in rejects if r.reason == "llm:error"]
    assert refused, "the faults should have refused some operation three times"
    for reject in refused:  # run_op keeps the last error text as the reject's raw response
        assert reject.detail.count("llm:error") == 3 and "RequestError" in reject.raw_response
        assert any(why in reject.raw_response for why in ("context length", "token count exceeds"))


def _argv(server: FakeServer, a: Path, out: Path) -> list[str]:
    llm = _llm(server)
    return [
        sys.executable, "-m", "synth", "run", "stage-c", "--in", str(a), "--out", str(out),
        "--llm", llm["llm"], "--base-url", llm["base_url"], "--batch", "--batch-window-s", "0.05", "--batch-poll-s", "0.01", "--no-progress",
    ]  # fmt: skip


def _env() -> dict[str, str]:
    return {**os.environ, "OPENAI_API_KEY": KEY, "GEMINI_API_KEY": KEY}


def test_a_batch_run_killed_while_batches_are_out_submits_no_request_twice(server: FakeServer, tmp_path: Path) -> None:  # fmt: skip
    llm = _llm(server)
    a = tmp_path / "a"
    run_stage("a", sources=EXAMPLES, out=a, limit=12, **llm)
    online = tmp_path / "online-c"
    run_stage("c", **{"in": a}, out=online, **llm)
    book = server.book  # type: ignore[attr-defined]
    # Stage c asks a question, then its answer: the first batch comes back, the next stay out.
    book.plan = BatchPlan(hold_from=1)
    out = tmp_path / "c"
    argv = _argv(server, a, out)
    proc = subprocess.Popen(
        argv, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    while len(book.batches) < 2:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, "the run never submitted its second batch"
        time.sleep(0.01)
    proc.kill()  # SIGKILL: no cleanup of any kind
    proc.wait(30)
    assert proc.returncode == -9
    assert not list(out.glob("manifest-*.json")) or not read_manifest(out).complete
    out_at_kill = len(book.batches)

    book.release()
    done = subprocess.run(argv, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert set(book.submitted.values()) == {1}, "a request was submitted twice"
    assert list(iter_samples(out)) == list(iter_samples(online))
    batches = read_manifest(out).summary["batches"]
    assert batches["resumed"] >= 1  # the held batch of the killed run, followed
    assert len(book.batches) == out_at_kill + batches["submitted"]


def test_a_server_without_the_batch_api_stops_the_run_with_one_line(tmp_path: Path) -> None:
    with FakeOpenAI(op_answer, batch_api=False) as server:
        a = tmp_path / "a"
        run_stage("a", sources=EXAMPLES, out=a, limit=4, **_llm(server))
        done = subprocess.run(
            _argv(server, a, tmp_path / "c"), cwd=ROOT, env=_env(), capture_output=True,
            text=True, timeout=120,
        )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "does not serve a batch API" in lines[0] and "HTTP 404" in lines[0]
    assert KEY not in done.stderr + done.stdout


def test_the_progress_line_counts_batches_and_waiting_requests() -> None:
    from ops.engine.stats import BatchStats

    stats = BatchStats(submitted=3, resumed=1, done=2, ended_early=1, in_progress=1, waiting=1234)
    assert batch_line(stats) == "batches 4 sent, 1 out, 3 back; 1,234 requests waiting"
