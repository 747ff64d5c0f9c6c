"""``Chat``: a multi-turn, interleaved text+image session with a trained model.

    chat = Chat.from_checkpoint("runs/tiny")              # or a checkpoint, or a BAGEL directory
    reply = chat.send("a red fox in snow")                # the model chooses: draw or talk
    reply.images[0].save("fox.png"); print(reply.text)
    reply = chat.send("now make it night", images=[photo])  # user images: VAE latents + ViT
    sample = chat.to_sample(task="t_i_i1_1")              # the session as a DialogueSample

Turns are ``synth.contract.Turn`` objects whose image parts index ``chat.images``
(``ImageRecord``, PNG bytes), so a session is a dialogue in the data contract's shape. A user
turn's images come before its text (the order of the synthesized data and of BAGEL's editing).

The assistant turn is decided by the model, as ChatUMM trains it (``train/data/serialize.py``):
after the user's last token it predicts ``<|vision_start|>`` (draw) or ``<|im_start|>`` (talk);
after an image ``<|im_start|>`` (go on talking) or ``<|endoftext|>`` (end the turn); after a
text part ``<|vision_start|>`` or ``<|endoftext|>``. The choice is the larger of those logits.
``mode="image"``/``"text"`` forces the first part. The intent after a generated image is read
once its clean latents and ViT tokens are in the context, as for every image but a dialogue's
last in training (whose noised block carries the end-of-turn prediction there).

Think mode (BAGEL's): BAGEL's planning system prompt opens the context, and before drawing the
model writes a plan as a text part that the full-context guidance branch alone sees.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from PIL import Image

from synth.contract import (
    DialogueSample,
    ImageRecord,
    Part,
    Provenance,
    SampleStage,
    Turn,
    make_sample_id,
)
from train.data.transforms import decode_rgb, patchify
from train.infer.context import Context, ImageTokens, Mark
from train.infer.flow import generate_latents
from train.infer.load import Assets, load_assets
from train.infer.options import ImageOptions, TextOptions
from train.infer.progress import DenoisingStep, ImageDrawn, OnProgress, TextSoFar
from train.infer.text import generate_text_part

Mode = Literal["auto", "image", "text"]
Segment = Literal["image", "text", "end"]
ImageInput = Image.Image | bytes | str | Path

# BAGEL's system prompt for planning before generating (its model was tuned on this exact text).
GEN_THINK_SYSTEM_PROMPT = (
    "You should first think about the planning process in the mind and then generate the image. \n"
    "The planning process is enclosed within <think> </think> tags, i.e. <think> planning "
    "process here </think> image here"
)


@dataclass(frozen=True)
class Reply:
    """One assistant turn: the contract's ``Turn`` and the images it drew, in order."""

    turn: Turn
    images: tuple[Image.Image, ...]

    @property
    def text(self) -> str:
        return self.turn.text


