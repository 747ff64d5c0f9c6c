"""Training behaviour of the tiny ChatUMM on CPU: overfitting one batch, loss reduction over a
2-rank gloo group."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.model_batches import dialogue_batch, one_torch_thread  # noqa: F401
from train.model import ChatUMM, LossTerms, ModelConfig, reduce_losses


def test_tiny_model_overfits_one_packed_batch():
    torch.manual_seed(0)
    cfg = ModelConfig.tiny()
    model = ChatUMM(cfg).train()
    batch = dialogue_batch(cfg)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=3e-3, betas=(0.9, 0.95)
    )
    history = []
    for _ in range(60):
        torch.manual_seed(1)  # the same VAE sample and flow noise every step: one fixed batch
        ce, mse = reduce_losses(model(batch))
        optimizer.zero_grad()
        (ce + mse).backward()
        optimizer.step()
        history.append((ce.item(), mse.item()))
    (ce0, mse0), (ce1, mse1) = history[0], history[-1]
    assert ce1 < ce0 / 10, history[::10]
    assert mse1 < mse0 / 10, history[::10]


def test_reduce_losses_single_process_is_token_mean():
    terms = LossTerms(
        ce_sum=torch.tensor(6.0, requires_grad=True),
        ce_tokens=torch.tensor(3.0),
        mse_sum=torch.tensor(0.0, requires_grad=True),
        mse_tokens=torch.tensor(0.0),
    )
    ce, mse = reduce_losses(terms)
    assert ce.item() == 2.0 and mse.item() == 0.0  # no MSE tokens: 0, not NaN
    (ce + mse).backward()
    assert float(terms.ce_sum.grad) == pytest.approx(1 / 3)


def _rank_main(rank: int, port: int, results) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        # rank 0: 1 CE token with loss 4; rank 1: 3 CE tokens summing to 2 -> group mean 6/4
        ce_sum = torch.tensor([4.0, 2.0][rank], requires_grad=True)
        terms = LossTerms(
            ce_sum=ce_sum,
            ce_tokens=torch.tensor([1.0, 3.0][rank]),
            mse_sum=torch.tensor([0.0, 1.0][rank], requires_grad=True),
            mse_tokens=torch.tensor([0.0, 2.0][rank]),
        )
        ce, mse = reduce_losses(terms, group=dist.group.WORLD)
        (ce + mse).backward()
        results[rank] = (float(ce), float(mse), float(ce_sum.grad))
    finally:
        dist.destroy_process_group()


def test_reduce_losses_over_two_ranks_is_the_group_token_mean():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with mp.Manager() as manager:
        results = manager.dict()
        mp.start_processes(_rank_main, (port, results), nprocs=2, start_method="fork")
        results = dict(results)
    for rank in (0, 1):
        ce, mse, grad = results[rank]
        assert ce == pytest.approx(6.0 / 4) and mse == pytest.approx(1.0 / 2)
        # FSDP averages gradients over the 2 ranks: local grad * 2 / 4 tokens, averaged -> 1/4
        assert grad == pytest.approx(2 / 4)
