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
    parsed = spec.parse(answer(spec, request.variables, random.Random(seed)), inputs)
    return [(item.language, list(item.texts)) for item in parsed.results]


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
    spec, inputs = OPS["caption2query"], {"caption": "A glimmering xylophone."}
    text = answer(spec, spec.render(inputs, random.Random(0)).variables, random.Random(0))
    refusals = spec.parse(text, inputs).refusals
    assert refusals[:3] == (None,) * 3  # the English results stand on their own
    assert [r[0] for r in refusals[3:] if r] == ["validate:empty"] * 3
    result = run("caption2query", inputs, language="zh")
    assert not result.ok and result.reason == "validate:empty"
    assert "(zh, request) is empty" in (result.detail or "")
    assert run("caption2query", inputs, language="en").ok
    ok = run("caption2query", {"caption": "A glimmering xylophone in a barn."}, language="zh")
    assert ok.ok, ok.detail  # the glossary knows the barn: a picture with a barn (有谷仓的)
    zh = [t for t, lang in zip(ok.call.results, spec.languages({}), strict=True) if lang == "zh"]
    assert all("有谷仓" in t for t in zh), zh


def test_results_declare_what_they_name_and_are_accepted_whole() -> None:
    """Where the prompt asks for Ref/Source, the backend says which of its words name the
    subject and which words of the inputs they render, and the reference check accepts them."""
    caption = "A white rocket standing upright on its launch pad at dusk."
    pairs = pairs_of("Q_from_caption", {"caption": caption})
    assert pairs[:3] == [[("white rocket", "A white rocket")]] * 3
    assert pairs[3:] == [[("白色的火箭", "A white rocket")]] * 3
    cat = "一只橘猫趴在窗台上晒太阳，窗外是城市的屋顶。"  # a Chinese caption: Source is Chinese
    pairs = pairs_of("drive_hs_dep", {"caption_a": caption, "caption_b": cat})
    assert all(p[1] == ("cat", "猫") for p in pairs[:3]), pairs
    assert all(p[1][0] == p[1][1] and "橘猫" in p[1][0] for p in pairs[3:]), pairs
    attribute_first = "Tall and narrow, a white rocket stands on its launch pad."
    assert subject_phrase(attribute_first) == "a white rocket"  # not "Tall and narrow"
    assert pairs_of("Q_from_caption", {"caption": attribute_first})[0] == [
        ("white rocket", "a white rocket")
    ]


def pairs_of(op: str, inputs: dict[str, str]) -> list[list[tuple[str, str]]]:
    """Each result's (Ref, Source) pairs, after checking that every result is accepted."""
    spec = OPS[op]
    text = answer(spec, spec.render(inputs, random.Random(0)).variables, random.Random(0))
    assert spec.parse(text, inputs).refusals == (None,) * spec.results, text
    blocks = re.findall(r"<Result>(.*?)</Result>", text)
    return [re.findall(r"<Ref>(.*?)</Ref><Source>(.*?)</Source>", b) for b in blocks]


def test_chinese_rewrites_of_every_bundled_edit_are_accepted() -> None:
    """query2dep_q in Chinese for an English edit: the edit is put into Chinese, not quoted."""
    rows = [json.loads(line) for line in (DATA / "edit.jsonl").read_text().splitlines()]
    for row in rows:
        inputs = {"caption": row["source_caption"], "query": row["instruction"]}
        result = run("query2dep_q", inputs, language="zh")
        assert result.ok, (row["instruction"], result.detail)
        assert not LATIN.search(result.text), result.text


def test_answers_describe_the_picture() -> None:
    inputs = {**INPUTS["A_from_caption"], "language": "en"}
    ((_, (text,)),) = texts("A_from_caption", inputs)
    assert text.startswith(("It shows a golden retriever", "The picture shows a golden retriever"))
    ((_, (zh,)),) = texts("A_from_caption", {**inputs, "language": "zh"})
    assert zh.startswith(("图中是", "画面里是")) and "金毛寻回犬" in zh and "木桌" in zh


def _rows(name: str) -> list[dict[str, str]]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]


def _first(op: str, inputs: dict[str, str], language: str) -> list[str]:
    spec = OPS[op]
    text = answer(spec, spec.render(inputs, random.Random(0)).variables, random.Random(0))
    parsed = spec.parse(text, inputs)
    return next(list(i.texts) for i in parsed.results if i.language == language)


def test_every_result_it_writes_for_the_bundled_data_is_accepted() -> None:
    """Every result of every operation, both languages, for every bundled caption, edit and
    pair: judged whole (not only the one a draw picks), none refused."""
    captions = [r["caption"] for r in _rows("photos/metadata.jsonl") + _rows("subject.jsonl")]
    captions += [r[k] for r in _rows("compose.jsonl") for k in ("first_caption", "second_caption")]
    cases: list[tuple[str, dict[str, str]]] = []
    for caption in dict.fromkeys(captions):
        for op in ("caption2query", "caption2QA_q", "Q_from_caption"):
            cases.append((op, {"caption": caption}))
        for lang in ("en", "zh"):
            question, answer_text, _ = _first("caption2QA_q", {"caption": caption}, lang)
            qa = {"caption": caption, "question": question, "answer": answer_text}
            cases.append(("caption2QA_q_dep", qa))
            (asked,) = _first("Q_from_caption", {"caption": caption}, lang)
            cases.append(("A_from_caption", {"caption": caption, "question": asked,
                                             "language": lang}))  # fmt: skip
    for row in _rows("edit.jsonl"):
        cases.append(
            ("query2dep_q", {"caption": row["source_caption"], "query": row["instruction"]})
        )
    for row in _rows("compose.jsonl"):
        a, b = row["first_caption"], row["second_caption"]
        for op in ("drive_hs", "drive_hs_dep"):
            cases.append((op, {"caption_a": a, "caption_b": b}))
        for op in ("drive_i_h", "drive_i_h_dep"):
            cases.append((op, {"history_caption": a, "upload_caption": b}))
    refused = []
    for op, inputs in cases:
        spec = OPS[op]
        text = answer(spec, spec.render(inputs, random.Random(0)).variables, random.Random(0))
        parsed = spec.parse(text, inputs)
        refused += [
            (op, r, i.texts) for i, r in zip(parsed.results, parsed.refusals, strict=True) if r
        ]
    assert len(cases) > 200 and not refused, refused[:5]
