"""Reading and writing the paper's ``<Result><User>...</User></Result>`` answer format.

An answer is a run of ``<Result>`` blocks; each block holds tagged fields in order: the
operation's own (``User``, ``Assistant``) and, where the prompt asks for them, ``Ref``/``Source``
pairs that name the words pointing back to a subject (``ops.validate.reference``).

The parser tolerates what real models do around the answer: markdown fences, chatter or
numbering before, between or after the blocks, extra whitespace and line breaks, tags in another
letter case or with full-width brackets (``＜Result＞``), and full-width punctuation in English
text. It does not guess: a wrong number of blocks, or a protocol tag left outside every block
(a result closed early or opened twice), makes the whole answer a ``ParseRejection`` with a
named reason, since no block can then be trusted to be the result it claims to be. What is wrong
inside one block is that block's problem alone (``ops.registry`` refuses that result).

Protocol tags inside *inputs* (a caption that contains ``</User></Result>``) are defused before
they reach a prompt or a template-backend answer, so data can never open or close a result.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

# Reason codes. A rejection's reason is one of these; its detail says what exactly was wrong.
PARSE_WRONG_COUNT = "parse:wrong-count"
PARSE_MALFORMED = "parse:malformed"

TAGS = ("Result", "User", "Assistant", "Ref", "Source")

# A protocol tag in any letter case, with ASCII or full-width brackets and slash, spaces allowed;
# split on it, a text comes apart as [text, tag, slash, name, text, tag, slash, name, ..., text].
_TAG_RE = re.compile(
    r"([<＜]\s*([/／]?)\s*(result|user|assistant|ref|source)\s*[>＞])", re.IGNORECASE
)
_NAMES = {tag.lower(): tag for tag in TAGS}
_FENCE_RE = re.compile(r"```[A-Za-z0-9_-]*")
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
_FULLWIDTH_RE = re.compile(rf"([，。：；！？（）])(?<!{_CJK_CHAR}[，。：；！？（）])")
_SPACE_BEFORE_PUNCT_RE = re.compile(r"\s+([,.:;!?)])")
_QUOTE_PAIRS = (('"', '"'), ("“", "”"), ("'", "'"), ("「", "」"))


@dataclass(frozen=True)
class Block:
    """One ``<Result>``: its (tag, raw text) fields in order, and a protocol tag found in it
    outside or inside a field (a field opened twice or never closed), if any."""

    fields: tuple[tuple[str, str], ...]
    stray: str | None = None


class ParseRejection(ValueError):
    """A response that must not become data. ``reason`` is a short code, ``detail`` for people."""

    def __init__(self, reason: str, detail: str):
        self.reason = reason
        self.detail = detail
        super().__init__(f"[{reason}] {detail}")


def defuse(text: str) -> str:
    """Turn protocol tags inside input text into look-alikes (``‹/User›``) that parse as text."""
    return _TAG_RE.sub(lambda m: f"‹{m.group(2) and '/'}{m.group(3)}›", text)


def format_results(blocks: Sequence[Sequence[tuple[str, str]]]) -> str:
    """Write results in the answer format: one ``<Result>`` per line, fields in order."""
    lines = []
    for fields in blocks:
        body = "".join(f"<{tag}>{defuse(text)}</{tag}>" for tag, text in fields)
        lines.append(f"<Result>{body}</Result>")
    return "\n".join(lines)


def clean(text: str, language: str) -> str:
    """Collapse whitespace, drop quotes wrapping the whole text, fix full-width ASCII punctuation
    in English."""
    text = " ".join(text.split())
    for left, right in _QUOTE_PAIRS:
        if len(text) > 2 and text.startswith(left) and text.endswith(right):
            inner = text[len(left) : -len(right)]
            if left not in inner and right not in inner:
                text = inner.strip()
            break
    if language == "en":
        if not text.isascii():  # full-width punctuation is not ASCII
            text = " ".join(_FULLWIDTH_RE.sub(lambda m: _FULLWIDTH[m.group(1)] + " ", text).split())
        text = _SPACE_BEFORE_PUNCT_RE.sub(r"\1", text).strip()
    return text


def parse_blocks(text: str, count: int) -> list[Block]:
    """The tagged fields of each of the ``count`` ``<Result>`` blocks, or a ParseRejection.

    Text between the fields of a block (a model's "1." or a stray word) is dropped."""
    blocks, outside = _scan(_FENCE_RE.sub("", text) if "```" in text else text)
    if len(blocks) != count:
        raise ParseRejection(
            PARSE_WRONG_COUNT, f"found {len(blocks)} complete <Result> blocks, expected {count}"
        )
    if outside is not None:
        raise ParseRejection(PARSE_MALFORMED, f"stray tag {outside} outside the results")
    return blocks


def blocks_in(text: str) -> list[Block]:
    """Every complete ``<Result>`` block written out in ``text`` (a template's worked examples),
    read by the same grammar as answers."""
    return _scan(text)[0]


def _scan(text: str) -> tuple[list[Block], str | None]:
    """The complete blocks of ``text``, in one pass over its tags, and the first tag outside
    them (a result closed early or opened twice, or the start of an unfinished one).

    Inside a block, a field runs from its opening tag to the closing tag of the same name; any
    other tag there (a field opened twice, a field never closed) marks the block's ``stray``."""
    parts = _TAG_RE.split(text)
    blocks: list[Block] = []
    outside: str | None = None
    fields: list[tuple[str, str]] | None = None  # of the open block
    stray: str | None = None  # of the open block
    field: tuple[str, int, str] | None = None  # the open field: name, its first part, tag
    for k in range(1, len(parts), 4):
        tag, closing, name = parts[k], bool(parts[k + 1]), _NAMES[parts[k + 2].lower()]
        if fields is None:
            if name == "Result" and not closing:
                fields, stray, field = [], None, None
            else:
                outside = outside or tag
        elif name == "Result" and closing:
            blocks.append(Block(tuple(fields), stray or (field[2] if field else None)))
            fields = None
        elif field is None and not closing and name != "Result":
            field = (name, k + 3, tag)
        elif field is not None and closing and name == field[0]:
            fields.append((name, _between(parts, field[1], k)))
            field = None
        else:
            stray = stray or tag
    if fields is not None:  # an unfinished block
        outside = outside or "<Result>"
    return blocks, outside


def _between(parts: list[str], first: int, end: int) -> str:
    """The text of ``parts[first:end]`` as written: its texts and the tags among them."""
    if first == end - 1:
        return parts[first]
    return "".join(parts[j] for j in range(first, end) if j % 4 in (0, 1))
