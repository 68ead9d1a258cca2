"""Query speed: kdgat's DuckDB reader against MLflow's own client, in one run, on the same DB.

    .venv/bin/python benchmarks/make_big_db.py --runs 100000 --out /work/bench_data/big.db
    .venv/bin/python benchmarks/bench_query.py --db /work/bench_data/big.db [--repeat 5] [--skip-slow]

MLflow runs in worker subprocesses (this same script with --mlflow-worker), never in the process that reads the
file through DuckDB: two SQLite copies in one process do not see each other's locks. MLflow "after ANALYZE" runs on a
copy (`<db>.analyzed.db`, kept for reuse); the original is never written. The cache test ("wide table after 100 new
runs") writes 100 runs through MLflow into a second copy (`<db>.writer.db`, removed at the end).
Every row prints the median of the repetitions, the ratio to its baseline, and PASS/MISS against the target.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LEADERBOARD_FILTER = "tags.dataset = 'hcrl_sa' AND tags.stage = 'evaluation'"
DATASET, STAGE, METRIC, TOP = "hcrl_sa", "evaluation", "f1", 10
HISTORY_METRIC = "train_loss"
WRITER_RUNS = 100
SLOW_CALL_S = 3.0  # a measured call slower than this is not repeated (MLflow at 100k runs: 21 s a call)


# ----------------------------------------------------------------------------------------------------------------------
# MLflow side: worker subprocess (imports mlflow; never touches DuckDB)
# ----------------------------------------------------------------------------------------------------------------------
def repeat(fn, n: int) -> tuple[list[float], object]:
    """Time fn() up to n times; stop repeating once a call is slow. Returns (seconds per call, last result)."""
    times, out = [], None
    for _ in range(n):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
        if times[-1] > SLOW_CALL_S:
            break
    return times, out


def mlflow_worker(task: str, db: Path, n: int, run_id: str | None) -> dict:
    import logging

    t = time.perf_counter()
    import mlflow
    from mlflow import MlflowClient

    import_s = time.perf_counter() - t
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    from kdgat_core.config import EXPERIMENT_NAME

    mlflow.set_tracking_uri(f"sqlite:///{db}")
    client = MlflowClient()
    exp = client.get_experiment_by_name(EXPERIMENT_NAME)  # engine and schema check done before timing
    if task == "import":
        return {"times": [import_s]}
    if task in ("leaderboard", "leaderboard_warm"):

        def board():
            return mlflow.search_runs(
                experiment_ids=[exp.experiment_id],
                filter_string=LEADERBOARD_FILTER,
                order_by=[f"metrics.{METRIC} DESC"],
                max_results=TOP,
            )

        if task == "leaderboard_warm":
            board()  # untimed: the copy's pages come into the OS cache first (a cold first call measured 3.7 s, warm 1 s)
        times, df = repeat(board, n)
        return {"times": times, "run_ids": list(df["run_id"]), "values": [float(v) for v in df[f"metrics.{METRIC}"]]}
    if task == "all_runs":
        times, df = repeat(lambda: mlflow.search_runs(search_all_experiments=True), 1)
        return {"times": times, "rows": len(df), "columns": len(df.columns)}
    if task == "history":
        times, hist = repeat(lambda: client.get_metric_history(run_id, HISTORY_METRIC), n)
        return {"times": times, "points": len(hist)}
    if task == "write":  # a writer adding runs the way kdgat's tracking writer does: tags, params, per-epoch batches
        from mlflow.entities import Metric, Param, RunTag

        from kdgat_core.config import MLFLOW_RUN_NAME_TAG, Tag, preset

        ids = []
        for i in range(n):
            cfg = preset("gat,student", dataset=DATASET)
            cfg.train.seed = 1000 + i
            now = int(time.time() * 1000)
            run = client.create_run(
                exp.experiment_id, start_time=now, tags={MLFLOW_RUN_NAME_TAG: cfg.run_name}, run_name=cfg.run_name
            )
            rid = run.info.run_id
            client.log_batch(
                rid,
                tags=[
                    RunTag(k, str(v))
                    for k, v in {
                        Tag.DATASET: cfg.dataset,
                        Tag.STAGE: cfg.stage,
                        Tag.MODEL_SIZE: cfg.model_size,
                        Tag.USE_KD: "False",
                        Tag.MODEL_ARCH: cfg.arch.value,
                        Tag.RUN_ID: rid,
                        Tag.STATUS: "complete",
                        Tag.SEED: cfg.train.seed,
                    }.items()
                ],
                params=[Param(k, json.dumps(v) if isinstance(v, list) else str(v)) for k, v in cfg.flatten().items()],
            )
            client.log_batch(
                rid,
                metrics=[Metric(k, 1.0 / (e + 1), now + e, e) for e in range(20) for k in ("train_loss", "val_loss")],
            )
            client.log_batch(
                rid,
                metrics=[
                    Metric(k, 0.5 + i / 1000, now + 30, 19)
                    for k in ("accuracy", "f1", "precision_", "recall", "auc", "mcc")
                ],
            )
            client.set_terminated(rid, "FINISHED")
            ids.append(rid)
        return {"times": [], "run_ids": ids}
    raise SystemExit(f"unknown worker task {task}")


def run_worker(task: str, db: Path, n: int = 1, run_id: str | None = None, timeout: float = 1800) -> dict:
    cmd = [sys.executable, __file__, "--mlflow-worker", task, "--db", str(db), "--repeat", str(n)]
    if run_id:
        cmd += ["--run-id", run_id]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=tempfile.gettempdir())
    if out.returncode != 0:
        raise RuntimeError(f"MLflow worker '{task}' failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------------------------------
# Table
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class Row:
    what: str
    times: list[float] | None  # None: not available
    baseline: str = ""  # name of the baseline row
    target_ratio: float | None = None  # at least this many times faster than the baseline
    target_s: float | None = None  # under this many seconds
    note: str = ""

    @property
    def median(self) -> float | None:
        return statistics.median(self.times) if self.times else None


@dataclass
class Table:
    rows: list[Row] = field(default_factory=list)

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        med = fmt_s(row.median) if row.times else "not available"
        print(
            f"  {row.what}: {med}"
            + (f" (n={len(row.times)})" if row.times else "")
            + (f"  [{row.note}]" if row.note else ""),
            flush=True,
        )
        return row

    def get(self, what: str) -> Row | None:
        return next((r for r in self.rows if r.what == what), None)

    def render(self) -> str:
        head = ["measurement", "median", "n", "baseline", "ratio", "target", "result"]
        lines = []
        for r in self.rows:
            base = self.get(r.baseline) if r.baseline else None
            ratio = (base.median / r.median) if base and base.median and r.median else None
            targets, ok = [], []
            if r.target_ratio is not None:
                targets.append(f">={r.target_ratio:g}x")
                if ratio is not None:
                    ok.append(ratio >= r.target_ratio)
            if r.target_s is not None:
                targets.append(f"<{fmt_s(r.target_s)}")
                if r.median is not None:
                    ok.append(r.median < r.target_s)
            result = (
                ""
                if not targets
                else ("not available" if r.median is None or not ok else ("PASS" if all(ok) else "MISS"))
            )
            lines.append(
                [
                    r.what,
                    fmt_s(r.median) if r.median is not None else "not available",
                    str(len(r.times)) if r.times else "-",
                    f"{r.baseline} ({fmt_s(base.median)})" if base and base.median is not None else r.baseline,
                    f"{ratio:,.1f}x" if ratio is not None else "",
                    " and ".join(targets),
                    result,
                ]
            )
        widths = [max(len(h), *(len(l[i]) for l in lines)) for i, h in enumerate(head)]
        out = [
            "| " + " | ".join(h.ljust(w) for h, w in zip(head, widths)) + " |",
            "|" + "|".join("-" * (w + 2) for w in widths) + "|",
        ]
        out += ["| " + " | ".join(c.ljust(w) for c, w in zip(l, widths)) + " |" for l in lines]
        notes = [f"- {r.what}: {r.note}" for r in self.rows if r.note]
        return "\n".join(out + ([""] + notes if notes else []))


def fmt_s(s: float | None) -> str:
    if s is None:
        return ""
    if s < 0.1:
        return f"{s * 1000:.1f} ms"
    return f"{s:.2f} s" if s < 100 else f"{s:.0f} s"


# ----------------------------------------------------------------------------------------------------------------------
# kdgat side (this process: DuckDB only)
# ----------------------------------------------------------------------------------------------------------------------
def kdgat_api():
    """kdgat_core.query's open_db, or None while the query layer is not there yet."""
    try:
        from kdgat_core.query import open_db
    except ImportError:
        return None
    return open_db


