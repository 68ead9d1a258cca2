"""`kdgat migrate`: a SQLite store into PostgreSQL, every id kept, verified; refusals leave both stores unchanged."""

from __future__ import annotations

import hashlib
import json

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


AWKWARD = ["tab\there", "line\nbreak", "cr\rhere", "back\\slash", "\\.", "\\N", "", "ünïcode ✓", 'quote"s, and commas']


def _schema(pg_server, database: str) -> list:
    """Every index and constraint definition of the public schema."""
    return pg_server.execute(
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2",
        database=database,
    ) + pg_server.execute(
        "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1, 2",
        database=database,
    )


@pytest.mark.parametrize("bulk", [False, True], ids=["through-indexes", "indexes-rebuilt"])
def test_migrate_copies_awkward_text_and_extreme_numbers_exactly(pg_server, tmp_path, monkeypatch, bulk):
    """COPY's text format escapes tabs, newlines and backslashes: every byte and every float bit arrives unchanged,
    also when big tables are loaded without their indexes and keys (rebuilt after: the same schema as MLflow's)."""
    import sqlite3

    from kdgat_core.tracking import migrate as migrate_module

    src = tmp_path / "awkward.db"
    run_python(
        "import sys, json\n"
        "from mlflow import MlflowClient\n"
        "from mlflow.entities import Metric, Param, RunTag\n"
        "c = MlflowClient(f'sqlite:///{sys.argv[1]}')\n"
        "exp = c.create_experiment('awkward')\n"
        "r = c.create_run(exp).info.run_id\n"
        "vals = json.loads(sys.argv[2])\n"
        "c.log_batch(r, params=[Param(f'p{i}', v) for i, v in enumerate(vals)],\n"
        "            tags=[RunTag(f't{i}', v) for i, v in enumerate(vals)])\n"
        "nums = [0.1 + 0.2, 1e-300, -2.5e-310, 1.7976931348623157e308, float('inf'), float('-inf'), float('nan')]\n"
        "c.log_batch(r, metrics=[Metric('m', v, 1000 + s, s) for s, v in enumerate(nums)])\n"
        "c.set_terminated(r)\n",
        str(src),
        json.dumps(AWKWARD),
    )
    db_name = f"migrate_awkward_{int(bulk)}"
    dest = pg_server.new_store(db_name)
    fresh = _schema(pg_server, db_name)
    if bulk:
        monkeypatch.setattr(migrate_module, "BULK_ROWS", 0)
        messages: list[str] = []
        report = migrate_module.migrate(dest=dest, src=f"sqlite:///{src}", progress=messages.append)
        assert report.verified_runs == 1 and any("rebuilding its 4 indexes and keys" in m for m in messages), messages
    else:
        res = kdgat("migrate", f"sqlite:///{src}", dest, cache_dir=tmp_path)
        assert res.returncode == 0, res.stderr
    assert _schema(pg_server, db_name) == fresh  # every index, key and foreign key as MLflow made them
    con = sqlite3.connect(src)
    for table, cols in {
        "params": "key, value, run_uuid",
        "tags": "key, value, run_uuid",
        "metrics": "key, value, timestamp, run_uuid, step, is_nan",
        "latest_metrics": "key, value, timestamp, step, is_nan, run_uuid",
    }.items():
        want = sorted(con.execute(f"SELECT {cols} FROM {table}").fetchall(), key=repr)
        got = pg_server.execute(f"SELECT {cols} FROM {table}", database=db_name)
        got = sorted((tuple(int(v) if isinstance(v, bool) else v for v in r) for r in got), key=repr)
        assert repr(got) == repr(want), table  # repr: exact floats, every character
    con.close()
    values = {r[0] for r in pg_server.execute("SELECT value FROM tags WHERE key LIKE 't%'", database=db_name)}
    assert set(AWKWARD) <= values
