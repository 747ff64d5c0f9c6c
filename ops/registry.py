"""The ten atomic LLM operations of the paper (section 3.2, Table 1), as one table of data.

``OPS[name]`` is an ``OpSpec``: its template (``prompts/<name>.j2``), typed inputs, the layout of
the answer (how many ``<Result>`` blocks, the language and length of each, the tags inside each),
the sentence pool its template samples from, and the validators its results must pass.

Inputs (all strings are non-empty; a misspelt or extra key is an error):

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

caption2QA_q_dep takes the Q&A pair that caption2QA_q already put in the dialogue: stage b is
append-only, so the _dep operation rewrites only the final request and keeps the stage-a turns.
A dialogue picks one result per call with the run's seeded RNG (``ops.run.run_op``), restricted to
the dialogue's language where it has one; the other results stay in provenance.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Annotated, Any, Literal

from jinja2 import Environment, Template
from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError

from ops import validate as v
from ops.parse import ParseRejection, clean, defuse, parse_blocks
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
from ops.validate import FieldCheck, Language, Length, Role, Validator

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class _Frozen(BaseModel):
    # defer_build: a model's validator is built at its first use, so a run pays only for the
    # input and result models of the operations it runs (~60 ms off importing ``ops``).
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
# Dataclasses, not models: they are built from text the parser and the validators have already
# checked; building them as pydantic models was ~12% of parsing a caption2query answer.
@dataclass(frozen=True, slots=True)
class TextResult:
    language: Language
    length: Length
    text: str

    @classmethod
    def of(cls, language: Language, length: Length, texts: list[str]) -> TextResult:
        """The result whose block held ``texts``."""
        return cls(language, length, texts[0])

    @property
    def texts(self) -> tuple[str]:
        return (self.text,)


@dataclass(frozen=True, slots=True)
class TextResults:
    results: tuple[TextResult, ...]


@dataclass(frozen=True, slots=True)
class QAResult:
    language: Language
    question: str
    answer: str
    request: str

    @classmethod
    def of(cls, language: Language, length: Length, texts: list[str]) -> QAResult:
        """The result whose block held ``texts``."""
        question, answer, request = texts
        return cls(language, question, answer, request)

    @property
    def texts(self) -> tuple[str, str, str]:
        return self.question, self.answer, self.request


@dataclass(frozen=True, slots=True)
class QAResults:
    results: tuple[QAResult, ...]


Output = TextResults | QAResults


@dataclass(frozen=True)
class Slot:
    """One ``<Result>`` block: its language ('input' = the ``language`` input) and length."""

    language: Language | Literal["input"]
    length: Length


@dataclass(frozen=True)
class FieldSpec:
    """One tagged field inside a block; ``length`` overrides the block's length class."""

    tag: Literal["User", "Assistant"]
    role: Role
    length: Length | None = None