def timed(fn, n: int) -> tuple[list[float], object]:
    return repeat(fn, n)


def fresh_interpreter_seconds(code: str, n: int, env: dict | None = None) -> list[float]:
    """Wall time of `python -c code`'s timed section, measured inside the child (excludes interpreter start)."""
    out = []
    for _ in range(n):
        prog = f"import time; t = time.perf_counter()\n{code}\nprint(time.perf_counter() - t)"
        r = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, env=env, cwd=ROOT)
        if r.returncode != 0:
            raise RuntimeError(r.stderr[-2000:])
        out.append(float(r.stdout.strip().splitlines()[-1]))
    return out


def process_seconds(argv: list[str], n: int, env: dict) -> tuple[list[float], str]:
    times, stdout = [], ""
    for _ in range(n):
        t = time.perf_counter()
        r = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tempfile.gettempdir())
        times.append(time.perf_counter() - t)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {r.stderr[-2000:]}")
        stdout = r.stdout
    return times, stdout


def column(table, name: str) -> list:
    """A column of a pandas DataFrame or a pyarrow Table as a list."""
    if hasattr(table, "column_names"):
        return table.column(name).to_pylist()
    return list(table[name])


def nrows(table) -> int:
    return table.num_rows if hasattr(table, "num_rows") else len(table)


