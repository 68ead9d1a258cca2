"""PostgreSQL stores: user SQL reaches nothing but the views, the database is never changed, passwords never shown,
and a reader pointed at an MLflow server says what to set."""

from __future__ import annotations

import json

import pytest

from kdgat_core.config import KdgatError
from kdgat_core.query import open_db
from tests.unit.test_cli_analytics import kdgat

pytestmark = pytest.mark.usefixtures("query_cache_dir")

DB = "query_fixture"  # the database pg_fixture_db writes

REFUSED_PG = [
    "SELECT * FROM postgres_scan('{dsn}', 'public', 'runs')",
    "SELECT * FROM postgres_scan_pushdown('{dsn}', 'public', 'runs')",
    "SELECT * FROM postgres_query('ml', 'DELETE FROM tags RETURNING 1')",
    "SELECT * FROM postgres_query('ml', 'SELECT * FROM pg_authid')",
    "SELECT * FROM postgres_execute('ml', 'DROP TABLE tags')",
    "SELECT * FROM postgres_attach('{dsn}')",
    "SELECT * FROM mysql_scan('host=127.0.0.1', 'runs')",
    "SELECT * FROM mysql_query('ml', 'SELECT 1')",
    "ATTACH '{dsn}' AS other (TYPE postgres)",
    "INSERT INTO ml.tags (key, value, run_uuid) VALUES ('k', 'v', 'r')",
    "DELETE FROM ml.tags",
    "CALL postgres_execute('ml', 'DELETE FROM tags')",
]


def test_user_sql_reaches_nothing_else_and_changes_nothing(pg_server, pg_fixture_db):
    uri = pg_fixture_db[0]
    dsn = pg_server.uri(DB, driver=False)
    before = pg_server.checksums(DB)
    assert int(before["runs"].split(":")[0]) == 20
    with open_db(uri) as db:
        for sql in REFUSED_PG:
            with pytest.raises(KdgatError) as err:
                db.sql(sql.format(dsn=dsn))
            assert str(err.value).startswith("Refused"), (sql, str(err.value))
            assert "mlflow:mlflow@" not in str(err.value)
        # defence in depth: on the locked connection itself, writes fail (READ_ONLY attach, read-only transaction)
        for sql in (
            "INSERT INTO ml.tags (key, value, run_uuid) VALUES ('k', 'v', 'r')",
            "CALL postgres_execute('ml', 'DELETE FROM tags')",
            "SELECT * FROM postgres_query('ml', 'DELETE FROM tags RETURNING 1')",
            f"ATTACH '{dsn}' AS other (TYPE postgres)",
        ):
            with pytest.raises(Exception):
                db.con.execute(sql).fetchall()
        assert db.sql("SELECT count(*) AS n FROM runs").n[0] == 18  # still usable
    assert pg_server.checksums(DB) == before


def test_a_wrong_password_is_one_sentence_that_never_shows_it(pg_server, pg_fixture_db):
    secret = "hunter2-not-the-password"
    bad = pg_server.uri(DB, password=secret)
    with pytest.raises(KdgatError) as err:
        open_db(bad)
    text = str(err.value)
    assert secret not in text and "***" in text and "password authentication failed" in text
    res = kdgat("leaderboard", "-u", bad)
    assert res.returncode == 2 and secret not in res.stderr + res.stdout
    assert res.stderr.startswith("kdgat: Cannot connect to the PostgreSQL tracking store")


def test_password_from_pgpassfile(pg_server, pg_fixture_db, tmp_path, monkeypatch):
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"127.0.0.1:{pg_server.port}:{DB}:mlflow:mlflow\n")
    passfile.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    with open_db(pg_server.uri(DB, password=None)) as db:
        assert db.runs().shape[0] == 18


