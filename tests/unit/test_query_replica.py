"""A hot-standby replica as kdgat's read URI: MLflow writes into the primary, kdgat reads a streaming replica
(pg_basebackup -R, hot_standby=on), as a lab does to keep analytics off the server the jobs write to. Real servers
(tests/pg.py, scripts/pg_cluster.sh replica), stopped by pid.

* once replayed, the replica gives the primary's leaderboard, lineage, runs and histories, through --read-uri and
  KDGAT_READ_URI while the writers' URI is an MLflow server's;
* `kdgat doctor` reports the connection read-only because the server is a hot standby;
* the read cache works against the replica (it writes nothing to the server, which refuses every write): cached
  answers equal uncached ones as MLflow's client adds, changes, finishes, deletes and restores runs on the primary.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest

from kdgat_core.config import ENV_READ_URI, ENV_TRACKING_URI
from kdgat_core.query import open_db
from tests.unit.cli_inprocess import run_kdgat
from tests.unit.conftest import MUTATE_FIXTURE, run_python
from tests.unit.test_query_cache import _answers, _cached_and_uncached, _rows

pytestmark = pytest.mark.slow

DATABASE = "replica_lab"
# the writers' URI: an MLflow server (nothing listens there; readers never contact it)
WRITERS_SERVER = "http://127.0.0.1:9"


@pytest.fixture(scope="module")
def replica(pg_server, pg_fixture_db):
    """(the replica, the primary's URI, the replica's URI, the fixture's run ids); stopped by pid afterwards."""
    state = Path(tempfile.mkdtemp(prefix="kdgat-pg-replica-"))
    standby = pg_server.start_replica(state)
    try:
        # the fixture content (written by MLflow's client) copied on the primary reaches the replica by streaming
        primary_uri = pg_server.copy_database("query_fixture", DATABASE)
        standby.wait_replayed()
        yield standby, primary_uri, standby.uri(DATABASE), pg_fixture_db[1]
    finally:
        standby.stop()
        shutil.rmtree(state, ignore_errors=True)


def kdgat(capsys, tmp_path: Path, *args: str, **env: str):
    """`kdgat *args` in this process, with only the given URIs in the environment."""
    env = {"KDGAT_CACHE_DIR": str(tmp_path / "cache"), **env}
    res = run_kdgat(capsys, args, cwd=tmp_path, env=env)
    assert res.code == 0, res.err
    return res


def test_the_replica_answers_like_the_primary(replica, capsys, tmp_path):
    standby, primary_uri, replica_uri, ids = replica
    # the jobs write through an MLflow server; the reader is sent to the replica by environment, or by flag
    writers = {ENV_TRACKING_URI: WRITERS_SERVER}
    for command in (
        ["leaderboard", "-m", "f1", "-s", "evaluation", "-f", "json"],
        ["lineage", "-f", "json"],
        ["runs", "-f", "json"],
    ):
        expected = json.loads(kdgat(capsys, tmp_path, *command, "-u", primary_uri).out)
        assert expected, command
        answers = [kdgat(capsys, tmp_path, *command, **writers, **{ENV_READ_URI: replica_uri})]
        if command[0] == "leaderboard":
            answers.append(kdgat(capsys, tmp_path, "--read-uri", replica_uri, *command, **writers))
        assert [json.loads(res.out) for res in answers] == [expected] * len(answers), command
    run = ids["hcrl_sa/teacher_curriculum"]
    with open_db(primary_uri, cache=False) as p, open_db(replica_uri, cache=False) as r:
        assert r.info()["standby"] and not p.info()["standby"]
        for metric in ("train_loss", "val_loss"):
            expected = p.history(run, metric, arrow=True)
            assert expected.num_rows and _rows(r.history(run, metric, arrow=True)) == _rows(expected)


def test_doctor_reports_the_replica_read_only(replica, capsys, tmp_path):
    _, _, replica_uri, _ = replica
    res = kdgat(
        capsys, tmp_path, "doctor", "-f", "json", **{ENV_TRACKING_URI: WRITERS_SERVER, ENV_READ_URI: replica_uri}
    )
    rows = {r["check"]: r["value"] for r in json.loads(res.out)}
    assert rows["tracking URI"] == WRITERS_SERVER
    assert ENV_READ_URI in rows["read URI chosen by"]
    assert rows["backend"] == "postgres" and rows["server"].startswith("PostgreSQL ")
    assert rows["read-only"].startswith("yes (a hot standby")
    assert rows["runs"] == "20"
    assert "mlflow:mlflow@" not in res.out and "***" in rows["read URI"]  # the password is masked


def test_the_read_cache_follows_the_primary_through_the_replica(replica, pg_server, tmp_path, monkeypatch):
    standby, primary_uri, replica_uri, ids = replica
    monkeypatch.setenv("KDGAT_CACHE_DIR", str(tmp_path / "cache"))
    ids_file = tmp_path / "ids.json"
    ids_file.write_text(json.dumps(ids))
    with pytest.raises(Exception, match="read-only transaction"):  # the server itself refuses writes
        standby.execute("CREATE TABLE kdgat_probe (x int)", database=DATABASE)
    before = standby.checksums(DATABASE)
    first, stats = _cached_and_uncached(replica_uri)
    assert stats.mode == "full" and first.num_rows == 20
    again, stats = _cached_and_uncached(replica_uri)
    assert stats.mode in ("fresh", "incremental") and stats.changed_runs == 0, stats
    assert standby.checksums(DATABASE) == before
    for round_, changed in (("1", (1, 5)), ("2", (1, 4))):
        run_python(MUTATE_FIXTURE, primary_uri, str(ids_file), round_)
        standby.wait_replayed()
        cached, stats = _cached_and_uncached(replica_uri)
        assert stats.mode == "incremental" and changed[0] <= stats.changed_runs <= changed[1], (round_, stats)
        with open_db(primary_uri, cache=False) as p, open_db(replica_uri) as r:
            assert _rows(cached) == _rows(p.wide(arrow=True, include_deleted=True))
            assert _answers(r) == _answers(p)
    assert cached.num_rows == 21
