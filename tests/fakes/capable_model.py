"""A fake model that answers every operation as a capable model does, in both languages.

Unlike the ``template`` backend, which quotes the English caption inside a Chinese frame, this
model writes its Chinese results in Chinese: it names each subject by its Chinese name and the
edit by its Chinese wording, and it declares the Ref/Source pair the prompts ask for, as GPT-4o
does. What it knows is a small table of the bundled data's subjects and edit instructions (a
model's knowledge, not the validators': ``ops.validate`` pairs no word across languages). It
answers through a real fake server: ``fake_openai.answer = CapableModel(prompt_book)``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ops.parse import format_results
from ops.protocol import LLMRequest
from tests.fakes._server import FakeRequest
from tests.fakes.answers import PromptBook

# English words a bundled caption names its subject by, and the subject's Chinese name. The
# subject of a caption is the one named first.
SUBJECTS = {
    "tabby cat": "虎斑猫", "cat": "猫", "rocket": "火箭", "astronaut": "宇航员",
    "espresso cup": "浓缩咖啡杯", "espresso": "意式浓缩咖啡", "cup": "咖啡杯",
    "dahlia": "大丽花", "Chinese tower": "中式塔楼", "tower": "塔楼", "coins": "古钱币",
    "formulas": "数学公式", "gland": "腺体", "glands": "腺体", "retina": "视网膜",
    "galaxies": "星系", "clock": "挂钟", "lawn": "草坪", "grass": "草地", "brickwork": "砖墙",
    "gravel": "碎石", "man": "男人", "woman": "女士", "flower": "花朵",
}  # fmt: skip
# The bundled edit instructions in Chinese.
EDITS = {
    "Add a thick white border around the picture.": "给图片加一圈粗粗的白色边框。",
    "Blur the whole image.": "把整张图片模糊处理。",
    "Convert it to black and white.": "把它转成黑白照片。",
    "Convert the image to greyscale.": "把图片转成灰度图。",
    "Convert the picture to greyscale.": "把图片转成灰度图。",
    "Convert this photo to black and white.": "把这张照片转成黑白。",
    "Crop in tightly on the cat's eyes.": "紧紧裁剪到猫的眼睛。",
    "Crop the image to just the top row of coins.": "把图片裁剪到只剩最上面一排硬币。",
    "Crop the photo to her head and shoulders.": "把照片裁剪到她的头和肩膀。",
    "Crop the photo to the tower.": "把照片裁剪到只剩塔楼。",
    "Crop the picture to a narrow vertical strip around the rocket.": "把图片裁成围绕火箭的窄竖条。",
    "Crop to her face and cap.": "裁剪到她的脸和帽子。",
    "Crop to the round gland at the bottom of the image.": "裁剪到图片底部那个圆形腺体。",
    "Flip the image horizontally.": "把图片水平翻转。",
    "Flip the picture horizontally.": "把图片水平翻转。",
    "Give the photo an old-fashioned sepia tone.": "给照片加上老式的棕褐色调。",
    "Give the whole photo a cool blue tint.": "给整张照片加上冷蓝色调。",
    "Invert the colours to make a photographic negative.": "把颜色反转，做成底片效果。",
    "Make it black and white.": "把它变成黑白的。",
    "Make it look like an old sepia photograph.": "让它看起来像一张老式棕褐色照片。",
    "Make the image much darker.": "把图片调暗很多。",
    "Make the photo brighter.": "把照片调亮。",
    "Mirror the image left to right.": "把图片左右镜像。",
    "Mirror the photo left to right.": "把照片左右镜像。",
    "Pixelate the image into large square blocks.": "把图片像素化成大方块。",
    "Put a black frame around the portrait.": "给这幅肖像加一个黑色相框。",
    "Rotate the image 90 degrees clockwise.": "把图片顺时针旋转90度。",
    "Rotate the image 90 degrees counter-clockwise.": "把图片逆时针旋转90度。",
    "Shift the hue of the whole image so the red cup and saucer turn green.":
        "调整整张图片的色相，让红色的杯子和碟子变成绿色。",
    "Tint the picture in warm sandy brown tones.": "给图片染上温暖的沙棕色调。",
}  # fmt: skip
_CJK = re.compile(r"[\u4e00-\u9fff]")


def subject(caption: str) -> tuple[str, str]:
    """(the caption's words for its subject, the subject's Chinese name)."""
    if _CJK.search(caption):
        name = caption.strip("。").split("，")[0][:8]
        return name, name
    found = [
        (m.start(), -len(key), key)
        for key in SUBJECTS
        if (m := re.search(rf"\b{re.escape(key)}\b", caption))
    ]
    assert found, f"the capable model does not know the subject of {caption!r}"
    key = min(found)[2]
    return key, SUBJECTS[key]


def fill(structure: str, content: str) -> str:
    return structure.replace("...", content, 1) if "..." in structure else structure


def _first_clause(caption: str) -> str:
    clause = re.split(r"[.:;]\s", caption.strip())[0].rstrip(".")
    return clause[0].lower() + clause[1:]


def _tags(*pairs: tuple[str, str]) -> list[tuple[str, str]]:
    return [tag for ref, source in pairs for tag in (("Ref", ref), ("Source", source))]


def _results(op: str, v: Mapping[str, Any]) -> list[list[tuple[str, str]]]:
    en, zh = v.get("en_structure", ""), v.get("zh_structure", "")
    if op == "A_from_caption":
        key, name = subject(v["caption"])
        text = (
            f"The picture shows the {key}. What is generally known about this kind of subject "
            "applies to it as well."
            if v["language"] == "en"
            else f"这要看{name}本身的特点。图中是{name}，关于它的常识在这里同样适用。"
        )
        return [[("Assistant", text)]]
    if op in ("drive_hs", "drive_i_h"):
        them = (
            ("them", "它们俩")
            if op == "drive_hs"
            else ("this one I uploaded and the one you just drew", "我上传的这个和你刚画的那个")
        )
        return [[("User", fill(en, them[0]))]] * 3 + [[("User", fill(zh, them[1]))]] * 3
    if op == "drive_hs_dep":
        (ka, na), (kb, nb) = subject(v["caption_a"]), subject(v["caption_b"])
        pairs = _tags((f"the {ka}", ka), (f"the {kb}", kb))
        zh_pairs = _tags((na, ka), (nb, kb))
        return [[("User", fill(en, f"the {ka} and the {kb}")), *pairs]] * 3 + [
            [("User", fill(zh, f"{na}和{nb}")), *zh_pairs]
        ] * 3
    if op == "drive_i_h_dep":
        key, name = subject(v["history_caption"])
        return [
            [("User", fill(en, f"this one I uploaded and the {key} from earlier")),
             *_tags((f"the {key}", key))]
        ] * 3 + [[("User", fill(zh, f"我上传的这个和之前的{name}")), *_tags((name, key))]] * 3  # fmt: skip
    key, name = subject(v["caption"])
    if op == "query2dep_q":
        query = v["query"]
        zh_query = query if _CJK.search(query) else EDITS[query]
        en_query = query[0].lower() + query[1:]
        return [[("User", f"For the image of the {key}, {en_query}"), *_tags((f"the {key}", key))]] * 3 + [
            [("User", f"针对之前那张{name}的图片：{zh_query}"), *_tags((name, key))]
        ] * 3  # fmt: skip
    if op == "caption2QA_q":
        question = (f"What is special about the {key}?", f"{name}有什么特点？")
        answer = (
            f"The {key} is a familiar subject. Many people recognise it at once.",
            f"{name}是一种常见的题材，很多人一眼就能认出来。",
        )
        return [
            [("User", question[0]), ("Assistant", answer[0]), ("User", en),
             *_tags((f"the {key}", key))]
        ] * 3 + [[("User", question[1]), ("Assistant", answer[1]), ("User", zh),
                  *_tags((name, key))]] * 3  # fmt: skip
    if op == "caption2query":
        clause = _first_clause(v["caption"])
        texts = [fill(en, clause if key in clause else f"the {key}, {clause}")] * 3
        texts += [fill(zh, f"{name}"), fill(zh, f"清晰完整的{name}"), fill(zh, f"一幅主体清晰、细节丰富的{name}")]  # fmt: skip
        refs = [(f"{key}", key)] * 3 + [(name, key)] * 3
        return [[("User", t), *_tags(r)] for t, r in zip(texts, refs, strict=True)]
    # caption2QA_q_dep and Q_from_caption: the structure names the subject.
    return [[("User", fill(en, f"the {key}" if op == "Q_from_caption" else key)),
             *_tags((key, key))]] * 3 + [[("User", fill(zh, name)), *_tags((name, key))]] * 3  # fmt: skip


class CapableModel:
    """The answer function of a fake server: a good answer to every operation it rendered."""

    def __init__(self, book: PromptBook):
        self.book = book

    def __call__(self, fake: FakeRequest) -> str:
        request = self.book.request_for(fake)
        assert isinstance(request, LLMRequest), "the capable model answers only chatumm prompts"
        return format_results(_results(request.operation, request.variables))
