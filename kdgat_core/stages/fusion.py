"""Stage 3, fusion: a DQN picks, per window, a weight alpha for alpha * p_gat + (1 - alpha) * s_vgae.

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
from kdgat_core.stages.metrics import classification_metrics, headline
from kdgat_core.stages.prerequisites import checkpoint_payload, load_run_model, resolve_prerequisite
from kdgat_core.stages.scoring import (
    VGAECalibration,
    VGAEScores,
    anomaly_scores,
    attack_probability,
    gat_hides_ids,
    gat_logits,
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
DECISION = 0.5


def fusion_state(p_gat: np.ndarray, vgae: VGAEScores, cal: VGAECalibration) -> np.ndarray:
    """Per-window state [G, len(STATE_FEATURES)] from both models' outputs (unnormalised)."""
    p = np.clip(p_gat, 1e-6, 1 - 1e-6)
    s = cal.probability(vgae.score)
    entropy = -(p * np.log(p) + (1 - p) * np.log(1 - p))
    errors = vgae.errors if vgae.normalised else np.log(np.maximum(vgae.errors, 1e-12))
    cols = [p, np.abs(2 * p - 1), entropy, s, *errors.T, *vgae.latent.T, 1 - np.abs(p - s)]
    return np.stack(cols, axis=1).astype(np.float32)


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


def model_outputs(
    vgae: CANGraphVGAE,
    gat: CANGraphGAT,
    cal: VGAECalibration,
    graphset: Any,
    device: torch.device,
    window: int,
    related: tuple[Any, ...] = (),
    hide_ids: bool = False,
) -> FusionInputs:
    """Both models on `graphset`: the VGAE scored as its calibration says (`related`: see scoring.anomaly_scores),
    the GAT with or without the windows' ids as its run says (scoring.gat_hides_ids)."""
    v = anomaly_scores(vgae, graphset, device, cal.score_norm, window, related)
    p = attack_probability(gat_logits(gat, graphset, device, hide_ids=hide_ids))
    return FusionInputs(fusion_state(p, v, cal), p, cal.probability(v.score), graphset.y.numpy())


class FusionPolicy:
    """A trained Q-network plus what it needs to act: the alpha grid and the state normalisation.
    `fixed_alpha`: set when one alpha for every window did better on held-out validation than the Q-network."""

    def __init__(
        self, q: QNetwork, alphas: np.ndarray, mean: np.ndarray, std: np.ndarray, fixed_alpha: float | None = None
    ):
        self.q, self.alphas, self.mean, self.std, self.fixed_alpha = q, alphas, mean, std, fixed_alpha

    @torch.no_grad()
    def choose(self, state: np.ndarray) -> np.ndarray:
        """Index of the greedy alpha per window."""
        self.q.eval()
        x = torch.from_numpy((state - self.mean) / self.std).float()
        return self.q(x).argmax(-1).numpy() if len(x) else np.zeros(0, dtype=int)

    def fuse(self, inp: FusionInputs) -> tuple[np.ndarray, np.ndarray]:
        """Fused attack score and chosen alpha per window."""
        if self.fixed_alpha is not None:
            alpha = np.full(len(inp.p_gat), self.fixed_alpha, dtype=np.float32)
        else:
            alpha = self.alphas[self.choose(inp.state)]
        return fused_score(alpha, inp.p_gat, inp.s_vgae), alpha


