"""Text decoding against the KV-cached context: token choice and the loop of one text part.

A text part is ``<|im_start|> tokens <|im_end|>`` as in training: ``<|im_start|>`` is fed, then
one token at a time is chosen from the logits of the last one and fed back, until the model
emits ``<|im_end|>`` or the part reaches ``max_tokens`` (then ``<|im_end|>`` is fed for it, so
the context always holds closed parts). Every fed token enters the cache once.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from train.infer.context import Context
from train.infer.options import TextOptions


def choose_token(logits_V: torch.Tensor, opts: TextOptions, generator: torch.Generator) -> int:
    """Greedy at temperature 0; else a draw from the temperature-scaled softmax, restricted to
    the top-p nucleus (the draw uses ``generator``, on the CPU, so a seed reproduces it on any
    device)."""
    if opts.temperature == 0:
        return int(torch.argmax(logits_V))
    probs_V = torch.softmax(logits_V.float().cpu() / opts.temperature, dim=-1)
    if opts.top_p < 1:
        sorted_V, order_V = torch.sort(probs_V, descending=True)
        before_V = torch.cumsum(sorted_V, dim=0) - sorted_V  # mass of the tokens ranked higher
        keep_V = before_V < opts.top_p  # the first token is always kept
        probs_V = torch.zeros_like(probs_V).scatter(0, order_V[keep_V], sorted_V[keep_V])
    return int(torch.multinomial(probs_V, 1, generator=generator))


def generate_text_part(
    ctx: Context,
    im_start: int,
    im_end: int,
    opts: TextOptions,
    generator: torch.Generator,
    text_only: bool = True,
    on_token: Callable[[list[int]], None] | None = None,
) -> list[int]:
    """Decode one text part into the context; the ids between its markers. ``on_token`` is
    called with the ids so far after each token (for streaming; it must not touch ``ctx``)."""
    ctx.add_tokens([im_start], text_only)
    ids: list[int] = []
    while True:
        token = (
            im_end
            if len(ids) == opts.max_tokens
            else choose_token(ctx.next_logits(), opts, generator)
        )
        ctx.add_tokens([token], text_only)
        if token == im_end:
            return ids
        ids.append(token)
        if on_token is not None:
            on_token(ids)
