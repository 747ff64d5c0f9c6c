"""Typed source rows, and the checks that turn a raw record into one or into a ``Reject``.

Rows hold encoded image bytes exactly as stored (never re-encoded, except an already decoded
PIL image, which is written as PNG). An image value may be encoded bytes, a ``datasets`` Image
struct ``{"bytes", "path"}``, or a path relative to the data file's folder; each is opened and
decoded by PIL before a row is made, so a row's images are known to be readable.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from PIL import Image

from synth.contract import ImageRecord, Reject
from synth.sources.readers import Record
from synth.sources.spec import ID_FIELD, IMAGE_FIELDS, SourceSpec

ChatRole = Literal["user", "assistant"]

# Every reason a source row can be rejected for.
REASONS = {
    "source:no-caption": "a text-to-image or subject row without a caption",
    "source:empty-instruction": "an edit row without an instruction",
    "source:no-question": "an understanding row without a question",
    "source:no-answer": "an understanding row without an answer",
    "source:bad-turns": "a chat row whose messages are missing, empty or out of order",
    "source:bad-image": "an image that is missing, unreadable, empty or not decodable",
    "source:bad-field": "a text field holding something other than text",
    "source:bad-json": "a JSONL line that is not a JSON object",
    "source:no-id": "a row whose mapped id column is empty",
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
class EditRow(_Row):
    kind: ClassVar[str] = "edit"
    source_image: bytes = field(repr=False)
    source_caption: str  # "" when the data has none (MagicBrush-style)
    instruction: str
    target_image: bytes = field(repr=False)
    target_caption: str  # "" when the data has none

    def source_record(self) -> ImageRecord:
        return self._record(self.source_image, self.source_caption)

    def target_record(self) -> ImageRecord:
        return self._record(self.target_image, self.target_caption)


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


SourceRow = T2IRow | EditRow | SubjectRow | VQARow | ChatRow


class _Bad(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def make_row(spec: SourceSpec, record: Record) -> SourceRow | Reject:
    """The typed row for a raw record, or the reject saying why it cannot be one."""
    columns = spec.field_columns()
    payload = {c: _get(record, c) for f, c in columns.items() if f not in IMAGE_FIELDS}
    row_id = str(record.index)
    try:
        if record.error:
            raise _Bad(*record.error)
        if ID_FIELD in columns:
            row_id = _text(record, columns[ID_FIELD])
            if not row_id:
                raise _Bad("source:no-id", f"id column {columns[ID_FIELD]!r} is empty")
        return _build(spec, record, columns, row_id)
    except _Bad as bad:
        return Reject(
            stage="source",
            reason=bad.reason,
            detail=bad.detail,
            source=spec.name,
            source_row=row_id,
            payload=json.dumps(payload, ensure_ascii=False, default=str),
        )


def _build(spec: SourceSpec, record: Record, columns: dict[str, str], row_id: str) -> SourceRow:
    def text(name: str, reason: str | None = None) -> str:
        value = _text(record, columns[name])
        if reason and not value:
            raise _Bad(reason, f"column {columns[name]!r} ({name}) is empty or missing")
        return value

    def image(name: str) -> bytes:
        try:
            return load_image(_get(record, columns[name]), record.root)
        except ValueError as err:
            raise _Bad("source:bad-image", f"column {columns[name]!r} ({name}): {err}") from None

    key = (spec.name, row_id)
    if spec.kind == "t2i":
        caption = text("caption", "source:no-caption")
        return T2IRow(*key, image=image("image"), caption=caption)
    if spec.kind == "subject":
        caption = text("caption", "source:no-caption")
        return SubjectRow(*key, image=image("image"), caption=caption)
    if spec.kind == "edit":
        instruction = text("instruction", "source:empty-instruction")
        return EditRow(
            *key,
            source_image=image("source_image"),
            source_caption=text("source_caption"),
            instruction=instruction,
            target_image=image("target_image"),
            target_caption=text("target_caption"),
        )
    if spec.kind == "vqa":
        question = text("question", "source:no-question")
        answer = text("answer", "source:no-answer")
        return VQARow(*key, image=image("image"), question=question, answer=answer)
    assert spec.kind == "chat", spec.kind
    return ChatRow(*key, turns=_turns(record, columns))


def _get(record: Record, column: str) -> Any:
    return record.values.get(column)


def _text(record: Record, column: str) -> str:
    value = _get(record, column)
    if value is None:
        return ""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise _Bad(
            "source:bad-field", f"column {column!r} holds {type(value).__name__}, expected text"
        )
    return value.strip()


# Role names used by common chat formats (OpenAI messages, ShareGPT, Gemini).
_ROLES: dict[str, ChatRole] = {
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "model": "assistant",
    "bot": "assistant",
}


def _turns(record: Record, columns: dict[str, str]) -> tuple[tuple[ChatRole, str], ...]:
    """Messages from ``turns`` (dicts with role/from and content/text/value, or plain strings
    alternating from the user), else one exchange from ``user`` + ``assistant``. A leading system
    message is dropped: the dialogue contract has no system role."""
    raw = _get(record, columns["turns"])
    if raw is None:
        user, assistant = _text(record, columns["user"]), _text(record, columns["assistant"])
        if not (user and assistant):
            raise _Bad("source:bad-turns", "no `turns`, and `user` or `assistant` is empty")
        return (("user", user), ("assistant", assistant))
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            raise _Bad("source:bad-turns", "`turns` is text that is not a JSON list") from None
    if not isinstance(raw, list):
        raise _Bad("source:bad-turns", f"`turns` is {type(raw).__name__}, expected a list")
    turns: list[tuple[ChatRole, str]] = []
    for i, message in enumerate(raw):
        content: Any
        if isinstance(message, str):
            role_name, content = ("user", "assistant")[i % 2], message
        elif isinstance(message, dict):
            role_name = str(message.get("role", message.get("from", ""))).lower()
            content = next((message[k] for k in ("content", "text", "value") if k in message), None)
        else:
            raise _Bad("source:bad-turns", f"message {i} is {type(message).__name__}")
        if role_name == "system" and i == 0:
            continue
        if role_name not in _ROLES:
            raise _Bad("source:bad-turns", f"message {i} has unknown role {role_name!r}")
        if not isinstance(content, str) or not content.strip():
            raise _Bad("source:bad-turns", f"message {i} has no text content")
        turns.append((_ROLES[role_name], content.strip()))
    if len(turns) < 2 or len(turns) % 2:
        raise _Bad("source:bad-turns", f"{len(turns)} message(s); need user/assistant pairs")
    for i, (role, _) in enumerate(turns):
        if role != ("user", "assistant")[i % 2]:
            raise _Bad("source:bad-turns", f"message {i} is {role}; roles must alternate")
    return tuple(turns)


# ---------------------------------------------------------------------------------------------
# Images


def load_image(value: Any, root: Path | None) -> bytes:
    """Encoded image bytes from any stored form, checked to decode; ``ValueError`` says why not."""
    if isinstance(value, Image.Image):
        buffer = io.BytesIO()
        value.save(buffer, format="PNG")
        return buffer.getvalue()
    if isinstance(value, dict):
        if value.get("bytes") is not None:
            value = value["bytes"]
        elif value.get("path"):
            value = value["path"]
        else:
            raise ValueError("image struct holds neither bytes nor a path")
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
    elif isinstance(value, str) and value:
        data = _read_path(value, root)
    elif value is None or value == "":
        raise ValueError("no image")
    else:
        raise ValueError(f"holds {type(value).__name__}; expected bytes, an image struct or a path")
    check_image(data)
    return data


def _read_path(value: str, root: Path | None) -> bytes:
    if "://" in value:
        raise ValueError(f"{value!r} is a URL; images are read from local files only")
    path = Path(value).expanduser()
    if not path.is_absolute():
        if root is None:
            raise ValueError(f"relative path {value!r} in a Hub dataset cannot be resolved")
        path = root / path
    try:
        return path.read_bytes()
    except OSError as err:
        raise ValueError(f"cannot read {path}: {err.strerror or err}") from None


def check_image(data: bytes) -> None:
    """Raise ``ValueError`` unless ``data`` is a non-empty image PIL can fully decode."""
    if not data:
        raise ValueError("zero-size image (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.verify()  # structure and checksums, without decoding
        with Image.open(io.BytesIO(data)) as im:
            size = im.size
            # verify() does not catch truncated JPEG data; a reduced-size decode does, cheaply.
            im.draft("RGB", (64, 64))
            im.load()
    except Exception as err:  # PIL raises many types for undecodable data
        raise ValueError(f"not a decodable image: {type(err).__name__}: {err}") from None
    if size[0] <= 0 or size[1] <= 0:
        raise ValueError(f"zero-size image ({size[0]}x{size[1]})")
