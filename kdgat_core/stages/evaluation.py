"""Stage 4, evaluation: the chosen VGAE, GAT and fusion policy on every test scenario of the dataset.

Logs, per scenario, every metric of the fused detector (`<scenario>/<metric>`) plus F1 and accuracy of each single
model (`<scenario>/gat_f1`, `<scenario>/vgae_f1`, ...); the headline metrics pool all test windows. Confusion-matrix
and ROC figures per scenario are artifacts.

Decision rule (`eval.threshold`): "fixed" decides at 0.5 on each detector's score (for the VGAE alone that is its
Youden threshold); "fpr_budget" sets each detector's threshold to the (1 - eval.fpr_budget) quantile of its score on
the validation normal windows, as an IDS is deployed with a false-alarm budget. Thresholds are logged as metrics
(`threshold`, `gat_threshold`, `vgae_threshold`) and the detectors' validation F1 at them as `val_f1` etc.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch

from kdgat_core.config import (
    ATTACK_SHARE,
    TIMING_SCORE,
    UNDEFINED_METRICS_TAG,
    Arch,
    KdgatError,
    Metric,
    PipelineConfig,
    Stage,
    prerequisite_tag,
    scenario_metric,
)
from kdgat_core.models import CANGraphGAT, CANGraphVGAE
from kdgat_core.stages import plots
from kdgat_core.stages.fusion import DECISION, concat_inputs, load_fusion, model_outputs, validation_parts
from kdgat_core.stages.metrics import classification_metrics, fpr_budget_threshold, headline, undefined
from kdgat_core.stages.prerequisites import load_run_model, resolve_prerequisite
from kdgat_core.stages.scoring import VGAECalibration, gat_hides_ids

FUSION = "fusion"
SINGLE_MODEL_METRICS = (Metric.F1, Metric.ACCURACY, Metric.AUC)
THRESHOLD_RULES = ("fixed", "fpr_budget")
log = logging.getLogger(__name__)


def without_nan(obj: Any) -> Any:
    """NaN (an undefined metric) as None, so metrics.json is valid JSON that says 'undefined', not a number."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: without_nan(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [without_nan(v) for v in obj]
    return obj


def check_threshold_rule(rule: str, budget: float) -> None:
    if rule not in THRESHOLD_RULES:
        raise KdgatError(f"eval.threshold must be one of {', '.join(THRESHOLD_RULES)}, got '{rule}'.")
    if rule == "fpr_budget" and not 0.0 < budget < 1.0:
        raise KdgatError(f"eval.fpr_budget must be between 0 and 1 (a false-positive rate), got {budget}.")


def decision_thresholds(
    rule: str, budget: float, val_y: np.ndarray, val_scores: dict[str, np.ndarray]
) -> dict[str, float]:
    """Per detector, the score at or above which a window is an attack; `val_scores` are validation scores and only
    the normal windows' scores are used (fpr_budget). Test data never enters."""
    if rule == "fixed":
        return {name: DECISION for name in val_scores}
    normal = np.asarray(val_y) == 0
    if not normal.any():
        raise KdgatError("eval.threshold=fpr_budget needs normal windows in the validation split.")
    return {name: fpr_budget_threshold(s[normal], budget) for name, s in val_scores.items()}


