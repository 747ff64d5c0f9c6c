"""The demo page (Gradio): a chat with the model, its settings, undo, new, save.

The model is loaded once; each browser tab holds its own ``Conversation`` (``gr.State``). Every
event that runs the model shares one concurrency slot (``concurrency_id="model"``), so one
generation runs at a time and the others wait in Gradio's queue, which shows each tab its
position. Nothing here reaches outside the machine: no analytics, no share link, no fonts or
scripts from elsewhere (``train/demo/cli.py`` sets the environment; the browser test checks
every request the page makes).
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import gradio as gr

from train.demo.conversation import Conversation, reference
from train.demo.record import conversation_sample, dependency_choices, save_sample
from train.demo.settings import AUTO, EDIT, T2I, Settings, from_panel
from train.infer import Assets

MODES = [("the model decides", "auto"), ("draw", "image"), ("talk", "text")]
# Images are clicked to refer to them; the tiny test models draw 64-px images, shown larger.
# The share button (to Hugging Face discussions) needs the internet: hidden.
CSS = """
#chat img { cursor: pointer; min-width: 160px; height: auto; object-fit: contain; image-rendering: pixelated; }
#chat button[aria-label="Share"] { display: none; }
.gradio-container { max-width: 1400px !important; }
"""
HINT = (
    "Attach images with the clip. Click an image in the conversation to refer to it in your "
    "next message: `[image N]` shows it to the model again, to edit it."
)


PANEL = [f.name for f in fields(Settings)]


def _panel() -> list[gr.components.Component]:
    """The settings widgets, in ``Settings`` field order, with BAGEL's defaults, two a row."""
    d = Settings()
    auto = f"auto: {T2I.cfg_img_scale:g} from text, {EDIT.cfg_img_scale:g} once an image is in"
    interval = (
        f"start, end of t (1 = noise). auto: {T2I.cfg_interval[0]:g}, {T2I.cfg_interval[1]:g} "
        f"from text; {EDIT.cfg_interval[0]:g}, {EDIT.cfg_interval[1]:g} editing"
    )
    renorm = f"auto: {T2I.cfg_renorm_type} from text, {EDIT.cfg_renorm_type} editing"

    def number(value: float, label: str, precision: int | None = None) -> gr.Number:
        return gr.Number(value, label=label, precision=precision, render=False)

    widgets: dict[str, gr.components.Component] = {
        "steps": number(d.steps, label="flow steps", precision=0),
        "cfg_text_scale": number(d.cfg_text_scale, label="text guidance scale"),
        "cfg_img_scale": gr.Textbox(AUTO, label="image guidance scale", info=auto, render=False),
        "cfg_interval": gr.Textbox(AUTO, label="guidance interval", info=interval, render=False),
        "cfg_renorm_type": gr.Dropdown(
            [AUTO, "global", "channel", "text_channel"],
            value=AUTO,
            label="renorm",
            info=renorm,
            render=False,
        ),
        "cfg_renorm_min": number(d.cfg_renorm_min, label="renorm minimum"),
        "timestep_shift": number(d.timestep_shift, label="timestep shift"),
        "seed": number(d.seed, label="seed", precision=0),
        "temperature": number(d.temperature, label="temperature (0: greedy)"),
        "top_p": number(d.top_p, label="top-p"),
        "max_tokens": number(d.max_tokens, label="tokens per text part", precision=0),
        "max_parts": number(d.max_parts, label="parts per answer", precision=0),
    }
    assert list(widgets) == PANEL
    for name, widget in widgets.items():
        widget.elem_id = f"setting-{name}"
    row = list(widgets.values())
    for k in range(0, len(row), 2):
        with gr.Row():
            for widget in row[k : k + 2]:
                widget.render()
    return row


