"""What a newcomer reads in the bundled run (stages a -> b -> c, template backend): whole
phrases, monolingual Chinese, answers that answer, edits in both languages that name the image
they edit, images in order, distractor kinds as asked, usage that adds up.

Each check reads every text an LLM call wrote into the samples (the call's ``language`` says
which language it was asked for), the way someone inspecting the data would."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator

import pytest

from synth.contract import DialogueSample
from synth.shards import iter_rejects, iter_samples, read_manifest
from synth.stages.words import content_words
from synth.stats import compute_stats, distractor_kind
from tests.bundled import BundledRun

# A phrase cut off: a function word right before the end of a text, a quote or punctuation
# ("Could you describe ... photograph of for me?", "...about a mirrored portrait of a?").
CUT_OFF = re.compile(
    r"\b(?:of|a|an|the|with|and|in|on|at|to|for|from|by|its|their)\s*(?:[?.!,;:”\"]|$)"
    r"|\b(?:of|a|an|the)\s+(?:for|we|in|on|at|and|from)\b",
    re.IGNORECASE,
)
# An answer that recites "the description" instead of answering.
RECITAL = re.compile(
    r"description (?:of the image )?(?:says|I have)|based on the image description|"
    r"根据(?:图像)?描述|描述中(?:是这样)?写(?:道|的)",
    re.IGNORECASE,
)
QUOTE = re.compile(r"“([^”]*)”")
LATIN = re.compile(r"[A-Za-z]")
HAN = re.compile(r"[\u4e00-\u9fff]")


def samples(run: BundledRun) -> list[DialogueSample]:
    return [s for d in (run.stage_a, run.stage_b, run.stage_c) for s in iter_samples(d)]


def written(sample: DialogueSample) -> Iterator[tuple[str, str, str]]:
    """(operation, language, text) of every text part an LLM call wrote."""
    calls = sample.provenance.llm_calls
    for turn in sample.turns:
        for part in turn.parts:
            if part.type == "text" and part.call is not None:
                call = calls[part.call]
                yield call.operation, call.language or "", part.text or ""


@pytest.fixture(scope="module")
def everything(bundled_run: BundledRun) -> list[DialogueSample]:
    return samples(bundled_run)


def test_no_cut_off_phrases(everything: list[DialogueSample]) -> None:
    broken = {
        text
        for s in everything
        for op, lang, text in written(s)
        if lang == "en" and CUT_OFF.search(text)
    }
    assert not broken, sorted(broken)[:10]


def test_chinese_texts_hold_no_english_but_quoted_sign_text(
    everything: list[DialogueSample],
) -> None:
    chinese = 0
    for s in everything:
        quoted_in_captions = {q for img in s.images for q in re.findall(r'"([^"]+)"', img.caption)}
        for op, lang, text in written(s):
            if lang != "zh":
                continue
            chinese += 1
            assert HAN.search(text), (op, text)
            quotes = [q for q in QUOTE.findall(text) if q in quoted_in_captions]
            outside = text
            for q in quotes:
                outside = outside.replace(f"“{q}”", "")
            assert not LATIN.search(outside), (op, text)
    assert chinese > 100
    # The sign text that is quoted: the name tag in the Navy portrait.
    assert any(
        "“COMO HOPPER”" in t for s in everything for _, lang, t in written(s) if lang == "zh"
    )


def test_answers_answer_rather_than_recite(everything: list[DialogueSample]) -> None:
    answers = [
        (op, text)
        for s in everything
        for op, _, text in written(s)
        if op in ("A_from_caption", "caption2QA_q")
    ]
    a_from = [t for op, t in answers if op == "A_from_caption"]
    assert len(a_from) >= 100
    assert not [t for _, t in answers if RECITAL.search(t)]
    # Stage c: the answer describes the final image, the question asked about it.
    for s in everything:
        if s.stage != "c":
            continue
        question, answer = s.turns[-2].parts[-1].text or "", s.turns[-1].parts[-1].text or ""
        caption = s.images[s.turns[-1].images[0]].caption
        if not HAN.search(answer):
            assert answer.startswith(("It shows", "The picture shows", "In the picture")), answer
            assert content_words(answer) & content_words(caption), (answer, caption)
            assert question.endswith("?"), question


def test_edit_dialogues_speak_both_languages_and_name_the_earlier_image(
    everything: list[DialogueSample],
) -> None:
    finals: Counter[str] = Counter()
    for s in everything:
        if s.task not in ("t_i_i1_n", "t_ti_i1_n"):
            continue
        query = next(p for p in s.turns[s.final_turn].parts if p.type == "text")
        call = s.provenance.llm_calls[query.call]  # type: ignore[index]
        assert call.operation == "query2dep_q"
        finals[call.language or ""] += 1
        text = query.text or ""
        source = s.images[s.turns[s.provenance.depends_on[0]].images[0]].caption
        if call.language == "en":
            assert not re.search(r"\b(?:this|that) (?:photo|picture|image)\b|\bit\b", text), text
            assert content_words(text) & content_words(source), (text, source)
        else:
            assert HAN.search(text) and not LATIN.search(text), text
            assert "那张" in text or "前面" in text, text  # points back at the earlier image
    assert finals["zh"] >= 5 and finals["en"] >= 5, finals


def test_images_are_in_order_of_appearance(everything: list[DialogueSample]) -> None:
    for s in everything:
        seen: list[int] = []
        for turn in s.turns:
            seen += [i for i in turn.images if i not in seen]
        assert seen == list(range(len(s.images))), (s.sample_id, s.task, seen)


def test_distractor_kinds_follow_the_mix(bundled_run: BundledRun) -> None:
    kinds: Counter[str] = Counter()
    for s in iter_samples(bundled_run.stage_b):
        turns = [t.model_dump() for t in s.turns]
        rounds = sorted({t - t % 2 for t in s.provenance.distractor_turns})
        kinds.update(distractor_kind(turns, t) for t in rounds)
    total = sum(kinds.values())
    assert total > 60
    # The default mix asks a third each; the run draws them within ten points of that.
    for kind in ("t2i", "vqa", "chat"):
        assert abs(kinds[kind] / total - 1 / 3) < 0.1, kinds


def test_stats_usage_equals_what_the_engine_recorded(bundled_run: BundledRun) -> None:
    """Each call counted once: stats over a, a+b and a+b+c add exactly what each stage's
    engine recorded (stage b's engine also paid for the items that became rejects)."""
    a, b, c = bundled_run.stage_a, bundled_run.stage_b, bundled_run.stage_c
    keys = ("requests", "prompt_tokens", "completion_tokens")
    engine = {d: {k: read_manifest(d).summary["llm"][k] for k in keys} for d in (a, b, c)}
    counted = [compute_stats(dirs) for dirs in ([a], [a, b], [a, b, c])]

    def own(k: int) -> tuple[int, int, int]:
        now, before = counted[k], counted[k - 1] if k else None
        return (
            now.llm_calls - (before.llm_calls if before else 0),
            now.prompt_tokens - (before.prompt_tokens if before else 0),
            now.completion_tokens - (before.completion_tokens if before else 0),
        )

    for k, d in ((0, a), (2, c)):  # no rejects: every paid call is in a kept sample
        assert not list(iter_rejects(d))
        assert own(k) == tuple(engine[d][key] for key in keys), d
    calls_b = own(1)[0]
    lost = len(list(iter_rejects(b)))
    assert calls_b <= engine[b]["requests"] and (calls_b == engine[b]["requests"]) == (not lost)
    total = counted[2]
    assert total.engine["requests"] == sum(engine[d]["requests"] for d in (a, b, c))
    assert total.template_calls == total.llm_calls


def test_only_the_anchor_check_rejects_and_only_chinese_rewrites(bundled_run: BundledRun) -> None:
    """Issue 20 replaces the anchor check: it refuses a Chinese rewrite when the caption's
    words are outside its word list. Nothing else rejects a bundled input."""
    for d in (bundled_run.stage_a, bundled_run.stage_b, bundled_run.stage_c):
        for reject in iter_rejects(d):
            assert reject.reason == "validate:no-anchor", (reject.reason, reject.detail)
            assert "(zh, request)" in reject.detail, reject.detail


def test_every_text_is_marked_template_made(everything: list[DialogueSample]) -> None:
    backends = {c.backend for s in everything for c in s.provenance.llm_calls}
    assert backends == {"template"}


def test_readme_states_the_main_jobs_summary(bundled_run: BundledRun) -> None:
    """The README quotes what the main job prints at the end of each stage."""
    from pathlib import Path

    readme = " ".join((Path(__file__).parents[1] / "README.md").read_text().split())
    for stage, out in (("a", bundled_run.stage_a), ("b", bundled_run.stage_b)):
        manifest = read_manifest(out)
        rejects = sum(manifest.reject_counts.values())
        assert f"`stage {stage}: {manifest.samples} samples, {rejects} rejects`" in readme
    # The README's stage c reads the stage a and b outputs together, as the bundled run does.
    manifest = read_manifest(bundled_run.stage_c)
    assert f"`stage c: {manifest.samples} samples, 0 rejects`" in readme
