"""Parallelism, applied to the model from outside (torchtitan's ``parallelize``).

In order: activation checkpointing per transformer block (full or selective), ``torch.compile``
per block (dynamic shapes), then FSDP2 ``fully_shard`` per LLM decoder layer, per ViT layer, on
the connector and each embedder, and finally on the root (embeddings, head, norms). The frozen VAE is left out of FSDP: it stays
a plain replicated module on every rank and encodes under ``no_grad`` inside the model's forward.

HYBRID_SHARD is FSDP2 on a 2-D mesh ``(replicate, shard)``: parameters are sharded across the
``num_shard`` ranks of a group and replicated across groups (the paper uses num_shard = 32).
Mixed precision keeps fp32 master weights, computes in bf16 and reduces gradients in fp32.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

from train.config import ParallelConfig
from train.model.attention import AttentionMask

# Submodules sharded as their own FSDP unit when the model has them (then the root).
EMBEDDERS = ("connector", "vae2llm", "llm2vae", "time_embedder")
BLOCK_LISTS = ("llm.layers", "vit.layers")


def build_mesh(device_type: str, world_size: int, num_shard: int | None) -> DeviceMesh:
    """1-D ``(shard,)`` mesh for plain FSDP, 2-D ``(replicate, shard)`` for HYBRID_SHARD."""
    shard = world_size if num_shard is None else num_shard
    if shard > world_size or world_size % shard:
        raise ValueError(
            f"parallel.num_shard={num_shard} must divide the world size {world_size} "
            "(ranks per shard group; the remaining factor replicates)"
        )
    if shard == world_size:
        return init_device_mesh(device_type, (world_size,), mesh_dim_names=("shard",))
    return init_device_mesh(
        device_type, (world_size // shard, shard), mesh_dim_names=("replicate", "shard")
    )


def _block_lists(model: nn.Module) -> Iterator[nn.ModuleList]:
    for dotted in BLOCK_LISTS:
        module: nn.Module | None = model
        for name in dotted.split("."):
            module = getattr(module, name, None)
        if isinstance(module, nn.ModuleList):
            yield module


_aten = torch.ops.aten
# What selective checkpointing keeps: the outputs of the matmuls and attention kernels (what is
# expensive to recompute). Norms, activations, RoPE and copies are recomputed in backward.
SELECTIVE_SAVE = frozenset(
    {
        _aten.mm.default,
        _aten.addmm.default,
        _aten.bmm.default,
        _aten._scaled_dot_product_flash_attention.default,
        _aten._scaled_dot_product_efficient_attention.default,
        _aten._scaled_dot_product_cudnn_attention.default,
        _aten._scaled_dot_product_flash_attention_for_cpu.default,
        torch.ops.higher_order.flex_attention,
    }
)


def _selective_policy(ctx: Any, op: Any, *args: Any, **kwargs: Any) -> CheckpointPolicy:
    return CheckpointPolicy.MUST_SAVE if op in SELECTIVE_SAVE else CheckpointPolicy.PREFER_RECOMPUTE


def apply_activation_checkpointing(model: nn.Module, mode: str = "full") -> None:
    """Recompute each transformer block's activations in backward (non-reentrant): all of them
    (``full``) or all but the matmul and attention outputs (``selective``)."""
    if mode not in ("full", "selective"):
        raise ValueError(f"activation checkpointing {mode!r}: use 'full' or 'selective'")
    kwargs: dict[str, Any] = {}
    if mode == "selective":
        kwargs["context_fn"] = partial(create_selective_checkpoint_contexts, _selective_policy)
    for blocks in _block_lists(model):
        for i, block in enumerate(blocks):
            # RNG state is preserved so a block that draws random numbers recomputes the same ones.
            blocks[i] = checkpoint_wrapper(block, **kwargs)


def apply_compile(model: nn.Module) -> None:
    """Compile each block's ``forward`` in place (parameter names unchanged). Token counts --
    rows per expert, keys, ViT patches -- change with every pack, so a pre-forward hook marks
    them dynamic before Dynamo first sees them: one graph per block serves every pack, where
    Dynamo's default (static first, dynamic after a change) compiles each block at least twice.
    Weights and widths stay static. A part of size 0 or 1 (a pack without latents or without
    ViT patches) is specialised by Dynamo: it compiles once more, the first time it occurs."""
    for blocks in _block_lists(model):
        for block in blocks:
            block.register_forward_pre_hook(_mark_token_dims_dynamic, with_kwargs=True)
            block.forward = torch.compile(block.forward)


def _mark_token_dims_dynamic(module: nn.Module, args: Any, kwargs: Any) -> None:
    for tensor, dims in _token_dims((args, kwargs)):
        for dim in dims:
            if tensor.shape[dim] > 1:  # 0 and 1 are specialised whatever is marked
                torch._dynamo.maybe_mark_dynamic(tensor, dim)


def _token_dims(value: Any) -> Iterator[tuple[torch.Tensor, range]]:
    """The token dimensions of a block's inputs: the first of every activation ([rows, ...]:
    x, RoPE tables), both of a dense mask ([queries, keys]), the block counts of a BlockMask."""
    if isinstance(value, torch.Tensor):
        yield value, range(1)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _token_dims(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _token_dims(item)
    elif isinstance(value, AttentionMask):
        if value.dense_LL is not None:
            yield value.dense_LL, range(2)
        if value.block is not None:  # [B, H, blocks(, blocks)] tensors
            for tensor in value.block.as_tuple():
                if isinstance(tensor, torch.Tensor):
                    yield tensor, range(2, tensor.ndim)


def apply_fsdp(model: nn.Module, mesh: DeviceMesh, mixed_precision: str) -> None:
    mp = (
        MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        if mixed_precision == "bf16"
        else MixedPrecisionPolicy()
    )
    for blocks in _block_lists(model):
        for block in blocks:
            fully_shard(block, mesh=mesh, mp_policy=mp)
    for name in EMBEDDERS:
        sub = getattr(model, name, None)
        if isinstance(sub, nn.Module):
            fully_shard(sub, mesh=mesh, mp_policy=mp)
    vae = getattr(model, "vae", None)
    ignored = set(vae.parameters()) if isinstance(vae, nn.Module) else None
    # The root's input is the whole PackedBatch: leave it in fp32 (pixels for the fp32 VAE,
    # timestep logits); each sharded block casts its own inputs to bf16.
    root_mp = MixedPrecisionPolicy(
        param_dtype=mp.param_dtype, reduce_dtype=mp.reduce_dtype, cast_forward_inputs=False
    )
    fully_shard(model, mesh=mesh, mp_policy=root_mp, ignored_params=ignored)


def parallelize(
    model: nn.Module, mesh: DeviceMesh, cfg: ParallelConfig, device: torch.device
) -> nn.Module:
    """Apply AC, compile and FSDP2 to ``model`` (built and initialised on CPU) in place; the
    sharded parameters land on ``device``, the frozen VAE is moved there whole."""
    vae = getattr(model, "vae", None)
    if isinstance(vae, nn.Module):
        vae.requires_grad_(False)
        vae.eval()
    if cfg.activation_checkpointing != "off":
        apply_activation_checkpointing(model, cfg.activation_checkpointing)
    if cfg.compile:
        apply_compile(model)
    apply_fsdp(model, mesh, cfg.mixed_precision)
    if isinstance(vae, nn.Module):
        vae.to(device)
    return model
