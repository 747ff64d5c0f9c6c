"""Token, cost and reliability accounting, per operation and per model; batches in batch mode.

Plain dataclasses: the progress bar reads them live, the manifest summary stores ``as_dict()``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields


@dataclass
class Usage:
    requests: int = 0  # answers from the backend (not the cache), whatever their finish reason
    cache_hits: int = 0
    attempts: int = 0  # calls to the backend, retries included
    retries: int = 0
    rate_limited: int = 0  # 429 answers
    errors: int = 0  # requests that failed for good (retries exhausted, bad request)
    truncated: int = 0  # finish_reason length or content_filter
    prompt_tokens: int = 0
    completion_tokens: int = 0
    thinking_tokens: int = 0  # billed as output (Gemini 2.5 models)
    cost_usd: float = 0.0

    def add(self, other: Usage) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


@dataclass
class BatchStats:
    """Batch mode (``ops.engine.batch``): the batches of this process, and its requests waiting.

    A batch is *submitted* by this run or *resumed* (submitted by an earlier run that was
    stopped, and picked up), then *done* (its answers are back) or *ended early* (expired,
    cancelled or refused: its unfinished requests go out again in a later batch).
    """

    submitted: int = 0
    resumed: int = 0
    done: int = 0
    ended_early: int = 0
    in_progress: int = 0  # submitted or resumed, not back yet
    collecting: int = 0  # requests gathered for the next batch
    waiting: int = 0  # requests waiting for an answer: collected or in a batch out there

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class EngineStats:
    """Usage of each (operation, model) pair; totals by operation and by model are summed
    when read (by the summary at each commit and the progress bar), not kept apart: the engine
    then counts each answer once."""

    by_pair: dict[tuple[str, str], Usage] = field(default_factory=dict)
    # Models that answered but have no entry in the price table: their cost is counted as 0.
    unpriced: set[str] = field(default_factory=set)
    # Batch mode only: the batch backend's counters (ops.backends.open_engine links them).
    batch: BatchStats | None = None

    def usage(self, operation: str, model: str) -> Usage:
        """The counters of ``operation`` answered by ``model``."""
        key = (operation, model)
        usage = self.by_pair.get(key)
        if usage is None:
            usage = self.by_pair[key] = Usage()
        return usage

    def _summed(self, part: int) -> dict[str, Usage]:
        sums: dict[str, Usage] = {}
        for key, usage in self.by_pair.items():
            sums.setdefault(key[part], Usage()).add(usage)
        return sums

    @property
    def by_operation(self) -> dict[str, Usage]:
        return self._summed(0)

    @property
    def by_model(self) -> dict[str, Usage]:
        return self._summed(1)

    @property
    def total(self) -> Usage:
        total = Usage()
        for usage in self.by_pair.values():
            total.add(usage)
        return total

    def as_dict(self) -> dict[str, object]:
        return {
            "total": asdict(self.total),
            "by_operation": {k: asdict(v) for k, v in sorted(self.by_operation.items())},
            "by_model": {k: asdict(v) for k, v in sorted(self.by_model.items())},
            "unpriced_models": sorted(self.unpriced),
            **({"batches": self.batch.as_dict()} if self.batch is not None else {}),
        }
