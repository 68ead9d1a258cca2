"""Classification metrics of a window detector (scikit-learn), thresholds chosen on validation."""

from __future__ import annotations

import math
import warnings

import numpy as np
from sklearn import metrics as skm

from kdgat_core.config import Metric


def youden_threshold(y: np.ndarray, score: np.ndarray) -> float:
    """The score threshold maximising Youden's J = TPR - FPR (a window is an attack when score >= threshold).

    Without both classes it falls back to the 99th percentile of the scores (normal-only validation)."""
    y = np.asarray(y).astype(int)
    score = np.asarray(score, dtype=float)
    if len(np.unique(y)) < 2:
        return float(np.quantile(score, 0.99)) if len(score) else 0.0
    fpr, tpr, thr = skm.roc_curve(y, score)
    i = int(np.argmax(tpr - fpr))
    if not np.isfinite(thr[i]):
        return float(score.max()) + 1e-9
    # midway to the next lower score, so a window just under the best cut does not flip on rounding
    lower = score[score < thr[i]]
    return float((thr[i] + lower.max()) / 2) if len(lower) else float(thr[i])


def f1_threshold(
    y: np.ndarray, score: np.ndarray, max_fpr: float = 1.0, se_rule: float = 0.0, seed: int = 0, boot: int = 200
) -> float:
    """The score threshold with the best F1 (attack when score >= threshold) among those that flag at most `max_fpr`
    of the normal windows, midway to the next lower score; without both classes, Youden's fallback (the 99th
    percentile).

    `se_rule` > 0 is the one-standard-error rule of model selection: among the thresholds whose F1 is within
    `se_rule` bootstrap standard errors of the best (resampling the windows, `boot` times, seeded), the highest, so
    the fewest false alarms. When validation cannot tell thresholds apart, the one that alarms least is the one that
    transfers to recordings it has not seen (their normal windows are noisier than the ones it was fitted on).

    >>> y = np.array([0] * 8 + [1] * 4); s = np.array([1, 2, 3, 4, 5, 6, 7, 9.0, 8, 10, 11, 12])
    >>> f1_threshold(y, s)  # the F1-best cut flags the normal 9 to catch the attack 8
    7.5
    >>> f1_threshold(y, s, se_rule=1.0) > 9  # within one standard error, the cut above every normal
    True
    """
    y = np.asarray(y).astype(int)
    score = np.asarray(score, dtype=float)
    if len(np.unique(y)) < 2:
        return youden_threshold(y, score)
    fpr, tpr, thr = skm.roc_curve(y, score, drop_intermediate=False)
    pos, neg = int(y.sum()), int((y == 0).sum())
    tp, fp = tpr * pos, fpr * neg
    f1 = 2 * tp / np.maximum(2 * tp + fp + (pos - tp), 1e-12)
    f1[(fpr > max_fpr) | ~np.isfinite(thr)] = -1.0
    if f1.max() < 0:
        return float(score.max()) + 1e-9
    i = int(np.argmax(f1))
    best = float(thr[i])
    if se_rule > 0 and f1[i] > 0:
        tol = se_rule * f1_standard_error(y, score >= best, seed, boot)
        best = float(thr[f1 >= f1[i] - tol].max())
    lower = score[score < best]
    return float((best + lower.max()) / 2) if len(lower) else best


def f1_standard_error(y: np.ndarray, pred: np.ndarray, seed: int = 0, boot: int = 200) -> float:
    """Bootstrap standard error of F1 for fixed decisions `pred` (windows resampled with replacement, seeded)."""
    y, pred = np.asarray(y).astype(bool), np.asarray(pred).astype(bool)
    if len(y) < 2:
        return 0.0
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(y), size=(boot, len(y)))
    yb, pb = y[idx], pred[idx]
    tp = (yb & pb).sum(axis=1)
    denom = 2 * tp + (~yb & pb).sum(axis=1) + (yb & ~pb).sum(axis=1)
    return float(np.std(2 * tp / np.maximum(denom, 1)))


