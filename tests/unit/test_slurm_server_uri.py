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
