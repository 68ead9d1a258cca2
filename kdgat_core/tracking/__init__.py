"""kdgat_core.tracking: the only writer of the tracking DB (MLflow's client; mlflow itself is imported lazily)."""

from kdgat_core.tracking.lookup import find_run, load_run_config, run_artifact_dir
from kdgat_core.tracking.reconcile import LostRun, check_store_file, find_lost_runs, reconcile
from kdgat_core.tracking.run import RunTerminated, TrackedRun, open_run
from kdgat_core.tracking.store import get_store, with_retry

__all__ = [
    "LostRun",
    "RunTerminated",
    "TrackedRun",
    "check_store_file",
    "find_lost_runs",
    "find_run",
    "get_store",
    "load_run_config",
    "open_run",
    "reconcile",
    "run_artifact_dir",
    "with_retry",
]
