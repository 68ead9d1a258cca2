"""The tracking writer against real MLflow SQLite files: conventions, exit handling, artifacts, lookups."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

mlflow = pytest.importorskip("mlflow")

from kdgat_core.config import (  # noqa: E402
    EXPERIMENT_NAME,
    KdgatError,
    Metric,
    MlflowStatus,
    RunStatus,
    Tag,
    preset,
    scenario_metric,
)
from kdgat_core.tracking import (  # noqa: E402
    find_run,
    load_run_config,
    open_run,
    run_artifact_dir,
    with_retry,
)
from kdgat_core.tracking.run import MAX_ERROR_LENGTH, MAX_PARAM_LENGTH  # noqa: E402
from kdgat_core.tracking.sample import write_sample_runs  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def _uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture(scope="module")
def template_db(tmp_path_factory) -> Path:
    """One migrated DB with the experiment: MLflow's migrations take seconds, a copy takes milliseconds."""
    from kdgat_core.tracking import get_store

    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    get_store(f"sqlite:///{path}")
    return path


@pytest.fixture
def uri(tmp_path, template_db) -> str:
    shutil.copyfile(template_db, tmp_path / "mlflow.db")
    return _uri(tmp_path)


def _client(uri: str):
    return mlflow.MlflowClient(tracking_uri=uri)


def _search(uri: str, filter_string: str, **kw):
    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(experiment_names=[EXPERIMENT_NAME], filter_string=filter_string, **kw)


def test_open_run_writes_tags_params_history_and_final_metrics(tmp_path):
    uri = _uri(tmp_path)
    cfg = preset("gat,teacher", dataset="hcrl_sa")
    cfg.train.seed = 7
    with open_run(cfg, tracking_uri=uri, extra_tags={"note": "first"}) as run:
        for epoch in range(4):
            run.log_metrics({"train_loss": 1.0 / (epoch + 1), "val_f1": 0.5 + epoch / 10}, step=epoch)
        run.log_final(
            {"f1": 0.91, "precision_": 0.9, scenario_metric("test_02_unknown_vehicle_known_attack", "f1"): 0.8}
        )
        assert _client(uri).get_run(run.run_id).data.tags[Tag.STATUS.value] == RunStatus.RUNNING.value

    got = _client(uri).get_run(run.run_id)
    tags = got.data.tags
    assert got.info.status == MlflowStatus.FINISHED.value
    assert got.info.run_name == "hcrl_sa/teacher_curriculum"
    assert {
        Tag.DATASET: "hcrl_sa",
        Tag.STAGE: "curriculum",
        Tag.MODEL_SIZE: "teacher",
        Tag.USE_KD: "False",
        Tag.MODEL_ARCH: "gat",
        Tag.RUN_ID: run.run_id,
        Tag.STATUS: "complete",
        Tag.SEED: "7",
    }.items() <= {Tag(k): v for k, v in tags.items() if k in Tag.values()}.items()
    assert tags["note"] == "first"
    assert Tag.ERROR_MSG.value not in tags and Tag.TEACHER_RUN_ID.value not in tags
    assert tags[Tag.START_TIME.value] <= tags[Tag.END_TIME.value]
    assert tags[Tag.START_TIME.value].endswith("+00:00") and "T" in tags[Tag.START_TIME.value]
    assert tags[Tag.ARTIFACT_DIR.value] == str(run.artifact_dir)
    # every config field is a param; lists are JSON
    assert set(got.data.params) == set(cfg.flatten())
    assert json.loads(got.data.params["vgae.hidden_dims"]) == cfg.vgae.hidden_dims
    assert got.data.params["train.lr"] == str(cfg.train.lr)
    history = _client(uri).get_metric_history(run.run_id, "train_loss")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [(e, 1.0 / (e + 1)) for e in range(4)]
    assert got.data.metrics["f1"] == 0.91
    assert got.data.metrics["test_02_unknown_vehicle_known_attack/f1"] == 0.8
    # config.json sits in the artifact folder next to the DB, and MLflow has a copy too
    assert run.artifact_dir == (tmp_path / "experimentruns" / "hcrl_sa" / "teacher_curriculum" / run.run_id)
    assert json.loads((run.artifact_dir / "config.json").read_text()) == cfg.to_dict()
    assert "config.json" in [a.path for a in _client(uri).list_artifacts(run.run_id)]
    # the init lock is a sidecar, not a change to the DB
    assert (tmp_path / "mlflow.db.kdgat-init.lock").exists()