@dataclass(frozen=True)
class OpSpec:
    name: str
    description: str
    inputs: type[_Frozen]
    output: type[TextResults] | type[QAResults]
    item: type[TextResult] | type[QAResult]
    fields: tuple[FieldSpec, ...]
    tags: tuple[str, ...]  # of the fields, in order
    slots: tuple[Slot, ...]
    pool: Pool | None
    validators: tuple[Validator, ...]
    anchors: tuple[str, ...]  # input fields each request must name something from
    exclude: tuple[str, ...]  # input fields whose words do not count as naming
    max_tokens: int
    template_version: str
    variables: frozenset[str]
    env: Environment = field(repr=False, compare=False)

    @cached_property
    def template(self) -> Template:
        """The compiled template, compiled at first use: importing ``ops`` checks every
        template's variables but compiles none (~4 ms each, most runs use a few)."""
        return self.env.get_template(self.template_name)

    @property
    def results(self) -> int:
        return len(self.slots)

    @property
    def template_name(self) -> str:
        return f"{self.name}.j2"

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

    def languages(self, inputs: _Frozen) -> tuple[Language, ...]:
        return self.languages_of(inputs.model_dump())

    def languages_of(self, values: Mapping[str, Any]) -> tuple[Language, ...]:
        """The language of each result, from the dumped inputs."""
        if self._fixed_languages is not None:
            return self._fixed_languages
        return tuple(
            values["language"] if s.language == "input" else s.language for s in self.slots
        )

    @cached_property
    def _fixed_languages(self) -> tuple[Language, ...] | None:
        """The results' languages where no slot takes the ``language`` input (all but one
        operation): run_op and parse read them for every answer."""
        fixed = tuple(s.language for s in self.slots if s.language != "input")
        return fixed if len(fixed) == len(self.slots) else None

    def render(
        self,
        inputs: Mapping[str, Any] | BaseModel,
        rng: random.Random,
        params: GenerationParams | None = None,
    ) -> LLMRequest:
        """The request for these inputs; ``rng`` draws the sentence structures."""
        return self.render_values(self.validate_inputs(inputs).model_dump(), rng, params)

    def render_values(
        self, values: Mapping[str, Any], rng: random.Random, params: GenerationParams | None = None
    ) -> LLMRequest:
        """``render`` of inputs validated and dumped already (``run_op`` dumps them once)."""
        variables = dict(values)
        if self.pool is not None:
            variables["en_structure"] = rng.choice(self.pool.en)
            variables["zh_structure"] = rng.choice(self.pool.zh)
        context = {k: defuse(x) if isinstance(x, str) else x for k, x in variables.items()}
        prompt = self.template.render(context).strip()
        return LLMRequest(
            operation=self.name,
            messages=(Message("user", prompt),),
            params=params or GenerationParams(max_tokens=self.max_tokens),
            variables=variables,
        )

    def parse(self, text: str, inputs: Mapping[str, Any] | BaseModel) -> Output:
        """The typed output of a response, or ParseRejection(reason, detail)."""
        return self.parse_values(text, self.validate_inputs(inputs).model_dump())

    def parse_values(self, text: str, values: Mapping[str, Any]) -> Output:
        """``parse`` with inputs validated and dumped already (``run_op`` dumps them once)."""
        languages = self.languages_of(values)
        blocks = parse_blocks(text, self.tags, self.results)
        sources = tuple(x for k, x in values.items() if isinstance(x, str) and k != "language")
        groups = {  # the results of each language, in order
            language: v.Group(
                language,
                [clean(t, language) for b in blocks_of for t in blocks[b]],
                limits,
                sources,
            )
            for language, blocks_of, limits in self._layouts[languages]
        }
        validators = {lang: v.needed(self.validators, group) for lang, group in groups.items()}
        texts = {language: group.texts for language, group in groups.items()}
        plan = self._slot_plans[languages]
        if any(validators.values()):  # else every result passes as it is
            # What a FieldCheck reads of the inputs: sources, anchors, exclude.
            inputs = (
                sources,
                tuple(values[name] for name in self.anchors),
                " ".join(values[name] for name in self.exclude),
            )
            for i, slot, language, start, end in plan:
                if validators[language]:
                    checks = validators[language]
                    self._check(i, slot, language, texts[language][start:end], checks, inputs)
        of = self.item.of
        # Of self.item, the type self.output holds (paired in define).
        items: list[Any] = [of(lang, slot.length, texts[lang][b:e]) for _, slot, lang, b, e in plan]
        return self.output(tuple(items))

    def _check(
        self,
        index: int,
        slot: Slot,
        language: Language,
        texts: list[str],
        validators: tuple[Validator, ...],
        inputs: tuple[tuple[str, ...], tuple[str, ...], str],
    ) -> None:
        """Run ``validators`` on each field of result ``index``; the first failure rejects.
        ``inputs`` is what a FieldCheck reads of them: sources, anchors, exclude."""
        for spec, text in zip(self.fields, texts, strict=True):
            check = FieldCheck(
                self.name, index, spec.role, language, spec.length or slot.length, text, *inputs
            )
            for validator in validators:
                failure = validator(check)
                if failure is not None:
                    raise ParseRejection(*failure)

    @cached_property
    def _slot_plans(
        self,
    ) -> dict[tuple[Language, ...], tuple[tuple[int, Slot, Language, int, int], ...]]:
        """For each way the results' languages can come out, each result's index, slot and
        language, and where its fields lie in the texts of its language (``parse_values``)."""
        plans = {}
        width = len(self.fields)
        for langs in self._layouts:
            taken = dict.fromkeys(langs, 0)
            plan = []
            for i, (slot, language) in enumerate(zip(self.slots, langs, strict=True)):
                start = taken[language]
                taken[language] = start + width
                plan.append((i, slot, language, start, start + width))
            plans[langs] = tuple(plan)
        return plans

    @cached_property
    def _layouts(
        self,
    ) -> dict[tuple[Language, ...], tuple[tuple[Language, tuple[int, ...], tuple[int, ...]], ...]]:
        """For each way the results' languages can come out: each language (in order of first
        appearance), the blocks in that language and the character limit of each of their
        fields, in order."""
        layouts = {self.languages_of({"language": lang}) for lang in ("en", "zh")}
        return {
            langs: tuple(
                (
                    language,
                    tuple(b for b, lang in enumerate(langs) if lang == language),
                    tuple(
                        v.MAX_CHARS[(language, f.length or s.length)]
                        for s, lang in zip(self.slots, langs, strict=True)
                        if lang == language
                        for f in self.fields
                    ),
                )
                for language in dict.fromkeys(langs)
            )
            for langs in layouts
        }


