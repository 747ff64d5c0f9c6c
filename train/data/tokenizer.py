"""The text tokenizer: HF ``tokenizers`` over a checkpoint's ``tokenizer.json``.

The structural tokens are Qwen2.5's (present in BAGEL's tokenizer), looked up by string so any
Qwen2.5-family ``tokenizer.json`` works, including the small one shipped in
``train/assets/tokenizer/`` for tests and tiny runs:

    <|im_start|> ... <|im_end|>           wrap every text segment
    <|vision_start|> ... <|vision_end|>   wrap every image block (ViT, clean or noised latents)
    <|endoftext|>                         end of an assistant turn, and padding

End-of-turn choice: ``<|endoftext|>``. It is in Qwen2.5's vocabulary (no embedding resize), it
is the token the Qwen2.5 base model already emits to stop, and it differs from ``<|im_end|>``,
which closes every text segment: after an assistant segment the model must choose between three
distinct next tokens (``<|im_start|>`` text, ``<|vision_start|>`` image, ``<|endoftext|>`` done),
exactly the intent signals of the paper's Figure 2. Using ``<|im_end|>`` for both would make an
image followed by ``<|im_end|>`` mean "turn over" but a text segment followed by it ambiguous.
Padding reuses ``<|endoftext|>`` as Qwen2.5 does (``pad_token``); padding carries no loss and
attends only to itself, so sharing the id is harmless.

Special-token strings inside data text are encoded as plain text (``encode_special_tokens``), so
a user writing ``<|im_end|>`` can never forge the dialogue structure.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

# Qwen2.5's added tokens, in its id order (151643 ...); the shipped tokenizer has all of them.
QWEN25_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
)

END_OF_TURN = "<|endoftext|>"
PAD = "<|endoftext|>"


@dataclass(frozen=True)
class SpecialTokens:
    im_start: int
    im_end: int
    vision_start: int
    vision_end: int
    end_of_turn: int
    pad: int


class ChatTokenizer:
    """A ``tokenizers.Tokenizer`` plus the ids of the structural tokens."""

    def __init__(self, tokenizer: Tokenizer, source: str = "<memory>"):
        self.tokenizer = tokenizer
        self.tokenizer.encode_special_tokens = True
        names = {
            "im_start": "<|im_start|>",
            "im_end": "<|im_end|>",
            "vision_start": "<|vision_start|>",
            "vision_end": "<|vision_end|>",
            "end_of_turn": END_OF_TURN,
            "pad": PAD,
        }
        ids = {field: tokenizer.token_to_id(token) for field, token in names.items()}
        missing = sorted({names[f] for f, i in ids.items() if i is None})
        if missing:
            raise ValueError(
                f"tokenizer {source} lacks the special token(s) {missing}; use a Qwen2.5-family "
                "tokenizer.json (BAGEL's) or rebuild one with `python -m train.assets.tokenizer.build`"
            )
        self.special = SpecialTokens(**{f: int(i) for f, i in ids.items() if i is not None})

    @property
    def vocab_size(self) -> int:
        return int(self.tokenizer.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        encodings = self.tokenizer.encode_batch(texts, add_special_tokens=False)
        return [list(e.ids) for e in encodings]

    def decode(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=False))


def load_tokenizer(path: str | Path) -> ChatTokenizer:
    """Load ``tokenizer.json`` (or a directory holding one, e.g. a BAGEL checkpoint)."""
    p = Path(path)
    if p.is_dir():
        p = p / "tokenizer.json"
    if not p.is_file():
        raise FileNotFoundError(
            f"no tokenizer at {p}; pass the checkpoint's tokenizer.json or its directory"
        )
    return ChatTokenizer(Tokenizer.from_file(str(p)), source=str(p))


def default_tokenizer_path() -> Path:
    """The small bilingual byte-level BPE shipped with the repo (tests and tiny runs)."""
    return Path(__file__).resolve().parents[1] / "assets" / "tokenizer" / "tokenizer.json"


# Qwen2's pre-tokenization split (contractions, letter runs, single digits, punctuation runs,
# newlines, spaces), followed by byte-level mapping so any text, CJK included, encodes.
QWEN2_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def train_bpe(texts: list[str], vocab_size: int) -> Tokenizer:
    """A byte-level BPE in Qwen2's layout, with Qwen2.5's special tokens appended after it.

    Deterministic for a given ``texts``: the trainer picks merges by count, ties by pair order."""
    from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(QWEN25_SPECIAL_TOKENS),
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_special_tokens(list(QWEN25_SPECIAL_TOKENS))
    return tok
