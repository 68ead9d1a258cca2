"""Unknown-vehicle handling in the stages: per-recording normalisation of the VGAE score and the fusion's
fallback to one fixed alpha. Synthetic scores, no data files."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from kdgat_core.config import KdgatError  # noqa: E402
from kdgat_core.data.windows import CALIBRATION_FRACTION  # noqa: E402
from kdgat_core.stages.fusion import (  # noqa: E402
    FusionInputs,
    FusionPolicy,
    best_fixed_alpha,
    choose_deployment,
    fused_score,
    split_halves,
)
from kdgat_core.stages.metrics import youden_threshold  # noqa: E402
from kdgat_core.stages.scoring import (  # noqa: E402
    VGAECalibration,
    VGAEScores,
    calibration_part,
    check_score_norm,
    normalise_by_recording,
    robust_baseline,
)

WINDOW = 100


def _windows(recordings: dict[str, int], offset: int = 0) -> SimpleNamespace:
    """A GraphSet-shaped object: `n` consecutive windows per recording, starting at message `offset`."""
    starts, rec = [], []
    for i, n in enumerate(recordings.values()):
        starts += [offset + k * WINDOW for k in range(n)]
        rec += [i] * n
    return SimpleNamespace(start=torch.tensor(starts), recording_index=torch.tensor(rec), recordings=list(recordings))


def _two_vehicles(seed: int = 0):
    """Window errors of a known car (A) and an unknown car (B) whose every error term is e^2 times larger.
    Both: the first 30% of windows normal, then normals and attacks (feature error e^1.5 times larger) alternate."""
    rng = np.random.default_rng(seed)
    n = 200
    y = np.zeros(2 * n, int)
    log_err = rng.normal(0, 0.2, (2 * n, 3))
    for r in range(2):
        attacks = r * n + np.arange(int(0.3 * n), n, 2)
        y[attacks] = 1
        log_err[attacks, 0] += 1.5
    log_err[n:] += 2.0  # the unknown vehicle's offset
    scores = VGAEScores(np.exp(log_err).sum(1), np.exp(log_err), rng.normal(0, 1, (2 * n, 2)))
    return scores, np.repeat([0, 1], n), y


def test_calibration_part_is_the_start_of_each_recording_even_across_splits():
    test = _windows({"t/a": 100, "t/b": 20})
    parts = calibration_part([test], WINDOW)[0]
    rec = test.recording_index.numpy()[parts]
    assert (rec == 0).sum() == 15 and (rec == 1).sum() == 3  # 15% of each recording's windows
    assert (test.start.numpy()[parts] < CALIBRATION_FRACTION * np.array([10_000, 2_000])[rec]).all()
    # a training recording's validation windows are its end; its calibration part lies in the training split
    train, val = _windows({"r": 80}), _windows({"r": 20}, offset=80 * WINDOW)
    val_part, train_part = calibration_part([val, train], WINDOW)
    assert len(val_part) == 0 and len(train_part) == 15


def test_recording_normalisation_removes_a_vehicle_offset_without_labels():
    scores, rec, y = _two_vehicles()
    raw = np.log(scores.score)
    # raw: one threshold cannot serve both cars (the unknown car's normals score above the known car's attacks)
    thr = youden_threshold(y[rec == 0], raw[rec == 0])
    assert ((raw[rec == 1] >= thr) == 1).all()
    calib = np.concatenate([np.arange(0, 60), np.arange(200, 260)])  # the first 30%: normal traffic only
    log_terms = np.concatenate([np.log(scores.errors), scores.latent], axis=1)
    baselines = {r: robust_baseline(log_terms[calib][rec[calib] == r]) for r in (0, 1)}
    norm = normalise_by_recording(scores, rec, baselines)
    assert norm.normalised and norm.errors.shape == (400, 3)
    # the threshold fitted on the known car now holds on the unknown one
    thr = youden_threshold(y[rec == 0], norm.score[rec == 0])
    acc_b = ((norm.score[rec == 1] >= thr) == y[rec == 1]).mean()
    assert acc_b > 0.95
    # label-free: the same windows with other labels get the same scores (labels are not even an argument)
    again = normalise_by_recording(scores, rec, baselines)
    np.testing.assert_array_equal(again.score, norm.score)


def test_unknown_score_norm_is_one_sentence():
    check_score_norm("recording")
    with pytest.raises(KdgatError, match="vgae.score_norm must be one of none, recording"):
        check_score_norm("vehicle")


def test_calibration_keeps_its_score_norm_and_reads_old_checkpoints():
    cal = VGAECalibration.fit(np.array([0, 0, 1, 1]), np.array([1.0, 1.2, 3.0, 3.5]), "recording")
    assert VGAECalibration.from_dict(cal.to_dict()).score_norm == "recording"
    old = {"threshold": 2.0, "slope": 1.0, "intercept": 0.0}  # written before score_norm existed
    assert VGAECalibration.from_dict(old).score_norm == "none"


# --- fusion: never worse than the best fixed alpha ---------------------------------------------------------------------
def _inputs(n: int = 400, seed: int = 0) -> FusionInputs:
    """The GAT is right on 90% of windows, the VGAE on 75%, independently."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p_gat = np.where(rng.random(n) < 0.9, y, 1 - y) * 0.8 + 0.1
    s_vgae = np.where(rng.random(n) < 0.75, y, 1 - y) * 0.6 + 0.2
    return FusionInputs(np.zeros((n, 1), np.float32), p_gat, s_vgae, y)