def test_doctor_reports_backend_server_schema_and_masks_passwords(pg_server, pg_fixture_db, tmp_path):
    uri = pg_fixture_db[0]
    res = kdgat(
        "doctor",
        "-f",
        "json",
        env={"MLFLOW_TRACKING_URI": "http://u:topsecret@127.0.0.1:5999", "KDGAT_READ_URI": uri},
        cache_dir=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    assert "topsecret" not in res.stdout and ":mlflow@" not in res.stdout
    info = {r["check"]: r["value"] for r in json.loads(res.stdout)}
    assert info["tracking URI"] == "http://u:***@127.0.0.1:5999"
    assert info["read URI"] == uri.replace(":mlflow@", ":***@")
    assert info["read URI chosen by"] == "the KDGAT_READ_URI environment variable"
    assert info["backend"] == "postgres" and info["server"].startswith("PostgreSQL 15")
    assert info["MLflow schema version (alembic)"] and info["runs"] == "20"
    assert info["role"] == "mlflow" and info["read-only"].startswith("kdgat's connection only")


def test_a_server_uri_alone_says_what_to_set(pg_fixture_db, tmp_path):
    res = kdgat("leaderboard", env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:5999"}, cache_dir=tmp_path)
    assert res.returncode == 2
    assert "KDGAT_READ_URI" in res.stderr and "--read-uri" in res.stderr and len(res.stderr.splitlines()) == 1
    # with the read URI given (global flag) the same command reads PostgreSQL
    res = kdgat(
        "--read-uri",
        pg_fixture_db[0],
        "leaderboard",
        "--dataset",
        "hcrl_sa",
        "--stage",
        "evaluation",
        "-f",
        "json",
        env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:5999"},
        cache_dir=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    assert [r["f1"] for r in json.loads(res.stdout)][:3] == [0.95, 0.94, 0.93]


def test_run_states_since_sees_new_and_changed_runs(pg_server, tmp_path):
    """The TUI's poll on PostgreSQL: rows written after the watermark (an xmin past the oldest open transaction)."""
    from tests.unit.conftest import run_python

    uri = pg_server.new_store("poll")
    code = (
        "import sys; from mlflow import MlflowClient; c = MlflowClient(sys.argv[1]); "
        "e = c.create_experiment('x'); r = c.create_run(e, run_name=sys.argv[2]); "
        "c.set_terminated(r.info.run_id, 'FINISHED') if sys.argv[3] == 'end' else None; print(r.info.run_id)"
    )
    run_python(code.replace("create_experiment('x')", "create_experiment('a')"), uri, "first", "run")
    with open_db(uri) as db:
        mark = db.runs_watermark()
        assert db.run_states_since(mark).num_rows == 0
        run_python(code.replace("create_experiment('x')", "create_experiment('b')"), uri, "second", "end")
        new = db.run_states_since(mark)
        assert new.num_rows == 1 and new["mlflow_status"].to_pylist() == ["FINISHED"]
        assert new["rowid"].to_pylist()[0] >= mark


def test_backup_points_a_postgres_store_to_pg_dump(pg_fixture_db, tmp_path):
    res = kdgat("backup", "-u", pg_fixture_db[0], tmp_path / "copy.db", cache_dir=tmp_path)
    assert res.returncode == 2 and "pg_dump" in res.stderr and not (tmp_path / "copy.db").exists()


def test_the_read_uri_from_kdgat_toml(pg_fixture_db, tmp_path, capsys):
    """A lab's kdgat.toml: jobs write through a server (uri), readers open its database (read_uri)."""
    from tests.unit.cli_inprocess import run_kdgat

    (tmp_path / "kdgat.toml").write_text(
        f'[tracking]\nuri = "https://mlflow.lab.example:5000"\nread_uri = "{pg_fixture_db[0]}"\n'
    )
    res = run_kdgat(capsys, ["doctor", "-f", "json"], cwd=tmp_path)
    assert res.code == 0, res.err
    info = {r["check"]: r["value"] for r in json.loads(res.out)}
    assert info["tracking URI"] == "https://mlflow.lab.example:5000"
    assert info["read URI chosen by"].endswith("kdgat.toml ([tracking] read_uri)")
    assert info["backend"] == "postgres" and info["runs"] == "20" and "mlflow:mlflow@" not in res.out
    res = run_kdgat(capsys, ["leaderboard", "-d", "hcrl_sa", "-s", "evaluation", "-f", "json"], cwd=tmp_path)
    assert res.code == 0, res.err
    assert [r["f1"] for r in json.loads(res.out)][:3] == [0.95, 0.94, 0.93]


def test_kdgat_writes_straight_to_postgres(pg_server, sample_db, tmp_path):
    """kdgat's tracking writer (open_run, what `kdgat run` logs through) with a bare `postgresql://` tracking URI, as
    a lab sets MLFLOW_TRACKING_URI without a server: the same runs, statuses and values as its SQLite sample."""
    from tests.unit.conftest import WRITE_SAMPLE, run_python

    uri = pg_server.new_store("writer_direct")
    bare = pg_server.uri("writer_direct", driver=False)  # SQLAlchemy would pick psycopg 3 for this: kdgat rewrites it
    code = WRITE_SAMPLE.replace('"sqlite:///" + sys.argv[1]', "sys.argv[1]")
    assert code != WRITE_SAMPLE
    run_python(code, bare, str(tmp_path / "ids.json"), timeout=600)
    ids = json.loads((tmp_path / "ids.json").read_text())
    assert ids["deleted"] and ids["failed"]
    columns = "run_name, dataset, stage, model_size, use_kd, status, mlflow_status, f1, val_loss, lifecycle"
    sql = f"SELECT {columns} FROM runs ORDER BY run_name, f1"
    with open_db(sample_db[0], cache=False) as sqlite, open_db(uri, cache=False) as pg:
        expected = sqlite.sql(sql, arrow=True)
        assert expected.num_rows > 20
        assert pg.sql(sql, arrow=True).to_pylist() == expected.to_pylist()
