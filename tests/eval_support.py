"""Shared pieces of the evaluation tests: the tiny training setup, a tiny model whose velocity
head is not zero (so its image loss depends on what it attends to), and that model with its
attention to the history cut."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch
from torch import nn

from train.batch import PackedBatch
from train.config import TrainConfig
from train.data import ChatTokenizer, DataConfig, default_tokenizer_path, load_tokenizer
from train.model import ChatUMM, ModelConfig
from train.resolve import resolve_data_config, resolve_model_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny ops run much slower with two intra-op threads on a busy 2-core machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@dataclass(frozen=True)
class TinySetup:
    model_cfg: ModelConfig
    data_cfg: DataConfig
    tokenizer: ChatTokenizer


def tiny_setup() -> TinySetup:
    """The bundled tiny configuration (train/configs/tiny.yaml), resolved."""
    cfg = TrainConfig.from_yaml(ROOT / "train/configs/tiny.yaml")
    model_cfg = resolve_model_config(cfg, None, None)
    return TinySetup(
        model_cfg, resolve_data_config(cfg, model_cfg), load_tokenizer(default_tokenizer_path())
    )


def random_model(model_cfg: ModelConfig, seed: int = 0, cls: type[ChatUMM] = ChatUMM) -> ChatUMM:
    """Randomly initialised; the velocity head too (BAGEL starts it at zero, which would make
    every image loss independent of the context)."""
    torch.manual_seed(seed)
    model = cls(model_cfg)
    nn.init.normal_(model.llm2vae.weight, std=0.02)
    return model.eval()


def cut_history(batch: PackedBatch, end_of_turn: int) -> torch.Tensor:
    """Document ids under which each dialogue's final round (everything after the end of the
    second-to-last assistant turn) is a document of its own: it sees none of its history."""
    doc_L = batch.document_ids_L.long()
    cut_L = doc_L.clone()
    eot_positions = batch.text_index_N[batch.text_ids_N == end_of_turn]
    position_L = torch.arange(doc_L.numel())
    fresh = int(doc_L.max()) + 1
    for d in doc_L.unique().tolist():
        if d < 0:
            continue
        ends = sorted(p for p in eot_positions.tolist() if doc_L[p] == d)
        mine = doc_L == d
        start = int(position_L[mine].min()) if len(ends) < 2 else ends[-2] + 1
        cut_L[mine & (position_L >= start)] = fresh + d
    return cut_L.to(batch.document_ids_L.dtype)


class HistoryBlind(ChatUMM):
    """ChatUMM whose final round cannot attend to the turns before it."""

    end_of_turn: int = -1

    def hidden_states(self, batch, attention="sdpa", noise_MC=None):  # type: ignore[no-untyped-def]
        cut = replace(batch, document_ids_L=cut_history(batch, self.end_of_turn))
        return super().hidden_states(cut, attention, noise_MC)
