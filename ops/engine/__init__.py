"""One async engine behind the small protocol of ``ops.protocol``, and its network backends.

``ops.engine`` imports nothing from ``ops`` but ``ops.protocol``; ``ops.backends.open_engine``
builds an engine from a config (the ``template`` backend, which answers from the operations'
registry, lives above it in ``ops``).
"""

from __future__ import annotations

from ops.engine.config import DEFAULT_PRICES, EngineConfig
from ops.engine.engine import Engine
from ops.engine.errors import BackendConfigError, RateLimitedError, RequestError, TransientError
from ops.engine.stats import EngineStats, Usage
from ops.protocol import Backend

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
]
