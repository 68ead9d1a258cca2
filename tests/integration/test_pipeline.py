"""The tiny pipeline end to end on synthetic traffic: teacher, student and distilled student through all four stages,
into a temporary MLflow SQLite DB that `mlflow.search_runs` and `kdgat leaderboard` (each in its own process) read back.
Then bad inputs: those checkable up front record no run; those that fail after a run started leave it failed."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")

from kdgat_core.config import (
    FUSION_BEATS_BEST_TAG,
    TEST_SPLITS_BASE,
    KdgatError,
    Metric,
    PipelineConfig,
    Stage,
    preset,
    scenario_metric,
)
from tests.conftest import require

STAGE_PRESETS = (("autoencoder", "vgae"), ("curriculum", "gat"), ("fusion", "dqn"), ("evaluation", "eval"))
ROLES = (("teacher", False), ("student", False), ("student", True))


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    from kdgat_core.data.synthetic import write_dataset
    from kdgat_core.stages import run_stage

    root = tmp_path_factory.mktemp("pipeline")
    write_dataset(root / "data", "synthetic", seed=0)
    mp = pytest.MonkeyPatch()
    mp.setenv("KDGAT_CACHE_DIR", str(root / "cache"))
    uri = f"sqlite:///{root / 'mlflow.db'}"
    results: dict[tuple[str, bool, str], tuple[str, dict]] = {}
    started = time.perf_counter()
    for size, kd in ROLES:
        for stage, arch in STAGE_PRESETS:
            cfg = preset(f"{arch},{size},tiny", dataset="synthetic")
            cfg.kd.enabled = kd
            r = run_stage(cfg, tracking_uri=uri, data_root=str(root / "data"))
            results[(size, kd, stage)] = (r.run_id, r.metrics)
    seconds = time.perf_counter() - started
    yield {"root": root, "uri": uri, "results": results, "seconds": seconds, "data_root": str(root / "data")}
    mp.undo()


def _mlflow_runs(uri: str) -> list[dict]:
    code = (
        "import json, sys, mlflow\n"
        "mlflow.set_tracking_uri(sys.argv[1])\n"
        "df = mlflow.search_runs(experiment_names=['kd-gat-pipeline'])\n"
        "print(df.to_json(orient='records'))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, uri], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_all_stages_complete_and_mlflow_reads_them(pipeline):
    runs = {r["run_id"]: r for r in _mlflow_runs(pipeline["uri"])}
    ours = {run_id for run_id, _ in pipeline["results"].values()}
    assert ours <= set(runs)
    for (size, kd, stage), (run_id, _) in pipeline["results"].items():
        r = runs[run_id]
        assert r["status"] == "FINISHED"
        assert r["tags.status"] == "complete" and r["tags.stage"] == stage and r["tags.model_size"] == size
        assert r["tags.use_kd"] == str(kd)
        assert r["tags.mlflow.runName"] == f"synthetic/{size}_{stage}{'_kd' if kd else ''}"
        assert r["metrics.epoch_seconds"] is not None or stage == "evaluation"
    # the distilled students name their teachers; the curriculum names the VGAE it ranked normals with
    res = pipeline["results"]
    for stage in ("autoencoder", "curriculum", "fusion", "evaluation"):
        assert runs[res[("student", True, stage)][0]]["tags.teacher_run_id"] == res[("teacher", False, stage)][0]
    assert (
        runs[res[("teacher", False, "curriculum")][0]]["tags.autoencoder_run_id"]
        == res[("teacher", False, "autoencoder")][0]
    )
    assert (
        runs[res[("student", True, "curriculum")][0]]["tags.autoencoder_run_id"]
        == res[("student", True, "autoencoder")][0]
    )
    assert runs[res[("teacher", False, "fusion")][0]][f"tags.{FUSION_BEATS_BEST_TAG}"] in ("True", "False")


def test_evaluation_logs_every_scenario_and_artifacts(pipeline):
    run_id, metrics = pipeline["results"][("teacher", False, "evaluation")]
    for scenario in TEST_SPLITS_BASE:
        for m in (
            Metric.F1,
            Metric.ACCURACY,
            Metric.PRECISION,
            Metric.MCC,
            Metric.SPECIFICITY,
            Metric.FPR,
            Metric.DR_AT_FPR_1E2,
            Metric.DR_AT_FPR_1E3,
            Metric.PR_AUC,
        ):
            assert scenario_metric(scenario, m) in metrics
        assert 0.0 <= metrics[scenario_metric(scenario, "gat_f1")] <= 1.0
    from kdgat_core.tracking import run_artifact_dir

    folder = run_artifact_dir(run_id, pipeline["uri"])
    assert folder.parts[-4:-1] == ("experimentruns", "synthetic", "teacher_evaluation")
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "metrics.json"} <= names
    assert {f"confusion_{s}.png" for s in TEST_SPLITS_BASE} <= names and {
        f"roc_{s}.png" for s in TEST_SPLITS_BASE
    } <= names
    assert (folder / "confusion_test_01_known_vehicle_known_attack.png").read_bytes()[:4] == b"\x89PNG"
    for stage in ("autoencoder", "curriculum", "fusion"):
        train_dir = run_artifact_dir(pipeline["results"][("teacher", False, stage)][0], pipeline["uri"])
        assert (train_dir / "best.pt").stat().st_size > 0 and (train_dir / "history.png").exists()
    saved = PipelineConfig.from_dict(json.loads((folder / "config.json").read_text()))
    assert saved.stage == "evaluation" and saved.dataset == "synthetic"


def test_students_are_smaller_and_kd_logs_both_sizes(pipeline):
    res = pipeline["results"]
    for stage in ("autoencoder", "curriculum"):
        teacher = res[("teacher", False, stage)][1][Metric.NUM_PARAMETERS.value]
        student = res[("student", True, stage)][1]
        assert student[Metric.TEACHER_NUM_PARAMETERS.value] == teacher
        assert student[Metric.NUM_PARAMETERS.value] * 2 < teacher


def test_kdgat_leaderboard_reads_the_pipeline(pipeline):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "kdgat_core.cli",
            "leaderboard",
            "--metric",
            "f1",
            "--stage",
            "evaluation",
            "--tracking-uri",
            pipeline["uri"],
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    require("No such command" not in proc.stderr, "kdgat leaderboard is not built yet")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    eval_runs = {pipeline["results"][(s, kd, "evaluation")][0] for s, kd in ROLES}
    assert {r["run_id"] for r in rows} == eval_runs
    by_id = {r["run_id"]: r for r in rows}
    for size, kd in ROLES:
        run_id, metrics = pipeline["results"][(size, kd, "evaluation")]
        assert abs(by_id[run_id]["f1"] - metrics["f1"]) < 1e-9


# --- bad input after a run started: the run ends failed, with the reason --------------------------------------------


def test_missing_prerequisite_records_no_run(tmp_path, pipeline):
    from kdgat_core.stages import run_stage

    uri = f"sqlite:///{tmp_path / 'empty.db'}"
    cfg = preset("gat,teacher,tiny", dataset="synthetic")
    with pytest.raises(KdgatError, match="needs a complete autoencoder run of synthetic"):
        run_stage(cfg, tracking_uri=uri, data_root=pipeline["data_root"])
    assert not (tmp_path / "empty.db").exists()  # checked before a run was opened: nothing written


def test_kd_without_any_teacher_starts_nothing(tmp_path, pipeline):
    from kdgat_core.stages import run_stage

    uri = f"sqlite:///{tmp_path / 'empty.db'}"
    cfg = preset("vgae,student,tiny", dataset="synthetic")
    cfg.kd.enabled = True
    with pytest.raises(KdgatError, match="Knowledge distillation needs a teacher"):
        run_stage(cfg, tracking_uri=uri, data_root=pipeline["data_root"])


def test_teacher_of_another_architecture_records_no_run(pipeline):
    from kdgat_core.stages import run_stage

    before = len(_mlflow_runs(pipeline["uri"]))
    cfg = preset("gat,student,tiny", dataset="synthetic")
    cfg.kd.enabled = True
    cfg.kd.teacher_run_id = pipeline["results"][("teacher", False, "autoencoder")][0]  # a VGAE, not a GAT
    with pytest.raises(KdgatError, match="a curriculum student needs a curriculum"):
        run_stage(cfg, tracking_uri=pipeline["uri"], data_root=pipeline["data_root"])
    assert len(_mlflow_runs(pipeline["uri"])) == before  # refused before a run was opened


def test_corrupt_checkpoint_is_one_sentence_and_a_failed_run(pipeline):
    from kdgat_core.stages import run_stage
    from kdgat_core.tracking import run_artifact_dir

    vgae = run_stage(
        preset("vgae,student,tiny", dataset="synthetic"), tracking_uri=pipeline["uri"], data_root=pipeline["data_root"]
    )
    (Path(run_artifact_dir(vgae.run_id, pipeline["uri"])) / "best.pt").write_bytes(b"not a checkpoint")
    cfg = preset("gat,student,tiny", dataset="synthetic").override([f"train.autoencoder_run_id={vgae.run_id}"])
    with pytest.raises(KdgatError, match="is corrupt or unreadable"):
        run_stage(cfg, tracking_uri=pipeline["uri"], data_root=pipeline["data_root"])
    failed = [
        r
        for r in _mlflow_runs(pipeline["uri"])
        if r["tags.mlflow.runName"] == "synthetic/student_curriculum" and r["status"] == "FAILED"
    ]
    assert len(failed) == 1 and "corrupt" in failed[0]["tags.error_msg"]


def test_kdgat_run_cli_trains_and_reports(pipeline):
    """The command line itself: one real stage through `python -m kdgat_core.cli run`."""
    env = {**__import__("os").environ, "KDGAT_CACHE_DIR": str(pipeline["root"] / "cache")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "kdgat_core.cli",
            "run",
            "fusion",
            "--preset",
            "dqn,teacher,tiny",
            "--dataset",
            "synthetic",
            "--tracking-uri",
            pipeline["uri"],
            "--data-root",
            pipeline["data_root"],
            "-O",
            "dqn.episodes=2",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    rows = {r["metric"]: r["value"] for r in json.loads(proc.stdout)}
    assert rows["run_name"] == "synthetic/teacher_fusion" and len(rows["run_id"]) == 32
    assert "epoch 2/2" in proc.stderr  # per-episode progress on stderr
    assert Stage.FUSION.value in rows["run_name"]
