"""Stage c: interleaved output generation (paper section 3.5).

The final round of a stage-a or stage-b sample gets a general-knowledge question and its answer
about the final image: Q_from_caption asks it from the image's caption, A_from_caption answers
it in the question's language, which is the final query's. The final user turn keeps its parts and gains the question as a
new text part after them (``<query-final> <Q>``: two parts, each citing the call that wrote it,
so the original query stays as it was); the answer becomes the image followed by a text part
with A. The task's output modality becomes ti (t_i_0_0 -> t_ti_0_0).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from synth.contract import DialogueSample, ImageRecord, Part, Turn
from synth.stages.config import RunConfig
from synth.stages.dialogue import (
    Dialogue,
    Origin,
    Rejected,
    StageContext,
    final_query_language,
    sample_id,
)
from synth.stages.plan import plan_from_samples
from taxonomy import INTERLEAVE_OPS, TASKS

Q_OP, A_OP = INTERLEAVE_OPS


class StageC:
    name = "c"

    def __init__(self, cfg: RunConfig, in_dirs: Sequence[Path]):
        self.cfg, self.in_dirs = cfg, in_dirs

    def items(self) -> Iterator[DialogueSample]:
        return plan_from_samples(self.in_dirs)

    def key(self, sample: DialogueSample) -> str:
        return sample.sample_id

    def origin(self, sample: DialogueSample) -> Origin:
        spec = TASKS.get(sample.task)
        task = str(spec.name.interleave()) if spec and spec.name.output == "i" else sample.task
        final_image = self._final_image(sample)
        return Origin(
            "c",
            task,
            sample_id("c", self.cfg.seed, [sample.sample_id], task),
            [f"{final_image.source}:{final_image.source_row}"],
            {"parent_id": sample.sample_id, "task": sample.task},
        )

    @staticmethod
    def _final_image(sample: DialogueSample) -> ImageRecord:
        return sample.images[sample.turns[sample.final_turn + 1].images[0]]

    async def build(self, sample: DialogueSample, ctx: StageContext) -> DialogueSample:
        spec = TASKS.get(sample.task)
        if spec is None or spec.name.output != "i":
            raise Rejected(
                ctx.origin.reject(
                    "stage-c:not-image-output",
                    f"stage c reads stage-a or stage-b output (image answers); sample "
                    f"{sample.sample_id} is {sample.task}",
                )
            )
        caption = self._final_image(sample).caption
        if not caption.strip():
            raise Rejected(
                ctx.origin.reject(
                    "stage-c:no-caption",
                    "the final image has no caption to ask a question about (an edit source "
                    "without target captions); add target_caption to the source",
                )
            )
        # The question joins the final query: it speaks that query's language.
        ctx.language = final_query_language(sample)
        question = await ctx.op(Q_OP, {"caption": caption})
        answer = await ctx.op(
            A_OP, {"caption": caption, "question": question.text, "language": question.language}
        )
        final = sample.final_turn
        d = Dialogue.of(sample)
        q_call, a_call = d.call(question.call), d.call(answer.call)
        user, reply = sample.turns[final], sample.turns[final + 1]
        d.turns[final] = Turn(
            role="user", parts=(*user.parts, Part.of_text(question.text, call=q_call))
        )
        d.turns[final + 1] = Turn(
            role="assistant", parts=(*reply.parts, Part.of_text(answer.text, call=a_call))
        )
        return d.build(
            sample_id=ctx.origin.sample_id,
            task=ctx.origin.task,
            stage="c",
            seed=self.cfg.seed,
            depends_on=sample.provenance.depends_on,
            distractor_turns=sample.provenance.distractor_turns,
            parent_id=sample.sample_id,
        )
