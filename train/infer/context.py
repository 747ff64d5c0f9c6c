"""A dialogue held in a KV cache exactly as training serializes it (``train/data/serialize.py``).

Each new part runs once against the cache and is appended; history is never recomputed. The
cached sequence is the training sequence without its noised blocks (which no later token may
see, and which take no RoPE id), so a cached forward equals a training forward on the same
dialogue (``tests/test_infer_context.py``):

    text part         <|im_start|> text <|im_end|>                  causal, one RoPE id per token
    image             [vs clean latents ve] [vs ViT tokens ve]      bidirectional per block;
                                                                    RoPE r, then r + 1
    end of turn       <|endoftext|>

Classifier-free guidance reads the same cache through three *branches* (BAGEL's):

    full        the whole dialogue
    text CFG    the dialogue without its last text part: a prefix of the full stream, marked by
                ``mark_text_condition`` before each text part and moved to the end after each
                image (so after an upload the text-CFG branch keeps the image)
    image CFG   the text parts and end-of-turn tokens alone, in a second *stream* of the same
                cache with its own consecutive RoPE ids; filled lazily, only when asked for

A forward packs one or more query groups (a branch each) end to end, like training packs
dialogues: a group reads its branch's cached tokens and its own new tokens (causal, or
bidirectional inside an image block). The three branches of a denoising step run as one
forward. Noised latents are never cached; a generated image enters the context as its clean
latents (those the sampler produced, not a re-encoding of the decoded pixels as in BAGEL's
``InterleaveInferencer``) and the ViT tokens of its decoded pixels.

Shape suffixes: P cached tokens, T new tokens, M latent tokens, C latent channels, D width,
B branches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from train.data.transforms import grid_position_ids
from train.infer.cache import KVCache
from train.model.attention import AttentionMask
from train.model.llm import GENERATION, UNDERSTANDING, ExpertRouting
from train.model.model import ChatUMM

FULL, TEXT_ONLY = 0, 1
"""Cache streams: the whole dialogue, and its text parts alone (the image-CFG branch)."""


@dataclass(frozen=True)
class Branch:
    """What a query group reads: the cached tokens of ``stream`` below index ``limit``, and its
    own new tokens, whose RoPE ids start at ``rope``."""

    stream: int
    limit: int
    rope: int


@dataclass
class Layout:
    """The new tokens of one forward (query groups end to end) and everything that depends only
    on their layout: the mask and routing are built once and reused by every denoising step."""

    position_ids_T: torch.Tensor
    stream_T: torch.Tensor
    routing: ExpertRouting
    mask: AttentionMask


@dataclass
class _Builder:
    """Lays out and embeds new tokens group by group."""

    model: ChatUMM
    device: torch.device
    pieces: list[torch.Tensor] = field(default_factory=list)
    position: list[torch.Tensor] = field(default_factory=list)
    expert: list[torch.Tensor] = field(default_factory=list)
    group: list[torch.Tensor] = field(default_factory=list)
    block: list[torch.Tensor] = field(default_factory=list)
    branches: list[Branch] = field(default_factory=list)
    rope: int = 0
    blocks: int = 0
    length: int = 0

    def start(self, branch: Branch) -> None:
        self.branches.append(branch)
        self.rope = branch.rope

    def _add(self, x_TD: torch.Tensor, expert_T: torch.Tensor, positions: torch.Tensor, block: int):
        n = x_TD.shape[0]
        self.pieces.append(x_TD)
        self.expert.append(expert_T)
        self.position.append(positions)
        self.group.append(torch.full((n,), len(self.branches) - 1, device=self.device))
        self.block.append(torch.full((n,), block, device=self.device))
        self.length += n

    def text(self, ids: Sequence[int]) -> None:
        ids_T = torch.tensor(list(ids), dtype=torch.long, device=self.device)
        positions = torch.arange(self.rope, self.rope + len(ids), device=self.device)
        expert = torch.full_like(ids_T, UNDERSTANDING)
        self._add(self.model.llm.embed_tokens(ids_T), expert, positions, -1)
        self.rope += len(ids)

    def image_block(self, tokens_MD: torch.Tensor, expert: int, marker_ids: tuple[int, int]):
        """``<|vision_start|>`` tokens ``<|vision_end|>``: one block, one RoPE id. Returns the
        rows of the inner tokens in the chunk."""
        markers = self.model.llm.embed_tokens(torch.tensor(marker_ids, device=self.device))
        x_TD = torch.cat([markers[:1], tokens_MD.to(markers.dtype), markers[1:]])
        expert_T = torch.full((x_TD.shape[0],), expert, device=self.device)
        expert_T[0] = expert_T[-1] = UNDERSTANDING
        start = self.length + 1
        self._add(x_TD, expert_T, torch.full_like(expert_T, self.rope), self.blocks)
        self.blocks += 1
        return torch.arange(start, start + tokens_MD.shape[0], device=self.device)

    def build(self, cache: KVCache) -> tuple[Layout, torch.Tensor]:
        group_T = torch.cat(self.group)
        stream_of = torch.tensor([b.stream for b in self.branches], device=self.device)
        limit_of = torch.tensor([b.limit for b in self.branches], device=self.device)
        mask = _mask(
            cache.stream_N[: cache.length], group_T, torch.cat(self.block), stream_of, limit_of
        )
        layout = Layout(
            position_ids_T=torch.cat(self.position),
            stream_T=stream_of[group_T],
            routing=ExpertRouting.from_expert_ids(torch.cat(self.expert)),
            mask=AttentionMask("sdpa", int(group_T.numel()), dense_LL=mask),
        )
        return layout, torch.cat(self.pieces)


def _mask(
    stream_P: torch.Tensor,
    group_T: torch.Tensor,
    block_T: torch.Tensor,
    stream_of: torch.Tensor,
    limit_of: torch.Tensor,
) -> torch.Tensor:
    """[T, P + T] bool: a new token reads the cached tokens of its group's stream below its
    group's limit, and the new tokens of its group before it or in its image block. (Cached
    tokens are all in the past and none is noised, so training's rule reduces to this.)"""
    p, t = stream_P.numel(), group_T.numel()
    device = group_T.device
    cached = (stream_P[None, :] == stream_of[group_T][:, None]) & (
        torch.arange(p, device=device)[None, :] < limit_of[group_T][:, None]
    )
    q = torch.arange(t, device=device)
    same_block = (block_T[:, None] == block_T[None, :]) & (block_T[:, None] >= 0)
    new = (group_T[:, None] == group_T[None, :]) & ((q[None, :] <= q[:, None]) | same_block)
    return torch.cat([cached, new], dim=1)