def test_final_metric_overrides_history_value_for_latest(tmp_path, uri):
    with open_run(preset("vgae,student"), tracking_uri=uri) as run:
        for epoch in range(3):
            run.log_metrics({Metric.VAL_LOSS.value: 1.0 + epoch}, step=epoch)
        run.log_final({Metric.VAL_LOSS.value: 0.25})
    # the runs view and MLflow show the final value, not the last epoch's
    assert _client(uri).get_run(run.run_id).data.metrics[Metric.VAL_LOSS.value] == 0.25


def test_long_and_many_params_are_logged_within_mlflow_limits(tmp_path, uri):
    with open_run(preset("dqn,teacher"), tracking_uri=uri) as run:
        run.log_params({f"extra.p{i:03d}": i for i in range(250)})
        run.log_params({"extra.long": "x" * 2000, "extra.list": [1, 2, 3]})
    params = _client(uri).get_run(run.run_id).data.params
    assert sum(k.startswith("extra.p") for k in params) == 250
    assert len(params["extra.long"]) == MAX_PARAM_LENGTH and params["extra.long"].endswith("...")
    assert params["extra.list"] == "[1, 2, 3]"


def test_exception_marks_run_failed_with_one_line_error_and_reraises(tmp_path, uri):
    with pytest.raises(ValueError):
        with open_run(preset("gat,student"), tracking_uri=uri) as run:
            run.log_metrics({"train_loss": 0.5}, step=0)
            raise ValueError("bad batch shape\nsecond line of detail" + "y" * 1000)
    got = _client(uri).get_run(run.run_id)
    assert got.info.status == MlflowStatus.FAILED.value
    assert got.data.tags[Tag.STATUS.value] == RunStatus.FAILED.value
    err = got.data.tags[Tag.ERROR_MSG.value]
    assert err == "ValueError: bad batch shape" and "\n" not in err
    assert Tag.END_TIME.value in got.data.tags
    assert got.data.metrics["train_loss"] == 0.5  # what was logged before the failure stays

    with pytest.raises(RuntimeError):
        with open_run(preset("gat,student"), tracking_uri=uri) as run2:
            raise RuntimeError("z" * 5000)
    assert len(_client(uri).get_run(run2.run_id).data.tags[Tag.ERROR_MSG.value]) == MAX_ERROR_LENGTH


def test_keyboard_interrupt_marks_run_killed_and_restores_sigterm_handler(tmp_path, uri):
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        with open_run(preset("gat,teacher"), tracking_uri=uri) as run:
            assert signal.getsignal(signal.SIGTERM) is not before
            raise KeyboardInterrupt
    assert signal.getsignal(signal.SIGTERM) is before
    got = _client(uri).get_run(run.run_id)
    assert got.info.status == MlflowStatus.KILLED.value
    assert got.data.tags[Tag.STATUS.value] == RunStatus.FAILED.value
    assert got.data.tags[Tag.ERROR_MSG.value] == "killed by SIGINT"


CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from kdgat_core.config import preset
    from kdgat_core.tracking import open_run
    uri, marker = sys.argv[1], Path(sys.argv[2])
    with open_run(preset("gat,teacher"), tracking_uri=uri) as run:
        run.log_metrics({"train_loss": 0.9}, step=0)
        marker.write_text(run.run_id)
        try:
            while True:            # a training loop that swallows ordinary errors must still be stopped
                try:
                    time.sleep(0.05)
                except Exception:
                    pass
        finally:
            Path(str(marker) + ".unwound").write_text("yes")
