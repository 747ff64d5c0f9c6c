"""Script-based language guess for texts no LLM call labelled (source captions, instructions).

The pipeline writes English and Chinese; an LLM call records the language of what it wrote, but
text copied verbatim from a source row carries no label. Counting CJK ideographs against Latin
letters tells the two apart without a model, and is exact enough for a dataset's language mix.
"""

from __future__ import annotations

# CJK Unified Ideographs and Extension A, CJK punctuation, full-width forms.
_CJK_RANGES: tuple[tuple[int, int], ...] = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x3000, 0x303F),
    (0xFF00, 0xFFEF),
)


def _is_cjk(ch: str) -> bool:
    code = ord(ch)
    return any(lo <= code <= hi for lo, hi in _CJK_RANGES)


def detect_language(text: str) -> str:
    """'zh' when CJK characters outweigh Latin letters, else 'en'; 'unknown' for no letters.

    One ideograph carries about as much as four Latin letters (a short word), so a Chinese prompt
    quoting an English name still reads as Chinese, and an English one naming 小白 as English."""
    cjk = sum(1 for ch in text if _is_cjk(ch))
    latin = sum(1 for ch in text if ch.isascii() and ch.isalpha())
    if cjk == 0 and latin == 0:
        return "unknown"
    return "zh" if cjk * 4 >= latin else "en"