def ncols(table) -> int:
    return table.num_columns if hasattr(table, "num_columns") else len(table.columns)


def copy_db(src: Path, dst: Path) -> None:
    tmp = dst.with_suffix(dst.suffix + ".partial")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


MLFLOW_ROWS = (
    "import mlflow",
    "MLflow leaderboard (DB as MLflow leaves it)",
    "MLflow leaderboard after ANALYZE",
    "MLflow all runs into pandas",
    "MLflow one run's metric history",
)


def mlflow_side(a, db: Path, n: int, tbl: Table, checks: list[str]) -> dict:
    """The MLflow baselines, each in a worker subprocess."""
    print("MLflow (worker subprocesses):", flush=True)
    tbl.add(Row("import mlflow", [run_worker("import", db)["times"][0] for _ in range(min(n, 3))]))
    lb = run_worker("leaderboard", db, n)
    tbl.add(
        Row(
            "MLflow leaderboard (DB as MLflow leaves it)",
            lb["times"],
            note="search_runs, filter dataset+stage, order by f1, top 10",
        )
    )
    if a.skip_analyze:
        tbl.add(Row("MLflow leaderboard after ANALYZE", None, note="skipped (--skip-analyze)"))
    else:
        analyzed = db.with_name(db.stem + ".analyzed.db")
        if not (analyzed.exists() and analyzed.stat().st_mtime >= db.stat().st_mtime):
            need = db.stat().st_size * 1.1
            if shutil.disk_usage(db.parent).free < need:
                tbl.add(Row("MLflow leaderboard after ANALYZE", None, note="skipped: not enough disk for a copy"))
                analyzed = None
            else:
                t = time.time()
                copy_db(db, analyzed)
                with sqlite3.connect(analyzed) as c:
                    c.execute("ANALYZE")
                print(f"  (copied and ANALYZEd {analyzed.name} in {time.time() - t:.0f} s)", flush=True)
        if analyzed is not None:
            lba = run_worker("leaderboard_warm", analyzed, n)
            tbl.add(Row("MLflow leaderboard after ANALYZE", lba["times"], note=f"on the copy {analyzed.name}"))
            if lba["run_ids"] != lb["run_ids"]:
                checks.append("MISMATCH: MLflow's leaderboard differs after ANALYZE")
    if a.skip_slow:
        tbl.add(Row("MLflow all runs into pandas", None, note="skipped (--skip-slow)"))
        all_rows = None
    else:
        ar = run_worker("all_runs", db, 1, timeout=3600)
        all_rows = ar["rows"]
        tbl.add(
            Row(
                "MLflow all runs into pandas",
                ar["times"],
                note=f"search_runs(search_all_experiments=True): {ar['rows']:,} rows x {ar['columns']} columns",
            )
        )
    top_run = lb["run_ids"][0]
    hi = run_worker("history", db, n, run_id=top_run)
    tbl.add(
        Row(
            "MLflow one run's metric history",
            hi["times"],
            note=f"get_metric_history({top_run[:8]}, {HISTORY_METRIC}): {hi['points']} points",
        )
    )

    return {"lb": lb, "hi": hi, "all_rows": all_rows}


