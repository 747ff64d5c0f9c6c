"""The ten atomic LLM operations of the paper (section 3.2, Table 1), as one table of data.

``OPS[name]`` is an ``OpSpec``: its template (``prompts/<name>.j2``), typed inputs, the layout
of the answer (how many ``<Result>`` blocks, the language and length of each, the tags inside
each), the sentence pool its template samples from, and the subjects its results must point to.

==================  ==========================================  ===============================
operation           inputs                                      results
==================  ==========================================  ===============================
caption2query       caption                                     6 requests: en s/m/l, zh s/m/l
caption2QA_q        caption                                     6 (question, answer, request):
                                                                en x3, zh x3
drive_hs            caption_a, caption_b                        6 requests: en x3, zh x3
drive_i_h           history_caption, upload_caption             6 requests: en x3, zh x3
query2dep_q         caption, query                              6 requests: en x3, zh x3
caption2QA_q_dep    caption, question, answer                   6 requests: en x3, zh x3
drive_hs_dep        caption_a, caption_b                        6 requests: en x3, zh x3
drive_i_h_dep       history_caption, upload_caption             6 requests: en x3, zh x3
Q_from_caption      caption                                     6 questions: en x3, zh x3
A_from_caption      caption, question, language ('en' | 'zh')   1 answer in ``language``
==================  ==========================================  ===============================

Every result is judged on its own by ``ops.validate.CHECKS``: ``parse`` returns all of them with
the refusal of each refused one, and the caller picks among the accepted ones. Only an answer
whose blocks cannot be told apart (a wrong count, a tag outside every block) is refused whole.

caption2QA_q_dep takes the Q&A pair that caption2QA_q already put in the dialogue: stage b is
append-only, so the _dep operation rewrites only the final request and keeps the stage-a turns.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Annotated, Any, Literal

from jinja2 import Template
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError

from ops import validate as v
from ops.parse import Block, blocks_in, clean, defuse, parse_blocks
from ops.protocol import GenerationParams, LLMRequest, Message
from ops.templates import (
    STRUCTURE_VARIABLES,
    Pool,
    check_variables,
    inspect_template,
    load_pools,
    make_environment,
    template_version,
)
from ops.validate import Language, Length, Refusal, Role

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class _Frozen(BaseModel):
    # defer_build: a model's validator is built at its first use, so a run pays only for the
    # input models of the operations it runs.
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


# ---- inputs ----
class CaptionInput(_Frozen):
    caption: Text


class EditInput(_Frozen):
    caption: Text  # of the previously generated image
    query: Text  # the edit request to rewrite


class PairInput(_Frozen):
    caption_a: Text  # the first subject's image
    caption_b: Text  # the second subject's image


class UploadInput(_Frozen):
    history_caption: Text  # the image the model generated earlier
    upload_caption: Text  # the image the user uploads with this request


class QAInput(_Frozen):
    caption: Text
    question: Text  # the Q&A turn already in the dialogue
    answer: Text


class AnswerInput(_Frozen):
    caption: Text
    question: Text
    language: Language  # of the question, hence of the answer


# ---- outputs ----
@dataclass(frozen=True, slots=True)
class TextResult:
    language: Language
    length: Length
    text: str

    @property
    def texts(self) -> tuple[str]:
        return (self.text,)


@dataclass(frozen=True, slots=True)
class QAResult:
    language: Language
    question: str
    answer: str
    request: str

    @property
    def texts(self) -> tuple[str, str, str]:
        return self.question, self.answer, self.request


Item = TextResult | QAResult


# What provenance records for a result no draw needed: the caller stopped at an accepted one.
UNJUDGED = "unjudged"


@dataclass
class Answer:
    """Every result of one answer in slot order, each judged when first asked about
    (``refusal``): a caller that draws one result judges only the results it draws, and
    ``refusals`` judges them all."""

    results: tuple[Item, ...]
    judges: list[Callable[[], Refusal | None]]  # per result: what judging it takes
    verdicts: dict[int, Refusal | None] = field(default_factory=dict)

    def refusal(self, index: int) -> Refusal | None:
        if index not in self.verdicts:
            self.verdicts[index] = self.judges[index]()
        return self.verdicts[index]

    def accepted(self, index: int) -> bool:
        return self.refusal(index) is None

    @property
    def refusals(self) -> tuple[Refusal | None, ...]:
        return tuple(self.refusal(i) for i in range(len(self.results)))

    def provenance(self) -> tuple[str, ...]:
        """Each result's verdict as provenance keeps it: '' accepted, 'reason: detail' refused,
        ``UNJUDGED`` where no draw needed it."""
        return tuple(
            UNJUDGED if i not in self.verdicts else "" if r is None else f"{r[0]}: {r[1]}"
            for i in range(len(self.results))
            for r in [self.verdicts.get(i)]
        )


# ---- the layout of an answer ----
@dataclass(frozen=True)
class Slot:
    """One ``<Result>`` block: its language ('input' = the ``language`` input) and length."""

    language: Language | Literal["input"]
    length: Length


@dataclass(frozen=True)
class FieldSpec:
    """One tagged field inside a block; ``length`` overrides the block's length class. A
    generic field names no subject on purpose ("Create one for me", "Draw them together")."""

    tag: Literal["User", "Assistant"]
    role: Role
    length: Length | None = None
    generic: bool = False


REQUEST = (FieldSpec("User", "request"),)
IMPLICIT = (FieldSpec("User", "request", generic=True),)
QUESTION = (FieldSpec("User", "question"),)
QA = (
    FieldSpec("User", "question", "short"),
    FieldSpec("Assistant", "answer", "answer"),
    FieldSpec("User", "request", "short", generic=True),
)
ANSWER = (FieldSpec("Assistant", "answer"),)
SIX_SHORT = (Slot("en", "short"),) * 3 + (Slot("zh", "short"),) * 3
SIX_LENGTHS = tuple(Slot(lang, n) for lang in ("en", "zh") for n in ("short", "medium", "long"))


@dataclass(frozen=True)
class OpSpec:
    """One operation. ``subjects`` lists, for each subject a result must point to, the input
    fields that describe it; ``exclude`` the input fields whose words do not count."""

    name: str
    description: str
    inputs: type[_Frozen]
    slots: tuple[Slot, ...]
    fields: tuple[FieldSpec, ...] = REQUEST
    pool: Pool | None = None
    subjects: tuple[tuple[str, ...], ...] = ()
    exclude: tuple[str, ...] = ()
    max_tokens: int = 1024
    template_version: str = ""
    variables: frozenset[str] = frozenset()
    examples: frozenset[str] = frozenset()  # fingerprints of the worked examples' texts
    env: ImmutableSandboxedEnvironment | None = None

    @cached_property
    def template(self) -> Template:
        assert self.env is not None
        return self.env.get_template(self.template_name)

    @property
    def results(self) -> int:
        return len(self.slots)

    @property
    def template_name(self) -> str:
        return f"{self.name}.j2"

    @property
    def tags(self) -> tuple[str, ...]:
        return tuple(f.tag for f in self.fields)

    def validate_inputs(self, inputs: Mapping[str, Any] | BaseModel) -> _Frozen:
        if isinstance(inputs, self.inputs):
            return inputs
        data = inputs.model_dump() if isinstance(inputs, BaseModel) else dict(inputs)
        try:
            return self.inputs.model_validate(data)
        except ValidationError as err:
            raise ValueError(
                f"operation {self.name!r} takes inputs {sorted(self.inputs.model_fields)}: {err}"
            ) from err

    def languages(self, inputs: Mapping[str, Any] | BaseModel) -> tuple[Language, ...]:
        """The language of each result, from validated inputs (``language`` fills 'input')."""
        values = inputs if isinstance(inputs, Mapping) else inputs.model_dump()
        return tuple(
            values["language"] if s.language == "input" else s.language for s in self.slots
        )

    def render(
        self,
        inputs: Mapping[str, Any] | BaseModel,
        rng: random.Random,
        params: GenerationParams | None = None,
    ) -> LLMRequest:
        """The request for these inputs; ``rng`` draws the sentence structures."""
        variables = self.validate_inputs(inputs).model_dump()
        if self.pool is not None:
            variables["en_structure"] = rng.choice(self.pool.en)
            variables["zh_structure"] = rng.choice(self.pool.zh)
        context = {k: defuse(x) if isinstance(x, str) else x for k, x in variables.items()}
        return LLMRequest(
            operation=self.name,
            messages=(Message("user", self.template.render(context).strip()),),
            params=params or GenerationParams(max_tokens=self.max_tokens),
            variables=variables,
        )

    def parse(self, text: str, inputs: Mapping[str, Any] | BaseModel) -> Answer:
        """Every result of a response with its verdict; a ParseRejection when the response's
        blocks cannot be told apart."""
        values = self.validate_inputs(inputs).model_dump()
        context = v.Context.of(
            sources=tuple(x for k, x in values.items() if isinstance(x, str) and k != "language"),
            subjects=[(", ".join(names), [values[n] for n in names]) for names in self.subjects],
            exclude=[values[n] for n in self.exclude],
            examples=self.examples,
        )
        blocks = parse_blocks(text, self.results)
        read = [
            self._read(i, slot, language, block, context)
            for i, (slot, language, block) in enumerate(
                zip(self.slots, self.languages(values), blocks, strict=True)
            )
        ]
        return Answer(tuple(item for item, _ in read), [judge for _, judge in read])

    def _read(
        self, index: int, slot: Slot, language: Language, block: Block, context: v.Context
    ) -> tuple[Item, Callable[[], Refusal | None]]:
        """A block's result, and what judging it takes: the checks on its candidate, or the
        refusal of a block whose fields are not the ones asked for."""
        own = [
            (tag, clean(text, language))
            for tag, text in block.fields
            if tag in ("User", "Assistant")
        ]
        texts = [text for _, text in own]
        if tuple(tag for tag, _ in own) != self.tags or block.stray:
            found = [tag for tag, _ in block.fields]
            detail = f"stray tag {block.stray}" if block.stray else f"fields {found}"
            texts = (texts + [""] * len(self.fields))[: len(self.fields)]
            refusal = (
                v.MALFORMED,
                f"result {index + 1} holds {detail}, expected {list(self.tags)} "
                "and Ref/Source pairs",
            )
            return self._item(language, slot, texts), lambda: refusal

        def judge() -> Refusal | None:
            refs = [clean(text, language) for tag, text in block.fields if tag == "Ref"]
            sources = [clean(text, "zh") for tag, text in block.fields if tag == "Source"]
            fields = tuple(
                v.Field.of(f.role, language, f.length or slot.length, text, f.generic)
                for f, text in zip(self.fields, texts, strict=True)
            )
            pairs = tuple(zip(refs, sources, strict=False))
            return v.judge(v.Candidate(index, language, fields, pairs, context))

        return self._item(language, slot, texts), judge

    def _item(self, language: Language, slot: Slot, texts: list[str]) -> Item:
        if len(self.fields) == 3:
            return QAResult(language, *texts)
        return TextResult(language, slot.length, texts[0])


def define(
    name: str,
    description: str,
    inputs: type[_Frozen],
    *,
    slots: tuple[Slot, ...],
    fields: tuple[FieldSpec, ...] = REQUEST,
    pool: str | None = None,
    subjects: tuple[tuple[str, ...], ...] = (),
    exclude: tuple[str, ...] = (),
    max_tokens: int = 1024,
    env: ImmutableSandboxedEnvironment | None = None,
) -> OpSpec:
    """One table entry, its template's variables checked against its declared inputs."""
    env = env or make_environment()
    pools = load_pools()
    if pool is not None and pool not in pools:
        raise ValueError(f"operation {name!r}: no sentence pool {pool!r} in prompts/pools.yaml")
    declared = frozenset(inputs.model_fields) | (
        frozenset(STRUCTURE_VARIABLES) if pool else frozenset()
    )
    info = inspect_template(env, f"{name}.j2")
    check_variables(name, f"{name}.j2", info.variables, declared)
    named = {n for group in subjects for n in group} | set(exclude)
    assert named <= set(inputs.model_fields), f"{name}: subjects/exclude name no input"
    examples = frozenset(
        v.fingerprint(text)
        for block in blocks_in(info.sources[f"{name}.j2"])
        for tag, text in block.fields
        if tag in ("User", "Assistant") and v.fingerprint(text)
    )
    shape = repr((slots, fields, subjects, exclude))
    return OpSpec(
        name, description, inputs, slots, fields, pools.get(pool or ""), subjects, exclude,
        max_tokens, template_version(info, pools.get(pool or ""), {"layout": shape}), declared,
        examples, env,
    )  # fmt: skip


