"""Validators: each rejects one way a parsed result would poison the data, with a named reason.

A validator takes a ``FieldCheck`` (one field of one result, with the operation's inputs) and
returns ``None`` or ``(reason, detail)``. Operations list the validators they apply in the
registry. Text copied from the inputs is never held against a result: a caption that itself
contains Chinese, "..." or "maybe" can be quoted.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache, lru_cache
from importlib import resources
from operator import le
from typing import Any, Literal

from ops.parse import contains_any
from ops.templates import load_yaml

Language = Literal["en", "zh"]
Length = Literal["short", "medium", "long", "answer"]
Role = Literal["request", "question", "answer"]

EMPTY = "validate:empty"
OVERLONG = "validate:overlong"
WRONG_LANGUAGE = "validate:wrong-language"
PLACEHOLDER = "validate:placeholder"
INJECTION = "validate:injection"
SPECULATIVE = "validate:speculative"
NO_ANCHOR = "validate:no-anchor"

# Characters per result, by language and length class. Generous: the paper's long English
# request is ~330 characters and its long Chinese one ~120; these catch runaway generations.
MAX_CHARS: dict[tuple[str, str], int] = {
    ("en", "short"): 300,
    ("en", "medium"): 600,
    ("en", "long"): 1200,
    ("en", "answer"): 1500,
    ("zh", "short"): 150,
    ("zh", "medium"): 300,
    ("zh", "long"): 600,
    ("zh", "answer"): 600,
}

_CJK_RUN = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]+")
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")
_LATIN = re.compile(r"[A-Za-z]")
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]+")
_WORD_CHAR = re.compile(r"\w")
# Left-over placeholders and template syntax; protocol tags are matched in any letter case.
_PLACEHOLDERS_PLAIN = ("...", "…", "。。。", "{{", "}}", "{%", "%}", "<<<", ">>>")
_PLACEHOLDERS_TAGS = tuple(
    (tag, tag.lower())
    for tag in ("<Result", "</Result", "<User", "</User", "<Assistant", "</Assistant")
)
_SPECULATIVE_EN = re.compile(
    r"\b(seems?|seemingly|maybe|perhaps|possibly|probably|apparently|appears? to|might be)\b",
    re.IGNORECASE,
)
_SPECULATIVE_ZH = ("似乎", "可能", "也许", "或许", "好像", "大概", "貌似", "看似")
_SPECULATIVE_KEYS = ("seem", "maybe", "perhaps", "possibly", "probably", "apparently", "appear",
                     "might be")  # fmt: skip
# An instruction to a model, or a model talking about its task, inside a result.
INSTRUCTION = re.compile(
    r"ignore (all |any )?(of )?(the |my |your )?(above|previous|prior|earlier) |"
    r"ignore (all |the |previous |prior )*instructions|disregard (the|all|previous|prior) |"
    r"system prompt|as an ai\b|language model|^(sure|okay|certainly)\b[,!.]|"
    r"忽略(以上|上述|之前|前面|所有)|无视(以上|上述|之前)|系统提示",
    re.IGNORECASE,
)
# Every match of INSTRUCTION contains one of these, lower-cased.
_INSTRUCTION_KEYS = ("ignore", "disregard", "system prompt", "as an ai", "language model", "sure",
                     "okay", "certainly", "忽略", "无视", "系统提示")  # fmt: skip
# The only non-ASCII characters that re.IGNORECASE matches to an ASCII letter (U+0130 İ, U+0131
# ı, U+017F ſ, U+212A Kelvin); str.lower() maps no other non-ASCII character into ASCII.
_ASCII_FOLDS = ("\u0130", "\u0131", "\u017f", "\u212a")


def may_match(text: str, keys: tuple[str, ...], low: str | None = None) -> bool:
    """False only when no case-insensitive pattern each of whose matches contains one of the
    lower-case ``keys`` can match ``text``: a cheap exact pre-check before a slow regex.
    ``low`` is ``text.lower()`` where the caller has it already."""
    if not text.isascii() and contains_any(text, _ASCII_FOLDS):
        return True
    return contains_any(text.lower() if low is None else low, keys)


@dataclass(slots=True)
class FieldCheck:
    """One field of one parsed result, with what the validators need to judge it.

    Not frozen: a frozen dataclass sets each field through ``object.__setattr__``, and a parse
    builds one of these for every field of every result."""

    operation: str
    index: int
    role: Role
    language: Language
    length: Length
    text: str
    sources: tuple[str, ...]
    anchors: tuple[str, ...] = ()  # captions the result must name something from
    exclude: str = ""  # text whose words do not count as anchors (the edit query itself)
    _low: str | None = field(default=None, init=False, repr=False)

    @property
    def low(self) -> str:
        """``text.lower()``, which three validators read; made when first read (the screens in
        ``needed`` spare most results those validators, and lower-casing CJK text is slow)."""
        if self._low is None:
            self._low = self.text.lower()
        return self._low

    def where(self) -> str:
        return f"result {self.index + 1} ({self.language}, {self.role})"


Validator = Callable[[FieldCheck], "tuple[str, str] | None"]


@cache
def lexicon() -> dict[str, Any]:
    text = resources.files("prompts").joinpath("lexicon.yaml").read_text(encoding="utf-8")
    data: dict[str, Any] = load_yaml(text)
    return data


@lru_cache(maxsize=64)
def _lowered(sources: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(s.lower() for s in sources)  # one parse checks 6-18 fields against the same


@lru_cache(maxsize=64)
def _has_cjk(sources: tuple[str, ...]) -> bool:
    return any(not s.isascii() and _CJK_RUN.search(s) for s in sources)


def _in_sources(fragment: str, sources: tuple[str, ...]) -> bool:
    low = fragment.lower()
    return any(low in s for s in _lowered(sources))


def empty(c: FieldCheck) -> tuple[str, str] | None:
    if not _WORD_CHAR.search(c.text):
        return EMPTY, f"{c.where()} is empty"
    return None


def overlong(c: FieldCheck) -> tuple[str, str] | None:
    limit = MAX_CHARS[(c.language, c.length)]
    if len(c.text) > limit:
        return OVERLONG, f"{c.where()} has {len(c.text)} characters, limit {limit} for {c.length}"
    return None


def wrong_language(c: FieldCheck) -> tuple[str, str] | None:
    # Two shortcuts keep regex scans (~100 instructions a character) off the common cases:
    # ASCII text holds no CJK, and with inputs free of CJK every CJK run is the result's own.
    quoted = _has_cjk(c.sources)
    if c.language == "en":
        if c.text.isascii():
            own: list[str] = []
        elif quoted:
            own = [r for r in _CJK_RUN.findall(c.text) if not _in_sources(r, c.sources)]
        else:
            first = _CJK_RUN.search(c.text)
            own = [first.group(0)] if first else []
        if own:
            return (
                WRONG_LANGUAGE,
                f"{c.where()} has CJK text not quoted from the inputs: {own[0]!r}",
            )
        if not _LATIN.search(c.text):
            return WRONG_LANGUAGE, f"{c.where()} has no Latin letters"
        return None
    if not quoted:
        if _HAN.search(c.text):
            return None
        return WRONG_LANGUAGE, f"{c.where()} has no Chinese characters"
    own = [r for r in _CJK_RUN.findall(c.text) if not _in_sources(r, c.sources)]
    han = len(_HAN.findall(c.text))
    # Chinese of its own, or mostly Chinese (a result may legitimately reuse a Chinese caption).
    if any(_HAN.search(r) for r in own) or (han and han >= len(_LATIN.findall(c.text))):
        return None
    if not han:
        return WRONG_LANGUAGE, f"{c.where()} has no Chinese characters"
    return WRONG_LANGUAGE, f"{c.where()} only quotes Chinese from the inputs"


def placeholder(c: FieldCheck) -> tuple[str, str] | None:
    text = c.text
    for marker in _PLACEHOLDERS_PLAIN:  # no letters: case does not matter
        if marker in text and not _in_sources(marker, c.sources):
            return PLACEHOLDER, f"{c.where()} keeps the placeholder or template syntax {marker!r}"
    if "<" not in text:
        return None
    for marker, marker_low in _PLACEHOLDERS_TAGS:
        if marker_low in c.low and not _in_sources(marker, c.sources):
            return PLACEHOLDER, f"{c.where()} keeps the placeholder or template syntax {marker!r}"
    return None


def injection(c: FieldCheck) -> tuple[str, str] | None:
    m = INSTRUCTION.search(c.text) if may_match(c.text, _INSTRUCTION_KEYS, c.low) else None
    if m:
        return INJECTION, f"{c.where()} carries an instruction or model chatter: {m.group(0)!r}"
    return None


def speculative(c: FieldCheck) -> tuple[str, str] | None:
    """The speculative words the request prompts forbid; answers may hedge, requests may not."""
    if c.role != "request":
        return None
    found = (
        [m.group(0) for m in _SPECULATIVE_EN.finditer(c.text)]
        if may_match(c.text, _SPECULATIVE_KEYS, c.low)
        else []
    )
    if not c.text.isascii():
        found += [w for w in _SPECULATIVE_ZH if w in c.text]
    for word in found:  # usually none: no list built for nothing
        if not _in_sources(word, c.sources):
            return SPECULATIVE, f"{c.where()} uses the speculative word {word!r}"
    return None


def _stem(word: str) -> str:
    word = word.lower().strip("'-")
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


@cache
def _stopwords() -> frozenset[str]:
    return frozenset(lexicon()["stopwords"])


@lru_cache(maxsize=8192)
def content_words(text: str) -> frozenset[str]:
    stop = _stopwords()
    return frozenset(_stem(w) for w in _WORD.findall(text) if len(w) >= 3 and w.lower() not in stop)


@cache
def _renderings() -> dict[str, tuple[str, ...]]:
    """The en_zh lexicon keyed by stemmed English word."""
    table: dict[str, tuple[str, ...]] = {}
    for word, zhs in lexicon()["en_zh"].items():
        table[_stem(word)] = table.get(_stem(word), ()) + tuple(zhs)
    return table


def _names(text: str, caption: str, exclude: str) -> bool | None:
    """Whether ``text`` names something from ``caption``; None when that cannot be decided."""
    words = content_words(caption) - content_words(exclude)
    han_pairs = {m[i : i + 2] for m in _CJK_RUN.findall(caption) for i in range(len(m) - 1)}
    han_pairs -= {p for p in han_pairs if p in exclude}
    if words & content_words(text) or any(p in text for p in han_pairs):
        return True
    en_zh: dict[str, list[str]] = lexicon()["en_zh"]
    renderings = [zh for w in words for zh in _renderings().get(w, ())]
    if _HAN.search(text) and renderings:
        return any(r in text for r in renderings)
    if _HAN.search(text) and not han_pairs:
        return None  # a Chinese result, an English caption outside the lexicon: undecidable
    if not _HAN.search(text) and han_pairs:
        zh_en = [w for w, zhs in en_zh.items() for zh in zhs if zh in caption]
        return (any(_stem(w) in content_words(text) for w in zh_en)) if zh_en else None
    return not words and not han_pairs


def no_anchor(c: FieldCheck) -> tuple[str, str] | None:
    """A _dep rewrite must name something from each caption it points back to.

    English results match the caption's content words (stop words and the edit query's own
    words removed). Chinese results match a quoted caption word or its rendering in the
    lexicon; when the caption has no word the lexicon knows, the check passes undecided.
    """
    if c.role != "request":
        return None
    for caption in c.anchors:
        if _names(c.text, caption, c.exclude) is False:
            return NO_ANCHOR, f"{c.where()} names nothing from the caption {caption[:80]!r}"
    return None


@dataclass(slots=True)
class Group:
    """The results of one language in one answer, as the screens in ``needed`` see them."""

    language: Language
    texts: list[str]
    limits: Sequence[int]  # MAX_CHARS of each text's length class
    sources: tuple[str, ...]


# Validators that can fail only on text whose lower-case form holds one of these keys (or that
# holds a character re.IGNORECASE folds into ASCII). ``needed`` runs such a screen once over all
# results of one language instead of running the validator on each result: a clean answer then
# skips them (validating a caption2query answer: ~235k -> ~155k instructions).
SCREENS: dict[Validator, tuple[str, ...]] = {
    # Shorter keys that each marker holds (and "<" for the tags): one-character keys are the
    # cheapest to search for, and these characters are rare in a request.
    placeholder: ("..", "…", "。。", "{", "}", "<", ">"),
    injection: _INSTRUCTION_KEYS,
    speculative: (*_SPECULATIVE_KEYS, *_SPECULATIVE_ZH),
}


# Each screen's keys split by kind: ASCII keys, and the others (which have no letter case).
_SCREEN_KEYS = {
    check: (tuple(k for k in keys if k.isascii()), tuple(k for k in keys if not k.isascii()))
    for check, keys in SCREENS.items()
}


def _all_have_words(group: Group) -> bool:
    return all(map(_WORD_CHAR.search, group.texts))


def _all_fit(group: Group) -> bool:
    return all(map(le, map(len, group.texts), group.limits))


def _all_plainly_in_language(group: Group) -> bool:
    """What ``wrong_language`` passes without a closer look: English results in ASCII with a
    Latin letter each; Chinese results with a Han character each, the inputs holding no CJK."""
    if group.language == "en":  # str.isascii reads a flag of the string: no scan
        return all(map(str.isascii, group.texts)) and all(map(_LATIN.search, group.texts))
    return not _has_cjk(group.sources) and all(map(_HAN.search, group.texts))


# Validators that pass every result of a group when one test over all of its texts holds, run
# in C over the list (``map``) instead of building a FieldCheck and calling the validator for
# each result. False only says "look at each result".
GROUP_PASSES: dict[Validator, Callable[[Group], bool]] = {
    empty: _all_have_words,
    overlong: _all_fit,
    wrong_language: _all_plainly_in_language,
}


def needed(validators: tuple[Validator, ...], group: Group) -> tuple[Validator, ...]:
    """The ``validators`` that can fail on a result of ``group``: all but those whose group
    test passes and the screened ones whose keys none of the texts holds (a key across two
    texts only makes the screen cautious). An empty tuple: every result passes as it is."""
    joined = "\n".join(group.texts)
    low: str | None
    if joined.isascii():
        low, wide = joined.lower(), ""
    elif contains_any(joined, _ASCII_FOLDS):
        low, wide = None, joined  # a key may match anywhere: no key screen skips its validator
    else:
        # Lower-casing maps no character but the folds into ASCII, so an ASCII key is in the
        # lower-cased text exactly when it is in its lower-cased ASCII characters (dropping the
        # others can only join two runs: a cautious screen). Searching CJK text for an ASCII key
        # would widen the key to two bytes a character, in a new buffer, key by key.
        low, wide = joined.encode("ascii", "ignore").decode("ascii").lower(), joined
    kept = []
    for check in validators:
        passes = GROUP_PASSES.get(check)
        if passes is not None:
            if not passes(group):
                kept.append(check)
            continue
        keys = _SCREEN_KEYS.get(check)
        if (
            keys is None
            or low is None
            or contains_any(low, keys[0])
            or (wide and contains_any(wide, keys[1]))
        ):
            kept.append(check)
    return tuple(kept)


COMMON: tuple[Validator, ...] = (empty, overlong, wrong_language, placeholder, injection)
REQUEST: tuple[Validator, ...] = (*COMMON, speculative)
DEPENDENT: tuple[Validator, ...] = (*REQUEST, no_anchor)
