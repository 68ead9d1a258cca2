"""`open_run`: one MLflow run with kdgat's tags, params, batched metrics and artifacts, and an honest ending.

On exit the `status` tag, `end_time` and MLflow's own status agree: complete/FINISHED, failed/FAILED, or
failed/KILLED when SIGTERM (SLURM's scancel and time-outs) or SIGINT stopped the run.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdgat_core.config import (
    ENV_RETRY_OF,
    HOST_TAG,
    MLFLOW_RUN_NAME_TAG,
    PID_TAG,
    RETRY_OF_TAG,
    TEACHER_AUTO,
    KdgatError,
    MlflowStatus,
    PipelineConfig,
    RunStatus,
    Tag,
    bool_tag,
    retry_of_for_task,
)
from kdgat_core.tracking.store import Store, get_store, with_retry

if TYPE_CHECKING:  # mlflow loads when a run starts, not on import
    from mlflow.entities import Metric as MlflowMetric
    from mlflow.entities import Param, RunTag

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
ENV_SLURM_JOB_ID = "SLURM_JOB_ID"
# MLflow's SQL store allows longer params, but 500 is the limit older stores and servers enforce.
MAX_PARAM_LENGTH = 500
MAX_ERROR_LENGTH = 500
# log_batch accepts at most 1000 metrics, 100 params and 100 tags per call.
BATCH_METRICS, BATCH_PARAMS, BATCH_TAGS = 1000, 100, 100
# After SIGTERM SLURM sends SIGKILL after KillWait (30 s by default): finish the bookkeeping well before.
KILLED_FINALIZE_SECONDS = 20.0


class RunTerminated(SystemExit):
    """Raised inside an open run when the process gets SIGTERM; exits like the signal would (128 + signum)."""

    def __init__(self, signum: int):
        super().__init__(128 + signum)
        self.signum = signum
        self.signal_name = signal.Signals(signum).name


def utc_now_iso() -> str:
    """ISO-8601 UTC with milliseconds, the format of the start_time/end_time tags."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def param_value(value: Any) -> str:
    """Params are strings: lists/dicts as JSON, bools as True/False, cut to MLflow's length limit."""
    text = json.dumps(value) if isinstance(value, (list, tuple, dict)) else str(value)
    return text if len(text) <= MAX_PARAM_LENGTH else text[: MAX_PARAM_LENGTH - 3] + "..."


def tag_value(value: Any) -> str:
    return bool_tag(value) if isinstance(value, bool) else str(value)


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the kdgat checkout being run, or None outside a git checkout."""
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=2)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    head = root / ".git" / "HEAD"
    try:
        ref = head.read_text().strip()
        if ref.startswith("ref: "):
            return (root / ".git" / ref[5:]).read_text().strip() or None
        return ref or None
    except OSError:
        return None


def artifact_dir_for(store: Store, cfg: PipelineConfig, run_id: str) -> Path:
    """`experimentruns/<dataset>/<size>_<stage>[_kd]/<run_id>/`: the run id keeps every run's folder its own."""
    return store.artifact_root / cfg.run_name / run_id