def fpr_budget_threshold(normal_score: np.ndarray, budget: float) -> float:
    """The threshold that flags at most `budget` of the given normal windows (attack when score >= threshold):
    just above their (1 - budget) quantile. Only normal windows' scores go in, so no attack label is used."""
    normal_score = np.asarray(normal_score, dtype=float)
    if len(normal_score) == 0:
        raise ValueError("an FPR-budget threshold needs at least one normal window")
    q = float(np.quantile(normal_score, 1.0 - budget, method="higher"))
    above = normal_score[normal_score > q]
    # midway to the next higher normal score, so float32 scores compared with it do not round onto q
    return float((q + above.min()) / 2) if len(above) else float(np.nextafter(q, np.inf))


def detection_rate_at_fpr(y: np.ndarray, score: np.ndarray, max_fpr: float) -> float:
    """Highest true-positive rate reachable with a false-positive rate <= max_fpr."""
    if len(np.unique(y)) < 2:
        return math.nan
    fpr, tpr, _ = skm.roc_curve(y, score)
    ok = fpr <= max_fpr
    return float(tpr[ok].max()) if ok.any() else 0.0


def classification_metrics(y: np.ndarray, pred: np.ndarray, score: np.ndarray) -> dict[str, float]:
    """Every metric of the evaluation stage for hard predictions `pred` and continuous attack scores `score`."""
    with warnings.catch_warnings():
        # a scenario or a tiny validation split with one class only: the undefined metrics are NaN, said once here
        warnings.simplefilter("ignore")
        return _classification_metrics(
            np.asarray(y).astype(int), np.asarray(pred).astype(int), np.asarray(score, dtype=float)
        )


def _classification_metrics(y: np.ndarray, pred: np.ndarray, score: np.ndarray) -> dict[str, float]:
    tn, fp, fn, tp = skm.confusion_matrix(y, pred, labels=[0, 1]).ravel()
    both = len(np.unique(y)) == 2
    # a scenario without attack windows (test_05_suppress) has no recall, F1 or MCC: NaN, never a silent 0
    attacks = bool(tp + fn)

    def ratio(a: float, b: float) -> float:
        return float(a / b) if b else math.nan

    out = {
        Metric.ACCURACY: skm.accuracy_score(y, pred),
        Metric.F1: skm.f1_score(y, pred, zero_division=0) if attacks else math.nan,
        Metric.PRECISION: skm.precision_score(y, pred, zero_division=0) if attacks else math.nan,
        Metric.RECALL: skm.recall_score(y, pred, zero_division=0) if attacks else math.nan,
        Metric.AUC: skm.roc_auc_score(y, score) if both else math.nan,
        Metric.MCC: skm.matthews_corrcoef(y, pred) if both else math.nan,
        Metric.SPECIFICITY: ratio(tn, tn + fp),
        Metric.BALANCED_ACCURACY: skm.balanced_accuracy_score(y, pred) if both else math.nan,
        Metric.FPR: ratio(fp, fp + tn),
        Metric.FNR: ratio(fn, fn + tp),
        Metric.PR_AUC: skm.average_precision_score(y, score) if both else math.nan,
        Metric.DR_AT_FPR_1E2: detection_rate_at_fpr(y, score, 1e-2),
        Metric.DR_AT_FPR_1E3: detection_rate_at_fpr(y, score, 1e-3),
    }
    return {str(k): float(v) for k, v in out.items()}


def undefined(m: dict[str, float]) -> list[str]:
    """The metrics of `m` that its data cannot define (NaN): reported as undefined, never logged as a number."""
    return sorted(k for k, v in m.items() if isinstance(v, float) and math.isnan(v))


HEADLINE = (Metric.ACCURACY, Metric.F1, Metric.PRECISION, Metric.RECALL, Metric.AUC, Metric.MCC)


def headline(m: dict[str, float]) -> dict[str, float]:
    """The standard metrics subset (what leaderboards rank by)."""
    return {str(k): m[str(k)] for k in HEADLINE}
