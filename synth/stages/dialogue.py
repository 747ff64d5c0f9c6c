"""Building dialogue samples turn by turn, and what every stage shares: the stage context,
calling an operation, and turning a failed operation or a broken invariant into a reject."""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from synth.contract import (
    DialogueSample,
    ImageRecord,
    InvariantError,
    LLMCall,
    Part,
    Provenance,
    Reject,
    Turn,
    make_sample_id,
)
from synth.stages.config import Language, RunConfig
from synth.stages.words import detect_language


class Rejected(Exception):
    """Raised inside a stage's build to abandon the item with these rejects."""

    def __init__(self, *rejects: Reject):
        super().__init__(rejects[0].reason if rejects else "rejected")
        self.rejects = list(rejects)


@dataclass
class Dialogue:
    """A sample under construction: turns, images and LLM calls, each appended in order."""

    turns: list[Turn] = field(default_factory=list)
    images: list[ImageRecord] = field(default_factory=list)
    calls: list[LLMCall] = field(default_factory=list)

    @classmethod
    def of(cls, sample: DialogueSample) -> Dialogue:
        return cls(list(sample.turns), list(sample.images), list(sample.provenance.llm_calls))

    def image(self, record: ImageRecord) -> int:
        self.images.append(record)
        return len(self.images) - 1

    def call(self, call: LLMCall) -> int:
        self.calls.append(call)
        return len(self.calls) - 1

    def text(self, text: str, call: LLMCall | None = None) -> Part:
        return Part.of_text(text, call=None if call is None else self.call(call))

    def upload(self, record: ImageRecord) -> Part:
        return Part.of_image(self.image(record), "upload")

    def output(self, record: ImageRecord) -> Part:
        return Part.of_image(self.image(record), "output")

    def user(self, *parts: Part) -> int:
        assert len(self.turns) % 2 == 0, "a user turn follows an assistant turn"
        self.turns.append(Turn(role="user", parts=tuple(parts)))
        return len(self.turns) - 1

    def assistant(self, *parts: Part) -> int:
        assert len(self.turns) % 2 == 1, "an assistant turn follows a user turn"
        self.turns.append(Turn(role="assistant", parts=tuple(parts)))
        return len(self.turns) - 1

    def extend(self, other: Dialogue) -> None:
        """Append another dialogue's turns, renumbering its image and call references."""
        img0, call0 = len(self.images), len(self.calls)
        self.images += other.images
        self.calls += other.calls
        for turn in other.turns:
            parts = tuple(
                p.model_copy(update={"image": p.image + img0})
                if p.image is not None
                else p.model_copy(update={"call": p.call + call0})
                if p.call is not None
                else p
                for p in turn.parts
            )
            self.turns.append(Turn(role=turn.role, parts=parts))

    def build(
        self,
        *,
        sample_id: str,
        task: str,
        stage: str,
        seed: int,
        depends_on: Iterable[int] = (),
        distractor_turns: Iterable[int] = (),
        parent_id: str | None = None,
    ) -> DialogueSample:
        """The finished sample, its ``images`` in order of first appearance in the turns (a
        stage-b sample inserts distractor images between its parent's); the contract checks
        every invariant here."""
        turns, images = in_order(self.turns, self.images)
        return DialogueSample(
            sample_id=sample_id,
            task=task,
            stage=stage,
            turns=turns,
            images=images,
            provenance=Provenance(
                seed=seed,
                depends_on=tuple(depends_on),
                distractor_turns=tuple(distractor_turns),
                llm_calls=tuple(self.calls),
                parent_id=parent_id,
            ),
        )


