"""The offline ``template`` backend: every operation answered without a model, in both languages.

It is deterministic (a function of the request's operation, variables, seed and attempt), fast,
and honest about what it is: each result is the sampled sentence structure or a frame from
``prompts/template_backend.yaml`` filled with words copied from the inputs (the caption's subject
phrase, its first sentences, the edit query). Chinese results quote the copied fragment inside a
Chinese frame. Provenance marks every call it answers with backend ``template``. It exists so
the whole pipeline runs on a fresh machine in seconds, for dry runs, cost estimates and tests;
the prompts are still rendered and counted as they would be sent.

Token counts use a documented estimate: one token per CJK character, one per four other
characters (rounded up), plus four per message for the chat format.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from collections.abc import Callable, Mapping
from functools import cache, lru_cache
from importlib import resources
from typing import Any

from ops.parse import format_results
from ops.protocol import LLMRequest, LLMResponse
from ops.registry import OPS, OpSpec
from ops.templates import load_yaml
from ops.validate import INSTRUCTION, MAX_CHARS, content_words

_CJK = re.compile(
    r"[\u3000-\u303f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uff00-\uffef]"
)
# A sentence ends at CJK end punctuation, or at ASCII end punctuation followed by whitespace
# ("3.5 metres" and "U.S.Navy" do not end one) unless the word before is an abbreviation.
_SENTENCE_END = re.compile(r"(?<=[。！？])\s*|(?<=[.!?])\s+")
_ABBREVIATION = re.compile(
    r"(?:^|[\s(\"'])(?:(?:[A-Za-z]\.)+|Dr|Mr|Mrs|Ms|St|Mt|Jr|Sr|Prof|Capt|Lt|Col|Gen|Sgt|vs|approx)\.?$"
)
_CLAUSE_END = re.compile(r"[,;:，；：]")
_ARTICLE = re.compile(r"^(a|an|the)\s+", re.IGNORECASE)


def estimate_tokens(text: str) -> int:
    cjk = len(_CJK.findall(text))
    return cjk + math.ceil((len(text) - cjk) / 4)


@cache
def frames() -> dict[str, Any]:
    text = resources.files("prompts").joinpath("template_backend.yaml").read_text("utf-8")
    data: dict[str, Any] = load_yaml(text)
    return data


def _is_chinese(text: str) -> bool:
    return len(_CJK.findall(text)) * 2 >= len(text.replace(" ", ""))


def split_sentences(text: str) -> tuple[str, ...]:
    """``text`` cut into sentences, keeping "U.S. Navy", "e.g. a fox", "Dr. Smith" whole."""
    merged: list[str] = []
    for piece in _SENTENCE_END.split(text.strip()):
        piece = piece.strip()
        if not piece:
            continue
        if merged and merged[-1].endswith(".") and _ABBREVIATION.search(merged[-1]):
            merged[-1] = f"{merged[-1]} {piece}"
        else:
            merged.append(piece)
    return tuple(merged)


@lru_cache(maxsize=4096)
def sentences(caption: str) -> tuple[str, ...]:
    """The caption's sentences, without any that address a model ("ignore the above ...")."""
    parts = split_sentences(caption)
    kept = tuple(s for s in parts if not INSTRUCTION.search(s))
    return kept or parts or (caption.strip(),)


@lru_cache(maxsize=4096)
def subject_phrase(caption: str) -> str:
    """The caption's opening noun phrase: "A lone individual sits on ..." -> "A lone individual"."""
    first = sentences(caption)[0].rstrip(".!?。！？")
    if _is_chinese(first):
        return _CLAUSE_END.split(first)[0][:16]
    spec = frames()
    low = first.lower()
    for opening in sorted(spec["subject_openings"], key=len, reverse=True):
        if low.startswith(opening + " "):
            first = first[len(opening) + 1 :]
            break
    words = _CLAUSE_END.split(first)[0].split()
    stops = set(spec["subject_stops"])
    taken: list[str] = []
    for word in words:
        if taken and (word.lower().strip(".,") in stops or len(taken) == 6):
            break
        taken.append(word)
    phrase = " ".join(taken)
    if not content_words(phrase):
        phrase = " ".join(sorted(content_words(first), key=first.lower().find)[:4]) or first
    return phrase


