"""One async engine behind the small protocol of ``ops.protocol``, and its backends.

config = EngineConfig(backend="openai", model="gpt-4o-mini", cache_dir=Path("cache"))
async with Engine.from_config(config) as engine:
    response = await engine.complete(request)
engine.stats.as_dict()
"""

from __future__ import annotations

from ops.engine.config import DEFAULT_PRICES, EngineConfig
from ops.engine.engine import Engine
from ops.engine.errors import BackendConfigError, RateLimitedError, RequestError, TransientError
from ops.engine.stats import EngineStats, Usage
from ops.protocol import Backend


def make_backend(config: EngineConfig) -> Backend:
    """The bare backend a config names (wrap it in ``Engine`` for retries, cache, limits)."""
    if config.backend == "openai":
        from ops.engine.openai_backend import OpenAIBackend

        return OpenAIBackend(config)
    if config.backend == "gemini":
        from ops.engine.gemini_backend import GeminiBackend

        return GeminiBackend(config)
    if config.backend == "local":
        from ops.engine.local_backend import LocalBackend

        return LocalBackend(config)
    if config.backend == "template":
        from ops.template_backend import TemplateBackend

        return TemplateBackend(model=config.model)
    raise AssertionError(f"unhandled backend {config.backend!r}")  # EngineConfig validated it


__all__ = [
    "DEFAULT_PRICES",
    "Backend",
    "BackendConfigError",
    "Engine",
    "EngineConfig",
    "EngineStats",
    "RateLimitedError",
    "RequestError",
    "TransientError",
    "Usage",
    "make_backend",
]
