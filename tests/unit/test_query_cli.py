"""`kdgat query` as a user runs it: SQL from a file or stdin, a time limit, and Ctrl-C, each ending in one sentence."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.unit.conftest import REPO

RUNAWAY = "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r"


@pytest.fixture
def uri(fixture_db):
    return f"sqlite:///{fixture_db[0]}"


@pytest.fixture
def store_uri(store_db):
    """The fixture content on each backend (SQLite file, PostgreSQL database)."""
    where = store_db[0]
    return f"sqlite:///{where}" if isinstance(where, Path) else where


def _query(*args, stdin: str | None = None, cache_dir=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, KDGAT_CACHE_DIR=str(cache_dir))
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run(
        [sys.executable, "-m", "kdgat_core.cli", "query", *map(str, args)],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=str(REPO),
        timeout=120,
    )


def test_sql_from_stdin_and_from_a_file(store_uri, tmp_path):
    uri = store_uri
    # a query longer than the kernel's limit for one argument (128 KiB): only a file or stdin can carry it
    long_sql = "SELECT count(*) AS n FROM runs WHERE run_name NOT IN (" + ", ".join(["'x'"] * 40_000) + ")"
    assert len(long_sql) > 131_072
    res = _query("-", "-u", uri, "-f", "csv", stdin=long_sql, cache_dir=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout == "n\n18\n"
    sql_file = tmp_path / "long.sql"
    sql_file.write_text(long_sql)
    res = _query("--file", sql_file, "-u", uri, "-f", "csv", cache_dir=tmp_path)
    assert (res.returncode, res.stdout) == (0, "n\n18\n"), res.stderr
    res = _query("--file", "-", "-u", uri, "-f", "csv", stdin="SELECT 7 AS n", cache_dir=tmp_path)
    assert (res.returncode, res.stdout) == (0, "n\n7\n"), res.stderr


@pytest.mark.parametrize(
    "args,says",
    [
        ([], "Give the SQL"),
        (["SELECT 1", "--file", "q.sql"], "not both"),
        (["--file", "missing.sql"], "Cannot read"),
        (["--file", "latin1.sql"], "not UTF-8"),
        (["SELECT 1", "--timeout", "-1"], "--timeout"),
    ],
)
def test_bad_sql_sources_are_one_sentence(uri, tmp_path, args, says):
    (tmp_path / "latin1.sql").write_bytes("SELECT 'café'".encode("latin-1"))
    res = _query(*[str(tmp_path / a) if a.endswith(".sql") else a for a in args], "-u", uri, cache_dir=tmp_path)
    assert res.returncode == 2
    assert res.stderr.startswith("kdgat: ") and says in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr


def test_runaway_query_is_stopped_by_the_timeout(store_uri, tmp_path):
    uri = store_uri
    t0 = time.monotonic()
    res = _query(RUNAWAY, "--timeout", "1", "-u", uri, cache_dir=tmp_path)
    assert res.returncode == 2
    assert res.stderr == (
        "kdgat: The query ran longer than 1 s and was stopped; narrow it (WHERE, LIMIT) or raise --timeout.\n"
    )
    assert time.monotonic() - t0 < 60


def _threads(pid: int) -> dict[int, tuple[str, int]]:
    """thread id -> (state letter, CPU ticks used) of each thread of a process, from /proc."""
    out: dict[int, tuple[str, int]] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:  # the process has ended
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        out[int(tid)] = (fields[0], int(fields[11]) + int(fields[12]))
    return out


def _querying(pid: int, window_s: float = 0.5) -> bool:
    """True when the process's main thread slept through `window_s` while its other threads computed: it waits on
    DuckDB's query (fetch_stoppable's join). Before that, the main thread itself works (imports, opening the DB)."""
    before = _threads(pid)
    time.sleep(window_s)
    after = _threads(pid)
    main_before, main_after = before.get(pid), after.get(pid)
    if main_before is None or main_after is None or main_after[0] != "S" or main_after[1] != main_before[1]:
        return False
    worked = sum(ticks - before.get(tid, (None, 0))[1] for tid, (_, ticks) in after.items() if tid != pid)
    return worked >= max(1, int(0.1 * os.sysconf("SC_CLK_TCK")))  # at least 0.1 s of CPU in the window


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs /proc to see the query running")
def test_ctrl_c_stops_a_long_query_with_one_sentence(fixture_db, tmp_path):
    env = dict(os.environ, KDGAT_CACHE_DIR=str(tmp_path))
    proc = subprocess.Popen(
        [sys.executable, "-m", "kdgat_core.cli", "query", RUNAWAY, "--timeout", "0", "-u", str(fixture_db[0])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=str(REPO),
        # a shell's background job ignores SIGINT; a terminal's foreground job does not
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline, seen = time.monotonic() + 60, 0
        while seen < 2:  # inside the query (twice in a row): Ctrl-C must stop DuckDB, not the start-up
            seen = seen + 1 if _querying(proc.pid) else 0
            assert proc.poll() is None and time.monotonic() < deadline, "the query never started"
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert time.monotonic() - t0 < 10
    assert proc.returncode == 130
    assert err == "kdgat: query interrupted (Ctrl-C); nothing was printed or written.\n"
    assert out == ""
