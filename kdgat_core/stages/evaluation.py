"""Stage 4, evaluation: the chosen VGAE, GAT and fusion policy on every test scenario of the dataset.

Logs, per scenario, every metric of the fused detector (`<scenario>/<metric>`) plus F1 and accuracy of each single
model (`<scenario>/gat_f1`, `<scenario>/vgae_f1`, ...); the headline metrics pool all test windows. Confusion-matrix
and ROC figures per scenario are artifacts.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from kdgat_core.config import Arch, KdgatError, Metric, PipelineConfig, Stage, prerequisite_tag, scenario_metric
from kdgat_core.stages import plots
from kdgat_core.stages.fusion import DECISION, load_fusion, model_outputs
from kdgat_core.stages.metrics import classification_metrics, headline
from kdgat_core.stages.prerequisites import load_run_model, resolve_prerequisite
from kdgat_core.stages.scoring import VGAECalibration, gat_hides_ids

SINGLE_MODEL_METRICS = (Metric.F1, Metric.ACCURACY, Metric.AUC)


def run_evaluation(cfg: PipelineConfig, run: Any, graphs: Any, device: torch.device,
                   tracking_uri: str | None) -> dict[str, float]:
    fusion_run = resolve_prerequisite(cfg, Stage.FUSION, tracking_uri)
    policy, fmeta = load_fusion(fusion_run, tracking_uri)
    # the VGAE and GAT the policy was trained on, unless named explicitly
    vgae_run = cfg.train.autoencoder_run_id or fmeta[prerequisite_tag(Stage.AUTOENCODER)]
    gat_run = cfg.train.curriculum_run_id or fmeta[prerequisite_tag(Stage.CURRICULUM)]
    run.set_tags({prerequisite_tag(Stage.AUTOENCODER): vgae_run, prerequisite_tag(Stage.CURRICULUM): gat_run,
                  prerequisite_tag(Stage.FUSION): fusion_run})
    vgae, vmeta = load_run_model(vgae_run, tracking_uri, Arch.VGAE.value, graphs, device)
    gat, gmeta = load_run_model(gat_run, tracking_uri, Arch.GAT.value, graphs, device)
    cal = VGAECalibration.from_dict(vmeta["calibration"])
    if not graphs.test:
        raise KdgatError(f"Dataset {cfg.dataset} has no test scenarios to evaluate.")

    final: dict[str, float] = {}
    report: dict[str, Any] = {}
    pooled_y, pooled_score = [], []
    for scenario, gs in graphs.test.items():
        inp = model_outputs(vgae, gat, cal, gs, device, cfg.data.window, hide_ids=gat_hides_ids(gmeta))
        fused, alpha = policy.fuse(inp)
        pred = fused >= DECISION
        m = classification_metrics(inp.y, pred, fused)
        singles = {Arch.GAT.value: inp.p_gat, Arch.VGAE.value: inp.s_vgae}
        single_m = {name: classification_metrics(inp.y, s >= DECISION, s) for name, s in singles.items()}
        final.update({scenario_metric(scenario, k): v for k, v in m.items()})
        for name, sm in single_m.items():
            final.update({scenario_metric(scenario, f"{name}_{k}"): sm[str(k)] for k in SINGLE_MODEL_METRICS})
        report[scenario] = {"windows": int(len(inp.y)), "attack_windows": int(inp.y.sum()), "fusion": m,
                            **single_m, "mean_alpha": float(alpha.mean()) if len(alpha) else None}
        pooled_y.append(inp.y)
        pooled_score.append(fused)
        for name, fig in ((f"confusion_{scenario}.png", plots.confusion_matrix_figure(inp.y, pred, f"{cfg.run_name}: {scenario}")),
                          (f"roc_{scenario}.png", plots.roc_figure(inp.y, {"fusion": fused, **singles}, scenario))):
            run.log_figure(name, fig)
            plots.close(fig)
    y_all, s_all = np.concatenate(pooled_y), np.concatenate(pooled_score)
    overall = classification_metrics(y_all, s_all >= DECISION, s_all)
    final.update(headline(overall))
    final.update({k: overall[k] for k in (Metric.SPECIFICITY.value, Metric.BALANCED_ACCURACY.value,
                                          Metric.FPR.value, Metric.FNR.value, Metric.PR_AUC.value,
                                          Metric.DR_AT_FPR_1E2.value, Metric.DR_AT_FPR_1E3.value)})
    run.log_final(final)
    run.log_json("metrics.json", {"final": final, "overall": overall, "scenarios": report,
                                  prerequisite_tag(Stage.AUTOENCODER): vgae_run,
                                  prerequisite_tag(Stage.CURRICULUM): gat_run,
                                  prerequisite_tag(Stage.FUSION): fusion_run})
    return final