def define(
    name: str,
    description: str,
    inputs: type[_Frozen],
    *,
    slots: tuple[Slot, ...],
    fields: tuple[FieldSpec, ...] = (FieldSpec("User", "request"),),
    pool: str | None = None,
    validators: tuple[Validator, ...] = v.REQUEST,
    anchors: tuple[str, ...] = (),
    exclude: tuple[str, ...] = (),
    max_tokens: int = 1024,
    env: Any = None,
) -> OpSpec:
    """Build one table entry, checking its template's variables against its declared inputs."""
    env = env or make_environment()
    template_name = f"{name}.j2"
    pools = load_pools()
    if pool is not None and pool not in pools:
        raise ValueError(f"operation {name!r}: no sentence pool {pool!r} in prompts/pools.yaml")
    declared = frozenset(inputs.model_fields) | (
        frozenset(STRUCTURE_VARIABLES) if pool else frozenset()
    )
    info = inspect_template(env, template_name)
    check_variables(name, template_name, info.variables, declared)
    unknown = set(anchors + exclude) - set(inputs.model_fields)
    assert not unknown, f"{name}: anchors/exclude name no input: {unknown}"
    qa = tuple(f.role for f in fields) == ("question", "answer", "request")
    layout = {
        "slots": repr(slots),
        "fields": repr(fields),
        "validators": ",".join(f.__name__ for f in validators),
    }
    return OpSpec(
        name=name,
        description=description,
        inputs=inputs,
        output=QAResults if qa else TextResults,
        item=QAResult if qa else TextResult,
        fields=fields,
        tags=tuple(f.tag for f in fields),
        slots=slots,
        pool=pools[pool] if pool else None,
        validators=validators,
        anchors=anchors,
        exclude=exclude,
        max_tokens=max_tokens,
        template_version=template_version(info, pools.get(pool or ""), layout),
        variables=declared,
        env=env,
    )


SIX_SHORT = (Slot("en", "short"),) * 3 + (Slot("zh", "short"),) * 3
SIX_LENGTHS = tuple(
    Slot(lang, length) for lang in ("en", "zh") for length in ("short", "medium", "long")
)
QA_FIELDS = (
    FieldSpec("User", "question", "short"),
    FieldSpec("Assistant", "answer", "answer"),
    FieldSpec("User", "request", "short"),
)


def _build() -> dict[str, OpSpec]:
    env = make_environment()
    specs = (
        define("caption2query", "a caption into a request to generate its image", CaptionInput,
               slots=SIX_LENGTHS, pool="request", env=env),
        define("caption2QA_q", "a caption into a Q&A pair and a generic request ('Create one "
               "for me')", CaptionInput, slots=SIX_SHORT, fields=QA_FIELDS, pool="followup",
               max_tokens=2048, env=env),
        define("drive_hs", "a request combining the subjects of the two preceding turns "
               "('Draw them together')", PairInput, slots=SIX_SHORT, pool="compose", env=env),
        define("drive_i_h", "a request combining an uploaded subject with the one of the "
               "preceding turn", UploadInput, slots=SIX_SHORT, pool="compose", env=env),
        define("query2dep_q", "an edit request rewritten to name the earlier image it edits",
               EditInput, slots=SIX_SHORT, validators=v.DEPENDENT, anchors=("caption",),
               exclude=("query",), env=env),
        define("caption2QA_q_dep", "the request after a Q&A turn rewritten to name the subject "
               "discussed ('Generate the dog we discussed earlier')", QAInput, slots=SIX_SHORT,
               pool="followup_dep", validators=v.DEPENDENT, anchors=("caption",), env=env),
        define("drive_hs_dep", "a composition request naming both earlier subjects", PairInput,
               slots=SIX_SHORT, pool="compose", validators=v.DEPENDENT,
               anchors=("caption_a", "caption_b"), env=env),
        define("drive_i_h_dep", "a composition of an upload with a named earlier subject",
               UploadInput, slots=SIX_SHORT, pool="compose", validators=v.DEPENDENT,
               anchors=("history_caption",), env=env),
        define("Q_from_caption", "a general-knowledge question about the image's subject",
               CaptionInput, slots=SIX_SHORT, fields=(FieldSpec("User", "question"),),
               pool="question", validators=v.COMMON, env=env),
        define("A_from_caption", "a factual answer to the Q_from_caption question", AnswerInput,
               slots=(Slot("input", "answer"),), fields=(FieldSpec("Assistant", "answer"),),
               validators=v.COMMON, max_tokens=512, env=env),
    )  # fmt: skip
    return {spec.name: spec for spec in specs}


OPS: Mapping[str, OpSpec] = MappingProxyType(_build())
