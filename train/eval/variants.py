"""The three histories a final turn is scored under (the context probes' inputs).

    true      the dialogue as synthesized
    replaced  each dependency turn (``provenance.depends_on``) swapped for an unrelated turn of
              the same kind, at the same position, from another dialogue of the evaluation
              pool; every other turn, the distractors included, is kept as it is
    none      the final round alone (the last user turn and its answer)

A turn's kind is its role and the types of its parts in order, e.g. an assistant turn holding
one generated image, or a user question in text; a Q&A dependency (both turns of a round) is
replaced by one donor round, so the question and answer stay a pair. A donor is *unrelated*
when its dialogue shares no source image (``source``, ``source_row``) with the target, is not
its parent or child, and the donor turns differ from the ones they replace. Among those, the
donor rounds that are dependencies in their own dialogue come first (a generated image the user
later refers to is replaced by another such image), then the closest token count (so positions
after the swap move as little as possible), then a seeded draw keyed by the two sample ids (the
choice does not depend on the pool's order). The donor's LLM-call references are dropped: the
copied text is kept verbatim.

The replaced variant is re-validated against the data contract; the no-history variant is not
a valid sample of its task (its dependencies are gone on purpose) and is built unvalidated.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from synth.contract import DialogueSample, ImageRecord, Part, Provenance, Turn

Variant = Literal["true", "replaced", "none"]
VARIANTS: tuple[Variant, ...] = ("true", "replaced", "none")

TurnKind = tuple[str, ...]


def turn_kind(turn: Turn) -> TurnKind:
    """Role, then the type of each part: ``("assistant", "image")``, ``("user", "image", "text")``."""
    return (turn.role, *(p.type for p in turn.parts))


@dataclass(frozen=True)
class Donor:
    """Where a replaced round's turns came from."""

    sample_id: str
    turns: tuple[int, ...]
    """The donor dialogue's turns copied, aligned with ``replaced``."""
    replaced: tuple[int, ...]
    """The target dialogue's turns they replace (the same positions in their rounds)."""
    from_dependency: bool
    """The donor turns were dependencies in their own dialogue."""
    token_delta: int
    """Tokens of the donor turns minus tokens of the replaced ones."""


@dataclass(frozen=True)
class HistoryVariants:
    """One dialogue under its histories; a variant is None when it does not exist (no
    dependency to replace, no donor, or no history at all)."""

    true: DialogueSample
    replaced: DialogueSample | None
    none: DialogueSample | None
    donors: tuple[Donor, ...] = ()
    missing: str = ""
    """Why ``replaced`` is None: 'no-dependency' or 'no-donor'."""

    def present(self) -> dict[Variant, DialogueSample]:
        found = {"true": self.true, "replaced": self.replaced, "none": self.none}
        return {v: s for v, s in found.items() if s is not None}  # type: ignore[misc]


@dataclass(frozen=True)
class _Round:
    sample: int
    round: int
    kinds: tuple[TurnKind, TurnKind]
    tokens: tuple[int, int]
    dependency: tuple[bool, bool]


def _sources(sample: DialogueSample) -> frozenset[tuple[str, str]]:
    return frozenset((img.source, img.source_row) for img in sample.images)


def _content(sample: DialogueSample, t: int) -> tuple[object, ...]:
    return tuple(
        p.text if p.type == "text" else hashlib.sha256(sample.images[p.image or 0].data).digest()
        for p in sample.turns[t].parts
    )


def _related(a: DialogueSample, b: DialogueSample) -> bool:
    pa, pb = a.provenance.parent_id, b.provenance.parent_id
    return (
        a.sample_id == b.sample_id
        or pa == b.sample_id
        or pb == a.sample_id
        or (pa is not None and pa == pb)
        or bool(_sources(a) & _sources(b))
    )


def _draw(seed: int, *keys: object) -> int:
    text = "\0".join(map(str, (seed, *keys)))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


