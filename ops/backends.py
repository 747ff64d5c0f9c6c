"""Which backend a config names, and the engine around it.

This sits in ``ops`` above ``ops.engine``: the engine knows the network backends, while the
``template`` and ``local`` backends belong to the operations (one answers from their registry,
the other constrains a small model to their answer layouts), so only this module, which may
import both, maps a name to any of them.

    async with open_engine(EngineConfig(backend="openai", model="gpt-4o-mini")) as engine:
        response = await engine.complete(request)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ops.engine import Engine, EngineConfig
from ops.protocol import Backend

if TYPE_CHECKING:
    from ops.engine.batch import BatchBackend


def make_backend(config: EngineConfig) -> Backend:
    """The bare backend a config names (wrap it in ``Engine`` for retries, cache, limits)."""
    if config.backend == "openai":
        from ops.engine.openai_backend import OpenAIBackend

        return OpenAIBackend(config)
    if config.backend == "gemini":
        from ops.engine.gemini_backend import GeminiBackend

        return GeminiBackend(config)
    if config.backend == "local":
        from ops.local_backend import LocalBackend

        return LocalBackend(config)
    if config.backend == "template":
        from ops.template_backend import TemplateBackend

        return TemplateBackend(model=config.model)
    raise AssertionError(f"unhandled backend {config.backend!r}")  # EngineConfig validated it


def make_batch_backend(config: EngineConfig) -> BatchBackend:
    """The provider's batch API behind the backend protocol (``config.batch``)."""
    from ops.engine.batch import BatchAPI, BatchBackend

    api: BatchAPI
    if config.backend == "openai":
        from ops.engine.openai_batch import OpenAIBatchAPI

        api = OpenAIBatchAPI(config)
    else:
        from ops.engine.gemini_batch import GeminiBatchAPI

        api = GeminiBatchAPI(config)  # EngineConfig allows batch for openai and gemini only
    return BatchBackend(api, config)


def open_engine(config: EngineConfig) -> Engine:
    """The engine a run uses: the configured backend with the config's limits and cache (in
    batch mode, the provider's batch API, whose batch counters the engine's stats carry)."""
    if not config.batch:
        return Engine(make_backend(config), config)
    backend = make_batch_backend(config)
    engine = Engine(backend, config)
    engine.stats.batch = backend.stats
    return engine
