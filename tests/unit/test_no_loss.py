"""Issue 11: nothing lost, nothing misleading. Each test here failed before its fix (see the issue for the reports).

Commands run in this process through `kdgat_core.cli.main` (tests/unit/cli_inprocess.py); stores are written by
MLflow's real client in other processes, and read here through DuckDB only.
"""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kdgat_core.config import KdgatError
from tests.unit.cli_inprocess import assert_one_sentence, digest, run_kdgat
from tests.unit.conftest import REPO


def kdgat(capsys, tmp_path, *args, env=None):
    return run_kdgat(capsys, args, cwd=tmp_path, env={"KDGAT_CACHE_DIR": str(tmp_path / "cache"), **(env or {})})


def sql(path: Path, *statements: str) -> None:
    """Change a copy of a fixture DB with sqlite3 (never while DuckDB has it open in this process)."""
    con = sqlite3.connect(path)
    try:
        for s in statements:
            con.execute(s)
        con.commit()
    finally:
        con.close()


# --- data loss and writes where none belong -----------------------------------------------------------------------
def test_output_refuses_the_tracking_db_and_existing_files(capsys, tmp_path, db_copy):
    db, _ = db_copy
    before = digest(db)
    for target in (db, Path(f"{db}-wal")):
        res = kdgat(capsys, tmp_path, "runs", "-f", "csv", "-o", target, "--tracking-uri", db)
        assert_one_sentence(res, "is the tracking database")
    assert_one_sentence(kdgat(capsys, tmp_path, "doctor", "-o", db, "-u", db), "is the tracking database")
    other = tmp_path / "other.db"
    shutil.copyfile(db, other)  # any SQLite file, not just the one in force
    assert_one_sentence(kdgat(capsys, tmp_path, "runs", "-o", other, "-u", db, "--force"), "is a SQLite database")
    assert digest(db) == before and not Path(f"{db}-wal").exists()

    out = tmp_path / "runs.csv"
    out.write_text("mine\n")
    assert_one_sentence(kdgat(capsys, tmp_path, "runs", "-f", "csv", "-o", out, "-u", db), "use --force")
    assert out.read_text() == "mine\n"
    res = kdgat(capsys, tmp_path, "runs", "-f", "csv", "-o", out, "-u", db, "--force")
    assert res.code == 0 and out.read_text().startswith("run_id,")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]  # written through a renamed temp file
    assert_one_sentence(kdgat(capsys, tmp_path, "runs", "-o", tmp_path, "-u", db, "--force"), "is a directory")


def test_backup_writes_only_regular_files(capsys, tmp_path, db_copy):
    db, _ = db_copy
    # a FIFO stands in for a device node like /dev/full: a regression must not replace a real one on this machine
    special = tmp_path / "device"
    os.mkfifo(special)
    assert_one_sentence(kdgat(capsys, tmp_path, "backup", special, "--force", "-u", db), "not a regular file")
    assert stat.S_ISFIFO(os.stat(special).st_mode)
    folder = tmp_path / "backups"
    folder.mkdir()
    assert_one_sentence(kdgat(capsys, tmp_path, "backup", folder, "--force", "-u", db), "is a directory")
    foreign = tmp_path / "notes.db"
    sql(foreign, "CREATE TABLE notes(x)")
    res = kdgat(capsys, tmp_path, "backup", tmp_path / "copy.db", "-u", foreign)
    assert_one_sentence(res, "not an MLflow tracking database")
    assert not (tmp_path / "copy.db").exists()


def test_backup_of_a_damaged_db_is_one_sentence(capsys, tmp_path, db_copy):
    db, _ = db_copy
    data = bytearray(db.read_bytes())
    page = 4096
    data[page * 2 : page * 6] = b"\xa5" * (page * 4)  # overwrite b-tree pages: "database disk image is malformed"
    db.write_bytes(bytes(data))
    res = kdgat(capsys, tmp_path, "backup", tmp_path / "copy.db", "-u", db)
    assert_one_sentence(res)
    assert not (tmp_path / "copy.db").exists()
    truncated = tmp_path / "truncated.db"
    truncated.write_bytes(bytes(data[: page * 3]))
    assert_one_sentence(kdgat(capsys, tmp_path, "backup", tmp_path / "copy2.db", "-u", truncated))
    assert not (tmp_path / "copy2.db").exists()