def load_fusion(run_id: str, tracking_uri: str | None, device: torch.device | str = "cpu") -> tuple[FusionPolicy, dict]:
    q, meta = load_run_model(run_id, tracking_uri, QNetwork, device=device)
    policy = FusionPolicy(
        q.cpu(),
        np.asarray(meta["alphas"], dtype=np.float32),
        np.asarray(meta["state_mean"], dtype=np.float32),
        np.asarray(meta["state_std"], dtype=np.float32),
        None if meta.get("fixed_alpha") is None else float(meta["fixed_alpha"]),
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
    ):
        self.states, self.p_gat, self.s_vgae, self.y = states, p_gat, s_vgae, y
        self.d, self.gen, self.device = d, gen, device
        self.alphas = torch.linspace(0, 1, d.num_alphas)
        self.q = QNetwork(states.shape[1], d.hidden, d.layers, d.num_alphas).to(device)
        self.target = copy.deepcopy(self.q).eval()
        self.optimizer = torch.optim.Adam(self.q.parameters(), lr=train.lr, weight_decay=train.weight_decay)
        cap = d.buffer_size
        self.buf_s = torch.zeros(cap, states.shape[1])
        self.buf_a = torch.zeros(cap, dtype=torch.long)
        self.buf_r = torch.zeros(cap)
        self.filled = self.pos = self.steps = 0
        self.epsilon = d.epsilon_start

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
            action = torch.where(explore, torch.randint(0, d.num_alphas, (len(chunk),), generator=self.gen), greedy)
            reward = bandit_reward(
                fused_score(self.alphas[action], self.p_gat[chunk], self.s_vgae[chunk]), self.y[chunk]
            )
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
        """Greedy policy on `indices`: Q-regression loss, fused scores, chosen alphas."""
        self.q.eval()
        qs = self.q(self.states[indices].to(self.device)).cpu()
        action = qs.argmax(-1)
        fused = fused_score(self.alphas[action], self.p_gat[indices], self.s_vgae[indices])
        reward = bandit_reward(fused, self.y[indices])
        loss = float(F.smooth_l1_loss(qs.gather(1, action[:, None]).squeeze(1), reward))
        return loss, fused.numpy(), self.alphas[action].numpy()


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


