"""One browser tab's conversation: a ``Chat`` and what the page shows of it.

``Conversation.stream`` adds the user's turn and yields the page's messages as the assistant's
turn is written (text as it is decoded, a progress line per flow step, each image once decoded):
``Chat.reply`` runs on a worker thread and reports through ``on_progress``. Every model call,
of any tab, holds the one ``lock`` of the model.

Undo and a reply that fails go back with ``Chat.truncate`` (the context exactly as it was, nothing
recomputed). Think mode puts BAGEL's planning prompt first in the context, so switching it
rebuilds the ``Chat`` from the turns (``Chat.add_turn``, teacher-forced); a drawn image then
enters the new context as the VAE latents of its pixels, not the latents the sampler produced.

Images in the history are numbered from 1 in the page; ``[image N]`` in a message shows that
image to the model again, at the start of the turn (how the page's "edit this" works).
"""

from __future__ import annotations

import hashlib
import io
import queue
import re
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from PIL import Image

from synth.contract import ImageRecord, Turn
from train.demo.settings import Settings
from train.infer import Assets, Chat, DenoisingStep, ImageDrawn, Progress, Reply, TextSoFar
from train.infer.session import Mode

REFERENCE = re.compile(r"\[image (\d+)\]")
Message = dict[str, Any]


def reference(index: int) -> str:
    """What the page inserts for the session's image ``index``."""
    return f"[image {index + 1}]"


def parse_references(text: str, images: int) -> tuple[list[int], str]:
    """The image indices ``[image N]`` names in ``text`` (in order, once each) and the text
    without them."""
    refs: list[int] = []
    for match in REFERENCE.finditer(text):
        number = int(match.group(1))
        if not 1 <= number <= images:
            raise ValueError(
                f"{match.group(0)}: this conversation has {images} image(s); click an image "
                "to refer to it"
            )
        if number - 1 not in refs:
            refs.append(number - 1)
    return refs, " ".join(REFERENCE.sub(" ", text).split())


@dataclass
class _Pending:
    """The assistant's turn as far as it has been written."""

    folder: Path
    kinds: dict[int, Literal["text", "image"]] = field(default_factory=dict)
    texts: dict[int, str] = field(default_factory=dict)
    steps: dict[int, tuple[int, int]] = field(default_factory=dict)
    images: dict[int, Path] = field(default_factory=dict)

    def take(self, event: Progress) -> None:
        if isinstance(event, TextSoFar):
            self.kinds[event.part], self.texts[event.part] = "text", event.text
        elif isinstance(event, DenoisingStep):
            self.kinds[event.part], self.steps[event.part] = "image", (event.done, event.total)
        elif isinstance(event, ImageDrawn):
            buffer = io.BytesIO()
            event.image.save(buffer, format="PNG")  # as the Chat keeps it: the same file
            self.kinds[event.part] = "image"
            self.images[event.part] = image_file(self.folder, buffer.getvalue())

    def messages(self) -> list[Message]:
        out: list[Message] = []
        for part, kind in sorted(self.kinds.items()):
            if kind == "text":
                out.append({"role": "assistant", "content": self.texts[part]})
            elif part in self.images:
                out.append({"role": "assistant", "content": {"path": str(self.images[part])}})
            else:
                done, total = self.steps[part]
                out.append(_status(f"drawing: step {done} of {total}", log=_bar(done, total)))
        return out


