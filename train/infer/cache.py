"""The KV cache: rotated keys and values of every context token run so far, per decoder layer.

One growing buffer per layer holds the tokens of every stream of a session side by side (the
full dialogue and its text-only copy, see ``train.infer.context``), each token tagged with its
stream; attention masks decide who reads what. Capacity doubles when full, so appending a token
costs no copy of the history.

A forward over T new tokens writes their keys and values at ``[length, length + T)`` and attends
over ``[0, length + T)``. ``commit`` then makes them part of the context; without it (the
denoising steps of an image) the slots are scratch, overwritten by the next forward.

Shape suffixes: N cached tokens (capacity), T new tokens, G key/value heads, Dh head width.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from train.model.config import LLMConfig


@dataclass
class _LayerView:
    """``train.model.llm.LayerKV`` for one layer and one forward."""

    cache: KVCache
    layer: int
    new: int

    def extend(self, k_TGD: torch.Tensor, v_TGD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        assert k_TGD.shape[0] == self.new, (k_TGD.shape, self.new)
        start, stop = self.cache.length, self.cache.length + self.new
        keys, values = self.cache.keys[self.layer], self.cache.values[self.layer]
        keys[start:stop] = k_TGD.to(keys.dtype)
        values[start:stop] = v_TGD.to(values.dtype)
        return keys[:stop], values[:stop]


class KVCache:
    def __init__(
        self,
        cfg: LLMConfig,
        dtype: torch.dtype,
        device: torch.device,
        capacity: int = 256,
    ) -> None:
        self.dtype, self.device = dtype, device
        self.shape = (cfg.num_kv_heads, cfg.head_dim)
        self.num_layers = cfg.num_layers
        self.length = 0
        self.keys = [self._empty(capacity) for _ in range(cfg.num_layers)]
        self.values = [self._empty(capacity) for _ in range(cfg.num_layers)]
        self.stream_N = torch.zeros(capacity, dtype=torch.long, device=device)

    @property
    def capacity(self) -> int:
        return int(self.stream_N.numel())

    def _empty(self, rows: int) -> torch.Tensor:
        return torch.zeros(rows, *self.shape, dtype=self.dtype, device=self.device)

    def views(self, new: int) -> list[_LayerView]:
        """One ``LayerKV`` per layer for a forward over ``new`` tokens (room is made first)."""
        self._reserve(self.length + new)
        return [_LayerView(self, layer, new) for layer in range(self.num_layers)]

    def commit(self, stream_T: torch.Tensor) -> None:
        """Keep the tokens the last forward wrote, tagged with their streams."""
        new = int(stream_T.numel())
        assert self.length + new <= self.capacity
        self.stream_N[self.length : self.length + new] = stream_T
        self.length += new

    def truncate(self, length: int) -> None:
        """Forget the tokens from ``length`` on (their slots become scratch)."""
        assert 0 <= length <= self.length, (length, self.length)
        self.length = length

    def _reserve(self, rows: int) -> None:
        if rows <= self.capacity:
            return
        grown = max(rows, 2 * self.capacity)
        for buffers in (self.keys, self.values):
            for i, old in enumerate(buffers):
                buffers[i] = self._empty(grown)
                buffers[i][: self.length] = old[: self.length]
        stream = torch.zeros(grown, dtype=torch.long, device=self.device)
        stream[: self.length] = self.stream_N[: self.length]
        self.stream_N = stream

    def nbytes(self) -> int:
        """Bytes held by the key and value buffers (capacity, not just what is used)."""
        per = self.keys[0].element_size() * self.keys[0].numel()
        return 2 * self.num_layers * per
