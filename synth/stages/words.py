"""Content words, for stage b's test that a distractor is unrelated to the dependency target.

Deliberately simple and predictable: lowercase; Latin words split on anything that is not a
letter or digit, stop-words and one-letter words dropped, a plural ``s`` stripped (``dogs`` and
``dog`` match); CJK text becomes character bigrams (no segmenter: a shared two-character run
such as 小狗 counts as a shared word), minus bigrams made only of common function characters.
Two texts are related when their content words intersect.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

_LATIN = re.compile(r"[0-9a-zà-öø-ÿ]+")
_CJK_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")

_STOP_TEXT = """
    a about above after again against all also am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers herself him himself his how i if in into is it
    its itself just let me more most my myself no nor not now of off on once only or other our
    ours ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we were
    what when where which while who whom why will with would you your yours yourself yourselves
    image images picture pictures photo photos show shows showing please create draw make
    generate one ones like can could would may might see look looks looking near next front back
    side top bottom left right background foreground scene view
    black white grey gray dark light pale bright red orange yellow green blue purple pink brown
    golden silver colour color coloured colored small large big tall long short wide narrow thin
    round square flat soft sharp old new little many several few
    """
STOP_WORDS = frozenset(_STOP_TEXT.split())
# Words that say how an image looks rather than what it shows (``picture``, ``scene`` above;
# colours, sizes, shapes) are stop-words too: captions share them all the time ("a white
# rocket", "white whiskers"), and a distractor is ambiguous by what it shows, not by its
# colours.

_CJK_FUNCTION = frozenset(
    "的了是在一个这那和与及或也都就而把被给让从向对于上下中里着过吗呢吧啊张幅图片画"
)


def content_words(text: str) -> frozenset[str]:
    text = text.lower()
    words = {
        w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w
        for w in _LATIN.findall(text)
        if len(w) > 1 and w not in STOP_WORDS
    }
    for run in _CJK_RUN.findall(text):
        for i in range(len(run) - 1):
            pair = run[i : i + 2]
            if not (pair[0] in _CJK_FUNCTION and pair[1] in _CJK_FUNCTION):
                words.add(pair)
    return frozenset(words)


def detect_language(text: str) -> Literal["en", "zh"]:
    """'zh' when the text holds CJK characters, else 'en': the two languages the operations
    write. Used to keep a dialogue in the language of text copied from a source row."""
    return "zh" if _CJK_RUN.search(text) else "en"


def words_of(texts: Iterable[str]) -> frozenset[str]:
    out: set[str] = set()
    for text in texts:
        out |= content_words(text)
    return frozenset(out)
