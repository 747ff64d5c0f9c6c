"""The offline ``template`` backend: every operation answered without a model, in both languages.

It is deterministic (a function of the request's operation, variables, seed and attempt), fast,
and honest about what it is. English results are sentence frames filled with phrases cut from
the inputs at phrase boundaries (``ops.template_text``: a caption's subject noun phrase, its
first clause, its sentences, the edit request), never cut inside a phrase. Chinese results are
Chinese frames filled with Chinese phrases built from a glossary (``prompts/template_backend.
yaml``), so they hold no English except text the caption quotes from the image (a name tag, a
sign). Answers answer: a question about a picture is answered by what the picture shows, worded
as an answer ("It shows ..."), not as a recital of "the description". A result it cannot write
honestly (a Chinese text for a caption whose subject the glossary has no word for, an edit its
edit table does not know) is left empty, and the validators refuse it with ``validate:empty``.
Provenance marks every call it answers with backend ``template``; it exists so the pipeline runs
on a fresh machine in seconds, for dry runs, cost estimates and tests, never as training data.

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
from typing import Any

from ops.parse import format_results
from ops.protocol import LLMRequest, LLMResponse
from ops.registry import OPS, OpSpec
from ops.template_text import (
    CJK,
    bare,
    data,
    definite,
    english_caption,
    first_clause,
    is_chinese,
    is_clause,
    lower_first,
    quoted_text,
    sentences,
    subject_phrase,
    zh_depicting,
    zh_edit,
    zh_items,
    zh_list,
    zh_name,
    zh_subject,
)
from ops.validate import MAX_CHARS

_END = ".!?。！？”"


def estimate_tokens(text: str) -> int:
    cjk = len(CJK.findall(text))
    return cjk + math.ceil((len(text) - cjk) / 4)


def fill(structure: str, content: str) -> str:
    """Put ``content`` where the structure's "..." is; a structure without one is used as is."""
    if "..." not in structure:
        return structure
    before, after = structure.split("...", 1)
    content = content.rstrip(".!?。！？ ") if after.strip() else content
    text = before + content + after
    if not after.strip() and text[-1] not in _END:
        text += "。" if CJK.search(structure) else "."
    return text


def _sentence(text: str) -> str:
    """``text`` ending with a full stop (unless it ends a sentence already)."""
    text = text.strip()
    return text if not text or text[-1] in _END else f"{text}."


def _first_fitting(texts: list[str], limit: int) -> str:
    """The first of ``texts`` within ``limit`` characters; "" (not written) when none is."""
    return next((t for t in texts if 0 < len(t) <= limit), "")


# A writer: (variables, language, length class, rng, character limit) -> the texts of one
# result's fields, "" for a field it cannot write.
Writer = Callable[[Mapping[str, Any], str, str, random.Random, int], list[str]]


def _caption_forms(caption: str, length: str) -> list[tuple[str, str]]:
    """(lead, rest) forms of the caption for a request of ``length``, longest first: the lead
    is a noun phrase or a sentence, the rest whole sentences after it."""
    parts = sentences(caption)
    short = (first_clause(parts[0]), "")
    medium = (parts[0].rstrip("."), "")
    long = (parts[0].rstrip("."), " ".join(parts[1:2]))
    return {"short": [short], "medium": [medium, short], "long": [long, medium, short]}[length]


def _request(
    v: Mapping[str, Any], lang: str, length: str, rng: random.Random, lim: int
) -> list[str]:
    if lang == "zh":
        return [_zh_request(v["zh_structure"], v["caption"], length, rng, lim)]
    caption = english_caption(v["caption"])
    if caption is None:
        return [""]
    texts = []
    for lead, rest in _caption_forms(caption, length):
        structure = v["en_structure"]
        wants_clause = structure.split("...")[0].rstrip().lower().endswith(("where", "in which"))
        clause = is_clause(lead)
        if wants_clause and not clause:
            structure = rng.choice(data()["request"]["en"])
        content = lower_first(lead)
        if clause and not wants_clause:
            content = f"{data()['scene_where']} {content}"
        texts.append(f"{fill(structure, content)} {rest}".strip())
    return [_first_fitting(texts, lim)]


def _zh_request(structure: str, caption: str, length: str, rng: random.Random, lim: int) -> str:
    depicting = zh_depicting(caption)
    if depicting is None:
        return ""
    subject, named = depicting
    if not named:  # "有谷仓的": only structures that read "一张...的图片"
        structure = rng.choice(data()["request"]["zh"])
    structure = re.sub(r"(画面[中里])\.\.\.", r"\1有...", structure)
    text = fill(structure, subject)
    if length == "short":
        return text if len(text) <= lim else ""
    parts = sentences(caption)
    items = zh_items(" ".join(parts[:1] if length == "medium" else parts[:2]), skip=subject)
    texts = [
        text + str(data()["zh_more"]).format(items=zh_list(items[:n]))
        for n in range(len(items) if length == "long" else min(3, len(items)), 0, -1)
    ]
    return _first_fitting([*texts, text], lim)