@dataclass(frozen=True)
class ImageTokens:
    """An image as the context takes it: clean latent tokens and ViT patches with their grids."""

    latents_MC: torch.Tensor
    latent_grid: tuple[int, int]
    vit_patches_PD: torch.Tensor
    vit_grid: tuple[int, int]
    size: tuple[int, int]
    """(width, height) of the VAE image in pixels."""


@dataclass(frozen=True)
class Mark:
    """A point of the dialogue to come back to (``Context.rewind``)."""

    length: int
    rope: tuple[int, int]
    text_cfg: Branch
    pending_text: tuple[int, ...]
    last_hidden_D: torch.Tensor | None
    images: int


class Context:
    def __init__(self, model: ChatUMM, vision_markers: tuple[int, int]) -> None:
        self.model = model
        param = next(model.parameters())
        self.device = param.device
        self.cache = KVCache(model.config.llm, param.dtype, param.device)
        self.markers = vision_markers
        self.rope = [0, 0]
        self.text_cfg = Branch(FULL, 0, 0)
        self.pending_text: list[int] = []
        self.last_hidden_D: torch.Tensor | None = None
        self.image_sizes: list[tuple[int, int]] = []

    # --- branches -----------------------------------------------------------------------------
    def full_branch(self) -> Branch:
        return Branch(FULL, self.cache.length, self.rope[FULL])

    @torch.no_grad()
    def image_cfg_branch(self) -> Branch:
        """The text-only stream, brought up to date first."""
        if self.pending_text:
            builder = self._builder()
            builder.start(Branch(TEXT_ONLY, self.cache.length, self.rope[TEXT_ONLY]))
            builder.text(self.pending_text)
            self._run(builder, commit=True)
            self.rope[TEXT_ONLY] = builder.rope
            self.pending_text = []
        return Branch(TEXT_ONLY, self.cache.length, self.rope[TEXT_ONLY])

    def mark_text_condition(self) -> None:
        """The text-CFG branch reads the dialogue up to here: the text part about to be added is
        the condition it drops."""
        self.text_cfg = self.full_branch()

    # --- appending ----------------------------------------------------------------------------
    @torch.no_grad()
    def add_tokens(self, ids: Sequence[int], text_only: bool = True) -> torch.Tensor:
        """Run text tokens in the full stream; the hidden state of the last one. ``text_only``:
        they also belong to the image-CFG branch's stream (all text but a think plan)."""
        builder = self._builder()
        builder.start(self.full_branch())
        builder.text(ids)
        hidden_TD = self._run(builder, commit=True)
        self.rope[FULL] = builder.rope
        if text_only:
            self.pending_text.extend(ids)
        self.last_hidden_D = hidden_TD[-1]
        return hidden_TD

    @torch.no_grad()
    def add_image(self, image: ImageTokens) -> torch.Tensor:
        """Clean latents, then ViT tokens, in the full stream (one forward); the hidden states."""
        model = self.model
        builder = self._builder()
        builder.start(self.full_branch())
        rows, cols = image.latent_grid
        positions = grid_position_ids(rows, cols, model.config.max_latent_size).to(self.device)
        zero = torch.zeros(1, device=self.device)
        image_M = torch.zeros(rows * cols, dtype=torch.long, device=self.device)
        latents = model.embed_latents(image.latents_MC.to(self.device), zero, image_M, positions)
        builder.image_block(latents, GENERATION, self.markers)
        builder.rope += 1
        rows, cols = image.vit_grid
        vit_positions = grid_position_ids(rows, cols, model.config.vit.max_patches_per_side)
        vit = model.embed_vit(
            image.vit_patches_PD.to(self.device),
            vit_positions.to(self.device),
            torch.tensor([rows * cols], device=self.device),
        )
        builder.image_block(vit, UNDERSTANDING, self.markers)
        builder.rope += 1
        hidden_TD = self._run(builder, commit=True)
        self.rope[FULL] = builder.rope
        self.text_cfg = self.full_branch()
        self.image_sizes.append(image.size)
        self.last_hidden_D = hidden_TD[-1]
        return hidden_TD

    @torch.no_grad()
    def next_logits(self) -> torch.Tensor:
        """[V] float32 logits of the token after the dialogue so far."""
        assert self.last_hidden_D is not None, "the context is empty"
        return self.model.llm.lm_head(self.last_hidden_D).float()

    # --- going back -----------------------------------------------------------------------------
    def mark(self) -> Mark:
        return Mark(
            self.cache.length, (self.rope[0], self.rope[1]), self.text_cfg,
            tuple(self.pending_text), self.last_hidden_D, len(self.image_sizes),
        )  # fmt: skip

    def rewind(self, mark: Mark) -> None:
        """The context as it was at ``mark``: every token cached since is dropped, nothing is
        recomputed (each stream only appends, so what precedes the mark is unchanged)."""
        self.cache.truncate(mark.length)
        self.rope = list(mark.rope)
        self.text_cfg, self.pending_text = mark.text_cfg, list(mark.pending_text)
        self.last_hidden_D = mark.last_hidden_D
        del self.image_sizes[mark.images :]

    # --- denoising ------------------------------------------------------------------------------
    def query(self, grid: tuple[int, int], branches: Sequence[Branch]) -> NoisedQuery:
        """The noised latent block of an image of ``grid`` (rows, cols), once per branch."""
        return NoisedQuery(self, grid, tuple(branches))

    # --- internals ------------------------------------------------------------------------------
    def _builder(self) -> _Builder:
        return _Builder(self.model, self.device)

    def _run(self, builder: _Builder, commit: bool) -> torch.Tensor:
        layout, x_TD = builder.build(self.cache)
        return self.forward(layout, x_TD, commit)

    @torch.no_grad()
    def forward(self, layout: Layout, x_TD: torch.Tensor, commit: bool) -> torch.Tensor:
        assert layout.mask.dense_LL is not None
        assert layout.mask.dense_LL.shape[1] == self.cache.length + x_TD.shape[0], "stale layout"
        views = self.cache.views(x_TD.shape[0])
        hidden_TD = self.model.llm(x_TD, layout.routing, layout.position_ids_T, layout.mask, views)
        if commit:
            self.cache.commit(layout.stream_T)
        return hidden_TD


