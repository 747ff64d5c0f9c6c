"""What a row's values mean for a kind, as public datasets write them.

- Image placeholders in text (LLaVA's ``<image>``, OmniGen's ``<img><|image_1|></img>``) are
  removed: the image travels as an image, never as a token in a caption, question or request.
- Conversations (ShareGPT ``from``/``value``, OpenAI ``role``/``content``, plain strings) become
  user/assistant pairs: role aliases (human/gpt/bing/chatgpt/bard/model/bot) mapped, content
  parts joined, system and tool turns (and assistant turns that only call tools) skipped, a
  leading assistant turn and a trailing user turn dropped (as FastChat and vLLM's ShareGPT
  converters do), consecutive turns of one role joined.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

ChatRole = Literal["user", "assistant"]

ROLE_ALIASES: dict[str, ChatRole] = {
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "model": "assistant",
    "bot": "assistant",
    "bing": "assistant",
    "chatgpt": "assistant",
    "bard": "assistant",
}
# Turns with no place in a user/assistant dialogue: instructions to the model, and tool traffic.
SKIPPED_ROLES = frozenset({"system", "developer", "tool", "function", "ipython"})
_TEXT_PARTS = frozenset({"text", "input_text", "output_text"})
_IMAGE_PARTS = frozenset({"image", "image_url", "input_image"})

_PLACEHOLDER = re.compile(r"<img>\s*<\|image_(\d+)\|>\s*</img>|<\|image_(\d+)\|>|<image>")
_SPACE_BEFORE_PUNCT = re.compile(r"[ \t]+([.,;:!?])")


class BadRow(Exception):
    """A row that cannot become a typed row: ``reason`` (a code in ``REASONS``) and detail."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def strip_placeholders(text: str) -> tuple[str, int]:
    """``text`` without image placeholders, and how many distinct images it referred to."""
    found = {m.group(1) or m.group(2) or "image" for m in _PLACEHOLDER.finditer(text)}
    if not found:
        return text, 0
    cleaned = _PLACEHOLDER.sub(" ", text)
    lines = [" ".join(line.split()) for line in cleaned.splitlines()]
    cleaned = "\n".join(line for line in lines if line)
    return _SPACE_BEFORE_PUNCT.sub(r"\1", cleaned).strip(), len(found)


@dataclass(frozen=True, slots=True)
class Message:
    role: ChatRole
    text: str
    images: int  # image placeholders or image parts it carries


def read_conversation(raw: Any) -> list[Message]:
    """The user/assistant messages of a stored conversation, normalised (module docstring)."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            raise BadRow("source:bad-turns", "`turns` is text that is not a JSON list") from None
    if not isinstance(raw, list):
        raise BadRow("source:bad-turns", f"`turns` is {type(raw).__name__}, expected a list")
    messages: list[Message] = []
    for i, item in enumerate(raw):
        message = _message(i, item)
        if message is None:
            continue
        if messages and messages[-1].role == message.role:
            last = messages.pop()
            message = Message(
                message.role, f"{last.text}\n\n{message.text}", last.images + message.images
            )
        elif not messages and message.role == "assistant":
            continue  # a conversation picked up mid-way: its opening reply answers nothing here
        messages.append(message)
    if messages and messages[-1].role == "user":
        messages.pop()  # a question left unanswered
    if not messages:
        raise BadRow("source:bad-turns", f"no user/assistant exchange among {len(raw)} message(s)")
    return messages


def _message(i: int, item: Any) -> Message | None:
    if isinstance(item, str):
        role: str = ("user", "assistant")[i % 2]
        content: Any = item
    elif isinstance(item, dict):
        role = str(item.get("role", item.get("from", ""))).strip().lower()
        content = next((item[k] for k in ("content", "value", "text") if k in item), None)
        if role in SKIPPED_ROLES or (role == "assistant" and _calls_tools(item)):
            return None
    else:
        raise BadRow("source:bad-turns", f"message {i} is {type(item).__name__}")
    if role not in ROLE_ALIASES:
        raise BadRow(
            "source:bad-turns",
            f"message {i} has unknown role {role!r} (known: {', '.join(sorted(ROLE_ALIASES))})",
        )
    text, images = _content_text(i, content)
    if not text:
        raise BadRow("source:bad-turns", f"message {i} has no text content")
    return Message(ROLE_ALIASES[role], text, images)


def _calls_tools(item: dict[str, Any]) -> bool:
    return bool(item.get("tool_calls") or item.get("function_call"))


def _content_text(i: int, content: Any) -> tuple[str, int]:
    """A message's text (parts joined by newlines, placeholders removed) and its image count."""
    if isinstance(content, str):
        return strip_placeholders(content.strip())
    if isinstance(content, list):
        texts, images = [], 0
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and part.get("type") in _TEXT_PARTS:
                texts.append(str(part.get("text") or ""))
            elif isinstance(part, dict) and part.get("type") in _IMAGE_PARTS:
                images += 1
        text, placeholders = strip_placeholders("\n".join(t.strip() for t in texts if t.strip()))
        return text, images + placeholders
    if content is None:
        return "", 0
    raise BadRow("source:bad-turns", f"message {i} content is {type(content).__name__}")


def exchanges(messages: list[Message]) -> list[tuple[Message, Message]]:
    """(user, assistant) pairs of a normalised conversation."""
    return [(messages[k], messages[k + 1]) for k in range(0, len(messages) - 1, 2)]