class TrackedRun:
    """What `open_run` yields. Every write goes through MLflow's client with lock retries."""

    def __init__(self, store: Store, run_id: str, cfg: PipelineConfig, artifact_dir: Path):
        self.store = store
        self.run_id = run_id
        self.cfg = cfg
        self.artifact_dir = artifact_dir
        self.tracking_uri = store.uri
        self.last_step = 0
        self._last_point: dict[str, tuple[int, float]] = {}  # key -> (step, value) last logged

    # --- metrics ----------------------------------------------------------------------------------------------------
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """One log_batch for all of them (per-epoch history: step = epoch)."""
        from mlflow.entities import Metric as MlflowMetric

        step = self.last_step if step is None else int(step)
        self.last_step = max(self.last_step, step)
        ts = int(time.time() * 1000)
        items = [MlflowMetric(str(k), _as_float(k, v), ts, step) for k, v in metrics.items()]
        self._send(items)

    def log_history(self, history: Mapping[int, Mapping[str, Any]]) -> None:
        """Several steps at once ({epoch: {metric: value}}): fewer commits when a whole history is at hand."""
        from mlflow.entities import Metric as MlflowMetric

        ts = int(time.time() * 1000)
        items = [
            MlflowMetric(str(k), _as_float(k, v), ts, int(step))
            for step, row in history.items()
            for k, v in row.items()
        ]
        if history:
            self.last_step = max(self.last_step, *(int(s) for s in history))
        self._send(items)

    def log_final(self, metrics: Mapping[str, Any]) -> None:
        """Headline metrics, logged at the run's last step so they are what MLflow's latest value shows.

        A value equal to the one already logged at that step (final val_loss = last epoch's) is not repeated.
        """
        step = self.last_step
        fresh = {k: v for k, v in metrics.items() if self._last_point.get(str(k)) != (step, _as_float(k, v))}
        if fresh:
            self.log_metrics(fresh, step=step)

    # --- tags, params -------------------------------------------------------------------------------------------
    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(str(k), tag_value(v)) for k, v in tags.items() if v is not None]
        for i in range(0, len(items), BATCH_TAGS):
            self._batch(tags=items[i : i + BATCH_TAGS])

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(str(k), param_value(v)) for k, v in params.items()]
        for i in range(0, len(items), BATCH_PARAMS):
            self._batch(params=items[i : i + BATCH_PARAMS])

    # --- artifacts ----------------------------------------------------------------------------------------------
    def log_artifact(self, path: str | Path, name: str | None = None) -> Path:
        """Copy a file (or folder) into the run's artifact folder (unless already there) and log it to MLflow."""
        src = Path(path).resolve()
        if not src.exists():
            raise KdgatError(f"Cannot log artifact {src}: it does not exist.")
        dest = self.artifact_dir / (name or src.name)
        if src != dest.resolve():
            dest.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, dest, dirs_exist_ok=True)
            else:
                shutil.copy2(src, dest)
        self._mlflow_artifact(dest)
        return dest

    def log_json(self, name: str, obj: Any) -> Path:
        dest = self.artifact_dir / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
        self._mlflow_artifact(dest)
        return dest

    def log_figure(self, name: str, fig: Any) -> Path:
        """Save a matplotlib-style figure (anything with savefig) under the artifact folder."""
        dest = self.artifact_dir / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(dest)
        self._mlflow_artifact(dest)
        return dest

    # --- internals ----------------------------------------------------------------------------------------------
    def _send(self, items: list[Any]) -> None:
        for i in range(0, len(items), BATCH_METRICS):
            self._batch(metrics=items[i : i + BATCH_METRICS])
        for m in sorted(items, key=lambda m: m.step):
            if m.step >= self._last_point.get(m.key, (-1, 0.0))[0]:
                self._last_point[m.key] = (m.step, m.value)

    def _batch(
        self,
        metrics: Iterable[MlflowMetric] = (),
        params: Iterable[Param] = (),
        tags: Iterable[RunTag] = (),
        deadline_s: float | None = None,
    ) -> None:
        kwargs = {} if deadline_s is None else {"deadline_s": deadline_s}
        with_retry(
            self.store.client.log_batch,
            self.run_id,
            metrics=list(metrics),
            params=list(params),
            tags=list(tags),
            what="log_batch",
            **kwargs,
        )

    def _mlflow_artifact(self, path: Path) -> None:
        # MLflow's copy lives in the experiment's artifact store; ours (the folder above) is the one kdgat reads
        rel = path.relative_to(self.artifact_dir).parent.as_posix()
        artifact_path = None if rel in ("", ".") else rel
        if path.is_dir():
            target = f"{artifact_path}/{path.name}" if artifact_path else path.name
            self.store.client.log_artifacts(self.run_id, str(path), artifact_path=target)
        else:
            self.store.client.log_artifact(self.run_id, str(path), artifact_path=artifact_path)


