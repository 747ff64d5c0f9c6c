"""A demo conversation saved as a ``DialogueSample``, into a shard directory.

The contract names each sample's task (``<input>_<output>_<dependency>_<depth>``) and checks the
turns against it; here the task follows from the conversation and from the turns the user says
the last request depends on:

    input       ``ti`` when the last user turn holds an image (an upload, or ``[image N]``)
    output      the last answer: its one image (``i``), or that image then text (``ti``)
    dependency  the modality (``t``/``i``) of the chosen turns and how many rounds they span
    depth       ``1``, or ``n`` when rounds lie between them and the last request: those rounds
                are recorded as distractors (they are not what the request depends on)

A conversation that never drew is a ``chat`` sample (or ``vqa`` when it opened with an image).
The stage is the one whose dialogues have that shape (``c`` for an interleaved answer, ``b`` for
depth n, else ``a``). Saves go through ``ShardWriter``, one shard file per save, so the
directory is what ``synth inspect``, the notebook and ``datasets.load_dataset("parquet",
data_dir=...)`` read; saving the same conversation again writes nothing.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from pathlib import Path

import pyarrow.parquet as pq

from synth.contract import DialogueSample, ImageRecord, Provenance, SampleStage, Turn
from synth.shards import ShardWriter, sample_files
from taxonomy import TaskName


def dependency_choices(turns: Sequence[Turn]) -> list[tuple[str, int]]:
    """(label, turn index) of each turn before the last request, for the page's checkboxes."""
    last_user = max((i for i, t in enumerate(turns) if t.role == "user"), default=0)
    choices = []
    for i, turn in enumerate(turns[:last_user]):
        what = ", ".join(
            _short(part.text) if part.text is not None else f"image {(part.image or 0) + 1}"
            for part in turn.parts
        )
        choices.append((f"turn {i + 1} ({turn.role}): {what}", i))
    return choices


def conversation_sample(
    turns: Sequence[Turn],
    images: Sequence[ImageRecord],
    depends_on: Sequence[int] = (),
    seed: int = 0,
) -> DialogueSample:
    """The conversation as a sample of the task its shape makes (see the module docstring);
    ``ValueError`` saying what to change where no task fits."""
    if len(turns) < 2 or turns[-1].role != "assistant":
        raise ValueError("nothing to save yet: the conversation needs at least one answer")
    final = len(turns) - 2
    deps = sorted(set(depends_on))
    if any(not 0 <= t < final for t in deps):
        raise ValueError(f"the last request is turn {final + 1}; it can depend on turns before it")
    held = [[p.image for p in t.parts if p.type == "image"] for t in turns]
    if not any(held[i] for i in range(1, len(turns), 2)):
        return _aux_sample(turns, images, deps, seed, opened_with_image=bool(held[0]))

    kinds = [p.type for p in turns[-1].parts]
    if kinds.count("image") != 1 or kinds[0] != "image":
        raise ValueError(
            f"the last answer is {' + '.join(kinds)}; a saved dialogue ends on an answer that "
            "starts with its one image (the contract's tasks). Undo it and ask again with "
            "'draw', or save before it"
        )
    dependency, depth, distractors = "0", "0", []
    if deps:
        modalities = {"i" if held[t] else "t" for t in deps}
        if len(modalities) > 1:
            raise ValueError(
                "the last request depends on turns with images and on text-only turns; "
                "choose the one kind it really needs"
            )
        rounds = {t // 2 for t in deps}
        dependency = modalities.pop() + ("1" if len(rounds) == 1 else "n")
        between = sorted(set(range(min(rounds), final // 2)) - rounds)
        distractors = [t for r in between for t in (2 * r, 2 * r + 1)]
        depth = "n" if between else "1"
    inputs, outputs = "ti" if held[final] else "t", "i" if kinds == ["image"] else "ti"
    task = TaskName.parse(f"{inputs}_{outputs}_{dependency}_{depth}")
    stage: SampleStage = "c" if task.output == "ti" else "b" if depth == "n" else "a"
    provenance = Provenance(seed=seed, depends_on=tuple(deps), distractor_turns=tuple(distractors))
    return _sample(str(task), stage, turns, images, provenance)


def _aux_sample(
    turns: Sequence[Turn],
    images: Sequence[ImageRecord],
    deps: list[int],
    seed: int,
    opened_with_image: bool,
) -> DialogueSample:
    if deps:
        raise ValueError(
            "a conversation without drawn images is saved as chat or VQA, which record no "
            "dependencies; clear them"
        )
    task = "vqa" if opened_with_image else "chat"
    return _sample(task, "source", turns, images, Provenance(seed=seed))


def _sample(
    task: str,
    stage: SampleStage,
    turns: Sequence[Turn],
    images: Sequence[ImageRecord],
    provenance: Provenance,
) -> DialogueSample:
    """The sample, its id a hash of what was said and shown (the same conversation, the same id)."""
    digest = hashlib.sha256()
    for turn in turns:
        digest.update(turn.model_dump_json().encode())
    for image in images:
        digest.update(hashlib.sha256(image.data).digest())
    return DialogueSample(
        sample_id=f"demo-{digest.hexdigest()[:16]}",
        task=task,
        stage=stage,
        turns=tuple(turns),
        images=tuple(images),
        provenance=provenance,
    )


def save_sample(
    sample: DialogueSample, directory: Path, lock: threading.Lock, source: str = ""
) -> Path:
    """Append ``sample`` to the shard directory; the shard file that holds it."""
    with lock:
        for path in sample_files(directory):
            ids = pq.read_table(path, columns=["sample_id"]).column("sample_id").to_pylist()
            if sample.sample_id in ids:
                return path
        with ShardWriter(directory, config={"written_by": "python -m train demo"}) as writer:
            writer.add(sample)
            writer.mark(writer.cursor + 1)
            manifest = writer.close({"samples": writer.cursor, "model": source})
        return directory / manifest.shards[-1].file


def _short(text: str, width: int = 48) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
