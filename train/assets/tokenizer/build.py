"""Regenerate ``tokenizer.json``: a small bilingual byte-level BPE with Qwen2.5's special tokens.

For tests and tiny runs only; real training loads the BAGEL checkpoint's ``tokenizer.json``.
The corpus is generated here from fixed English and Chinese word lists in the register of the
synthesized dialogues (requests to draw and edit, Q&A), with a seeded RNG, so the file is
byte-for-byte reproducible:

    python -m train.assets.tokenizer.build            # rewrite tokenizer.json
    python -m train.assets.tokenizer.build --check    # exit 1 if the shipped file differs
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from train.data.tokenizer import train_bpe

VOCAB_SIZE = 4096
SEED = 20250901
SENTENCES = 24_000
HERE = Path(__file__).resolve().parent


def _w(text: str, sep: str | None = None) -> list[str]:
    return text.split(sep)


_EN = {
    "subject": _w(
        "cat dog fox owl horse rabbit robot girl boy woman man child teacher astronaut "
        "dragon castle lighthouse bicycle car train boat house tree flower mountain river city "
        "garden bridge cup book lamp chair table window clock guitar piano hat umbrella"
    ),
    "adjective": _w(
        "small large old young happy sleepy shiny wooden golden silver tiny giant "
        "ancient modern cozy quiet bright dark fluffy elegant colorful misty snowy sunny"
    ),
    "color": _w("red blue green yellow purple orange pink white black brown gray teal"),
    "place": _w(
        "on a beach|in a forest|under the stars|in a busy street|on a snowy hill|"
        "in a quiet library|beside a lake|in the desert|on the moon|in a small kitchen|"
        "at sunset|in the rain|inside a glass dome|on a wooden table",
        "|",
    ),
    "style": _w(
        "watercolor|oil painting|pencil sketch|photograph|pixel art|3D render|"
        "anime style|ink drawing|studio lighting|cinematic shot",
        "|",
    ),
    "request": _w(
        "Please draw|Create an image of|Generate a picture of|Show me|Paint|"
        "Can you make|I would like to see|Design|Illustrate|Render",
        "|",
    ),
    "edit": _w(
        "Make the {part} {color}.|Change the background to {place}.|Remove the {subject}.|"
        "Add a {adjective} {subject} next to it.|Turn it into a {style}.|"
        "Put the {subject} from before {place}.|Now make it look {adjective}.|"
        "Combine the {subject} and the {subject2} in one picture.",
        "|",
    ),
    "part": _w("hat sky roof door car shirt flower background eyes water"),
    "question": _w(
        "What do {subject}s eat?|How old can a {subject} get?|Why is the sky {color}?|"
        "Where do {subject}s live?|What is a {style}?|How many legs does a {subject} have?|"
        "Tell me a fact about the number {number}.|What is {number} plus {number2}?",
        "|",
    ),
    "answer": _w(
        "They usually live {place}.|It is often {adjective} and {color}.|"
        "The answer is {number}.|Most {subject}s are {adjective}.|"
        "Here is the {adjective} {subject} you asked for.|I made it look like a {style}.",
        "|",
    ),
}

_ZH = {
    "subject": _w(
        "猫 狗 狐狸 猫头鹰 马 兔子 机器人 女孩 男孩 老师 宇航员 龙 城堡 灯塔 自行车 汽车 "
        "火车 小船 房子 树 花 山 河 城市 花园 桥 杯子 书 台灯 椅子 桌子 窗户 时钟 吉他 钢琴 帽子 雨伞"
    ),
    "adjective": _w(
        "小小的 巨大的 古老的 年轻的 快乐的 困倦的 闪亮的 木制的 金色的 银色的 "
        "现代的 温馨的 安静的 明亮的 黑暗的 毛茸茸的 优雅的 五彩的 雾蒙蒙的 阳光明媚的"
    ),
    "color": _w("红色 蓝色 绿色 黄色 紫色 橙色 粉色 白色 黑色 棕色 灰色"),
    "place": _w(
        "在海滩上 在森林里 在星空下 在繁忙的街道上 在雪山上 在安静的图书馆里 在湖边 "
        "在沙漠中 在月球上 在小厨房里 在夕阳下 在雨中"
    ),
    "style": _w("水彩画 油画 铅笔素描 照片 像素画 三维渲染 动漫风格 水墨画 电影镜头"),
    "request": _w("请画一只 帮我生成一张 给我看看 请创作 我想看一幅 画一个"),
    "edit": _w(
        "把{part}改成{color}。|把背景换成{place}。|去掉{subject}。|在旁边加一个{adjective}{subject}。|"
        "把它变成{style}。|把之前的{subject}放到{place}。|让它看起来更{adjective}。|"
        "把{subject}和{subject2}放在同一张图里。",
        "|",
    ),
    "part": _w("帽子 天空 屋顶 门 汽车 衬衫 花 背景 眼睛 水面"),
    "question": _w(
        "{subject}吃什么？|{subject}能活多久？|为什么天空是{color}的？|{subject}住在哪里？|"
        "什么是{style}？|告诉我一个关于数字{number}的事实。|{number}加{number2}等于多少？",
        "|",
    ),
    "answer": _w(
        "它们通常生活{place}。|它常常是{adjective}{color}的。|答案是{number}。|"
        "这是你要的{adjective}{subject}。|我把它画成了{style}。",
        "|",
    ),
}


def _fill(template: str, words: dict[str, list[str]], rng: random.Random) -> str:
    values = {k: rng.choice(v) for k, v in words.items() if k not in ("edit", "question")}
    values["subject2"] = rng.choice(words["subject"])
    values["number"] = str(rng.randrange(1000))
    values["number2"] = str(rng.randrange(100))
    return template.format(**values)


def _sentence(rng: random.Random) -> str:
    words = _EN if rng.random() < 0.6 else _ZH
    kind = rng.choice(("draw", "edit", "question", "answer"))
    if kind == "draw" and words is _EN:
        template = "{request} a {adjective} {color} {subject} {place}, {style}."
    elif kind == "draw":
        template = "{request}{adjective}{subject}，{place}，{style}。"
    else:
        template = rng.choice(words[kind])
    return _fill(template, words, rng)


def build_corpus(seed: int = SEED, sentences: int = SENTENCES) -> list[str]:
    rng = random.Random(seed)
    return [_sentence(rng) for _ in range(sentences)]


def main(argv: list[str]) -> int:
    target = HERE / "tokenizer.json"
    text = train_bpe(build_corpus(), VOCAB_SIZE).to_str(pretty=True)
    if "--check" in argv:
        same = target.exists() and target.read_text(encoding="utf-8") == text
        print(f"{target}: {'up to date' if same else 'DIFFERS from a rebuild'}")
        return 0 if same else 1
    target.write_text(text, encoding="utf-8")
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
