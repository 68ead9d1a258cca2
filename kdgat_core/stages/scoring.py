"""Batched inference over a GraphSet: VGAE anomaly scores and GAT attack probabilities, plus the VGAE calibration.

Score normalisation (`vgae.score_norm = "recording"`): the VGAE's reconstruction errors are vehicle-specific (an
unknown car's every window reconstructs worse), so each error term is turned into a robust z-score against the
calibration part of the window's own recording (its first CALIBRATION_FRACTION of messages, attack-free, as the data
layer's per-vehicle features assume; no labels used), and the window score is the root mean square of those z-scores.
The whole recording's median is no baseline here: attacks cover 28-59% of the windows of hcrl_sa's attack recordings.

A recording seen whole (a test recording) whose calibration part looks anomalous (its median error well above the
recording's quietest stretch of the same length) is calibrated on that quietest stretch instead, and said so
(CALIBRATION_FALLBACK). The timing score (`timing_scores`) is calibrated the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from kdgat_core.config import KdgatError
from kdgat_core.data.graphset import Indices
from kdgat_core.data.windows import CALIBRATION_FRACTION, NODE_FEATURES, OOV_INDEX
from kdgat_core.models import CANGraphGAT, CANGraphVGAE
from kdgat_core.stages.metrics import f1_threshold, youden_threshold

EVAL_BATCH = 256
SCORE_NORMS = ("none", "recording")
INFERENCE_IDS = ("keep", "hide")
MAD_TO_STD = 1.4826  # the MAD of a normal distribution times this is its standard deviation
MIN_SPREAD = 1e-3  # floor for a robust spread, so a constant error term cannot divide by zero
# a calibration part whose median is this many robust spreads above the recording's quietest stretch of the same
# length looks anomalous: the recording is calibrated on that stretch instead
CALIBRATION_ANOMALY_Z = 3.0
CALIBRATION_FALLBACK = "quietest_stretch"
VGAE_TERMS = ("feature", "id", "edge")


@dataclass
class VGAEScores:
    score: np.ndarray  # [G] weighted reconstruction error
    errors: np.ndarray  # [G, 3] feature, id, edge errors
    latent: np.ndarray  # [G, 2] mean |mu|, mean logstd
    normalised: bool = False  # True: errors and latent are z-scores against the recording's calibration part
    fallback: dict[str, str] | None = None  # recording -> calibration rule, where not its calibration part


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
    """Per set, the indices of its windows that start in the calibration part of their recording: the message range
    the data layer calibrated it on (GraphSet.calibration), else the first CALIBRATION_FRACTION of the recording,
    whose length is its last window's start + `window` over all `sets` (a training recording's validation windows
    are its end, and its calibration part sits in the training split)."""
    length: dict[str, int] = {}
    for gs in sets:
        starts, rec = gs.start.numpy(), gs.recording_index.numpy()
        for i, name in enumerate(gs.recordings):
            m = rec == i
            if m.any():
                length[name] = max(length.get(name, 0), int(starts[m].max()) + window)
    out = []
    for gs in sets:
        cal = getattr(gs, "calibration", {}) or {}
        ranges = [cal.get(n, [0, CALIBRATION_FRACTION * length.get(n, 0)]) for n in gs.recordings]
        lo = np.array([r[0] for r in ranges], dtype=float)
        hi = np.array([r[1] for r in ranges], dtype=float)
        rec = gs.recording_index.numpy()
        start = gs.start.numpy()
        inside = (start >= lo[rec]) & (start < hi[rec]) if len(rec) else np.zeros(0, bool)
        out.append(np.nonzero(inside)[0] if len(rec) else np.zeros(0, int))
    return out


def quietest_stretch(total: np.ndarray, size: int) -> np.ndarray:
    """Positions (in the given time order) of the `size` consecutive windows with the lowest median `total`."""
    n = len(total)
    size = max(1, min(size, n))
    step = max(1, size // 4)
    starts = list(range(0, n - size + 1, step))
    if starts[-1] != n - size:
        starts.append(n - size)
    meds = [np.median(total[a : a + size]) for a in starts]
    a = starts[int(np.argmin(meds))]
    return np.arange(a, a + size)


def recording_baselines(
    terms: np.ndarray,
    target_rec: np.ndarray,
    target_start: np.ndarray,
    names: list[str],
    refs: dict[str, list[np.ndarray]],
    check: bool,
    check_columns: int | None = None,
) -> tuple[dict[int, tuple[np.ndarray, np.ndarray]], dict[str, str]]:
    """Per recording index, the robust baseline of `terms` ([G, k] per target window) from its calibration windows
    (`refs`). With `check` (the target holds whole recordings): a calibration part whose median of the summed first
    `check_columns` terms lies CALIBRATION_ANOMALY_Z robust spreads above the recording's quietest stretch of as many
    windows is replaced by that stretch. Returns the baselines and the fallbacks taken (recording -> rule)."""
    baselines, fallback = {}, {}
    cols = slice(0, check_columns)
    for i, name in enumerate(names):
        own = np.nonzero(target_rec == i)[0]
        ref = np.concatenate(refs[name]) if refs.get(name) else terms[own]
        if not len(ref):
            continue  # a recording too short for any window
        if check and len(own) >= 2 * len(ref) and len(ref) >= 2:
            in_time = own[np.argsort(target_start[own], kind="stable")]
            quiet = in_time[quietest_stretch(terms[in_time, cols].sum(axis=1), len(ref))]
            q_total = terms[quiet, cols].sum(axis=1)
            q_med = float(np.median(q_total))
            spread = max(float(np.median(np.abs(q_total - q_med))) * MAD_TO_STD, MIN_SPREAD)
            if float(np.median(ref[:, cols].sum(axis=1))) > q_med + CALIBRATION_ANOMALY_Z * spread:
                ref = terms[quiet]
                fallback[name] = CALIBRATION_FALLBACK
        baselines[i] = robust_baseline(ref)
    return baselines, fallback


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
    z = zscores(_log_terms(target), target_recording, baselines)
    return VGAEScores(weighted_rms(z[:, :3]), z[:, :3], z[:, 3:], normalised=True)


def zscores(
    terms: np.ndarray, target_recording: np.ndarray, baselines: dict[int, tuple[np.ndarray, np.ndarray]]
) -> np.ndarray:
    z = np.zeros_like(terms)
    for rec, (med, spread) in baselines.items():
        m = target_recording == rec
        z[m] = (terms[m] - med) / spread
    return z


def weighted_rms(z: np.ndarray, weights: tuple[float, ...] | list[float] | None = None) -> np.ndarray:
    """sqrt(sum w_k z_k^2 / sum w_k) per row: the VGAE's window score from its error z-scores (`vgae.term_weights`
    chosen on validation by the fusion stage; default all 1)."""
    if not len(z):
        return np.zeros(0)
    w = np.ones(z.shape[1]) if weights is None else np.asarray(weights, dtype=float)
    return np.sqrt((z**2 * w).sum(axis=1) / max(float(w.sum()), 1e-12))


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


def _calibration_refs(
    graphset: Any, related: tuple[Any, ...], window: int, terms_of: Any
) -> dict[str, list[np.ndarray]]:
    """Per recording of `graphset`, the terms (`terms_of(gs, idx)`) of its calibration windows in any of the sets."""
    sets = [graphset, *related]
    names = list(graphset.recordings)
    refs: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for gs, idx in zip(sets, calibration_part(sets, window)):
        wanted = np.array([gs.recordings[r] in refs for r in gs.recording_index.numpy()[idx]], dtype=bool)
        idx = idx[wanted] if len(idx) else idx
        if len(idx) == 0:
            continue
        terms = terms_of(gs, idx)
        rec = gs.recording_index.numpy()[idx]
        for r in np.unique(rec):
            refs[gs.recordings[r]].append(terms[rec == r])
    return refs


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
    calibration part of `graphset`'s recordings (for the validation split: the training split). Without `related`
    the set holds whole recordings, and a calibration part that looks anomalous is replaced (recording_baselines)."""
    check_score_norm(score_norm)
    v = vgae_scores(model, graphset, device, indices=indices)
    if score_norm == "none":
        return v

    def terms_of(gs: Any, idx: np.ndarray) -> np.ndarray:
        if gs is graphset and indices is None:  # already scored
            return _log_terms(v)[idx]
        return _log_terms(vgae_scores(model, gs, device, indices=torch.from_numpy(idx)))

    refs = _calibration_refs(graphset, related, window, terms_of)
    target_rec = graphset.recording_index.numpy()
    target_start = graphset.start.numpy()
    if indices is not None:
        target_rec = target_rec[np.asarray(indices)]
        target_start = target_start[np.asarray(indices)]
    baselines, fallback = recording_baselines(
        _log_terms(v), target_rec, target_start, list(graphset.recordings), refs, check=not related, check_columns=3
    )
    out = normalise_by_recording(v, target_rec, baselines)
    out.fallback = fallback
    return out