def _trim(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0] if " " in text[:limit] else text[:limit]
    return cut.rstrip(",;: ")


def _lower_first(text: str) -> str:
    """Lower-case a sentence's capital inside another sentence, but not "I" or an acronym."""
    if not text:
        return text
    word = text.split(" ", 1)[0]
    if word in ("A", "An", "The", "This", "There") or (word[1:].islower() and word != "I"):
        return text[0].lower() + text[1:]
    return text


def _quote(fragment: str, language: str, inline: bool = True) -> str:
    """A copied fragment as it sits in a result: quoted in Chinese, lower-cased inline in English."""
    if language == "zh":
        return str(frames()["zh_quote"]).format(quote=fragment.rstrip("."))
    return _lower_first(fragment) if inline else fragment


def fill(structure: str, content: str) -> str:
    """Put ``content`` where the structure's "..." is; a structure without one is used as is."""
    if "..." not in structure:
        return structure
    before, after = structure.split("...", 1)
    content = content.rstrip(".!?。！？ ") if after.strip() else content
    text = before + content + after
    if not after.strip() and text[-1] not in ".!?。！？”":
        text += "。" if _CJK.search(structure) else "."
    return text


def _phrase(caption: str, length: str, budget: int) -> str:
    parts = sentences(caption)
    if length == "short":
        text = _CLAUSE_END.split(parts[0])[0]
    elif length == "medium":
        text = parts[0]
    else:
        text = " ".join(parts[:2])
    return _trim(text, budget)


def _anchored(caption: str, exclude: str, budget: int) -> str:
    """The shortest opening of the caption that names something the ``exclude`` text does not."""
    for length in ("short", "medium", "long"):
        phrase = _phrase(caption, length, budget)
        if content_words(phrase) - content_words(exclude):
            return phrase
    return _phrase(caption, "long", budget)


def _subject(caption: str) -> str:
    return _ARTICLE.sub("", subject_phrase(caption))


Writer = Callable[[Mapping[str, Any], str, str, random.Random, int], list[str]]


def _request(
    v: Mapping[str, Any], lang: str, length: str, rng: random.Random, lim: int
) -> list[str]:
    structure = v[f"{lang}_structure"]
    return [fill(structure, _quote(_phrase(v["caption"], length, lim - 40), lang))]


def _qa(v: Mapping[str, Any], lang: str, length: str, rng: random.Random, lim: int) -> list[str]:
    spec = frames()
    subject = _quote(_subject(v["caption"]), lang)
    sentence = _quote(_phrase(v["caption"], "long", MAX_CHARS[(lang, "answer")] - 40), lang, False)
    question = rng.choice(spec["qa_question"][lang]).format(subject=subject)
    answer = rng.choice(spec["qa_answer"][lang]).format(sentence=sentence)
    return [question, answer, fill(v[f"{lang}_structure"], "one" if lang == "en" else "一个")]


def _compose(op: str) -> Writer:
    def write(
        v: Mapping[str, Any], lang: str, length: str, rng: random.Random, lim: int
    ) -> list[str]:
        budget = (lim - 60) // 2
        pair = str(frames()["pair"][op][lang])
        if "{" in pair:  # the _dep forms name the subjects; the plain forms say "them"
            b_caption = v.get("caption_b") or v["history_caption"]
            a = _quote(_trim(_subject(v["caption_a"]), budget), lang) if "{a}" in pair else ""
            pair = pair.format(a=a, b=_quote(_trim(_subject(b_caption), budget), lang))
        return [fill(v[f"{lang}_structure"], pair)]

    return write