def _qa(v: Mapping[str, Any], lang: str, length: str, rng: random.Random, lim: int) -> list[str]:
    caption, frames = v["caption"], data()
    request = fill(v[f"{lang}_structure"], "one" if lang == "en" else "一个")
    limit = MAX_CHARS[(lang, "answer")]
    if lang == "zh":
        depicting = zh_depicting(caption)
        if depicting is None:
            return ["", "", request]
        subject = depicting[0].removesuffix("的")
        items = zh_items(" ".join(sentences(caption)[:2]))
        question = rng.choice(frames["qa_question"]["zh"]).format(subject=subject)
        answer = rng.choice(frames["qa_answer"]["zh"]).format(items=zh_list(items[:8]))
        return [question, answer if len(answer) <= limit else "", request]
    caption = english_caption(caption)
    if caption is None:
        return ["", "", request]
    subject = lower_first(subject_phrase(caption, extended=True))
    question = rng.choice(frames["qa_question"]["en"]).format(subject=subject)
    frame = rng.choice(frames["qa_answer"]["en"])
    parts = sentences(caption)
    answers = [frame.format(sentence=lower_first(_sentence(" ".join(parts[:n])))) for n in (2, 1)]
    return [question, _first_fitting(answers, limit), request]


def _compose(op: str) -> Writer:
    def write(
        v: Mapping[str, Any], lang: str, length: str, rng: random.Random, lim: int
    ) -> list[str]:
        pair = str(data()["pair"][op][lang])
        if "{" in pair:  # the _dep forms name the subjects; the plain forms say "them"
            captions = {
                "a": v.get("caption_a") or v.get("upload_caption", ""),
                "b": v.get("caption_b") or v["history_caption"],
            }
            names = {k: _name(c, lang) for k, c in captions.items() if "{" + k + "}" in pair}
            if None in names.values():
                return [""]
            pair = pair.format(**names)
        text = fill(v[f"{lang}_structure"], pair)
        return [text if len(text) <= lim else ""]

    return write


def _name(caption: str, lang: str) -> str | None:
    """The caption's subject as a history-dependent request names it in ``lang`` (without an
    article), or None."""
    if lang == "zh":
        return zh_name(caption)
    english = english_caption(caption)
    return None if english is None else bare(subject_phrase(english, extended=True))


def _dep_query(
    v: Mapping[str, Any], lang: str, length: str, rng: random.Random, lim: int
) -> list[str]:
    caption, query, frames = v["caption"], v["query"].strip(), data()
    if lang == "zh":
        subject = zh_name(caption)
        if subject is None:
            return [""]
        image = rng.choice(frames["dep_reference"]["zh"]).format(subject=subject)
        text = f"对于{image}，{query}" if is_chinese(query) else zh_edit(query, image)
        return [_sentence_zh(text) if text and len(text) < lim else ""]
    english = english_caption(caption)
    if is_chinese(query) or english is None:
        return [""]
    subject = definite(subject_phrase(english, extended=True))
    noun = re.search(frames["deictic_noun"], query, re.IGNORECASE)
    it = re.search(frames["deictic_it"], query, re.IGNORECASE)
    if noun is not None:
        # "the image with space" misreads a subject without an article: "of" forms only
        forms = frames["dep_reference"]["en"]
        forms = forms if subject.startswith("the ") else [f for f in forms if " of " in f]
        named = rng.choice(forms).format(noun=noun.group(1).lower(), subject=subject)
        text = query[: noun.start()] + named + query[noun.end() :]
    elif it is not None:
        named = frames["dep_reference"]["en"][0].format(noun="picture", subject=subject)
        text = f"{query[: it.start()]}{it.group(1)} {named}{query[it.end() :]}"
    else:
        text = rng.choice(frames["dep_lead_in"]["en"]).format(
            subject=subject, query=lower_first(query)
        )
    text = _sentence(text[0].upper() + text[1:])
    return [text if len(text) <= lim else ""]


def _sentence_zh(text: str) -> str:
    return text if text[-1] in _END else f"{text}。"


def _qa_dep(
    v: Mapping[str, Any], lang: str, length: str, rng: random.Random, lim: int
) -> list[str]:
    name = _name(v["caption"], lang)
    text = "" if name is None else fill(v[f"{lang}_structure"], name)
    return [text if len(text) <= lim else ""]


def _question(
    v: Mapping[str, Any], lang: str, length: str, rng: random.Random, lim: int
) -> list[str]:
    caption, frames = v["caption"], data()
    if lang == "zh":
        subject = zh_subject(caption)
        if subject is None:
            return [rng.choice(frames["question_unnamed"]["zh"])]
        return [rng.choice(frames["question"]["zh"]).format(subject=subject)]
    english = english_caption(caption)
    if english is None:
        return [""]
    subject = definite(subject_phrase(english))
    return [rng.choice(frames["question"]["en"]).format(subject=subject)]


def _answer(
    v: Mapping[str, Any], lang: str, length: str, rng: random.Random, lim: int
) -> list[str]:
    caption, frames = v["caption"], data()["answer"]
    if lang == "zh":
        parts = sentences(caption)
        items = zh_items(" ".join(parts[:3]))
        if not items:
            return [""]
        text = rng.choice(frames["zh"]).format(first=items[0])
        if len(items) > 1:
            text += str(frames["zh_more"]).format(items=zh_list(items[1:6]))
        for quoted in quoted_text(caption):
            text += str(frames["zh_sign"]).format(text=quoted)
        return [text if len(text) <= lim else ""]
    english = english_caption(caption)
    if english is None:
        return [""]
    parts = sentences(english)
    first = parts[0]
    frame = rng.choice(frames["en_clause" if is_clause(first) else "en"])
    lead = _sentence(frame.format(sentence=lower_first(first)))
    texts = [" ".join([lead, *parts[1:n]]) for n in (3, 2, 1)]
    return [_first_fitting(texts, lim)]


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
    """A ``Backend`` that writes each operation's answer from frames, phrases and a glossary."""

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
