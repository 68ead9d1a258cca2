"""Analysis speed (issue 14, Part 10): a best-epoch leaderboard and groups with statistics, on the benchmark DB.

    .venv/bin/python benchmarks/bench_analysis.py --db /work/bench_data/big.db --repeat 5 \
        [--mlflow-from /tmp/bench.json] [--skip-mlflow] [--json /tmp/analysis.json]

kdgat runs in this process with an empty KDGAT_CACHE_DIR: the first call builds the wide table and the metric
summaries (`summary.arrow`, one scan of MLflow's `metrics`); every timed call after it opens a fresh `open_db`, as
one CLI call does, with that cache warm. The best-epoch metric is `--metric` (default `min(val_loss)`:
make_big_db.py logs train_loss and val_loss per epoch, not val_f1; `max(val_f1)` reads the same summary rows).
Baselines (MLflow has no best-epoch metric and no groups): `search_runs` for the leaderboard's runs plus
`get_metric_history` per run (timed on a sample, the total estimated from it), in a worker process; for groups,
MLflow's all runs into pandas, taken from an earlier `bench_query.py --json` on the same DB (`--mlflow-from`).
Checks, in a worker with Python's sqlite3 (never in the DuckDB process): the top 10's values and the groups' n and
mean against SQL on the file. Peak memory: this process's and the CLI processes' maximum RSS.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench_query import Row, Table, process_seconds, repeat  # noqa: E402

DATASET, STAGE, TOP = "hcrl_sa", "evaluation", 10
GROUP_BY = ("train.lr", "train.batch_size")
HISTORY_SAMPLE = 20  # MLflow histories timed; the baseline's total is estimated from them


def sql_expr(metric: str) -> tuple[str, str]:
    """(aggregate, key) of a `min(key)` / `max(key)` expression, for the SQL check."""
    agg, key = metric.rstrip(")").split("(")
    if agg not in ("min", "max"):
        raise SystemExit(f"--metric must be min(KEY) or max(KEY), got {metric}")
    return agg, key


def check_worker(db: Path, metric: str) -> dict:
    """The answers computed with plain SQL on the file (a separate process from DuckDB's scanner)."""
    agg, key = sql_expr(metric)
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    visible = (
        "r.lifecycle_stage = 'active' AND r.experiment_id IN "
        "(SELECT experiment_id FROM experiments WHERE lifecycle_stage = 'active')"
    )
    # kdgat ranks an expression by its metric's direction (min(val_loss) and max(val_loss) both ascending), as
    # docs/analysis.md says; the check follows the same rule, from config, not from the aggregate
    from kdgat_core.config import metric_direction

    order = metric_direction(key).upper()
    board = con.execute(
        f"""SELECT r.run_uuid, {agg}(m.value) AS v FROM runs r
            JOIN tags d ON d.run_uuid = r.run_uuid AND d.key = 'dataset' AND d.value = ?
            JOIN tags s ON s.run_uuid = r.run_uuid AND s.key = 'stage' AND s.value = ?
            JOIN metrics m ON m.run_uuid = r.run_uuid AND m.key = ? AND m.is_nan = 0
            WHERE {visible} GROUP BY r.run_uuid ORDER BY v {order}, r.run_uuid LIMIT {TOP}""",
        (DATASET, STAGE, key),
    ).fetchall()
    p1, p2 = GROUP_BY
    groups = con.execute(
        f"""SELECT a.value, b.value, count(*), count(f.value), avg(f.value) FROM runs r
            JOIN params a ON a.run_uuid = r.run_uuid AND a.key = ?
            JOIN params b ON b.run_uuid = r.run_uuid AND b.key = ?
            LEFT JOIN latest_metrics f ON f.run_uuid = r.run_uuid AND f.key = 'f1' AND f.is_nan = 0
            WHERE {visible} GROUP BY 1, 2""",
        (p1, p2),
    ).fetchall()
    con.close()
    return {"board": board, "groups": groups}


def mlflow_worker(db: Path) -> dict:
    """MLflow's way to a best-epoch leaderboard: the filtered runs, then each run's history (timed on a sample)."""
    import logging
    import statistics

    import mlflow
    from mlflow import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    mlflow.set_tracking_uri(f"sqlite:///{db}")
    client = MlflowClient()
    client.search_experiments()  # engine and schema check before timing
    t = time.perf_counter()
    df = mlflow.search_runs(
        search_all_experiments=True,
        filter_string=f"tags.dataset = '{DATASET}' AND tags.stage = '{STAGE}'",
        max_results=100_000,
    )
    search_s = time.perf_counter() - t
    ids = list(df["run_id"])
    step = max(1, len(ids) // HISTORY_SAMPLE)
    times = []
    for rid in ids[::step][:HISTORY_SAMPLE]:
        t = time.perf_counter()
        client.get_metric_history(rid, "val_loss")
        times.append(time.perf_counter() - t)
    return {"search_s": search_s, "runs": len(ids), "history_s": times, "history_median_s": statistics.median(times)}


def worker(task: str, db: Path, metric: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", task, "--db", str(db), "--metric", metric],
        capture_output=True,
        text=True,
        timeout=3600,
        cwd=tempfile.gettempdir(),
    )
    if out.returncode != 0:
        raise RuntimeError(f"worker {task} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", type=Path, default=Path("/work/bench_data/big.db"))
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--metric", default="min(val_loss)", help="a min(KEY) or max(KEY) expression over a history")
    ap.add_argument("--mlflow-from", type=Path, help="bench_query.py --json of this DB: MLflow's all runs into pandas")
    ap.add_argument("--skip-mlflow", action="store_true", help="no MLflow baseline for the best-epoch leaderboard")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--cache-dir", type=Path, help="reuse this KDGAT_CACHE_DIR (else a new, empty one)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    a = ap.parse_args()
    db = a.db.resolve()
    if a.worker:
        print(json.dumps(check_worker(db, a.metric) if a.worker == "check" else mlflow_worker(db)))
        return
    if not db.is_file():
        raise SystemExit(f"{db} does not exist; build it with benchmarks/make_big_db.py.")
    n, metric = a.repeat, a.metric
    print(f"DB {db}: {db.stat().st_size / 1e9:.2f} GB; metric {metric}; {n} repetitions", flush=True)
    tbl, checks = Table(), []
    t_all = time.time()

    if not a.skip_mlflow:
        print("MLflow (worker process):", flush=True)
        ml = worker("mlflow", db, metric)
        est = ml["search_s"] + ml["runs"] * ml["history_median_s"]
        tbl.add(
            Row(
                "MLflow best-epoch leaderboard (estimated)",
                [est],
                note=f"search_runs of the {ml['runs']:,} {DATASET}/{STAGE} runs {ml['search_s']:.1f} s + "
                f"{ml['runs']:,} x get_metric_history (median {ml['history_median_s']:.2f} s of {len(ml['history_s'])})",
            )
        )
    if a.mlflow_from:
        saved = json.loads(a.mlflow_from.read_text())
        row = next(r for r in saved["rows"] if r["what"] == "MLflow all runs into pandas")
        tbl.add(Row("MLflow all runs into pandas", row["times_s"], note=f"from {a.mlflow_from}"))

    print("kdgat (this process, DuckDB):", flush=True)
    from kdgat_core.query import open_db

    cache_dir = a.cache_dir or Path(tempfile.mkdtemp(prefix="kdgat-bench-analysis-"))
    os.environ["KDGAT_CACHE_DIR"] = str(cache_dir)
    env = {**os.environ}
    flt = {"dataset": DATASET, "stage": STAGE}

    def board():
        with open_db(str(db)) as d:
            return d.leaderboard(metric, top=TOP, rows=True, **flt)

    def groups(expr: str):
        with open_db(str(db)) as d:
            return d.groups(list(GROUP_BY), expr, arrow=True)

    with open_db(str(db)) as d:  # the first time: the wide table, then every run's metric summaries
        t0 = time.perf_counter()
        d.wide(arrow=True)
        t1 = time.perf_counter()
        n_summary = d.metric_summary_table().num_rows
        t2 = time.perf_counter()
    tbl.add(Row("kdgat wide table, first time (cold cache)", [t1 - t0]))
    tbl.add(Row("kdgat metric summaries, first time (one scan of metrics)", [t2 - t1], note=f"{n_summary:,} rows"))
    times, first = repeat(board, 1)
    tbl.add(Row(f"kdgat leaderboard by {metric}, first call after the build", times))
    times, top = repeat(board, n)
    tbl.add(
        Row(
            f"kdgat leaderboard by {metric}, warm cache",
            times,
            baseline="MLflow best-epoch leaderboard (estimated)",
            target_s=0.3,
        )
    )
    cli = str(Path(sys.executable).parent / "kdgat")
    times, out = process_seconds([cli, "leaderboard", "-u", str(db), "-m", metric, "-d", DATASET, "-s", STAGE], n, env)
    tbl.add(Row(f"`kdgat leaderboard -m '{metric}'` whole process, warm cache", times))
    times, g_f1 = repeat(lambda: groups("f1"), n)
    tbl.add(
        Row(
            f"kdgat groups by {','.join(GROUP_BY)} (f1, all runs), warm cache",
            times,
            baseline="MLflow all runs into pandas" if a.mlflow_from else "",
            target_s=0.5,
        )
    )
    times, g_best = repeat(lambda: groups(metric), n)
    tbl.add(
        Row(
            f"kdgat groups by {','.join(GROUP_BY)} ({metric}, all runs), warm cache",
            times,
            baseline="MLflow all runs into pandas" if a.mlflow_from else "",
            target_s=0.5,
        )
    )
    times, _ = process_seconds([cli, "group", "-u", str(db), "--by", ",".join(GROUP_BY), "-m", "f1"], n, env)
    tbl.add(Row(f"`kdgat group --by {','.join(GROUP_BY)}` whole process, warm cache", times))
    peak_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    # a forked child's maxrss starts at its parent's RSS: the CLI's own peak comes from /usr/bin/time's child
    peak_cli = 0.0
    for argv in (
        [cli, "leaderboard", "-u", str(db), "-m", metric, "-d", DATASET, "-s", STAGE],
        [cli, "group", "-u", str(db), "--by", ",".join(GROUP_BY), "-m", metric],
    ):
        r = subprocess.run(["/usr/bin/time", "-f", "%M", *argv], capture_output=True, text=True, env=env)
        peak_cli = max(peak_cli, int(r.stderr.strip().splitlines()[-1]) / 1024**2)

    # --- checks against SQL on the file (another process) -------------------------------------------------------
    want = worker("check", db, metric)
    got = [(r["run_id"], r[metric]) for r in top]
    vals_ok = [round(v, 9) for _, v in got] == [round(v, 9) for _, v in want["board"]]
    ids_ok = [r for r, _ in got] == [r for r, _ in want["board"]]
    checks.append(
        f"top {TOP} by {metric}: values {'equal' if vals_ok else 'DIFFER'} to SQL's, ids "
        f"{'equal' if ids_ok else 'differ (ties?)'}; first call's answer {'equal' if first == top else 'DIFFERS'}"
    )
    cols = g_f1.column_names
    k1, k2 = cols[0], cols[1]
    n_col = next(c for c in cols if c.endswith("_n"))
    mean_col = next(c for c in cols if c.endswith("_mean"))
    mine = {(str(r[k1]), str(r[k2])): (r["runs"], r[n_col], r[mean_col]) for r in g_f1.to_pylist()}

    def same_key(v: str) -> str:
        try:
            return repr(float(v))
        except ValueError:
            return v

    mine = {(same_key(a_), same_key(b_)): v for (a_, b_), v in mine.items()}
    bad = 0
    for p1, p2, runs, n_f1, mean in want["groups"]:
        got_g = mine.get((same_key(p1), same_key(p2)))
        if got_g is None or got_g[0] != runs or got_g[1] != n_f1 or not math.isclose(got_g[2], mean, rel_tol=1e-9):
            bad += 1
    checks.append(
        f"groups by {','.join(GROUP_BY)}: {len(want['groups'])} groups in SQL, {len(mine)} in kdgat; "
        f"runs, n and mean of f1 {'equal in every group' if bad == 0 and len(mine) == len(want['groups']) else f'DIFFER in {bad}'}"
    )
    checks.append(f"{g_best.num_rows} groups for {metric}")

    print(f"\nBenchmark finished in {time.time() - t_all:.0f} s; load average {os.getloadavg()}\n")
    print(tbl.render())
    print(
        f"\nPeak memory (max RSS): this process {peak_self:.2f} GB (the first build included), "
        f"`kdgat leaderboard -m` / `kdgat group` with the cache warm {peak_cli:.2f} GB"
    )
    print("\nChecks:\n" + "\n".join(f"- {c}" for c in checks))
    if a.json:
        a.json.write_text(
            json.dumps(
                {
                    "db": str(db),
                    "metric": metric,
                    "rows": [
                        {
                            "what": r.what,
                            "times_s": r.times,
                            "median_s": r.median,
                            "target_s": r.target_s,
                            "note": r.note,
                        }
                        for r in tbl.rows
                    ],
                    "peak_rss_gb": {"process": peak_self, "cli": peak_cli},
                    "checks": checks,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