class Conversation:
    def __init__(
        self, assets: Assets, lock: threading.Lock, image_dir: Path, think: bool = False
    ) -> None:
        self.assets, self.lock = assets, lock
        self.image_dir = Path(tempfile.mkdtemp(prefix="conversation-", dir=image_dir))
        with lock:
            self.chat = self._rebuilt([], [], think)

    # --- the conversation ---------------------------------------------------------------------
    def stream(
        self,
        text: str,
        uploads: Sequence[str | Path],
        settings: Settings,
        mode: Mode = "auto",
        think: bool = False,
    ) -> Iterator[list[Message]]:
        """Add the user's turn and yield the page's messages until the reply is complete.
        A reply that fails leaves the conversation as it was before the message."""
        refs, text = parse_references(text, len(self.chat.images))
        if not (text or uploads or refs):
            raise ValueError("write a message, or attach an image")
        text_options, overrides = settings.text_options(), settings.image_overrides()
        shown = [*self.messages()]  # the history, then the new turn as the model will see it
        shown += [{"role": "user", "content": self._image_content(i)} for i in refs]
        shown += [{"role": "user", "content": {"path": str(p)}} for p in uploads]
        shown += [{"role": "user", "content": text}] if text else []
        yield [*shown, _status("waiting for the model")]

        events: queue.Queue[Progress | Reply | BaseException | None] = queue.Queue()

        def work() -> None:
            try:
                with self.lock:
                    events.put(None)  # the model is ours: the reply starts
                    if think != self.chat.think:
                        self.chat = self._rebuilt(self.chat.turns, self.chat.images, think)
                    self.chat.text_options, self.chat.image_overrides = text_options, overrides
                    self.chat.max_parts = int(settings.max_parts)
                    self.chat.generator.manual_seed(int(settings.seed))
                    kept = len(self.chat.turns)
                    try:
                        self.chat.add_user(text or None, list(uploads), refs)
                        events.put(self.chat.reply(mode=mode, on_progress=events.put))
                    except BaseException:
                        self.chat.truncate(kept)
                        raise
            except BaseException as err:
                events.put(err)

        threading.Thread(target=work, name="chatumm-reply", daemon=True).start()
        pending = _Pending(self.image_dir)
        while True:
            event = events.get()
            if isinstance(event, BaseException):
                raise event
            if isinstance(event, Reply):
                yield self.messages()
                return
            if event is not None:
                pending.take(event)
            yield [*shown, *pending.messages()]

    def undo(self) -> dict[str, Any] | None:
        """Drop the last exchange; its user message as the message box holds one (text with
        ``[image N]`` for images of the history, files for uploads), to edit and send again."""
        with self.lock:
            turns, images = self.chat.turns, self.chat.images
            if len(turns) < 2:
                return None
            user, keep = turns[-2], len(turns) - 2
            earlier = {i for turn in turns[:keep] for i in turn.images}
            refs = [reference(i) for i in user.images if i in earlier]
            files = [str(image_file(self.image_dir, images[i].data)) for i in user.images]
            files = [f for i, f in zip(user.images, files, strict=True) if i not in earlier]
            self.chat.truncate(keep)
        return {"text": " ".join([*refs, user.text]).strip(), "files": files}

    # --- what the page shows ------------------------------------------------------------------
    def messages(self) -> list[Message]:
        """The finished turns as the page's chat messages: one message per part."""
        out: list[Message] = []
        for turn in self.chat.turns:
            for part in turn.parts:
                if part.type == "text":
                    out.append({"role": turn.role, "content": part.text})
                else:
                    assert part.image is not None
                    out.append({"role": turn.role, "content": self._image_content(part.image)})
        return out

    def image_at(self, message: int) -> int | None:
        """The session image that page message ``message`` shows (None: a text message)."""
        k = 0
        for turn in self.chat.turns:
            for part in turn.parts:
                if k == message:
                    return part.image if part.type == "image" else None
                k += 1
        return None

    def _image_content(self, index: int) -> dict[str, str]:
        path = image_file(self.image_dir, self.chat.images[index].data)
        return {"path": str(path), "alt_text": reference(index)}

    # --- rebuilding -----------------------------------------------------------------------------
    def _rebuilt(self, turns: Sequence[Turn], images: Sequence[ImageRecord], think: bool) -> Chat:
        """A fresh ``Chat`` holding ``turns`` (the caller holds the lock)."""
        chat = Chat(self.assets, think=think)
        for turn in turns:
            chat.add_turn(turn, images)
        return chat


def image_file(folder: Path, data: bytes) -> Path:
    """An encoded image on disk for the page (written once, named by its content)."""
    with Image.open(io.BytesIO(data)) as image:
        suffix = (image.format or "png").lower()
    path = folder / f"{hashlib.sha256(data).hexdigest()[:20]}.{suffix}"
    if not path.exists():
        path.write_bytes(data)
    return path


def _status(title: str, log: str = "") -> Message:
    """A progress line in the chat: a pending 'thought' with a spinner."""
    return {
        "role": "assistant",
        "content": "",
        "metadata": {"title": title, "status": "pending", "log": log},
    }


def _bar(done: int, total: int, width: int = 20) -> str:
    filled = round(width * done / max(total, 1))
    return "█" * filled + "░" * (width - filled)
