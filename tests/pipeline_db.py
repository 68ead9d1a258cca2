"""The shared "tiny pipeline DB": a real MLflow SQLite store written by `kdgat run`, once per test session.

What it holds (all on the `synthetic` dataset, `--preset <arch>,<size>,tiny` as `make demo` trains it, but 5 epochs):

* 12 complete runs: teacher, student and distilled student (`--kd --teacher auto`), each through
  autoencoder -> curriculum -> fusion -> evaluation; a KD student's `teacher_run_id` tag names the teacher run
  of the same stage;
* 1 failed run, written by kdgat itself: `kdgat run curriculum --preset gat,student,tiny` told to build on a run
  that is not an autoencoder run (`-O train.autoencoder_run_id=<the teacher's curriculum run>`), so it fails
  inside the run with status tag `failed`, MLflow status FAILED and an `error_msg`.

Every run goes through the real CLI in a subprocess with ``MLFLOW_TRACKING_URI=sqlite:///<root>/mlflow.db``,
``KDGAT_DATA_ROOT=<root>/data`` and ``KDGAT_CACHE_DIR=<root>/cache``; the test process itself never opens the DB
with MLflow while building, so a test may read it with DuckDB (or, in a process that never uses DuckDB on it,
with MLflow's client).

Use it from any test (registered in tests/conftest.py through ``pytest_plugins``)::

    def test_something(tiny_pipeline_db):
        p = tiny_pipeline_db
        p.uri, p.db_path, p.data_root, p.env               # sqlite URI, Path, Path, env dict for subprocesses
        p.run_id("teacher", "evaluation")                  # ids by (size, stage, kd)
        p.run_id("student", "curriculum", kd=True)
        p.metrics[("teacher", "evaluation", False)]["f1"] # the final metrics `kdgat run` printed for that run
        p.failed_run_id                                    # the failed curriculum run
        p.kdgat("leaderboard", "--format", "json")         # the `kdgat` CLI against this DB (CompletedProcess)
        p.copy_db(tmp_path)                                # a private copy, for tools that may write (mlflow server)

Treat the DB as read-only: it is shared by the whole session. Write to a copy.

Tests that use the fixture get a 30-minute pytest-timeout (whichever runs first pays for the build).
Building takes a few minutes on 2 busy cores (the teacher and the student chains train in parallel; each distilled
stage waits for its teacher). While developing, set ``KDGAT_TINY_PIPELINE_DIR=/tmp/somewhere`` to build it there
once and reuse it in later sessions (it is rebuilt when the manifest is missing or from another layout version).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kdgat_core.config import (
    ENV_CACHE_DIR,
    ENV_DATA_ROOT,
    ENV_TRACKING_URI,
    PIPELINE_ORDER,
    STAGE_ARCH,
    TEACHER_AUTO,
    ModelSize,
    Stage,
    prerequisite_tag,
)

DATASET = "synthetic"
VARIANT = "tiny"
# the tiny preset trains 20 epochs; no test depends on how well the models learn, only on what kdgat wrote, and the
# curves still have several points: 5 save a quarter of the build's CPU
EPOCHS = 5
ENV_REUSE_DIR = "KDGAT_TINY_PIPELINE_DIR"
MANIFEST = "manifest.json"
# bump when what the fixture writes changes, so a reused KDGAT_TINY_PIPELINE_DIR is rebuilt
LAYOUT_VERSION = 3
# (size, kd) of the three chains, in the order the demo trains them
CHAINS: tuple[tuple[str, bool], ...] = (
    (ModelSize.TEACHER.value, False),
    (ModelSize.STUDENT.value, False),
    (ModelSize.STUDENT.value, True),
)
RUN_TIMEOUT_S = 900
OUTER_JOB_VARS = ("SLURM_JOB_ID", "SLURM_JOBID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID")


def kdgat_argv() -> list[str]:
    """The `kdgat` console script of the interpreter running the tests (the venv's), else `python -m kdgat_core.cli`."""
    script = Path(sys.executable).parent / "kdgat"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "kdgat_core.cli"]


