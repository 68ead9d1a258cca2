"""Fixture tracking DBs for the query-layer tests, written by MLflow's real client in a separate process.

The test process reads them through DuckDB only: a process must never open one SQLite file through both MLflow
(Python's sqlite3) and DuckDB's scanner (their SQLite copies do not see each other's locks).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# Writes a small, deterministic DB: teachers, students, KD students (teacher_run_id), seeds, histories with a repeated
# step, NaN and inf metrics, a failed, a running and a deleted run, and a run in a deleted experiment.
WRITE_FIXTURE = r"""
import sys, json
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from kdgat_core import config as C

uri = sys.argv[1] if "://" in sys.argv[1] else "sqlite:///" + sys.argv[1]
client = MlflowClient(uri)
exp = client.create_experiment(C.EXPERIMENT_NAME)
T0 = 1_700_000_000_000
clock = [0]
ids = {}

def run(dataset, size, stage, kd=False, seed=42, lr=None, metrics=None, status="complete", teacher=None,
        history=None, key=None, experiment=exp):
    clock[0] += 1
    start = T0 + clock[0] * 60_000
    cfg = C.preset(f"{C.STAGE_ARCH[C.Stage(stage)]},{size}", dataset=dataset)
    cfg.train.seed = seed
    if lr is not None:
        cfg.train.lr = lr
    cfg.kd.enabled = kd
    cfg.kd.teacher_run_id = ids[teacher] if teacher else ""
    name = cfg.run_name
    r = client.create_run(experiment, start_time=start, run_name=name)
    rid = r.info.run_id
    tags = {C.Tag.DATASET: dataset, C.Tag.STAGE: stage, C.Tag.MODEL_SIZE: size, C.Tag.USE_KD: C.bool_tag(kd),
            C.Tag.MODEL_ARCH: cfg.arch.value, C.Tag.TEACHER_RUN_ID: cfg.kd.teacher_run_id, C.Tag.RUN_ID: rid,
            C.Tag.STATUS: "running", C.Tag.START_TIME: str(start), C.Tag.GIT_COMMIT: "0123abc", C.Tag.SEED: str(seed)}
    client.log_batch(rid, params=[Param(k, str(v)) for k, v in cfg.flatten().items()],
                     tags=[RunTag(str(k), v) for k, v in tags.items()])
    for mkey, points in (history or {}).items():
        client.log_batch(rid, metrics=[Metric(mkey, v, start + 1000 * i, step) for i, (step, v) in enumerate(points)])
    end = start + 30_000
    if metrics:
        client.log_batch(rid, metrics=[Metric(k, v, end, 0) for k, v in metrics.items()])
    if status != "running":
        final = {C.Tag.STATUS: status, C.Tag.END_TIME: str(end)}
        if status == "failed":
            final[C.Tag.ERROR_MSG] = "CUDA out of memory (fixture)"
        client.log_batch(rid, tags=[RunTag(str(k), v) for k, v in final.items()])
        client.set_terminated(rid, "FINISHED" if status == "complete" else "FAILED", end_time=end)
    ids[key or name] = rid
    return rid

# val_loss step 1 is logged twice (0.45, then 0.4 later): the history keeps the newer point per step
H = {"val_loss": [(1, 0.6), (2, 0.45), (3, 0.2), (2, 0.4)], "train_loss": [(s, 1.0 / s) for s in range(1, 6)]}
for ds in ("hcrl_sa",):
    run(ds, "teacher", "autoencoder", metrics={"val_loss": 0.30, "f1": 0.81})
    run(ds, "student", "autoencoder", metrics={"val_loss": 0.36, "f1": 0.78})
    run(ds, "student", "autoencoder", kd=True, teacher=f"{ds}/teacher_autoencoder", metrics={"val_loss": 0.33, "f1": 0.79})
    run(ds, "teacher", "curriculum", history=H, metrics={"accuracy": 0.95, "f1": 0.91, "precision_": 0.9, "recall": 0.92, "auc": 0.97, "mcc": 0.88})
    run(ds, "student", "curriculum", metrics={"val_loss": 0.28, "f1": 0.86})
    run(ds, "student", "curriculum", kd=True, teacher=f"{ds}/teacher_curriculum", history=H, metrics={"accuracy": 0.94, "f1": 0.89, "precision_": 0.88, "recall": 0.9, "auc": 0.96, "mcc": 0.85})
    run(ds, "teacher", "fusion", metrics={"f1": 0.92})
    run(ds, "student", "fusion", status="running")
    run(ds, "student", "fusion", kd=True, teacher=f"{ds}/teacher_fusion", metrics={"f1": 0.90})
    run(ds, "teacher", "evaluation", seed=0, lr=0.001, metrics={"f1": 0.93, "fpr": 0.02, "test_01_known_vehicle_known_attack/f1": 0.97}, key="eval_seed0")
    run(ds, "teacher", "evaluation", seed=1, lr=0.001, metrics={"f1": 0.95, "fpr": 0.01}, key="eval_seed1")
    run(ds, "teacher", "evaluation", seed=2, lr=0.001, metrics={"f1": 0.94, "fpr": 0.03}, key="eval_seed2")
    run(ds, "teacher", "evaluation", seed=0, lr=0.0005, metrics={"f1": 0.90, "fpr": 0.04}, key="eval_lr")
    run(ds, "student", "evaluation", metrics={"f1": 0.88, "auc": float("nan"), "val_loss": float("inf"), "fpr": 0.05})
    run(ds, "student", "evaluation", kd=True, teacher="eval_seed0", metrics={"f1": 0.915, "fpr": 0.03})
    gone = run(ds, "teacher", "evaluation", seed=7, metrics={"f1": 0.99}, key="deleted_run")
    client.delete_run(gone)
