"""The words of the offline ``template`` backend: phrases cut from a caption at phrase
boundaries, and their Chinese renderings from a glossary.

English: a caption is cut into sentences, a sentence into clauses only where a new phrase
starts, and a subject noun phrase is taken from the front of the first clause up to the first
word that ends a noun phrase ("standing", "on", "with"), after any frame ("A black-and-white
photograph of ..."). Nothing is ever cut inside a phrase: a text is whole or absent.

Chinese: ``prompts/template_backend.yaml`` holds a glossary of English nouns (one or several
words) and adjectives with their Chinese words. A Chinese noun phrase is built from the glossary
words of an English one, in Chinese order (adjective 的 noun; "the cat's eyes" -> 猫的眼睛);
words the glossary does not know are left out, never copied. A phrase with no glossary noun has
no Chinese rendering (``None``), and the backend then does not write that result. Edit
instructions are put into Chinese by the glossary's table of edit patterns, or not at all.
"""

from __future__ import annotations

import re
from functools import cache, lru_cache
from importlib import resources
from typing import Any

from ops.templates import load_yaml
from ops.validate import INSTRUCTION

CJK = re.compile(
    r"[\u3000-\u303f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uff00-\uffef]"
)
# A sentence ends at CJK end punctuation, or at ASCII end punctuation followed by whitespace
# ("3.5 metres" and "U.S.Navy" do not end one) unless the word before is an abbreviation.
_SENTENCE_END = re.compile(r"(?<=[。！？])\s*|(?<=[.!?])\s+")
_ABBREVIATION = re.compile(
    r"(?:^|[\s(\"'])(?:(?:[A-Za-z]\.)+|Dr|Mr|Mrs|Ms|St|Mt|Jr|Sr|Prof|Capt|Lt|Col|Gen|Sgt|vs|approx)\.?$"
)
_CLAUSE_MARK = re.compile(r"\s*[,;:，；：]\s*")
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'.-]*")
_QUOTED = re.compile(r"[\"“]([^\"”]{1,60})[\"”]")
_ARTICLE = re.compile(r"^(a|an|the)\s+", re.IGNORECASE)


@cache
def data() -> dict[str, Any]:
    text = resources.files("prompts").joinpath("template_backend.yaml").read_text("utf-8")
    loaded: dict[str, Any] = load_yaml(text)
    return loaded


def is_chinese(text: str) -> bool:
    return len(CJK.findall(text)) * 2 >= len(text.replace(" ", ""))


# ---- English ----
def split_sentences(text: str) -> tuple[str, ...]:
    """``text`` cut into sentences, keeping "U.S. Navy", "e.g. a fox", "Dr. Smith" whole."""
    merged: list[str] = []
    for piece in _SENTENCE_END.split(text.strip()):
        piece = piece.strip()
        if not piece:
            continue
        if merged and merged[-1].endswith(".") and _ABBREVIATION.search(merged[-1]):
            merged[-1] = f"{merged[-1]} {piece}"
        else:
            merged.append(piece)
    return tuple(merged)


@lru_cache(maxsize=4096)
def sentences(caption: str) -> tuple[str, ...]:
    """The caption's sentences, without any that address a model ("ignore the above ...")."""
    parts = split_sentences(caption)
    kept = tuple(s for s in parts if not INSTRUCTION.search(s))
    return kept or parts or (caption.strip(),)


def _starts_phrase(word: str) -> bool:
    """Whether a clause after a comma starting with ``word`` is a phrase of its own (so the
    comma may end the one before), not the next item of a list of adjectives."""
    low = word.lower()
    if low in data()["phrase_starts"] or low.endswith("ed"):
        return True
    return low.endswith("ing") and low not in _ing_nouns()