@pytest.mark.parametrize("name", ["../../evil", "a/b", "..", ".hidden", ""])
def test_synth_names_cannot_leave_the_folder(capsys, tmp_path, name):
    out = tmp_path / "a" / "b" / "out"
    assert_one_sentence(kdgat(capsys, tmp_path, "synth", out, "--name", name), "Invalid dataset name")
    assert not out.exists() and not (tmp_path / "evil").exists()


def test_synth_and_ingest_refuse_nan_scale_and_unwritable_paths(capsys, tmp_path):
    assert_one_sentence(kdgat(capsys, tmp_path, "synth", tmp_path / "s", "--scale", "nan"), "--scale")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert_one_sentence(kdgat(capsys, tmp_path, "synth", blocker / "sub"), "")
    raw = tmp_path / "raw"
    assert kdgat(capsys, tmp_path, "synth", raw, "--format", "candump", "--scale", "0.05").code == 0
    assert_one_sentence(kdgat(capsys, tmp_path, "ingest", "synthetic", "--raw", raw, "--out", blocker / "root"))
    assert blocker.read_text() == "x"


PARTIAL_SCHEMA = """
CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL);
INSERT INTO alembic_version VALUES ('451aebb31d03');
CREATE TABLE experiments (experiment_id INTEGER PRIMARY KEY, name VARCHAR(256), artifact_location VARCHAR(256),
                          lifecycle_stage VARCHAR(32));
CREATE TABLE runs (run_uuid VARCHAR(32) PRIMARY KEY, name VARCHAR(250), status VARCHAR(9), start_time BIGINT,
                   end_time BIGINT, lifecycle_stage VARCHAR(20), experiment_id INTEGER);
"""


def test_reconcile_dry_run_never_completes_a_partial_schema(capsys, tmp_path):
    db = tmp_path / "partial.db"
    con = sqlite3.connect(db)
    con.executescript(PARTIAL_SCHEMA)
    con.close()
    before = digest(db)
    for args in (["reconcile", "--dry-run"], ["reconcile"], ["jobs"]):
        res = kdgat(capsys, tmp_path, *args, "-u", db)
        if args[0] == "reconcile":
            assert_one_sentence(res, "half-migrated MLflow schema")
    assert digest(db) == before  # MLflow's client created no table


RUN_CASES = {
    "window 0": (["-O", "data.window=0"], "data.window"),
    "val_fraction": (["-O", "data.val_fraction=1.5"], "data.val_fraction"),
    "epochs 0": (["-O", "train.epochs=0"], "train.epochs"),
    "lr nan": (["-O", "train.lr=nan"], "train.lr must be a finite number"),
    "lr 1e999": (["-O", "train.lr=1e999"], "train.lr must be a finite number"),
    "missing data root": (["--data-root", "/nonexistent/kdgat-data"], "/nonexistent/kdgat-data"),
}


@pytest.mark.parametrize("case", sorted(RUN_CASES))
def test_kdgat_run_validates_before_a_run_is_opened(capsys, tmp_path, case):
    extra, message = RUN_CASES[case]
    db = tmp_path / "mlflow.db"
    args = ["run", "autoencoder", "-p", "vgae,teacher,tiny", "-d", "synthetic", "-u", db, *extra]
    if "--data-root" not in extra:
        args += ["--data-root", tmp_path / "data"]
        (tmp_path / "data" / "synthetic").mkdir(parents=True)
    assert_one_sentence(kdgat(capsys, tmp_path, *args), message)
    assert not db.exists()  # no run, not even a store


