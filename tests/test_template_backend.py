"""The offline template backend's words: whole phrases, Chinese from its glossary only, answers
worded as answers, edit requests that name the image they edit; what it cannot write it leaves
empty, and the validators refuse exactly that result."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from ops import OPS, run_op
from ops.parse import parse_blocks
from ops.template_backend import TemplateBackend, answer
from ops.template_text import english_caption, subject_phrase, zh_edit, zh_name, zh_subject
from tests.ops_cases import INPUTS
from tests.test_bundled_words import CUT_OFF, RECITAL

DATA = Path(__file__).resolve().parent.parent / "examples" / "data"
LATIN = re.compile(r"[A-Za-z]")


def run(op: str, inputs: dict[str, str], seed: int = 0, language: str | None = None):
    import asyncio

    return asyncio.run(
        run_op(TemplateBackend(), op, inputs, random.Random(seed), language=language)  # type: ignore[arg-type]
    )


def texts(op: str, inputs: dict[str, str], seed: int = 0) -> list[tuple[str, list[str]]]:
    """(language, field texts) of every result the backend writes for ``inputs``."""
    spec = OPS[op]
    request = spec.render(inputs, random.Random(seed))
    blocks = parse_blocks(
        answer(spec, request.variables, random.Random(seed)), spec.tags, spec.results
    )
    return list(zip(spec.languages_of({**inputs}), blocks, strict=True))


@pytest.mark.parametrize(
    ("caption", "subject"),
    [
        ("A heavily motion-blurred black-and-white photograph of a round wall clock on a plain "
         "grey wall.", "a round wall clock"),
        ("A mirrored studio portrait of a smiling astronaut in an orange spacesuit: the flag ...",
         "a smiling astronaut"),
        ("A tall, narrow crop of a white rocket standing on its launch pad.", "a white rocket"),
        ("A black-and-white photograph of a man in a long dark coat looking through a camera.",
         "a man"),
        ("A wide black-and-white strip showing a single row of six ancient coins.",
         "a single row of six ancient coins"),
        ("There is a small wooden boat on a misty lake at dawn.", "a small wooden boat"),
        ("A golden retriever lying on a wooden table next to a red ball.", "A golden retriever"),
    ],
)  # fmt: skip
def test_subject_phrases_are_whole_noun_phrases(caption: str, subject: str) -> None:
    assert subject_phrase(caption) == subject


def test_chinese_comes_from_the_glossary_and_only_from_it() -> None:
    assert zh_subject("A close-up of a tabby cat's face with striped fur.") == "虎斑猫的脸"
    assert zh_subject("A man in a long dark coat.", extended=True) == "穿着长长的深色大衣的男子"
    assert zh_name("A black-and-white close-up of loose gravel seen from above.") == (
        "黑白照片里的松散的碎石"
    )
    assert zh_subject("A glimmering xylophone.") is None  # no glossary word: no rendering
    assert english_caption("一只橘猫趴在窗台上晒太阳，窗外是城市的屋顶。") == (
        "A cat, a windowsill, a sun, a city and a roof."
    )


def test_every_bundled_edit_instruction_has_a_chinese_rewrite() -> None:
    rows = [json.loads(line) for line in (DATA / "edit.jsonl").read_text().splitlines()]
    for row in rows:
        text = zh_edit(row["instruction"], "那张图片")
        assert text and "那张图片" in text and not LATIN.search(text), row["instruction"]
    assert zh_edit("Rotate the image 90 degrees clockwise.", "那张图") == "把那张图顺时针旋转90度"
    assert zh_edit("Make the sky look like a Van Gogh painting.", "那张图") is None


def test_edit_rewrites_name_the_earlier_image_instead_of_this_photo() -> None:
    caption = "A white rocket standing upright on its launch pad at dusk."
    for query in ("Make it black and white.", "Convert this photo to black and white.",
                  "Crop in tightly on the nose cone."):  # fmt: skip
        for language, (text,) in texts("query2dep_q", {"caption": caption, "query": query}):
            if language == "en":
                assert "white rocket" in text and not re.search(r"\b(?:it|this photo)\b", text)
                assert not CUT_OFF.search(text), text
            elif "nose cone" not in query:
                assert text.startswith(("把", "给")) and "白色的火箭" in text, text
            else:
                assert text == "", text  # the edit table does not know this edit: not written


def test_varied_captions_give_whole_phrases_monolingual_chinese_and_real_answers() -> None:
    from tests.test_ops_run import CAPTIONS

    for i, caption in enumerate(CAPTIONS):
        for op in ("caption2query", "caption2QA_q", "Q_from_caption", "A_from_caption"):
            inputs = {k: caption if "caption" in k else v for k, v in INPUTS[op].items()}
            for language in ("en", "zh"):
                inputs = {**inputs, "language": language} if "language" in inputs else inputs
                for lang, fields in texts(op, inputs, seed=i):
                    for text in fields:
                        assert not RECITAL.search(text), text
                        if lang == "en":
                            assert not CUT_OFF.search(text), (op, text)
                        else:
                            quoted = re.sub(r"[“\"][^”\"]*[”\"]", "", text)
                            assert text == "" or not LATIN.search(quoted), (op, text)


def test_what_it_cannot_write_is_refused_as_empty_and_nothing_else() -> None:
    result = run("caption2query", {"caption": "A glimmering xylophone."}, language="en")
    assert not result.ok and result.reason == "validate:empty"
    assert "(zh, request) is empty" in (result.detail or "")
    ok = run("caption2query", {"caption": "A glimmering xylophone in a barn."}, language="en")
    assert ok.ok, ok.detail  # the glossary knows the barn: a picture with a barn (有谷仓的)
    zh = [t for t, lang in zip(ok.call.results, OPS["caption2query"].languages_of({}), strict=True)
          if lang == "zh"]  # fmt: skip
    assert all("有谷仓" in t for t in zh), zh


def test_answers_describe_the_picture() -> None:
    inputs = {**INPUTS["A_from_caption"], "language": "en"}
    ((_, (text,)),) = texts("A_from_caption", inputs)
    assert text.startswith(("It shows a golden retriever", "The picture shows a golden retriever"))
    ((_, (zh,)),) = texts("A_from_caption", {**inputs, "language": "zh"})
    assert zh.startswith(("图中是", "画面里是")) and "金毛寻回犬" in zh and "木桌" in zh
