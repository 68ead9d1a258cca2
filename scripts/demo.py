"""`make demo`: the most complete real path kdgat has, on an embedded default (synthetic CAN traffic).

1. writes deterministic synthetic CAN traffic (DoS, fuzzing, spoofing, malfunction) as a dataset root;
2. trains the tiny pipeline through `kdgat run`: teacher, student and distilled student, each through
   autoencoder (VGAE) -> curriculum (GAT) -> fusion (DQN) -> evaluation, into a real MLflow SQLite DB;
3. prints the leaderboard and the teacher -> student lineage tree with `kdgat`;
4. opens `kdgat-tui` on that DB (skipped with --no-tui, or when stdin is not a terminal).

Every step is a real `kdgat` command; the commands are echoed so a newcomer can re-run any of them.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from kdgat_core.config import PIPELINE_ORDER, STAGE_ARCH, TEACHER_AUTO
from kdgat_core.stages.pipeline import (
    ROLES,  # teacher, student, distilled student: the same roles as the pipeline runner
)

HERE = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def kdgat(*args: str, env: dict[str, str]) -> None:
    cmd = [str(BIN / "kdgat"), *args]
    print(f"\n$ kdgat {shlex.join(args)}", flush=True)
    result = subprocess.run(cmd, env=env)
    if result.returncode != 0:
        sys.exit(f"demo: `kdgat {shlex.join(args)}` failed with exit code {result.returncode}.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(HERE / "demo_out"), help="folder for the data, tracking DB and artifacts")
    parser.add_argument("--no-tui", action="store_true", help="stop before opening kdgat-tui")
    parser.add_argument("--keep", action="store_true", help="keep an existing demo DB and add runs to it")
    args = parser.parse_args()

    out = Path(args.out).resolve()
    db = out / "mlflow.db"
    if out.exists() and not args.keep:
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(
        {
            "MLFLOW_TRACKING_URI": f"sqlite:///{db}",
            "KDGAT_DATA_ROOT": str(out / "data"),
            "KDGAT_CACHE_DIR": str(out / "cache"),
            "PYTHONWARNINGS": "ignore",
        }
    )
    print(f"demo: everything goes to {out} (MLFLOW_TRACKING_URI=sqlite:///{db})")
    t0 = time.perf_counter()

    kdgat("synth", str(out / "data"), "--name", "synthetic", "--seed", "0", env=env)
    kdgat("datasets", env=env)

    for size, kd in ROLES:
        for stage in PIPELINE_ORDER:
            extra = ["--kd", "--teacher", TEACHER_AUTO] if kd else []
            kdgat(
                "run",
                stage.value,
                "--preset",
                f"{STAGE_ARCH[stage]},{size},tiny",
                "--dataset",
                "synthetic",
                *extra,
                "--quiet",
                "--format",
                "markdown",
                env=env,
            )
    print(f"\ndemo: trained {len(ROLES) * len(PIPELINE_ORDER)} runs in {time.perf_counter() - t0:.0f} s")

    kdgat("leaderboard", "--dataset", "synthetic", "--stage", "evaluation", "--metric", "f1", "--top", "10", env=env)
    kdgat("lineage", "--dataset", "synthetic", env=env)

    if args.no_tui or not sys.stdin.isatty():
        print(f"\ndemo: done. Browse it with: kdgat-tui --tracking-uri sqlite:///{db}")
        return
    print("\n$ kdgat-tui   (q quits, ? lists every key)")
    os.execve(str(BIN / "kdgat-tui"), [str(BIN / "kdgat-tui"), "--tracking-uri", f"sqlite:///{db}"], env)


if __name__ == "__main__":
    main()
