"""Checks: each refuses one result of an answer for one way it would poison the data.

A check takes a ``Candidate`` (one parsed result: its fields, the ``Ref``/``Source`` pairs it
declared, and the answer's ``Context``) and returns ``None`` or a ``(reason, detail)`` refusal.
A refusal drops that result only; the other results of the answer stand (``ops.registry``).
Every operation runs every check in ``CHECKS``; what differs between operations is data: the
subjects a result must point to, the fields that are generic on purpose ("Draw them together"),
the worked examples of its prompt. Text copied from the inputs is never held against a result: a
caption that itself holds Chinese, "...", "maybe" or "[sic]" can be quoted.

The reference check (``reference``) guarantees, for every result of an operation with subjects,
in English and in Chinese alike: for each subject, the result either (a) contains a word of
that subject's input text (an English word, or two Chinese characters in a row) that is not
only a function, colour, size or other attribute word, outside the edit request it rewrites; or
(b) declares a ``Ref`` phrase that occurs in it and names something (it is not only such words),
with a ``Source`` whose every word occurs in that subject's input text and names something too.
And every pair a result declares is such a pair for one of its subjects. It does not verify
that a Chinese ``Ref`` translates its English ``Source``: that pairing is the model's own
statement, checked for being present, non-vague and grounded. A subject whose input text names
nothing (a caption "Two.") cannot be pointed to and asks for nothing. The word lists
(``prompts/reference_words.yaml``) are of one language each; nothing pairs words across
languages, so a subject no list has seen is checked like any other.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache, cached_property, lru_cache
from importlib import resources
from itertools import pairwise
from typing import Literal

from ops.templates import load_yaml

Language = Literal["en", "zh"]
Length = Literal["short", "medium", "long", "answer"]
Role = Literal["request", "question", "answer"]

MALFORMED = "parse:malformed"
EMPTY = "validate:empty"
OVERLONG = "validate:overlong"
WRONG_LANGUAGE = "validate:wrong-language"
PLACEHOLDER = "validate:placeholder"
INJECTION = "validate:injection"
SPECULATIVE = "validate:speculative"
COPIED_EXAMPLE = "validate:copied-example"
NO_REFERENCE = "validate:no-reference"
VAGUE_REFERENCE = "validate:vague-reference"
REF_NOT_IN_RESULT = "validate:ref-not-in-result"
SOURCE_NOT_IN_INPUTS = "validate:source-not-in-inputs"

# Characters per field, by language and length class. Generous: the paper's long English
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
_HAN_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]+")
_LATIN = re.compile(r"[A-Za-z]")
_WORD_CHAR = re.compile(r"\w")
_TOKEN = re.compile(r"[a-z0-9]+")
_POSSESSIVE = re.compile(r"['’](?:s\b|(?<=s['’])(?=\s|$))")  # "cat's", "dogs'"
# Latin words inside Chinese text: two letters or more, not part of a number's unit ("400km").
_LATIN_WORD = re.compile(r"(?<![0-9A-Za-z])[A-Za-z][A-Za-z'’-]+")
# Spans a result may hold in the other language: quoted or in brackets ("方孔钱", “OPEN”).
_QUOTED = re.compile(r'"[^"]*"|“[^”]*”|「[^」]*」|『[^』]*』|《[^》]*》|\([^)]*\)|（[^）]*）')
_PLACEHOLDER_MARKS = ("...", "…", "。。。", "{{", "}}", "{%", "%}", "<<<", ">>>")
_PLACEHOLDER_RE = re.compile(r"\[[^\]]{0,40}\]|\{[^}]{0,40}\}|<[^<>]{1,40}>")
# Speculative English: single words, and word pairs ("looks like", not "I'd like").
_SPECULATIVE_WORDS = frozenset(
    ("seem", "seems", "seemingly", "maybe", "perhaps", "possibly", "probably", "apparently")
)
_SPECULATIVE_PAIRS = frozenset(
    (("appear", "to"), ("appears", "to"), ("might", "be"), ("could", "be"), ("look", "like"),
     ("looks", "like"))
)  # fmt: skip
_SPECULATIVE_ZH = ("似乎", "可能", "也许", "或许", "好像", "大概", "貌似", "看似")
# An instruction to a model, or a model talking about its task, inside a result.
INSTRUCTION = re.compile(
    r"ignore (all |any )?(of )?(the |my |your )?(above|previous|prior|earlier) |"
    r"ignore (all |the |previous |prior )*instructions|disregard (the|all|previous|prior) |"
    r"system prompt|as an ai\b|language model|^(sure|okay|certainly)\b[,!.]|"
    r"忽略(以上|上述|之前|前面|所有)|无视(以上|上述|之前)|系统提示|语言模型|作为一个?(ai|人工智能)",
    re.IGNORECASE,
)
_INSTRUCTION_LOW = re.compile(INSTRUCTION.pattern)  # the same, on lower-cased text: ~3x faster
_EDGE_PUNCT = " \t.,;:!?。，；：！？、"
_QUOTES = (("“", '"'), ("”", '"'), ("‘", "'"), ("’", "'"), ("「", '"'), ("」", '"'))


# ---- what a check sees ----
@dataclass(frozen=True)
class Subject:
    """What one reference must point into: the input texts that describe one subject, with
    their English words and their Chinese character pairs."""

    name: str  # the input fields, for messages ("caption_a")
    text: str
    words: frozenset[str]
    bigrams: frozenset[str]

    @classmethod
    def of(cls, name: str, texts: Iterable[str]) -> Subject:
        text = "\n".join(texts)
        return cls(name, text, frozenset(stems(text)), frozenset(_bigrams(text)))

    @cached_property  # read only for a result that points nowhere: judged as it is needed
    def nameable(self) -> bool:
        """Whether anything in it names a subject (a caption "Two." names nothing)."""
        return bool(naming_words(self.text)) or any(han_left(b) for b in self.bigrams)


@dataclass(frozen=True)
class Context:
    """One answer's inputs, as the checks read them (their words computed once an answer)."""

    sources: tuple[str, ...]  # every input text: what a result may quote
    subjects: tuple[Subject, ...]  # each must be pointed to by every result
    exclude: Subject  # text whose words do not count as pointing (the edit request rewritten)
    examples: frozenset[str]  # fingerprints of the prompt's worked-example texts

    @classmethod
    def of(
        cls,
        sources: tuple[str, ...],
        subjects: Iterable[tuple[str, Iterable[str]]],
        exclude: Iterable[str],
        examples: frozenset[str],
    ) -> Context:
        return cls(
            sources,
            tuple(Subject.of(name, texts) for name, texts in subjects),
            Subject.of("exclude", exclude),
            examples,
        )

    @cached_property  # read only for a Chinese result with Latin words in it
    def source_words(self) -> frozenset[str]:
        return frozenset(w for s in self.sources for w in stems(s))


