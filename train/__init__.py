"""Training the ChatUMM Mixture-of-Transformers model on synthesized dialogue shards.

Needs the ``train`` extra (torch, safetensors, tokenizers).
"""