def _as_float(key: Any, value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise KdgatError(f"Metric '{key}' has value {value!r}, which is not a number.") from None
    return out if not math.isinf(out) else math.copysign(1.797e308, out)


@contextlib.contextmanager
def open_run(
    cfg: PipelineConfig, tracking_uri: str | None = None, extra_tags: Mapping[str, Any] | None = None
) -> Iterator[TrackedRun]:
    """Open an MLflow run named `cfg.run_name` in the kd-gat-pipeline experiment; close it honestly on any exit."""
    if cfg.kd.enabled and cfg.kd.teacher_run_id in ("", TEACHER_AUTO):
        raise KdgatError(
            "A knowledge-distillation run needs the teacher's run id (kd.teacher_run_id / --teacher); "
            f"'{TEACHER_AUTO}' must be resolved to a run id before the run opens."
        )
    store = get_store(tracking_uri, create=True)
    assert store is not None
    client = store.client
    start_ms = int(time.time() * 1000)
    start_iso = datetime.fromtimestamp(start_ms / 1000, UTC).isoformat(timespec="milliseconds")

    run = with_retry(
        client.create_run,
        store.experiment_id,
        start_time=start_ms,
        tags={MLFLOW_RUN_NAME_TAG: cfg.run_name},
        run_name=cfg.run_name,
        what="create_run",
    )
    run_id = run.info.run_id
    artifact_dir = artifact_dir_for(store, cfg, run_id)
    tracked = TrackedRun(store, run_id, cfg, artifact_dir)

    previous_handler = _install_sigterm()
    try:
        artifact_dir.mkdir(parents=True, exist_ok=False)  # exist_ok=False: never write into another run's folder
        tags: dict[str, Any] = {
            Tag.DATASET: cfg.dataset,
            Tag.STAGE: cfg.stage,
            Tag.MODEL_SIZE: cfg.model_size,
            Tag.USE_KD: bool_tag(cfg.kd.enabled),
            Tag.MODEL_ARCH: cfg.arch.value,
            Tag.TEACHER_RUN_ID: cfg.kd.teacher_run_id if cfg.kd.enabled else None,
            Tag.RUN_ID: run_id,
            Tag.STATUS: RunStatus.RUNNING.value,
            Tag.START_TIME: start_iso,
            Tag.SLURM_JOB_ID: os.environ.get(ENV_SLURM_JOB_ID) or None,
            Tag.GIT_COMMIT: git_commit(),
            Tag.SEED: cfg.train.seed,
            Tag.ARTIFACT_DIR: str(artifact_dir),
            PID_TAG: os.getpid(),
            HOST_TAG: socket.gethostname(),
            RETRY_OF_TAG: retry_of_for_task(  # set by `kdgat resubmit`
                os.environ.get(ENV_RETRY_OF, ""), os.environ.get("SLURM_ARRAY_TASK_ID")
            ),
        }
        merged = {str(k): v for k, v in tags.items()}
        merged.update({str(k): v for k, v in (extra_tags or {}).items()})
        tracked.set_tags(merged)
        tracked.log_params(cfg.flatten())
        tracked.log_json(CONFIG_FILE, cfg.to_dict())
        yield tracked
    except BaseException as exc:
        try:
            _finish(tracked, exc)
        except Exception as finish_error:
            log.error("could not record the end of run %s: %s", tracked.run_id, finish_error)
        raise
    else:
        late_sigterm = _finish(tracked, None)
    finally:
        _restore_sigterm(previous_handler)
    if late_sigterm:  # arrived while the ending was written: hand it to the process's own handler now
        signal.raise_signal(signal.SIGTERM)


def _finish(tracked: TrackedRun, exc: BaseException | None) -> bool:
    """Set status/end_time/error_msg tags, then MLflow's own status. SIGTERM is held meanwhile: True if one came."""
    deadline = None
    if exc is None or (isinstance(exc, SystemExit) and not isinstance(exc, RunTerminated) and exc.code in (0, None)):
        status, mlflow_status, error = RunStatus.COMPLETE, MlflowStatus.FINISHED, None
    elif isinstance(exc, RunTerminated):
        status, mlflow_status = RunStatus.FAILED, MlflowStatus.KILLED
        error = f"killed by {exc.signal_name}"
        deadline = KILLED_FINALIZE_SECONDS
    elif isinstance(exc, KeyboardInterrupt):
        status, mlflow_status, error = RunStatus.FAILED, MlflowStatus.KILLED, "killed by SIGINT"
        deadline = KILLED_FINALIZE_SECONDS
    else:
        status, mlflow_status = RunStatus.FAILED, MlflowStatus.FAILED
        first = (str(exc).strip().splitlines() or [""])[0]
        error = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
        if len(error) > MAX_ERROR_LENGTH:
            error = error[: MAX_ERROR_LENGTH - 3] + "..."

    with _sigterm_deferred() as got:
        end_ms = int(time.time() * 1000)
        end_iso = datetime.fromtimestamp(end_ms / 1000, UTC).isoformat(timespec="milliseconds")
        from mlflow.entities import RunTag

        tags = [RunTag(Tag.STATUS.value, status.value), RunTag(Tag.END_TIME.value, end_iso)]
        if error is not None:
            tags.append(RunTag(Tag.ERROR_MSG.value, error))
        tracked._batch(tags=tags, deadline_s=deadline)
        kwargs = {} if deadline is None else {"deadline_s": deadline}
        with_retry(
            tracked.store.client.set_terminated,
            tracked.run_id,
            status=mlflow_status.value,
            end_time=end_ms,
            what="set_terminated",
            **kwargs,
        )
    return bool(got) and not isinstance(exc, RunTerminated)


# --- SIGTERM -> an exception that unwinds through the run ---------------------------------------------------------
def _raise_terminated(signum: int, frame: Any) -> None:
    raise RunTerminated(signum)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _install_sigterm() -> Any:
    if not _in_main_thread():
        return None  # signals only reach the main thread; a run in a worker thread keeps the process's handler
    return signal.signal(signal.SIGTERM, _raise_terminated)


def _restore_sigterm(previous: Any) -> None:
    if previous is not None and _in_main_thread():
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _sigterm_deferred() -> Iterator[list[int]]:
    """Hold SIGTERM while the run's ending is written; the caller learns whether one arrived."""
    got: list[int] = []
    if not _in_main_thread():
        yield got
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: got.append(signum))
    try:
        yield got
    finally:
        signal.signal(signal.SIGTERM, previous)
