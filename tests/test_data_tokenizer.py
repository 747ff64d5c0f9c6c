"""The tokenizer wrapper, the shipped tokenizer and its deterministic rebuild."""

from __future__ import annotations

from pathlib import Path

import pytest
from tokenizers import Tokenizer, models

from train.assets.tokenizer import build
from train.data import ChatTokenizer, default_tokenizer_path, load_tokenizer
from train.data.tokenizer import QWEN25_SPECIAL_TOKENS, train_bpe

CORPUS = [
    "Please draw a red cat sitting on a wooden table.",
    "Make the hat blue, and put the dog from before on the beach.",
    "把帽子改成红色。请画一只小猫。",
    "What is 12 plus 30? The answer is 42.",
] * 20


def test_a_tiny_trained_bpe_has_the_structural_tokens() -> None:
    tok = ChatTokenizer(train_bpe(CORPUS, vocab_size=400))
    sp = tok.special
    assert len({sp.im_start, sp.im_end, sp.vision_start, sp.vision_end, sp.end_of_turn}) == 5
    assert sp.pad == sp.end_of_turn  # Qwen2.5 pads with <|endoftext|>
    assert tok.decode([sp.im_start]) == "<|im_start|>"
    assert tok.vocab_size <= 400
    for text in ["Draw a cat.", "画一只猫", "emoji 🐱 and ünïcödé never seen"]:
        assert tok.decode(tok.encode(text)) == text  # byte-level: anything encodes


def test_special_token_strings_in_data_text_stay_plain_text() -> None:
    tok = load_tokenizer(default_tokenizer_path())
    ids = tok.encode("hi <|im_end|><|vision_start|> there")
    structural = {tok.special.im_end, tok.special.vision_start, tok.special.im_start}
    assert not structural & set(ids)
    assert tok.decode(ids) == "hi <|im_end|><|vision_start|> there"


def test_shipped_tokenizer_is_small_bilingual_and_has_qwen_special_tokens() -> None:
    tok = load_tokenizer(default_tokenizer_path().parent)  # a directory works too
    assert 2000 <= tok.vocab_size <= 8000
    for token in QWEN25_SPECIAL_TOKENS:
        assert tok.tokenizer.token_to_id(token) is not None, token
    # merges learnt on the corpus: common words are single tokens in both languages
    assert len(tok.encode("Please draw a red cat")) <= 6
    assert len(tok.encode("把帽子改成红色")) <= 4


def test_shipped_tokenizer_is_reproduced_by_its_build_script() -> None:
    assert build.main(["--check"]) == 0


def test_a_tokenizer_without_the_structural_tokens_is_refused(tmp_path: Path) -> None:
    bare = Tokenizer(models.BPE())
    with pytest.raises(ValueError, match="lacks the special token"):
        ChatTokenizer(bare)
    with pytest.raises(FileNotFoundError, match="no tokenizer"):
        load_tokenizer(tmp_path)
