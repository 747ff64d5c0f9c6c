"""Stage b: independent single-turn insertion (paper section 3.4).

A depth-1 sample gets k distractor rounds (k drawn from ``distractors``, kinds by
``distractor_mix``) right before its final round, and its final query is rewritten by the
task's ``_dep`` operation so it names what it depends on; the task's depth becomes n. Nothing
the parent made is rewritten: its turns, images and LLM calls are kept (the replaced query's
call stays in provenance), the new query text cites the new call, and ``parent_id`` points at
the parent. Depth-0 samples (t_i_0_0, ti_i_0_0) have nothing to deepen: they stay where they
are, in the stage-a output, and are not work items here, so the outputs of stages a, b and c
hold disjoint samples and can be trained on together.

A distractor must be unrelated to the dependency target: its content words (``words``) may not
meet those of the parent's image captions and user requests. That also rules out the ambiguous
case (a second dog in the history when the rewritten query says "the dog"). Each round's kind is
drawn by ``distractor_mix`` first and a row of that kind is looked for after; when no row of any
kind is unrelated, the sample is rejected with ``stage-b:no-unrelated-distractor``.

The rewrite keeps the dialogue's language, except query2dep_q's: the query it rewrites is an
edit instruction copied from a source row, and putting it into the language the RNG draws from
``languages`` is the operation's job (its results hold both languages), so an edit dialogue's
final query is Chinese as often as ``languages`` asks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synth.contract import DialogueSample, Part, Turn
from synth.sources import ChatRow, SourcesFile, T2IRow, VQARow, iter_source_rows
from synth.stages.config import DistractorKind, RunConfig
from synth.stages.dialogue import (
    Dialogue,
    Origin,
    Rejected,
    StageContext,
    dialogue_language,
    sample_id,
)
from synth.stages.plan import plan_from_samples
from synth.stages.words import content_words, words_of
from taxonomy import TASKS, TaskName

DISTRACTOR_KINDS: tuple[DistractorKind, ...] = ("t2i", "vqa", "chat")
# Random draws from a kind's rows before they are scanned for an unrelated one: most targets
# meet an unrelated row within a few draws, and a scan costs a pass over up to
# ``distractor_pool`` rows.
MAX_DRAWS = 64


@dataclass(frozen=True)
class Distractor:
    kind: str
    row: Any
    words: frozenset[str]

    @property
    def ref(self) -> str:
        return f"{self.row.source}:{self.row.row_id}"


class DistractorPool:
    """The first ``size`` usable rows of each distractor kind, sources of a kind read
    round-robin; rows that are rejects are skipped (stage a already recorded them)."""

    def __init__(self, sources: SourcesFile, size: int):
        self.by_kind: dict[str, list[Distractor]] = {}
        for kind in DISTRACTOR_KINDS:
            streams = [iter_source_rows(s, sources.base_dir) for s in sources.of_kind(kind)]
            rows: list[Distractor] = []
            while streams and len(rows) < size:
                for stream in list(streams):
                    row = next(stream, None)
                    if row is None:
                        streams.remove(stream)
                    elif isinstance(row, T2IRow | VQARow | ChatRow) and len(rows) < size:
                        rows.append(Distractor(kind, row, content_words(_distractor_text(row))))
            self.by_kind[kind] = rows

    def draw(
        self,
        k: int,
        target: frozenset[str],
        weights: Mapping[DistractorKind, float],
        ctx: StageContext,
    ) -> list[Distractor]:
        """``k`` distractors unrelated to ``target``, each of a kind drawn by ``weights``. A kind
        is replaced only when none of its rows is unrelated to the target (then another kind is
        drawn by weight), so the mix holds as asked wherever the pools allow it; ``synth stats``
        shows the kinds drawn next to the weights asked."""
        kinds = [
            kind for kind in DISTRACTOR_KINDS if weights.get(kind, 0) > 0 and self.by_kind[kind]
        ]
        chosen: list[Distractor] = []
        for _ in range(k):
            left = list(kinds)
            candidate = None
            while left and candidate is None:
                kind = ctx.rng.choices(left, [weights[kind] for kind in left])[0]
                candidate = self._unrelated(kind, target, chosen, ctx)
                left.remove(kind)
            if candidate is None:
                sizes = {kind: len(self.by_kind[kind]) for kind in kinds}
                raise Rejected(
                    ctx.origin.reject(
                        "stage-b:no-unrelated-distractor",
                        f"no row of the distractor pool ({sizes}) is unrelated to the target "
                        f"words {sorted(target)[:20]}; add distractor sources of other topics",
                    )
                )
            chosen.append(candidate)
        return chosen

    def _unrelated(
        self, kind: str, target: frozenset[str], chosen: list[Distractor], ctx: StageContext
    ) -> Distractor | None:
        """A random row of ``kind`` unrelated to ``target`` and not chosen yet, or None when
        there is none: ``MAX_DRAWS`` random draws, then one pass over the kind's rows."""
        rows = self.by_kind[kind]
        for _ in range(MAX_DRAWS):
            candidate = ctx.rng.choice(rows)
            if candidate.words.isdisjoint(target) and candidate not in chosen:
                return candidate
        fitting = [r for r in rows if r.words.isdisjoint(target) and r not in chosen]
        return ctx.rng.choice(fitting) if fitting else None

    def check_usable(self, weights: Mapping[DistractorKind, float]) -> None:
        if not any(weights.get(k, 0) > 0 and self.by_kind[k] for k in DISTRACTOR_KINDS):
            sizes = {k: len(v) for k, v in self.by_kind.items()}
            raise ValueError(
                f"stage b has no distractor material: the sources hold usable rows {sizes} and "
                f"distractor_mix is {weights}; add t2i, vqa or chat sources (--sources FILE)"
            )


