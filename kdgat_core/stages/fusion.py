"""Stage 3, fusion: a DQN picks, per window, the weights of the calibrated inputs (the GAT's p_gat, the VGAE's s_vgae
and, with `dqn.timing_input`, the per-id timing score's s_timing); with two inputs that is alpha * p_gat +
(1 - alpha) * s_vgae.

Validation here is the validation split plus synthetic subtle attacks injected into its tails
(kdgat_core.data.injection): the VGAE's term weights and the thresholds and Platt calibrations of the VGAE and timing
scores are chosen on its fit half, so the decisions meet attacks that are not floods. Fixed policies (one weight vector
for every window, or the max of the inputs, an OR of the detectors) compete with the Q-network on the check half; the
deployed fusion is then compared with every single input on the whole validation and replaced by the best single
input if that one is better, so fusion never scores below its best input on validation.

Each window is one decision, so this is a contextual bandit: the Q-network regresses the reward of the chosen alpha
(no bootstrapping from a made-up next state). Experience goes through a replay buffer; actions are chosen
epsilon-greedily by a target network that is synced every `dqn.target_update` steps (a stable behaviour policy);
epsilon decays per step. The DQN learns on one half of the validation windows (the models never trained on them)
and is judged on the other half against one alpha for every window (the best on the first half; alpha 0 and 1 are
the single models): the better of the two is deployed (tag `fusion_policy`), and whether it beat the best single
model on that half is the tag `fusion_beats_best_single`.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from kdgat_core.config import (
    FUSION_BEATS_BEST_TAG,
    FUSION_POLICY_TAG,
    TIMING_SCORE,
    Arch,
    KdgatError,
    Metric,
    PipelineConfig,
    Stage,
    bool_tag,
    prerequisite_tag,
)
from kdgat_core.models import CANGraphGAT, CANGraphVGAE, QNetwork, count_parameters
from kdgat_core.stages import plots
from kdgat_core.stages.metrics import classification_metrics, f1_standard_error, headline
from kdgat_core.stages.prerequisites import checkpoint_payload, load_run_model, resolve_prerequisite
from kdgat_core.stages.scoring import (
    TimingScores,
    VGAECalibration,
    VGAEScores,
    anomaly_scores,
    attack_probability,
    gat_hides_ids,
    gat_logits,
    timing_scores,
    weighted_rms,
)
from kdgat_core.stages.training_loop import CHECKPOINT_FILE, EpochReport, fit, save_checkpoint, seed_everything

# the VGAE terms are log errors and raw latent statistics, or their z-scores under vgae.score_norm = "recording"
STATE_FEATURES = (
    "p_gat",
    "gat_confidence",
    "gat_entropy",
    "s_vgae",
    "feature_error",
    "id_error",
    "edge_error",
    "latent_mu",
    "latent_logstd",
    "agreement",
)
TIMING_STATE_FEATURES = ("s_timing", "timing_z")
DECISION = 0.5
MAX_RULE = "max"  # a fixed policy: the largest calibrated input (an OR of the detectors at their thresholds)
# the VGAE's (feature, id, edge) weights in its RMS score, chosen by validation AUC on the fit half
TERM_WEIGHT_CANDIDATES = ((1, 1, 1), (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (1, 0, 1), (0, 1, 1))
INPUTS_2 = (Arch.GAT.value, Arch.VGAE.value)
INPUTS_3 = (Arch.GAT.value, Arch.VGAE.value, TIMING_SCORE)
INJECTED = "injected"  # the synthetic subtle attacks' part of the validation figures


def fusion_state(
    p_gat: np.ndarray,
    vgae: VGAEScores,
    cal: VGAECalibration,
    timing: TimingScores | None = None,
    timing_cal: VGAECalibration | None = None,
) -> np.ndarray:
    """Per-window state [G, len(STATE_FEATURES) (+ 2 with the timing score)] from the models' outputs."""
    p = np.clip(p_gat, 1e-6, 1 - 1e-6)
    s = cal.probability(cal.window_score(vgae))
    entropy = -(p * np.log(p) + (1 - p) * np.log(1 - p))
    errors = vgae.errors if vgae.normalised else np.log(np.maximum(vgae.errors, 1e-12))
    cols = [p, np.abs(2 * p - 1), entropy, s, *errors.T, *vgae.latent.T, 1 - np.abs(p - s)]
    if timing is not None and timing_cal is not None:
        cols += [timing_cal.probability(timing.score), timing.z]
    return np.stack(cols, axis=1).astype(np.float32)


