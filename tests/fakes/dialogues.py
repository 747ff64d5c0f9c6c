"""Realistic shard directories for the stats, inspect and push tests.

Every sample goes through the real contract (invariants checked at construction) and the real
``ShardWriter``; images are real PNG/JPEG files of different sizes; LLM calls carry the backend,
model, template version and language a run would record; Chinese texts are real Chinese.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from synth.contract import (
    DialogueSample,
    ImageRecord,
    LLMCall,
    Part,
    Provenance,
    Reject,
    Turn,
    make_sample_id,
)
from synth.shards import ShardConfig, ShardWriter
from taxonomy import TaskName

BACKENDS = {"openai": "gpt-4o-mini", "gemini": "gemini-2.5-flash"}

# (caption, English query, Chinese query) per subject
SUBJECTS = (
    ("a red fox in snow", "Paint a red fox standing in fresh snow.", "画一只站在新雪中的红狐狸。"),
    ("a lighthouse at dusk", "Show me a lighthouse at dusk.", "给我画一座黄昏时的灯塔。"),
    ("a bowl of ramen", "Create a steaming bowl of ramen.", "生成一碗热气腾腾的拉面。"),
    ("a vintage bicycle", "Draw a vintage bicycle by a wall.", "画一辆靠在墙边的复古自行车。"),
)


def image_bytes(seed: int, size: tuple[int, int], fmt: str = "PNG") -> bytes:
    img = Image.new("RGB", size, ((seed * 53) % 256, (seed * 97) % 256, (seed * 31) % 256))
    ImageDraw.Draw(img).ellipse(
        (size[0] // 4, size[1] // 4, size[0] // 2, size[1] // 2), fill=(250, 250, 250)
    )
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


@dataclass
class _Dialogue:
    """Accumulates turns, images and calls the way a stage appends them."""

    seed: int
    lang: str
    backend: str

    def __post_init__(self) -> None:
        self.turns: list[Turn] = []
        self.images: list[ImageRecord] = []
        self.calls: list[LLMCall] = []

    def image(self, source: str, size: tuple[int, int], fmt: str, caption: str) -> int:
        n = len(self.images)
        data = image_bytes(self.seed * 10 + n, size, fmt)
        self.images.append(
            ImageRecord(data=data, source=source, source_row=f"{self.seed}-{n}", caption=caption)
        )
        return n

    def llm(self, operation: str, text: str, version: str = "v1") -> Part:
        self.calls.append(
            LLMCall(
                operation=operation,
                # a run records the hash of the template file; a stable stand-in per operation
                template_version=hashlib.sha256(f"{operation}/{version}".encode()).hexdigest()[:8],
                backend=self.backend,
                model=BACKENDS[self.backend],
                language=self.lang,
                prompt=f"[{operation}] rewrite for seed {self.seed}",
                response=f"<Result><User>{text}</User></Result>",
                results=(text,),
                chosen=0,
                prompt_tokens=120,
                completion_tokens=30,
            )
        )
        return Part.of_text(text, call=len(self.calls) - 1)

    def round(self, user: list[Part], assistant: list[Part]) -> int:
        self.turns += [
            Turn(role="user", parts=tuple(user)),
            Turn(role="assistant", parts=tuple(assistant)),
        ]
        return len(self.turns) - 1

    def generate(self, k: int) -> int:
        caption, en, zh = SUBJECTS[k % len(SUBJECTS)]
        out = self.image("laion-pop", (64, 48), "PNG", caption)
        return self.round(
            [self.llm("caption2query", zh if self.lang == "zh" else en)],
            [Part.of_image(out, "output")],
        )


def build(
    task: str, seed: int, lang: str = "en", backend: str = "openai", distractors: int = 1
) -> DialogueSample:
    """A sample of ``task`` as the stages would write it. Supported: the stage a/b/c tasks below."""
    name = TaskName.parse(task)
    d = _Dialogue(seed, lang, backend)
    deps: list[int] = []
    if name.dependency == "t1":
        d.round(
            [d.llm("caption2QA_q", "What does a lighthouse do?")],
            [Part.of_text("It guides ships at night.")],
        )
        deps = [0, 1]
    elif name.dependency == "i1":
        deps = [d.generate(seed)]
    distractor_turns: list[int] = []
    if name.depth == "n":
        for k in range(distractors):
            start = len(d.turns)
            d.generate(seed + k + 1)
            distractor_turns += [start, start + 1]

    final: list[Part]
    if name.input == "ti":
        upload = d.image("chelsea", (512, 384), "JPEG", "a cat on a sofa")
        # verbatim source instruction, no LLM call: its language is detected from the script
        final = [
            Part.of_image(upload, "upload"),
            Part.of_text("把猫变成橙色" if lang == "zh" else "make the cat orange"),
        ]
    elif name.dependency == "t1":
        final = [Part.of_text("Create one for me.")]
    elif name.dependency == "i1" and name.depth == "n":
        final = [d.llm("query2dep_q", "Go back to the first picture and add falling snow.")]
    elif name.dependency == "i1":
        final = [Part.of_text("Now add falling snow." if lang == "en" else "现在加上飘落的雪花。")]
    else:
        _, en, zh = SUBJECTS[seed % len(SUBJECTS)]
        final = [d.llm("caption2query", zh if lang == "zh" else en)]
    answer = [Part.of_image(d.image("laion-pop", (96, 64), "PNG", "the answer"), "output")]
    if name.output == "ti":
        final.append(d.llm("Q_from_caption", "Also, where do red foxes live?"))
        answer.append(d.llm("A_from_caption", "Red foxes live across the Northern Hemisphere."))
    d.round(final, answer)

    stage = {"i": "b" if name.depth == "n" else "a", "ti": "c"}[name.output]
    return DialogueSample(
        sample_id=make_sample_id(stage, seed, [f"laion-pop:{seed}"], salt=task),
        task=task,
        stage=stage,
        turns=tuple(d.turns),
        images=tuple(d.images),
        provenance=Provenance(
            seed=seed,
            depends_on=tuple(deps),
            distractor_turns=tuple(distractor_turns),
            llm_calls=tuple(d.calls),
        ),
    )


def reject(stage: str, reason: str, n: int) -> Reject:
    return Reject(
        stage=stage,
        reason=reason,
        detail=f"input {n}: {reason}",
        source="laion-pop",
        source_row=str(n),
    )


def write_dir(
    out: Path,
    samples: list[DialogueSample],
    rejects: list[Reject],
    summary: dict | None = None,
    max_rows: int = 4,
) -> Path:
    """A committed, complete shard directory with several sample files (``max_rows`` per file)."""
    with ShardWriter(
        out,
        config={"stage": samples[0].stage},
        shard=ShardConfig(max_rows=max_rows, row_group_rows=2),
    ) as w:
        for i, sample in enumerate(samples):
            w.add(sample)
            w.mark(i + 1)
        for r in rejects:
            w.add_reject(r)
        w.close(summary or {})
    return out


def stage_a(out: Path) -> Path:
    """8 samples: 4 t_i_0_0 (3 en openai, 1 zh gemini), 2 ti_i_0_0 (source text: en, zh),
    1 t_i_t1_1, 1 t_i_i1_1; 3 rejects; a run summary with tokens and cost."""
    samples = [
        build("t_i_0_0", 0),
        build("t_i_0_0", 1),
        build("t_i_0_0", 2),
        build("t_i_0_0", 3, lang="zh", backend="gemini"),
        build("ti_i_0_0", 4),
        build("ti_i_0_0", 5, lang="zh"),
        build("t_i_t1_1", 6),
        build("t_i_i1_1", 7),
    ]
    rejects = [
        reject("a", "parse:wrong-count", 8),
        reject("a", "parse:wrong-count", 9),
        reject("a", "llm:truncated", 10),
    ]
    # as synth.stages.report writes it: the engine's usage in all and per operation
    llm = {"requests": 11, "cache_hits": 2, "errors": 1, "prompt_tokens": 1000,
           "completion_tokens": 250, "cost_usd": 0.125}  # fmt: skip
    by_op = {
        "caption2query": {**llm, "requests": 9, "prompt_tokens": 800, "cost_usd": 0.1},
        "caption2QA_q": {**llm, "requests": 2, "prompt_tokens": 200, "cost_usd": 0.025},
    }
    summary = {"stage": "a", "llm": llm, "llm_by_operation": by_op}
    return write_dir(out, samples, rejects, summary)


def stage_b(out: Path) -> Path:
    """3 t_i_i1_n samples with 1, 2 and 3 distractor rounds (gemini), 1 reject."""
    samples = [build("t_i_i1_n", 20 + k, backend="gemini", distractors=k + 1) for k in range(3)]
    return write_dir(out, samples, [reject("b", "invariant:task-structure", 30)])


def stage_c(out: Path) -> Path:
    """4 samples: 2 t_ti_0_0 (en, zh) and 2 t_ti_i1_n (2 distractors each); no rejects."""
    samples = [
        build("t_ti_0_0", 40),
        build("t_ti_0_0", 41, lang="zh"),
        build("t_ti_i1_n", 42, distractors=2),
        build("t_ti_i1_n", 43, distractors=2),
    ]
    return write_dir(out, samples, [])