@dataclass
class Handlers:
    """What the page's events do; one instance serves every tab (each passes its own
    ``Conversation``, ``None`` until its first message)."""

    assets: Assets
    save_dir: Path
    image_dir: Path
    model_lock: threading.Lock = field(default_factory=threading.Lock)
    save_lock: threading.Lock = field(default_factory=threading.Lock)

    def respond(
        self,
        message: dict[str, Any],
        conv: Conversation | None,
        mode: str,
        think: bool,
        *panel: Any,
    ) -> Iterator[tuple[Any, ...]]:
        """(chat, message box, state, dependency choices) as the reply comes."""
        conv = conv or Conversation(self.assets, self.model_lock, self.image_dir, think)
        busy = gr.MultimodalTextbox(value=None, interactive=False)
        try:
            settings = from_panel(dict(zip(PANEL, panel, strict=True)))
            text, files = message.get("text") or "", list(message.get("files") or [])
            for shown in conv.stream(text, files, settings, mode, think):  # type: ignore[arg-type]
                yield shown, busy, conv, gr.update()
        except (ValueError, OSError) as err:
            back = gr.MultimodalTextbox(value=message, interactive=True)
            yield conv.messages(), back, conv, _choices(conv)
            raise gr.Error(str(err), title="Not sent") from None
        free = gr.MultimodalTextbox(value=None, interactive=True)
        yield conv.messages(), free, conv, _choices(conv)

    def refer(
        self, event: gr.SelectData, message: dict[str, Any] | None, conv: Conversation | None
    ) -> Any:
        """A click on an image of the chat: its reference appended to the message box."""
        at = event.index if isinstance(event.index, int) else event.index[0]
        index = conv.image_at(at) if conv else None
        if index is None:
            return gr.update()
        message = message or {}
        text = f"{(message.get('text') or '').rstrip()} {reference(index)} ".lstrip()
        return {"text": text, "files": message.get("files") or []}

    def undo(self, conv: Conversation | None) -> tuple[Any, ...]:
        message = conv.undo() if conv else None
        shown = conv.messages() if conv else []
        return shown, message or gr.update(), conv, _choices(conv)

    def new(self, think: bool) -> tuple[Any, ...]:
        conv = Conversation(self.assets, self.model_lock, self.image_dir, think)
        return [], None, conv, _choices(conv), "", gr.File(None, visible=False)

    def save(
        self, conv: Conversation | None, depends_on: list[int], seed: float
    ) -> tuple[Any, ...]:
        if conv is None:
            raise gr.Error("nothing to save yet", title="Not saved")
        try:
            sample = conversation_sample(conv.chat.turns, conv.chat.images, depends_on, int(seed))
            path = save_sample(sample, self.save_dir, self.save_lock, str(self.assets.source))
        except ValueError as err:
            raise gr.Error(str(err), title="Not saved") from None
        note = (
            f"saved `{sample.sample_id}` (task `{sample.task}`, stage {sample.stage}) to `{path}`"
        )
        return note, gr.File(str(path), visible=True)


def _choices(conv: Conversation | None) -> Any:
    return gr.update(choices=dependency_choices(conv.chat.turns) if conv else [], value=[])


def build_app(assets: Assets, save_dir: Path, image_dir: Path | None = None) -> gr.Blocks:
    """The page for ``assets``; saved conversations go to ``save_dir``."""
    do = Handlers(assets, save_dir, image_dir or Path(tempfile.mkdtemp(prefix="chatumm-demo-")))
    with gr.Blocks(title="chatumm demo", analytics_enabled=False) as app:
        state = gr.State(None)
        gr.Markdown(f"### chatumm · {assets.source} on {assets.device}")
        with gr.Row():
            with gr.Column(scale=3):
                chat = gr.Chatbot(
                    elem_id="chat", height=520, buttons=["copy"], feedback_options=None,
                    placeholder="Say something, or ask for a picture.",
                )  # fmt: skip
                box = gr.MultimodalTextbox(
                    elem_id="message", file_types=["image"], file_count="multiple",
                    placeholder="Message", show_label=False, info=HINT,
                )  # fmt: skip
                with gr.Row():
                    mode = gr.Radio(MODES, value="auto", label="answer", elem_id="mode")
                    think = gr.Checkbox(False, label="think before drawing", elem_id="think")
                with gr.Row():
                    undo = gr.Button("Undo last turn", elem_id="undo")
                    new = gr.Button("New conversation", elem_id="new")
            with gr.Column(scale=2):
                with gr.Accordion("Settings", open=False, elem_id="settings"):
                    panel = _panel()
                with gr.Accordion("Save", open=True):
                    depends = gr.CheckboxGroup(
                        [], label="the last request depends on", elem_id="depends"
                    )
                    save = gr.Button("Save conversation", elem_id="save")
                    saved = gr.Markdown(elem_id="saved")
                    download = gr.File(
                        label="saved shard", elem_id="download", interactive=False, visible=False
                    )

        shown = [chat, box, state, depends]
        fresh = [*shown, saved, download]
        box.submit(
            do.respond, [box, state, mode, think, *panel], shown,
            concurrency_id="model", concurrency_limit=1,
        )  # fmt: skip
        chat.select(do.refer, [box, state], box, queue=False)
        undo.click(do.undo, state, shown, concurrency_id="model", concurrency_limit=1)
        new.click(do.new, think, fresh, concurrency_id="model", concurrency_limit=1)
        chat.clear(do.new, think, fresh, concurrency_id="model", concurrency_limit=1)
        save.click(do.save, [state, depends, panel[PANEL.index("seed")]], [saved, download])
    return app


def error_app(checkpoint: Path, error: str) -> gr.Blocks:
    """The page served when the checkpoint cannot be read: what failed and what to pass."""
    with gr.Blocks(title="chatumm demo: no model", analytics_enabled=False) as app:
        gr.Markdown(
            f"## The checkpoint cannot be read\n\n`{checkpoint}`\n\n```\n{error}\n```\n\n"
            "Restart the demo with `--checkpoint` naming a training run directory (its newest "
            "complete checkpoint is used), one of its `ckpt/step-N` checkpoints, or a directory "
            "in BAGEL's layout (`python -m train export`, or BAGEL-7B-MoT).",
            elem_id="error",
        )
    return app
