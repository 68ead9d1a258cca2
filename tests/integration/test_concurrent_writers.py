"""Many writers starting at once on a tracking DB that does not exist yet, with a reader polling it.

This is the SLURM situation: a pipeline submits a batch of jobs that start in the same second against one SQLite file
on shared scratch. MLflow alone crashes creating its schema twice, and fails calls after 20 s on a locked file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

mlflow = pytest.importorskip("mlflow")

from kdgat_core.config import EXPERIMENT_NAME, MlflowStatus, RunStatus, Tag  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
WRITERS = 8
RUNS_PER_WRITER = 3
EPOCHS = 4

WRITER = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from kdgat_core.config import preset
    from kdgat_core.tracking import open_run   # imported before the barrier: the start is the DB work, not imports
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401 - MLflow's store module alone imports for seconds
    uri, start, out, worker, runs, epochs = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), *map(int, sys.argv[4:])
    Path(str(out) + ".ready").write_text("")
    while not start.exists():
        time.sleep(0.005)
    written = []
    t0 = time.monotonic()
    for i in range(runs):
        cfg = preset("gat,student" if i % 2 else "gat,teacher", dataset="hcrl_sa")
        cfg.train.seed = worker * 100 + i
        with open_run(cfg, tracking_uri=uri) as run:
            for epoch in range(epochs):
                run.log_metrics({"train_loss": worker + i / 10 + epoch / 100, "val_f1": epoch / epochs}, step=epoch)
            run.log_final({"f1": worker / 100 + i / 1000})
        written.append(run.run_id)
    out.write_text(json.dumps({"run_ids": written, "seconds": time.monotonic() - t0}))
""")

READER = textwrap.dedent("""
    import json, sqlite3, sys, time
    from pathlib import Path
    db, stop, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    ok = locked = other = 0
    seen = 0
    while not stop.exists():
        if db.exists():
            try:
                con = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=0.5)  # never creates the file
                try:
                    seen = con.execute("SELECT count(*) FROM runs").fetchone()[0]
                    con.execute("SELECT count(*) FROM metrics").fetchone()
                    ok += 1
                finally:
                    con.close()
            except sqlite3.OperationalError as exc:
                if "locked" in str(exc):
                    locked += 1
                else:
                    other += 1  # e.g. "no such table" while the first writer creates the schema
        time.sleep(0.05)
    out.write_text(json.dumps({"ok": ok, "locked": locked, "other": other, "last_count": seen}))
""")


def test_eight_writers_start_at_once_on_a_new_db_and_lose_nothing(tmp_path):
    db = tmp_path / "shared" / "mlflow.db"
    db.parent.mkdir()
    uri = f"sqlite:///{db}"
    start, stop = tmp_path / "start", tmp_path / "stop"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("MLFLOW_TRACKING_URI", None)

    writers = []
    for w in range(WRITERS):
        out = tmp_path / f"writer{w}.json"
        cmd = [sys.executable, "-c", WRITER, uri, str(start), str(out), str(w), str(RUNS_PER_WRITER), str(EPOCHS)]
        writers.append(
            (out, subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        )
    reader_out = tmp_path / "reader.json"
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(db), str(stop), str(reader_out)], cwd=tmp_path, env=env
    )
    try:
        deadline = time.monotonic() + 120
        while not all(Path(str(out) + ".ready").exists() for out, _ in writers):
            assert time.monotonic() < deadline, "writers did not get ready in time"
            assert all(p.poll() is None for _, p in writers), [
                p.communicate()[1][-2000:] for _, p in writers if p.poll() is not None
            ]
            time.sleep(0.05)
        assert not db.exists()  # every writer is about to create the schema of a file that is not there
        print(f"writers ready after {time.monotonic() - deadline + 120:.1f} s")
        start.write_text("go")
        errors = []
        for out, proc in writers:
            _, err = proc.communicate(timeout=180)
            if proc.returncode != 0:
                errors.append(err.decode()[-3000:])
        assert not errors, errors[0]
    finally:
        stop.write_text("")
        reader.wait(timeout=30)
        for _, proc in writers:
            if proc.poll() is None:
                proc.kill()

    reports = {w: json.loads((tmp_path / f"writer{w}.json").read_text()) for w in range(WRITERS)}
    written = {w: r["run_ids"] for w, r in reports.items()}
    print(f"write phase: slowest writer {max(r['seconds'] for r in reports.values()):.1f} s")
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(EXPERIMENT_NAME)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    assert sorted(r.info.run_id for r in runs) == sorted(r for ids in written.values() for r in ids)
    assert len(client.search_experiments()) <= 2  # ours (+ MLflow's Default): no duplicate experiment
    for w, ids in written.items():
        for i, run_id in enumerate(ids):
            run = client.get_run(run_id)
            assert run.info.status == MlflowStatus.FINISHED.value
            assert run.data.tags[Tag.STATUS.value] == RunStatus.COMPLETE.value
            assert run.data.tags[Tag.SEED.value] == str(w * 100 + i)
            history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "train_loss"))
            assert history == [(e, w + i / 10 + e / 100) for e in range(EPOCHS)]
            assert len(client.get_metric_history(run_id, "val_f1")) == EPOCHS
            assert run.data.metrics["f1"] == w / 100 + i / 1000

    polled = json.loads(reader_out.read_text())
    assert polled["ok"] > 0, polled  # the reader did read while the writers wrote


HOLDER = textwrap.dedent("""
    import sqlite3, sys, time
    from pathlib import Path
    db, hold, ready = sys.argv[1], float(sys.argv[2]), Path(sys.argv[3])
    con = sqlite3.connect(db, isolation_level=None)
    con.execute("BEGIN EXCLUSIVE")          # e.g. a long backup or a stuck job on the shared file
    ready.write_text("")
    time.sleep(hold)
    con.execute("ROLLBACK")
""")


def test_a_lock_held_longer_than_mlflows_busy_timeout_is_outlasted(tmp_path):
    from kdgat_core.config import preset
    from kdgat_core.tracking import get_store, open_run

    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    get_store(uri)
    ready = tmp_path / "locked"
    hold = 23.0  # MLflow's sessions give up after busy_timeout = 20 s
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(db), str(hold), str(ready)])
    try:
        while not ready.exists():
            assert holder.poll() is None
            time.sleep(0.02)
        t0 = time.monotonic()
        with open_run(preset("gat,teacher"), tracking_uri=uri) as run:
            run.log_metrics({"train_loss": 0.5}, step=0)
        waited = time.monotonic() - t0
    finally:
        holder.wait(timeout=60)
    assert waited > 20.0  # MLflow alone would have raised "database is locked" here
    got = mlflow.MlflowClient(tracking_uri=uri).get_run(run.run_id)
    assert got.info.status == MlflowStatus.FINISHED.value
    assert got.data.tags[Tag.STATUS.value] == RunStatus.COMPLETE.value
    assert got.data.metrics["train_loss"] == 0.5