def first_clause(sentence: str) -> str:
    """The sentence up to the first comma, semicolon or colon that ends a phrase."""
    sentence = sentence.rstrip(".!?。！？")
    pieces = _CLAUSE_MARK.split(sentence)
    marks = _CLAUSE_MARK.findall(sentence)
    clause = pieces[0]
    for mark, piece in zip(marks, pieces[1:], strict=True):
        words = piece.split()
        if not words or ":" in mark or ";" in mark or _starts_phrase(words[0]):
            break
        clause = f"{clause}{mark}{piece}"
    return clause


@cache
def _ing_nouns() -> frozenset[str]:
    return frozenset(data()["ing_nouns"])


@cache
def _stops() -> frozenset[str]:
    return frozenset(data()["subject_stops"])


@cache
def _frame() -> re.Pattern[str]:
    nouns = "|".join(sorted(map(re.escape, data()["frame_nouns"]), key=len, reverse=True))
    return re.compile(
        rf"^(?:(?:a|an|the|this)\s+)?(?:[\w',-]+\s+){{0,4}}?(?:{nouns})\s+(?:of|showing|made\s+of)\s+",
        re.IGNORECASE,
    )


def _ends_phrase(word: str, previous: str) -> bool:
    """Whether ``word`` ends the noun phrase whose last word so far is ``previous``: a stop
    word, or an -ing word after a noun ("a man filming"), not after an article ("a smiling
    astronaut")."""
    low = word.lower().strip(".,")
    if low in _stops():
        return True
    ing = low.endswith("ing") and low not in _ing_nouns()
    return ing and previous.lower() not in data()["function_words"]


def _trim_function_words(words: list[str]) -> list[str]:
    tail = set(data()["function_words"])
    while words and words[-1].lower() in tail:
        words = words[:-1]
    return words


def is_clause(sentence: str) -> bool:
    """Whether the sentence's first clause holds a finite verb ("A man sits on a bench"), as
    opposed to a noun phrase ("A man sitting on a bench")."""
    verbs = set(data()["finite_verbs"])
    return any(w.lower() in verbs for w in first_clause(sentence).split())


@lru_cache(maxsize=4096)
def subject_phrase(caption: str, extended: bool = False) -> str:
    """The caption's subject as a noun phrase: "A black-and-white photograph of a man in a long
    dark coat looking ..." -> "a man" ("a man in a long dark coat" when ``extended``: one
    following with/in/on phrase is kept)."""
    clause = first_clause(sentences(caption)[0])
    if is_chinese(clause):
        return clause
    low = clause.lower()
    for opening in sorted(data()["subject_openings"], key=len, reverse=True):
        if low.startswith(opening + " "):
            clause = clause[len(opening) + 1 :]
            break
    while (m := _frame().match(clause)) and m.end() < len(clause):
        clause = clause[m.end() :]
    words = clause.split()
    taken: list[str] = []
    extending = False
    for word in words:
        if taken and _ends_phrase(word, taken[-1]):
            if extended and not extending and word.lower() in ("with", "in", "on", "wearing"):
                extending = True
            else:
                break
        taken.append(word.rstrip(","))
        if extending and word.endswith(","):
            break  # what the subject has or is in ends at a comma
    taken = _trim_function_words(taken)
    return " ".join(taken) or clause


def lower_first(text: str) -> str:
    """A sentence's capital lowered inside another sentence, but not "I" or an acronym."""
    if not text:
        return text
    word = text.split(" ", 1)[0]
    if (word[1:].islower() and word != "I") or word == "A":
        return text[0].lower() + text[1:]
    return text


def definite(phrase: str) -> str:
    """'a smiling astronaut' -> 'the smiling astronaut'; a phrase without an article ('space',
    'loose gravel') stays without one."""
    phrase = lower_first(phrase)
    return f"the {_ARTICLE.sub('', phrase)}" if _ARTICLE.match(phrase) else phrase


def bare(phrase: str) -> str:
    """The phrase without its article: "a smiling astronaut" -> "smiling astronaut"."""
    return _ARTICLE.sub("", lower_first(phrase))


def quoted_text(caption: str) -> list[str]:
    """Text the caption quotes from the image (a name tag, a sign): kept as written."""
    return _QUOTED.findall(caption)


