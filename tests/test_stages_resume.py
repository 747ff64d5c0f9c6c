"""A stage killed with SIGKILL mid-run and rerun writes exactly what an uninterrupted run
writes, and pays for no request twice.

Once the run that gets killed has committed work, the fake server holds every new request (an
asynchronous hang: answers already given still reach the client), so the run dies with
committed shards behind it and unanswered requests in flight. Paid = answered:
a held request never was, and may be sent again; an answered one must never be."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from ops.engine.cache import GROUP_S
from synth.shards import read_manifest
from tests.fakes._server import FakeRequest, FaultPlan
from tests.stages_support import EXAMPLES, op_answer, run_stage, sample_ids, shard_bytes


class RecordingLLM:
    def __init__(self) -> None:
        self.answered: list[str] = []

    def __call__(self, request: FakeRequest) -> str:
        self.answered.append(json.dumps([request.messages, request.body.get("seed")]))
        return op_answer(request)


def _kill_midway(args: list[str], out: Path, server) -> None:  # type: ignore[no-untyped-def]
    """Start the run slowly; once it has committed work, hold every new request; kill it."""
    server.latency_s = 0.05
    proc = subprocess.Popen([sys.executable, "-m", "synth", "run", *args], stderr=subprocess.PIPE)
    manifest = out / "manifest-00000.json"
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if manifest.exists() and json.loads(manifest.read_text())["cursor"] > 0:
                break
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.01)
        else:
            raise AssertionError("the run never committed work")
        server.set_faults(FaultPlan(share={"timeout": 1.0}, hang_s=600))
        # Answers already sent reach the client and the response cache commits them (within
        # GROUP_S of their arrival); held requests stay in flight.
        time.sleep(GROUP_S + 0.5)
        assert not json.loads(manifest.read_text())["complete"]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
        server.set_faults(FaultPlan())
        server.latency_s = 0.0


def test_sigkill_in_each_stage_then_rerun_matches_an_uninterrupted_run(
    tmp_path: Path, fake_openai
) -> None:
    llm = RecordingLLM()
    fake_openai.answer = llm
    fake_openai.log_requests = False
    common = {"llm": "openai", "base_url": fake_openai.base_url, "concurrency": 4, "seed": 7}
    config = tmp_path / "run.yaml"
    # Small shards, so the killed run has committed several of them; --config is exercised too.
    config.write_text(yaml.safe_dump({**common, "shard-rows": 2, "progress": False}))
    plan = (
        ("a", {"sources": EXAMPLES, "limit": 24}),
        ("b", {"in": tmp_path / "ref-a"}),
        ("c", {"in": tmp_path / "ref-b"}),
    )
    paid_twice: dict[str, int] = {}
    for stage, options in plan:
        ref, out = tmp_path / f"ref-{stage}", tmp_path / f"out-{stage}"
        run_stage(stage, out=ref, shard_rows=2, **options, **common)

        start = len(llm.answered)
        flags = [f"--{k}={v}" for k, v in options.items()]
        _kill_midway(
            [f"stage-{stage}", f"--out={out}", f"--config={config}", *flags],
            out,
            fake_openai,
        )
        paid_by_killed_run = set(llm.answered[start:])
        killed = read_manifest(out)
        assert 0 < killed.cursor < read_manifest(ref).cursor
        # Each commit keeps the usage so far in the manifest, so the killed run's paid requests
        # stay counted.
        assert 0 < killed.summary["llm"]["requests"] <= len(paid_by_killed_run)

        resume = len(llm.answered)
        run_stage(stage, out=out, shard_rows=2, **options, **common)
        resent = set(llm.answered[resume:]) & paid_by_killed_run
        if resent:
            paid_twice[stage] = len(resent)
        assert sample_ids(out) == sample_ids(ref)
        assert shard_bytes(out) == shard_bytes(ref)
        assert read_manifest(out).complete
    # The response cache commits within GROUP_S of an answer (ops/engine/cache.py): an answer
    # the killed run received was never paid for again.
    assert not paid_twice, f"answered requests sent again after SIGKILL, per stage: {paid_twice}"
