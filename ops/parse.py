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

# A protocol tag in any letter case, with ASCII or full-width brackets and slash, spaces allowed.
_TAG_RE = re.compile(
    r"[<＜]\s*([/／]?)\s*(result|user|assistant|ref|source)\s*[>＞]", re.IGNORECASE
)
_FENCE_RE = re.compile(r"```[A-Za-z0-9_-]*")
_OPEN, _CLOSE, _END = r"[<＜]\s*", r"[<＜]\s*[/／]\s*", r"\s*[>＞]"
# A block and a field, tags written as _TAG_RE allows; splitting by them keeps what lies between.
_BLOCK_RE = re.compile(rf"{_OPEN}result{_END}(.*?){_CLOSE}result{_END}", re.I | re.S)
_FIELD_RE = re.compile(
    rf"{_OPEN}(user|assistant|ref|source){_END}(.*?){_CLOSE}\1{_END}", re.I | re.S
)
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
    return _TAG_RE.sub(lambda m: f"‹{m.group(1) and '/'}{m.group(2)}›", text)


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
        text = _FULLWIDTH_RE.sub(lambda m: _FULLWIDTH[m.group(1)] + " ", text)
        text = _SPACE_BEFORE_PUNCT_RE.sub(r"\1", " ".join(text.split())).strip()
    return text


def parse_blocks(text: str, count: int) -> list[Block]:
    """The tagged fields of each of the ``count`` ``<Result>`` blocks, or a ParseRejection.

    Text between the fields of a block (a model's "1." or a stray word) is dropped."""
    pieces = _BLOCK_RE.split(_FENCE_RE.sub("", text))  # outside, body, outside, ..., outside
    bodies = pieces[1::2]
    if len(bodies) != count:
        raise ParseRejection(
            PARSE_WRONG_COUNT, f"found {len(bodies)} complete <Result> blocks, expected {count}"
        )
    stray = next(filter(None, map(_TAG_RE.search, pieces[::2])), None)
    if stray:
        raise ParseRejection(PARSE_MALFORMED, f"stray tag {stray.group(0)} outside the results")
    return [_block(body) for body in bodies]


def blocks_in(text: str) -> list[Block]:
    """Every complete ``<Result>`` block written out in ``text`` (a template's worked examples),
    read by the same grammar as answers."""
    return [_block(body) for body in _BLOCK_RE.findall(text)]


def _block(body: str) -> Block:
    pieces = _FIELD_RE.split(body)  # between, tag, value, between, tag, value, ..., between
    fields = tuple(zip((t.capitalize() for t in pieces[1::3]), pieces[2::3], strict=True))
    stray = next(filter(None, map(_TAG_RE.search, pieces[::3] + pieces[2::3])), None)
    return Block(fields, stray.group(0) if stray else None)
