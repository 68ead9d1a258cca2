"""kdgat-tui on a big tracking DB: the real app, driven headless through Textual's Pilot, and its figures.

    .venv/bin/python benchmarks/make_big_db.py --runs 100000 --out /work/bench_data/big.db
    .venv/bin/python benchmarks/bench_tui.py --db /work/bench_data/big.db [--repeat 5] [--baseline CHECKOUT]

Prints, with the target and PASS/MISS:
  * launch -> Runs screen painted with data: a fresh `python` process (imports included) until the first frame that
    shows runs, with the query layer's read cache of the wide table warm (the state after any earlier session);
    the cold build of that cache is printed too;
  * sort and filter answered: a key action until the table shows the new order / rows (median of --repeat);
  * a refresh that brings 100 new runs: `Source.poll()` (one read of MLflow's `runs` rows, the 100 runs read through
    SQLite's indexes) + merge + repaint. The 100 runs are made "new" by dropping them from what the app has seen, so
    the benchmark never writes the shared DB;
  * peak memory (RSS) of the app process.
The DB is only read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGETS = {"launch_s": 1.5, "sort_ms": 150.0, "filter_ms": 150.0, "refresh_100_ms": 300.0, "peak_rss_gb": 1.5}
FILTER = "dataset=hcrl_sa f1>0.9 status!=failed"
NEW_RUNS = 100


async def _painted(pilot, timeout: float = 120.0):
    app = pilot.app
    deadline = time.monotonic() + timeout
    while True:
        screen = app.screen
        if getattr(screen, "view", None) is not None and screen.view.run_ids:
            return screen
        if time.monotonic() > deadline:
            raise SystemExit("the Runs screen showed no runs in time")
        await pilot.pause(0.005)


def launch_probe(db: str) -> None:
    """Child process: print seconds from interpreter start to the first painted frame with runs."""
    t_start = float(os.environ["KDGAT_BENCH_T0"])
    from kdgat_tui.app import KdgatApp, skip_pyarrow_pandas_probe
    from kdgat_tui.widgets.arrow_table import ArrowTable

    skip_pyarrow_pandas_probe()  # as main() does
    first: dict = {}
    render_line = ArrowTable.render_line

    def watched(self, y):
        # the first line the runs table draws while it holds runs: the screen is painted with data
        if "t" not in first and self.id == "runs" and self.backend is not None and self.backend.row_count:
            first["t"] = time.time()
            first["cached"] = bool(self.screen.cached)
        return render_line(self, y)

    ArrowTable.render_line = watched

    async def run():
        app = KdgatApp(tracking_uri=db, refresh_s=0)
        async with app.run_test(size=(160, 48)) as pilot:
            screen = await _painted(pilot)
            while "t" not in first:
                await pilot.pause(0.005)
            print(
                json.dumps(
                    {"launch_s": first["t"] - t_start, "runs": screen.view.total, "cached_paint": first["cached"]}
                ),
                flush=True,
            )

    asyncio.run(run())


def measure_launch(db: str, root: Path = ROOT) -> dict:
    """One launch probe in a fresh process, running the code of the checkout at `root` (its own probe)."""
    env = dict(os.environ, KDGAT_BENCH_T0=repr(time.time()), PYTHONPATH=str(root))
    script = root / "benchmarks" / "bench_tui.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--launch-probe", "--db", db],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0:
        raise SystemExit(f"launch probe failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def compare_launches(db: str, baseline: Path, repeat: int) -> None:
    """Launch probes of `baseline` and of this checkout, alternating (the machine's load hits both alike)."""
    if not (baseline / "benchmarks" / "bench_tui.py").is_file():
        raise SystemExit(f"no benchmarks/bench_tui.py in {baseline}")
    load_before = os.getloadavg()
    old, new = [], []
    for _ in range(max(1, repeat)):
        old.append(measure_launch(db, baseline)["launch_s"])
        new.append(measure_launch(db)["launch_s"])
    load_after = os.getloadavg()
    ratio = statistics.median(new) / statistics.median(old)
    print(
        f"launch, alternating with {baseline}: baseline {statistics.median(old):.2f} s {[round(x, 2) for x in old]}, "
        f"this checkout {statistics.median(new):.2f} s {[round(x, 2) for x in new]}, ratio {ratio:.2f} "
        f"(load average {load_before[0]:.2f} -> {load_after[0]:.2f})"
    )


def prime_cache(db: str) -> float:
    """Bring the query layer's wide-table cache up to date (what any earlier session or `kdgat runs` leaves)."""
    t0 = time.perf_counter()
    from kdgat_core.query import open_db

    with open_db(db) as tdb:
        tdb.wide(arrow=True)
        mode = tdb.last_refresh.mode
    seconds = time.perf_counter() - t0
    print(f"wide-table cache: {mode} in {seconds:.2f} s")
    return seconds


async def measure_in_app(db: str, repeat: int) -> dict:
    import pyarrow.compute as pc

    from kdgat_tui.app import KdgatApp

    out: dict = {}
    app = KdgatApp(tracking_uri=db, refresh_s=0)
    t0 = time.perf_counter()
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await _painted(pilot)
        while screen.cached:  # the worker's own read finishes after the cached paint
            await pilot.pause(0.01)
        out["in_process_paint_s"] = time.perf_counter() - t0
        model = screen.model
        out["runs"] = model.base.num_rows

        sorts, filters = [], []
        for i in range(repeat):
            column = ("f1", "val_loss", "start_time", "run_name")[i % 4]
            t = time.perf_counter()
            model.sort_by(column)
            screen.render_view(keep_run=screen.current_run_id())
            await pilot.pause()
            sorts.append((time.perf_counter() - t) * 1000)
        box = screen.query_one("#filter")
        screen.action_filter()
        for i in range(repeat):
            text = FILTER if i % 2 == 0 else "student_curriculum_kd"
            t = time.perf_counter()
            box.value = text  # as if typed or pasted: Input.Changed -> the table
            await pilot.pause()
            while model.filter_text != text:
                await pilot.pause(0.001)
            filters.append((time.perf_counter() - t) * 1000)
            if text == FILTER:
                out["shown_after_filter"] = len(screen.view.ids)
            box.value = ""
            await pilot.pause()
        out["sort_ms"] = statistics.median(sorts)
        out["filter_ms"] = statistics.median(filters)

        refreshes = []
        source = app.source
        for i in range(repeat):
            # make 100 runs look new: forget them on the app side only (the DB is not touched)
            ids = model.base["run_id"].slice(i * NEW_RUNS, NEW_RUNS).to_pylist()
            model.remove(ids)
            source.forget(ids)
            screen.render_view(keep_run=screen.current_run_id())
            await pilot.pause()
            before = model.base.num_rows
            t = time.perf_counter()
            screen.poll()
            while model.base.num_rows < before + NEW_RUNS:
                await pilot.pause(0.001)
            await pilot.pause()
            refreshes.append((time.perf_counter() - t) * 1000)
        out["refresh_100_ms"] = statistics.median(refreshes)
        assert len(pc.unique(model.base["run_id"])) == model.base.num_rows, "a refresh duplicated runs"
    out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--db", default="/work/bench_data/big.db")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument(
        "--baseline",
        type=Path,
        metavar="CHECKOUT",
        help="Also time launches of another checkout (e.g. a worktree of main), alternating with this one, "
        "--repeat pairs, and print the ratio",
    )
    p.add_argument("--launch-probe", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.launch_probe:
        launch_probe(args.db)
        return 0
    if not Path(args.db).is_file():
        print(f"no DB at {args.db}; build one with benchmarks/make_big_db.py", file=sys.stderr)
        return 2
    print(f"kdgat-tui benchmark on {args.db} ({Path(args.db).stat().st_size / 1e9:.1f} GB), {os.cpu_count()} cores")
    prime_cache(args.db)
    launches = [measure_launch(args.db) for _ in range(max(1, min(args.repeat, 3)))]
    figures = {"launch_s": statistics.median(l["launch_s"] for l in launches)}
    print(
        f"launch probes: {[round(l['launch_s'], 2) for l in launches]} s, painted from the cached copy: "
        f"{all(l['cached_paint'] for l in launches)}, runs shown: {launches[0]['runs']:,}"
    )
    if args.baseline is not None:
        compare_launches(args.db, args.baseline.resolve(), args.repeat)
    figures.update(asyncio.run(measure_in_app(args.db, args.repeat)))
    print(
        f"in-process (app built -> runs painted, cache current): {figures['in_process_paint_s']:.2f} s; "
        f"filter '{FILTER}' keeps {figures['shown_after_filter']:,} of {figures['runs']:,} runs"
    )
    print(f"{'figure':<40}{'measured':>12}{'target':>10}{'ratio':>8}  ")
    rows = [
        ("launch -> Runs painted with data (s)", "launch_s"),
        ("sort (ms, median)", "sort_ms"),
        ("filter (ms, median)", "filter_ms"),
        (f"refresh bringing {NEW_RUNS} new runs (ms)", "refresh_100_ms"),
        ("peak memory RSS (GB)", "peak_rss_gb"),
    ]
    ok = True
    for label, key in rows:
        value, target = figures[key], TARGETS[key]
        verdict = "PASS" if value <= target else "MISS"
        ok &= verdict == "PASS"
        print(f"{label:<40}{value:>12.3f}{target:>10.3g}{value / target:>8.2f}  {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
