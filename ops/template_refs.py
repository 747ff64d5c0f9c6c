"""The ``<Ref>``/``<Source>`` pairs the offline ``template`` backend declares, as a capable model
would: for each subject an operation's result must point to, the words of the result that name
it (``Ref``) and the words of that subject's inputs they stand for (``Source``).

The backend builds its texts from the inputs, so it knows where each name came from: an English
result names a subject with words cut from an English caption (Ref and Source are those words),
or with the English glossary word for a word of a Chinese caption (Source: that Chinese word); a
Chinese result names it with a glossary rendering of English caption words (Ref: the Chinese
phrase, Source: the English words it renders), or with words copied from a Chinese caption. A
subject the result does not name gets no pair: the reference check then refuses the result,
which is what should happen to a text that points nowhere.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from ops.registry import OpSpec
from ops.template_text import (
    bare,
    is_chinese,
    subject_phrase,
    zh_english_names,
    zh_renderings,
    zh_subject,
)
from ops.validate import Language, fingerprint, han_left, names_something, naming_words

_HAN_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]+")
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")

Pair = tuple[str, str]


def declared_pairs(
    spec: OpSpec, variables: Mapping[str, Any], language: Language, texts: Sequence[str]
) -> list[Pair]:
    """One (Ref, Source) pair per subject of ``spec`` that the result's naming fields name, in
    the order of ``spec.subjects``."""
    naming = [t for f, t in zip(spec.fields, texts, strict=True) if not f.generic and t]
    if not naming:
        return []
    pairs = []
    for group in spec.subjects:
        pair = _pair([str(variables[name]) for name in group], language, naming)
        if pair is not None:
            pairs.append(pair)
    return pairs


def _pair(inputs: list[str], language: Language, result: list[str]) -> Pair | None:
    written = [fingerprint(t) for t in result]
    for text in inputs:
        for ref, source in _candidates(text, language):
            if any(_occurs(fingerprint(ref), w, language) for w in written):
                return ref, source
    for text in inputs:  # words copied from a Chinese input as they stand
        if language == "zh" and is_chinese(text):
            run = _common_run(result, text)
            if run:
                return run, run
    return None


def _occurs(ref: str, written: str, language: Language) -> bool:
    if language == "zh" and not ref.isascii():
        return ref in written
    return re.search(rf"(?<![a-z0-9]){re.escape(ref)}(?![a-z0-9])", written) is not None


@lru_cache(maxsize=4096)
def _candidates(text: str, language: Language) -> tuple[Pair, ...]:
    """The (Ref, Source) pairs a result in ``language`` built from ``text`` may show, the
    most specific first; only pairs whose two sides name something."""
    found: list[Pair] = []
    if is_chinese(text):
        if language == "en":
            found = [(english, chinese) for chinese, english in zh_english_names(text)]
    elif language == "en":
        phrases = [subject_phrase(text, extended=True), subject_phrase(text)]
        found = [(bare(p), p) for p in phrases]
        found += [(english, english) for _, english in zh_renderings(text)]
        found += [(w, w) for w in _WORD.findall(text) if naming_words(w)]
    else:
        for extended in (True, False):
            chinese = zh_subject(text, extended)
            if chinese is not None:
                found.append((chinese, subject_phrase(text, extended)))
        found += list(zh_renderings(text))
    return tuple(
        dict.fromkeys(
            (ref, source)
            for ref, source in found
            if ref and names_something(ref) and names_something(source)
        )
    )


def _common_run(result: list[str], text: str) -> str:
    """The longest run of Chinese characters shared by the result and ``text`` that names
    something (two characters or more), or ""."""
    best = ""
    for written in result:
        for run in _HAN_RUN.findall(written):
            for i in range(len(run)):
                for j in range(len(run), i + max(len(best), 1), -1):
                    piece = run[i:j]
                    if piece in text and han_left(piece):
                        best = piece
                        break
    return best
