"""Typed source rows, and the checks that turn a raw record into rows or into ``Reject``s.

Rows hold encoded image bytes (``images``). A text field holds text (numbers are written as
text), has its image placeholders removed (``adapters``) and is at most ``max_chars`` long.
Every reject's detail starts with where the row sits (file and line, row, item or sample).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

from synth.contract import ImageRecord, Reject
from synth.sources.adapters import (
    BadRow,
    ChatRole,
    exchanges,
    read_conversation,
    strip_placeholders,
)
from synth.sources.images import crop_image, load_image
from synth.sources.paths import MISSING, lookup
from synth.sources.readers import Record
from synth.sources.spec import ID_FIELD, IMAGE_FIELDS, SourceSpec

# Every reason a source row can be rejected for.
REASONS = {
    "source:no-caption": "a text-to-image or subject row without a caption, or a compose row "
    "without the caption of one of its two subjects",
    "source:empty-instruction": "an edit row without an instruction",
    "source:no-question": "an understanding row without a question",
    "source:no-answer": "an understanding row without an answer",
    "source:bad-turns": "a conversation whose messages are missing, empty or cannot be read",
    "source:needs-image": "a chat row whose messages carry an image: text-only chat cannot show it",
    "source:bad-image": "an image that is missing, unreadable, empty, not decodable or not croppable",
    "source:bad-field": "a field holding something other than what its kind needs",
    "source:text-too-long": "a text field longer than the source's `max_chars`",
    "source:bad-json": "a JSON(L) line, item or WebDataset member that is not a JSON object",
    "source:bad-encoding": "a line or WebDataset text member that is not UTF-8",
    "source:bad-sample": "a WebDataset sample with two members of one extension",
    "source:no-id": "a row whose mapped id (or chain/turn) is empty",
    "source:duplicate-id": "a row whose id repeats an earlier row's: two samples never share an id",
}


@dataclass(frozen=True, slots=True)
class _Row:
    source: str
    row_id: str

    @property
    def ref(self) -> str:
        """``source:row_id``: how samples cite this row (``make_sample_id`` sources)."""
        return f"{self.source}:{self.row_id}"

    def _record(self, data: bytes, caption: str) -> ImageRecord:
        return ImageRecord(data=data, source=self.source, source_row=self.row_id, caption=caption)


@dataclass(frozen=True, slots=True)
class T2IRow(_Row):
    kind: ClassVar[str] = "t2i"
    image: bytes = field(repr=False)
    caption: str

    def record(self) -> ImageRecord:
        return self._record(self.image, self.caption)


@dataclass(frozen=True, slots=True)
class SubjectRow(_Row):
    kind: ClassVar[str] = "subject"
    image: bytes = field(repr=False)
    caption: str

    def record(self) -> ImageRecord:
        return self._record(self.image, self.caption)


@dataclass(frozen=True, slots=True)
class ComposeRow(_Row):
    """Two subjects and the image of both together: the answer to "draw them together"."""

    kind: ClassVar[str] = "compose"
    first_image: bytes = field(repr=False)
    first_caption: str
    second_image: bytes = field(repr=False)
    second_caption: str
    target_image: bytes = field(repr=False)
    target_caption: str  # "" when the data has none

    def first_record(self) -> ImageRecord:
        return self._record(self.first_image, self.first_caption)

    def second_record(self) -> ImageRecord:
        return self._record(self.second_image, self.second_caption)

    def target_record(self) -> ImageRecord:
        return self._record(self.target_image, self.target_caption)


@dataclass(frozen=True, slots=True)
class EditRow(_Row):
    kind: ClassVar[str] = "edit"
    source_image: bytes = field(repr=False)
    source_caption: str  # "" when the data has none (MagicBrush-style)
    instruction: str
    target_image: bytes = field(repr=False)
    target_caption: str  # "" when the data has none
    chain: str = ""  # the editing session this edit belongs to, when the source maps `chain`
    turn: int = 0  # its place in that session

    def source_record(self) -> ImageRecord:
        return self._record(self.source_image, self.source_caption)

    def target_record(self) -> ImageRecord:
        return self._record(self.target_image, self.target_caption)


@dataclass(frozen=True, slots=True)
class EditChain(_Row):
    """Consecutive edits of one session: each step edits the image the step before made
    (``steps[0]``'s source is the session's first image). Two or more steps; ``row_id`` is
    ``<chain>#<first turn>-<last turn>``."""

    kind: ClassVar[str] = "edit"
    steps: tuple[EditRow, ...]