def run_fusion(
    cfg: PipelineConfig, run: Any, graphs: Any, device: torch.device, tracking_uri: str | None
) -> dict[str, float]:
    d = cfg.dqn
    if d.gamma != 0.0:
        raise KdgatError("dqn.gamma must be 0: fusion is a contextual bandit (one decision per window, no next state).")
    if d.num_alphas < 2:
        raise KdgatError("dqn.num_alphas must be at least 2 (alpha = 0 and alpha = 1).")
    gen = seed_everything(cfg.train.seed)
    vgae_run = resolve_prerequisite(cfg, Stage.AUTOENCODER, tracking_uri)
    gat_run = resolve_prerequisite(cfg, Stage.CURRICULUM, tracking_uri)
    run.set_tags({prerequisite_tag(Stage.AUTOENCODER): vgae_run, prerequisite_tag(Stage.CURRICULUM): gat_run})
    vgae, vmeta = load_run_model(vgae_run, tracking_uri, CANGraphVGAE, graphs, device)
    gat, gmeta = load_run_model(gat_run, tracking_uri, CANGraphGAT, graphs, device)
    cal = VGAECalibration.from_dict(vmeta["calibration"])
    val = model_outputs(
        vgae, gat, cal, graphs.val, device, cfg.data.window, related=(graphs.train,), hide_ids=gat_hides_ids(gmeta)
    )
    fit_idx, check_idx = split_halves(len(val.y), val.y, cfg.train.seed)
    if len(fit_idx) == 0 or len(check_idx) == 0:
        raise KdgatError("The validation split is too small to fit and judge the fusion policy; use more data.")
    mean = val.state[fit_idx].mean(0)
    std = val.state[fit_idx].std(0) + 1e-6
    states = torch.from_numpy((val.state - mean) / std).float()
    p_gat, s_vgae = torch.from_numpy(val.p_gat).float(), torch.from_numpy(val.s_vgae).float()
    y = torch.from_numpy(val.y).long()
    alphas = torch.linspace(0, 1, d.num_alphas)
    bandit = BanditTrainer(states, p_gat, s_vgae, y, d, cfg.train, gen, device)
    fit_t, check_t = torch.from_numpy(fit_idx), torch.from_numpy(check_idx)
    q = bandit.q

    def check_report() -> tuple[EpochReport, np.ndarray, np.ndarray]:
        val_loss, fused, alpha = bandit.evaluate(check_t)
        m = classification_metrics(val.y[check_idx], fused >= DECISION, fused)
        return EpochReport(0.0, val_loss, m[Metric.F1.value], {Metric.EPSILON.value: bandit.epsilon}), fused, alpha

    optimizer = bandit.optimizer
    run_epoch = lambda episode: bandit.episode(fit_t)  # noqa: E731
    train_cfg = dataclasses.replace(cfg.train, epochs=d.episodes)

    def meta() -> dict[str, Any]:
        return {
            "alphas": alphas.tolist(),
            "state_mean": mean.tolist(),
            "state_std": std.tolist(),
            "state_features": list(STATE_FEATURES),
            prerequisite_tag(Stage.AUTOENCODER): vgae_run,
            prerequisite_tag(Stage.CURRICULUM): gat_run,
        }

    kwargs = dict(state_dim=int(states.shape[1]), hidden=d.hidden, layers=d.layers, num_actions=d.num_alphas)
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

    report, fused, chosen = check_report()
    yc = val.y[check_idx]
    fused_m = classification_metrics(yc, fused >= DECISION, fused)
    bandit_m = fused_m
    fixed, use_fixed = choose_deployment(alphas.numpy(), val, fit_idx, check_idx, fused)
    fixed_fused = fused_score(fixed, val.p_gat[check_idx], val.s_vgae[check_idx])
    fixed_m = classification_metrics(yc, fixed_fused >= DECISION, fixed_fused)
    if use_fixed:
        fused, chosen, fused_m = fixed_fused, np.full(len(yc), fixed, dtype=np.float32), fixed_m
    policy_name = f"fixed_alpha={fixed:.2f}" if use_fixed else "bandit"
    deployed = {**meta(), "fixed_alpha": fixed if use_fixed else None}
    save_checkpoint(run.artifact_dir / CHECKPOINT_FILE, checkpoint_payload(Arch.DQN.value, kwargs, q, deployed))
    gat_m = classification_metrics(yc, val.p_gat[check_idx] >= DECISION, val.p_gat[check_idx])
    vgae_m = classification_metrics(yc, val.s_vgae[check_idx] >= DECISION, val.s_vgae[check_idx])
    best_single = max(gat_m[Metric.F1.value], vgae_m[Metric.F1.value])
    beats = fused_m[Metric.F1.value] >= best_single
    run.set_tags({FUSION_BEATS_BEST_TAG: bool_tag(beats), FUSION_POLICY_TAG: policy_name})
    final = {
        **headline(fused_m),
        Metric.VAL_LOSS.value: report.val_loss,
        Metric.NUM_PARAMETERS.value: count_parameters(q),
        Metric.TRAIN_SECONDS.value: result.seconds,
        f"{Arch.GAT}_{Metric.F1}": gat_m[Metric.F1.value],
        f"{Arch.VGAE}_{Metric.F1}": vgae_m[Metric.F1.value],
    }
    run.log_final(final)
    usage = {f"{a:.2f}": int((np.isclose(chosen, a)).sum()) for a in alphas.tolist()}
    run.log_json(
        "metrics.json",
        {
            "final": final,
            "validation_check_half": {
                "fusion": fused_m,
                "bandit": bandit_m,
                "fixed_alpha": fixed_m,
                "gat": gat_m,
                "vgae": vgae_m,
            },
            FUSION_BEATS_BEST_TAG: beats,
            FUSION_POLICY_TAG: policy_name,
            "best_fixed_alpha": fixed,
            "alpha_usage": usage,
            "best_epoch": result.best_epoch,
            "epochs_run": result.epochs_run,
            "history": result.history,
            prerequisite_tag(Stage.AUTOENCODER): vgae_run,
            prerequisite_tag(Stage.CURRICULUM): gat_run,
        },
    )
    fig = plots.roc_figure(
        yc,
        {"fusion": fused, "gat": val.p_gat[check_idx], "vgae": val.s_vgae[check_idx]},
        f"{cfg.run_name}: validation (held-out half)",
    )
    run.log_figure("val_roc.png", fig)
    plots.close(fig)
    return final
