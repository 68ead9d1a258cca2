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
def test_bad_threshold_settings_are_refused(overrides, message):
    cfg = preset("eval,teacher").override(overrides)
    with pytest.raises(KdgatError, match=message):
        check_threshold_rule(cfg.eval.threshold, cfg.eval.fpr_budget)


def test_default_rule_is_valid():
    cfg = preset("eval,teacher")
    check_threshold_rule(cfg.eval.threshold, cfg.eval.fpr_budget)
