"""What one refresh of `kdgat jobs` (and the TUI's jobs screen) costs: the scheduler calls and the join with runs.

    .venv/bin/python benchmarks/bench_jobs.py --db /tmp/bench/r10k.db --jobs 50    # join against a 10k-run DB
    SLURM_CONF=/tmp/kdgat-slurm/etc/slurm.conf .venv/bin/python benchmarks/bench_jobs.py   # + squeue/sacct timings

The benchmark DBs come from benchmarks/make_big_db.py, whose runs carry slurm_job_id tags 40000000 + i.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from kdgat_core.query.jobs import runs_of_jobs
from kdgat_core.slurm.scheduler import SlurmScheduler


def timed(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", help="an MLflow SQLite file from make_big_db.py")
    ap.add_argument("--jobs", type=int, default=50, help="job ids in the queue to join")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if args.db:
        uri = f"sqlite:///{Path(args.db).resolve()}"
        ids = [str(40_000_000 + i * 97) for i in range(args.jobs)]
        first, rows = timed(lambda: runs_of_jobs(uri, ids), 1)
        again, _ = timed(lambda: runs_of_jobs(uri, ids), args.repeat)
        print(
            f"join {args.jobs} job ids with runs in {args.db}: first {first * 1000:.0f} ms (opens the DB), "
            f"then {again * 1000:.0f} ms median per refresh; {len(rows)} runs matched"
        )
    if os.environ.get("SLURM_CONF") and SlurmScheduler.available():
        sched = SlurmScheduler(cache_seconds=3600)
        secs, jobs = timed(lambda: sched.jobs(refresh=True), args.repeat)
        print(f"scheduler refresh (1 squeue + 1 sacct): {secs * 1000:.0f} ms median, {len(jobs)} jobs")
        cached, _ = timed(lambda: sched.jobs(), 100)
        print(f"cached refresh: {cached * 1e6:.0f} us; calls made: {sched.calls}")


if __name__ == "__main__":
    main()
