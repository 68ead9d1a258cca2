"""`mlflow server` (the web UI users already know) serves a kdgat-written DB: runs, tags, params, metrics and
metric histories come back through its REST API as `kdgat run` wrote them.

The server runs on loopback, on a free port, over a copy of the tiny pipeline DB, in its own process group so that
its uvicorn worker is stopped with it. Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from kdgat_core.config import (
    EXPERIMENT_NAME,
    Metric,
    MlflowStatus,
    ModelSize,
    RunStatus,
    Stage,
    Tag,
    bool_tag,
)
from tests.conftest import require

pytestmark = pytest.mark.slow

# A cold `mlflow server` imports MLflow twice (CLI, then the uvicorn worker): about 10 s idle, minutes on busy cores.
STARTUP_TIMEOUT_S = 420
REQUEST_TIMEOUT_S = 60
STOP_TIMEOUT_S = 20
GRACE_S = 5  # a throwaway server that has not exited this long after SIGTERM is killed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    def __init__(self, db: Path | str, workdir: Path):  # a SQLite file, or a database URI (PostgreSQL)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "mlflow-server.log"
        exe = Path(sys.executable).parent / "mlflow"
        require(exe.is_file(), f"the mlflow command is not installed next to {sys.executable}")
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        # tracking only: no job runner (7 huey consumer processes, each importing MLflow, for MLflow's GenAI jobs)
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        self._log = open(self.log, "wb")
        self.proc = subprocess.Popen(
            [
                str(exe),
                "server",
                "--backend-store-uri",
                db if isinstance(db, str) else f"sqlite:///{db}",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
                "--default-artifact-root",
                str(workdir / "artifacts"),
            ],
            cwd=workdir,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def wait_ready(self) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < STARTUP_TIMEOUT_S:
            if self.proc.poll() is not None:
                pytest.fail(f"mlflow server exited with {self.proc.returncode} before answering:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.base}/health", timeout=5) as resp:
                    if resp.status == 200:
                        return time.monotonic() - t0
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.5)
        pytest.fail(f"mlflow server did not answer within {STARTUP_TIMEOUT_S} s:\n{self.log_tail()}")

    def get(self, path: str, **query) -> dict:
        url = f"{self.base}{path}?{urllib.parse.urlencode(query)}"
        with urllib.request.urlopen(url, timeout=REQUEST_TIMEOUT_S) as resp:
            return json.loads(resp.read())

    def post(self, path: str, body: dict) -> dict:
        req = urllib.request.Request(
            f"{self.base}{path}",
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT_S) as resp:
            return json.loads(resp.read())

    def search(
        self, experiment_id: str, filter_: str = "", order_by: list[str] | None = None, max_results: int = 1000
    ) -> list[dict]:
        runs, token = [], None
        while True:
            body = {
                "experiment_ids": [experiment_id],
                "filter": filter_,
                "max_results": max_results,
                "order_by": order_by or [],
            }
            if token:
                body["page_token"] = token
            page = self.post("/api/2.0/mlflow/runs/search", body)
            runs += page.get("runs", [])
            token = page.get("next_page_token")
            if not token or len(runs) >= max_results:
                return runs

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=GRACE_S)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        self._log.close()


def tags_of(run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def metrics_of(run: dict) -> dict[str, float]:
    return {m["key"]: m["value"] for m in run["data"].get("metrics", [])}


def params_of(run: dict) -> dict[str, str]:
    return {p["key"]: p["value"] for p in run["data"].get("params", [])}


@pytest.fixture(scope="module")
def server(tiny_pipeline_db, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("mlflow_server")
    db = tiny_pipeline_db.copy_db(workdir)
    srv = MlflowServer(db, workdir)
    try:
        srv.startup_s = srv.wait_ready()
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def experiment_id(server) -> str:
    exp = server.get("/api/2.0/mlflow/experiments/get-by-name", experiment_name=EXPERIMENT_NAME)["experiment"]
    assert exp["name"] == EXPERIMENT_NAME and exp["lifecycle_stage"] == "active"
    return exp["experiment_id"]


def test_every_run_comes_back_with_its_tags_and_metrics(server, experiment_id, tiny_pipeline_db):
    p = tiny_pipeline_db
    runs = {r["info"]["run_id"]: r for r in server.search(experiment_id)}
    assert set(runs) == p.complete_run_ids | {p.failed_run_id}
    for (size, stage, kd), run_id in p.run_ids.items():
        run = runs[run_id]
        tags = tags_of(run)
        assert run["info"]["status"] == MlflowStatus.FINISHED.value
        assert run["info"]["run_name"] == tags["mlflow.runName"]
        assert {
            k: tags.get(k) for k in (Tag.DATASET, Tag.STAGE, Tag.MODEL_SIZE, Tag.USE_KD, Tag.STATUS, Tag.RUN_ID)
        } == {
            Tag.DATASET: "synthetic",
            Tag.STAGE: stage,
            Tag.MODEL_SIZE: size,
            Tag.USE_KD: bool_tag(kd),
            Tag.STATUS: RunStatus.COMPLETE.value,
            Tag.RUN_ID: run_id,
        }
        if kd:
            assert tags[Tag.TEACHER_RUN_ID] == p.run_id(ModelSize.TEACHER.value, stage)
        served = metrics_of(run)
        for name, value in p.metrics[(size, stage, kd)].items():
            assert served[name] == pytest.approx(value, rel=1e-9, abs=1e-12, nan_ok=True), (run_id, name)
        assert params_of(run)["dataset"] == "synthetic"


def test_the_failed_run_is_served_as_failed(server, experiment_id, tiny_pipeline_db):
    failed = server.search(experiment_id, filter_=f"tags.{Tag.STATUS} = '{RunStatus.FAILED}'")
    assert [r["info"]["run_id"] for r in failed] == [tiny_pipeline_db.failed_run_id]
    assert failed[0]["info"]["status"] == MlflowStatus.FAILED.value
    assert tiny_pipeline_db.failed_reason and tiny_pipeline_db.failed_reason in tags_of(failed[0])[Tag.ERROR_MSG]


def test_the_leaderboard_query_through_the_server(server, experiment_id, tiny_pipeline_db):
    p = tiny_pipeline_db
    best = server.search(
        experiment_id,
        filter_="tags.dataset = 'synthetic' AND tags.stage = 'evaluation'",
        order_by=[f"metrics.{Metric.F1} DESC"],
        max_results=1,
    )
    reported = {
        p.run_id(s, Stage.EVALUATION.value, kd): p.metrics[(s, Stage.EVALUATION.value, kd)][Metric.F1.value]
        for s, kd in (
            (ModelSize.TEACHER.value, False),
            (ModelSize.STUDENT.value, False),
            (ModelSize.STUDENT.value, True),
        )
    }
    top = max(reported.values())
    assert len(best) == 1
    assert metrics_of(best[0])[Metric.F1.value] == pytest.approx(top, abs=1e-12)
    assert best[0]["info"]["run_id"] in {r for r, f1 in reported.items() if f1 == pytest.approx(top, abs=1e-12)}


@pytest.mark.parametrize("stage", [Stage.AUTOENCODER.value, Stage.CURRICULUM.value])
def test_metric_curves_are_served_per_epoch(server, tiny_pipeline_db, stage):
    run_id = tiny_pipeline_db.run_id(ModelSize.TEACHER.value, stage)
    epochs = int(params_of(server.get("/api/2.0/mlflow/runs/get", run_id=run_id)["run"])["train.epochs"])
    history = server.get("/api/2.0/mlflow/metrics/get-history", run_id=run_id, metric_key=Metric.TRAIN_LOSS.value)[
        "metrics"
    ]
    steps = sorted(m["step"] for m in history)
    assert steps, f"no {Metric.TRAIN_LOSS} curve for {stage} run {run_id}"
    assert len(set(steps)) == len(steps) and all(0 <= s <= epochs for s in steps)
    assert all(m["value"] > 0 for m in history)