# ---- Chinese ----
def _tokens(text: str) -> list[str]:
    """Lower-case words, "U.S." kept whole, a possessive "'s" split off as its own token."""
    out: list[str] = []
    for word in _WORD.findall(text.lower()):
        word = word.rstrip(".") if not re.fullmatch(r"(?:[a-z]\.)+", word) else word
        if word.endswith("'s"):
            out += [word[:-2], "'s"]
        elif word.endswith("s'"):
            out += [word[:-1], "'s"]
        else:
            out.append(word)
    return out


def _singular(word: str) -> str:
    irregular: dict[str, str] = data()["zh_plurals"]
    if word in irregular:
        return irregular[word]
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "sses", "xes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith("ss") and len(word) > 3:
        return word[:-1]
    return word


@cache
def _glossary() -> tuple[dict[tuple[str, ...], tuple[str, str]], int]:
    """(English words -> (kind, Chinese)), and the longest key in words."""
    table: dict[tuple[str, ...], tuple[str, str]] = {}
    for kind in ("noun", "adjective", "possessive", "conjunction"):
        for english, chinese in data()[f"zh_{kind}s"].items():
            table[tuple(english.split())] = (kind, chinese)
    return table, max(len(k) for k in table)


def _match(tokens: list[str], i: int) -> tuple[int, str, str] | None:
    """The longest glossary entry at ``tokens[i]``: (length, kind, Chinese)."""
    table, longest = _glossary()
    if tokens[i] in data()["zh_not_nouns"]:
        return None
    for n in range(min(longest, len(tokens) - i), 0, -1):
        words = tokens[i : i + n]
        for key in (tuple(words), (*words[:-1], _singular(words[-1]))):
            if key in table:
                kind, chinese = table[key]
                return n, kind, chinese
    return None


def _phrases(text: str, join: bool = True) -> list[str]:
    """The Chinese noun phrases of an English text, in order: up to two adjectives right
    before a noun, possessives chained (猫的眼睛), nouns joined by "and" when ``join`` (头和
    肩膀). A phrase whose noun is a frame word ("a black-and-white photo") is left out unless
    it is the only one."""
    return [p for p, _ in _heads(text, join)]


def _heads(text: str, join: bool = True) -> list[tuple[str, str]]:
    """``_phrases`` with the English noun each phrase ends on."""
    frames = set(data()["frame_nouns"])
    found = _all_heads(text, join)
    kept = [(p, head) for p, head in found if head not in frames]
    return kept or found


def _all_heads(text: str, join: bool) -> list[tuple[str, str]]:
    tokens = _tokens(text)
    phrases: list[tuple[str, str]] = []
    adjectives: list[str] = []
    owner = ""  # a possessive waiting for its noun: 她的, 猫的
    joined = False  # the last phrase ended with "and": the next noun joins it
    i = 0
    while i < len(tokens):
        found = _match(tokens, i)
        if found is None:
            if tokens[i] not in ("and", "'s"):
                adjectives, owner, joined = [], "", False
            i += 1
            continue
        n, kind, chinese = found
        i += n
        if kind == "adjective":
            adjectives = [*adjectives, chinese][-2:]
        elif kind == "possessive":
            owner = chinese
        elif kind == "conjunction":
            joined = join and bool(phrases)
        else:
            if i < len(tokens) and _unknown_head(tokens[i]):
                # "nose cone": the glossary word only modifies a word it does not know
                adjectives, owner, joined = [], "", False
                continue
            phrase = owner + _with_adjectives(adjectives, chinese)
            head = " ".join(tokens[i - n : i])
            if i < len(tokens) and tokens[i] == "'s":
                owner, adjectives = phrase + "的", []
                i += 1
                continue
            if joined and phrases:
                phrases[-1] = (f"{phrases[-1][0]}和{phrase}", head)
            else:
                phrases.append((phrase, head))
            owner, adjectives, joined = "", [], False
    return phrases


