"""Dialogues and shards for the train/data tests, built through the real contract and writer."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from builders import build_sample, png_bytes

from synth.contract import DialogueSample, ImageRecord, Part, Provenance, Turn, make_sample_id
from synth.shards import ShardConfig, ShardWriter
from taxonomy import TASKS
from train.data import DataConfig, Transforms, default_tokenizer_path, load_tokenizer

TOKENIZER = load_tokenizer(default_tokenizer_path())
TINY = DataConfig.tiny()
TINY_TRANSFORMS = Transforms.from_config(TINY)
SIZES = [(24, 16), (16, 40), (64, 64), (100, 30), (33, 47)]


def aux_sample(task: str, seed: int) -> DialogueSample:
    """A ``vqa`` (image question, text answer) or ``chat`` (text only) sample, 1-2 rounds."""
    rng = random.Random(seed)
    images = []
    turns = []
    for r in range(1 + seed % 2):
        parts = [Part.of_text(f"Question {r}: what is {rng.randrange(100)} plus 1?")]
        if task == "vqa" and r == 0:
            images.append(ImageRecord(data=png_bytes(seed), source="t", source_row=str(seed)))
            parts.insert(0, Part.of_image(0, "upload"))
        turns.append(Turn(role="user", parts=tuple(parts)))
        turns.append(Turn(role="assistant", parts=(Part.of_text(f"It is {r} and more."),)))
    return DialogueSample(
        sample_id=make_sample_id("source", seed, [f"{task}:{seed}"]),
        task=task,
        stage="source",
        turns=tuple(turns),
        images=tuple(images),
        provenance=Provenance(seed=seed),
    )


def sample(task: str, seed: int) -> DialogueSample:
    """A valid sample of any task, its images resized to a seeded mix of shapes."""
    if task in ("vqa", "chat"):
        s = aux_sample(task, seed)
    else:
        s = build_sample(task, seed=seed, distractors=1 + seed % 2)
    rng = random.Random(seed)
    images = tuple(
        img.model_copy(update={"data": png_bytes(seed * 7 + i, rng.choice(SIZES))})
        for i, img in enumerate(s.images)
    )
    sid = make_sample_id(s.stage, seed, [f"{task}:{seed}"])
    return s.model_copy(update={"images": images, "sample_id": sid})


ALL_TASKS = [*sorted(TASKS), "chat", "vqa"]


def random_samples(n: int, seed: int = 0) -> list[DialogueSample]:
    rng = random.Random(seed)
    return [sample(rng.choice(ALL_TASKS), seed * 10_000 + i) for i in range(n)]


def write_shards(
    out: Path, samples: list[DialogueSample], row_group_rows: int = 4, max_rows: int = 16
) -> Path:
    shard = ShardConfig(max_rows=max_rows, row_group_rows=row_group_rows)
    with ShardWriter(out, shard=shard) as writer:
        for i, s in enumerate(samples):
            writer.add(s)
            writer.mark(i + 1)
    return out


def serialize(s: DialogueSample, seed: int = 0):
    from train.data import serialize_dialogue

    return serialize_dialogue(s, TOKENIZER, TINY_TRANSFORMS, np.random.default_rng(seed))