@dataclass(frozen=True, slots=True)
class VQARow(_Row):
    kind: ClassVar[str] = "vqa"
    image: bytes = field(repr=False)
    question: str
    answer: str

    def record(self) -> ImageRecord:
        return self._record(self.image, "")


@dataclass(frozen=True, slots=True)
class ChatRow(_Row):
    kind: ClassVar[str] = "chat"
    turns: tuple[tuple[ChatRole, str], ...]  # alternating, user first, assistant last


SourceRow = T2IRow | EditRow | EditChain | SubjectRow | ComposeRow | VQARow | ChatRow


def make_rows(spec: SourceSpec, record: Record) -> list[SourceRow | Reject]:
    """The typed row(s) for a raw record (a conversation read as ``pairs: all`` gives one per
    exchange), or the reject saying why it cannot be one."""
    reader = _Reader(spec, record)
    row_id = str(record.index)
    try:
        if record.error:
            raise BadRow(*record.error)
        row_id = reader.row_id()
        if spec.kind == "vqa" and spec.conversation:
            return list(reader.vqa_exchanges(row_id))
        return [reader.build(row_id)]
    except BadRow as bad:
        return [reader.reject(bad, row_id)]


class _Reader:
    """Reads one record's fields for one spec, raising ``BadRow`` with the field named."""

    def __init__(self, spec: SourceSpec, record: Record):
        self.spec, self.record, self.columns = spec, record, spec.field_columns()

    def reject(self, bad: BadRow, row_id: str) -> Reject:
        payload = {
            c: _clip(self.raw(f), self.spec.max_chars)
            for f, c in self.columns.items()
            if f not in IMAGE_FIELDS
        }
        where = self.record.where
        return Reject(
            stage="source",
            reason=bad.reason,
            detail=f"{where}: {bad.detail}" if where else bad.detail,
            source=self.spec.name,
            source_row=row_id,
            payload=json.dumps(
                {k: v for k, v in payload.items() if v is not MISSING},
                ensure_ascii=False,
                default=str,
            ),
        )

    def raw(self, name: str) -> Any:
        return lookup(self.record.values, self.columns[name])

    def described(self, name: str) -> str:
        return f"column {self.columns[name]!r} ({name})"

    def text(self, name: str, reason: str | None = None) -> str:
        value = self.raw(name)
        if value is MISSING or value is None:
            value = ""
        elif isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)
        elif not isinstance(value, str):
            raise BadRow(
                "source:bad-field",
                f"{self.described(name)} holds {type(value).__name__}, expected text",
            )
        value, _ = strip_placeholders(value.strip())
        if reason and not value:
            raise BadRow(reason, f"{self.described(name)} is empty or missing")
        self.check_length(name, value)
        return value

    def check_length(self, name: str, value: str) -> None:
        if len(value) > self.spec.max_chars:
            raise BadRow(
                "source:text-too-long",
                f"{self.described(name)} holds {len(value)} characters, over max_chars "
                f"{self.spec.max_chars}; raise `max_chars:` for this source to keep such rows",
            )

    def image(self, name: str) -> bytes:
        try:
            value = self.raw(name)
            data = load_image(None if value is MISSING else value, self.record.root)
            box = self.spec.crop.get(name)
            return crop_image(data, box) if box else data
        except ValueError as err:
            raise BadRow("source:bad-image", f"{self.described(name)}: {err}") from None

    def row_id(self) -> str:
        if self.spec.chained:
            chain, turn = self.text("chain"), self.turn()
            if not chain:
                raise BadRow("source:no-id", f"{self.described('chain')} is empty")
            return f"{chain}#{turn}"
        if ID_FIELD in self.columns:
            value = self.text(ID_FIELD)
            if not value:
                raise BadRow("source:no-id", f"id {self.described(ID_FIELD)} is empty")
            return value
        return str(self.record.index)

    def turn(self) -> int:
        value = self.raw("turn")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise BadRow(
                "source:no-id", f"{self.described('turn')} holds {value!r}, expected a number"
            ) from None

    def build(self, row_id: str) -> SourceRow:
        spec, key = self.spec, (self.spec.name, row_id)
        if spec.kind in ("t2i", "subject"):
            caption = self.text("caption", "source:no-caption")
            row_type = T2IRow if spec.kind == "t2i" else SubjectRow
            return row_type(*key, image=self.image("image"), caption=caption)
        if spec.kind == "compose":
            first_caption = self.text("first_caption", "source:no-caption")
            second_caption = self.text("second_caption", "source:no-caption")
            return ComposeRow(
                *key,
                first_image=self.image("first_image"),
                first_caption=first_caption,
                second_image=self.image("second_image"),
                second_caption=second_caption,
                target_image=self.image("target_image"),
                target_caption=self.text("target_caption"),
            )
        if spec.kind == "edit":
            return self.edit(key)
        if spec.kind == "vqa":
            question = self.text("question", "source:no-question")
            answer = self.text("answer", "source:no-answer")
            return VQARow(*key, image=self.image("image"), question=question, answer=answer)
        assert spec.kind == "chat", spec.kind
        return ChatRow(*key, turns=self.chat_turns())

    def edit(self, key: tuple[str, str]) -> EditRow:
        raw = self.raw("instruction")
        if isinstance(raw, str) and strip_placeholders(raw)[1] > 1:
            raise BadRow(
                "source:bad-field",
                f"{self.described('instruction')} refers to {strip_placeholders(raw)[1]} input "
                "images; an edit row takes one",
            )
        instruction = self.text("instruction", "source:empty-instruction")
        chained = self.spec.chained
        return EditRow(
            *key,
            source_image=self.image("source_image"),
            source_caption=self.text("source_caption"),
            instruction=instruction,
            target_image=self.image("target_image"),
            target_caption=self.text("target_caption"),
            chain=self.text("chain") if chained else "",
            turn=self.turn() if chained else 0,
        )

    def chat_turns(self) -> tuple[tuple[ChatRole, str], ...]:
        raw = self.raw("turns")
        if raw is MISSING or raw is None:
            user, assistant = self.text("user"), self.text("assistant")
            if not (user and assistant):
                raise BadRow("source:bad-turns", "no `turns`, and `user` or `assistant` is empty")
            return (("user", user), ("assistant", assistant))
        messages = read_conversation(raw)
        for i, message in enumerate(messages):
            if message.images:
                raise BadRow(
                    "source:needs-image",
                    f"{self.described('turns')} message {i} carries {message.images} image(s); "
                    "read this source as kind vqa, or keep it out of text-only chat",
                )
            self.check_length("turns", message.text)
        return tuple((m.role, m.text) for m in messages)

    def vqa_exchanges(self, row_id: str) -> list[SourceRow | Reject]:
        raw = self.raw("turns")
        if raw is MISSING or raw is None:
            raise BadRow("source:no-question", f"{self.described('turns')} is empty or missing")
        pairs = exchanges(read_conversation(raw))
        image = self.image("image")
        if self.spec.pairs == "first":
            pairs, ids = pairs[:1], [row_id]
        else:
            ids = [f"{row_id}#{k}" for k in range(1, len(pairs) + 1)]
        out: list[SourceRow | Reject] = []
        for pair_id, (question, answer) in zip(ids, pairs, strict=True):
            try:
                self.check_length("turns", question.text)
                self.check_length("turns", answer.text)
            except BadRow as bad:
                out.append(self.reject(bad, pair_id))
                continue
            out.append(
                VQARow(
                    self.spec.name, pair_id, image=image, question=question.text, answer=answer.text
                )
            )
        return out


def _clip(value: Any, limit: int) -> Any:
    """A payload value as stored, except a text longer than the limit: the rejects table keeps
    its start and length, not a megabyte."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]}... ({len(value) - limit} more characters)"
    return value