def _unknown_head(word: str) -> bool:
    """Whether ``word``, right after a glossary noun, is a noun the glossary does not know
    (so the glossary noun is only its modifier): not a function, stop or verb-like word."""
    if not word.isalpha() or _match([word], 0) is not None:
        return False
    known = set(data()["function_words"]) | _stops() | set(data()["finite_verbs"])
    known |= set(data()["zh_not_nouns"]) | set(data()["phrase_starts"])
    return word not in known and not word.endswith(("ing", "ed"))


def _with_adjectives(adjectives: list[str], noun: str) -> str:
    if not adjectives:
        return noun
    if len(adjectives) == 1:
        return f"{adjectives[0]}的{noun}"
    return f"{adjectives[0]}的{adjectives[1]}{noun}"


_ATTACHED = re.compile(r"^(.+?)\s+(with|wearing|in|on)\s+(.+)$", re.IGNORECASE)


def zh_subject(caption: str, extended: bool = False) -> str | None:
    """The Chinese rendering of the caption's subject phrase, or None; ``extended`` adds what
    the subject has or is in (穿着深色长大衣的男子) where the glossary can say it."""
    if is_chinese(caption):
        return first_clause(sentences(caption)[0])[:24] or None
    phrase = subject_phrase(caption, extended)
    m = _ATTACHED.match(phrase) if extended else None
    heads = _all_heads(m.group(1) if m else phrase, join=True)
    if not heads or heads[0][1] in data()["frame_nouns"]:
        return None  # nothing the glossary names, or only "a picture"
    head = heads[0][0]
    detail = zh_np(m.group(3)) if m else None
    if m is None or detail is None:
        return head
    forms: dict[str, str] = data()["zh_attach"][m.group(2).lower()]
    words = [w for t in _tokens(m.group(3)) for w in (t, _singular(t))]
    form = next((forms[w] for w in words if w in forms), forms["default"])
    return form.format(x=head, y=detail)


def zh_depicting(caption: str) -> tuple[str, bool] | None:
    """(what a Chinese request asks a picture of, whether that is the subject): the subject's
    rendering, else the things the glossary finds in the caption (有谷仓的), else None."""
    subject = zh_subject(caption)
    if subject is not None:
        return subject, True
    items = zh_items(" ".join(sentences(caption)[:2]))
    return (f"有{zh_list(items[:3])}", False) if items else None


def zh_name(caption: str) -> str | None:
    """The subject as a history-dependent request names it in Chinese, as specific as the
    glossary allows: with what it has or is in (穿着深色长大衣的男子), else the kind of photo it
    is in (黑白照片里的手写的数学公式), else the next thing the caption shows, one with a
    colour or size first (有蓝色的细胞核的染色的结肠组织)."""
    base = zh_subject(caption)
    if base is None:
        return None
    named = zh_subject(caption, extended=True) or base
    frame = frame_adjectives(caption)
    if frame:
        return f"{frame}照片里的{named}"
    if named != base:
        return named
    settings = {zh for en, zh in data()["zh_nouns"].items() if en in data()["not_things"]}
    others = [i for i in zh_items(sentences(caption)[0], skip=base) if i not in settings]
    others.sort(key=lambda item: "的" not in item)  # stable: in caption order otherwise
    return f"有{others[0]}的{base}" if others else base


def frame_adjectives(caption: str) -> str:
    """The glossary adjectives of the caption's frame ("A heavily motion-blurred black-and-
    white photograph of ..." -> 黑白), run together; "" when it has none."""
    clause = first_clause(sentences(caption)[0])
    m = _frame().match(clause)
    if m is None:
        return ""
    table: dict[str, str] = data()["zh_adjectives"]
    return "".join(table[t] for t in _tokens(clause[: m.end()]) if t in table)


