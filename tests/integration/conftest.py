"""Integration fixtures: a real single-node SLURM cluster (scripts/slurm_cluster.sh) for the tests marked `slurm`.

The cluster `.ci/run` started (SLURM_CONF exported) is used as is; otherwise the session starts one under
$KDGAT_SLURM_DIR (default /tmp/kdgat-slurm), or reuses one already running there, and stops it at the end only if
it started it. Under CI=true a cluster that cannot start fails the tests instead of skipping them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import require

REPO = Path(__file__).resolve().parents[2]
CLUSTER_SCRIPT = REPO / "scripts" / "slurm_cluster.sh"
STATE_DIR = Path(os.environ.get("KDGAT_SLURM_DIR", "/tmp/kdgat-slurm"))
PACKAGES = "apt-get install slurmctld slurmd slurm-client munge slurmdbd mariadb-server-core mariadb-client-core"


def _answers(conf: str) -> bool:
    try:
        return (
            subprocess.run(
                ["sinfo", "-h"], env={**os.environ, "SLURM_CONF": conf}, capture_output=True, timeout=20
            ).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


def _script(action: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(CLUSTER_SCRIPT), action, str(STATE_DIR)],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture(scope="session")
def slurm_cluster():
    """SLURM_CONF of a running cluster with a `debug` partition; exported for the session."""
    missing = [
        t for t in ("slurmctld", "slurmd", "munged", "sbatch", "squeue", "sacct", "scancel") if not shutil.which(t)
    ]
    require(not missing, f"SLURM is not installed ({', '.join(missing)} missing): {PACKAGES}")
    require(os.geteuid() == 0, "the private SLURM cluster runs its daemons as root")
    given = os.environ.get("SLURM_CONF")
    if given and _answers(given):
        yield given
        return
    started = False
    if _script("status").returncode != 0:
        proc = _script("start")
        require(
            proc.returncode == 0,
            f"the local SLURM cluster did not start: {(proc.stderr or proc.stdout).strip()[-600:]}",
        )
        started = True
    conf = str(STATE_DIR / "etc" / "slurm.conf")
    require(_answers(conf), f"the local SLURM cluster under {STATE_DIR} does not answer sinfo")
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = conf
    try:
        yield conf
    finally:
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous
        if started:
            _script("stop", timeout=120)
