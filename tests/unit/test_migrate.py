"""`kdgat migrate`: a SQLite store into PostgreSQL, every id kept, verified; refusals leave both stores unchanged."""

from __future__ import annotations

import hashlib

import pytest

from kdgat_core.query import open_db
from tests.unit.conftest import run_python
from tests.unit.test_cli_analytics import kdgat

pytestmark = pytest.mark.usefixtures("query_cache_dir")


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_migrate_keeps_every_id_and_value_and_verifies(sqlite_fixture_db, pg_server, tmp_path):
    src, ids = sqlite_fixture_db
    before = _digest(src)
    dest = pg_server.new_store("migrated")
    res = kdgat("migrate", f"sqlite:///{src}", dest, cache_dir=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "row counts verified; search_runs agrees on 20 runs" in res.stdout
    assert "runs: 20 rows" in res.stderr and "metrics:" in res.stderr  # progress
    assert ":mlflow@" not in res.stdout + res.stderr  # the password is masked
    assert _digest(src) == before  # the source is only read
    # kdgat reads the same wide table from both stores (same run ids, values, deleted runs and experiments)
    with open_db(src, cache=False, include_deleted=True) as a, open_db(dest, cache=False, include_deleted=True) as b:
        wa, wb = a.wide(arrow=True), b.wide(arrow=True)
        assert wa.schema == wb.schema and repr(wa.to_pylist()) == repr(wb.to_pylist())  # repr: NaN equals NaN
        run = ids["hcrl_sa/teacher_curriculum"]
        assert repr(a.history(run, "val_loss", arrow=True).to_pylist()) == repr(
            b.history(run, "val_loss", arrow=True).to_pylist()
        )
    # MLflow goes on writing to the migrated store: new experiments get ids after the copied ones
    out = tmp_path / "exp.txt"
    run_python(
        "import sys; from mlflow import MlflowClient; c = MlflowClient(sys.argv[1]); "
        "open(sys.argv[2], 'w').write(c.create_experiment('after-migration'))",
        dest,
        str(out),
    )
    assert int(out.read_text()) == 3  # Default 0, kd-gat-pipeline 1, old-experiment 2 were copied
    # a second migration into the now-full database is refused, and changes nothing
    sums = pg_server.checksums("migrated")
    res = kdgat("migrate", f"sqlite:///{src}", dest, cache_dir=tmp_path)
    assert res.returncode == 2 and res.stderr.startswith("kdgat: DEST") and "is not empty" in res.stderr
    assert pg_server.checksums("migrated") == sums


def test_migrate_refuses_schema_mismatch_and_missing_schema(sqlite_fixture_db, pg_server, tmp_path):
    src, _ = sqlite_fixture_db
    dest = pg_server.new_store("migrate_old_schema")
    pg_server.execute("UPDATE alembic_version SET version_num = '0000older'", database="migrate_old_schema")
    res = kdgat("migrate", src, dest, cache_dir=tmp_path)
    assert res.returncode == 2 and "Schema versions differ" in res.stderr and "0000older" in res.stderr
    bare = pg_server.new_database("migrate_no_schema", schema=False)
    res = kdgat("migrate", src, bare, cache_dir=tmp_path)
    assert res.returncode == 2 and "has no MLflow schema" in res.stderr and "mlflow db upgrade" in res.stderr


def test_a_failing_migration_rolls_back_everything(sqlite_fixture_db, pg_server, tmp_path):
    src, _ = sqlite_fixture_db
    dest = pg_server.new_store("migrate_fails")
    # tags are copied after runs and experiments: a constraint that refuses one tag fails the migration midway
    pg_server.execute("ALTER TABLE tags ADD CONSTRAINT no_dataset CHECK (key <> 'dataset')", database="migrate_fails")
    res = kdgat("migrate", src, dest, cache_dir=tmp_path)
    assert res.returncode == 2 and "rolled back" in res.stderr and "Traceback" not in res.stderr
    counts = pg_server.execute(
        "SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM experiments), (SELECT count(*) FROM params)",
        database="migrate_fails",
    )
    assert counts == [(0, 0, 0)]