def _dep_query(
    v: Mapping[str, Any], lang: str, length: str, rng: random.Random, lim: int
) -> list[str]:
    subject = _quote(_anchored(v["caption"], v["query"], (lim - 40) // 2), lang)
    query = _lower_first(v["query"]) if lang == "en" else v["query"]
    return [rng.choice(frames()["dep_query"][lang]).format(subject=subject, query=query)]


def _qa_dep(
    v: Mapping[str, Any], lang: str, length: str, rng: random.Random, lim: int
) -> list[str]:
    return [fill(v[f"{lang}_structure"], _quote(_subject(v["caption"]), lang))]


def _question(
    v: Mapping[str, Any], lang: str, length: str, rng: random.Random, lim: int
) -> list[str]:
    return [fill(v[f"{lang}_structure"], _quote(subject_phrase(v["caption"]), lang))]


def _answer(
    v: Mapping[str, Any], lang: str, length: str, rng: random.Random, lim: int
) -> list[str]:
    sentence = _quote(_phrase(v["caption"], "long", lim - 40), lang, False)
    return [rng.choice(frames()["answer"][lang]).format(sentence=sentence)]


WRITERS: dict[str, Writer] = {
    "caption2query": _request,
    "caption2QA_q": _qa,
    "drive_hs": _compose("drive_hs"),
    "drive_i_h": _compose("drive_i_h"),
    "query2dep_q": _dep_query,
    "caption2QA_q_dep": _qa_dep,
    "drive_hs_dep": _compose("drive_hs_dep"),
    "drive_i_h_dep": _compose("drive_i_h_dep"),
    "Q_from_caption": _question,
    "A_from_caption": _answer,
}
assert set(WRITERS) == set(OPS), "every operation has a template writer"


def answer(spec: OpSpec, variables: Mapping[str, Any], rng: random.Random) -> str:
    """The full response text for one request, in the operation's ``<Result>`` layout.

    The first result of each language uses the structure the prompt shows; later ones of the
    same language draw another from the operation's pool, as a model asked for diversity would.
    """
    inputs = spec.validate_inputs({k: variables[k] for k in spec.inputs.model_fields})
    blocks = []
    seen: set[str] = set()
    for slot, lang in zip(spec.slots, spec.languages(inputs), strict=True):
        limit = min(MAX_CHARS[(lang, f.length or slot.length)] for f in spec.fields)
        values = dict(variables)
        if spec.pool is not None and lang in seen and slot.length == "short":
            values[f"{lang}_structure"] = rng.choice(getattr(spec.pool, lang))
        seen.add(lang)
        texts = WRITERS[spec.name](values, lang, slot.length, rng, limit)
        blocks.append([(f.tag, t) for f, t in zip(spec.fields, texts, strict=True)])
    return format_results(blocks)


class TemplateBackend:
    """A ``Backend`` that fills each operation's answer from its pools, frames and inputs."""

    name = "template"
    max_concurrency: int | None = None

    def __init__(self, model: str = "template-v1"):
        self.model = model

    async def complete(self, request: LLMRequest) -> LLMResponse:
        if request.operation not in OPS:
            raise ValueError(f"the template backend has no operation {request.operation!r}")
        spec = OPS[request.operation]
        key = json.dumps(
            [
                request.operation,
                request.params.seed,
                request.params.attempt,
                dict(request.variables),
            ],
            sort_keys=True,
            ensure_ascii=False,
            default=str,
        )
        rng = random.Random(hashlib.sha256(key.encode()).digest())
        text = answer(spec, request.variables, rng)
        prompt_tokens = sum(estimate_tokens(m.content) + 4 for m in request.messages)
        return LLMResponse(
            text=text,
            finish_reason="stop",
            model=self.model,
            prompt_tokens=prompt_tokens,
            completion_tokens=estimate_tokens(text),
        )

    async def aclose(self) -> None:
        return None
