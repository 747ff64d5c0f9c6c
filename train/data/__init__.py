"""The data pipeline: dialogue shards -> token streams -> packed batches (paper Figure 2).

config      DataConfig (frozen, validated) with the ``bagel`` and ``tiny`` presets
tokenizer   load_tokenizer / ChatTokenizer: tokenizers.Tokenizer + structural token ids
transforms  ViT and VAE image transforms (BAGEL's resize rule), patchify, grid position ids
serialize   serialize_dialogue: one DialogueSample -> SerializedDialogue (layout + tensors)
pack        pack: serialized dialogues -> PackedBatch; PackBuffer, the overflow buffer
sampling    task weights (stage presets), the sharding rule, per-row seeded RNG
loader      PackedLoader: Parquet row groups -> PackedBatch, resumable, with counters
"""

from train.data.config import DataConfig, ImageTransformConfig
from train.data.loader import PackedLoader
from train.data.pack import PackBuffer, pack
from train.data.reader import LoaderStats
from train.data.sampling import acceptance, stage1_task_weights, stage2_task_weights
from train.data.serialize import (
    Block,
    DialoguePlan,
    SerializedDialogue,
    materialize,
    plan_dialogue,
    serialize_dialogue,
)
from train.data.tokenizer import (
    ChatTokenizer,
    SpecialTokens,
    default_tokenizer_path,
    load_tokenizer,
)
from train.data.transforms import ImageTransform, Transforms

__all__ = [
    "Block",
    "ChatTokenizer",
    "DataConfig",
    "DialoguePlan",
    "ImageTransform",
    "ImageTransformConfig",
    "LoaderStats",
    "PackBuffer",
    "PackedLoader",
    "SerializedDialogue",
    "SpecialTokens",
    "Transforms",
    "acceptance",
    "default_tokenizer_path",
    "load_tokenizer",
    "materialize",
    "pack",
    "plan_dialogue",
    "serialize_dialogue",
    "stage1_task_weights",
    "stage2_task_weights",
]