# Field and Candidate are built for every result of every answer and never changed after:
# plain slotted dataclasses (a frozen one sets each attribute through object.__setattr__).
@dataclass(slots=True)
class Field:
    role: Role
    language: Language
    length: Length
    text: str
    generic: bool  # meant to name nothing ("Create one for me", "Draw them together")
    low: str  # lower-cased
    norm: str  # lower-cased, quotes unified, spaces collapsed, no closing punctuation
    words: tuple[str, ...]  # English words, lower-cased, possessives dropped, not yet stemmed

    @classmethod
    def of(cls, role: Role, language: Language, length: Length, text: str, generic: bool) -> Field:
        low = text.lower()
        words = tuple(_TOKEN.findall(_POSSESSIVE.sub("", low)))
        return cls(role, language, length, text, generic, low, _norm_low(low), words)


@dataclass(slots=True)
class Candidate:
    """One result of an answer: its fields, the Ref/Source pairs it declared, the context."""

    index: int
    language: Language
    fields: tuple[Field, ...]
    refs: tuple[tuple[str, str], ...]
    context: Context

    def where(self, f: Field | None = None) -> str:
        return f"result {self.index + 1} ({self.language}{', ' + f.role if f else ''})"

    def naming(self) -> tuple[Field, ...]:
        """The fields that name the subject (all but the generic ones)."""
        return tuple(f for f in self.fields if not f.generic)


Refusal = tuple[str, str]
Check = Callable[[Candidate], "Refusal | None"]


# ---- words ----
@cache
def _lists() -> dict[str, frozenset[str]]:
    text = resources.files("prompts").joinpath("reference_words.yaml").read_text("utf-8")
    raw = load_yaml(text)
    en, zh = raw["en"], raw["zh"]
    return {
        "function": frozenset(en["function"]) | frozenset(en["generic"]),
        "nonsubject": frozenset(en["function"])
        | frozenset(en["generic"])
        | frozenset(en["attribute"]),
        "zh_tokens": frozenset(zh["tokens"]),
        "zh_chars": frozenset(zh["characters"]),
    }


