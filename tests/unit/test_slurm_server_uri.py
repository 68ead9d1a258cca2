"""Rendered sbatch scripts for labs whose jobs write through an MLflow server or straight to PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdgat_core.config import preset
from kdgat_core.slurm import prepare_job
from tests.unit import test_slurm_render as render
from tests.unit.test_slurm_render import cluster_toml, run_script, write_settings


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    return render.project.__wrapped__(tmp_path)  # the render tests' project folder (an argv recorder as kdgat)


@pytest.mark.parametrize(
    "uri", ["http://mlflow.lab.example:5000", "postgresql+psycopg2://jobs@db.lab.example/mlflow"], ids=["http", "pg"]
)
def test_jobs_export_the_server_uri_as_given(project: Path, uri: str, monkeypatch):
    monkeypatch.chdir(project)
    settings = cluster_toml(project)
    text = (project / "kdgat.toml").read_text().replace('uri = "db/mlflow.db"', f'uri = "{uri}"')
    settings = write_settings(project, text)
    job = prepare_job(preset("gat,student,tiny", dataset="synthetic"), {}, settings, workdir=str(project))
    lines = job.script.splitlines()
    assert f"export MLFLOW_TRACKING_URI={uri}" in lines
    # logs go under the project folder (there is no SQLite file to put them next to)
    folder = project / "experimentruns" / "synthetic" / "student_curriculum"
    assert f"#SBATCH --output={folder}/slurm-%j.out" in lines
    argv = run_script(job.script, project)
    assert argv[:2] == ["run", "curriculum"]


def test_kdgat_submit_hands_an_https_server_uri_to_the_job(tmp_path: Path, monkeypatch):
    """`kdgat submit` itself (the CLI, a real bash job on the local executor) with MLFLOW_TRACKING_URI=https://...:
    the job's `kdgat run` gets the server's URI, logs land under the project, and no SQLite file appears."""
    import os
    import subprocess
    import sys
    import time

    job_kdgat = tmp_path / "job_kdgat"  # stands in for the job's `kdgat run`: records what it was given
    job_kdgat.write_text('#!/bin/bash\necho "ran $* uri=$MLFLOW_TRACKING_URI"\n')
    job_kdgat.chmod(0o755)
    (tmp_path / "kdgat.toml").write_text(
        f'[tracking]\nuri = "mlflow.db"\n[cluster]\nexecutor = "local"\nkdgat = "{job_kdgat}"\n'
    )
    server = "https://jobs@mlflow.lab.example:5000"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "KDGAT_READ"))}
    env.update(MLFLOW_TRACKING_URI=server, KDGAT_QUEUE_CACHE_SECONDS="0")
    kdgat = [str(Path(sys.executable).parent / "kdgat")]
    args = ["submit", "autoencoder", "--dataset", "synthetic", "--preset", "teacher"]
    sub = subprocess.run([*kdgat, *args], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert sub.returncode == 0, sub.stderr
    job = sub.stdout.split(" as job ")[1].split()[0]
    log = tmp_path / "experimentruns" / "synthetic" / "teacher_autoencoder" / f"slurm-{job}.out"
    deadline = time.monotonic() + 60
    while "ran run" not in (log.read_text() if log.is_file() else "") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert f"ran run autoencoder --preset vgae,teacher --dataset synthetic uri={server}" in log.read_text()
    assert not (tmp_path / "mlflow.db").exists()
