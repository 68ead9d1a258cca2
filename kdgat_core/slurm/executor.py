"""Which scheduler runs a job: SLURM wherever sbatch exists, else the local executor.

The one module that knows both schedulers, so neither imports the other.
"""

from __future__ import annotations

from pathlib import Path

from kdgat_core.config import KdgatError
from kdgat_core.slurm.local import LocalScheduler
from kdgat_core.slurm.scheduler import Scheduler, SlurmScheduler, shared_slurm


def scheduler_for(executor: str = "auto", state_dir: Path | None = None) -> Scheduler:
    """sbatch wherever it exists (executor auto), else the local executor under state_dir."""
    if executor == "slurm" or (executor == "auto" and SlurmScheduler.available()):
        return shared_slurm()
    if state_dir is None:
        raise KdgatError("The local executor needs a folder for its job records.")
    return LocalScheduler(state_dir)