def test_fusion_without_parents_and_unreachable_stores_record_nothing(capsys, tmp_path):
    from kdgat_core.data.synthetic import write_dataset

    write_dataset(tmp_path / "data", scale=0.05)
    db = tmp_path / "mlflow.db"
    base = ["-d", "synthetic", "--data-root", tmp_path / "data"]
    res = kdgat(capsys, tmp_path, "run", "fusion", "-p", "dqn,teacher,tiny", *base, "-u", db)
    assert_one_sentence(res, "needs a complete autoencoder run")
    assert not db.exists()
    t0 = time.monotonic()
    res = kdgat(capsys, tmp_path, "run", "autoencoder", "-p", "vgae,teacher,tiny", *base, "-u", "http://localhost:1")
    assert_one_sentence(res, "Cannot reach the MLflow server at http://localhost:1")
    assert time.monotonic() - t0 < 30
    # basic auth in the server's URI (https://user:password@host): the password is never printed
    res = kdgat(
        capsys, tmp_path, "run", "autoencoder", "-p", "vgae,teacher,tiny", *base, "-u", "http://jobs:s3cret@localhost:1"
    )
    assert_one_sentence(res, "Cannot reach the MLflow server at http://jobs:***@localhost:1")
    assert "s3cret" not in res.out + res.err
    res = kdgat(capsys, tmp_path, "run", "autoencoder", "-p", "vgae,teacher,tiny", *base, "-u", tmp_path / "data")
    assert_one_sentence(res, "is a directory")
    res = kdgat(capsys, tmp_path, "run", "autoencoder", "-p", "vgae,teacher,tiny", *base, "-u", db,
                "-O", "data.val_fraction=0.0001")  # fmt: skip
    assert_one_sentence(res, "no validation graphs")
    assert not db.exists()


# --- wrong answers that look right ----------------------------------------------------------------------------------
def test_boolean_tags_match_in_any_spelling(capsys, tmp_path, fixture_db):
    from kdgat_core.query import open_db

    db = tmp_path / "lower.db"
    shutil.copyfile(fixture_db[0], db)
    sql(db, "UPDATE tags SET value = lower(value) WHERE key = 'use_kd'")
    sql(db, "UPDATE tags SET value = '1' WHERE key = 'use_kd' AND value = 'true' AND rowid = "
            "(SELECT min(rowid) FROM tags WHERE key = 'use_kd' AND value = 'true')")  # fmt: skip
    want = kdgat(capsys, tmp_path, "runs", "--kd", "-f", "csv", "-u", fixture_db[0]).out.splitlines()
    got = kdgat(capsys, tmp_path, "runs", "--kd", "-f", "csv", "-u", db).out.splitlines()
    assert len(got) == len(want) > 1 and sorted(got) == sorted(want)
    for extra in ([], ["--dataset", "hcrl_sa"]):  # the indexed SQLite path (no cache yet) and the cached one
        cold = kdgat(capsys, tmp_path, "leaderboard", "--kd", "-f", "csv", "-u", db, *extra, env={
            "KDGAT_CACHE_DIR": str(tmp_path / f"fresh{len(extra)}")}).out  # fmt: skip
        ref = kdgat(capsys, tmp_path, "leaderboard", "--kd", "-f", "csv", "-u", fixture_db[0], *extra).out
        assert cold.count("\n") == ref.count("\n") > 1 and ",True," in cold and ",true," not in cold
    with open_db(db, cache_dir=tmp_path / "api") as api:
        assert len(api.runs(kd=True, arrow=True)) == len(want) - 1
        assert set(api.sql("SELECT DISTINCT use_kd FROM runs", arrow=True)["use_kd"].to_pylist()) <= {
            "True", "False", None}  # fmt: skip


def test_unknown_metric_limit_and_missing_reconcile_targets(capsys, tmp_path, db_copy):
    db, _ = db_copy
    assert_one_sentence(kdgat(capsys, tmp_path, "dataset", "hcrl_sa", "-m", "nope", "-u", db), "Unknown metric 'nope'")
    assert_one_sentence(kdgat(capsys, tmp_path, "lineage", "-m", "nope", "-u", db), "Unknown metric 'nope'")
    assert_one_sentence(kdgat(capsys, tmp_path, "runs", "--limit", "-1", "-u", db), "--limit")
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    for target, says in ((tmp_path / "missing.db", "does not exist"), (empty, "is empty"), (tmp_path, "directory")):
        assert_one_sentence(kdgat(capsys, tmp_path, "reconcile", "-n", "-u", target), says)
    assert not (tmp_path / "missing.db").exists() and empty.read_bytes() == b""


KILLED_RUN = r"""
import sys, time
from kdgat_core.config import preset
from kdgat_core.tracking import open_run
with open_run(preset("vgae,teacher,tiny", dataset="synthetic"), sys.argv[1]) as run:
    print(run.run_id, flush=True)
    time.sleep(120)
"""