run("hcrl_ch", "teacher", "autoencoder", lr=1e-5, metrics={"val_loss": 0.31, "f1": 0.80})  # "1e-05": sorts first only numerically
run("hcrl_ch", "teacher", "curriculum", metrics={"val_loss": 0.22, "f1": 0.90})
run("hcrl_ch", "student", "curriculum", status="failed")
old = client.create_experiment("old-experiment")
run("hcrl_sa", "teacher", "evaluation", seed=9, metrics={"f1": 0.999}, experiment=old, key="in_deleted_experiment")
client.delete_experiment(old)
json.dump(ids, open(sys.argv[2], "w"))
"""

# What MLflow itself answers on a DB (run in its own process): the reference the views are checked against.
DUMP_SEARCH_RUNS = r"""
import sys, json, math
import mlflow
mlflow.set_tracking_uri(sys.argv[1] if "://" in sys.argv[1] else "sqlite:///" + sys.argv[1])
def rows(df):
    out = []
    for rec in df.to_dict("records"):
        clean = {}
        for k, v in rec.items():
            if hasattr(v, "isoformat"):
                v = v.isoformat()
            elif isinstance(v, float) and math.isnan(v):
                v = "NaN"
            elif isinstance(v, float) and math.isinf(v):
                v = "inf" if v > 0 else "-inf"
            clean[k] = v
        out.append(clean)
    return out
res = {
    "all": rows(mlflow.search_runs(search_all_experiments=True)),
    "leaderboard": rows(mlflow.search_runs(search_all_experiments=True,
        filter_string="tags.dataset = 'hcrl_sa' AND tags.stage = 'evaluation'", order_by=["metrics.f1 DESC"], max_results=10)),
    "failed": rows(mlflow.search_runs(search_all_experiments=True, filter_string="tags.status = 'failed'")),
    "kd": rows(mlflow.search_runs(search_all_experiments=True, filter_string="tags.use_kd = 'True' AND tags.status = 'complete'")),
}
json.dump(res, open(sys.argv[2], "w"))
"""

# Changes a copy of the fixture the ways a live DB changes between two reads of the cache.
MUTATE_FIXTURE = r"""
import sys, json
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
uri = sys.argv[1] if "://" in sys.argv[1] else "sqlite:///" + sys.argv[1]
ids = json.load(open(sys.argv[2]))
round_ = sys.argv[3]
c = MlflowClient(uri)
exp = c.get_experiment_by_name("kd-gat-pipeline").experiment_id
if round_ == "1":
    running = ids["hcrl_sa/student_fusion"]
    c.log_batch(running, metrics=[Metric("f1", 0.87, 1_800_000_000_000, 0), Metric("train_loss", 0.5, 1_800_000_000_000, 3)])
    c.log_batch(running, tags=[RunTag("status", "complete"), RunTag("end_time", "1800000000000")])
    c.set_terminated(running, "FINISHED", end_time=1_800_000_000_000)
    # in-place edits of existing tags on finished runs (same rowid, same length: hcrl_sa -> hcrl_ch)
    c.set_tag(ids["hcrl_sa/teacher_autoencoder"], "dataset", "hcrl_ch")
    c.set_tag(ids["hcrl_sa/teacher_autoencoder"], "note", "re-labelled")
    c.delete_run(ids["hcrl_sa/student_autoencoder"])
    r = c.create_run(exp, start_time=1_800_000_100_000, run_name="set_01/teacher_autoencoder")
    c.log_batch(r.info.run_id, params=[Param("train.lr", "0.002"), Param("new.param", "x")],
                tags=[RunTag("dataset", "set_01"), RunTag("stage", "autoencoder"), RunTag("status", "running")],
                metrics=[Metric("f1", 0.5, 1_800_000_100_000, 0)])
else:
    c.restore_run(ids["hcrl_sa/student_autoencoder"])
    c.delete_tag(ids["hcrl_sa/teacher_autoencoder"], "note")
    c.log_metric(ids["hcrl_sa/teacher_curriculum"], "f1", 0.7, timestamp=1_900_000_000_000, step=5)
    c.set_tag(ids["hcrl_ch/teacher_curriculum"], "status", "failed")
