"""The read cache on PostgreSQL answers exactly what a fresh read answers, as the store changes under it (the same
changes as on SQLite: runs added, finished, re-labelled in place, deleted, restored, a tag deleted, `mlflow gc`)."""

from __future__ import annotations

import json

import pytest

from tests.unit.conftest import MUTATE_FIXTURE, run_python
from tests.unit.test_query_cache import _cached_and_uncached

pytestmark = pytest.mark.usefixtures("query_cache_dir")


@pytest.fixture
def pg_copy(pg_server, pg_fixture_db):
    """A private copy of the PostgreSQL fixture store: (uri, ids, database name)."""
    uri = pg_server.copy_database("query_fixture", "cache_copy")
    return uri, pg_fixture_db[1], "cache_copy"


def test_pg_cache_equals_uncached_as_runs_are_added_changed_finished_and_deleted(pg_copy, pg_server, tmp_path):
    uri, ids, name = pg_copy
    ids_file = tmp_path / "ids.json"
    ids_file.write_text(json.dumps(ids))
    before = pg_server.checksums(name)
    first, stats = _cached_and_uncached(uri)
    assert stats.mode == "full" and first.num_rows == 20
    again, stats = _cached_and_uncached(uri)
    assert stats.mode in ("fresh", "incremental") and stats.changed_runs == 0, stats  # nothing re-read
    assert pg_server.checksums(name) == before, "reading must never write the tracking store"

    run_python(MUTATE_FIXTURE, uri, str(ids_file), "1")
    after1, stats = _cached_and_uncached(uri)
    assert stats.mode == "incremental" and 1 <= stats.changed_runs <= 5, stats
    by_id = {r["run_id"]: r for r in after1.to_pylist()}
    relabelled = by_id[ids["hcrl_sa/teacher_autoencoder"]]
    assert relabelled["dataset"] == "hcrl_ch" and relabelled["tags.note"] == "re-labelled"
    finished = by_id[ids["hcrl_sa/student_fusion"]]
    assert (finished["status"], finished["mlflow_status"], finished["f1"]) == ("complete", "FINISHED", 0.87)
    assert by_id[ids["hcrl_sa/student_autoencoder"]]["lifecycle"] == "deleted"
    assert after1.num_rows == 21 and "params.new.param" in after1.column_names

    run_python(MUTATE_FIXTURE, uri, str(ids_file), "2")
    after2, stats = _cached_and_uncached(uri)
    assert stats.mode == "incremental" and 1 <= stats.changed_runs <= 4, stats
    assert "tags.note" not in after2.column_names  # a deleted tag row (no xmin left behind) is seen
    assert stats.details.get("tables with deletions") == ["tags"], stats  # by the count of the untouched runs' rows
    by_id = {r["run_id"]: r for r in after2.to_pylist()}
    assert by_id[ids["hcrl_sa/teacher_curriculum"]]["f1"] == 0.7
    assert by_id[ids["hcrl_ch/teacher_curriculum"]]["status"] == "failed"
    assert by_id[ids["hcrl_sa/student_autoencoder"]]["lifecycle"] == "active"


def test_pg_cache_drops_a_run_removed_by_mlflow_gc(pg_copy, pg_server):
    uri, ids, name = pg_copy
    before, _ = _cached_and_uncached(uri)
    gone = ids["hcrl_ch/teacher_curriculum"]
    pg_server.execute(
        *(
            f"DELETE FROM {t} WHERE run_uuid = '{gone}'"
            for t in ("metrics", "latest_metrics", "params", "tags", "runs")
        ),
        database=name,
    )
    after, stats = _cached_and_uncached(uri)
    assert stats.mode == "incremental" and stats.removed_runs == 1, stats
    assert after.num_rows == before.num_rows - 1 and gone not in after["run_id"].to_pylist()
    # the removed run's rows are counted in the same statement as the rest: no search for other deletions
    assert "tables with deletions" not in stats.details, stats


def test_pg_cache_sees_a_deleted_tag_while_other_runs_gain_rows(pg_copy, pg_server):
    """A tag row deleted from a run nothing else touched, in the same refresh as new rows elsewhere (the new rows
    must not hide the missing one), and a hand-made row: the cache answers what a fresh read answers."""
    uri, ids, name = pg_copy
    _cached_and_uncached(uri)
    quiet, busy = ids["hcrl_ch/teacher_autoencoder"], ids["hcrl_sa/teacher_curriculum"]
    pg_server.execute(
        f"DELETE FROM tags WHERE run_uuid = '{quiet}' AND key = 'stage'",
        f"INSERT INTO tags (key, value, run_uuid) VALUES ('note', 'added', '{busy}'), ('extra', '1', '{busy}')",
        database=name,
    )
    after, stats = _cached_and_uncached(uri)
    assert stats.mode == "incremental" and stats.details.get("tables with deletions") == ["tags"], stats
    assert stats.changed_runs <= 4, stats  # the two runs, and at most the others of the quiet run's bucket
    by_id = {r["run_id"]: r for r in after.to_pylist()}
    assert by_id[quiet]["stage"] is None and by_id[busy]["tags.note"] == "added"
    again, stats = _cached_and_uncached(uri)
    assert stats.changed_runs == 0 and "tables with deletions" not in stats.details, stats


def test_pg_reader_sessions_run_without_jit(pg_copy):
    """kdgat's PostgreSQL sessions turn JIT off (compiling cost more than the scans it sped up)."""
    from kdgat_core.query import open_db

    uri, _, _ = pg_copy
    with open_db(uri, cache=False) as db:
        assert db._reader.fetch_native_rows("SELECT current_setting('jit') AS j")[0]["j"] == "off"


@pytest.mark.parametrize("margin", [0, 20])
def test_pg_leaderboard_without_cache_skips_deleted_leaders(pg_copy, pg_server, monkeypatch, margin):
    """The no-cache board reads `runs` only for the leading runs; when deleted ones thin those out below the board's
    size (margin 0: the leader deleted), it reads them all: the same board as the wide table's either way."""
    from kdgat_core.query import leaderboard, open_db

    uri, ids, name = pg_copy
    monkeypatch.setattr(leaderboard, "LEAD_MARGIN", margin)
    with open_db(uri, cache=False) as db:
        leader = db.leaderboard("f1", top=1, arrow=True).to_pylist()[0]["run_id"]
    pg_server.execute(f"UPDATE runs SET lifecycle_stage = 'deleted' WHERE run_uuid = '{leader}'", database=name)
    with open_db(uri, cache=False) as native, open_db(uri) as cached:
        cached.wide(arrow=True)
        for kw in (
            {"metric": "f1", "top": 1},
            {"metric": "f1", "top": 3, "dataset": "hcrl_sa"},
            {"metric": "val_loss", "top": 2},
        ):
            a = [r["run_id"] for r in native.leaderboard(**kw, arrow=True).to_pylist()]
            assert a == [r["run_id"] for r in cached.leaderboard(**kw, arrow=True).to_pylist()], kw
            assert leader not in a
