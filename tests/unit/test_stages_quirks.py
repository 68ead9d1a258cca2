"""Decisions that hold on unknown attacks and quirky datasets: undefined metrics of a scenario without attacks, the
calibration fallback of a recording that does not start attack-free, the timing score and the synthetic validation
attacks that find a subtle (timing-only) attack a detector tuned on blatant attacks misses, and the fused detector
never below its best input on validation (end to end, slow)."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow.parquet as pq
import pytest

pytest.importorskip("torch")

from kdgat_core.config import UNDEFINED_METRICS_TAG, PipelineConfig, preset, scenario_metric
from kdgat_core.data import load_graphs
from kdgat_core.data.canonical import recording_file_name, write_parquet_atomic
from kdgat_core.data.synthetic import BASE_DURATION_S, generate_recording, vehicles, write_dataset
from kdgat_core.stages.fusion import MAX_RULE, FusionInputs, FusionPolicy, best_fixed_policy, weight_grid
from kdgat_core.stages.metrics import classification_metrics, undefined
from kdgat_core.stages.scoring import (
    CALIBRATION_FALLBACK,
    VGAECalibration,
    recording_baselines,
    timing_scores,
)

TEST_03, TEST_05 = "test_03_known_vehicle_unknown_attack", "test_05_suppress"


def test_a_scenario_without_attacks_reports_fpr_and_leaves_f1_and_auc_undefined():
    y = np.zeros(200, int)
    pred = np.zeros(200, int)
    pred[:3] = 1
    m = classification_metrics(y, pred, np.linspace(0, 1, 200))
    assert m["fpr"] == pytest.approx(0.015) and m["specificity"] == pytest.approx(0.985) and m["accuracy"] == 0.985
    for k in ("f1", "recall", "precision_", "auc", "mcc", "pr_auc"):
        assert math.isnan(m[k]), k  # undefined, not a silent 0
    assert {"f1", "auc", "recall"} <= set(undefined(m)) and "fpr" not in undefined(m)


def test_an_anomalous_calibration_part_falls_back_to_the_quietest_stretch():
    rng = np.random.default_rng(0)
    n = 400
    terms = rng.normal(0.0, 1.0, (n, 3))
    rec, start = np.zeros(n, int), np.arange(n) * 100
    calib = np.arange(60)  # the first 15% of the windows
    b, fb = recording_baselines(terms, rec, start, ["r"], {"r": [terms[calib]]}, check=True)
    assert fb == {} and np.allclose(b[0][0], 0.0, atol=0.5)
    attacked = terms.copy()
    attacked[:60] += 8.0  # the recording starts under attack
    b, fb = recording_baselines(attacked, rec, start, ["r"], {"r": [attacked[calib]]}, check=True)
    # the baseline comes back near the normal windows' (the quietest of ~25 stretches is biased a little low)
    assert fb == {"r": CALIBRATION_FALLBACK} and np.allclose(b[0][0], 0.0, atol=0.8)
    # a validation tail (calibration part in the training split) is never second-guessed
    assert recording_baselines(attacked, rec, start, ["r"], {"r": [attacked[calib]]}, check=False)[1] == {}


def test_fixed_policies_cover_the_single_inputs_and_the_max_rule():
    w = weight_grid(3, 11)
    assert len(w) == 66 and np.allclose(w.sum(axis=1), 1.0)
    for k in range(3):
        assert any(np.allclose(row, np.eye(3)[k]) for row in w)  # each input alone is a candidate
    y = np.array([1, 1, 0, 0, 1, 0])
    # each input catches a different attack and none flags a normal window: only the OR is right everywhere
    scores = np.array([[0.9, 0.1, 0.1], [0.1, 0.9, 0.1], [0.1, 0.1, 0.1], [0.1, 0.2, 0.1], [0.1, 0.1, 0.9], [0, 0, 0]])
    assert best_fixed_policy(w, scores.astype(np.float32), y) == MAX_RULE
    inp = FusionInputs(np.zeros((6, 1), np.float32), scores[:, 0], scores[:, 1], y, scores[:, 2])
    policy = FusionPolicy(None, w[:, 0], np.zeros(1), np.ones(1), weights=w, inputs=("gat", "vgae", "timing"))
    policy.fixed = MAX_RULE
    fused, _ = policy.fuse(inp)
    assert ((fused >= 0.5) == y).all()


@pytest.fixture(scope="module")
def replay_dataset(tmp_path_factory):
    """The synthetic dataset (DoS and fuzzing in training) plus a test recording whose only attack is one id's own
    frames sent at twice its rate: no new id, no new payload."""
    root = tmp_path_factory.mktemp("replay")
    folder = write_dataset(root, "synthetic", seed=0, scale=2.0)
    table = generate_recording(vehicles(0)["a"], "replay", BASE_DURATION_S * 2.0, 0, "x", name="replay-a")
    write_parquet_atomic(table, folder / recording_file_name(TEST_03, "replay-a"))
    cfg = PipelineConfig(dataset="synthetic")
    cfg.data.window = cfg.data.stride = 100
    return cfg, load_graphs(cfg, data_root=root, cache_dir=root / "cache")


def test_the_injected_validation_finds_a_timing_only_attack_that_blatant_validation_misses(replay_dataset):
    cfg, g = replay_dataset
    W = cfg.data.window
    val = timing_scores(g.val, W, (g.train,))
    injected = timing_scores(g.val_injected, W, (g.train,))
    test = g.test[TEST_03]
    mine = np.array([r.endswith("replay-a") for r in test.recording])
    score, y = timing_scores(test, W).score[mine], test.y.numpy()[mine]
    assert 0 < y.sum() < len(y)

    def judged(val_y: np.ndarray, val_score: np.ndarray) -> dict[str, float]:
        cal = VGAECalibration.fit(val_y, val_score, "recording", threshold_rule="f1")
        return classification_metrics(y, score >= cal.threshold, score)

    blatant = judged(g.val.y.numpy(), val.score)  # validation holds DoS and fuzzing only
    subtle = judged(np.r_[g.val.y.numpy(), np.ones(len(injected.score), int)], np.r_[val.score, injected.score])
    assert blatant["recall"] < 0.6  # the threshold fitted on floods sits above the replayed id's windows
    assert subtle["recall"] >= 0.9 and subtle["fpr"] <= 0.05 and subtle["f1"] > blatant["f1"] + 0.2


@pytest.mark.slow
def test_quirky_dataset_end_to_end(tmp_path, monkeypatch):
    """set_01 with a scenario without attacks, an empty recording and a missing scenario: the tiny teacher pipeline
    runs through, test_05's FPR is logged, its F1/AUC are said undefined (tag, metrics.json), never logged as 0, and
    the fused detector is never below its best input on validation."""
    import mlflow

    from kdgat_core.stages import run_stage
    from kdgat_core.tracking import run_artifact_dir

    folder = write_dataset(tmp_path / "data", "set_01", seed=0)
    car = vehicles(0)["a"]
    normal = generate_recording(car, None, BASE_DURATION_S, 7, "x", name="suppress-a")
    write_parquet_atomic(normal, folder / recording_file_name(TEST_05, "suppress-a"))
    write_parquet_atomic(normal.slice(0, 0), folder / recording_file_name(TEST_03, "empty"))
    monkeypatch.setenv("KDGAT_CACHE_DIR", str(tmp_path / "cache"))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ids = {}
    for arch in ("vgae", "gat", "dqn", "eval"):
        cfg = preset(f"{arch},teacher,tiny", dataset="set_01").override(["train.epochs=2", "dqn.episodes=3"])
        ids[arch] = run_stage(cfg, tracking_uri=uri, data_root=str(tmp_path / "data"))
    client = mlflow.tracking.MlflowClient(uri)
    ev = client.get_run(ids["eval"].run_id)
    assert scenario_metric(TEST_05, "fpr") in ev.data.metrics
    assert scenario_metric(TEST_05, "specificity") in ev.data.metrics
    for k in ("f1", "auc", "gat_f1", "vgae_auc"):
        assert scenario_metric(TEST_05, k) not in ev.data.metrics
    assert scenario_metric(TEST_05, "f1") in ev.data.tags[UNDEFINED_METRICS_TAG].split(",")
    report = json.loads((run_artifact_dir(ids["eval"].run_id, uri) / "metrics.json").read_text())
    assert report["scenarios"][TEST_05]["fusion"]["f1"] is None
    assert any("test_06_masquerade" in n for n in report["dataset_notes"])
    fj = json.loads((run_artifact_dir(ids["dqn"].run_id, uri) / "metrics.json").read_text())
    whole = fj["validation_whole"]
    assert whole["fusion"]["f1"] >= max(whole[k]["f1"] for k in whole if k != "fusion") - 1e-12
    assert pq.read_table(folder / recording_file_name(TEST_03, "empty")).num_rows == 0  # the data is untouched


def test_results_table_shows_published_trivial_and_undefined_cells():
    from types import SimpleNamespace

    from kdgat_core.config import Stage
    from kdgat_core.stages.pipeline import ROLES, results_table

    t01, t05 = "test_01_known_vehicle_known_attack", TEST_05
    ev = {
        scenario_metric(t01, "attack_share"): 0.25,
        scenario_metric(t05, "attack_share"): 0.0,
        scenario_metric(t01, "f1"): 0.9,
        scenario_metric(t01, "accuracy"): 0.95,
        scenario_metric(t05, "accuracy"): 0.99,  # its F1 is undefined, so not logged
        scenario_metric(t01, "timing_f1"): 0.8,
        scenario_metric(t01, "timing_accuracy"): 0.9,
    }
    results = {
        (size, kd, stage.value): SimpleNamespace(metrics=ev if stage is Stage.EVALUATION else {"num_parameters": 7})
        for size, kd in ROLES
        for stage in Stage
    }
    table = results_table(results, [t01, t05])
    lines = table.splitlines()
    assert lines[2].startswith("| published KD-GAT fusion") and "n/a / n/a" in lines[2]
    assert "| everything an attack | | | | 0.400 / 0.250 | n/a / 0.000 |" in lines
    assert "| everything normal | | | | 0.000 / 0.750 | n/a / 1.000 |" in lines
    assert any(line.startswith("| timing score | teacher") and "0.800 / 0.900" in line for line in lines)
    assert any(line.startswith("| fusion (dqn) | teacher") and "0.900 / 0.950 | n/a / 0.990" in line for line in lines)
