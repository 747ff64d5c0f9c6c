"""One dialogue as a token stream (paper Figure 2): its layout, then its tensors.

Layout, turn by turn, part by part (positions local to the dialogue):

    text part         <|im_start|> text <|im_end|>                         causal
    user image        [vs clean VAE latents ve] [vs ViT tokens ve]         context only
    assistant image   [vs noised VAE latents ve]                           MSE (flow matching)
                      + [vs clean VAE latents ve] [vs ViT tokens ve]       only if anything follows
    end of turn       <|endoftext|> after each assistant turn

Each ``[vs ... ve]`` is one image block: bidirectional inside, one RoPE id for all its tokens.
A noised block does not advance the RoPE id and its clean copy reuses that id (BAGEL's rule);
ids restart at 0 per dialogue. The clean copy follows a generated image whenever later tokens
exist (a later turn, or the text answer after the image in an interleaved ``ti`` answer, which
at inference is also written after the clean image is in context); the last image of a dialogue
is only noised.

Cross-entropy (``ce_index`` predicts ``ce_labels``): every token of an assistant text segment
after its ``<|im_start|>`` (text and ``<|im_end|>``), and the intent: the first token of each
assistant segment (``<|im_start|>`` text or ``<|vision_start|>`` image) and the end-of-turn
token, each predicted from the token just before it. So the user's last ``<|im_end|>`` predicts
``<|vision_start|>`` (draw), an image's last ``<|vision_end|>`` predicts ``<|im_start|>`` (talk)
or ``<|endoftext|>`` (done). User tokens carry no loss.

``plan_dialogue`` computes the layout and token count from the text and the image headers only,
so a too-long dialogue is skipped without decoding a pixel; ``materialize`` builds the tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from PIL import Image

from synth.contract import DialogueSample
from train.data.tokenizer import ChatTokenizer
from train.data.transforms import Transforms, decode_rgb, grid_position_ids, image_size, patchify

BlockKind = Literal["text", "eot", "vae_noised", "vae_clean", "vit"]


@dataclass(frozen=True)
class Block:
    """A contiguous run of the dialogue's tokens: a text segment, the end-of-turn token, or
    one image block (markers included)."""

    kind: BlockKind
    turn: int
    role: str
    start: int
    stop: int
    image: int = -1
    text_ids: tuple[int, ...] = ()
    grid: tuple[int, int] = (0, 0)  # (rows, cols) of image tokens

    @property
    def is_image(self) -> bool:
        return self.kind in ("vae_noised", "vae_clean", "vit")


@dataclass(frozen=True)
class DialoguePlan:
    sample: DialogueSample
    blocks: tuple[Block, ...]
    num_tokens: int


@dataclass
class SerializedDialogue:
    """One dialogue's tensors, positions local to it (``pack`` offsets them). Same shape
    suffixes and meanings as ``train.batch.PackedBatch``; ``segment_ids_L`` numbers the image
    blocks of this dialogue 0, 1, ... (-1 for text)."""

    sample_id: str
    task: str
    blocks: tuple[Block, ...]
    position_ids_L: torch.Tensor
    expert_ids_L: torch.Tensor
    segment_ids_L: torch.Tensor
    noised_L: torch.Tensor
    text_ids_N: torch.Tensor
    text_index_N: torch.Tensor
    ce_index_C: torch.Tensor
    ce_labels_C: torch.Tensor
    vit_patches: list[torch.Tensor]
    """One [P_i, D] per ViT image (``pack`` concatenates them once)."""
    vit_patch_dim: int
    vit_position_ids_P: torch.Tensor
    vit_seqlens_V: torch.Tensor
    vit_index_P: torch.Tensor
    vae_images: list[torch.Tensor] = field(default_factory=list)
    latent_position_ids_M: torch.Tensor = field(default_factory=lambda: torch.empty(0))
    vae_index_M: torch.Tensor = field(default_factory=lambda: torch.empty(0))
    timestep_logits_I: torch.Tensor = field(default_factory=lambda: torch.empty(0))

    @property
    def num_tokens(self) -> int:
        return int(self.position_ids_L.numel())


def plan_dialogue(
    sample: DialogueSample, tokenizer: ChatTokenizer, transforms: Transforms
) -> DialoguePlan:
    """The block layout. Raises ``OSError``/``ValueError`` when an image header is unreadable."""
    texts = [p.text for t in sample.turns for p in t.parts if p.type == "text" and p.text]
    encoded = iter(tokenizer.encode_batch(texts))
    sizes = [image_size(img.data) for img in sample.images]
    last_turn = len(sample.turns) - 1
    blocks: list[Block] = []
    pos = 0

    def add(kind: BlockKind, turn: int, role: str, length: int, **extra: object) -> None:
        nonlocal pos
        blocks.append(Block(kind, turn, role, pos, pos + length, **extra))  # type: ignore[arg-type]
        pos += length

    def add_image(kind: BlockKind, turn: int, role: str, index: int) -> None:
        tf = transforms.vit if kind == "vit" else transforms.vae
        rows, cols = tf.grid(*sizes[index])
        add(kind, turn, role, rows * cols + 2, image=index, grid=(rows, cols))

    for t, turn in enumerate(sample.turns):
        for k, part in enumerate(turn.parts):
            if part.type == "text":
                ids = tuple(next(encoded))
                add("text", t, turn.role, len(ids) + 2, text_ids=ids)
                continue
            assert part.image is not None
            if turn.role == "assistant":
                add_image("vae_noised", t, turn.role, part.image)
                if t == last_turn and k == len(turn.parts) - 1:
                    continue  # nothing reads it later: no clean copy
            add_image("vae_clean", t, turn.role, part.image)
            add_image("vit", t, turn.role, part.image)
        if turn.role == "assistant":
            add("eot", t, turn.role, 1)
    return DialoguePlan(sample, tuple(blocks), pos)


def materialize(
    plan: DialoguePlan,
    tokenizer: ChatTokenizer,
    transforms: Transforms,
    rng: np.random.Generator,
) -> SerializedDialogue:
    """Decode and transform the images, lay out every per-token tensor. ``rng`` draws the
    timestep logit of each noised image (N(0, 1); the model applies sigmoid and the shift)."""
    sp = tokenizer.special
    n = plan.num_tokens
    position = np.zeros(n, dtype=np.int64)
    expert = np.zeros(n, dtype=np.int64)
    segment = np.full(n, -1, dtype=np.int32)
    noised = np.zeros(n, dtype=np.bool_)
    text_ids: list[int] = []
    text_index: list[int] = []
    ce_index: list[int] = []
    ce_labels: list[int] = []
    vit_patches: list[torch.Tensor] = []
    vit_pos: list[torch.Tensor] = []
    vit_seqlens: list[int] = []
    vit_index: list[torch.Tensor] = []
    vae_images: list[torch.Tensor] = []
    latent_pos: list[torch.Tensor] = []
    vae_index: list[torch.Tensor] = []
    timesteps: list[float] = []
    pixels = _Pixels(plan.sample, transforms)

    rope = 0
    n_segments = 0
    for b in plan.blocks:
        first_of_segment = b.kind in ("text", "eot", "vae_noised")
        if b.role == "assistant" and first_of_segment:
            ce_index.append(b.start - 1)  # intent: the token before predicts how we go on
            ce_labels.append(
                {"text": sp.im_start, "eot": sp.end_of_turn}.get(b.kind, sp.vision_start)
            )
        if not b.is_image:
            ids = [sp.end_of_turn] if b.kind == "eot" else [sp.im_start, *b.text_ids, sp.im_end]
            text_ids.extend(ids)
            text_index.extend(range(b.start, b.stop))
            position[b.start : b.stop] = np.arange(rope, rope + len(ids))
            rope += len(ids)
            if b.role == "assistant" and b.kind == "text":
                ce_index.extend(range(b.start, b.stop - 1))
                ce_labels.extend(ids[1:])
            continue

        rows, cols = b.grid
        inner = torch.arange(b.start + 1, b.stop - 1)
        text_ids.extend((sp.vision_start, sp.vision_end))
        text_index.extend((b.start, b.stop - 1))
        position[b.start : b.stop] = rope
        segment[b.start : b.stop] = n_segments
        n_segments += 1
        if b.kind == "vit":
            vit_PD = pixels.vit(b.image)
            assert vit_PD.shape[0] == rows * cols, (vit_PD.shape, b.grid)
            vit_patches.append(vit_PD)
            vit_pos.append(grid_position_ids(rows, cols, transforms.max_patches_per_side))
            vit_seqlens.append(rows * cols)
            vit_index.append(inner)
            rope += 1
            continue
        vae_CHW = pixels.vae(b.image)
        stride = transforms.vae.cfg.stride
        assert vae_CHW.shape[1:] == (rows * stride, cols * stride), (vae_CHW.shape, b.grid)
        vae_images.append(vae_CHW)
        latent_pos.append(grid_position_ids(rows, cols, transforms.max_latent_size))
        vae_index.append(inner)
        expert[b.start + 1 : b.stop - 1] = 1
        if b.kind == "vae_noised":
            noised[b.start : b.stop] = True
            timesteps.append(float(rng.standard_normal()))
        else:
            timesteps.append(float("-inf"))
            rope += 1

    return SerializedDialogue(
        sample_id=plan.sample.sample_id,
        task=plan.sample.task,
        blocks=plan.blocks,
        position_ids_L=torch.from_numpy(position),
        expert_ids_L=torch.from_numpy(expert),
        segment_ids_L=torch.from_numpy(segment),
        noised_L=torch.from_numpy(noised),
        text_ids_N=torch.tensor(text_ids, dtype=torch.long),
        text_index_N=torch.tensor(text_index, dtype=torch.long),
        ce_index_C=torch.tensor(ce_index, dtype=torch.long),
        ce_labels_C=torch.tensor(ce_labels, dtype=torch.long),
        vit_patches=vit_patches,
        vit_patch_dim=transforms.vit.cfg.stride**2 * 3,
        vit_position_ids_P=_cat_long(vit_pos),
        vit_seqlens_V=torch.tensor(vit_seqlens, dtype=torch.int32),
        vit_index_P=_cat_long(vit_index),
        vae_images=vae_images,
        latent_position_ids_M=_cat_long(latent_pos),
        vae_index_M=_cat_long(vae_index),
        timestep_logits_I=torch.tensor(timesteps, dtype=torch.float32),
    )


class _Pixels:
    """Each image decoded once, each transform applied only if a block needs it (a final
    generated image needs no ViT tokens)."""

    def __init__(self, sample: DialogueSample, transforms: Transforms):
        self.sample, self.tf = sample, transforms
        self._images: dict[int, Image.Image] = {}
        self._vae: dict[int, torch.Tensor] = {}
        self._vit: dict[int, torch.Tensor] = {}

    def _image(self, index: int) -> Image.Image:
        if index not in self._images:
            self._images[index] = decode_rgb(self.sample.images[index].data)
        return self._images[index]

    def vae(self, index: int) -> torch.Tensor:
        """[3, H, W] in [-1, 1]."""
        if index not in self._vae:
            self._vae[index] = self.tf.vae(self._image(index))
        return self._vae[index]

    def vit(self, index: int) -> torch.Tensor:
        """[P, D] patches in [-1, 1]."""
        if index not in self._vit:
            pixels_HWC = self.tf.vit.resize(self._image(index))
            self._vit[index] = patchify(pixels_HWC, self.tf.vit.cfg.stride)
        return self._vit[index]


def _cat_long(parts: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat(parts) if parts else torch.empty(0, dtype=torch.long)


def serialize_dialogue(
    sample: DialogueSample,
    tokenizer: ChatTokenizer,
    transforms: Transforms,
    rng: np.random.Generator,
) -> SerializedDialogue:
    """``plan_dialogue`` then ``materialize``: the dialogue's full token stream."""
    return materialize(plan_dialogue(sample, tokenizer, transforms), tokenizer, transforms, rng)