def test_a_run_killed_with_sigkill_is_lost_without_slurm(capsys, tmp_path):
    db = tmp_path / "mlflow.db"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", KILLED_RUN, f"sqlite:///{db}"], stdout=subprocess.PIPE, text=True,
                            env=env, cwd=tmp_path)  # fmt: skip
    run_id = proc.stdout.readline().strip()
    assert len(run_id) == 32, "the run did not start"
    proc.kill()
    proc.wait()
    assert not list(tmp_path.glob("*.kdgat-init.lock"))  # the init lock does not stay beside the DB
    # no cluster reachable (SLURM installed or not): one note on stderr, and the dead process still makes it lost
    no_cluster = {"SLURM_CONF": str(tmp_path / "no-slurm.conf")}
    t0 = time.monotonic()
    res = kdgat(capsys, tmp_path, "reconcile", "-n", "-f", "csv", "-u", db, env=no_cluster)
    assert res.code == 0 and run_id in res.out and "process gone" in res.out, res.err
    assert all(line.startswith("kdgat: ") for line in res.err_lines)
    # said at once: SLURM's clients retry a missing SLURM_CONF for a minute (kdgat gave up after 30 s)
    assert time.monotonic() - t0 < 15, res.err
    assert "SLURM_CONF names" in res.err or not shutil.which("sbatch"), res.err
    res = kdgat(capsys, tmp_path, "reconcile", "-f", "csv", "-u", db, env=no_cluster)
    assert res.code == 0 and run_id in res.out
    res = kdgat(capsys, tmp_path, "runs", "--status", "failed", "-f", "csv", "-u", db)
    assert run_id in res.out


def test_readers_name_half_created_and_newer_schemas(capsys, tmp_path, fixture_db):
    newer, half = tmp_path / "newer.db", tmp_path / "half.db"
    shutil.copyfile(fixture_db[0], newer)
    shutil.copyfile(fixture_db[0], half)
    sql(newer, "UPDATE alembic_version SET version_num = 'ffffffffffff'")
    sql(half, "DELETE FROM alembic_version")
    for db, says in ((newer, "written by a newer MLflow"), (half, "half-created MLflow schema")):
        before = digest(db)
        for args in (["runs"], ["leaderboard"], ["reconcile", "-n"]):
            res = kdgat(capsys, tmp_path, *args, "-u", db)
            assert_one_sentence(res, says)
            assert "mlflow db upgrade" not in res.err or says != "written by a newer MLflow"
        res = kdgat(capsys, tmp_path, "doctor", "-u", db)
        assert res.code == 1 and says in res.out
        assert digest(db) == before


def test_reading_a_wal_db_leaves_no_wal_files(capsys, tmp_path, fixture_db):
    db = tmp_path / "wal.db"
    shutil.copyfile(fixture_db[0], db)
    sql(db, "PRAGMA journal_mode=WAL")
    assert not Path(f"{db}-wal").exists()
    for args in (["runs"], ["leaderboard"], ["doctor"]):
        assert kdgat(capsys, tmp_path, *args, "-u", db).code == 0
        assert not Path(f"{db}-wal").exists() and not Path(f"{db}-shm").exists(), args
    assert "journal,wal" in kdgat(capsys, tmp_path, "doctor", "-f", "csv", "-u", db).out  # the header says WAL


# --- smaller things ---------------------------------------------------------------------------------------------------
TOML_CASES = {
    "not utf-8": (b'[tracking]\nuri = "\xff.db"\n', "not UTF-8"),
    "uri = 5": (b"[tracking]\nuri = 5\n", "[tracking] uri = 5 is invalid"),
    "unknown key": (b'[tracking]\nurl = "x.db"\n', "unknown key 'url' in [tracking]"),
    "test_splits": (b'[datasets.mine]\ntest_splits = "notalist"\n', "[datasets.mine] test_splits"),
}


@pytest.mark.parametrize("case", sorted(TOML_CASES))
def test_kdgat_toml_is_checked_against_its_schema(capsys, tmp_path, case):
    content, says = TOML_CASES[case]
    (tmp_path / "kdgat.toml").write_bytes(content)
    for args in (["doctor"], ["runs"], ["datasets"], ["submit", "autoencoder", "-d", "hcrl_sa", "-n"]):
        assert_one_sentence(kdgat(capsys, tmp_path, *args), says)


