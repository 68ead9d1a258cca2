"""The evaluation's decision rule: a threshold from a false-positive budget on validation normal windows."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from kdgat_core.config import KdgatError, preset
from kdgat_core.stages.evaluation import check_threshold_rule, decision_thresholds
from kdgat_core.stages.metrics import fpr_budget_threshold


@pytest.mark.parametrize("budget", [0.01, 0.05, 0.2])
def test_budget_threshold_flags_at_most_the_budget_of_normals(budget):
    normal = np.random.default_rng(1).random(2000)
    thr = fpr_budget_threshold(normal, budget)
    flagged = (normal >= thr).mean()
    assert flagged <= budget and flagged > budget - 2 / len(normal)  # the budget is used, not wasted


def test_budget_threshold_holds_for_float32_scores():
    # a float64 threshold one ulp above a float32 score would round back onto it when compared in float32
    normal = np.random.default_rng(2).random(1234).astype(np.float32)
    thr = fpr_budget_threshold(normal, 0.01)
    assert (normal >= thr).mean() <= 0.01


def test_budget_threshold_with_tied_top_scores_flags_none_of_the_ties():
    normal = np.array([0.1] * 90 + [0.9] * 10)
    assert (normal >= fpr_budget_threshold(normal, 0.05)).sum() == 0


def test_thresholds_come_from_validation_normals_only():
    rng = np.random.default_rng(3)
    y = np.array([0] * 500 + [1] * 100)
    scores = {"fusion": np.concatenate([rng.random(500) * 0.3, 0.5 + rng.random(100) * 0.5])}
    thr = decision_thresholds("fpr_budget", 0.01, y, scores)
    moved = {"fusion": scores["fusion"].copy()}
    moved["fusion"][y == 1] = 0.0  # what the attack windows score cannot move the threshold
    assert decision_thresholds("fpr_budget", 0.01, y, moved) == thr
    assert thr["fusion"] < 0.3 and (scores["fusion"][y == 0] >= thr["fusion"]).mean() <= 0.01
    assert decision_thresholds("fixed", 0.01, y, scores) == {"fusion": 0.5}


def test_budget_rule_without_validation_normals_is_one_sentence():
    with pytest.raises(KdgatError, match="needs normal windows"):
        decision_thresholds("fpr_budget", 0.01, np.ones(5), {"fusion": np.ones(5)})


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["eval.threshold=median"], "eval.threshold must be one of fixed, fpr_budget"),
        (["eval.threshold=fpr_budget", "eval.fpr_budget=1.5"], "eval.fpr_budget must be between 0 and 1"),
        (["eval.threshold=fpr_budget", "eval.fpr_budget=0"], "eval.fpr_budget must be between 0 and 1"),
    ],
)
def test_bad_se_rulettings_are_refused(overrides, message):
    cfg = preset("eval,teacher").override(overrides)
    with pytest.raises(KdgatError, match=message):
        check_threshold_rule(cfg.eval.threshold, cfg.eval.fpr_budget)


def test_default_rule_is_valid():
    cfg = preset("eval,teacher")
    check_threshold_rule(cfg.eval.threshold, cfg.eval.fpr_budget)


# --- the VGAE's and the timing score's thresholds (fusion stage): best validation F1, one-standard-error rule ------
def _validation_and_unseen(seed: int = 7):
    """Scores like the timing score's: validation normals, blatant attacks far above them, subtle injected attacks
    overlapping the normals' tail; and an unseen recording whose normal windows are noisier (a heavier tail)."""
    rng = np.random.default_rng(seed)
    normal = rng.gamma(2.0, 1.0, 900)
    blatant = 30 + rng.random(350) * 20
    subtle = rng.gamma(2.0, 1.0, 350) + rng.choice([0.0, 3.0, 30.0], 350, p=[0.5, 0.2, 0.3])
    y = np.array([0] * 900 + [1] * 700)
    unseen_normal = rng.gamma(2.0, 1.6, 5000)
    return y, np.concatenate([normal, blatant, subtle]), unseen_normal


def test_one_standard_error_rule_alarms_less_on_an_unseen_recording_at_the_same_validation_f1():
    from sklearn.metrics import f1_score

    from kdgat_core.stages.metrics import f1_standard_error, f1_threshold

    y, score, unseen = _validation_and_unseen()
    best = f1_threshold(y, score, max_fpr=0.01)
    ose = f1_threshold(y, score, max_fpr=0.01, se_rule=1.0)
    f1_best, f1_ose = f1_score(y, score >= best), f1_score(y, score >= ose)
    se = f1_standard_error(y, score >= best)
    assert ose > best  # the flat top of the F1 curve is left at its upper end
    assert f1_best - se <= f1_ose <= f1_best  # statistically the same on validation...
    assert (unseen >= ose).mean() < 0.5 * (unseen >= best).mean()  # ...half the false alarms (or fewer) elsewhere
    assert (score[y == 0] >= ose).mean() <= 0.01  # the FPR cap still holds
    assert f1_threshold(y, score, max_fpr=0.01, se_rule=0.0) == best  # 0: the F1-best threshold, as before


def test_one_standard_error_rule_is_seeded_and_keeps_a_clean_separation():
    from kdgat_core.stages.metrics import f1_threshold

    y, score, _ = _validation_and_unseen()
    assert f1_threshold(y, score, 0.01, se_rule=1.0, seed=3) == f1_threshold(y, score, 0.01, se_rule=1.0, seed=3)
    clean_y = np.array([0] * 50 + [1] * 50)
    clean = np.concatenate([np.linspace(0, 1, 50), np.linspace(5, 6, 50)])
    # every threshold between the classes has F1 1 and no standard error: the cut stays between them
    thr = f1_threshold(clean_y, clean, se_rule=1.0)
    assert 1 < thr < 5


def test_metrics_docstring_examples_hold():
    import doctest

    from kdgat_core.stages import metrics

    assert doctest.testmod(metrics).failed == 0


@pytest.mark.parametrize("value", ["-1", "11"])
def test_bad_se_rule_is_one_sentence(value, tmp_path):
    from kdgat_core.stages.fusion import run_fusion

    cfg = preset("dqn,student,tiny", dataset="synthetic").override([f"dqn.se_rule={value}"])
    with pytest.raises(KdgatError, match="dqn.se_rule must be between 0 and 10"):
        run_fusion(cfg, None, None, None, None)


def test_fusion_guard_keeps_a_clear_gain_and_drops_a_gain_within_noise():
    from kdgat_core.stages.fusion import single_input_instead

    rng = np.random.default_rng(5)
    y = np.array([0] * 600 + [1] * 400)
    a = np.where(y == 1, rng.random(1000) < 0.6, rng.random(1000) < 0.01).astype(float)  # input 0: recall 0.6
    b = np.where(y == 1, rng.random(1000) < 0.5, rng.random(1000) < 0.01).astype(float)
    scores = np.stack([a, b], axis=1)
    clear = np.maximum(a, b)  # OR of two partly independent detectors: recall ~0.8, a real gain
    assert single_input_instead(y, clear, scores, se_rule=1.0) is None
    one_more = a.copy()
    one_more[np.nonzero((y == 1) & (a == 0))[0][:1]] = 1.0  # one more attack window caught: noise
    assert single_input_instead(y, one_more, scores, se_rule=1.0) == 0
    assert single_input_instead(y, one_more, scores, se_rule=0.0) is None  # the old guard kept it
    worse = b.copy()
    assert single_input_instead(y, worse, scores, se_rule=0.0) == 0  # below the best input: never deployed