""")


def test_sigterm_in_child_process_leaves_run_killed_with_end_time(tmp_path, uri):
    marker = tmp_path / "run_id.txt"
    env = {**os.environ, "SLURM_JOB_ID": "4242"}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, uri, str(marker)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 90
        while not marker.exists() and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.05)
        assert marker.exists(), child.communicate(timeout=5)[1].decode()[-2000:]
        time.sleep(0.2)
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 128 + signal.SIGTERM, err.decode()[-2000:]
    assert Path(str(marker) + ".unwound").exists()  # finally blocks inside the run ran
    got = _client(uri).get_run(marker.read_text())
    assert got.info.status == MlflowStatus.KILLED.value
    assert got.info.end_time is not None
    tags = got.data.tags
    assert tags[Tag.STATUS.value] == RunStatus.FAILED.value
    assert tags[Tag.ERROR_MSG.value] == "killed by SIGTERM"
    assert tags[Tag.END_TIME.value] >= tags[Tag.START_TIME.value]
    assert tags[Tag.SLURM_JOB_ID.value] == "4242"
    assert got.data.metrics["train_loss"] == 0.9


def test_rerun_gets_its_own_artifact_folder(tmp_path, uri):
    cfg = preset("gat,teacher")
    with open_run(cfg, tracking_uri=uri) as first:
        (first.artifact_dir / "model.pt").write_bytes(b"first weights")
        first.log_json("summary.json", {"f1": 0.9})
    with open_run(cfg, tracking_uri=uri) as second:
        (second.artifact_dir / "model.pt").write_bytes(b"second weights")
        second.log_json("summary.json", {"f1": 0.8})
    assert first.artifact_dir != second.artifact_dir
    assert first.artifact_dir.parent == second.artifact_dir.parent  # same <dataset>/<size>_<stage> folder
    assert (first.artifact_dir / "model.pt").read_bytes() == b"first weights"
    assert json.loads((first.artifact_dir / "summary.json").read_text()) == {"f1": 0.9}
    assert run_artifact_dir(first.run_id, tracking_uri=uri) == first.artifact_dir


def test_log_artifact_copies_into_the_run_folder(tmp_path, uri):
    src = tmp_path / "confusion.csv"
    src.write_text("tp,fp\n1,2\n")
    plots = tmp_path / "plots"
    plots.mkdir()
    (plots / "roc.txt").write_text("roc")
    with open_run(preset("vgae,teacher"), tracking_uri=uri) as run:
        dest = run.log_artifact(src)
        run.log_artifact(plots)
    assert dest == run.artifact_dir / "confusion.csv" and dest.read_text() == "tp,fp\n1,2\n"
    assert (run.artifact_dir / "plots" / "roc.txt").read_text() == "roc"
    logged = [a.path for a in _client(uri).list_artifacts(run.run_id)]
    assert "confusion.csv" in logged and "plots" in logged
    assert [a.path for a in _client(uri).list_artifacts(run.run_id, "plots")] == ["plots/roc.txt"]
    with pytest.raises(KdgatError):
        with open_run(preset("vgae,teacher"), tracking_uri=uri) as run:
            run.log_artifact(tmp_path / "missing.bin")


def test_kd_run_needs_teacher_and_records_it(tmp_path, uri):
    cfg = preset("gat,student")
    cfg.kd.enabled = True
    with pytest.raises(KdgatError, match="teacher"):
        with open_run(cfg, tracking_uri=uri):
            pass
    cfg.kd.teacher_run_id = "auto"  # the job-time placeholder must be resolved first
    with pytest.raises(KdgatError, match="resolved"):
        with open_run(cfg, tracking_uri=uri):
            pass
    cfg.kd.teacher_run_id = "abc123"
    with open_run(cfg, tracking_uri=uri) as run:
        pass
    tags = _client(uri).get_run(run.run_id).data.tags
    assert tags[Tag.TEACHER_RUN_ID.value] == "abc123" and tags[Tag.USE_KD.value] == "True"
    assert run.artifact_dir.parent.name == "student_curriculum_kd"


def test_find_run_returns_newest_matching_and_never_creates_a_db(tmp_path, uri):
    missing = tmp_path / "nowhere" / "mlflow.db"
    assert find_run("hcrl_sa", "curriculum", "teacher", tracking_uri=f"sqlite:///{missing}") is None
    assert not missing.exists() and not missing.parent.exists()

    ids = []
    for _ in range(2):
        with open_run(preset("gat,teacher"), tracking_uri=uri) as run:
            ids.append(run.run_id)
        time.sleep(0.01)
    with pytest.raises(RuntimeError):
        with open_run(preset("gat,teacher"), tracking_uri=uri):
            raise RuntimeError("crash")
    assert find_run("hcrl_sa", "curriculum", "teacher", tracking_uri=uri) == ids[-1]
    assert find_run("hcrl_sa", "curriculum", "teacher", use_kd=True, tracking_uri=uri) is None
    assert find_run("hcrl_sa", "fusion", "teacher", tracking_uri=uri) is None
    assert find_run("hcrl_sa", "curriculum", "teacher", status=RunStatus.FAILED, tracking_uri=uri) not in ids


def test_load_run_config_round_trips_from_config_json_and_from_params(tmp_path, uri):
    cfg = preset("vgae,student", dataset="set_01").override(["train.lr=0.0003", "vgae.hidden_dims=64,32"])
    with open_run(cfg, tracking_uri=uri) as run:
        pass
    assert load_run_config(run.run_id, tracking_uri=uri) == cfg
    (run.artifact_dir / "config.json").unlink()  # older runs: rebuilt from params
    assert load_run_config(run.run_id, tracking_uri=uri) == cfg
    with pytest.raises(KdgatError, match="No run"):
        load_run_config("0" * 32, tracking_uri=uri)


def test_with_retry_outlasts_lock_errors_and_gives_up_with_a_sentence():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise sqlite3.OperationalError("database is locked")
        return "ok"

    assert with_retry(flaky) == "ok" and len(calls) == 3

    def other():
        calls.append(2)
        raise sqlite3.OperationalError("no such table: runs")

    with pytest.raises(sqlite3.OperationalError):
        with_retry(other)
    assert calls.count(2) == 1  # not a lock error: no retry

    def always_locked():
        raise sqlite3.OperationalError("database is locked")

    with pytest.raises(KdgatError, match="locked"):
        with_retry(always_locked, deadline_s=0.3)


@pytest.fixture(scope="module")
def sample_db(tmp_path_factory, template_db):
    folder = tmp_path_factory.mktemp("sample")
    shutil.copyfile(template_db, folder / "sample.db")
    uri = f"sqlite:///{folder / 'sample.db'}"
    return write_sample_runs(uri, datasets=("hcrl_sa", "set_01"), seeds=(0, 1), epochs=3)


def test_sample_runs_answer_the_established_filters(sample_db):
    uri = sample_db.tracking_uri
    evals = _search(uri, "tags.dataset = 'hcrl_sa' AND tags.stage = 'evaluation'")
    assert len(evals) == 2 * 3  # seeds x (teacher, student, KD student); the deleted run is hidden
    assert set(evals["status"]) == {"FINISHED"}
    kd = _search(uri, "tags.use_kd = 'True' AND tags.status = 'complete'")
    assert len(kd) == 2 * 2 * 4  # datasets x seeds x stages
    failed = _search(uri, "tags.status = 'failed'")
    assert list(failed["run_id"]) == sample_db.failed_run_ids
    assert failed["status"].iloc[0] == "FAILED" and failed["tags.error_msg"].iloc[0].startswith("RuntimeError")
    # lineage: each KD student's teacher is found by the teacher's own run_id tag
    for key, student in sample_db.kd_students.items():
        teacher_id = _client(uri).get_run(student).data.tags[Tag.TEACHER_RUN_ID.value]
        assert teacher_id == sample_db.teachers[key]
        hit = _search(uri, f"tags.run_id = '{teacher_id}'")
        assert list(hit["run_id"]) == [teacher_id] and hit["tags.stage"].iloc[0] == key[2]


def test_sample_runs_have_histories_scenarios_sweep_and_a_deleted_run(sample_db):
    uri = sample_db.tracking_uri
    client = _client(uri)
    everything = _search(uri, "", run_view_type=3)  # ALL: active and deleted
    assert set(everything["run_id"]) == set(sample_db.run_ids)
    assert len(_search(uri, "")) == len(sample_db.visible_run_ids)
    assert client.get_run(sample_db.deleted_run_ids[0]).info.lifecycle_stage == "deleted"

    teacher = sample_db.teachers[("set_01", 0, "curriculum")]
    for key in ("train_loss", "val_loss", "val_f1"):
        assert sorted(m.step for m in client.get_metric_history(teacher, key) if m.step < 3) == [0, 1, 2]
    evaluation = client.get_run(sample_db.teachers[("set_01", 1, "evaluation")]).data.metrics
    for split in ("test_05_suppress", "test_06_masquerade", "test_01_known_vehicle_known_attack"):
        assert 0.3 <= evaluation[scenario_metric(split, "f1")] <= 1.0
    for metric in ("f1", "accuracy", "precision_", "recall", "auc", "mcc"):
        assert metric in evaluation
    # KD students land between plain students and teachers, on average
    f1 = {k: client.get_run(v).data.metrics["f1"] for k, v in sample_db.kd_students.items() if k[2] == "evaluation"}
    t1 = {k: client.get_run(sample_db.teachers[k]).data.metrics["f1"] for k in f1}
    assert sum(f1.values()) < sum(t1.values())
    lrs = {client.get_run(r).data.params["train.lr"] for r in sample_db.sweep_run_ids}
    assert lrs == {"0.0001", "0.0003", "0.003"}


def test_log_figure_saves_a_matplotlib_figure(tmp_path, uri):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    with open_run(preset("gat,teacher"), tracking_uri=uri) as run:
        dest = run.log_figure("figures/roc.png", fig)
    plt.close(fig)
    assert dest == run.artifact_dir / "figures" / "roc.png"
    assert dest.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [a.path for a in _client(uri).list_artifacts(run.run_id, "figures")] == ["figures/roc.png"]


def test_a_sqlite_file_that_is_not_mlflow_is_refused_and_left_unchanged(tmp_path):
    other = tmp_path / "inventory.db"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE parts (name TEXT)")
    con.commit()
    con.close()
    before = other.read_bytes()
    with pytest.raises(KdgatError, match="not an MLflow tracking database"):
        with open_run(preset("gat,teacher"), tracking_uri=f"sqlite:///{other}"):
            pass
    with pytest.raises(KdgatError, match="not an MLflow tracking database"):
        find_run("hcrl_sa", "curriculum", "teacher", tracking_uri=f"sqlite:///{other}")
    assert other.read_bytes() == before

    blank = tmp_path / "blank.db"
    blank.touch()
    assert find_run("hcrl_sa", "curriculum", "teacher", tracking_uri=f"sqlite:///{blank}") is None
    assert blank.stat().st_size == 0  # a lookup never migrates a file


def test_reconcile_marks_only_runs_whose_job_ended_failed_and_is_idempotent(tmp_path, uri):
    """A SIGKILLed job never closes its run; reconcile gets the ended jobs from the scheduler side as plain data."""
    from kdgat_core.tracking import get_store, reconcile

    store = get_store(uri)
    client = _client(uri)

    def running_run(name: str, job_id: str | None) -> str:
        tags = {Tag.STATUS.value: RunStatus.RUNNING.value, **({Tag.SLURM_JOB_ID.value: job_id} if job_id else {})}
        return client.create_run(store.experiment_id, run_name=name, tags=tags).info.run_id

    killed = running_run("killed", "4242")
    alive = running_run("alive", "4243")
    untracked = running_run("no job", None)
    ended = {"4242": "OUT_OF_MEMORY", "9999": "COMPLETED"}

    planned = reconcile(ended, uri, dry_run=True)
    assert [(r.run_id, r.job_id, r.job_state) for r in planned] == [(killed, "4242", "OUT_OF_MEMORY")]
    assert client.get_run(killed).data.tags[Tag.STATUS.value] == RunStatus.RUNNING.value  # a dry run writes nothing

    assert [r.run_id for r in reconcile(ended, uri)] == [killed]
    got = client.get_run(killed)
    assert got.info.status == MlflowStatus.FAILED.value
    assert got.data.tags[Tag.STATUS.value] == RunStatus.FAILED.value
    assert "job 4242 ended OUT_OF_MEMORY" in got.data.tags[Tag.ERROR_MSG.value]
    for other in (alive, untracked):
        assert client.get_run(other).data.tags[Tag.STATUS.value] == RunStatus.RUNNING.value
    assert reconcile(ended, uri) == []