def weight_grid(k: int, steps: int) -> np.ndarray:
    """Every weight vector of k inputs on the simplex with step 1 / (steps - 1); row 0..: GAT weight descending
    last. For k = 2 these are (alpha, 1 - alpha) for alpha = linspace(0, 1, steps)."""
    n = steps - 1
    if k == 2:
        a = np.linspace(0, 1, steps)
        return np.stack([a, 1 - a], axis=1).astype(np.float32)
    rows = [(i, j, n - i - j) for i in range(n + 1) for j in range(n + 1 - i)]
    return (np.array(rows, dtype=np.float32) / n).astype(np.float32)


# fused_score runs on numpy arrays (evaluation) and on tensors (the bandit's training loop)
ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def fused_score(alpha: ArrayT | float, p_gat: ArrayT, s_vgae: ArrayT) -> ArrayT:
    return alpha * p_gat + (1 - alpha) * s_vgae


def bandit_reward(fused: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """+1 for a correct fused decision, -1 for a wrong one; a small margin term prefers confident right answers."""
    correct = ((fused >= DECISION).long() == y).float()
    return (2 * correct - 1) + 0.1 * (1 - 2 * (fused - y.float()).abs())


@dataclasses.dataclass
class FusionInputs:
    state: np.ndarray  # [G, D] unnormalised
    p_gat: np.ndarray
    s_vgae: np.ndarray
    y: np.ndarray
    s_timing: np.ndarray | None = None

    def scores(self, inputs: tuple[str, ...] = INPUTS_2) -> np.ndarray:
        """[G, len(inputs)] calibrated input scores, in `inputs` order."""
        cols = {Arch.GAT.value: self.p_gat, Arch.VGAE.value: self.s_vgae, TIMING_SCORE: self.s_timing}
        return np.stack([np.asarray(cols[i], dtype=np.float32) for i in inputs], axis=1)

    def subset(self, idx: np.ndarray) -> FusionInputs:
        t = None if self.s_timing is None else self.s_timing[idx]
        return FusionInputs(self.state[idx], self.p_gat[idx], self.s_vgae[idx], self.y[idx], t)


def fixed_fuse(policy: list[float] | str, scores: np.ndarray) -> np.ndarray:
    """A fixed policy on [G, K] scores: one weight vector for every window, or MAX_RULE."""
    if isinstance(policy, str):
        return scores.max(axis=1) if len(scores) else np.zeros(0, np.float32)
    return scores @ np.asarray(policy, dtype=np.float32)


def model_outputs(
    vgae: CANGraphVGAE,
    gat: CANGraphGAT,
    cal: VGAECalibration,
    graphset: Any,
    device: torch.device,
    window: int,
    related: tuple[Any, ...] = (),
    hide_ids: bool = False,
    timing_cal: VGAECalibration | None = None,
    fallback: dict[str, dict[str, str]] | None = None,
) -> FusionInputs:
    """The models on `graphset`: the VGAE scored as its calibration says (`related`: see scoring.anomaly_scores),
    the GAT with or without the windows' ids as its run says (scoring.gat_hides_ids), and with `timing_cal` the
    timing score. `fallback` collects the recordings whose calibration part looked anomalous, per score."""
    v = anomaly_scores(vgae, graphset, device, cal.score_norm, window, related)
    p = attack_probability(gat_logits(gat, graphset, device, hide_ids=hide_ids))
    t = timing_scores(graphset, window, related) if timing_cal is not None else None
    if fallback is not None:
        fallback.setdefault(Arch.VGAE.value, {}).update(v.fallback or {})
        if t is not None:
            fallback.setdefault(TIMING_SCORE, {}).update(t.fallback)
    return FusionInputs(
        fusion_state(p, v, cal, t, timing_cal),
        p,
        cal.probability(cal.window_score(v)),
        graphset.y.numpy(),
        None if t is None or timing_cal is None else timing_cal.probability(t.score),
    )


class FusionPolicy:
    """A trained Q-network plus what it needs to act: the action weights, the inputs and the state normalisation.
    `fixed`: a weight vector or MAX_RULE, set when a fixed policy did better on held-out validation than the
    Q-network (`fixed_alpha`: the two-input form, alpha for the GAT)."""

    def __init__(
        self,
        q: torch.nn.Module | None,  # None only for a fixed policy (tests)
        alphas: np.ndarray,
        mean: np.ndarray,
        std: np.ndarray,
        fixed_alpha: float | None = None,
        weights: np.ndarray | None = None,
        inputs: tuple[str, ...] = INPUTS_2,
        fixed: list[float] | str | None = None,
    ):
        self.q, self.alphas, self.mean, self.std, self.fixed_alpha = q, alphas, mean, std, fixed_alpha
        self.inputs = tuple(inputs)
        self.weights = weights if weights is not None else np.stack([alphas, 1 - alphas], axis=1).astype(np.float32)
        if fixed is None and fixed_alpha is not None:
            fixed = [fixed_alpha, 1 - fixed_alpha]
        self.fixed = fixed

    @torch.no_grad()
    def choose(self, state: np.ndarray) -> np.ndarray:
        """Index of the greedy action per window."""
        if self.q is None:
            raise KdgatError("This fusion policy has no Q-network; it can only apply its fixed policy.")
        self.q.eval()
        x = torch.from_numpy((state - self.mean) / self.std).float()
        return self.q(x).argmax(-1).numpy() if len(x) else np.zeros(0, dtype=int)

    def fuse(self, inp: FusionInputs) -> tuple[np.ndarray, np.ndarray]:
        """Fused attack score and the GAT's weight per window (NaN under MAX_RULE)."""
        scores = inp.scores(self.inputs)
        if self.fixed is not None:
            fused = fixed_fuse(self.fixed, scores)
            w = np.nan if isinstance(self.fixed, str) else self.fixed[0]
            return fused, np.full(len(scores), w, dtype=np.float32)
        w = self.weights[self.choose(inp.state)]
        return (w * scores).sum(axis=1), w[:, 0]


def load_fusion(run_id: str, tracking_uri: str | None, device: torch.device | str = "cpu") -> tuple[FusionPolicy, dict]:
    q, meta = load_run_model(run_id, tracking_uri, QNetwork, device=device)
    fixed = meta.get("fixed")
    policy = FusionPolicy(
        q.cpu(),
        np.asarray(meta["alphas"], dtype=np.float32),
        np.asarray(meta["state_mean"], dtype=np.float32),
        np.asarray(meta["state_std"], dtype=np.float32),
        None if meta.get("fixed_alpha") is None else float(meta["fixed_alpha"]),
        weights=None if meta.get("weights") is None else np.asarray(meta["weights"], dtype=np.float32),
        inputs=tuple(meta.get("inputs", INPUTS_2)),
        fixed=fixed if isinstance(fixed, str) or fixed is None else [float(w) for w in fixed],
    )
    return policy, meta


class BanditTrainer:
    """The DQN as a contextual bandit over fixed windows: replay buffer, target network, decaying epsilon."""

    def __init__(
        self,
        states: torch.Tensor,
        p_gat: torch.Tensor,
        s_vgae: torch.Tensor,
        y: torch.Tensor,
        d: Any,
        train: Any,
        gen: torch.Generator,
        device: torch.device | str = "cpu",
        scores: torch.Tensor | None = None,
        weights: torch.Tensor | None = None,
    ):
        """`scores` [G, K] and action `weights` [A, K] generalise the two-input (p_gat, s_vgae) x alpha grid."""
        self.states, self.p_gat, self.s_vgae, self.y = states, p_gat, s_vgae, y
        self.d, self.gen, self.device = d, gen, device
        self.alphas = torch.linspace(0, 1, d.num_alphas)
        self.scores = scores if scores is not None else torch.stack([p_gat, s_vgae], dim=1)
        self.weights = weights if weights is not None else torch.stack([self.alphas, 1 - self.alphas], dim=1)
        self.num_actions = int(self.weights.shape[0])
        self.q = QNetwork(states.shape[1], d.hidden, d.layers, self.num_actions).to(device)
        self.target = copy.deepcopy(self.q).eval()
        self.optimizer = torch.optim.Adam(self.q.parameters(), lr=train.lr, weight_decay=train.weight_decay)
        cap = d.buffer_size
        self.buf_s = torch.zeros(cap, states.shape[1])
        self.buf_a = torch.zeros(cap, dtype=torch.long)
        self.buf_r = torch.zeros(cap)
        self.filled = self.pos = self.steps = 0
        self.epsilon = d.epsilon_start

    def fused(self, action: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return (self.weights[action] * self.scores[idx]).sum(-1)

    def episode(self, indices: torch.Tensor) -> float:
        """One pass over `indices` in shuffled chunks: act, store, learn from a replay sample. Mean loss."""
        d, q = self.d, self.q
        q.train()
        losses = []
        order = indices[torch.randperm(len(indices), generator=self.gen)]
        for chunk in order.split(d.batch_size):
            s = self.states[chunk]
            with torch.no_grad():
                greedy = self.target(s.to(self.device)).argmax(-1).cpu()
            explore = torch.rand(len(chunk), generator=self.gen) < self.epsilon
            random = torch.randint(0, self.num_actions, (len(chunk),), generator=self.gen)
            action = torch.where(explore, random, greedy)
            reward = bandit_reward(self.fused(action, chunk), self.y[chunk])
            slots = (self.pos + torch.arange(len(chunk))) % d.buffer_size
            self.buf_s[slots], self.buf_a[slots], self.buf_r[slots] = s, action, reward
            self.pos = int(slots[-1]) + 1
            self.filled = min(d.buffer_size, self.filled + len(chunk))
            sample = torch.randint(0, self.filled, (d.batch_size,), generator=self.gen)
            pred = q(self.buf_s[sample].to(self.device)).gather(1, self.buf_a[sample].to(self.device)[:, None])
            loss = F.smooth_l1_loss(pred.squeeze(1), self.buf_r[sample].to(self.device))
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            losses.append(loss.item())
            self.steps += 1
            if self.steps % d.target_update == 0:
                self.target.load_state_dict(q.state_dict())
            self.epsilon = max(d.epsilon_end, self.epsilon * d.epsilon_decay)
        self.target.load_state_dict(q.state_dict())  # the next episode explores around what was just learned
        return float(np.mean(losses)) if losses else 0.0

    @torch.no_grad()
    def evaluate(self, indices: torch.Tensor) -> tuple[float, np.ndarray, np.ndarray]:
        """Greedy policy on `indices`: Q-regression loss, fused scores, the GAT's weight per window."""
        self.q.eval()
        qs = self.q(self.states[indices].to(self.device)).cpu()
        action = qs.argmax(-1)
        fused = self.fused(action, indices)
        reward = bandit_reward(fused, self.y[indices])
        loss = float(F.smooth_l1_loss(qs.gather(1, action[:, None]).squeeze(1), reward))
        return loss, fused.numpy(), self.weights[action][:, 0].numpy()


def best_fixed_alpha(alphas: np.ndarray, p_gat: np.ndarray, s_vgae: np.ndarray, y: np.ndarray) -> float:
    """The alpha with the best F1 when used for every window; ties go to the alpha nearest 0.5 (the most even
    blend: when validation cannot tell the models apart, neither is trusted alone on data unlike it)."""
    from sklearn.metrics import f1_score

    f1 = np.array([f1_score(y, fused_score(a, p_gat, s_vgae) >= DECISION, zero_division=0) for a in alphas])
    tied = np.nonzero(f1 >= np.nanmax(f1) - 1e-12)[0]
    return float(alphas[tied[np.argmin(np.abs(alphas[tied] - 0.5))]])


def choose_deployment(
    alphas: np.ndarray, val: FusionInputs, fit_idx: np.ndarray, check_idx: np.ndarray, bandit_fused: np.ndarray
) -> tuple[float, bool]:
    """(best fixed alpha on the fit half, whether to deploy it): the Q-network is deployed only if its fused F1 on
    the check half beats that fixed alpha's (ties go to the simpler fixed alpha)."""
    from sklearn.metrics import f1_score

    fixed = best_fixed_alpha(alphas, val.p_gat[fit_idx], val.s_vgae[fit_idx], val.y[fit_idx])
    yc = val.y[check_idx]
    fixed_f1 = f1_score(
        yc, fused_score(fixed, val.p_gat[check_idx], val.s_vgae[check_idx]) >= DECISION, zero_division=0
    )
    return fixed, bool(fixed_f1 >= f1_score(yc, bandit_fused >= DECISION, zero_division=0))


def split_halves(n: int, y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified random halves of the validation windows: the DQN fits on the first, is judged on the second."""
    rng = np.random.default_rng(seed)
    fit_idx, check_idx = [], []
    for label in np.unique(y):
        idx = rng.permutation(np.nonzero(y == label)[0])
        half = (len(idx) + 1) // 2
        fit_idx.append(idx[:half])
        check_idx.append(idx[half:])
    return np.sort(np.concatenate(fit_idx)) if fit_idx else np.zeros(0, int), np.sort(
        np.concatenate(check_idx)
    ) if check_idx else np.zeros(0, int)


def best_fixed_policy(weights: np.ndarray, scores: np.ndarray, y: np.ndarray) -> list[float] | str:
    """The fixed policy with the best F1 on (scores, y): a weight vector of the grid (ties go to the most even one,
    as best_fixed_alpha's), or MAX_RULE when it is strictly better than every vector."""
    from sklearn.metrics import f1_score

    f1 = np.array([f1_score(y, scores @ w >= DECISION, zero_division=0) for w in weights])
    tied = np.nonzero(f1 >= np.nanmax(f1) - 1e-12)[0]
    best = weights[tied[np.argmin(np.abs(weights[tied] - 1.0 / weights.shape[1]).max(axis=1))]]
    if f1_score(y, fixed_fuse(MAX_RULE, scores) >= DECISION, zero_division=0) > f1.max() + 1e-12:
        return MAX_RULE
    return [float(w) for w in best]


def policy_name(policy: list[float] | str | None, inputs: tuple[str, ...]) -> str:
    """The fusion_policy tag: bandit, fixed_alpha=<a> (two inputs), fixed=<w1>/<w2>/<w3>, max, single=<input>."""
    if policy is None:
        return "bandit"
    if isinstance(policy, str):
        return policy
    if len(inputs) == 2:
        return f"fixed_alpha={policy[0]:.2f}"
    return "fixed=" + "/".join(f"{w:.2f}" for w in policy)


def concat_inputs(parts: list[FusionInputs]) -> FusionInputs:
    timing = None if any(p.s_timing is None for p in parts) else np.concatenate([p.s_timing for p in parts])
    return FusionInputs(
        np.concatenate([p.state for p in parts]),
        np.concatenate([p.p_gat for p in parts]),
        np.concatenate([p.s_vgae for p in parts]),
        np.concatenate([p.y for p in parts]),
        timing,
    )


def validation_parts(graphs: Any) -> list[tuple[Any, np.ndarray]]:
    """The validation split and, when the data layer injected them, the synthetic subtle attacks' windows, each with
    its family code per window (0: the validation split's own windows)."""
    parts = [(graphs.val, np.zeros(len(graphs.val), np.int64))]
    inj = getattr(graphs, "val_injected", None)
    if inj is not None and len(inj):
        parts.append((inj, np.asarray(graphs.val_injected_family, np.int64)))
    return parts


def _concat_vgae(parts: list[VGAEScores]) -> VGAEScores:
    return VGAEScores(
        np.concatenate([v.score for v in parts]),
        np.concatenate([v.errors for v in parts]),
        np.concatenate([v.latent for v in parts]),
        normalised=all(v.normalised for v in parts),
    )


def _concat_timing(parts: list[TimingScores]) -> TimingScores:
    return TimingScores(
        np.concatenate([t.raw for t in parts]),
        np.concatenate([t.z for t in parts]),
        np.concatenate([t.score for t in parts]),
        {k: v for t in parts for k, v in t.fallback.items()},
    )


def choose_term_weights(y: np.ndarray, errors: np.ndarray) -> tuple[list[float], dict[str, float]]:
    """The VGAE's (feature, id, edge) weights with the best validation AUC of the RMS score (ties: the first)."""
    from sklearn.metrics import roc_auc_score

    aucs = {}
    for w in TERM_WEIGHT_CANDIDATES:
        aucs["/".join(map(str, w))] = (
            float(roc_auc_score(y, weighted_rms(errors, w))) if len(np.unique(y)) == 2 else 0.5
        )
    best = max(aucs, key=lambda k: aucs[k])
    return [float(a) for a in best.split("/")], aucs


def family_figures(y: np.ndarray, family: np.ndarray, detectors: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Per detector (decision at DECISION): FPR on normal windows and recall on the validation split's own attacks and
    on each injected family: which kind of attack each input catches."""
    from kdgat_core.data.injection import FAMILIES

    groups = {"normal_fpr": (y == 0) & (family == 0), "known_attacks": (y == 1) & (family == 0)}
    groups.update({f: family == i + 1 for i, f in enumerate(FAMILIES)})
    out: dict[str, dict[str, float]] = {}
    for name, score in detectors.items():
        out[name] = {g: float((score[m] >= DECISION).mean()) if m.any() else float("nan") for g, m in groups.items()}
    return out


def single_input_instead(
    y: np.ndarray, fused: np.ndarray, scores: np.ndarray, se_rule: float = 0.0, seed: int = 0
) -> int | None:
    """The guard on the whole validation: the index of the best single input (column of `scores`) when the fused
    detector's F1 does not beat it by more than `se_rule` bootstrap standard errors, else None (keep the fusion).
    A fusion that is only as good as one input, or better by a window or two, is that input plus noise: on data
    unlike validation the extra inputs' false alarms are all it adds (the one-standard-error rule's parsimony)."""
    from sklearn.metrics import f1_score

    if not scores.shape[1]:
        return None
    single_f1 = [f1_score(y, scores[:, k] >= DECISION, zero_division=0) for k in range(scores.shape[1])]
    best_k = int(np.argmax(single_f1))
    pred = fused >= DECISION
    margin = se_rule * f1_standard_error(y, pred, seed) if se_rule > 0 else 0.0
    if f1_score(y, pred, zero_division=0) < single_f1[best_k] + margin:
        return best_k
    return None


def run_fusion(
    cfg: PipelineConfig, run: Any, graphs: Any, device: torch.device, tracking_uri: str | None
) -> dict[str, float]:
    d = cfg.dqn
    if d.gamma != 0.0:
        raise KdgatError("dqn.gamma must be 0: fusion is a contextual bandit (one decision per window, no next state).")
    if d.num_alphas < 2:
        raise KdgatError("dqn.num_alphas must be at least 2 (alpha = 0 and alpha = 1).")
    if not 0.0 < d.max_val_fpr <= 1.0:
        raise KdgatError(f"dqn.max_val_fpr must be in (0, 1], got {d.max_val_fpr}.")
    if not 0.0 <= d.se_rule <= 10.0:
        raise KdgatError(f"dqn.se_rule must be between 0 and 10 standard errors, got {d.se_rule}.")
    gen = seed_everything(cfg.train.seed)
    vgae_run = resolve_prerequisite(cfg, Stage.AUTOENCODER, tracking_uri)
    gat_run = resolve_prerequisite(cfg, Stage.CURRICULUM, tracking_uri)
    run.set_tags({prerequisite_tag(Stage.AUTOENCODER): vgae_run, prerequisite_tag(Stage.CURRICULUM): gat_run})
    vgae, vmeta = load_run_model(vgae_run, tracking_uri, CANGraphVGAE, graphs, device)
    gat, gmeta = load_run_model(gat_run, tracking_uri, CANGraphGAT, graphs, device)
    norm = VGAECalibration.from_dict(vmeta["calibration"]).score_norm
    hide, W = gat_hides_ids(gmeta), cfg.data.window
    vs, ts, ps, ys, fams = [], [], [], [], []
    for part, family in validation_parts(graphs):
        vs.append(anomaly_scores(vgae, part, device, norm, W, related=(graphs.train,)))
        ts.append(timing_scores(part, W, related=(graphs.train,)))
        ps.append(attack_probability(gat_logits(gat, part, device, hide_ids=hide)))
        ys.append(part.y.numpy())
        fams.append(family)
    v, t, p_all, y_all = _concat_vgae(vs), _concat_timing(ts), np.concatenate(ps), np.concatenate(ys)
    family = np.concatenate(fams)
    fit_idx, check_idx = split_halves(len(y_all), y_all, cfg.train.seed)
    if len(fit_idx) == 0 or len(check_idx) == 0:
        raise KdgatError("The validation split is too small to fit and judge the fusion policy; use more data.")
    # the VGAE's term weights and every score's threshold and Platt calibration: on the fit half
    term_weights: list[float] | None = None
    term_aucs: dict[str, float] = {}
    if v.normalised:
        term_weights, term_aucs = choose_term_weights(y_all[fit_idx], v.errors[fit_idx])
    cal = VGAECalibration(0.0, 1.0, 0.0, norm, term_weights)
    vscore = cal.window_score(v)
    cal = VGAECalibration.fit(y_all[fit_idx], vscore[fit_idx], norm, "f1", d.max_val_fpr, d.se_rule, cfg.train.seed)
    cal.term_weights = term_weights
    tcal = (
        VGAECalibration.fit(
            y_all[fit_idx], t.score[fit_idx], "recording", "f1", d.max_val_fpr, d.se_rule, cfg.train.seed
        )
        if d.timing_input
        else None
    )
    inputs = INPUTS_3 if tcal is not None else INPUTS_2
    val = FusionInputs(
        fusion_state(p_all, v, cal, t, tcal),
        p_all,
        cal.probability(vscore),
        y_all,
        None if tcal is None else tcal.probability(t.score),
    )
    scores = val.scores(inputs)
    weights = weight_grid(len(inputs), d.num_alphas)
    mean = val.state[fit_idx].mean(0)
    std = val.state[fit_idx].std(0) + 1e-6
    states = torch.from_numpy((val.state - mean) / std).float()
    p_gat, s_vgae = torch.from_numpy(val.p_gat).float(), torch.from_numpy(val.s_vgae).float()
    y = torch.from_numpy(val.y).long()
    bandit = BanditTrainer(
        states, p_gat, s_vgae, y, d, cfg.train, gen, device, torch.from_numpy(scores), torch.from_numpy(weights)
    )
    fit_t, check_t = torch.from_numpy(fit_idx), torch.from_numpy(check_idx)
    q = bandit.q

    def check_report() -> tuple[EpochReport, np.ndarray, np.ndarray]:
        val_loss, fused, alpha = bandit.evaluate(check_t)
        m = classification_metrics(val.y[check_idx], fused >= DECISION, fused)
        return EpochReport(0.0, val_loss, m[Metric.F1.value], {Metric.EPSILON.value: bandit.epsilon}), fused, alpha

    optimizer = bandit.optimizer
    run_epoch = lambda episode: bandit.episode(fit_t)  # noqa: E731
    train_cfg = dataclasses.replace(cfg.train, epochs=d.episodes)
    calibrations = {Arch.VGAE.value: cal.to_dict(), **({TIMING_SCORE: tcal.to_dict()} if tcal else {})}

    def meta(fixed: list[float] | str | None = None) -> dict[str, Any]:
        return {
            "alphas": weights[:, 0].tolist(),
            "weights": weights.tolist(),
            "inputs": list(inputs),
            "fixed": fixed,
            "fixed_alpha": fixed[0] if isinstance(fixed, list) and len(inputs) == 2 else None,
            "calibrations": calibrations,
            "state_mean": mean.tolist(),
            "state_std": std.tolist(),
            "state_features": list(STATE_FEATURES) + (list(TIMING_STATE_FEATURES) if tcal else []),
            prerequisite_tag(Stage.AUTOENCODER): vgae_run,
            prerequisite_tag(Stage.CURRICULUM): gat_run,
        }

    kwargs = dict(state_dim=int(states.shape[1]), hidden=d.hidden, layers=d.layers, num_actions=len(weights))
    result = fit(
        q,
        optimizer,
        train_cfg,
        run_epoch,
        lambda: check_report()[0],
        run,
        monitor=Metric.VAL_F1.value,
        checkpoint=lambda: checkpoint_payload(Arch.DQN.value, kwargs, q, meta()),
    )

    report, bandit_fused, _ = check_report()
    yc = val.y[check_idx]
    bandit_m = classification_metrics(yc, bandit_fused >= DECISION, bandit_fused)
    fixed = best_fixed_policy(weights, scores[fit_idx], val.y[fit_idx])
    fixed_check = fixed_fuse(fixed, scores[check_idx])
    fixed_m = classification_metrics(yc, fixed_check >= DECISION, fixed_check)
    deployed: list[float] | str | None = fixed if fixed_m[Metric.F1.value] >= bandit_m[Metric.F1.value] else None
    # never below the best single input on validation: compare on the whole of it, fall back to that input
    policy = FusionPolicy(q, weights[:, 0], mean, std, weights=weights, inputs=inputs, fixed=deployed)
    whole, _ = policy.fuse(val)
    name = policy_name(deployed, inputs)
    best_k = single_input_instead(val.y, whole, scores, d.se_rule, cfg.train.seed)
    if best_k is not None:
        deployed = [float(k == best_k) for k in range(len(inputs))]
        name = f"single={inputs[best_k]}"
        policy.fixed = deployed
        whole, _ = policy.fuse(val)
    fused_check, chosen = policy.fuse(val.subset(check_idx))
    fused_m = classification_metrics(yc, fused_check >= DECISION, fused_check)
    save_checkpoint(run.artifact_dir / CHECKPOINT_FILE, checkpoint_payload(Arch.DQN.value, kwargs, q, meta(deployed)))
    single_m = {
        name_k: classification_metrics(yc, scores[check_idx, k] >= DECISION, scores[check_idx, k])
        for k, name_k in enumerate(inputs)
    }
    best_single = max(m[Metric.F1.value] for m in single_m.values())
    beats = fused_m[Metric.F1.value] >= best_single
    run.set_tags({FUSION_BEATS_BEST_TAG: bool_tag(beats), FUSION_POLICY_TAG: name})
    whole_scores = {"fusion": whole, **{k: scores[:, i] for i, k in enumerate(inputs)}}
    whole_m = {k: classification_metrics(val.y, sc >= DECISION, sc) for k, sc in whole_scores.items()}
    final = {
        **headline(fused_m),
        Metric.VAL_LOSS.value: report.val_loss,
        Metric.NUM_PARAMETERS.value: count_parameters(q),
        Metric.TRAIN_SECONDS.value: result.seconds,
        **{f"{k}_{Metric.F1}": m[Metric.F1.value] for k, m in single_m.items()},
    }
    run.log_final(final)
    usage = {f"{a:.2f}": int((np.isclose(chosen, a)).sum()) for a in sorted(set(weights[:, 0].tolist()))}
    run.log_json(
        "metrics.json",
        {
            "final": final,
            "validation_check_half": {"fusion": fused_m, "bandit": bandit_m, "fixed": fixed_m, **single_m},
            "validation_whole": whole_m,
            "validation_by_family": family_figures(val.y, family, whole_scores),
            "validation_windows": {"split": int((family == 0).sum()), INJECTED: int((family > 0).sum())},
            "vgae_term_weights": term_weights,
            "vgae_term_weight_auc": term_aucs,
            "calibrations": calibrations,
            FUSION_BEATS_BEST_TAG: beats,
            FUSION_POLICY_TAG: name,
            "best_fixed_policy": fixed,
            "gat_weight_usage": usage,
            "best_epoch": result.best_epoch,
            "epochs_run": result.epochs_run,
            "history": result.history,
            prerequisite_tag(Stage.AUTOENCODER): vgae_run,
            prerequisite_tag(Stage.CURRICULUM): gat_run,
        },
    )
    fig = plots.roc_figure(
        yc,
        {"fusion": fused_check, **{k: scores[check_idx, i] for i, k in enumerate(inputs)}},
        f"{cfg.run_name}: validation (held-out half)",
    )
    run.log_figure("val_roc.png", fig)
    plots.close(fig)
    return final