def _build() -> dict[str, OpSpec]:
    env = make_environment()
    caption = (("caption",),)
    specs = (
        define("caption2query", "a caption into a request to generate its image",
               CaptionInput, slots=SIX_LENGTHS, pool="request", subjects=caption, env=env),
        define("caption2QA_q", "a caption into a Q&A pair and a generic request ('Create one "
               "for me')", CaptionInput, slots=SIX_SHORT, fields=QA, pool="followup",
               subjects=caption, max_tokens=2048, env=env),
        define("drive_hs", "a request combining the subjects of the two preceding turns "
               "('Draw them together')", PairInput, slots=SIX_SHORT, fields=IMPLICIT,
               pool="compose", env=env),
        define("drive_i_h", "a request combining an uploaded subject with the one of the "
               "preceding turn", UploadInput, slots=SIX_SHORT, fields=IMPLICIT, pool="compose",
               env=env),
        define("query2dep_q", "an edit request rewritten to name the earlier image it edits",
               EditInput, slots=SIX_SHORT, subjects=caption, exclude=("query",), env=env),
        define("caption2QA_q_dep", "the request after a Q&A turn rewritten to name the subject "
               "discussed ('Generate the dog we discussed earlier')", QAInput, slots=SIX_SHORT,
               pool="followup_dep", subjects=(("caption", "question", "answer"),), env=env),
        define("drive_hs_dep", "a composition request naming both earlier subjects", PairInput,
               slots=SIX_SHORT, pool="compose", subjects=(("caption_a",), ("caption_b",)),
               env=env),
        define("drive_i_h_dep", "a composition of an upload with a named earlier subject",
               UploadInput, slots=SIX_SHORT, pool="compose", subjects=(("history_caption",),),
               env=env),
        define("Q_from_caption", "a general-knowledge question about the image's subject",
               CaptionInput, slots=SIX_SHORT, fields=QUESTION, pool="question",
               subjects=caption, env=env),
        define("A_from_caption", "a factual answer to the Q_from_caption question", AnswerInput,
               slots=(Slot("input", "answer"),), fields=ANSWER, max_tokens=512, env=env),
    )  # fmt: skip
    return {spec.name: spec for spec in specs}


OPS: Mapping[str, OpSpec] = MappingProxyType(_build())