# ----------------------------------------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", type=Path, default=Path("/work/bench_data/big.db"))
    ap.add_argument("--repeat", type=int, default=5, help="repetitions of each fast measurement (median printed)")
    ap.add_argument("--skip-slow", action="store_true", help="skip MLflow's all-runs-into-pandas (209 s at 100k)")
    ap.add_argument("--skip-analyze", action="store_true", help="skip MLflow after ANALYZE (needs a copy of the DB)")
    ap.add_argument("--skip-cache", action="store_true", help="skip the warm-cache test (needs a copy of the DB)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument(
        "--mlflow-from",
        type=Path,
        help="reuse the MLflow figures of an earlier --json on this same DB (re-measure kdgat alone after a change)",
    )
    ap.add_argument("--mlflow-worker", help=argparse.SUPPRESS)
    ap.add_argument("--run-id", help=argparse.SUPPRESS)
    a = ap.parse_args()
    db = a.db.resolve()
    if a.mlflow_worker:
        print(json.dumps(mlflow_worker(a.mlflow_worker, db, a.repeat, a.run_id)))
        return
    if not db.is_file():
        raise SystemExit(f"{db} does not exist; build it with benchmarks/make_big_db.py.")
    n = a.repeat
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:  # closed before DuckDB opens the file
        n_runs = con.execute("SELECT count(*) FROM runs").fetchone()[0]
    print(
        f"DB {db}: {db.stat().st_size / 1e9:.2f} GB, {n_runs:,} runs; {n} repetitions; "
        f"python {sys.version.split()[0]}, {os.cpu_count()} cores",
        flush=True,
    )
    tbl = Table()
    checks: list[str] = []
    t_all = time.time()

    # --- MLflow baselines -------------------------------------------------------------------------------------
    if a.mlflow_from:
        saved = json.loads(a.mlflow_from.read_text())
        if saved.get("runs") != n_runs or saved.get("db_mtime") != db.stat().st_mtime:
            raise SystemExit(f"{a.mlflow_from} was measured on another DB (or this one changed since).")
        print(f"MLflow: figures from {a.mlflow_from} (measured earlier on this same DB)", flush=True)
        for r in saved["rows"]:
            if r["what"] in MLFLOW_ROWS:
                tbl.add(
                    Row(r["what"], r["times_s"], note=(r["note"] + "; " if r["note"] else "") + "from an earlier run")
                )
        ml = saved["mlflow"]
    else:
        ml = mlflow_side(a, db, n, tbl, checks)
    lb, hi, all_rows, top_run = ml["lb"], ml["hi"], ml["all_rows"], ml["lb"]["run_ids"][0]

    # --- kdgat ---------------------------------------------------------------------------------------------------
    print("kdgat (this process, DuckDB):", flush=True)
    open_db = kdgat_api()
    cache_dir = Path(tempfile.mkdtemp(prefix="kdgat-bench-cache-"))
    os.environ["KDGAT_CACHE_DIR"] = str(cache_dir)  # an empty read cache: "first time" is really the first time
    env = {**os.environ, "KDGAT_CACHE_DIR": str(cache_dir)}
    tbl.add(
        Row(
            "import kdgat_core.query",
            # the package alone loads no view (its names load kdgat_core.query.db on first use): time what a user types
            fresh_interpreter_seconds("from kdgat_core.query import open_db", min(n, 3), env),
            baseline="import mlflow",
        )
    )
    if open_db is None:
        for what in (
            "kdgat leaderboard",
            "kdgat wide table, first time (cold cache)",
            "kdgat one run's metric history",
        ):
            tbl.add(Row(what, None, note="kdgat_core.query.open_db not available"))
    else:
        kdgat_side(tbl, checks, open_db, db, n, lb, hi, all_rows, top_run, a.skip_cache, env)
    shutil.rmtree(cache_dir, ignore_errors=True)

    print(f"\nBenchmark finished in {time.time() - t_all:.0f} s on {db} ({n_runs:,} runs)\n")
    print(tbl.render())
    print("\nChecks:\n" + "\n".join(f"- {c}" for c in checks or ["(none ran)"]))
    if a.json:
        a.json.write_text(
            json.dumps(
                {
                    "db": str(db),
                    "runs": n_runs,
                    "db_mtime": db.stat().st_mtime,
                    "mlflow": ml,
                    "rows": [
                        {
                            "what": r.what,
                            "times_s": r.times,
                            "median_s": r.median,
                            "baseline": r.baseline,
                            "target_ratio": r.target_ratio,
                            "target_s": r.target_s,
                            "note": r.note,
                        }
                        for r in tbl.rows
                    ],
                    "checks": checks,
                },
                indent=2,
            )
        )


