"""Inputs for every operation and a scripted backend, shared by the tests of ``ops``."""

from __future__ import annotations

from collections.abc import Iterable

from ops.parse import format_results
from ops.protocol import LLMRequest, LLMResponse

ALPINE = (
    "A lone individual sits on a weathered wooden bench on a grassy slope, facing a breathtaking "
    "alpine panorama. The person, seen from behind, wears a dark down jacket, grey trousers, and "
    "sneakers. Below the vantage point, a calm lake stretches out."
)
DOG = "A golden retriever lying on a wooden table next to a red ball."
CAT = "A white cat lying on an open notebook on a desk."
MAN = (
    "A young Asian man with short black hair and glasses stands in profile, wearing a grey jacket "
    "and carrying a black backpack. Behind him, steep snow-dusted mountains rise into a grey sky."
)

INPUTS: dict[str, dict[str, str]] = {
    "caption2query": {"caption": ALPINE},
    "caption2QA_q": {"caption": DOG},
    "drive_hs": {"caption_a": CAT, "caption_b": DOG},
    "drive_i_h": {"history_caption": CAT, "upload_caption": DOG},
    "query2dep_q": {"caption": MAN, "query": "Change the weather to sunny and the bag to purple."},
    "caption2QA_q_dep": {
        "caption": DOG,
        "question": "What are the features of golden retrievers?",
        "answer": "Golden retrievers are friendly, medium-large dogs with a dense golden coat.",
    },
    "drive_hs_dep": {"caption_a": CAT, "caption_b": DOG},
    "drive_i_h_dep": {"history_caption": CAT, "upload_caption": DOG},
    "Q_from_caption": {"caption": DOG},
    "A_from_caption": {
        "caption": DOG,
        "question": "What are golden retrievers known for?",
        "language": "en",
    },
}

# Six good results for query2dep_q on MAN, as a capable model writes them: each names the words
# pointing back to the earlier image (Ref) and the caption words they stand for (Source).
GOOD_DEP_TAGGED = [
    ("Change the weather to sunny and the backpack to purple for the image of the young Asian man.",
     "the young Asian man", "A young Asian man"),
    ("For the picture of the man in a grey jacket, make the sky sunny and the bag purple.",
     "the man in a grey jacket", "man ... wearing a grey jacket"),
    ("Take the photo of the man with glasses and make it sunny, with a purple backpack.",
     "the man with glasses", "man with short black hair and glasses"),
    ("将那位背着黑色双肩包的戴眼镜男士所在的场景改为晴天，并将包变成紫色。",
     "背着黑色双肩包的戴眼镜男士", "glasses ... carrying a black backpack"),
    ("把那张背景是雪山的图片改成晴朗天气，同时把男生的书包改成紫色。",
     "背景是雪山的图片", "steep snow-dusted mountains"),
    ("针对那个穿灰色夹克的亚洲男子的图片，把阴天换成大晴天，背包换成紫色。",
     "穿灰色夹克的亚洲男子", "young Asian man ... wearing a grey jacket"),
]  # fmt: skip
GOOD_DEP = [text for text, _, _ in GOOD_DEP_TAGGED]


def results(texts: Iterable[str | tuple[str, str, str]]) -> str:
    """An answer of one ``User`` field a result; a (text, ref, source) triple adds the tags."""
    return format_results(
        [[("User", t)] if isinstance(t, str) else [("User", t[0]), ("Ref", t[1]), ("Source", t[2])]
         for t in texts]
    )  # fmt: skip


class ScriptedBackend:
    """A real ``Backend`` whose answers are written in advance: strings, responses or errors."""

    name = "scripted"
    model = "scripted-1"

    def __init__(self, replies: Iterable[str | LLMResponse | Exception]):
        self.replies = list(replies)
        self.requests: list[LLMRequest] = []

    async def complete(self, request: LLMRequest) -> LLMResponse:
        self.requests.append(request)
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        if isinstance(reply, LLMResponse):
            return reply
        return LLMResponse(reply, "stop", self.model, prompt_tokens=100, completion_tokens=50)

    async def aclose(self) -> None:
        return None