def run_evaluation(
    cfg: PipelineConfig, run: Any, graphs: Any, device: torch.device, tracking_uri: str | None
) -> dict[str, float]:
    check_threshold_rule(cfg.eval.threshold, cfg.eval.fpr_budget)
    fusion_run = resolve_prerequisite(cfg, Stage.FUSION, tracking_uri)
    policy, fmeta = load_fusion(fusion_run, tracking_uri)
    # the VGAE and GAT the policy was trained on, unless named explicitly
    vgae_run = cfg.train.autoencoder_run_id or fmeta[prerequisite_tag(Stage.AUTOENCODER)]
    gat_run = cfg.train.curriculum_run_id or fmeta[prerequisite_tag(Stage.CURRICULUM)]
    run.set_tags(
        {
            prerequisite_tag(Stage.AUTOENCODER): vgae_run,
            prerequisite_tag(Stage.CURRICULUM): gat_run,
            prerequisite_tag(Stage.FUSION): fusion_run,
        }
    )
    vgae, vmeta = load_run_model(vgae_run, tracking_uri, CANGraphVGAE, graphs, device)
    gat, gmeta = load_run_model(gat_run, tracking_uri, CANGraphGAT, graphs, device)
    # the fusion run's calibrations (chosen on validation with its synthetic subtle attacks), else the VGAE run's
    cals = fmeta.get("calibrations") or {}
    cal = VGAECalibration.from_dict(cals.get(Arch.VGAE.value, vmeta["calibration"]))
    tcal = VGAECalibration.from_dict(cals[TIMING_SCORE]) if TIMING_SCORE in cals else None
    if not graphs.test:
        raise KdgatError(f"Dataset {cfg.dataset} has no test scenarios to evaluate.")
    notes = graphs.notes() if hasattr(graphs, "notes") else []
    for note in notes:
        log.warning("%s: %s", cfg.dataset, note)

    hide_ids = gat_hides_ids(gmeta)
    W = cfg.data.window
    val = concat_inputs(
        [
            model_outputs(vgae, gat, cal, part, device, W, (graphs.train,), hide_ids, tcal)
            for part, _ in validation_parts(graphs)
        ]
    )
    val_fused, _ = policy.fuse(val)
    singles_of = lambda inp: {  # noqa: E731
        Arch.GAT.value: np.asarray(inp.p_gat, np.float64),
        Arch.VGAE.value: np.asarray(inp.s_vgae, np.float64),
        **({TIMING_SCORE: np.asarray(inp.s_timing, np.float64)} if inp.s_timing is not None else {}),
    }
    # float64 throughout, so a threshold just above a float32 score is not rounded back onto it
    val_scores = {FUSION: np.asarray(val_fused, dtype=np.float64), **singles_of(val)}
    thr = decision_thresholds(cfg.eval.threshold, cfg.eval.fpr_budget, val.y, val_scores)
    val_m = {name: classification_metrics(val.y, s >= thr[name], s) for name, s in val_scores.items()}
    final: dict[str, float] = {Metric.THRESHOLD.value: thr[FUSION]}
    for name in val_scores:
        if name != FUSION:
            final[f"{name}_{Metric.THRESHOLD}"] = thr[name]
    for name, m in val_m.items():
        prefix = "" if name == FUSION else f"{name}_"
        final[f"{prefix}{Metric.VAL_F1}"] = m[Metric.F1.value]
        final[f"{prefix}val_{Metric.FPR}"] = m[Metric.FPR.value]
    report: dict[str, Any] = {}
    pooled_y, pooled_score = [], []
    fallback: dict[str, dict[str, dict[str, str]]] = {}
    undefined_names: list[str] = []
    for scenario, gs in graphs.test.items():
        if len(gs) == 0:  # every recording empty, too short for a window, or shared with training
            report[scenario] = {"windows": 0, "note": "no window to judge"}
            log.warning("%s: scenario %s has no window to judge; it is left out", cfg.dataset, scenario)
            continue
        fallback[scenario] = {}
        inp = model_outputs(vgae, gat, cal, gs, device, W, (), hide_ids, tcal, fallback[scenario])
        fused, alpha = policy.fuse(inp)
        fused = np.asarray(fused, dtype=np.float64)
        pred = fused >= thr[FUSION]
        m = classification_metrics(inp.y, pred, fused)
        singles = singles_of(inp)
        single_m = {name: classification_metrics(inp.y, s >= thr[name], s) for name, s in singles.items()}
        scenario_final = {scenario_metric(scenario, k): v for k, v in m.items()}
        for name, sm in single_m.items():
            scenario_final.update({scenario_metric(scenario, f"{name}_{k}"): sm[str(k)] for k in SINGLE_MODEL_METRICS})
        scenario_final[scenario_metric(scenario, ATTACK_SHARE)] = float(inp.y.mean())
        gone = undefined(scenario_final)
        if gone:
            undefined_names += gone
            log.warning(
                "%s: scenario %s has %s, so %s are undefined (not logged); specificity and FPR are reported",
                cfg.dataset,
                scenario,
                "no attack window" if not inp.y.any() else "one class only",
                ", ".join(sorted({k.split("/", 1)[1] for k in gone})),
            )
        final.update({k: v for k, v in scenario_final.items() if k not in gone})
        report[scenario] = {
            "windows": int(len(inp.y)),
            "attack_windows": int(inp.y.sum()),
            "fusion": m,
            **single_m,
            "mean_alpha": float(np.nanmean(alpha)) if len(alpha) and not np.isnan(alpha).all() else None,
            "calibration_fallback": fallback[scenario],
        }
        pooled_y.append(inp.y)
        pooled_score.append(fused)
        for name, fig in (
            (f"confusion_{scenario}.png", plots.confusion_matrix_figure(inp.y, pred, f"{cfg.run_name}: {scenario}")),
            (f"roc_{scenario}.png", plots.roc_figure(inp.y, {"fusion": fused, **singles}, scenario)),
        ):
            run.log_figure(name, fig)
            plots.close(fig)
    if not pooled_y:
        raise KdgatError(f"No test scenario of {cfg.dataset} has a window to judge.")
    if undefined_names:
        run.set_tags({UNDEFINED_METRICS_TAG: ",".join(undefined_names)})
    y_all, s_all = np.concatenate(pooled_y), np.concatenate(pooled_score)
    overall = classification_metrics(y_all, s_all >= thr[FUSION], s_all)
    final.update(headline(overall))
    final.update(
        {
            k: overall[k]
            for k in (
                Metric.SPECIFICITY.value,
                Metric.BALANCED_ACCURACY.value,
                Metric.FPR.value,
                Metric.FNR.value,
                Metric.PR_AUC.value,
                Metric.DR_AT_FPR_1E2.value,
                Metric.DR_AT_FPR_1E3.value,
            )
        }
    )
    final = {k: v for k, v in final.items() if not (isinstance(v, float) and math.isnan(v))}
    run.log_final(final)
    run.log_json(
        "metrics.json",
        without_nan(
            {
                "final": final,
                "overall": overall,
                "scenarios": report,
                "undefined_metrics": undefined_names,
                "dataset_notes": notes,
                "decision": {
                    "rule": cfg.eval.threshold,
                    "fpr_budget": cfg.eval.fpr_budget,
                    "thresholds": thr,
                    "validation": val_m,
                },
                prerequisite_tag(Stage.AUTOENCODER): vgae_run,
                prerequisite_tag(Stage.CURRICULUM): gat_run,
                prerequisite_tag(Stage.FUSION): fusion_run,
            }
        ),
    )
    return final
