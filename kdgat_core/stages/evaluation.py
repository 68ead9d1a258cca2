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

from typing import Any

import numpy as np
import torch

from kdgat_core.config import Arch, KdgatError, Metric, PipelineConfig, Stage, prerequisite_tag, scenario_metric
from kdgat_core.models import CANGraphGAT, CANGraphVGAE
from kdgat_core.stages import plots
from kdgat_core.stages.fusion import DECISION, load_fusion, model_outputs
from kdgat_core.stages.metrics import classification_metrics, fpr_budget_threshold, headline
from kdgat_core.stages.prerequisites import load_run_model, resolve_prerequisite
from kdgat_core.stages.scoring import VGAECalibration, gat_hides_ids

FUSION = "fusion"
SINGLE_MODEL_METRICS = (Metric.F1, Metric.ACCURACY, Metric.AUC)
THRESHOLD_RULES = ("fixed", "fpr_budget")


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
    cal = VGAECalibration.from_dict(vmeta["calibration"])
    if not graphs.test:
        raise KdgatError(f"Dataset {cfg.dataset} has no test scenarios to evaluate.")

    hide_ids = gat_hides_ids(gmeta)
    val = model_outputs(vgae, gat, cal, graphs.val, device, cfg.data.window, related=(graphs.train,), hide_ids=hide_ids)
    val_fused, _ = policy.fuse(val)
    # float64 throughout, so a threshold just above a float32 score is not rounded back onto it
    val_scores = {
        name: np.asarray(s, dtype=np.float64)
        for name, s in ((FUSION, val_fused), (Arch.GAT.value, val.p_gat), (Arch.VGAE.value, val.s_vgae))
    }
    thr = decision_thresholds(cfg.eval.threshold, cfg.eval.fpr_budget, val.y, val_scores)
    val_m = {name: classification_metrics(val.y, s >= thr[name], s) for name, s in val_scores.items()}
    final: dict[str, float] = {Metric.THRESHOLD.value: thr[FUSION]}
    for name in (Arch.GAT.value, Arch.VGAE.value):
        final[f"{name}_{Metric.THRESHOLD}"] = thr[name]
    for name, m in val_m.items():
        prefix = "" if name == FUSION else f"{name}_"
        final[f"{prefix}{Metric.VAL_F1}"] = m[Metric.F1.value]
        final[f"{prefix}val_{Metric.FPR}"] = m[Metric.FPR.value]
    report: dict[str, Any] = {}
    pooled_y, pooled_score = [], []
    for scenario, gs in graphs.test.items():
        inp = model_outputs(vgae, gat, cal, gs, device, cfg.data.window, hide_ids=hide_ids)
        fused, alpha = policy.fuse(inp)
        fused = np.asarray(fused, dtype=np.float64)
        pred = fused >= thr[FUSION]
        m = classification_metrics(inp.y, pred, fused)
        singles = {
            Arch.GAT.value: np.asarray(inp.p_gat, np.float64),
            Arch.VGAE.value: np.asarray(inp.s_vgae, np.float64),
        }
        single_m = {name: classification_metrics(inp.y, s >= thr[name], s) for name, s in singles.items()}
        final.update({scenario_metric(scenario, k): v for k, v in m.items()})
        for name, sm in single_m.items():
            final.update({scenario_metric(scenario, f"{name}_{k}"): sm[str(k)] for k in SINGLE_MODEL_METRICS})
        report[scenario] = {
            "windows": int(len(inp.y)),
            "attack_windows": int(inp.y.sum()),
            "fusion": m,
            **single_m,
            "mean_alpha": float(alpha.mean()) if len(alpha) else None,
        }
        pooled_y.append(inp.y)
        pooled_score.append(fused)
        for name, fig in (
            (f"confusion_{scenario}.png", plots.confusion_matrix_figure(inp.y, pred, f"{cfg.run_name}: {scenario}")),
            (f"roc_{scenario}.png", plots.roc_figure(inp.y, {"fusion": fused, **singles}, scenario)),
        ):
            run.log_figure(name, fig)
            plots.close(fig)
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
    run.log_final(final)
    run.log_json(
        "metrics.json",
        {
            "final": final,
            "overall": overall,
            "scenarios": report,
            "decision": {
                "rule": cfg.eval.threshold,
                "fpr_budget": cfg.eval.fpr_budget,
                "thresholds": thr,
                "validation": val_m,
            },
            prerequisite_tag(Stage.AUTOENCODER): vgae_run,
            prerequisite_tag(Stage.CURRICULUM): gat_run,
            prerequisite_tag(Stage.FUSION): fusion_run,
        },
    )
    return final