def kdgat_side(
    tbl: Table,
    checks: list[str],
    open_db,
    db: Path,
    n: int,
    lb: dict,
    hi: dict,
    all_rows: int | None,
    top_run: str,
    skip_cache: bool,
    env: dict,
) -> None:
    mlflow_lb, mlflow_lba = "MLflow leaderboard (DB as MLflow leaves it)", "MLflow leaderboard after ANALYZE"
    board_kw = dict(metric=METRIC, top=TOP, dataset=DATASET, stage=STAGE, arrow=True)

    def board_once():
        with open_db(db) as tdb:  # a fresh TrackingDB per call: what one CLI call does
            return tdb.leaderboard(**board_kw)

    def wide_once(path: Path):
        """(table, refresh stats, seconds until the caller has the table, seconds until the cache is on disk too)."""
        t = time.perf_counter()
        with open_db(path) as tdb:
            table = tdb.wide(arrow=True)
            ready = time.perf_counter() - t
            stats = tdb.last_refresh
        return table, stats, ready, time.perf_counter() - t  # close() waits for the background cache write

    def check_board(top, label: str) -> None:
        ids = column(top, "run_id")
        checks.append(
            f"ok: {label}: kdgat's top {TOP} = MLflow's (same run ids, same order)"
            if ids == lb["run_ids"]
            else f"MISMATCH: {label}: kdgat {[i[:8] for i in ids]} != MLflow {[i[:8] for i in lb['run_ids']]}"
        )

    # 1. before kdgat has ever read this DB (empty read cache): the leaderboard runs as an indexed join in SQLite
    times, top = timed(board_once, n)
    tbl.add(
        Row(
            "kdgat leaderboard, no read cache (SQLite path)",
            times,
            baseline=mlflow_lb,
            target_ratio=100,
            target_s=0.2,
            note="open_db(path).leaderboard(metric='f1', top=10, dataset='hcrl_sa', "
            "stage='evaluation'), a fresh TrackingDB per call",
        )
    )
    tbl.add(Row("  same, vs MLflow after ANALYZE", times, baseline=mlflow_lba, target_ratio=3))
    check_board(top, "leaderboard without cache")
    kdgat_process(tbl, checks, db, n, lb, env, "no read cache")

    # 2. the wide table (all runs x params, tags, final metrics), the very first time, then unchanged
    wide, stats, cold, cold_total = wide_once(db)
    tbl.add(
        Row(
            "kdgat wide table, first time (cold cache)",
            [cold],
            baseline="MLflow all runs into pandas",
            target_s=10.0,
            note=f"open_db + wide(arrow=True) until the table is returned: {nrows(wide):,} rows x "
            f"{ncols(wide)} columns; cache refresh '{stats.mode}'; the cache files were on "
            f"disk {cold_total - cold:.2f} s later (written in the background)",
        )
    )
    if all_rows is not None:
        checks.append(
            f"{'ok' if nrows(wide) == all_rows else 'MISMATCH'}: wide table rows {nrows(wide):,}, "
            f"MLflow search_runs rows {all_rows:,}"
        )
    runs_ = [wide_once(db) for _ in range(n)]
    wide, stats = runs_[-1][0], runs_[-1][1]
    tbl.add(
        Row(
            "kdgat wide table, DB unchanged (warm cache)",
            [r[2] for r in runs_],
            baseline="MLflow all runs into pandas",
            target_s=1.0,
            note=f"cache refresh '{stats.mode}'",
        )
    )

    # 3. the leaderboard again, now that a fresh read cache exists (served from it without reading the DB)
    times, top = timed(board_once, n)
    tbl.add(Row("kdgat leaderboard, fresh read cache", times, baseline=mlflow_lb, target_ratio=100, target_s=0.2))
    tbl.add(Row("  same, vs MLflow after ANALYZE ", times, baseline=mlflow_lba, target_ratio=3))
    check_board(top, "leaderboard from the cache")
    kdgat_process(tbl, checks, db, n, lb, env, "fresh read cache")

    # 4. one run's history (the TUI's curve) on an open TrackingDB
    with open_db(db) as tdb:
        times, hist = timed(lambda: tdb.history(top_run, HISTORY_METRIC, arrow=True), n)
    tbl.add(
        Row(
            "kdgat one run's metric history",
            times,
            baseline="MLflow one run's metric history",
            target_s=0.02,
            note=f"history({top_run[:8]}, {HISTORY_METRIC}) on an open TrackingDB: {nrows(hist)} points",
        )
    )
    checks.append(
        f"{'ok' if nrows(hist) == hi['points'] else 'MISMATCH'}: history points kdgat {nrows(hist)}, "
        f"MLflow {hi['points']}"
    )

    # 5. the read cache after a writer added runs (on a copy: the benchmark DB itself is never written)
    what = f"kdgat wide table, {WRITER_RUNS} runs added since (warm cache)"
    if skip_cache:
        tbl.add(Row(what, None, note="skipped (--skip-cache)"))
        return
    writer_db = db.with_name(db.stem + ".writer.db")
    if shutil.disk_usage(db.parent).free < db.stat().st_size * 1.1:
        tbl.add(Row(what, None, note="skipped: no disk for a copy"))
        return
    t = time.time()
    copy_db(db, writer_db)
    try:
        rows_before = nrows(wide_once(writer_db)[0])  # the copy's first read builds its cache
        print(f"  (copied to {writer_db.name} and built its cache in {time.time() - t:.0f} s)", flush=True)
        times, modes, bad = [], [], 0
        for _ in range(min(n, 3)):
            new_ids = run_worker("write", writer_db, WRITER_RUNS)["run_ids"]
            wide, stats, ready, total = wide_once(writer_db)
            times.append(ready)
            steps = ", ".join(
                f"{k} {v:.2f}s" if isinstance(v, float) else f"{k} {v}" for k, v in (stats.details or {}).items()
            )
            modes.append(
                f"{stats.mode} ({stats.changed_runs} runs{'; ' + steps if steps else ''}; "
                f"cache on disk {total - ready:.2f} s after the table, written in the background)"
            )
            got = set(column(wide, "run_id"))
            if nrows(wide) != rows_before + WRITER_RUNS or not set(new_ids) <= got:
                bad += 1
                checks.append(
                    f"MISMATCH: after {WRITER_RUNS} new runs the wide table has {nrows(wide):,} rows "
                    f"(expected {rows_before + WRITER_RUNS:,}); new ids present: {set(new_ids) <= got}"
                )
            rows_before = nrows(wide)
        if not bad:
            checks.append(f"ok: each of {len(times)} warm reads had exactly the {WRITER_RUNS} runs written since")
        tbl.add(
            Row(
                what,
                times,
                baseline="MLflow all runs into pandas",
                target_s=1.0,
                note=f"a writer (MLflow client, another process) added {WRITER_RUNS} runs before each read; "
                f"cache refresh: {', '.join(modes)}",
            )
        )
    finally:
        writer_db.unlink(missing_ok=True)