class NoisedQuery:
    """One noised latent block per branch, packed into one forward; its layout, mask and marker
    embeddings are built once and reused by every denoising step. Nothing is committed."""

    @torch.no_grad()
    def __init__(self, ctx: Context, grid: tuple[int, int], branches: tuple[Branch, ...]):
        self.ctx, self.grid, self.branches = ctx, grid, branches
        model = ctx.model
        rows, cols = grid
        self.position_ids_M = grid_position_ids(rows, cols, model.config.max_latent_size).to(
            ctx.device
        )
        self.image_M = torch.zeros(rows * cols, dtype=torch.long, device=ctx.device)
        placeholder_MD = torch.zeros(rows * cols, model.config.llm.hidden_size, device=ctx.device)
        builder = ctx._builder()
        rows_B = []
        for branch in branches:
            builder.start(branch)
            rows_B.append(builder.image_block(placeholder_MD, GENERATION, ctx.markers))
        self.layout, self.x_TD = builder.build(ctx.cache)
        self.latent_rows = torch.cat(rows_B)

    @torch.no_grad()
    def velocity(self, x_MC: torch.Tensor, t: float) -> torch.Tensor:
        """[B, M, C] float32: the predicted velocity (noise - x0) of each branch at (x_t, t)."""
        model = self.ctx.model
        t_I = torch.tensor([t], dtype=torch.float32, device=self.ctx.device)
        tokens_MD = model.embed_latents(x_MC, t_I, self.image_M, self.position_ids_M)
        x_TD = self.x_TD.clone()
        x_TD[self.latent_rows] = tokens_MD.to(x_TD.dtype).repeat(len(self.branches), 1)
        hidden_TD = self.ctx.forward(self.layout, x_TD, commit=False)
        v_MC = model.llm2vae(hidden_TD[self.latent_rows]).float()
        return v_MC.reshape(len(self.branches), x_MC.shape[0], -1)
