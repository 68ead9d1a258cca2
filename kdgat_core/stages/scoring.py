"""Batched inference over a GraphSet: VGAE anomaly scores and GAT attack probabilities, plus the VGAE calibration.

Score normalisation (`vgae.score_norm = "recording"`): the VGAE's reconstruction errors are vehicle-specific (an
unknown car's every window reconstructs worse), so each error term is turned into a robust z-score against the
calibration part of the window's own recording (its first CALIBRATION_FRACTION of messages, attack-free, as the data
layer's per-vehicle features assume; no labels used), and the window score is the root mean square of those z-scores.
The whole recording's median is no baseline here: attacks cover 28-59% of the windows of hcrl_sa's attack recordings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from kdgat_core.config import KdgatError
from kdgat_core.data.graphset import Indices
from kdgat_core.data.windows import CALIBRATION_FRACTION, OOV_INDEX
from kdgat_core.models import CANGraphGAT, CANGraphVGAE
from kdgat_core.stages.metrics import youden_threshold

EVAL_BATCH = 256
SCORE_NORMS = ("none", "recording")
INFERENCE_IDS = ("keep", "hide")
MAD_TO_STD = 1.4826  # the MAD of a normal distribution times this is its standard deviation
MIN_SPREAD = 1e-3  # floor for a robust spread, so a constant error term cannot divide by zero


@dataclass
class VGAEScores:
    score: np.ndarray  # [G] weighted reconstruction error
    errors: np.ndarray  # [G, 3] feature, id, edge errors
    latent: np.ndarray  # [G, 2] mean |mu|, mean logstd
    normalised: bool = False  # True: errors and latent are z-scores against the recording's calibration part


@torch.no_grad()
def vgae_scores(
    model: CANGraphVGAE,
    graphset: Any,
    device: torch.device,
    indices: Indices | None = None,
    batch_size: int = EVAL_BATCH,
) -> VGAEScores:
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
def gat_logits(
    model: CANGraphGAT,
    graphset: Any,
    device: torch.device,
    indices: Indices | None = None,
    batch_size: int = EVAL_BATCH,
    hide_ids: bool = False,
) -> torch.Tensor:
    """Window logits [G, 2]; `hide_ids`: every CAN id replaced by the out-of-vocabulary index, as id masking does."""
    model.eval()
    out = []
    for b in graphset.batches(batch_size=batch_size, shuffle=False, indices=indices):
        b = b.to(device)
        if hide_ids:
            b.node_id = torch.full_like(b.node_id, OOV_INDEX)
        out.append(model(b).cpu())
    return torch.cat(out) if out else torch.zeros(0, 2)


def calibration_part(sets: list[Any], window: int) -> list[np.ndarray]:
    """Per set, the indices of its windows that lie in the calibration part of their recording.

    A recording's length is its last window's start + `window` over all `sets` (a training recording's validation
    windows are its end, and its calibration part sits in the training split)."""
    length: dict[str, int] = {}
    for gs in sets:
        starts, rec = gs.start.numpy(), gs.recording_index.numpy()
        for i, name in enumerate(gs.recordings):
            m = rec == i
            if m.any():
                length[name] = max(length.get(name, 0), int(starts[m].max()) + window)
    out = []
    for gs in sets:
        limit = np.array([CALIBRATION_FRACTION * length.get(n, 0) for n in gs.recordings])
        rec = gs.recording_index.numpy()
        out.append(np.nonzero(gs.start.numpy() < limit[rec])[0] if len(rec) else np.zeros(0, int))
    return out


def _log_terms(v: VGAEScores) -> np.ndarray:
    """[G, 5]: log feature, id and edge errors, then the two latent statistics (already in log-like units)."""
    return np.concatenate([np.log(np.maximum(v.errors, 1e-12)), v.latent], axis=1)


def robust_baseline(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median and MAD-based spread per column of [n, k] values."""
    med = np.median(values, axis=0)
    spread = np.median(np.abs(values - med), axis=0) * MAD_TO_STD
    return med, np.maximum(spread, MIN_SPREAD)


def normalise_by_recording(
    target: VGAEScores, target_recording: np.ndarray, baselines: dict[int, tuple[np.ndarray, np.ndarray]]
) -> VGAEScores:
    """z-scores of every window's terms against its recording's baseline; score = RMS of the three error z-scores."""
    terms = _log_terms(target)
    z = np.zeros_like(terms)
    for rec, (med, spread) in baselines.items():
        m = target_recording == rec
        z[m] = (terms[m] - med) / spread
    score = np.sqrt((z[:, :3] ** 2).mean(axis=1)) if len(z) else np.zeros(0)
    return VGAEScores(score, z[:, :3], z[:, 3:], normalised=True)