def _distractor_text(row: Any) -> str:
    if isinstance(row, T2IRow):
        return row.caption
    if isinstance(row, VQARow):
        return f"{row.question}\n{row.answer}"
    return "\n".join(text for _, text in row.turns[:2])


async def _distractor_round(ctx: StageContext, d: Dialogue, item: Distractor) -> None:
    row = item.row
    if isinstance(row, T2IRow):
        query = await ctx.op("caption2query", {"caption": row.caption})
        d.user(d.text(query.text, query.call))
        d.assistant(d.output(row.record()))
    elif isinstance(row, VQARow):
        d.user(d.upload(row.record()), d.text(row.question))
        d.assistant(d.text(row.answer))
    else:  # a chat row: its first exchange
        (_, user), (_, assistant) = row.turns[:2]
        d.user(d.text(user))
        d.assistant(d.text(assistant))


def dep_inputs(sample: DialogueSample, op: str) -> dict[str, str]:
    """The inputs of the ``_dep`` operation, read from the parent sample."""
    turns, images = sample.turns, sample.images
    final = sample.final_turn
    dep_images = [images[i].caption for t in sample.provenance.depends_on for i in turns[t].images]
    if op == "query2dep_q":
        return {"caption": dep_images[0], "query": _query_part(turns[final]).text or ""}
    if op == "caption2QA_q_dep":
        answer_image = turns[final + 1].images[0]
        question, answer = turns[0].text, turns[1].text
        return {"caption": images[answer_image].caption, "question": question, "answer": answer}
    if op == "drive_hs_dep":
        return {"caption_a": dep_images[0], "caption_b": dep_images[1]}
    assert op == "drive_i_h_dep", op
    upload = turns[final].images[0]
    return {"history_caption": dep_images[0], "upload_caption": images[upload].caption}


def _query_part(turn: Turn) -> Part:
    return next(p for p in turn.parts if p.type == "text")


def _depth_zero(sample: DialogueSample) -> bool:
    spec = TASKS.get(sample.task)
    return spec is not None and spec.name.depth == "0"


class StageB:
    name = "b"

    def __init__(self, cfg: RunConfig, in_dirs: Sequence[Path], pool: DistractorPool):
        self.cfg, self.in_dirs, self.pool = cfg, in_dirs, pool
        pool.check_usable(cfg.distractor_mix)

    def items(self) -> Iterator[DialogueSample]:
        return (s for s in plan_from_samples(self.in_dirs) if not _depth_zero(s))

    def key(self, sample: DialogueSample) -> str:
        return sample.sample_id

    def origin(self, sample: DialogueSample) -> Origin:
        name = TaskName.parse(sample.task) if sample.task in TASKS else None
        task = str(name.deepen()) if name is not None and name.depth == "1" else sample.task
        final_image = sample.images[sample.turns[sample.final_turn + 1].images[0]]
        return Origin(
            "b",
            task,
            sample_id("b", self.cfg.seed, [sample.sample_id], task),
            [f"{final_image.source}:{final_image.source_row}"],
            {"parent_id": sample.sample_id, "task": sample.task},
        )

    async def build(self, sample: DialogueSample, ctx: StageContext) -> DialogueSample:
        spec = TASKS.get(sample.task)
        if spec is None or spec.stage != "a":
            raise Rejected(
                ctx.origin.reject(
                    "stage-b:not-a-stage-a-sample",
                    f"stage b reads stage-a output; sample {sample.sample_id} is {sample.task} "
                    f"(stage {sample.stage})",
                )
            )
        ctx.language = dialogue_language(sample)
        deep = TASKS[ctx.origin.task]
        dep_op = deep.operations[-1]
        target = words_of(
            [img.caption for img in sample.images]
            + [t.text for t in sample.turns if t.role == "user"]
        )
        lo, hi = self.cfg.distractors
        k = ctx.rng.randint(lo, hi)
        chosen = self.pool.draw(k, target, self.cfg.distractor_mix, ctx)

        final = sample.final_turn
        d = Dialogue(
            list(sample.turns[:final]), list(sample.images), list(sample.provenance.llm_calls)
        )
        rounds = [Dialogue() for _ in chosen]
        # Forks are drawn in a fixed order before anything runs: answers arriving in any order
        # give the same sample.
        forks = [ctx.fork() for _ in chosen]
        rewrite_ctx = ctx.fork()
        if dep_op == "query2dep_q":
            langs = [lang for lang, w in self.cfg.languages.items() if w > 0]
            weights = [self.cfg.languages[lang] for lang in langs]
            rewrite_ctx.language = rewrite_ctx.rng.choices(langs, weights)[0]
        rewritten, *_ = await asyncio.gather(
            rewrite_ctx.op(dep_op, dep_inputs(sample, dep_op)),
            *(_distractor_round(f, r, c) for f, r, c in zip(forks, rounds, chosen, strict=True)),
        )
        for part_dialogue in rounds:
            d.extend(part_dialogue)
        distractor_turns = range(final, len(d.turns))
        new_call = d.call(rewritten.call)
        query = _query_part(sample.turns[final])
        d.user(
            *(
                Part.of_text(rewritten.text, call=new_call) if part is query else part
                for part in sample.turns[final].parts
            )
        )
        d.turns.append(sample.turns[final + 1])
        return d.build(
            sample_id=ctx.origin.sample_id,
            task=ctx.origin.task,
            stage="b",
            seed=self.cfg.seed,
            depends_on=sample.provenance.depends_on,
            distractor_turns=distractor_turns,
            parent_id=sample.sample_id,
        )
