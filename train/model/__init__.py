"""ChatUMM model: BAGEL's Mixture-of-Transformers unified model, architecture and losses.

Public API (used by the training loop)::

    from train.model import ModelConfig, ChatUMM, LossTerms, reduce_losses
    cfg = ModelConfig.preset("tiny")            # or ModelConfig.from_bagel_dir(path)
    with torch.device("meta"):
        model = ChatUMM(cfg)                    # no allocation before sharding
    model.to_empty(device="cuda"); model.init_weights()   # or load a state dict
    terms = model(batch, attention="flex")      # LossTerms(ce_sum, ce_tokens, mse_sum, mse_tokens)
    ce, mse = reduce_losses(terms, group)       # token means over the data-parallel group

Checkpoints in BAGEL's released layout: ``train.model.bagel_adapter``.
"""

from train.model.config import LLMConfig, ModelConfig, VAEConfig, ViTConfig
from train.model.losses import LossTerms, reduce_losses
from train.model.model import ChatUMM, TokenLosses

__all__ = [
    "ChatUMM",
    "LLMConfig",
    "LossTerms",
    "ModelConfig",
    "TokenLosses",
    "VAEConfig",
    "ViTConfig",
    "reduce_losses",
]
