"""The wide-table read cache answers exactly what a fresh read of the DB answers, as the DB changes under it."""

from __future__ import annotations

import hashlib
import json
import math

from kdgat_core.query import open_db
from tests.unit.conftest import MUTATE_FIXTURE, run_python


def _rows(table) -> list[dict]:
    """Rows with NaN made comparable (NaN != NaN would make equal tables look different)."""
    return [
        {k: ("NaN" if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in table.to_pylist()
    ]


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cached_and_uncached(path):
    with open_db(path) as db:
        cached = db.wide(arrow=True, include_deleted=True)
        stats = db.last_refresh
        answers = _answers(db)
    with open_db(path, cache=False) as db:
        uncached = db.wide(arrow=True, include_deleted=True)
        assert _answers(db) == answers
    assert cached.schema == uncached.schema
    assert _rows(cached) == _rows(uncached)
    return cached, stats


def _answers(db) -> list:
    """What users see through the methods that read the wide table."""
    return [
        _rows(db.runs(arrow=True)),
        _rows(db.leaderboard("f1", top=50, arrow=True)),
        _rows(db.sql("SELECT run_name, dataset, status, f1 FROM runs ORDER BY run_id", arrow=True)),
        _rows(db.sweep("train.lr", "f1", arrow=True)),
        _rows(db.lineage(arrow=True)),
    ]


def test_cache_equals_uncached_as_runs_are_added_changed_finished_and_deleted(db_copy, query_cache_dir, tmp_path):
    path, ids = db_copy
    ids_file = tmp_path / "ids.json"
    ids_file.write_text(json.dumps(ids))
    before = _digest(path)

    first, stats = _cached_and_uncached(path)
    assert stats.mode == "full" and first.num_rows == 20
    again, stats = _cached_and_uncached(path)
    assert stats.mode == "fresh"  # unchanged file: served without reading a row
    assert _digest(path) == before, "reading must never write the tracking DB"
    assert any(query_cache_dir.rglob("wide.arrow"))

    # round 1: finish a running run (metrics + tags + status), edit existing tags in place (same rowid), add a tag,
    # delete a run, add a new run with a new param key
    run_python(MUTATE_FIXTURE, str(path), str(ids_file), "1")
    after1, stats = _cached_and_uncached(path)
    assert stats.mode == "incremental" and 1 <= stats.changed_runs <= 5, stats
    by_id = {r["run_id"]: r for r in after1.to_pylist()}
    relabelled = by_id[ids["hcrl_sa/teacher_autoencoder"]]
    assert relabelled["dataset"] == "hcrl_ch" and relabelled["tags.note"] == "re-labelled"
    finished = by_id[ids["hcrl_sa/student_fusion"]]
    assert (finished["status"], finished["mlflow_status"], finished["f1"]) == ("complete", "FINISHED", 0.87)
    assert by_id[ids["hcrl_sa/student_autoencoder"]]["lifecycle"] == "deleted"
    assert after1.num_rows == 21 and "params.new.param" in after1.column_names

    # round 2: restore the run, delete a tag (its column disappears), log a metric at a later step, flip a status
    run_python(MUTATE_FIXTURE, str(path), str(ids_file), "2")
    after2, stats = _cached_and_uncached(path)
    assert stats.mode == "incremental" and 1 <= stats.changed_runs <= 4, stats
    assert "tags.note" not in after2.column_names
    by_id = {r["run_id"]: r for r in after2.to_pylist()}
    assert by_id[ids["hcrl_sa/teacher_curriculum"]]["f1"] == 0.7
    assert by_id[ids["hcrl_ch/teacher_curriculum"]]["status"] == "failed"
    assert by_id[ids["hcrl_sa/student_autoencoder"]]["lifecycle"] == "active"


def test_cache_files_are_per_database_and_a_corrupt_cache_is_rebuilt(db_copy, fixture_db, query_cache_dir):
    path, _ = db_copy
    with open_db(path) as db:
        db.wide(arrow=True)
    with open_db(fixture_db[0]) as db:
        db.wide(arrow=True)
    files = sorted(query_cache_dir.rglob("wide.arrow"))
    assert len(files) == 2
    for f in files:
        f.write_bytes(b"garbage")
    with open_db(path) as db:
        table = db.wide(arrow=True)
        assert db.last_refresh.mode == "full" and table.num_rows == 18


RENAME_NEWEST_TAG = r"""
import sys, sqlite3
import mlflow
from mlflow import MlflowClient
path, run, step = sys.argv[1], sys.argv[2], sys.argv[3]
c = MlflowClient(f"sqlite:///{path}")
if step == "add":
    c.set_tag(run, "probe_a", "same")
else:  # the newest tag row goes; the next insert reuses its rowid, with another key and the same value
    c.delete_tag(run, "probe_a")
    c.set_tag(run, "probe_b", "same")
"""


def _tag_rowids(path, key):
    import sqlite3

    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)  # in this process only between DuckDB opens: no overlap
    try:
        return [r[0] for r in con.execute("SELECT rowid FROM tags WHERE key = ?", (key,))]
    finally:
        con.close()


def test_cache_sees_a_reused_tag_rowid_with_another_key(db_copy, query_cache_dir):
    """SQLite reuses the rowid of a deleted newest row: same rowid, same value, different key must still count."""
    path, ids = db_copy
    run = ids["hcrl_sa/teacher_curriculum"]
    run_python(RENAME_NEWEST_TAG, str(path), run, "add")
    before, _ = _cached_and_uncached(path)
    assert before.to_pylist()[[r["run_id"] for r in before.to_pylist()].index(run)]["tags.probe_a"] == "same"
    old_rowid = _tag_rowids(path, "probe_a")
    run_python(RENAME_NEWEST_TAG, str(path), run, "rename")
    assert _tag_rowids(path, "probe_b") == old_rowid  # the situation under test really happened
    after, stats = _cached_and_uncached(path)
    assert stats.mode == "incremental", stats
    assert "tags.probe_a" not in after.column_names
    assert after.to_pylist()[[r["run_id"] for r in after.to_pylist()].index(run)]["tags.probe_b"] == "same"


MOVE_NEWEST_TAG = r"""
import sys
from mlflow import MlflowClient
path, run_a, run_b, step = sys.argv[1:5]
c = MlflowClient(f"sqlite:///{path}")
if step == "add":
    c.set_tag(run_a, "probe", "same")
else:  # run A's newest tag row goes; the same key and value on run B reuses its rowid
    c.delete_tag(run_a, "probe")
    c.set_tag(run_b, "probe", "same")
"""


def test_cache_sees_a_reused_tag_rowid_move_to_another_run(db_copy, query_cache_dir):
    """Same rowid, same key, same value, another run: the tag left run A and arrived on run B (the gap the per-row
    (key, value) signature of cache format 4 had)."""
    path, ids = db_copy
    run_a, run_b = ids["hcrl_sa/teacher_curriculum"], ids["hcrl_ch/teacher_curriculum"]
    run_python(MOVE_NEWEST_TAG, str(path), run_a, run_b, "add")
    before, _ = _cached_and_uncached(path)
    rows = {r["run_id"]: r for r in before.to_pylist()}
    assert rows[run_a]["tags.probe"] == "same" and rows[run_b]["tags.probe"] is None
    old_rowid = _tag_rowids(path, "probe")
    run_python(MOVE_NEWEST_TAG, str(path), run_a, run_b, "move")
    assert _tag_rowids(path, "probe") == old_rowid  # the rowid really was reused
    after, stats = _cached_and_uncached(path)
    assert stats.mode == "incremental", stats
    rows = {r["run_id"]: r for r in after.to_pylist()}
    assert rows[run_a]["tags.probe"] is None and rows[run_b]["tags.probe"] == "same"


HARD_DELETE = r"""
import sys
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
path, run = sys.argv[1], sys.argv[2]
store = SqlAlchemyStore(f"sqlite:///{path}", "/tmp")
store.delete_run(run)
store._hard_delete_run(run)  # what `mlflow gc` does: the run's rows leave every table
"""


def test_cache_drops_a_run_removed_by_mlflow_gc(db_copy, query_cache_dir):
    path, ids = db_copy
    before, _ = _cached_and_uncached(path)
    gone = ids["hcrl_ch/teacher_curriculum"]
    run_python(HARD_DELETE, str(path), gone)
    after, _ = _cached_and_uncached(path)
    assert after.num_rows == before.num_rows - 1 and gone not in after["run_id"].to_pylist()