def test_best_fixed_alpha_breaks_ties_towards_an_even_blend():
    y = np.array([0, 1, 0, 1])
    both_right = np.array([0.1, 0.9, 0.1, 0.9])
    alphas = np.linspace(0, 1, 11)
    assert best_fixed_alpha(alphas, both_right, both_right, y) == 0.5  # every alpha ties
    # only the GAT is right: every alpha above 0.5 follows it; the most even of those wins
    assert best_fixed_alpha(alphas, both_right, 1 - both_right, y) == pytest.approx(0.6)


def test_a_bandit_worse_than_a_fixed_alpha_is_not_deployed():
    from sklearn.metrics import f1_score

    val = _inputs()
    fit_idx, check_idx = split_halves(len(val.y), val.y, 0)
    alphas = np.linspace(0, 1, 11)
    rng = np.random.default_rng(1)
    bad_bandit = fused_score(alphas[rng.integers(0, 11, len(check_idx))], val.p_gat[check_idx], val.s_vgae[check_idx])
    fixed, use_fixed = choose_deployment(alphas, val, fit_idx, check_idx, bad_bandit)
    assert use_fixed
    yc = val.y[check_idx]
    deployed = fused_score(fixed, val.p_gat[check_idx], val.s_vgae[check_idx])
    for a in (0.0, 1.0):  # never worse than a single model on the check half
        assert f1_score(yc, deployed >= 0.5) >= f1_score(yc, fused_score(a, val.p_gat, val.s_vgae)[check_idx] >= 0.5)
    # a bandit that is right everywhere is kept
    oracle = val.y[check_idx].astype(float)
    assert choose_deployment(alphas, val, fit_idx, check_idx, oracle) == (fixed, False)


def test_a_fixed_alpha_policy_ignores_the_q_network():
    q = torch.nn.Linear(1, 3)
    policy = FusionPolicy(
        q, np.array([0.0, 0.5, 1.0], np.float32), np.zeros(1, np.float32), np.ones(1, np.float32), fixed_alpha=0.5
    )
    val = _inputs(10)
    fused, alpha = policy.fuse(val)
    assert (alpha == 0.5).all()
    np.testing.assert_allclose(fused, 0.5 * val.p_gat + 0.5 * val.s_vgae)


# --- GAT inference without ids -----------------------------------------------------------------------------------------
def test_inference_ids_setting_is_checked_and_old_runs_keep_their_ids():
    from kdgat_core.stages.scoring import check_inference_ids, gat_hides_ids

    check_inference_ids("hide", 0.5)
    check_inference_ids("keep", 0.0)
    with pytest.raises(KdgatError, match="gat.inference_ids=hide needs gat.id_mask > 0"):
        check_inference_ids("hide", 0.0)
    with pytest.raises(KdgatError, match="gat.inference_ids must be one of keep, hide"):
        check_inference_ids("drop", 0.5)
    assert gat_hides_ids({"inference_ids": "hide"}) and not gat_hides_ids({})  # runs from before the setting
