"""Small, valid dialogue samples for tests, built through the real contract."""

from __future__ import annotations

import io
import random

from PIL import Image

from synth.contract import (
    DialogueSample,
    ImageRecord,
    LLMCall,
    Part,
    Provenance,
    Turn,
    make_sample_id,
)
from taxonomy import TaskName


def png_bytes(seed: int, size: tuple[int, int] = (24, 16)) -> bytes:
    rng = random.Random(seed)
    img = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    for _ in range(20):
        img.putpixel((rng.randrange(size[0]), rng.randrange(size[1])), (rng.randrange(256), 0, 0))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def llm_call(operation: str, text: str, language: str = "en") -> LLMCall:
    return LLMCall(
        operation=operation,
        template_version="test0001",
        backend="template",
        model="template-v1",
        language=language,
        prompt=f"prompt for {operation}",
        response=f"<Result><User>{text}</User></Result>",
        results=(text,),
        chosen=0,
    )


def build_sample(task: str, seed: int = 0, distractors: int = 2) -> DialogueSample:
    """A structurally correct sample of ``task`` (any stage a/b/c task of the taxonomy)."""
    name = TaskName.parse(task)
    images: list[ImageRecord] = []
    calls: list[LLMCall] = []
    turns: list[Turn] = []

    def image(caption: str) -> int:
        images.append(
            ImageRecord(
                data=png_bytes(seed * 100 + len(images)),
                source="test",
                source_row=str(seed * 100 + len(images)),
                caption=caption,
            )
        )
        return len(images) - 1

    def text(op: str, body: str) -> Part:
        calls.append(llm_call(op, body))
        return Part.of_text(body, call=len(calls) - 1)

    def generate(caption: str) -> int:
        turns.append(
            Turn(role="user", parts=(text("caption2query", f"Please display {caption}."),))
        )
        index = image(caption)
        turns.append(Turn(role="assistant", parts=(Part.of_image(index, "output"),)))
        return len(turns) - 1

    deps: list[int] = []
    if name.dependency == "t1":
        turns.append(
            Turn(role="user", parts=(text("caption2QA_q", "What are golden retrievers like?"),))
        )
        turns.append(
            Turn(role="assistant", parts=(text("caption2QA_q", "They are friendly dogs."),))
        )
        deps.append(1)
    elif name.dependency == "i1" and name.input == "t":
        deps.append(generate("a dog reading a book"))
    elif name.dependency == "i1":
        deps.append(generate("a white cat"))
    elif name.dependency == "in":
        deps.append(generate("a white cat"))
        deps.append(generate("a golden retriever"))

    distractor_turns: list[int] = []
    if name.depth == "n":
        for k in range(distractors):
            start = len(turns)
            turns.append(
                Turn(role="user", parts=(Part.of_text(f"Tell me a fact about the number {k}."),))
            )
            turns.append(Turn(role="assistant", parts=(Part.of_text(f"{k} is a number."),)))
            distractor_turns += [start, start + 1]

    final_parts = [text("caption2query", "Draw the requested picture.")]
    if name.input == "ti":
        final_parts.insert(0, Part.of_image(image("an uploaded photo"), "upload"))
    turns.append(Turn(role="user", parts=tuple(final_parts)))
    answer = [Part.of_image(image("the answer image"), "output")]
    if name.output == "ti":
        answer.append(text("A_from_caption", "Here is a fact about it."))
    turns.append(Turn(role="assistant", parts=tuple(answer)))

    stage = {"i": "b" if name.depth == "n" else "a", "ti": "c"}[name.output]
    return DialogueSample(
        sample_id=make_sample_id(stage, seed, [f"test:{seed}"], salt=task),
        task=task,
        stage=stage,
        turns=tuple(turns),
        images=tuple(images),
        provenance=Provenance(
            seed=seed,
            depends_on=tuple(deps),
            distractor_turns=tuple(distractor_turns),
            llm_calls=tuple(calls),
        ),
    )