@lru_cache(maxsize=1 << 16)  # captions and requests repeat their words
def _stem(word: str) -> str:
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("ses", "xes", "zes", "ches", "shes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def _words(text: str) -> list[str]:
    return _words_low(text.lower())


def _words_low(low: str) -> list[str]:
    return _TOKEN.findall(_POSSESSIVE.sub("", low))


def stems(text: str) -> list[str]:
    """English words of ``text``, lower-cased, possessives dropped, plurals singular; hyphenated
    words are split ("red-and-white" -> red, and, white)."""
    return [_stem(w) for w in _words(text)]


def content_words(text: str) -> frozenset[str]:
    """English words of ``text`` that are neither function words nor words for an image."""
    function = _lists()["function"]
    return frozenset(w for w in stems(text) if w not in function and not w.isdigit())


def naming_words(text: str) -> frozenset[str]:
    """English words of ``text`` that can name a subject: no function, generic or attribute
    word (colour, size, shape, age) and no number."""
    return _naming(_words(text))


def _naming(words: Iterable[str]) -> frozenset[str]:
    nonsubject = _lists()["nonsubject"]
    return frozenset(s for w in words if (s := _stem(w)) not in nonsubject and not s.isdigit())


def han_left(text: str) -> str:
    """The Chinese characters of ``text`` left when every listed non-subject token and
    character is taken out: empty for "白色的图", "大东西", "我们之前聊过的那个"."""
    lists = _lists()
    han = "".join(_HAN_RUN.findall(text))
    for token in sorted(lists["zh_tokens"], key=len, reverse=True):
        han = han.replace(token, "")
    return "".join(c for c in han if c not in lists["zh_chars"])


def _bigrams(text: str) -> set[str]:
    return {run[i : i + 2] for run in _HAN_RUN.findall(text) for i in range(len(run) - 1)}


def names_something(text: str) -> bool:
    return bool(naming_words(text) or han_left(text))


def _norm_low(low: str) -> str:
    if not low.isascii():
        for curly, plain in _QUOTES:
            low = low.replace(curly, plain)
    return " ".join(low.split()).strip(_EDGE_PUNCT + "\"'")


def fingerprint(text: str) -> str:
    """Lower-cased, quotes unified, spaces collapsed, no closing punctuation: a text and its
    copy agree."""
    return _norm_low(text.lower())


def _in_sources(fragment: str, sources: Iterable[str]) -> bool:
    low = fragment.lower()
    return any(low in s.lower() for s in sources)


# ---- the checks ----
def empty(c: Candidate) -> Refusal | None:
    for f in c.fields:
        if not _WORD_CHAR.search(f.text):
            return EMPTY, f"{c.where(f)} is empty"
    return None


def overlong(c: Candidate) -> Refusal | None:
    for f in c.fields:
        limit = MAX_CHARS[(f.language, f.length)]
        if len(f.text) > limit:
            return OVERLONG, f"{c.where(f)} has {len(f.text)} characters, limit {limit}"
    return None


def wrong_language(c: Candidate) -> Refusal | None:
    """English text with Chinese of its own, Chinese text with English words, or no letter of
    its language at all. Quoted or bracketed text is fine; so is Chinese copied from the inputs
    in English text, and in Chinese text single letters, acronyms (EMU, T恤) and capitalised
    words copied from the inputs (Taipei, sign text)."""
    for f in c.fields:
        if f.language == "en":
            if not _LATIN.search(f.text):
                return WRONG_LANGUAGE, f"{c.where(f)} has no Latin letters"
            if f.text.isascii():  # no Chinese in it at all
                continue
            outside = _QUOTED.sub(" ", f.text)
            own = [r for r in _CJK_RUN.findall(outside) if not _in_sources(r, c.context.sources)]
            if own:
                return WRONG_LANGUAGE, f"{c.where(f)} has Chinese text of its own: {own[0]!r}"
            continue
        if not _HAN.search(f.text):
            return WRONG_LANGUAGE, f"{c.where(f)} has no Chinese characters"
        outside = _QUOTED.sub(" ", f.text)
        foreign = [
            w
            for w in _LATIN_WORD.findall(outside)
            if not (w.isupper() and len(w) <= 5)
            and not (w != w.lower() and set(stems(w)) <= c.context.source_words)
        ]
        if foreign:
            return WRONG_LANGUAGE, f"{c.where(f)} mixes in English words: {foreign[:3]}"
    return None


def placeholder(c: Candidate) -> Refusal | None:
    for f in c.fields:
        marks = [m for m in _PLACEHOLDER_MARKS if m in f.text]
        marks += [m.group(0) for m in _PLACEHOLDER_RE.finditer(f.text)]
        for mark in marks:
            if not _in_sources(mark, c.context.sources):
                return PLACEHOLDER, f"{c.where(f)} keeps the placeholder or syntax {mark!r}"
    return None


def injection(c: Candidate) -> Refusal | None:
    for f in c.fields:
        m = _INSTRUCTION_LOW.search(f.low)
        if m:
            return (
                INJECTION,
                f"{c.where(f)} carries an instruction or model chatter: {m.group(0)!r}",
            )
    return None


def speculative(c: Candidate) -> Refusal | None:
    """The speculative words the request prompts forbid; answers may hedge, requests may not."""
    for f in c.fields:
        if f.role != "request":
            continue
        words = f.words
        found = [w for w in words if w in _SPECULATIVE_WORDS]
        found += [" ".join(p) for p in pairwise(words) if p in _SPECULATIVE_PAIRS]
        found += [w for w in _SPECULATIVE_ZH if w in f.text]
        for word in found:
            if not _in_sources(word, c.context.sources):
                return SPECULATIVE, f"{c.where(f)} uses the speculative word {word!r}"
    return None


def copied_example(c: Candidate) -> Refusal | None:
    """A text of the prompt's own worked example, copied (about the example's subject)."""
    for f in c.fields:
        if not f.generic and f.norm in c.context.examples:
            return COPIED_EXAMPLE, f"{c.where(f)} copies the prompt's worked example: {f.text!r}"
    return None


def _evidence(naming: tuple[Field, ...], subject: Subject, exclude: Subject) -> bool:
    """Whether the naming fields show a word of ``subject``: an English naming word, or a
    Chinese bigram that is not only non-subject characters; none of the ``exclude`` text's."""
    words = _naming(w for f in naming for w in f.words)
    if (words & subject.words) - exclude.words:
        return True
    text = "\n".join(f.text for f in naming)
    return any(b in text and han_left(b) for b in subject.bigrams - exclude.bigrams)


def _grounded(source: str, subject: Subject) -> bool:
    """Every word of ``source`` (English words, Chinese bigrams and single characters) occurs
    in the subject's input text."""
    if not content_words(source) <= subject.words or not _bigrams(source) <= subject.bigrams:
        return False
    return all(run in subject.text for run in _HAN_RUN.findall(source) if len(run) == 1)


def _pair_refusal(
    ref: str, source: str, naming: tuple[Field, ...], subject: Subject
) -> Refusal | None:
    if not names_something(ref):
        return VAGUE_REFERENCE, f"Ref {ref!r} names no subject, only words such as colours"
    pieces = [_norm_low(p.lower()) for p in re.split(r"\.\.\.|…", ref)]
    if not all(any(p in f.norm for f in naming) for p in pieces if p):
        return REF_NOT_IN_RESULT, f"Ref {ref!r} is not in the result"
    if not names_something(source):
        return VAGUE_REFERENCE, f"Source {source!r} names no subject, only words such as colours"
    if not _grounded(source, subject):
        return SOURCE_NOT_IN_INPUTS, f"Source {source!r} is not in the {subject.name}"
    return None


def reference(c: Candidate) -> Refusal | None:
    """Each subject of the operation is pointed to, as the module docstring states, and each
    Ref/Source pair the result declares is valid for one of them: a broken pair means the
    model's own account of what the result points to does not hold."""
    subjects = c.context.subjects
    if not subjects:
        return None
    naming = c.naming()
    verdicts = [[_pair_refusal(ref, src, naming, s) for s in subjects] for ref, src in c.refs]
    for row in verdicts:
        if all(r is not None for r in row):
            reason, detail = row[0]  # type: ignore[misc]
            return reason, f"{c.where()}: {detail}"
    for k, subject in enumerate(subjects):
        if any(row[k] is None for row in verdicts):
            continue
        if _evidence(naming, subject, c.context.exclude) or not subject.nameable:
            continue
        declared = "declares no Ref/Source" if not c.refs else "no Ref/Source pair points to it"
        return NO_REFERENCE, f"{c.where()} names nothing from the {subject.name} and {declared}"
    return None


def judge(c: Candidate) -> Refusal | None:
    """The first refusal of ``CHECKS``, in order, or None: the result is accepted."""
    for check in CHECKS:
        refusal = check(c)
        if refusal is not None:
            return refusal
    return None


CHECKS: tuple[Check, ...] = (
    empty,
    overlong,
    placeholder,
    injection,
    wrong_language,
    speculative,
    copied_example,
    reference,
)
