"""The dialogue data contract: the single source of truth for what a sample is.

One record type flows through every stage (a -> b -> c) and into training:

- ``DialogueSample``: id, task, stage, turns, images and provenance;
- ``Turn``: one message, ``role`` user or assistant, with ordered ``parts``;
- ``Part``: text, or a reference (index into ``images``) to an image that is either a user
  upload or a model output;
- ``ImageRecord``: encoded bytes plus where the image came from and its caption;
- ``Provenance``: which turns the final turn depends on, which turns are distractors, and every
  LLM call (operation, template version, backend, model, language, raw prompt, raw response).

Turn indices are message indices into ``turns``. A dialogue alternates user/assistant,
starts with a user turn and ends with an assistant turn; the *final turn* is the last user turn.
A round is a (user, assistant) pair; a distractor round lists both of its turns.

Its storage form (``datasets.Features`` and the Parquet schema, ``synth.schema``) is what
``to_row`` writes, so a shard directory loads with ``datasets.load_dataset("parquet",
data_dir=DIR)`` as it is, images included.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ops.records import LLMCall as LLMCall  # re-exported: the records operations produce
from ops.records import Reject as Reject
from synth.schema import arrow_schema as arrow_schema  # re-exported: the storage schema
from synth.schema import dataset_features as dataset_features
from taxonomy import TaskName

Role = Literal["user", "assistant"]
PartType = Literal["text", "image"]
ImageOrigin = Literal["upload", "output"]
SampleStage = Literal["a", "b", "c", "source"]

# Samples that are not generation dialogues but share the contract so training can mix them in
# (paper section 4.1, annealing): single-image understanding Q&A and text-only chat.
AUX_TASKS: tuple[str, ...] = ("vqa", "chat")


class InvariantError(ValueError):
    """A sample breaks an invariant of the contract; ``.invariant`` names which one."""

    def __init__(self, invariant: str, message: str, sample_id: str | None = None):
        self.invariant = invariant
        self.sample_id = sample_id
        where = f"sample {sample_id}: " if sample_id else ""
        super().__init__(f"{where}[{invariant}] {message}")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Part(_Model):
    """Text, or an image reference. Exactly the fields of its type are set."""

    type: PartType
    text: str | None = None
    image: int | None = Field(default=None, description="index into DialogueSample.images")
    origin: ImageOrigin | None = None
    call: int | None = Field(
        default=None,
        description="index into provenance.llm_calls of the call that wrote this text; "
        "None when the text came verbatim from a source row",
    )

    @model_validator(mode="after")
    def _fields_match_type(self) -> Part:
        if self.type == "text":
            if self.text is None or self.image is not None or self.origin is not None:
                raise ValueError("a text part has `text` and no `image`/`origin`")
        elif (
            self.text is not None
            or self.image is None
            or self.origin is None
            or self.call is not None
        ):
            raise ValueError("an image part has `image` and `origin`, and no `text`/`call`")
        return self

    @classmethod
    def of_text(cls, text: str, call: int | None = None) -> Part:
        return cls(type="text", text=text, call=call)

    @classmethod
    def of_image(cls, index: int, origin: ImageOrigin) -> Part:
        return cls(type="image", image=index, origin=origin)


class Turn(_Model):
    role: Role
    parts: tuple[Part, ...]

    @property
    def images(self) -> list[int]:
        return [p.image for p in self.parts if p.type == "image" and p.image is not None]

    @property
    def text(self) -> str:
        return "\n".join(p.text for p in self.parts if p.text is not None)


class ImageRecord(_Model):
    data: bytes = Field(repr=False, description="the encoded image file (PNG, JPEG, ...)")
    source: str = Field(description="name of the source dataset, as in the sources file")
    source_row: str = Field(description="row id inside that source")
    caption: str = ""

    @property
    def image(self) -> dict[str, bytes | None]:
        """The bytes as the ``datasets`` Image feature holds them: the Parquet ``image`` field."""
        return {"bytes": self.data, "path": None}


class Provenance(_Model):
    seed: int
    depends_on: tuple[int, ...] = Field(
        default=(), description="turn indices the final turn depends on"
    )
    distractor_turns: tuple[int, ...] = Field(
        default=(), description="turn indices of distractor rounds"
    )
    llm_calls: tuple[LLMCall, ...] = ()
    parent_id: str | None = Field(default=None, description="sample this one was derived from")


class DialogueSample(_Model):
    sample_id: str
    task: str
    stage: SampleStage
    turns: tuple[Turn, ...]
    images: tuple[ImageRecord, ...] = ()
    provenance: Provenance

    @model_validator(mode="after")
    def _check(self) -> DialogueSample:
        check_invariants(self)
        return self

    @property
    def final_turn(self) -> int:
        return len(self.turns) - 2

    @property
    def task_name(self) -> TaskName | None:
        return None if self.task in AUX_TASKS else TaskName.parse(self.task)

    def to_row(self) -> dict[str, Any]:
        """The Arrow/Parquet row (images as ``{"bytes", "path"}`` structs for ``datasets.Image``)."""
        row = self.model_dump(mode="python")
        for img, record in zip(row["images"], self.images, strict=True):
            del img["data"]
            img["image"] = record.image
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> DialogueSample:
        """Inverse of ``to_row``; also accepts rows decoded by ``datasets`` with ``decode=False``."""
        row = dict(row)
        row["images"] = [
            {**{k: v for k, v in img.items() if k != "image"}, "data": _image_bytes(img["image"])}
            for img in row["images"]
        ]
        return cls.model_validate(row)


def _image_bytes(value: Any) -> bytes:
    if isinstance(value, dict) and value.get("bytes") is not None:
        return bytes(value["bytes"])
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    raise ValueError(
        "image field holds no bytes; load the dataset with Image(decode=False) or read it with "
        "synth.shards.iter_samples"
    )


def make_sample_id(stage: str, seed: int, sources: Sequence[str], salt: str = "") -> str:
    """A stable id from what a sample is made of: its sources (``name:row``), stage and seed."""
    payload = json.dumps([stage, int(seed), list(sources), salt], ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


# ---------------------------------------------------------------------------------------------
# Invariants. Each check names the invariant it enforces so a bad sample says what it breaks.


def check_invariants(sample: DialogueSample) -> None:
    sid = sample.sample_id

    def fail(invariant: str, message: str) -> None:
        raise InvariantError(invariant, message, sid)

    turns = sample.turns
    if not sample.sample_id:
        fail("sample-id", "sample_id is empty")
    if len(turns) < 2 or len(turns) % 2:
        fail("turn-structure", f"a dialogue has an even number (>= 2) of turns, got {len(turns)}")
    # One pass over the parts (every sample is checked as it is built, so this is on the hot
    # path of every stage): the per-turn checks raise at once, in turn order; a broken
    # reference is kept and raised after them, as ``_check_references`` orders it.
    n_images = len(sample.images)
    n_calls = len(sample.provenance.llm_calls)
    images: list[list[int]] = []  # the image indices each turn holds
    used: set[int] = set()
    bad_image: tuple[int, int] | None = None
    bad_call: tuple[int, int] | None = None
    for i, turn in enumerate(turns):
        role = turn.role
        if role != ("user" if i % 2 == 0 else "assistant"):
            fail(
                "turn-structure",
                f"turn {i} is {role!r}; turns alternate user/assistant starting with user",
            )
        if not turn.parts:
            fail("turn-structure", f"turn {i} has no parts")
        held: list[int] = []
        for part in turn.parts:
            if part.type == "text":
                if not (part.text or "").strip():
                    fail("empty-text", f"turn {i} has an empty text part")
            else:
                want = "upload" if role == "user" else "output"
                if part.origin != want:
                    fail(
                        "image-origin",
                        f"turn {i} ({role}) holds an image with origin {part.origin!r}; expected {want!r}",
                    )
                index = part.image
                if index is not None:
                    held.append(index)
                    used.add(index)
                    if bad_image is None and not 0 <= index < n_images:
                        bad_image = (i, index)
            call = part.call
            if bad_call is None and call is not None and not 0 <= call < n_calls:
                bad_call = (i, call)
        images.append(held)

    _check_references(sample, bad_image, used, bad_call, fail)
    if sample.task in AUX_TASKS:
        _check_aux_structure(sample, fail)
    else:
        try:
            name = TaskName.parse(sample.task)
        except ValueError as err:
            fail("task-name", str(err))
            return
        _check_stage(sample, name, fail)
        _check_task_structure(sample, name, images, fail)


def _check_references(
    sample: DialogueSample,
    bad_image: tuple[int, int] | None,
    used: set[int],
    bad_call: tuple[int, int] | None,
    fail: Any,
) -> None:
    """The references the parts make (found by ``check_invariants``'s pass), in this order:
    image indices in range, every image used, image bytes, call indices, chosen results."""
    n_images = len(sample.images)
    if bad_image is not None:
        turn, index = bad_image
        fail(
            "image-reference",
            f"turn {turn} references image {index}, but the sample has {n_images} image(s)",
        )
    if len(used) != n_images:  # every index in ``used`` is in range: some image is unused
        unused = sorted(set(range(n_images)) - used)
        fail("image-reference", f"image(s) {unused} are not referenced by any turn")
    for index, image in enumerate(sample.images):
        if not image.data:
            fail("image-bytes", f"image {index} has no bytes")
    calls = sample.provenance.llm_calls
    if bad_call is not None:
        turn, call = bad_call
        fail(
            "call-reference",
            f"turn {turn} cites LLM call {call}, but provenance has {len(calls)} call(s)",
        )
    for k, llm_call in enumerate(calls):
        if llm_call.chosen is not None and not 0 <= llm_call.chosen < len(llm_call.results):
            fail(
                "call-reference",
                f"LLM call {k} chose result {llm_call.chosen} of {len(llm_call.results)}",
            )


def _rounds(turn_indices: Iterable[int]) -> set[int]:
    return {t // 2 for t in turn_indices}


def _check_task_structure(
    sample: DialogueSample, name: TaskName, images: list[list[int]], fail: Any
) -> None:
    """``images``: the image indices each turn holds."""
    turns, prov = sample.turns, sample.provenance
    final = sample.final_turn
    deps, distractors = prov.depends_on, prov.distractor_turns

    if deps or distractors:
        for label, indices in (("depends_on", deps), ("distractor_turns", distractors)):
            if list(indices) != sorted(set(indices)):
                fail("dependency-turns", f"{label} must be sorted and unique, got {list(indices)}")
            for t in indices:
                if not 0 <= t < final:
                    fail(
                        "dependency-turns",
                        f"{label} names turn {t}, which does not precede the final turn {final}",
                    )
        if set(deps) & set(distractors):
            fail(
                "dependency-turns",
                f"turns {sorted(set(deps) & set(distractors))} are both a dependency and a distractor",
            )
        for r in _rounds(distractors):
            if not {2 * r, 2 * r + 1} <= set(distractors):
                fail(
                    "distractor-rounds",
                    f"distractor round {r} must list both turns {2 * r} and {2 * r + 1}",
                )

    # input modality: an upload in the final user turn
    has_upload = bool(images[final])
    if (name.input == "ti") != has_upload:
        fail(
            "task-structure",
            f"task {name} says input {name.input!r}, but the final user turn "
            f"{'has' if has_upload else 'has no'} uploaded image",
        )
    if not any(p.type == "text" for p in turns[final].parts):
        fail("task-structure", f"the final user turn {final} has no text")

    # output modality: exactly one image, then text for 'ti'
    kinds = [p.type for p in turns[final + 1].parts]
    if kinds.count("image") != 1 or kinds[0] != "image":
        fail(
            "task-structure",
            f"the final assistant turn must start with exactly one image, got parts {kinds}",
        )
    has_text = "text" in kinds
    if (name.output == "ti") != has_text:
        fail(
            "task-structure",
            f"task {name} says output {name.output!r}, but the final answer "
            f"{'has' if has_text else 'has no'} text after the image",
        )

    # dependency modality and count
    if name.dependency == "0":
        if deps:
            fail(
                "task-structure", f"task {name} depends on nothing, but depends_on is {list(deps)}"
            )
        return
    if not deps:
        fail("task-structure", f"task {name} depends on history, but depends_on is empty")
    modality = {"i" if images[t] else "t" for t in deps}
    if modality != {name.dependency_modality}:
        fail(
            "task-structure",
            f"task {name} depends on {name.dependency_modality!r} history, but the "
            f"dependency turns {list(deps)} hold {'/'.join(sorted(modality))}",
        )
    dep_rounds = _rounds(deps)
    n_dep_rounds = len(dep_rounds)
    if (n_dep_rounds == 1) != (name.dependency_count == "1"):
        fail(
            "task-structure",
            f"task {name} says {name.dependency_count!r} dependency turn(s), "
            f"but depends_on spans {n_dep_rounds} round(s)",
        )

    # depth: rounds between the first dependency and the final turn
    final_round = final // 2
    between = set(range(min(dep_rounds), final_round)) - dep_rounds
    undeclared = between - _rounds(distractors)
    if undeclared:
        fail(
            "task-structure",
            f"round(s) {sorted(undeclared)} sit between the dependency and the final "
            "turn but are neither dependencies nor distractors",
        )
    if name.depth == "1" and between:
        fail(
            "task-structure",
            f"task {name} has depth 1, but distractor round(s) {sorted(between)} "
            "separate the dependency from the final turn",
        )
    if name.depth == "n" and not between:
        fail(
            "task-structure",
            f"task {name} has depth n, but no distractor round separates the "
            "dependency from the final turn",
        )


def _check_stage(sample: DialogueSample, name: TaskName, fail: Any) -> None:
    stage = sample.stage
    if stage == "c" and name.output != "ti":
        fail("stage", f"stage c makes interleaved (output 'ti') tasks, got {name}")
    if stage in ("a", "b", "source") and name.output != "i":
        fail("stage", f"stage {stage} makes image-output tasks, got {name}")
    if stage in ("a", "source") and name.depth == "n":
        fail(
            "stage", f"stage {stage} makes depth 0/1 tasks; depth n comes from stage b, got {name}"
        )


def _check_aux_structure(sample: DialogueSample, fail: Any) -> None:
    if sample.provenance.depends_on or sample.provenance.distractor_turns:
        fail("task-structure", f"{sample.task} samples carry no dependencies or distractors")
    for i, turn in enumerate(sample.turns):
        if turn.role == "assistant" and turn.images:
            fail(
                "task-structure",
                f"{sample.task} samples answer in text, but turn {i} holds an image",
            )
    if sample.task == "chat" and sample.images:
        fail("task-structure", "chat samples are text-only, but this one holds images")
    if sample.task == "vqa" and not sample.turns[0].images:
        fail("task-structure", "vqa samples upload an image in the first user turn")


def validate_row(row: dict[str, Any]) -> DialogueSample:
    """Parse a Parquet row into a sample; raise ``InvariantError`` naming what is wrong."""
    try:
        return DialogueSample.from_row(row)
    except InvariantError:
        raise
    except ValidationError as err:
        cause = err.errors()[0]
        ctx = cause.get("ctx") or {}
        inner = ctx.get("error")
        if isinstance(inner, InvariantError):
            raise inner from None
        where = ".".join(str(x) for x in cause["loc"])
        raise InvariantError("schema", f"{where}: {cause['msg']}", row.get("sample_id")) from None


# ---------------------------------------------------------------------------------------------
# Storage schemas, derived from the models above.


REJECT_SCHEMA = pa.schema([(name, pa.string()) for name in Reject.model_fields])
