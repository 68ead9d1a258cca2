"""Batched inference over a GraphSet: VGAE anomaly scores and GAT attack probabilities, plus the VGAE calibration."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from kdgat_core.stages.metrics import youden_threshold

EVAL_BATCH = 256


@dataclass
class VGAEScores:
    score: np.ndarray    # [G] weighted reconstruction error
    errors: np.ndarray   # [G, 3] feature, id, edge errors
    latent: np.ndarray   # [G, 2] mean |mu|, mean logstd


@torch.no_grad()
def vgae_scores(model, graphset: Any, device: torch.device, indices=None, batch_size: int = EVAL_BATCH) -> VGAEScores:
    model.eval()
    scores, errors, latent = [], [], []
    for batch in graphset.batches(batch_size=batch_size, shuffle=False, indices=indices):
        batch = batch.to(device)
        out = model(batch)
        err = model.window_errors(batch, out)
        w = err.new_tensor([model.weights["feature"], model.weights["id"], model.weights["edge"]])
        scores.append((err * w).sum(-1).cpu())
        errors.append(err.cpu())
        latent.append(model.latent_stats(batch, out).cpu())
    if not scores:
        return VGAEScores(np.zeros(0), np.zeros((0, 3)), np.zeros((0, 2)))
    return VGAEScores(torch.cat(scores).numpy(), torch.cat(errors).numpy(), torch.cat(latent).numpy())


@torch.no_grad()
def gat_logits(model, graphset: Any, device: torch.device, indices=None, batch_size: int = EVAL_BATCH) -> torch.Tensor:
    model.eval()
    out = [model(b.to(device)).cpu() for b in graphset.batches(batch_size=batch_size, shuffle=False, indices=indices)]
    return torch.cat(out) if out else torch.zeros(0, 2)


def attack_probability(logits: torch.Tensor) -> np.ndarray:
    return torch.softmax(logits.float(), dim=-1)[:, 1].numpy()


@dataclass
class VGAECalibration:
    """Youden threshold on the raw score, and Platt scaling of log(score) into an attack probability."""

    threshold: float
    slope: float
    intercept: float

    def probability(self, score: np.ndarray) -> np.ndarray:
        z = self.slope * np.log(np.maximum(score, 1e-12)) + self.intercept
        return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))

    def to_dict(self) -> dict[str, float]:
        return {"threshold": self.threshold, "slope": self.slope, "intercept": self.intercept}

    @classmethod
    def from_dict(cls, d: dict) -> "VGAECalibration":
        return cls(float(d["threshold"]), float(d["slope"]), float(d["intercept"]))

    @classmethod
    def fit(cls, y: np.ndarray, score: np.ndarray) -> "VGAECalibration":
        thr = youden_threshold(y, score)
        log_s = np.log(np.maximum(score, 1e-12))
        log_thr = float(np.log(max(thr, 1e-12)))
        if len(np.unique(y)) == 2:
            from sklearn.linear_model import LogisticRegression

            lr = LogisticRegression(class_weight="balanced").fit(log_s.reshape(-1, 1), y)
            slope, intercept = float(lr.coef_[0, 0]), float(lr.intercept_[0])
            if slope > 0:
                # keep p = 0.5 exactly at the Youden threshold, so the calibrated score and the threshold agree
                intercept = -slope * log_thr
                return cls(thr, slope, intercept)
        # one class only (or an inverted fit): a unit-width logistic around the threshold
        spread = float(np.std(log_s)) or 1.0
        return cls(thr, 1.0 / spread, -log_thr / spread)