def check_inference_ids(inference_ids: str, id_mask: float) -> None:
    if inference_ids not in INFERENCE_IDS:
        raise KdgatError(f"gat.inference_ids must be one of {', '.join(INFERENCE_IDS)}, got '{inference_ids}'.")
    if inference_ids == "hide" and id_mask <= 0:
        raise KdgatError(
            "gat.inference_ids=hide needs gat.id_mask > 0 (the GAT must learn to judge windows without "
            "their ids); set gat.inference_ids=keep or a positive gat.id_mask."
        )


def gat_hides_ids(meta: dict) -> bool:
    """Whether a GAT run's checkpoint (its meta) judges windows with their ids hidden (older runs: no)."""
    return meta.get("inference_ids", "keep") == "hide"


def check_score_norm(score_norm: str) -> None:
    if score_norm not in SCORE_NORMS:
        raise KdgatError(f"vgae.score_norm must be one of {', '.join(SCORE_NORMS)}, got '{score_norm}'.")


def anomaly_scores(
    model: CANGraphVGAE,
    graphset: Any,
    device: torch.device,
    score_norm: str = "none",
    window: int = 100,
    related: tuple[Any, ...] = (),
    indices: Indices | None = None,
) -> VGAEScores:
    """The VGAE's window scores, normalised per recording if asked. `related`: other sets that may hold the
    calibration part of `graphset`'s recordings (for the validation split: the training split)."""
    check_score_norm(score_norm)
    v = vgae_scores(model, graphset, device, indices=indices)
    if score_norm == "none":
        return v
    sets = [graphset, *related]
    parts = calibration_part(sets, window)
    names = list(graphset.recordings)
    refs: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for gs, idx in zip(sets, parts):
        wanted = np.array([gs.recordings[r] in refs for r in gs.recording_index.numpy()[idx]], dtype=bool)
        idx = idx[wanted] if len(idx) else idx
        if len(idx) == 0:
            continue
        terms = _log_terms(vgae_scores(model, gs, device, indices=torch.from_numpy(idx)))
        rec = gs.recording_index.numpy()[idx]
        for r in np.unique(rec):
            refs[gs.recordings[r]].append(terms[rec == r])
    target_rec = graphset.recording_index.numpy()
    if indices is not None:
        target_rec = target_rec[np.asarray(indices)]
    baselines = {}
    for i, name in enumerate(names):
        ref = np.concatenate(refs[name]) if refs[name] else _log_terms(v)[target_rec == i]
        if len(ref):  # a recording too short for a calibration part falls back to all its windows
            baselines[i] = robust_baseline(ref)
    return normalise_by_recording(v, target_rec, baselines)


def attack_probability(logits: torch.Tensor) -> np.ndarray:
    return torch.softmax(logits.float(), dim=-1)[:, 1].numpy()


@dataclass
class VGAECalibration:
    """Youden threshold on the raw score, and Platt scaling of log(score) into an attack probability."""

    threshold: float
    slope: float
    intercept: float
    score_norm: str = "none"  # how the scores this calibration applies to were normalised (SCORE_NORMS)

    def probability(self, score: np.ndarray) -> np.ndarray:
        z = self.slope * np.log(np.maximum(score, 1e-12)) + self.intercept
        return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))

    def to_dict(self) -> dict[str, float | str]:
        return {
            "threshold": self.threshold,
            "slope": self.slope,
            "intercept": self.intercept,
            "score_norm": self.score_norm,
        }

    @classmethod
    def from_dict(cls, d: dict) -> VGAECalibration:
        return cls(float(d["threshold"]), float(d["slope"]), float(d["intercept"]), str(d.get("score_norm", "none")))

    @classmethod
    def fit(cls, y: np.ndarray, score: np.ndarray, score_norm: str = "none") -> VGAECalibration:
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
                return cls(thr, slope, intercept, score_norm)
        # one class only (or an inverted fit): a unit-width logistic around the threshold
        spread = float(np.std(log_s)) or 1.0
        return cls(thr, 1.0 / spread, -log_thr / spread, score_norm)