def test_doctor_says_when_kdgat_toml_gives_no_tracking_uri(capsys, tmp_path, db_copy):
    (tmp_path / "kdgat.toml").write_text('[data]\nroot = "data"\n')
    res = kdgat(capsys, tmp_path, "doctor", "-f", "csv", "-u", db_copy[0])
    assert "gives no tracking URI" in res.out and str(tmp_path / "kdgat.toml") in res.out


def test_ingest_reads_a_bom_and_strict_refuses_impossible_frames(tmp_path):
    from kdgat_core.data.ingest import ingest

    split = tmp_path / "raw" / "train_01_attack_free"
    split.mkdir(parents=True)
    (split / "a.csv").write_bytes(
        b"\xef\xbb\xbftimestamp,arbitration_id,data_field,attack\n1.0,100,00,0\n2.0,101,01,1\n"
    )
    (split / "b.log").write_bytes(b"\xef\xbb\xbf(1.000001) can0 100#00\n(1.000002) can0 101#0011\n")
    results = {r.recording: r for r in ingest("synthetic", tmp_path / "raw", tmp_path / "root")}
    assert results["a"].format == "csv" and results["a"].messages == 2 and results["a"].skipped == 0
    assert results["b"].messages == 2 and results["b"].skipped == 0
    ok = "timestamp,arbitration_id,data_field,attack\n1700000000.0,100,00,0\n"
    for bad, says in (
        ("1700000001.0,100,0011223344556677889900,0\n", "11 bytes"),
        ("-5.0,100,00,0\n", "negative"),
        ("1600000000.0,100,00,0\n", "before the previous line"),  # 10^8 s backwards
    ):
        (split / "a.csv").write_text(ok + bad)
        (split / "b.log").unlink(missing_ok=True)
        with pytest.raises(KdgatError, match=says):
            ingest("synthetic", tmp_path / "raw", tmp_path / "strict", strict=True, force=True)


@pytest.mark.parametrize(
    "args,says",
    [
        (["--array", "5-1"], "runs backwards"),
        (["--after", "abc"], "--after job id 'abc'"),
        (["--executor", "bogus"], "Unknown executor 'bogus'"),
    ],
)
def test_submit_dry_run_refuses_what_it_used_to_drop(capsys, tmp_path, args, says):
    res = kdgat(capsys, tmp_path, "submit", "autoencoder", "-d", "hcrl_sa", "--dry-run", *args)
    assert_one_sentence(res, says)


@pytest.mark.parametrize(
    "args,says",
    [
        (["leaderboard", "--format", "xml"], "'xml' is not one of"),
        (["leaderboard", "--top", "abc"], "--top"),
        (["leaderboard", "--top", "99999999999999999999"], "--top"),
        (["runs", "--limit", "99999999999999999999"], "--limit"),
        (["nosuchcommand"], "No such command"),
    ],
)
def test_usage_errors_are_one_sentence(capsys, tmp_path, args, says):
    assert_one_sentence(kdgat(capsys, tmp_path, *args), says)


def test_pid_reuse_and_other_hosts_are_not_lost():
    from kdgat_core.slurm.local import run_process_gone

    here = socket.gethostname()
    assert not run_process_gone(os.getpid(), here, time.time() * 1000)  # alive, started before the run (now)
    from kdgat_core.slurm.local import _process_start_epoch

    began = _process_start_epoch(os.getpid())
    assert began is not None
    assert run_process_gone(os.getpid(), here, (began - 3600) * 1000)  # this pid began an hour after the run: reused
    assert not run_process_gone(999_999_999, "another-host", None)  # another host cannot tell
    assert not run_process_gone("not-a-pid", here, None)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert run_process_gone(dead.pid, here, None)


def test_readme_says_how_to_get_the_cpu_torch_anywhere():
    readme = (REPO / "README.md").read_text()
    assert "download.pytorch.org/whl/cpu" in readme


def test_schema_revisions_match_the_installed_mlflow():
    from kdgat_core.mlflow_schema import BUNDLED_REVISIONS, revisions

    assert revisions().head == BUNDLED_REVISIONS[-1] or revisions().mlflow_version != "3.17.2"
    assert set(BUNDLED_REVISIONS) <= set(revisions().known)