def in_order(
    turns: Sequence[Turn], images: Sequence[ImageRecord]
) -> tuple[tuple[Turn, ...], tuple[ImageRecord, ...]]:
    """``images`` reordered by first appearance in ``turns``, the parts renumbered to match.
    An image no turn references keeps its place after the others (the contract refuses it)."""
    order: dict[int, int] = {}  # old index -> new
    for turn in turns:
        for part in turn.parts:
            if part.image is not None and part.image not in order:
                order[part.image] = len(order)
    for index in range(len(images)):
        order.setdefault(index, len(order))
    if all(old == new for old, new in order.items()):
        return tuple(turns), tuple(images)
    placed: list[ImageRecord | None] = [None] * len(images)
    for old, new in order.items():
        if old < len(images):
            placed[new] = images[old]
    renumbered = tuple(
        Turn(
            role=turn.role,
            parts=tuple(
                p.model_copy(update={"image": order[p.image]}) if p.image is not None else p
                for p in turn.parts
            ),
        )
        for turn in turns
    )
    return renumbered, tuple(image for image in placed if image is not None)


@dataclass(frozen=True)
class Origin:
    """What a reject of one work item names: stage, task, sample id and its source rows."""

    stage: str
    task: str
    sample_id: str
    refs: Sequence[str]
    payload: dict[str, Any]

    def reject(self, reason: str, detail: str, operation: str = "") -> Reject:
        source, _, row = (self.refs[0] if self.refs else "").partition(":")
        return Reject(
            stage=self.stage,
            reason=reason,
            detail=detail,
            source=source,
            source_row=row,
            task=self.task,
            operation=operation,
            sample_id=self.sample_id,
            payload=json.dumps(self.payload, ensure_ascii=False, default=str),
        )


class StageContext:
    """What a build function needs: the config, the LLM backend, the item's own RNG, and the
    dialogue's language (every operation of a dialogue answers in one language; the build
    sets it before the first operation)."""

    def __init__(
        self,
        cfg: RunConfig,
        backend: Any,
        origin: Origin,
        rng: random.Random,
        language: Language | None = None,
    ):
        self.cfg, self.backend, self.origin, self.rng = cfg, backend, origin, rng
        self.language = language

    def fork(self) -> StageContext:
        """A context with a child RNG drawn now: for operations that run concurrently, so each
        answer depends on the order of ``fork`` calls, never on the order the answers arrive."""
        child = random.Random(self.rng.getrandbits(64))
        return StageContext(self.cfg, self.backend, self.origin, child, self.language)

    async def op(self, name: str, inputs: dict[str, Any]) -> Any:
        """Run one operation; a rejected answer abandons the item with the op's reject."""
        from ops import run_op

        result = await run_op(self.backend, name, inputs, self.rng, language=self.language)
        if not result.ok:
            o = self.origin
            source, _, row = (o.refs[0] if o.refs else "").partition(":")
            raise Rejected(
                result.to_reject(
                    stage=o.stage,
                    source=source,
                    source_row=row,
                    task=o.task,
                    sample_id=o.sample_id,
                    payload=json.dumps(o.payload, ensure_ascii=False, default=str),
                )
            )
        return result


def dialogue_language(sample: DialogueSample) -> Language:
    """The language a sample's operations answered in (its first call that says), else the
    language of its final request."""
    for call in sample.provenance.llm_calls:
        if call.language in ("en", "zh"):
            return call.language  # type: ignore[return-value]
    return detect_language(sample.turns[sample.final_turn].text)


def final_query_language(sample: DialogueSample) -> Language:
    """The language of the final query: its LLM call's, else its script's (copied text)."""
    calls = sample.provenance.llm_calls
    for part in sample.turns[sample.final_turn].parts:
        if part.type == "text" and part.text:
            if part.call is not None and calls[part.call].language in ("en", "zh"):
                return calls[part.call].language  # type: ignore[return-value]
            return detect_language(part.text)
    return dialogue_language(sample)


def sample_id(stage: str, seed: int, refs: Sequence[str], task: str) -> str:
    return make_sample_id(stage, seed, list(refs), salt=task)


def invariant_reject(origin: Origin, err: InvariantError) -> Reject:
    """A sample that breaks the contract is a bug or bad data: keep it as a reject, not a crash."""
    return origin.reject(f"invariant:{err.invariant}", str(err))
