"""The three histories of the context probes, built from the bundled dataset (stages a, b, c
with the template backend): replaced turns keep their kind and position, come from unrelated
dialogues, and leave the final answer's tokens as they were."""

from __future__ import annotations

import hashlib

import pytest

from synth.contract import DialogueSample, check_invariants
from tests.builders import build_sample
from tests.bundled import BundledRun
from train.data import DataConfig, default_tokenizer_path, load_tokenizer
from train.data.transforms import Transforms
from train.eval.dataset import EvalSet, load_eval_set, turn_tokens
from train.eval.probes import Prober, plan_packs
from train.eval.variants import DonorPool, turn_kind


def _content(sample: DialogueSample, t: int) -> tuple[object, ...]:
    return tuple(
        (
            p.type,
            p.text if p.type == "text" else hashlib.sha256(sample.images[p.image].data).digest(),
        )
        for p in sample.turns[t].parts
    )


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(default_tokenizer_path())


@pytest.fixture(scope="module")
def transforms() -> Transforms:
    return Transforms.from_config(DataConfig.tiny())


@pytest.fixture(scope="module")
def eval_set(bundled_run: BundledRun, tokenizer, transforms) -> EvalSet:
    dirs = [bundled_run.stage_a, bundled_run.stage_b, bundled_run.stage_c]
    return load_eval_set(dirs, tokenizer, transforms, holdout=None, max_per_task=1000, seed=0)


@pytest.fixture(scope="module")
def by_id(eval_set: EvalSet) -> dict[str, DialogueSample]:
    return {d.sample.sample_id: d.sample for d in eval_set.dialogues}


def test_every_dependency_task_gets_a_replaced_history(eval_set: EvalSet) -> None:
    with_deps = [d for d in eval_set.dialogues if d.sample.provenance.depends_on]
    assert len(with_deps) >= 100
    assert all(d.variants.replaced is not None for d in with_deps)
    assert all(d.variants.replaced is None for d in eval_set.dialogues if d not in with_deps)
    assert eval_set.counts["no_replaced:no-dependency"] == len(eval_set.dialogues) - len(with_deps)


def test_replaced_turns_keep_kind_and_position_and_nothing_else_moves(
    eval_set: EvalSet, by_id: dict[str, DialogueSample]
) -> None:
    for d in eval_set.dialogues:
        true, replaced = d.variants.true, d.variants.replaced
        if replaced is None:
            continue
        check_invariants(replaced)  # still a valid sample of its task
        deps = set(true.provenance.depends_on)
        assert len(replaced.turns) == len(true.turns)
        assert replaced.provenance == true.provenance
        swapped = {t for donor in d.variants.donors for t in donor.replaced}
        assert swapped == deps
        for t in range(len(true.turns)):
            assert turn_kind(replaced.turns[t]) == turn_kind(true.turns[t]), (true.task, t)
            if t in deps:
                assert _content(replaced, t) != _content(true, t), (true.task, t)
            else:
                assert _content(replaced, t) == _content(true, t), (true.task, t)
        for donor in d.variants.donors:
            source = by_id[donor.sample_id]
            assert donor.sample_id != true.sample_id
            assert donor.from_dependency  # the bundled data has a dependency donor for each
            shared = {(i.source, i.source_row) for i in source.images} & {
                (i.source, i.source_row) for i in true.images
            }
            assert not shared, f"{true.task} got a donor sharing source images {shared}"
            for src, dst in zip(donor.turns, donor.replaced, strict=True):
                assert dst % 2 == src % 2  # same role, same place in its round
                assert _content(source, src) == _content(replaced, dst)


def test_no_history_is_the_final_round_alone(eval_set: EvalSet) -> None:
    for d in eval_set.dialogues:
        true, none = d.variants.true, d.variants.none
        if len(true.turns) == 2:
            assert none is None
            continue
        assert none is not None
        assert len(none.turns) == 2
        assert [_content(none, t) for t in (0, 1)] == [_content(true, t) for t in (-2, -1)]
        assert len(none.images) == sum(len(t.images) for t in none.turns)


def test_final_answer_tokens_match_across_variants(
    eval_set: EvalSet, tokenizer, transforms
) -> None:
    """The scored turn is token for token the same under every history: the same number of CE
    targets, the same latent tokens, and the token counts of the variants differ exactly by
    what the swap changed."""
    prober = Prober(
        eval_set.dialogues, tokenizer, transforms,
        timesteps=(0.5, 0.9), timestep_shift=1.0, latent_dim=64, seed=0,
    )  # fmt: skip
    packs = plan_packs(eval_set.dialogues, levels=2, capacity=4096)
    docs = [doc for pack in packs for doc in pack]
    checked = 0
    for i, d in enumerate(eval_set.dialogues):
        plans = d.plans
        if "replaced" in plans:
            delta = sum(donor.token_delta for donor in d.variants.donors)
            assert plans["replaced"].num_tokens - plans["true"].num_tokens == delta
        answers = {}
        for v, plan in plans.items():
            last = plan.blocks[-1].turn
            final_user = turn_tokens(plan)[last - 1]
            answer = [(b.kind, b.stop - b.start) for b in plan.blocks if b.turn == last]
            answers[v] = (final_user, answer)
        assert len(set(map(repr, answers.values()))) == 1, (d.sample.task, answers)
        # what the probe reads: the same CE targets and latent tokens under every history
        _, _, placed = prober.build([doc for doc in docs if doc.dialogue == i])
        read = {
            p.doc.variant: (
                [(r.label, r.weight) for r in p.rows if r.final],
                [b - a for a, b in p.latents],
            )
            for p in placed
        }
        assert len(read) == len(plans)
        assert len(set(map(repr, read.values()))) == 1, (d.sample.task, read)
        checked += 1
    assert checked == len(eval_set.dialogues)


def test_a_dialogue_without_an_unrelated_donor_has_no_replaced_history(
    tokenizer, transforms
) -> None:
    """Two dialogues made from the same source rows are related: neither may donate."""
    from train.data.serialize import plan_dialogue

    a = build_sample("t_i_i1_1", seed=3)
    b = build_sample("t_i_i1_n", seed=3)  # same source rows as a
    c = build_sample("t_i_i1_1", seed=4)  # unrelated

    def tokens(s: DialogueSample) -> list[int]:
        return turn_tokens(plan_dialogue(s, tokenizer, transforms))

    assert DonorPool([a, b], tokens).variants(a).missing == "no-donor"
    found = DonorPool([a, b, c], tokens).variants(a)
    assert found.replaced is not None
    assert [d.sample_id for d in found.donors] == [c.sample_id]


def test_the_donor_choice_does_not_depend_on_the_pool_order(
    eval_set: EvalSet, tokenizer, transforms
) -> None:
    samples = [d.sample for d in eval_set.dialogues]
    plans = {d.sample.sample_id: d.plans["true"] for d in eval_set.dialogues}
    forward = DonorPool(samples, lambda s: turn_tokens(plans[s.sample_id]), seed=0)
    backward = DonorPool(samples[::-1], lambda s: turn_tokens(plans[s.sample_id]), seed=0)
    other_seed = DonorPool(samples, lambda s: turn_tokens(plans[s.sample_id]), seed=1)
    same = differ = 0
    for s in samples:
        assert forward.variants(s).donors == backward.variants(s).donors
        if s.provenance.depends_on:
            same += forward.variants(s).donors == other_seed.variants(s).donors
            differ += forward.variants(s).donors != other_seed.variants(s).donors
    assert differ > 0, "the seed draws among equally good donors"
