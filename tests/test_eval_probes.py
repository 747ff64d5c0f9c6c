"""The context probes on a real tiny ChatUMM and the bundled dataset: the noised copies of the
final image read what a lone copy reads, a model that cannot see the history gains nothing
from it, and the numbers are a pure function of the seed."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from tests.bundled import BundledRun
from tests.eval_support import (  # noqa: F401 (a fixture)
    HistoryBlind,
    TinySetup,
    one_torch_thread,
    random_model,
    tiny_setup,
)
from train.data.pack import pack
from train.data.serialize import materialize
from train.data.transforms import Transforms
from train.eval.config import EvalConfig
from train.eval.dataset import load_eval_set
from train.eval.probes import Doc, Prober, _seed, layout_latents, timestep_logit
from train.eval.report import GAINS
from train.eval.run import Evaluator

LEVELS = (0.4, 0.9)
# One dialogue per task and both kinds of final answer (image; image then text), to stay fast.
TASKS = ("t_i_i1_1", "t_i_t1_n", "t_ti_in_n", "ti_ti_i1_1")


@pytest.fixture(scope="module")
def setup() -> TinySetup:
    return tiny_setup()


@pytest.fixture(scope="module")
def dirs(bundled_run: BundledRun) -> list:
    return [bundled_run.stage_a, bundled_run.stage_b, bundled_run.stage_c]


def _evaluator(setup: TinySetup, dirs: list, **changes: object) -> Evaluator:
    cfg = EvalConfig(tasks=TASKS, max_per_task=1, timesteps=LEVELS, bootstrap=200)
    return Evaluator(
        cfg.model_copy(update=changes),
        dirs,
        holdout=None,
        data_cfg=setup.data_cfg,
        model_cfg=setup.model_cfg,
        tokenizer=setup.tokenizer,
        attention="sdpa",
        device=torch.device("cpu"),
    )


def test_each_noised_copy_reads_what_a_lone_copy_reads(setup: TinySetup, dirs: list) -> None:
    """The probe lays the final image out once per noise level; each copy's MSE (and the stop
    decision read from it) equals that of the training layout with the image at that level."""
    model = random_model(setup.model_cfg)
    transforms = Transforms.from_config(setup.data_cfg)
    dialogues = load_eval_set(
        dirs, setup.tokenizer, transforms, holdout=None, max_per_task=1, seed=0,
        tasks=("t_i_i1_1", "t_ti_i1_1"),
    ).dialogues  # fmt: skip
    shift = setup.model_cfg.timestep_shift
    prober = Prober(
        dialogues, setup.tokenizer, transforms, timesteps=LEVELS, timestep_shift=shift,
        latent_dim=setup.model_cfg.latent_dim, seed=0,
    )  # fmt: skip
    for i, dialogue in enumerate(dialogues):
        plan = dialogue.plans["true"]
        batch, noise_MC, placed = prober.build([Doc(i, "true", 0)])
        with torch.no_grad():
            probed = prober.results(model.token_losses(batch, "sdpa", noise_MC), placed)[0]
            t_I = model._latents(batch, noise_MC).t_I
        assert [round(float(t_I[j]), 5) for j in placed[0].occurrences] == list(LEVELS)

        ce_per_level = []
        for k, t in enumerate(LEVELS):
            d = materialize(plan, setup.tokenizer, transforms, np.random.default_rng(0))
            occurrence, (a, b) = layout_latents(d.blocks)
            logits_I = d.timestep_logits_I.clone()
            logits_I[occurrence] = timestep_logit(t, shift)
            noise = torch.zeros(int(d.vae_index_M.numel()), setup.model_cfg.latent_dim)
            gen = torch.Generator().manual_seed(_seed(0, "noise", d.sample_id, k))
            noise[a:b] = torch.randn(b - a, setup.model_cfg.latent_dim, generator=gen)
            lone = pack([replace(d, timestep_logits_I=logits_I)])
            with torch.no_grad():
                terms = model.token_losses(lone, "sdpa", noise)
            mse_M = torch.zeros(noise.shape[0])
            mse_M[terms.has_mse_M] = terms.mse_K
            assert float(mse_M[a:b].mean()) == pytest.approx(probed.mse[k], abs=1e-6)
            answer = plan.blocks[-1].turn
            start = min(blk.start for blk in plan.blocks if blk.turn == answer)
            final = lone.ce_index_C + 1 >= start
            ce_per_level.append(float(terms.ce_C[final].mean()))
        assert sum(ce_per_level) / len(LEVELS) == pytest.approx(
            probed.ce_sum / probed.ce_weight, abs=1e-5
        )


def test_a_model_blind_to_the_history_gains_nothing_from_it(setup: TinySetup, dirs: list) -> None:
    evaluator = _evaluator(setup, dirs)
    seeing = evaluator.run(random_model(setup.model_cfg), "random")
    blind_model = random_model(setup.model_cfg, cls=HistoryBlind)
    blind_model.end_of_turn = setup.tokenizer.special.end_of_turn
    blind = evaluator.run(blind_model, "blind")
    assert seeing is not None and blind is not None

    def gains(report: dict) -> list[float]:
        return [r[f"gain_{g}"] for r in report["dialogues"] for g in GAINS if f"gain_{g}" in r]

    assert len(gains(blind)) == len(gains(seeing)) == 4 * len(TASKS)
    assert max(abs(g) for g in gains(seeing)) > 1e-3  # the probe can see a difference...
    assert max(abs(g) for g in gains(blind)) < 1e-5  # ...and there is none to see here
    for g in GAINS:
        interval = blind["all"]["gain"][g]
        assert interval["lo"] <= 0 <= interval["hi"] or abs(interval["mean"]) < 1e-5


def test_probes_are_deterministic_for_a_seed_and_leave_the_global_rng_alone(
    setup: TinySetup, dirs: list
) -> None:
    model = random_model(setup.model_cfg)
    rng_before = torch.get_rng_state()

    def numbers(seed: int) -> list:
        report = _evaluator(setup, dirs, seed=seed).run(model, "x")
        assert report is not None
        return report["dialogues"]

    first, again, other = numbers(0), numbers(0), numbers(1)
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert first == again
    assert [r["sample_id"] for r in first] == [r["sample_id"] for r in again]
    mse = [r["mse"]["true"] for r in first]
    assert all(math.isfinite(x) for x in mse)
    assert mse != [r["mse"]["true"] for r in other]  # another seed: other noise


def test_timestep_logit_inverts_the_models_shift() -> None:
    for shift in (1.0, 3.0):
        for t in (0.1, 0.5, 0.9):
            u = torch.sigmoid(torch.tensor(timestep_logit(t, shift), dtype=torch.float64))
            assert float(shift * u / (1 + (shift - 1) * u)) == pytest.approx(t, abs=1e-12)