@dataclass
class TinyPipeline:
    """Where the tiny pipeline DB lives and which runs it holds."""

    root: Path
    db_path: Path
    data_root: Path
    cache_dir: Path
    run_ids: dict[tuple[str, str, bool], str]  # (model_size, stage, use_kd) -> run id
    metrics: dict[tuple[str, str, bool], dict[str, float]]  # the final metrics `kdgat run` printed, same keys
    failed_run_id: str
    failed_error: str  # the sentence `kdgat run` printed on stderr for the failed run
    seconds: dict[str, float] = field(default_factory=dict)  # per command, and "total" (build time)

    @property
    def uri(self) -> str:
        return f"sqlite:///{self.db_path}"

    @property
    def env(self) -> dict[str, str]:
        """os.environ plus the tracking URI, data root and cache dir of this DB (for subprocesses)."""
        return pipeline_env(self.db_path, self.data_root, self.cache_dir)

    def run_id(self, size: str, stage: str, kd: bool = False) -> str:
        return self.run_ids[(str(size), str(stage), kd)]

    @property
    def failed_reason(self) -> str:
        """The failed run's reason, as kdgat printed it (without the leading `kdgat: `)."""
        return self.failed_error.splitlines()[-1].removeprefix("kdgat: ").strip()

    @property
    def complete_run_ids(self) -> set[str]:
        return set(self.run_ids.values())

    def kdgat(
        self, *args: str, check: bool = False, timeout: float = 300, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run `kdgat ARGS` against this DB (text output captured); check=True fails the test on a non-zero exit."""
        proc = subprocess.run(
            [*kdgat_argv(), *args],
            env=env or self.env,
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if check and proc.returncode != 0:
            pytest.fail(f"`kdgat {' '.join(args)}` exited {proc.returncode}:\n{proc.stderr[-3000:]}")
        return proc

    def copy_db(self, folder: Path) -> Path:
        """A private copy of the DB file in `folder` (the shared one stays untouched)."""
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / self.db_path.name
        shutil.copyfile(self.db_path, target)
        return target


def pipeline_env(db_path: Path, data_root: Path, cache_dir: Path) -> dict[str, str]:
    # no slurm_job_id tags from an outer job; SLURM_CONF (the test cluster) stays
    env = {k: v for k, v in os.environ.items() if k not in OUTER_JOB_VARS}
    env.update(
        {
            ENV_TRACKING_URI: f"sqlite:///{db_path}",
            ENV_DATA_ROOT: str(data_root),
            ENV_CACHE_DIR: str(cache_dir),
            "PYTHONWARNINGS": "ignore",
        }
    )
    return env


class BuildError(RuntimeError):
    pass


def _run_json(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[list[dict], float]:
    t0 = time.perf_counter()
    proc = subprocess.run(
        argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, stdin=subprocess.DEVNULL
    )
    took = time.perf_counter() - t0
    if proc.returncode != 0:
        raise BuildError(f"`{' '.join(argv[1:])}` exited {proc.returncode} after {took:.0f} s:\n{proc.stderr[-3000:]}")
    try:
        return json.loads(proc.stdout), took
    except json.JSONDecodeError:
        raise BuildError(f"`{' '.join(argv[1:])}` printed no JSON:\n{proc.stdout[-2000:]}") from None


def stage_argv(stage: str, size: str, kd: bool, *extra: str) -> list[str]:
    arch = STAGE_ARCH[Stage(stage)]
    argv = [*kdgat_argv(), "run", stage, "--preset", f"{arch},{size},{VARIANT}", "--dataset", DATASET]
    if kd:
        argv += ["--kd", "--teacher", TEACHER_AUTO]
    return [*argv, "-O", f"train.epochs={EPOCHS}", *extra, "--quiet", "--format", "json"]


def build_tiny_pipeline(root: Path) -> TinyPipeline:
    """Write synthetic data and train the tiny pipeline into root/mlflow.db through `kdgat`; writes root/manifest.json."""
    root = Path(root).resolve()
    if root.exists() and any(root.iterdir()):
        if not (root / MANIFEST).is_file() and not (root / "mlflow.db").is_file():
            raise BuildError(f"{root} is not empty and holds no tiny pipeline; point {ENV_REUSE_DIR} at a new folder.")
        shutil.rmtree(root)  # an earlier (stale or half-built) tiny pipeline
    root.mkdir(parents=True, exist_ok=True)
    db, data, cache = root / "mlflow.db", root / "data", root / "cache"
    env = pipeline_env(db, data, cache)
    seconds: dict[str, float] = {}
    t_start = time.perf_counter()

    t0 = time.perf_counter()
    proc = subprocess.run(
        [*kdgat_argv(), "synth", str(data), "--name", DATASET, "--seed", "0"],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )
    if proc.returncode != 0:
        raise BuildError(f"`kdgat synth` exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    seconds["synth"] = time.perf_counter() - t0

    run_ids: dict[tuple[str, str, bool], str] = {}
    metrics: dict[tuple[str, str, bool], dict[str, float]] = {}
    lock = threading.Lock()
    teacher_done = {stage.value: threading.Event() for stage in PIPELINE_ORDER}
    failures: list[str] = []

    def train(size: str, stage: str, kd: bool) -> None:
        rows, took = _run_json(stage_argv(stage, size, kd), env, root)
        run_id = next((str(r["value"]) for r in rows if r.get("metric") == "run_id"), None)
        if not run_id:
            raise BuildError(f"`kdgat run {stage}` printed no run_id: {rows[:3]}")
        with lock:
            run_ids[(size, stage, kd)] = run_id
            metrics[(size, stage, kd)] = {
                str(r["metric"]): float(r["value"])
                for r in rows
                if isinstance(r.get("value"), (int, float)) and not isinstance(r["value"], bool)
            }
            seconds[f"{size}{'_kd' if kd else ''}/{stage}"] = took

    def wait_for_teacher(stage: Stage) -> bool:
        """Until the teacher's run of `stage` is complete: False when the build failed meanwhile."""
        while not teacher_done[stage.value].wait(1.0):
            if failures:
                return False
        return not failures

    def chain(size: str, kd: bool) -> None:
        try:
            for stage in PIPELINE_ORDER:
                # `--teacher auto` takes the newest complete teacher run of the same stage
                if (kd and not wait_for_teacher(stage)) or failures:
                    return
                train(size, stage.value, kd)
                if size == ModelSize.TEACHER.value:
                    teacher_done[stage.value].set()
        except Exception as exc:
            with lock:
                failures.append(str(exc))

    failed: dict[str, str] = {}

    def failing_run() -> None:
        """A real kdgat-written failed run: the curriculum stage told to build on a curriculum run, not an
        autoencoder run (so it starts once the teacher's curriculum run is complete)."""
        try:
            if not wait_for_teacher(Stage.CURRICULUM):
                return
            wrong = run_ids[(ModelSize.TEACHER.value, Stage.CURRICULUM.value, False)]
            argv = stage_argv(
                Stage.CURRICULUM.value,
                ModelSize.STUDENT.value,
                False,
                "-O",
                f"train.{prerequisite_tag(Stage.AUTOENCODER)}={wrong}",
            )
            t0 = time.perf_counter()
            proc = subprocess.run(
                argv, env=env, cwd=root, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, stdin=subprocess.DEVNULL
            )
            seconds["failing_run"] = time.perf_counter() - t0
            if proc.returncode == 0:
                raise BuildError(f"`{' '.join(argv[1:])}` was meant to fail but succeeded:\n{proc.stdout[-2000:]}")
            failed["error"] = proc.stderr.strip()
        except Exception as exc:
            with lock:
                failures.append(str(exc))

    # the chains run side by side from the start (MLflow's schema is created once, under kdgat's init lock; the graph
    # cache is renamed into place); each distilled stage waits for its teacher, the failing run for the curriculum
    with ThreadPoolExecutor(max_workers=len(CHAINS) + 1) as pool:
        for size, kd in CHAINS:
            pool.submit(chain, size, kd)
        pool.submit(failing_run)
    if failures:
        raise BuildError("the tiny pipeline did not train:\n" + "\n".join(failures))
    failed_error = failed["error"]
    failed_run_id = _find_new_run(db, set(run_ids.values()), env, root)
    seconds["total"] = time.perf_counter() - t_start

    pipeline = TinyPipeline(
        root=root,
        db_path=db,
        data_root=data,
        cache_dir=cache,
        run_ids=run_ids,
        metrics=metrics,
        failed_run_id=failed_run_id,
        failed_error=failed_error,
        seconds=seconds,
    )
    _write_manifest(pipeline)
    return pipeline


# Lists every run id in the DB with MLflow's client, in its own process (this one never opens the DB with MLflow).
_LIST_RUN_IDS = r"""
import json, sys
from mlflow import MlflowClient
client = MlflowClient(sys.argv[1])
exps = [e.experiment_id for e in client.search_experiments()]
print(json.dumps([r.info.run_id for r in client.search_runs(exps, max_results=1000)]))
"""


def _find_new_run(db: Path, known: set[str], env: dict[str, str], root: Path) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", _LIST_RUN_IDS, f"sqlite:///{db}"],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        raise BuildError(f"listing the runs with MLflow's client failed:\n{proc.stderr[-2000:]}")
    new = sorted(set(json.loads(proc.stdout)) - known)
    if len(new) != 1:
        raise BuildError(f"expected exactly one run besides the pipeline's (the failed one), found {new}")
    return new[0]


def _write_manifest(p: TinyPipeline) -> None:
    manifest = {
        "layout_version": LAYOUT_VERSION,
        "runs": [
            {"model_size": s, "stage": st, "use_kd": kd, "run_id": rid, "metrics": p.metrics[(s, st, kd)]}
            for (s, st, kd), rid in p.run_ids.items()
        ],
        "failed_run_id": p.failed_run_id,
        "failed_error": p.failed_error,
        "seconds": p.seconds,
    }
    (p.root / MANIFEST).write_text(json.dumps(manifest, indent=2))


def load_tiny_pipeline(root: Path) -> TinyPipeline | None:
    """A pipeline built earlier under root (KDGAT_TINY_PIPELINE_DIR), or None when it must be rebuilt."""
    root = Path(root).resolve()
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if manifest.get("layout_version") != LAYOUT_VERSION or not (root / "mlflow.db").is_file():
        return None
    runs = {(r["model_size"], r["stage"], r["use_kd"]): r["run_id"] for r in manifest["runs"]}
    metrics = {(r["model_size"], r["stage"], r["use_kd"]): r["metrics"] for r in manifest["runs"]}
    if len(runs) != len(CHAINS) * len(PIPELINE_ORDER):
        return None
    return TinyPipeline(
        root=root,
        db_path=root / "mlflow.db",
        data_root=root / "data",
        cache_dir=root / "cache",
        run_ids=runs,
        metrics=metrics,
        failed_run_id=manifest["failed_run_id"],
        failed_error=manifest["failed_error"],
        seconds=manifest.get("seconds", {}),
    )


# the first test that asks for the fixture pays for the build: give those tests room under pytest-timeout
BUILD_TIMEOUT_S = 1800


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        if "tiny_pipeline_db" in getattr(item, "fixturenames", ()) and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(BUILD_TIMEOUT_S))


@pytest.fixture(scope="session")
def tiny_pipeline_db(tmp_path_factory) -> TinyPipeline:
    """The session's tiny pipeline DB (see the module docstring). Read-only: copy it before changing it."""
    reuse = os.environ.get(ENV_REUSE_DIR)
    if reuse:
        found = load_tiny_pipeline(Path(reuse))
        if found is not None:
            return found
    root = Path(reuse) if reuse else tmp_path_factory.mktemp("tiny_pipeline")
    try:
        return build_tiny_pipeline(root)
    except (BuildError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"tiny pipeline DB: {exc}", pytrace=False)


if __name__ == "__main__":
    # `python -m tests.pipeline_db DIR`: build it by hand (and time it), e.g. to point the notebook at it
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/kdgat-tiny-pipeline")
    built = build_tiny_pipeline(target)
    print(
        json.dumps({"db": str(built.db_path), "seconds": {k: round(v, 1) for k, v in built.seconds.items()}}, indent=2)
    )