def zh_items(text: str, skip: str | None = None) -> list[str]:
    """The Chinese noun phrases of ``text`` (frame words such as "photo" left out), each once,
    ``skip`` left out; sentences about how the photo was taken ("The camera moved ...") are
    not about what it shows."""
    if is_chinese(text):
        return [first_clause(text)]
    process = tuple(data()["process_sentences"])
    text = " ".join(s for s in split_sentences(text) if not s.lower().startswith(process))
    out: list[str] = []
    heads: set[str] = set()  # each thing once: "a red saucer ... the saucer" is one item
    its = tuple(data()["zh_impersonal"])
    for phrase, head in _heads(text, join=False):
        phrase = (
            phrase.removeprefix(its[0]).removeprefix(its[1]) if phrase.startswith(its) else phrase
        )
        if head not in heads and phrase != skip:
            out.append(phrase)
        heads.add(_singular(head))
    return out


@cache
def _zh_to_en() -> list[tuple[str, str]]:
    """(Chinese, English) of the glossary nouns, longest Chinese first; the first English
    word listed for a Chinese one wins."""
    pairs: dict[str, str] = {}
    frames = set(data()["frame_nouns"])
    for english, chinese in data()["zh_nouns"].items():
        if english not in frames:
            pairs.setdefault(chinese, english)
    return sorted(pairs.items(), key=lambda kv: -len(kv[0]))


def english_caption(caption: str) -> str | None:
    """An English caption to write English results from: the caption itself, or for a Chinese
    one the things the glossary finds in it, as a list ("A cat, a windowsill and a roof."); None
    when it finds nothing."""
    if not is_chinese(caption):
        return caption
    found: list[tuple[int, str]] = []
    taken = [False] * len(caption)
    for chinese, english in _zh_to_en():
        start = caption.find(chinese)
        while start >= 0:
            if not any(taken[start : start + len(chinese)]):
                taken[start : start + len(chinese)] = [True] * len(chinese)
                found.append((start, english))
            start = caption.find(chinese, start + 1)
    names = list(dict.fromkeys(english for _, english in sorted(found)))
    if not names:
        return None
    listed = [f"{'an' if n[0] in 'aeiou' else 'a'} {n}" for n in names]
    text = listed[0] if len(listed) == 1 else ", ".join(listed[:-1]) + " and " + listed[-1]
    return text[0].upper() + text[1:] + "."


def zh_list(items: list[str]) -> str:
    """A、B和C."""
    if len(items) <= 1:
        return "".join(items)
    return "、".join(items[:-1]) + "和" + items[-1]


def zh_np(text: str, strict: bool = False) -> str | None:
    """One Chinese noun phrase for an English one (all its glossary phrases listed), or None;
    ``strict``: None unless the glossary knows every word but function words."""
    if strict and not _covered(text):
        return None
    phrases = _phrases(text)
    return zh_list(phrases) if phrases else None


def _covered(text: str) -> bool:
    tokens = _tokens(text)
    skip = set(data()["function_words"]) | {"'s"}
    i = 0
    while i < len(tokens):
        found = _match(tokens, i)
        if found is None and tokens[i] not in skip:
            return False
        i += found[0] if found else 1
    return True


def zh_edit(instruction: str, image: str) -> str | None:
    """The edit instruction in Chinese, naming ``image`` (e.g. 那张宇航员的图片) as what it
    edits, by the first pattern of ``zh_edits`` that matches; None when none does or a part it
    names has no rendering."""
    text = instruction.strip().rstrip(".!。").lower()
    for rule in data()["zh_edits"]:
        m = re.search(rule["en"], text)
        if m is None:
            continue
        values: dict[str, str] = {"image": image}
        for name, group in rule.get("np", {}).items():
            rendered = zh_np(m.group(group), strict=True)
            if rendered is None:
                return None
            values[name] = rendered
        for name, group in rule.get("copy", {}).items():
            values[name] = m.group(group)
        for name, group in rule.get("adjective", {}).items():
            table: dict[str, str] = data()["zh_adjectives"]
            if m.group(group) not in table:
                return None
            values[name] = table[m.group(group)]
        return str(rule["zh"]).format(**values)
    return None