"""


def run_python(code: str, *args: str, timeout: int = 180) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=str(REPO)
    )
    if proc.returncode != 0:
        raise RuntimeError(f"fixture script failed:\n{proc.stderr[-3000:]}")


@pytest.fixture(scope="session")
def fixture_db(sqlite_fixture_db) -> tuple[Path, dict]:
    """(path, {name-or-key: run_id}) of the session's read-only fixture DB. Copy it before changing it.
    A test module may override it with `store_db` to run its tests on every backend."""
    return sqlite_fixture_db


@pytest.fixture(scope="session")
def mlflow_answers(sqlite_mlflow_answers) -> dict:
    """mlflow.search_runs results on the fixture DB, from a separate process."""
    return sqlite_mlflow_answers


@pytest.fixture(scope="session")
def sqlite_fixture_db(tmp_path_factory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("query_fixture")
    db, ids = folder / "mlflow.db", folder / "ids.json"
    run_python(WRITE_FIXTURE, str(db), str(ids), timeout=600)
    return db, json.loads(ids.read_text())


@pytest.fixture(scope="session")
def sqlite_mlflow_answers(sqlite_fixture_db, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("query_mlflow") / "search_runs.json"
    run_python(DUMP_SEARCH_RUNS, str(sqlite_fixture_db[0]), str(out))
    return json.loads(out.read_text())


@pytest.fixture(scope="session")
def pg_fixture_db(pg_server, tmp_path_factory) -> tuple[str, dict]:
    """The same fixture content written by MLflow's client into PostgreSQL: (uri, {name-or-key: run_id})."""
    uri = pg_server.new_store("query_fixture")
    ids = tmp_path_factory.mktemp("query_fixture_pg") / "ids.json"
    run_python(WRITE_FIXTURE, uri, str(ids), timeout=600)
    return uri, json.loads(ids.read_text())


@pytest.fixture(scope="session")
def pg_mlflow_answers(pg_fixture_db, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("query_mlflow_pg") / "search_runs.json"
    run_python(DUMP_SEARCH_RUNS, pg_fixture_db[0], str(out), timeout=600)
    return json.loads(out.read_text())


BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    """Each backend in turn. A test marked `sqlite_only` (a SQLite file's behaviour) runs on SQLite only."""
    if request.param != "sqlite" and request.node.get_closest_marker("sqlite_only"):
        pytest.skip("a SQLite file's behaviour")
    return request.param


@pytest.fixture
def store_db(backend, request) -> tuple:
    """(path or URI, ids) of the fixture content on each backend."""
    return request.getfixturevalue("sqlite_fixture_db" if backend == "sqlite" else "pg_fixture_db")


@pytest.fixture
def store_answers(backend, request) -> dict:
    """mlflow.search_runs on `store_db`."""
    return request.getfixturevalue("sqlite_mlflow_answers" if backend == "sqlite" else "pg_mlflow_answers")


@pytest.fixture
def db_copy(fixture_db, tmp_path) -> tuple[Path, dict]:
    """A private copy of the fixture DB, for tests that change it."""
    target = tmp_path / "mlflow.db"
    shutil.copyfile(fixture_db[0], target)
    return target, fixture_db[1]


@pytest.fixture
def query_cache_dir(tmp_path, monkeypatch) -> Path:
    """Query caches (and anything else using KDGAT_CACHE_DIR) go to the test's tmp dir, never ~/.cache."""
    folder = tmp_path / "kdgat-cache"
    monkeypatch.setenv("KDGAT_CACHE_DIR", str(folder))
    return folder


# The tracking writer's sample DB (kdgat_core.tracking.sample, written through open_run), small, plus MLflow's answers.
WRITE_SAMPLE = r"""
import sys, json
from kdgat_core.tracking.sample import write_sample_runs
runs = write_sample_runs("sqlite:///" + sys.argv[1], datasets=("hcrl_sa",), seeds=(0, 1), epochs=3)
json.dump({"deleted": runs.deleted_run_ids, "failed": runs.failed_run_ids}, open(sys.argv[2], "w"))
"""


@pytest.fixture(scope="session")
def sample_db(tmp_path_factory) -> tuple[Path, dict, dict]:
    """(path, ids written, mlflow.search_runs answers) of a DB written by kdgat's own tracking writer."""
    folder = tmp_path_factory.mktemp("query_sample")
    db, ids, answers = folder / "mlflow.db", folder / "ids.json", folder / "search_runs.json"
    try:
        run_python(WRITE_SAMPLE, str(db), str(ids), timeout=300)
    except RuntimeError as exc:
        from tests.conftest import require

        require(False, f"kdgat_core.tracking.sample could not write a DB: {str(exc)[-300:]}")
    run_python(DUMP_SEARCH_RUNS, str(db), str(answers))
    return db, json.loads(ids.read_text()), json.loads(answers.read_text())