# --- the per-id timing score ------------------------------------------------------------------------------------------
_COUNT, _REL_MEAN, _REL_STD, _SHARE = (
    NODE_FEATURES.index(f) for f in ("count_frac", "gap_rel_mean", "gap_rel_std", "id_share")
)
REL_UNITS = 10.0  # gap_rel_mean and gap_rel_std are log2 ratios / 10; an id the calibration part never sent counts
# as the clip value (its period is unknown: infinitely off), else a fuzzed window would look calmer than a normal one


@dataclass
class TimingScores:
    raw: np.ndarray  # [G] message-weighted mean over ids of |mean log2 ratio| + its std (inter-arrival vs calibration)
    z: np.ndarray  # [G] robust z-score against the recording's calibration windows
    score: np.ndarray  # [G] softplus(z): positive and monotone, what the Platt calibration takes
    fallback: dict[str, str]  # recording -> calibration rule, where not its calibration part


def timing_raw(graphset: Any) -> np.ndarray:
    """Per window: sum over its ids of count_frac x (|gap_rel_mean| + gap_rel_std), in log2 units (REL_UNITS for an id
    the calibration part never sent). Each id's inter-arrival times against its calibration period (the node
    features): an id sent faster or slower than its own usual period, or irregularly, raises it (a replayed id, a
    delayed bus, a masquerading sender's phase)."""
    x = graphset.x.numpy()
    ptr = graphset.node_ptr.numpy()
    g = len(ptr) - 1
    if g <= 0:
        return np.zeros(0)
    off = np.where(x[:, _SHARE] > 0, np.abs(x[:, _REL_MEAN]) + x[:, _REL_STD], 1.0)
    per_node = x[:, _COUNT] * off * REL_UNITS
    return np.bincount(np.repeat(np.arange(g), np.diff(ptr)), weights=per_node, minlength=g)


