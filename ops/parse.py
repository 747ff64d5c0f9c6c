"""Reading and writing the paper's ``<Result><User>...</User></Result>`` answer format.

The parser tolerates what real models do around the answer: markdown fences, chatter before or
after, extra whitespace and line breaks, tags in another letter case or with full-width
brackets (``＜Result＞``), and full-width punctuation in English text. It does not guess: a
wrong number of results or a result whose fields are not the ones asked for is a
``ParseRejection`` with a named reason, and the run retries with a fresh sample.

Protocol tags inside *inputs* (a caption that contains ``</User></Result>``) are defused before
they reach a prompt or a template-backend answer, so data can never open or close a result.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

# Reason codes. A rejection's reason is one of these; its detail says what exactly was wrong.
PARSE_WRONG_COUNT = "parse:wrong-count"
PARSE_MALFORMED = "parse:malformed"

TAGS = ("Result", "User", "Assistant")

# A protocol tag in any letter case, with ASCII or full-width brackets and slash, spaces allowed.
_TAG_RE = re.compile(r"[<＜]\s*([/／]?)\s*(result|user|assistant)\s*[>＞]", re.IGNORECASE)
# A tag _TAG_RE matches that is not already canonical; without one, canonicalising is a no-op.
_LOOSE_TAG_RE = re.compile(
    r"(?:＜|<(?!(?-i:/?(?:Result|User|Assistant)>)))\s*[/／]?\s*(result|user|assistant)\s*[>＞]",
    re.IGNORECASE,
)
_FENCE_RE = re.compile(r"```[A-Za-z0-9_-]*")
_BLOCK_RE = re.compile(r"<Result>(.*?)</Result>", re.DOTALL)
_FIELD_RE = re.compile(r"<(User|Assistant)>(.*?)</\1>", re.DOTALL)
_STRAY_RE = re.compile(r"</?(Result|User|Assistant)>")
_CJK_CHAR = r"[\u3000-\u303f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uff00-\uffef]"
# Full-width punctuation typed into English text, unless it follows CJK text quoted from a caption.
_FULLWIDTH = {
    "，": ",",
    "。": ".",
    "：": ":",
    "；": ";",
    "！": "!",
    "？": "?",
    "（": "(",
    "）": ")",
}
_FULLWIDTH_RE = re.compile(rf"(?<!{_CJK_CHAR})([，。：；！？（）])")
_FULLWIDTH_CHAR_RE = re.compile("[，。：；！？（）]")
_SPACE_BEFORE_PUNCT_RE = re.compile(r"\s+([,.:;!?)])")
_SPACE_THEN_PUNCT_RE = re.compile(r" [,.:;!?)]")
_QUOTE_PAIRS = (('"', '"'), ("“", "”"), ("'", "'"), ("「", "」"))
_QUOTE_OPENERS = "".join(left for left, _ in _QUOTE_PAIRS)


class ParseRejection(ValueError):
    """A response that must not become data. ``reason`` is a short code, ``detail`` for people."""

    def __init__(self, reason: str, detail: str):
        self.reason = reason
        self.detail = detail
        super().__init__(f"[{reason}] {detail}")


def defuse(text: str) -> str:
    """Turn protocol tags inside input text into look-alikes (``‹/User›``) that parse as text."""
    if "<" not in text and "＜" not in text:  # two scans in C instead of a regex scan
        return text
    return _TAG_RE.sub(lambda m: f"‹{m.group(1) and '/'}{m.group(2)}›", text)


def format_results(blocks: Sequence[Sequence[tuple[str, str]]]) -> str:
    """Write results in the answer format: one ``<Result>`` per line, fields in order."""
    lines = []
    for fields in blocks:
        body = "".join(f"<{tag}>{defuse(text)}</{tag}>" for tag, text in fields)
        lines.append(f"<Result>{body}</Result>")
    return "\n".join(lines)


def _canonical_tags(text: str) -> str:
    def canon(m: re.Match[str]) -> str:
        name = m.group(2).capitalize()
        return f"</{name}>" if m.group(1) else f"<{name}>"

    return _TAG_RE.sub(canon, text) if _LOOSE_TAG_RE.search(text) else text


def clean(text: str, language: str) -> str:
    """Collapse whitespace, drop quotes wrapping the whole result, fix full-width ASCII punctuation."""
    # str.split() splits on exactly the characters re's \s matches in str patterns (both use
    # Py_UNICODE_ISSPACE), at a fraction of a regex substitution's cost. Every whitespace
    # character but the ASCII space is unprintable to str.isprintable(), so printable text
    # without double, leading or trailing spaces is already collapsed (a few times cheaper).
    if not text.isprintable() or "  " in text or text[:1] == " " or text[-1:] == " ":
        text = " ".join(text.split())
    if text[:1] in _QUOTE_OPENERS:
        for left, right in _QUOTE_PAIRS:
            if len(text) > 2 and text.startswith(left) and text.endswith(right):
                inner = text[len(left) : -len(right)]
                if left not in inner and right not in inner:
                    text = inner.strip()
                break
    if language == "en":
        # Whitespace is already single spaces here; only a full-width fix can add doubles.
        if not text.isascii() and _FULLWIDTH_CHAR_RE.search(text):
            text = _FULLWIDTH_RE.sub(lambda m: _FULLWIDTH[m.group(1)] + " ", text)
            text = " ".join(text.split())
        # Single spaces only by now, so a space then the punctuation is the whole test; the
        # pattern starts with a literal, which re finds by a fast scan.
        if _SPACE_THEN_PUNCT_RE.search(text):
            text = _SPACE_BEFORE_PUNCT_RE.sub(r"\1", text).strip()
    return text


def contains_any(text: str, needles: tuple[str, ...]) -> bool:
    """Whether any of ``needles`` occurs in ``text``."""
    for needle in needles:  # noqa: SIM110 - a plain loop: ~2x faster than any() over a generator
        if needle in text:
            return True
    return False


def parse_blocks(text: str, fields: tuple[str, ...], count: int) -> list[list[str]]:
    """The raw field texts of each ``<Result>`` block, or a ParseRejection.

    ``fields`` is the tag sequence each block must hold, e.g. ``("User",)`` or
    ``("User", "Assistant", "User")``; text between fields inside a block is ignored.
    """
    # One-character needles: searching a CJK (two bytes a character) answer for a longer ASCII
    # needle first widens the needle to two bytes a character, in a new buffer, each time.
    normalized = _FENCE_RE.sub("", text) if "`" in text else text
    if "＜" not in normalized:
        blocks = _exact_blocks(normalized, fields, count)
        if blocks is not None:
            return blocks
    return _scan_blocks(_canonical_tags(normalized), fields, count)


def _scan_blocks(normalized: str, fields: tuple[str, ...], count: int) -> list[list[str]]:
    """``parse_blocks`` by regular expressions, on text with canonical tags: any answer."""
    bodies = _BLOCK_RE.findall(normalized)
    if len(bodies) != count:
        raise ParseRejection(
            PARSE_WRONG_COUNT,
            f"found {len(bodies)} complete <Result> blocks, expected {count}",
        )
    # A tag left over outside the fields means a result was closed early or opened twice
    # (a model that copied a caption's "</User></Result>"): the split cannot be trusted.
    stray = _STRAY_RE.search(_BLOCK_RE.sub("", normalized))
    if stray:
        raise ParseRejection(PARSE_MALFORMED, f"stray tag {stray.group(0)} outside the results")
    blocks = []
    for i, body in enumerate(bodies):
        found = _FIELD_RE.findall(body)
        tags = tuple(tag for tag, _ in found)
        if tags != fields:
            raise ParseRejection(
                PARSE_MALFORMED,
                f"result {i + 1} holds fields {list(tags)}, expected {list(fields)}",
            )
        stray = _STRAY_RE.search(_FIELD_RE.sub("", body))
        if stray:
            raise ParseRejection(PARSE_MALFORMED, f"result {i + 1} has a stray {stray.group(0)}")
        blocks.append([value for _, value in found])
    return blocks


@lru_cache(maxsize=32)
def _block_layout(fields: tuple[str, ...], count: int) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """What follows each ``<`` of a well-formed answer, in order, and for each field of a block
    the length of its tag name and ``>``, after which its value starts."""
    tags = ("Result>", *(t for tag in fields for t in (f"{tag}>", f"/{tag}>")), "/Result>")
    return tags * count, tuple(len(tag) + 1 for tag in fields)


def _exact_blocks(text: str, fields: tuple[str, ...], count: int) -> list[list[str]] | None:
    """The blocks of an answer in which every ``<`` opens the next tag of ``count`` blocks of
    ``fields``, in order; None for any other answer (the regex path decides those).

    One split and a comparison done in C instead of the regular expressions: when every ``<``
    starts an expected tag, a field's value is what lies between its tag and the next ``<``,
    which is what the regex path returns, at a fraction of its cost."""
    expected, value_starts = _block_layout(fields, count)
    chunks = text.split("<")
    del chunks[0]  # whatever precedes the first tag
    if len(chunks) != len(expected) or not all(map(str.startswith, chunks, expected)):
        return None
    # Field j of every block is every ``width``-th chunk from 1 + 2j: a slice a field, and the
    # blocks are those columns zipped, in C, rather than an index computed for each value.
    width = 2 + 2 * len(fields)
    columns = [
        [chunk[start:] for chunk in chunks[1 + 2 * j :: width]]
        for j, start in enumerate(value_starts)
    ]
    return list(map(list, zip(*columns, strict=True)))
