"""A lab's deployment, for real: `mlflow server` over PostgreSQL, jobs logging through it over HTTP, kdgat reading
the database (READ_ONLY) while they write.

* 16 writer processes log runs with per-epoch metrics through the server at once while kdgat reads PostgreSQL in a
  loop: every run and metric point arrives, no writer fails, no read fails;
* `kdgat run` itself with MLFLOW_TRACKING_URI=http://... (the tiny preset on the synthetic data).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from kdgat_core.query import open_db
from tests.integration.test_mlflow_server import MlflowServer

pytestmark = pytest.mark.slow

WRITERS, RUNS_PER_WRITER, EPOCHS = 16, 2, 5

WRITER = r"""
import json, sys, time
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
uri, exp_id, writer, runs, epochs, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
c = MlflowClient(uri)
ids = []
for r in range(runs):
    run = c.create_run(exp_id, run_name=f"writer{writer}/run{r}", tags={"dataset": "synthetic", "stage": "curriculum",
                       "status": "running", "writer": str(writer)})
    rid = run.info.run_id
    c.log_batch(rid, params=[Param("train.lr", str(0.001 * (r + 1))), Param("train.seed", str(writer))])
    for e in range(1, epochs + 1):
        t = int(time.time() * 1000)
        c.log_batch(rid, metrics=[Metric("train_loss", 1.0 / e, t, e), Metric("val_loss", 1.5 / e, t, e)])
    c.log_batch(rid, metrics=[Metric("f1", 0.5 + writer / 100 + r / 1000, int(time.time() * 1000), 0)],
                tags=[RunTag("status", "complete")])
    c.set_terminated(rid, "FINISHED")
    ids.append(rid)
json.dump(ids, open(out, "w"))
"""


@pytest.fixture(scope="module")
def lab(pg_server, tmp_path_factory):
    """(server, PostgreSQL URI the server writes to, experiment id)."""
    uri = pg_server.new_store("lab_server")
    work = tmp_path_factory.mktemp("mlflow_pg_server")
    server = MlflowServer(uri, work)
    try:
        server.wait_ready()
        exp = server.post("/api/2.0/mlflow/experiments/create", {"name": "concurrent"})["experiment_id"]
        yield server, uri, exp
    finally:
        server.stop()


def test_sixteen_writers_through_the_server_while_kdgat_reads(lab, tmp_path):
    server, uri, exp = lab
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    procs = []
    for w in range(WRITERS):
        out = tmp_path / f"w{w}.json"
        procs.append(
            (
                out,
                subprocess.Popen(
                    [
                        sys.executable,
                        "-c",
                        WRITER,
                        server.base,
                        exp,
                        str(w),
                        str(RUNS_PER_WRITER),
                        str(EPOCHS),
                        str(out),
                    ],
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                ),
            )
        )
    reads, errors, done = [0], [], threading.Event()

    def reader() -> None:
        while not done.is_set():
            try:
                with open_db(uri, cache=False) as db:
                    runs = db.runs(dataset="synthetic")
                    complete = runs[runs.status == "complete"] if len(runs) else runs
                    # f1 arrives with the "complete" tag in one batch: before any run completes, "Unknown metric"
                    # is the right answer, not a failed read.
                    if len(complete):
                        db.leaderboard("f1", dataset="synthetic", rows=True)
                        db.history(complete.run_id.iloc[0], "val_loss")
                reads[0] += 1
            except Exception as exc:
                errors.append(repr(exc))
            time.sleep(0.2)

    thread = threading.Thread(target=reader)
    thread.start()
    failures = []
    try:
        for out, proc in procs:
            _, err = proc.communicate(timeout=600)
            if proc.returncode != 0:
                failures.append(err[-1500:])
    finally:
        done.set()
        thread.join(timeout=120)
    assert not failures, failures[0]
    assert not errors, errors[:3]
    assert reads[0] >= 1
    written = sorted(r for out, _ in procs for r in json.loads(out.read_text()))
    assert len(written) == WRITERS * RUNS_PER_WRITER
    with open_db(uri, cache=False) as db:
        runs = db.runs(dataset="synthetic", arrow=True).to_pylist()
        assert sorted(r["run_id"] for r in runs) == written
        assert {r["mlflow_status"] for r in runs} == {"FINISHED"} and {r["status"] for r in runs} == {"complete"}
        points = db.sql("SELECT key, count(*) AS n FROM metric_history GROUP BY key ORDER BY key")
        n = len(written)
        assert points.to_dict("list") == {"key": ["f1", "train_loss", "val_loss"], "n": [n, n * EPOCHS, n * EPOCHS]}
        board = db.leaderboard("f1", top=1, dataset="synthetic", rows=True)
        assert board[0]["run_name"] == f"writer{WRITERS - 1}/run{RUNS_PER_WRITER - 1}"


def test_kdgat_run_writes_through_the_server(lab, tiny_pipeline_db, tmp_path):
    from kdgat_core.config import STAGE_ARCH, Stage

    server, uri, _ = lab
    env = dict(tiny_pipeline_db.env, MLFLOW_TRACKING_URI=server.base, KDGAT_READ_URI=uri)
    env["KDGAT_CACHE_DIR"] = str(tmp_path / "cache")
    arch = STAGE_ARCH[Stage.AUTOENCODER].value
    res = tiny_pipeline_db.kdgat(
        "run",
        "autoencoder",
        "--preset",
        f"{arch},teacher,tiny",
        "--dataset",
        "synthetic",
        "--format",
        "json",
        env=env,
        timeout=900,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    # the reader side finds it in PostgreSQL through the read URI (the tracking URI is the server's)
    res = tiny_pipeline_db.kdgat("runs", "--stage", "autoencoder", "-f", "json", env=env)
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    assert [r["status"] for r in rows] == ["complete"] and rows[0]["model_size"] == "teacher"


def test_migrate_the_tiny_pipeline_store(tiny_pipeline_db, pg_server, tmp_path):
    """`kdgat migrate` moves a store `kdgat run` wrote (artifacts' URIs, inputs and all) and verifies it; kdgat then
    prints the same leaderboard from both."""
    p = tiny_pipeline_db
    dest = pg_server.new_store("tiny_pipeline")
    env = dict(p.env, KDGAT_CACHE_DIR=str(tmp_path / "cache"))
    res = p.kdgat("migrate", p.uri, dest, env=env, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "row counts verified; search_runs agrees on" in res.stdout
    boards = [
        p.kdgat("leaderboard", "-u", uri, "-s", "evaluation", "-f", "json", env=env).stdout for uri in (p.uri, dest)
    ]
    assert json.loads(boards[0]) == json.loads(boards[1]) and json.loads(boards[0])
