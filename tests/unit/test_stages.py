"""Stage logic without data files: the curriculum schedule, the bandit fusion, metrics, and `kdgat run` argument errors."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from kdgat_core.commands.train import build_run_config  # noqa: E402
from kdgat_core.config import DQNConfig, KdgatError, TrainConfig  # noqa: E402
from kdgat_core.stages.curriculum import curriculum_normals  # noqa: E402
from kdgat_core.stages.fusion import BanditTrainer, split_halves  # noqa: E402
from kdgat_core.stages.metrics import classification_metrics, detection_rate_at_fpr, youden_threshold  # noqa: E402
from kdgat_core.stages.scoring import VGAECalibration  # noqa: E402


# --- curriculum --------------------------------------------------------------------------------------------------------
def test_curriculum_grows_every_epoch_until_the_natural_ratio():
    n_normal, n_attack, epochs = 4000, 400, 10
    counts = [curriculum_normals(n_normal, n_attack, e, epochs, start_ratio=1.0, ramp=0.6) for e in range(epochs)]
    assert counts[0] == 400  # 1 normal per attack in the first epoch
    ramp_end = counts.index(n_normal)
    assert ramp_end > 1
    assert all(b > a for a, b in zip(counts[:ramp_end], counts[1 : ramp_end + 1]))  # strictly more every epoch
    assert all(c == n_normal for c in counts[ramp_end:])  # then every normal window


def test_curriculum_without_attacks_or_with_attack_majority():
    assert curriculum_normals(100, 0, 0, 5, 1.0, 0.6) == 100
    # natural ratio 0.5 is below the start ratio: start at the natural ratio, i.e. everything
    assert curriculum_normals(50, 100, 0, 5, 1.0, 0.6) == 50


# --- bandit fusion -----------------------------------------------------------------------------------------------------
def test_bandit_learns_which_model_to_trust_per_context():
    """Context feature +1: the GAT is right and the VGAE wrong; -1: the reverse. Fusion must beat both."""
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    n = 800
    context = torch.randint(0, 2, (n,), generator=gen)
    y = torch.randint(0, 2, (n,), generator=gen)
    right, wrong = y.float() * 0.8 + 0.1, (1 - y.float()) * 0.8 + 0.1
    p_gat = torch.where(context == 1, right, wrong)
    s_vgae = torch.where(context == 1, wrong, right)
    states = torch.stack([context.float() * 2 - 1, torch.randn(n, generator=gen) * 0.1], dim=1)
    d = DQNConfig(
        hidden=32, layers=2, num_alphas=5, buffer_size=2000, batch_size=64, epsilon_decay=0.97, target_update=10
    )
    bandit = BanditTrainer(states, p_gat, s_vgae, y, d, TrainConfig(lr=1e-2), gen)
    fit_idx, check_idx = (torch.from_numpy(i) for i in split_halves(n, y.numpy(), 0))
    for _ in range(15):
        bandit.episode(fit_idx)
    assert bandit.epsilon < 0.2  # epsilon decays per step
    _, fused, alpha = bandit.evaluate(check_idx)
    yc = y[check_idx].numpy()
    acc = ((fused >= 0.5) == yc).mean()
    assert acc > 0.95
    assert ((p_gat[check_idx].numpy() >= 0.5) == yc).mean() < 0.6  # each single model is right half the time
    ctx = context[check_idx].numpy()
    assert alpha[ctx == 1].mean() > 0.7 and alpha[ctx == 0].mean() < 0.3


def test_split_halves_is_stratified_and_disjoint():
    y = np.array([0] * 90 + [1] * 10)
    a, b = split_halves(100, y, seed=1)
    assert set(a).isdisjoint(b) and len(a) + len(b) == 100
    assert y[a].sum() == 5 and y[b].sum() == 5


# --- metrics -----------------------------------------------------------------------------------------------------------
def test_classification_metrics_on_a_known_confusion():
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    pred = np.array([1, 1, 1, 0, 1, 0, 0, 0, 0, 0])  # tp 3, fn 1, fp 1, tn 5
    score = np.array([0.9, 0.8, 0.7, 0.2, 0.6, 0.1, 0.1, 0.1, 0.1, 0.1])
    m = classification_metrics(y, pred, score)
    assert m["accuracy"] == 0.8 and m["precision_"] == 0.75 and m["recall"] == 0.75
    assert math.isclose(m["specificity"], 5 / 6) and math.isclose(m["fpr"], 1 / 6) and m["fnr"] == 0.25
    assert math.isclose(m["balanced_accuracy"], (0.75 + 5 / 6) / 2)
    # at FPR 0 (no normal above the cut) only the scores above 0.6 count: 3 of 4 attacks
    assert m["dr_at_fpr_1e-3"] == 0.75
    assert detection_rate_at_fpr(y, score, 0.2) == 1.0


def test_single_class_metrics_are_nan_not_errors():
    m = classification_metrics(np.zeros(5), np.zeros(5), np.linspace(0, 1, 5))
    assert m["accuracy"] == 1.0 and math.isnan(m["auc"]) and math.isnan(m["dr_at_fpr_1e-2"])


def test_youden_threshold_separates_and_calibration_agrees():
    y = np.array([0] * 50 + [1] * 50)
    score = np.concatenate([np.linspace(1, 2, 50), np.linspace(3, 4, 50)])
    thr = youden_threshold(y, score)
    assert 2 < thr < 3
    cal = VGAECalibration.fit(y, score)
    p = cal.probability(score)
    assert ((p >= 0.5) == (score >= cal.threshold)).all() and ((p >= 0.5) == y).all()


# --- `kdgat run` argument errors (no run is started) -------------------------------------------------------------------
@pytest.mark.parametrize(
    "args, message",
    [
        (("nope", "vgae,teacher", "hcrl_sa", []), "Unknown stage 'nope'"),
        (("autoencoder", "vgae,teacher", "nope", []), "Unknown dataset 'nope'"),
        (("autoencoder", "vgae,huge", "hcrl_sa", []), "Unknown model size 'huge'"),
        (("autoencoder", "vgae,teacher,fast", "hcrl_sa", []), "Unknown preset variant 'fast'"),
        (("autoencoder", "gat,teacher", "hcrl_sa", []), "is for the curriculum stage"),
        (("autoencoder", "vgae,teacher", "hcrl_sa", ["train.nope=1"]), "Unknown config key 'train.nope'"),
        (("autoencoder", "vgae,teacher", "hcrl_sa", ["train.epochs=many"]), "is not a valid int"),
    ],
)
def test_bad_run_arguments_are_one_sentence(args, message):
    stage, preset, dataset, overrides = args
    with pytest.raises(KdgatError, match=message):
        build_run_config(stage, preset, dataset, False, None, overrides, None)


def test_teacher_without_kd_is_refused():
    with pytest.raises(KdgatError, match="--teacher only makes sense with --kd"):
        build_run_config("curriculum", "gat,student", "hcrl_sa", False, "abc", [], None)


def test_kdgat_run_bad_input_exits_2_without_traceback(tmp_path):
    db = tmp_path / "mlflow.db"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "kdgat_core.cli",
            "run",
            "autoencoder",
            "--preset",
            "vgae,teacher",
            "--dataset",
            "hcrl_sa",
            "-O",
            "train.lr=fast",
            "--tracking-uri",
            f"sqlite:///{db}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["kdgat: Override train.lr='fast' is not a valid float."]
    assert not db.exists()  # nothing was started, nothing written


def test_cuda_on_a_machine_without_it_is_one_sentence():
    from kdgat_core.stages.training_loop import resolve_device

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(KdgatError, match="CUDA is not available"):
        resolve_device("cuda")


def test_config_keys_lists_overridable_keys():
    from typer.testing import CliRunner

    from kdgat_core.cli import app

    out = CliRunner().invoke(app, ["config-keys", "--preset", "gat,student", "--format", "csv"])
    assert out.exit_code == 0
    rows = dict(line.split(",", 2)[0:2] for line in out.stdout.strip().splitlines()[1:])
    assert rows["gat.hidden"] == "int" and rows["train.lr"] == "float" and rows["vgae.hidden_dims"] == "list"
    assert "gat.hidden,int,24" in out.stdout


def test_missing_dataset_folder_names_where_the_data_root_came_from(tmp_path):
    """`KDGAT_DATA_ROOT=/empty kdgat run ...` must blame the environment variable, not a --data-root flag never given."""
    import os

    db = tmp_path / "mlflow.db"
    env = dict(os.environ, KDGAT_DATA_ROOT=str(tmp_path / "empty"))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "kdgat_core.cli",
            "run",
            "autoencoder",
            "--preset",
            "vgae,teacher,tiny",
            "--dataset",
            "synthetic",
            "--quiet",
            "--tracking-uri",
            f"sqlite:///{db}",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert "does not exist" in last and "KDGAT_DATA_ROOT environment variable" in last, last
    assert "Traceback" not in proc.stderr
