"""Test support for the stage tests: an LLM for the fake servers, and helpers to run stages.

``op_answer`` is what the fake OpenAI server answers: it recognises the operation from the
prompt's opening line, reads the operation's inputs back from the ``<<<...>>>`` blocks the
templates put them in, and answers with the offline template backend's writer for those
inputs, seeded by the request, so the answer is well formed, valid and deterministic.
"""

from __future__ import annotations

import hashlib
import random
import re
from functools import cache
from pathlib import Path
from typing import Any

from ops import OPS
from ops.template_backend import answer
from synth.shards import iter_samples, sample_files
from synth.stages import load_run_config, run
from tests.fakes._server import FakeRequest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "sources.yaml"
_INPUT = re.compile(r"<<<(.*?)>>>", re.DOTALL)

_DUMMY = {"language": "en"}


@cache
def _signatures() -> list[tuple[str, str, tuple[str, ...]]]:
    """(opening line, operation, input names in prompt order) of every operation."""
    out = []
    for name, spec in OPS.items():
        fields = list(spec.inputs.model_fields)
        inputs = {f: _DUMMY.get(f, f"VALUE-{f}") for f in fields}
        prompt = spec.render(inputs, random.Random(0)).messages[-1].content
        found = _INPUT.findall(prompt)
        order = tuple(f for v in found for f in fields if v == f"VALUE-{f}")
        # The opening sentence names the operation; only its first words are compared, since
        # A_from_caption's names the answer language.
        out.append((prompt.splitlines()[0][:60], name, order))
    assert len({o for o, _, _ in out}) == len(out), "two operations open alike"
    return out


def op_answer(request: FakeRequest) -> str:
    prompt = request.messages[-1][1]
    first = prompt.splitlines()[0]
    known = [(name, order) for opening, name, order in _signatures() if first.startswith(opening)]
    assert known, f"the fake LLM does not know this prompt: {first[:80]}"
    ((name, order),) = known
    values = _INPUT.findall(prompt)[-len(order) :] if order else []
    variables: dict[str, Any] = dict(zip(order, values, strict=True))
    for line in prompt.splitlines():  # the sentence structures the template showed
        for prefix, key in (
            ("English: ", "en_structure"),
            ("simplified Chinese: ", "zh_structure"),
        ):
            if line.startswith(prefix):
                variables[key] = line.removeprefix(prefix)
    if "language" in OPS[name].inputs.model_fields:
        variables["language"] = "zh" if "simplified Chinese" in first else "en"
    seed = hashlib.sha256(repr((prompt, request.body.get("seed"))).encode()).digest()
    return answer(OPS[name], variables, random.Random(seed))


def run_stage(stage: str, **options: Any) -> Any:
    options.setdefault("progress", False)
    return run(load_run_config(stage, None, options))  # type: ignore[arg-type]


def shard_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sample_files(out)}


def sample_ids(out: Path) -> list[str]:
    return [s.sample_id for s in iter_samples(out)]