def timing_scores(graphset: Any, window: int = 100, related: tuple[Any, ...] = ()) -> TimingScores:
    """The unsupervised timing score, z-scored per recording like the VGAE's (`related`: see anomaly_scores)."""
    raw = timing_raw(graphset)
    refs = _calibration_refs(graphset, related, window, lambda gs, idx: timing_raw(gs)[idx][:, None])
    rec, start = graphset.recording_index.numpy(), graphset.start.numpy()
    baselines, fallback = recording_baselines(
        raw[:, None], rec, start, list(graphset.recordings), refs, check=not related
    )
    z = zscores(raw[:, None], rec, baselines)[:, 0] if len(raw) else np.zeros(0)
    return TimingScores(raw, z, np.logaddexp(0.0, z), fallback)


def attack_probability(logits: torch.Tensor) -> np.ndarray:
    return torch.softmax(logits.float(), dim=-1)[:, 1].numpy()


@dataclass
class VGAECalibration:
    """Youden threshold on the raw score, and Platt scaling of log(score) into an attack probability."""

    threshold: float
    slope: float
    intercept: float
    score_norm: str = "none"  # how the scores this calibration applies to were normalised (SCORE_NORMS)
    term_weights: list[float] | None = None  # the VGAE's (feature, id, edge) weights in the RMS; None: all 1

    def probability(self, score: np.ndarray) -> np.ndarray:
        z = self.slope * np.log(np.maximum(score, 1e-12)) + self.intercept
        return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "threshold": self.threshold,
            "slope": self.slope,
            "intercept": self.intercept,
            "score_norm": self.score_norm,
        }
        if self.term_weights is not None:
            out["term_weights"] = [float(w) for w in self.term_weights]
        return out

    @classmethod
    def from_dict(cls, d: dict) -> VGAECalibration:
        w = d.get("term_weights")
        return cls(
            float(d["threshold"]),
            float(d["slope"]),
            float(d["intercept"]),
            str(d.get("score_norm", "none")),
            None if w is None else [float(a) for a in w],
        )

    def window_score(self, v: VGAEScores) -> np.ndarray:
        """The score this calibration applies to: the RMS of the error z-scores with its term weights."""
        if self.term_weights is None or not v.normalised:
            return v.score
        return weighted_rms(v.errors, self.term_weights)

    @classmethod
    def fit(
        cls,
        y: np.ndarray,
        score: np.ndarray,
        score_norm: str = "none",
        threshold_rule: str = "youden",
        max_fpr: float = 1.0,
        se_rule: float = 0.0,
        seed: int = 0,
    ) -> VGAECalibration:
        """`threshold_rule`: "youden", or "f1" (the best F1 flagging at most `max_fpr` of the normal windows; with
        `se_rule` > 0 the highest threshold within that many bootstrap standard errors of it: metrics.f1_threshold)."""
        thr = (
            youden_threshold(y, score)
            if threshold_rule == "youden"
            else f1_threshold(y, score, max_fpr, se_rule=se_rule, seed=seed)
        )
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
