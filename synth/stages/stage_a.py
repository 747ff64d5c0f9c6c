"""Stage a: basic multi-turn construction (paper section 3.3).

One build function per task of the taxonomy table, each reading top to bottom as the dialogue
it writes. Text copied from a source row (an edit instruction) cites no LLM call; text an
operation wrote cites its call. Images are the source's encoded bytes, never re-encoded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from synth.contract import DialogueSample, Part, Reject
from synth.sources import (
    ComposeRow,
    EditChain,
    EditRow,
    SourcesFile,
    SubjectRow,
    T2IRow,
    iter_source_rows,
)
from synth.stages.config import Language, RunConfig
from synth.stages.dialogue import Dialogue, Origin, StageContext, sample_id
from synth.stages.plan import WorkItem, plan_stage_a
from synth.stages.words import detect_language

Build = Callable[[StageContext, Dialogue, Any], Awaitable[tuple[int, ...]]]


async def t_i_0_0(ctx: StageContext, d: Dialogue, row: T2IRow | SubjectRow) -> tuple[int, ...]:
    query = await ctx.op("caption2query", {"caption": row.caption})
    d.user(d.text(query.text, query.call))
    d.assistant(d.output(row.record()))
    return ()


async def t_i_t1_1(ctx: StageContext, d: Dialogue, row: T2IRow | SubjectRow) -> tuple[int, ...]:
    qa = await ctx.op("caption2QA_q", {"caption": row.caption})
    call = d.call(qa.call)  # one call wrote the question, the answer and the request
    question, answer, request = qa_texts(qa)
    d.user(Part.of_text(question, call=call))
    d.assistant(Part.of_text(answer, call=call))
    d.user(Part.of_text(request, call=call))
    d.assistant(d.output(row.record()))
    return (0, 1)


async def ti_i_0_0(ctx: StageContext, d: Dialogue, edit: EditRow) -> tuple[int, ...]:
    d.user(d.upload(edit.source_record()), d.text(edit.instruction))
    d.assistant(d.output(edit.target_record()))
    return ()


async def t_i_i1_1(ctx: StageContext, d: Dialogue, edit: EditRow | EditChain) -> tuple[int, ...]:
    if isinstance(edit, EditChain):
        return edit_chain(d, edit)
    query = await ctx.op("caption2query", {"caption": edit.source_caption})
    d.user(d.text(query.text, query.call))
    generated = d.assistant(d.output(edit.source_record()))
    d.user(d.text(edit.instruction))
    d.assistant(d.output(edit.target_record()))
    return (generated,)


def edit_chain(d: Dialogue, chain: EditChain) -> tuple[int, ...]:
    """Real consecutive edits (MagicBrush sessions): the user uploads the first image with the
    first instruction, then each instruction edits the image the turn before produced. Every
    text is the source's own; the final edit depends on the previous output (``t_i_i1_1``)."""
    first, *rest = chain.steps
    d.user(d.upload(first.source_record()), d.text(first.instruction))
    previous = d.assistant(d.output(first.target_record()))
    for step in rest:
        d.user(d.text(step.instruction))
        made = d.assistant(d.output(step.target_record()))
        if step is not rest[-1]:
            previous = made
    return (previous,)


async def t_i_in_1(ctx: StageContext, d: Dialogue, pair: ComposeRow) -> tuple[int, ...]:
    # The three requests depend only on captions: ask for them at once, each with its own RNG
    # drawn first so the answers do not depend on which request finishes first.
    q1, q2, together = await asyncio.gather(
        ctx.fork().op("caption2query", {"caption": pair.first_caption}),
        ctx.fork().op("caption2query", {"caption": pair.second_caption}),
        ctx.fork().op(
            "drive_hs", {"caption_a": pair.first_caption, "caption_b": pair.second_caption}
        ),
    )
    d.user(d.text(q1.text, q1.call))
    a = d.assistant(d.output(pair.first_record()))
    d.user(d.text(q2.text, q2.call))
    b = d.assistant(d.output(pair.second_record()))
    d.user(d.text(together.text, together.call))
    d.assistant(d.output(pair.target_record()))
    return (a, b)


async def ti_i_i1_1(ctx: StageContext, d: Dialogue, pair: ComposeRow) -> tuple[int, ...]:
    # The first subject is generated, the second is the user's upload.
    query, combine = await asyncio.gather(
        ctx.fork().op("caption2query", {"caption": pair.first_caption}),
        ctx.fork().op(
            "drive_i_h",
            {"history_caption": pair.first_caption, "upload_caption": pair.second_caption},
        ),
    )
    d.user(d.text(query.text, query.call))
    a = d.assistant(d.output(pair.first_record()))
    d.user(d.upload(pair.second_record()), d.text(combine.text, combine.call))
    d.assistant(d.output(pair.target_record()))
    return (a,)


BUILDERS: dict[str, Build] = {
    "t_i_0_0": t_i_0_0,
    "t_i_t1_1": t_i_t1_1,
    "ti_i_0_0": ti_i_0_0,
    "t_i_i1_1": t_i_i1_1,
    "t_i_in_1": t_i_in_1,
    "ti_i_i1_1": ti_i_i1_1,
}


def qa_texts(result: Any) -> tuple[str, str, str]:
    """The (question, answer, follow-up request) of a caption2QA_q result."""
    item = result.item
    return item.question, item.answer, item.request


class StageA:
    """Stage a as the runner sees it: a plan over source rows, and a build per item."""

    name = "a"

    def __init__(self, cfg: RunConfig, sources: SourcesFile):
        self.cfg, self.sources = cfg, sources

    def items(self) -> Iterator[WorkItem | Reject]:
        streams = [
            (spec.name, spec.kind, iter_source_rows(spec, self.sources.base_dir))
            for spec in self.sources.sources
        ]
        return plan_stage_a(streams, self.cfg.task_weights, self.cfg.seed)

    def origin(self, item: WorkItem) -> Origin:
        sid = sample_id("a", self.cfg.seed, item.refs, item.task)
        return Origin("a", item.task, sid, item.refs, {"task": item.task, "rows": item.refs})

    def key(self, item: WorkItem) -> str:
        return item.key

    def _language(self, item: WorkItem, ctx: StageContext) -> Language:
        """An edit dialogue speaks the language of its (copied) instruction; any other draws
        one from ``languages``."""
        if isinstance(item.row, EditRow):
            return detect_language(item.row.instruction)
        if isinstance(item.row, EditChain):
            return detect_language(" ".join(step.instruction for step in item.row.steps))
        langs = [k for k, w in self.cfg.languages.items() if w > 0]
        return ctx.rng.choices(langs, [self.cfg.languages[k] for k in langs])[0]

    async def build(self, item: WorkItem, ctx: StageContext) -> DialogueSample:
        ctx.language = self._language(item, ctx)
        d = Dialogue()
        depends_on = await BUILDERS[item.task](ctx, d, item.row)
        return d.build(
            sample_id=ctx.origin.sample_id,
            task=item.task,
            stage="a",
            seed=self.cfg.seed,
            depends_on=depends_on,
        )
