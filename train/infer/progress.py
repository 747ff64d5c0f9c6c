"""What ``Chat.reply(on_progress=...)`` reports while an assistant turn is being written.

A UI streams a turn from these: each event names the part of the turn it concerns (its index in
``Reply.turn.parts``). Text arrives as the whole part decoded so far (byte-level BPE pieces may
split a character, so a token alone is not always printable); an image part reports each flow
step, then the decoded image. The callback runs on the generating thread, between model calls:
it must return quickly and must not use the session.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image


@dataclass(frozen=True)
class TextSoFar:
    """A text part, decoded so far."""

    part: int
    text: str


@dataclass(frozen=True)
class DenoisingStep:
    """An image part: ``done`` of its ``total`` flow steps taken."""

    part: int
    done: int
    total: int


@dataclass(frozen=True)
class ImageDrawn:
    """An image part, decoded (it enters the context next)."""

    part: int
    image: Image.Image


Progress = TextSoFar | DenoisingStep | ImageDrawn
OnProgress = Callable[[Progress], None]
