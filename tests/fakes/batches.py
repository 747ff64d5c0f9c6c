"""What the fake servers' batch APIs share: the files and batches they hold, and when a batch ends.

A batch ends when it is asked after, ``BatchPlan.delay_s`` after its creation (0: the first poll
finds it done), unless it is held (``hold_from``: batches from that index on stay running until
``release()``); it ends then as the plan says: completed, expired after some of its requests ran
(``expire``), or refused as a whole (``fail``). ``submitted`` counts every request (by custom id)
in every batch created, so a test can check that none went out twice.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

State = Literal["running", "completed", "expired", "failed"]


@dataclass(frozen=True)
class BatchPlan:
    delay_s: float = 0.0
    hold_from: int | None = None  # batches with this creation index or later stay running
    expire: Mapping[int, int] = field(default_factory=dict)  # batch index -> requests that ran
    fail: frozenset[int] = frozenset()  # batch indices refused as a whole


@dataclass
class FakeBatch:
    id: str
    index: int  # creation order, from 0
    label: str  # OpenAI metadata / Gemini display name
    model: str
    input_file: str
    lines: list[dict[str, Any]]
    created: float  # time.time()
    auth: str = ""  # the credential it was created with (faults that quote it)
    state: State = "running"
    ran: int = 0  # requests that ran, once ended
    output_file: str | None = None
    error_file: str | None = None


class BatchBook:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, FakeBatch] = {}
        self.submitted: Counter[str] = Counter()
        self.plan = BatchPlan()
        self.polls = 0
        self._held_released = False
        self._ids = itertools.count()
        self._lock = threading.Lock()

    def new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):06d}"

    def add_file(self, data: bytes, prefix: str = "file-") -> str:
        file_id = self.new_id(prefix)
        self.files[file_id] = data
        return file_id

    def create(self, label: str, model: str, input_file: str, lines: list[dict[str, Any]], custom_ids: list[str], prefix: str, auth: str = "") -> FakeBatch:  # fmt: skip
        with self._lock:
            batch = FakeBatch(
                self.new_id(prefix), len(self.batches), label, model, input_file, lines,
                time.time(), auth,
            )  # fmt: skip
            self.batches[batch.id] = batch
            self.submitted.update(custom_ids)
        return batch

    def ending(self, batch: FakeBatch) -> State | None:
        """How ``batch`` ends if it ends now (asked after), or None while it runs."""
        self.polls += 1
        plan = self.plan
        if batch.state != "running":
            return None
        if plan.hold_from is not None and batch.index >= plan.hold_from and not self._held_released:
            return None
        if time.time() - batch.created < plan.delay_s:
            return None
        if batch.index in plan.fail:
            return "failed"
        return "expired" if batch.index in plan.expire else "completed"

    def ran(self, batch: FakeBatch) -> int:
        """How many of its requests an ending batch ran (the first ones)."""
        return self.plan.expire.get(batch.index, len(batch.lines))

    def release(self) -> None:
        self._held_released = True

    def newest_first(self) -> list[FakeBatch]:
        return sorted(self.batches.values(), key=lambda b: b.index, reverse=True)