class Chat:
    def __init__(
        self,
        assets: Assets,
        *,
        seed: int = 0,
        think: bool = False,
        text: TextOptions | None = None,
        image_overrides: dict[str, Any] | None = None,
        max_parts: int = 3,
    ) -> None:
        """``image_overrides``: ``ImageOptions`` fields set on top of the defaults the context
        picks (``ImageOptions.for_context``); ``max_parts``: parts per assistant turn at most."""
        ImageOptions().with_overrides(image_overrides or {})  # fail now on a bad field
        if max_parts < 1:
            raise ValueError(f"max_parts must be at least 1, got {max_parts}")
        self.assets, self.seed, self.think = assets, seed, think
        self.text_options = text or TextOptions()
        self.image_overrides = dict(image_overrides or {})
        self.max_parts = max_parts
        self.special = assets.tokenizer.special
        self.generator = torch.Generator().manual_seed(seed)
        self.ctx = Context(assets.model, (self.special.vision_start, self.special.vision_end))
        self.turns: list[Turn] = []
        self.images: list[ImageRecord] = []
        if think:
            self._add_text(GEN_THINK_SYSTEM_PROMPT)
        self._marks: list[tuple[Mark, int]] = []  # before turn k: the context, len(images)

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, *, device: str | None = None, ema: bool = False, **kwargs: Any
    ) -> Chat:
        return cls(load_assets(path, device=device, ema=ema), **kwargs)

    # --- the conversation ---------------------------------------------------------------------
    def send(
        self,
        text: str | None = None,
        images: Sequence[ImageInput] = (),
        *,
        mode: Mode = "auto",
        image: ImageOptions | None = None,
    ) -> Reply:
        """A user turn (its images, then its text), then the assistant's answer."""
        self.add_user(text, images)
        return self.reply(mode=mode, image=image)

    def add_user(
        self, text: str | None = None, images: Sequence[ImageInput] = (), refs: Sequence[int] = ()
    ) -> None:
        """A user turn: the session's images at indices ``refs`` shown again (an image of the
        history to edit), then the new ``images``, then ``text``."""
        for index in refs:
            if not 0 <= index < len(self.images):
                raise ValueError(
                    f"image {index} is not in this conversation (it holds {len(self.images)})"
                )
        if not (text or images or refs):
            raise ValueError("a user turn needs text or at least one image")
        self._expect("user")
        encoded = [_encode(img) for img in images]  # every upload is read before any is kept
        self._begin_turn()
        parts = [Part.of_image(index, "upload") for index in refs]
        parts += [Part.of_image(self._keep_image(data, "upload"), "upload") for data in encoded]
        if text:
            parts.append(Part.of_text(text))
        self._put(Turn(role="user", parts=tuple(parts)), self.images)

    def add_turn(self, turn: Turn, images: Sequence[ImageRecord]) -> None:
        """Put a whole turn into the context as it stands (history, teacher-forced): its image
        parts index ``images``. An assistant image enters as the VAE latents of its pixels."""
        self._expect(turn.role)
        self._begin_turn()
        self._put(turn, images)

    def _expect(self, role: str) -> None:
        expected = "user" if len(self.turns) % 2 == 0 else "assistant"
        if role != expected:
            raise ValueError(
                f"turn {len(self.turns)} must be a {expected} turn (turns alternate, user first); "
                f"got {role}"
            )

    def _begin_turn(self) -> None:
        """Remember where turn ``len(self.turns)`` starts (``truncate`` comes back here)."""
        del self._marks[len(self.turns) :]  # a turn that failed half-way left its mark
        self._marks.append((self.ctx.mark(), len(self.images)))

    def _put(self, turn: Turn, images: Sequence[ImageRecord]) -> None:
        parts = []
        for part in turn.parts:
            if part.type == "text":
                self._add_text(part.text or "")
                parts.append(part)
                continue
            assert part.image is not None and part.origin is not None
            record = images[part.image]
            index = self._index_of(record, images is self.images, part.image)
            self.ctx.add_image(self._image_tokens(decode_rgb(record.data)))
            parts.append(Part.of_image(index, part.origin))
        if turn.role == "assistant":
            self.ctx.add_tokens([self.special.end_of_turn])
        self.turns.append(Turn(role=turn.role, parts=tuple(parts)))

    def load(self, sample: DialogueSample, upto: int | None = None) -> None:
        """The sample's turns ``[0, upto)`` into the context (default: up to and including its
        last user turn, i.e. everything the final answer follows)."""
        stop = sample.final_turn + 1 if upto is None else upto
        for turn in sample.turns[:stop]:
            self.add_turn(turn, sample.images)

    def reply(
        self,
        *,
        mode: Mode = "auto",
        image: ImageOptions | None = None,
        on_progress: OnProgress | None = None,
    ) -> Reply:
        """Generate the assistant turn that follows the context; ``on_progress`` hears of each
        token and flow step as it comes (``train.infer.progress``)."""
        report = on_progress or _ignore
        if not self.turns or self.turns[-1].role != "user":
            raise ValueError("the assistant answers a user turn: add one first (add_user / send)")
        self._begin_turn()
        parts: list[Part] = []
        drawn: list[Image.Image] = []
        last: Segment | None = None
        while (segment := self._next_segment(last, mode, len(parts))) != "end":
            if segment == "image":
                if self.think and not drawn:
                    parts.append(Part.of_text(self._generate_text(True, len(parts), report)))
                picture = self._draw(image, len(parts), report)
                drawn.append(picture)
                parts.append(Part.of_image(self._keep_image(_encode(picture), "output"), "output"))
            else:
                parts.append(Part.of_text(self._generate_text(False, len(parts), report)))
            last = segment
        self.ctx.add_tokens([self.special.end_of_turn])
        turn = Turn(role="assistant", parts=tuple(parts))
        self.turns.append(turn)
        return Reply(turn, tuple(drawn))

    def truncate(self, turns: int) -> None:
        """Go back to the first ``turns`` turns (undo): the context as it was before turn
        ``turns`` and the images it held then. Nothing is recomputed. Also cleans up after a
        reply that failed half-way: ``truncate(len(turns) - 1)`` drops its user turn."""
        if not 0 <= turns <= len(self.turns):
            raise ValueError(f"the conversation has {len(self.turns)} turn(s); cannot keep {turns}")
        if turns == len(self._marks):
            return
        mark, images = self._marks[turns]
        self.ctx.rewind(mark)
        del self.turns[turns:], self.images[images:], self._marks[turns:]

    def to_sample(
        self,
        task: str,
        stage: SampleStage = "source",
        sample_id: str | None = None,
        provenance: Provenance | None = None,
    ) -> DialogueSample:
        """The session as a ``DialogueSample`` (raises ``InvariantError`` if its turns do not
        fit ``task``'s structure; a task with dependencies needs a ``provenance`` naming them)."""
        sid = sample_id or make_sample_id(
            stage, self.seed, [r.source_row for r in self.images], task
        )
        return DialogueSample(
            sample_id=sid,
            task=task,
            stage=stage,
            turns=tuple(self.turns),
            images=tuple(self.images),
            provenance=provenance or Provenance(seed=self.seed),
        )

    # --- decisions ------------------------------------------------------------------------------
    def intent_candidates(self, last: Segment | None) -> dict[int, Segment]:
        """The tokens the model chooses among at this point of an assistant turn."""
        sp = self.special
        if last is None:
            return {sp.vision_start: "image", sp.im_start: "text"}
        if last == "image":
            return {sp.im_start: "text", sp.end_of_turn: "end"}
        return {sp.vision_start: "image", sp.end_of_turn: "end"}

    def _next_segment(self, last: Segment | None, mode: Mode, parts: int) -> Segment:
        if last is None and mode != "auto":
            return mode
        if parts >= self.max_parts:
            return "end"
        candidates = self.intent_candidates(last)
        logits = self.ctx.next_logits()
        return candidates[max(candidates, key=lambda token: float(logits[token]))]

    # --- parts ----------------------------------------------------------------------------------
    def _add_text(self, text: str) -> None:
        sp = self.special
        self.ctx.mark_text_condition()
        self.ctx.add_tokens([sp.im_start, *self.assets.tokenizer.encode(text), sp.im_end])

    def _generate_text(self, plan: bool, part: int, report: OnProgress) -> str:
        """A text part decoded into the context. A plan is no condition of the text-CFG branch
        and stays out of the image-CFG branch (BAGEL's think mode)."""
        if not plan:
            self.ctx.mark_text_condition()
        sp, decode = self.special, self.assets.tokenizer.decode
        ids = generate_text_part(
            self.ctx, sp.im_start, sp.im_end, self.text_options, self.generator,
            text_only=not plan, on_token=lambda so_far: report(TextSoFar(part, decode(so_far))),
        )  # fmt: skip
        return decode(ids)

    def _draw(self, options: ImageOptions | None, part: int, report: OnProgress) -> Image.Image:
        opts = options or ImageOptions.for_context(bool(self.ctx.image_sizes), self.image_overrides)
        rows, cols = self._grid(opts.size)
        model = self.assets.model
        noise_MC = torch.randn(rows * cols, model.config.latent_dim, generator=self.generator)
        latents_MC = generate_latents(
            self.ctx, (rows, cols), noise_MC, opts,
            on_step=lambda done, total: report(DenoisingStep(part, done, total)),
        )  # fmt: skip
        pixels = model.decode_latent_tokens(latents_MC, rows, cols)
        picture = to_pil(pixels)
        report(ImageDrawn(part, picture))
        self.ctx.add_image(self._image_tokens(picture, latents_MC))
        return picture

    def _grid(self, size: tuple[int, int] | None) -> tuple[int, int]:
        """(rows, cols) of latent tokens: the requested size, else the last image's, else the
        largest square the VAE transform makes."""
        cfg, stride = self.assets.model.config, self.assets.model.config.image_stride
        if size is not None:
            width, height = (max(stride, round(side / stride) * stride) for side in size)
            if max(width, height) > cfg.max_latent_size * stride:
                raise ValueError(
                    f"image size {size} exceeds the model's latent position table "
                    f"({cfg.max_latent_size * stride} px per side)"
                )
        elif self.ctx.image_sizes:
            width, height = self.ctx.image_sizes[-1]
        else:
            side = self.assets.transforms.vae.cfg.max_side
            width, height = self.assets.transforms.vae.target_size(side, side)
        return height // stride, width // stride

    def _image_tokens(
        self, picture: Image.Image, latents_MC: torch.Tensor | None = None
    ) -> ImageTokens:
        """What the context takes of an image: clean latents (the VAE posterior mean of its
        pixels unless given) and the ViT patches of its pixels."""
        tf, model = self.assets.transforms, self.assets.model
        if latents_MC is None:
            vae_CHW = tf.vae(picture)
            size = (vae_CHW.shape[2], vae_CHW.shape[1])
            latents_MC = model.latent_tokens([vae_CHW])
        else:
            size = picture.size
        stride, vit_stride = model.config.image_stride, tf.vit.cfg.stride
        pixels_HWC = tf.vit.resize(picture)
        return ImageTokens(
            latents_MC=latents_MC,
            latent_grid=(size[1] // stride, size[0] // stride),
            vit_patches_PD=patchify(pixels_HWC, vit_stride),
            vit_grid=(pixels_HWC.shape[0] // vit_stride, pixels_HWC.shape[1] // vit_stride),
            size=size,
        )

    def _keep_image(self, data: bytes, origin: Literal["upload", "output"]) -> int:
        """Keep encoded image bytes as an ``ImageRecord``; its index."""
        source = "user" if origin == "upload" else "model"
        self.images.append(
            ImageRecord(data=data, source=source, source_row=f"image-{len(self.images)}")
        )
        return len(self.images) - 1

    def _index_of(self, record: ImageRecord, own: bool, index: int) -> int:
        """The index of ``record`` in this session's images (added on first use)."""
        if own:
            return index
        for i, kept in enumerate(self.images):
            if kept is record:
                return i
        self.images.append(record)
        return len(self.images) - 1


def _encode(image: ImageInput) -> bytes:
    """The image's file bytes (PNG unless given encoded); an unreadable one fails here, before
    it enters the session."""
    if isinstance(image, Image.Image):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        data = buffer.getvalue()
    elif isinstance(image, bytes):
        data = image
    else:
        data = Path(image).read_bytes()
    decode_rgb(data)
    return data


def _ignore(_: object) -> None:
    pass


def to_pil(pixels_CHW: torch.Tensor) -> Image.Image:
    """[3, H, W] in [-1, 1] -> an RGB image (values truncated to uint8, as BAGEL does)."""
    unit = (pixels_CHW.float() * 0.5 + 0.5).clamp(0, 1) * 255
    return Image.fromarray(unit.to(torch.uint8).permute(1, 2, 0).cpu().numpy())


def continue_dialogue(
    assets: Assets,
    sample: DialogueSample,
    *,
    seed: int = 0,
    mode: Mode = "auto",
    **chat_options: Any,
) -> Reply:
    """The assistant turn the model writes after ``sample``'s history up to its last user turn
    (the sample's own final answer is not read)."""
    chat = Chat(assets, seed=seed, **chat_options)
    chat.load(sample)
    return chat.reply(mode=mode)
