"""The TUI tests' tracking DB: written by MLflow's real client (kdgat_core.tracking.sample) in a subprocess, then,
for the snapshot tests only, a copy with fixed run ids and times (SQLite in another subprocess), so SVGs are stable.

Never opened with MLflow in this process: the tests read it through DuckDB.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from kdgat_core.config import HOST_TAG, PID_TAG

SAMPLE_ARGS = ["--datasets", "hcrl_sa,set_01", "--seeds", "2", "--epochs", "12"]

# Rewrites run ids to md5("kdgat-run-<i>") (in start order) everywhere they appear, and times to a fixed clock.
_NORMALISE = textwrap.dedent("""
    import sqlite3, sys, datetime, hashlib
    con = sqlite3.connect(sys.argv[1])
    con.execute("PRAGMA foreign_keys = OFF")
    ids = [r[0] for r in con.execute("SELECT run_uuid FROM runs ORDER BY start_time, rowid")]
    new = {old: hashlib.md5(f"kdgat-run-{i}".encode()).hexdigest() for i, old in enumerate(ids)}
    t0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC
    for i, old in enumerate(ids):
        start, end = t0 + i * 600_000, t0 + i * 600_000 + 60_000 * (5 + i % 7)
        con.execute("UPDATE runs SET start_time = ?, end_time = CASE WHEN end_time IS NULL THEN NULL ELSE ? END "
                    "WHERE run_uuid = ?", (start, end, old))
        for key, ms in (("start_time", start), ("end_time", end)):
            iso = datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).isoformat(timespec="seconds")
            con.execute("UPDATE tags SET value = ? WHERE run_uuid = ? AND key = ?", (iso, old, key))
    for table in ("runs", "tags", "params", "metrics", "latest_metrics"):
        for old, nid in new.items():
            con.execute(f"UPDATE {table} SET run_uuid = ? WHERE run_uuid = ?", (nid, old))
    folder = sys.argv[2]
    con.execute("UPDATE tags SET value = replace(value, ?, '/scratch/kdgat') WHERE key = 'artifact_dir'", (folder,))
    for old, nid in new.items():
        con.execute("UPDATE tags SET value = replace(value, ?, ?) WHERE value LIKE ?", (old, nid, f"%{old}%"))
        con.execute("UPDATE params SET value = ? WHERE value = ?", (nid, old))
        con.execute("UPDATE runs SET artifact_uri = replace(artifact_uri, ?, ?)", (old, nid))
    con.execute("UPDATE tags SET value = 'abc1234' WHERE key = 'git_commit'")
    # the writer's pid and host (kept for finding lost runs) differ on every write
    con.execute("UPDATE tags SET value = '4242' WHERE key = ?", (sys.argv[3],))
    con.execute("UPDATE tags SET value = 'login01' WHERE key = ?", (sys.argv[4],))
    con.commit()
    con.close()
""")


def write_sample_db(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    db = folder / "mlflow.db"
    subprocess.run(
        [sys.executable, "-m", "kdgat_core.tracking.sample", "--tracking-uri", f"sqlite:///{db}", *SAMPLE_ARGS],
        check=True,
        capture_output=True,
        cwd=folder,
    )
    return db


def normalised_copy(db: Path, folder: Path) -> Path:
    import shutil

    db = Path(db)
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / "mlflow.db"
    shutil.copyfile(db, out)
    subprocess.run([sys.executable, "-c", _NORMALISE, str(out), str(db.parent), PID_TAG, HOST_TAG], check=True)
    return out
