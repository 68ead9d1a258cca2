"""The analytics commands as a user runs them: a real `kdgat` process, its stdout, stderr and exit code."""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import subprocess
import sys

import pytest

from tests.unit.conftest import REPO


def kdgat(*args, env=None, cache_dir=None):
    full_env = dict(os.environ, **(env or {}))
    if cache_dir is not None:
        full_env["KDGAT_CACHE_DIR"] = str(cache_dir)
    full_env.pop("MLFLOW_TRACKING_URI", None) if "MLFLOW_TRACKING_URI" not in (env or {}) else None
    return subprocess.run(
        [sys.executable, "-m", "kdgat_core.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=str(REPO),
        timeout=120,
    )


@pytest.fixture
def fixture_db(store_db):
    """The commands run on SQLite and on PostgreSQL (the same content); file-only ones are marked sqlite_only."""
    return store_db


@pytest.fixture
def uri(fixture_db):
    return fixture_db[0] if isinstance(fixture_db[0], str) else f"sqlite:///{fixture_db[0]}"


def test_leaderboard_formats(uri, fixture_db, tmp_path):
    ids = fixture_db[1]
    res = kdgat(
        "leaderboard",
        "-u",
        uri,
        "--dataset",
        "hcrl_sa",
        "--stage",
        "evaluation",
        "--top",
        "3",
        "-f",
        "csv",
        cache_dir=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert [r["run_id"] for r in rows] == [ids["eval_seed1"], ids["eval_seed2"], ids["eval_seed0"]]
    assert [float(r["f1"]) for r in rows] == [0.95, 0.94, 0.93]
    out = tmp_path / "board.json"
    res = kdgat(
        "leaderboard", "-u", uri, "--metric", "val_loss", "--no-kd", "-f", "json", "-o", out, cache_dir=tmp_path
    )
    assert res.returncode == 0 and res.stdout == "" and "wrote" in res.stderr
    board = json.loads(out.read_text())
    assert board[0]["val_loss"] == 0.2 and all(r["use_kd"] == "False" for r in board)
    md = kdgat("leaderboard", "-u", uri, "-f", "markdown", "--top", "2", cache_dir=tmp_path).stdout
    assert "| rank | run_id |" in md and md.count("\n| ") >= 3
    tex = kdgat("leaderboard", "-u", uri, "-f", "latex", "--by-config", cache_dir=tmp_path).stdout
    assert "\\begin{tabular}" in tex and "f1\\_mean" in tex
    table = kdgat("leaderboard", "-u", uri, "--top", "2", cache_dir=tmp_path).stdout
    assert "Leaderboard by f1" in table and "hcrl_sa/teacher_evaluation" in table


@pytest.mark.sqlite_only
@pytest.mark.parametrize(
    "args,message",
    [
        (["query", "SELEC * FROM runs"], "kdgat: SQL syntax error"),
        (["query", "DROP TABLE ml.runs"], "kdgat: Refused"),
        (["query", "SELECT * FROM read_csv('/etc/passwd')"], "kdgat: Refused: table function read_csv()"),
        (["compare", "hcrl_sa/teacher_curiculum", "hcrl_sa/teacher_curriculum"], "kdgat: No run matches"),
        (["leaderboard", "--metric", "f_1"], "kdgat: Unknown metric 'f_1'"),
        (["leaderboard", "--stage", "training"], "kdgat: Unknown stage 'training'"),
        (["sweep", "--param", "train.lrr"], "kdgat: Unknown param 'train.lrr'"),
        (["dataset", "nope"], "kdgat: No runs for dataset 'nope'"),
    ],
)
def test_bad_input_is_one_sentence_on_stderr(uri, tmp_path, args, message):
    res = kdgat(*args[:1], "-u", uri, *args[1:], cache_dir=tmp_path)
    assert res.returncode == 2
    assert res.stderr.startswith(message), res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    assert res.stdout == ""


def test_missing_db_creates_nothing(tmp_path):
    missing = tmp_path / "mlflow.db"
    for cmd in (["leaderboard"], ["query", "SELECT 1"], ["runs"]):
        res = kdgat(*cmd, "-u", f"sqlite:///{missing}", cache_dir=tmp_path / "c")
        assert res.returncode == 2 and "does not exist" in res.stderr and "Traceback" not in res.stderr
    assert not missing.exists()
    res = kdgat("doctor", "-u", f"sqlite:///{missing}", cache_dir=tmp_path / "c")
    assert res.returncode == 1 and "does not exist" in res.stdout and not missing.exists()


def test_query_runs_view_as_written(uri, tmp_path):
    res = kdgat("query", "-u", uri, "SELECT * FROM runs WHERE dataset = 'hcrl_sa'", "-f", "csv", cache_dir=tmp_path)
    assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert len(rows) == 15 and {r["dataset"] for r in rows} == {"hcrl_sa"}


def test_compare_diff_sweep_dataset_runs(uri, tmp_path):
    out = kdgat(
        "compare",
        "-u",
        uri,
        "hcrl_sa/teacher_curriculum",
        "hcrl_sa/student_curriculum_kd",
        "-f",
        "csv",
        cache_dir=tmp_path,
    ).stdout
    f1 = next(r for r in csv.DictReader(io.StringIO(out)) if r["metric"] == "f1")
    assert (f1["a"], f1["b"], f1["better"]) == ("0.91", "0.89", "a")
    out = kdgat(
        "diff", "-u", uri, "hcrl_sa/teacher_curriculum", "hcrl_sa/student_curriculum", "-f", "csv", cache_dir=tmp_path
    ).stdout
    assert [r["key"] for r in csv.DictReader(io.StringIO(out))] == [
        "gat.heads",
        "gat.hidden",
        "gat.layers",
        "model_size",
    ]
    out = kdgat(
        "sweep",
        "-u",
        uri,
        "--param",
        "lr",
        "--stage",
        "evaluation",
        "--model-size",
        "teacher",
        "-f",
        "json",
        cache_dir=tmp_path,
    ).stdout
    assert [(r["train.lr"], r["count"]) for r in json.loads(out)] == [("0.0005", 1), ("0.001", 3)]
    out = kdgat("dataset", "-u", uri, "hcrl_ch", "-f", "csv", cache_dir=tmp_path).stdout
    assert sum(int(r["failed"]) for r in csv.DictReader(io.StringIO(out))) == 1
    out = kdgat("runs", "-u", uri, "--status", "failed", "-f", "csv", cache_dir=tmp_path).stdout
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["run_name"] for r in rows] == ["hcrl_ch/student_curriculum"] and rows[0]["error_msg"]


def test_lineage_tree_and_flat_rows(uri, tmp_path):
    tree = kdgat("lineage", "-u", uri, "--dataset", "hcrl_sa", cache_dir=tmp_path).stdout
    assert "hcrl_sa/teacher_curriculum" in tree and "└── hcrl_sa/student_curriculum_kd" in tree
    assert "delta=-0.0200" in tree
    flat = list(csv.DictReader(io.StringIO(kdgat("lineage", "-u", uri, "-f", "csv", cache_dir=tmp_path).stdout)))
    assert len(flat) == 4 and {"teacher_run_id", "student_run_id", "delta_f1"} <= set(flat[0])


@pytest.mark.sqlite_only
def test_doctor_says_which_db_and_why(uri, fixture_db, tmp_path):
    res = kdgat("doctor", "-u", uri, "-f", "json", cache_dir=tmp_path)
    assert res.returncode == 0, res.stderr
    info = {r["check"]: r["value"] for r in json.loads(res.stdout)}
    assert info["chosen by"] == "the --tracking-uri flag" and info["exists"] == "yes"
    assert info["runs"] == "20" and info["MLflow schema version (alembic)"]
    res = kdgat("doctor", "-f", "json", env={"MLFLOW_TRACKING_URI": uri}, cache_dir=tmp_path)
    info = {r["check"]: r["value"] for r in json.loads(res.stdout)}
    assert info["chosen by"] == "the MLFLOW_TRACKING_URI environment variable"


@pytest.mark.sqlite_only
def test_backup_is_a_verified_copy_and_never_overwrites_silently(uri, fixture_db, tmp_path):
    dest = tmp_path / "copy.db"
    res = kdgat("backup", "-u", uri, dest, cache_dir=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "integrity_check: ok" in res.stdout
    con = sqlite3.connect(f"file:{dest}?mode=ro", uri=True)  # this test process never opens the copy with DuckDB
    try:
        assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 20
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        con.close()
    stamp = dest.stat().st_mtime_ns
    res = kdgat("backup", "-u", uri, dest, cache_dir=tmp_path)
    assert res.returncode == 2 and "already exists; use --force" in res.stderr and dest.stat().st_mtime_ns == stamp
    assert kdgat("backup", "-u", uri, dest, "--force", cache_dir=tmp_path).returncode == 0
    res = kdgat("backup", "-u", f"sqlite:///{tmp_path / 'missing.db'}", tmp_path / "x.db", cache_dir=tmp_path)
    assert res.returncode == 2 and "does not exist" in res.stderr and not (tmp_path / "missing.db").exists()