def kdgat_process(tbl: Table, checks: list[str], db: Path, n: int, lb: dict, env: dict, label: str) -> None:
    """`kdgat leaderboard ...` as a whole process: interpreter start, imports, open, query, print."""
    kdgat_bin = Path(sys.executable).with_name("kdgat")
    argv = [
        str(kdgat_bin),
        "leaderboard",
        "--tracking-uri",
        f"sqlite:///{db}",
        "--dataset",
        DATASET,
        "--stage",
        STAGE,
        "--metric",
        METRIC,
        "--top",
        str(TOP),
        "--format",
        "csv",
    ]
    what = f"`kdgat leaderboard` whole process, {label}"
    try:
        times, out = process_seconds(argv, max(n, 3), env)
    except (RuntimeError, FileNotFoundError) as exc:
        text = " ".join(str(exc).split(" failed: ", 1)[-1].translate({ord(c): " " for c in "│╰─╯╭╮"}).split())
        tbl.add(Row(what, None, target_s=0.8, note=f"not available: {text[-200:]}"))
        return
    seen = sum(rid[:8] in out for rid in lb["run_ids"])
    tbl.add(
        Row(
            what,
            times,
            baseline="MLflow leaderboard (DB as MLflow leaves it)",
            target_s=0.8,
            note=" ".join(["kdgat"] + argv[1:3] + ["sqlite:///<db>"] + argv[4:]),
        )
    )
    checks.append(
        f"{'ok' if seen == TOP else 'MISMATCH'}: `kdgat leaderboard` ({label}) printed {seen}/{TOP} "
        "of MLflow's top run ids"
    )


if __name__ == "__main__":
    main()