class DonorPool:
    """Every history round of ``samples``, indexed by the kinds of its turns.

    ``turn_tokens(sample)`` gives the token count of each turn of a sample as training lays it
    out (``train.data.serialize.plan_dialogue``)."""

    def __init__(
        self,
        samples: Sequence[DialogueSample],
        turn_tokens: Callable[[DialogueSample], list[int]],
        seed: int = 0,
    ):
        self.samples = list(samples)
        self.seed = seed
        self.turn_tokens = turn_tokens
        # keyed by (offsets in the round, kinds at those offsets)
        self._index: dict[tuple[tuple[int, ...], tuple[TurnKind, ...]], list[_Round]] = defaultdict(
            list
        )
        for i, sample in enumerate(self.samples):
            tokens = turn_tokens(sample)
            deps = set(sample.provenance.depends_on)
            for r in range(len(sample.turns) // 2 - 1):  # the final round is never a donor
                u, a = 2 * r, 2 * r + 1
                entry = _Round(
                    i,
                    r,
                    (turn_kind(sample.turns[u]), turn_kind(sample.turns[a])),
                    (tokens[u], tokens[a]),
                    (u in deps, a in deps),
                )
                for offsets in ((0,), (1,), (0, 1)):
                    self._index[offsets, tuple(entry.kinds[o] for o in offsets)].append(entry)

    def donor_for(
        self, target: DialogueSample, turns: tuple[int, ...], exclude: set[int]
    ) -> tuple[_Round, Donor] | None:
        """The donor round for the target's ``turns`` (one round's dependency turns)."""
        r = turns[0] // 2
        offsets = tuple(t - 2 * r for t in turns)
        kinds = tuple(turn_kind(target.turns[t]) for t in turns)
        tokens = self.turn_tokens(target)
        best: tuple[tuple[int, int, int], _Round] | None = None
        for cand in self._index.get((offsets, kinds), []):
            donor = self.samples[cand.sample]
            if cand.sample in exclude or _related(target, donor):
                continue
            if any(
                _content(donor, 2 * cand.round + o) == _content(target, t)
                for o, t in zip(offsets, turns, strict=True)
            ):
                continue
            delta = sum(cand.tokens[o] - tokens[t] for o, t in zip(offsets, turns, strict=True))
            key = (
                0 if all(cand.dependency[o] for o in offsets) else 1,
                abs(delta),
                _draw(self.seed, target.sample_id, donor.sample_id, cand.round),
            )
            if best is None or key < best[0]:
                best = (key, cand)
        if best is None:
            return None
        cand = best[1]
        donor = self.samples[cand.sample]
        return cand, Donor(
            sample_id=donor.sample_id,
            turns=tuple(2 * cand.round + o for o in offsets),
            replaced=turns,
            from_dependency=all(cand.dependency[o] for o in offsets),
            token_delta=sum(
                cand.tokens[o] - tokens[t] for o, t in zip(offsets, turns, strict=True)
            ),
        )

    def variants(self, sample: DialogueSample) -> HistoryVariants:
        """The true, replaced and no-history variants of ``sample``."""
        none = no_history(sample) if len(sample.turns) > 2 else None
        deps = sample.provenance.depends_on
        if not deps:
            return HistoryVariants(sample, None, none, missing="no-dependency")
        by_round: dict[int, list[int]] = defaultdict(list)
        for t in deps:
            by_round[t // 2].append(t)
        swaps: dict[int, tuple[DialogueSample, int]] = {}
        donors: list[Donor] = []
        used: set[int] = set()
        for r in sorted(by_round):
            found = self.donor_for(sample, tuple(by_round[r]), used)
            if found is None:
                return HistoryVariants(sample, None, none, missing="no-donor")
            cand, donor = found
            used.add(cand.sample)
            donors.append(donor)
            for src, dst in zip(donor.turns, donor.replaced, strict=True):
                swaps[dst] = (self.samples[cand.sample], src)
        return HistoryVariants(sample, replace_turns(sample, swaps), none, tuple(donors))


def _assemble(
    pieces: Sequence[tuple[Turn, DialogueSample]], own: DialogueSample
) -> tuple[tuple[Turn, ...], tuple[ImageRecord, ...]]:
    """Turns taken from several samples, with their images renumbered into one list (each
    referenced image once, in order of first use). Text from another sample loses its call."""
    images: list[ImageRecord] = []
    index: dict[tuple[int, int], int] = {}
    turns = []
    for turn, owner in pieces:
        parts = []
        for part in turn.parts:
            if part.type == "image":
                assert part.image is not None and part.origin is not None
                key = (id(owner), part.image)
                if key not in index:
                    index[key] = len(images)
                    images.append(owner.images[part.image])
                parts.append(Part.of_image(index[key], part.origin))
            else:
                parts.append(part if owner is own else Part.of_text(part.text or ""))
        turns.append(Turn(role=turn.role, parts=tuple(parts)))
    return tuple(turns), tuple(images)


def replace_turns(
    sample: DialogueSample, swaps: dict[int, tuple[DialogueSample, int]]
) -> DialogueSample:
    """``sample`` with turn ``t`` replaced by turn ``j`` of ``donor`` for each ``t: (donor, j)``;
    validated against the contract (raises ``InvariantError`` if the swap breaks it)."""
    pieces = [
        (swaps[t][0].turns[swaps[t][1]], swaps[t][0]) if t in swaps else (turn, sample)
        for t, turn in enumerate(sample.turns)
    ]
    turns, images = _assemble(pieces, sample)
    return DialogueSample(
        sample_id=sample.sample_id,
        task=sample.task,
        stage=sample.stage,
        turns=turns,
        images=images,
        provenance=sample.provenance,
    )


def no_history(sample: DialogueSample) -> DialogueSample:
    """The final round alone. Deliberately not a valid sample of its task (a dependency task
    without its dependencies), so it is constructed without the contract's checks."""
    turns, images = _assemble([(t, sample) for t in sample.turns[-2:]], sample)
    prov = sample.provenance
    return DialogueSample.model_construct(
        sample_id=sample.sample_id,
        task=sample.task,
        stage=sample.stage,
        turns=turns,
        images=images,
        provenance=Provenance.model_construct(
            seed=prov.seed,
            depends_on=(),
            distractor_turns=(),
            llm_calls=prov.llm_calls,
            parent_id=prov.parent_id,
        ),
    )
