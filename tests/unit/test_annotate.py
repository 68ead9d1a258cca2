"""Annotations (kdgat tag | note | delete | restore) write through MLflow's client; MLflow's own search reads them back."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.unit.conftest import REPO, run_python

READ_BACK = r"""
import sys, json
import mlflow
mlflow.set_tracking_uri("sqlite:///" + sys.argv[1])
def rows(**kw):
    df = mlflow.search_runs(search_all_experiments=True, **kw)
    return sorted(df["run_id"].tolist())
out = {
    "baseline": rows(filter_string="tags.verdict = 'baseline'"),
    "note": mlflow.get_run(sys.argv[3]).data.tags.get("mlflow.note.content"),
    "deleted": rows(run_view_type=mlflow.entities.ViewType.DELETED_ONLY),
}
json.dump(out, open(sys.argv[2], "w"))
"""


def kdgat(db, *args, stdin=None):
    env = dict(os.environ, PYTHONPATH=str(REPO), KDGAT_CACHE_DIR=str(db.parent / "cache"))
    return subprocess.run(
        [sys.executable, "-m", "kdgat_core.cli", *args, "--tracking-uri", str(db)],
        capture_output=True, text=True, env=env, timeout=300, cwd=str(REPO), stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_annotations_show_what_they_change_ask_first_and_mlflow_reads_them_back(db_copy, tmp_path):
    db, ids = db_copy
    teacher, student = ids["hcrl_sa/teacher_curriculum"], ids["hcrl_sa/student_curriculum"]
    before = db.read_bytes()
    proc = kdgat(db, "tag", teacher, student, "--set", "verdict=baseline")  # no terminal, no --yes
    assert proc.returncode == 2 and "nothing written" in proc.stderr
    assert "tag verdict = 'baseline' (was unset)" in proc.stdout and db.read_bytes() == before
    assert kdgat(db, "tag", teacher[:10], student, "--set", "verdict=baseline", "--yes").stdout.endswith(
        "wrote 2 changes.\n"
    )
    assert kdgat(db, "note", "hcrl_sa/teacher_curriculum", "-m", "the reference", "-y").returncode == 0
    assert "delete" in kdgat(db, "delete", student, "-y").stdout
    again = kdgat(db, "tag", teacher, "--set", "verdict=baseline", "-y")
    assert again.stdout.startswith("Nothing to change")
    out = tmp_path / "back.json"
    run_python(READ_BACK, str(db), str(out), teacher)
    back = json.loads(out.read_text())
    assert back["baseline"] == [teacher]  # the deleted student is out of the default view
    assert back["note"] == "the reference" and student in back["deleted"]
    assert "restore" in kdgat(db, "restore", student, "-y").stdout
    run_python(READ_BACK, str(db), str(out), teacher)
    assert sorted(json.loads(out.read_text())["baseline"]) == sorted([teacher, student])
    bad = kdgat(db, "tag", teacher, "--set", "mlflow.user=x", "-y")
    assert bad.returncode == 2 and "reserved" in bad.stderr
