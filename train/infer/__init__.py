"""Talking to a trained ChatUMM: multi-turn, interleaved text and image generation.

    from train.infer import Chat
    chat = Chat.from_checkpoint("runs/tiny")          # a run, a checkpoint, or a BAGEL directory
    reply = chat.send("a red fox in snow")            # Reply(turn, images)
    reply = chat.send("now make it night", images=["photo.png"], mode="image")

    from train.infer import load_assets, continue_dialogue
    reply = continue_dialogue(load_assets("runs/tiny"), sample)   # answer a DialogueSample's history

session   Chat, Reply, continue_dialogue: turns in the data contract's shape, intents, think mode
context   the KV-cached dialogue (training's serialization) and the three guidance branches
cache     KVCache: per-layer key/value buffers shared by the branches
text      token choice (greedy, temperature, top-p) and the decoding of one text part
flow      the shifted schedule, three-branch guidance with renormalisation, Euler sampling
options   TextOptions, ImageOptions (BAGEL's text-to-image and editing defaults)
progress  what Chat.reply reports while it writes a turn (text so far, flow steps, images)
load      load_assets: DCP training checkpoints, exported and BAGEL-7B-MoT directories
batch     generate_turns: every sample's answer as PNG + JSONL, resumable and seeded per sample
cli       `python -m train chat` and `python -m train generate`
"""

from train.infer.load import Assets, load_assets
from train.infer.options import ImageOptions, TextOptions
from train.infer.progress import DenoisingStep, ImageDrawn, Progress, TextSoFar
from train.infer.session import Chat, Reply, continue_dialogue

__all__ = [
    "Assets",
    "Chat",
    "DenoisingStep",
    "ImageDrawn",
    "ImageOptions",
    "Progress",
    "Reply",
    "TextOptions",
    "TextSoFar",
    "continue_dialogue",
    "load_assets",
]
