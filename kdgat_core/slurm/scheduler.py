"""The scheduler behind kdgat's job commands: real SLURM (sbatch/squeue/sacct/scancel), or a local executor.

A refresh of the queue costs one squeue call and one sacct call for all jobs, cached for a few seconds: polling
per job is a known way tools overload a cluster's controller.
"""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from kdgat_core.config import KdgatError
from kdgat_core.slurm.capacity import NodeCapacity, parse_sinfo, unmet_request
from kdgat_core.slurm.resources import Resources, check

# States after which a job can no longer update its run.
ENDED_STATES = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "OUT_OF_MEMORY",
        "NODE_FAIL",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
        "REVOKED",
        "SPECIAL_EXIT",
    }
)
ACTIVE_STATES = frozenset(
    {
        "PENDING",
        "RUNNING",
        "CONFIGURING",
        "COMPLETING",
        "SUSPENDED",
        "REQUEUED",
        "RESIZING",
        "STOPPED",
        "SIGNALING",
        "STAGE_OUT",
        "REQUEUE_HOLD",
        "REQUEUE_FED",
        "RESV_DEL_HOLD",
    }
)
QUEUE_CACHE_SECONDS = 3.0
HISTORY_WINDOW = "now-7days"
_SEP = "\x1f"  # unit separator: cannot appear in a job name kdgat validated, unlike '|'
COMMAND_TIMEOUT = 30
NODES_CACHE_SECONDS = 60.0
# Why a job waits, in words (SLURM's reason codes, `squeue %r`); the code is kept beside them.
REASON_WORDS = {
    "Priority": "waiting its turn: jobs of higher priority are ahead",
    "Resources": "waiting for CPUs, memory or GPUs to free up",
    "Dependency": "waiting for the jobs it depends on to finish",
    "DependencyNeverSatisfied": "will never start: a job it depends on failed",
    "PartitionConfig": "will never start: it asks for more than any node of its partition has",
    "BadConstraints": "will never start: no node has the requested features together",
    "ReqNodeNotAvail": "the nodes it needs are down, drained or reserved",
    "PartitionTimeLimit": "will never start: its time limit is above the partition's",
    "PartitionNodeLimit": "will never start: it asks for more nodes than the partition allows",
    "PartitionDown": "its partition is down",
    "PartitionInactive": "its partition is inactive",
    "NodeDown": "a node it needs is down",
    "BeginTime": "its start time has not come yet",
    "JobHeldUser": "held by its owner (scontrol release)",
    "JobHeldAdmin": "held by an administrator",
    "InvalidAccount": "will never start: the account is not valid",
    "InvalidQOS": "will never start: the QOS is not valid",
    "QOSMaxJobsPerUserLimit": "waiting: you have as many jobs running as the QOS allows",
    "QOSMaxCpuPerUserLimit": "waiting: your running jobs use all the CPUs the QOS allows",
    "QOSMaxGRESPerUser": "waiting: your running jobs use all the GPUs the QOS allows",
    "AssocGrpCpuLimit": "waiting: the account's CPU limit is reached",
    "AssocGrpGRES": "waiting: the account's GPU limit is reached",
    "AssocMaxJobsLimit": "waiting: the account's job limit is reached",
    "AssocGrpMemLimit": "waiting: the account's memory limit is reached",
    "launch failed requeued held": "its launch failed; it is held after a requeue",
    "Reservation": "waiting for its reservation to start",
    "Licenses": "waiting for licenses",
}


@dataclass
class Job:
    """One job (or array task) as the scheduler sees it."""

    job_id: str  # as shown to the user: 1234, or 1234_5 for an array task
    raw_id: str  # the unique id ($SLURM_JOB_ID inside the job; runs carry it as slurm_job_id)
    name: str
    state: str  # SLURM's state word (RUNNING, PENDING, COMPLETED, CANCELLED, ...)
    elapsed: str = ""
    node: str = ""
    reason: str = ""
    partition: str = ""
    exit_code: str = ""
    submit_time: str = ""
    start_time: str = ""
    end_time: str = ""
    source: str = ""  # squeue | sacct | local

    @property
    def ended(self) -> bool:
        return self.state in ENDED_STATES

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def normalize_state(text: str) -> str:
    """'CANCELLED by 0' -> 'CANCELLED'; 'CANCELLED+' -> 'CANCELLED'."""
    word = text.strip().split(" ")[0] if text.strip() else "UNKNOWN"
    return word.rstrip("+")


class Scheduler(Protocol):
    kind: str

    def submit(
        self,
        script_path: Path,
        after: Iterable[str] = (),
        array: str | None = None,
        job_name: str | None = None,
        output: str | None = None,
        error: str | None = None,
    ) -> str: ...
    def jobs(self, refresh: bool = False) -> list[Job]: ...
    def cancel(self, job_ids: Iterable[str]) -> None: ...


def _run(argv: list[str], what: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    conf = (os.environ if env is None else env).get("SLURM_CONF")
    if conf and not Path(conf).is_file():
        # SLURM's clients would retry reading it for a minute before giving up: say so now
        raise KdgatError(
            f"SLURM_CONF names {conf}, which is not a file; point it at the cluster's slurm.conf or unset it."
        )
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, env=env, stdin=subprocess.DEVNULL
        )
    except FileNotFoundError:
        raise KdgatError(
            f'{argv[0]} is not installed here; on a machine without SLURM use [cluster] executor = "local".'
        ) from None
    except subprocess.TimeoutExpired:
        raise KdgatError(
            f"{what} did not answer within {COMMAND_TIMEOUT} s; the SLURM controller may be down or overloaded."
        ) from None
    return proc


def _first_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no message"


class SlurmScheduler:
    """sbatch/squeue/sacct/scancel. Jobs are the current user's; the queue is cached for QUEUE_CACHE_SECONDS."""

    kind = "slurm"

    def __init__(self, cache_seconds: float = QUEUE_CACHE_SECONDS, user: str | None = None):
        self.cache_seconds = cache_seconds
        self.user = user or getpass.getuser()
        self._cache: tuple[float, list[Job]] | None = None
        self._nodes: tuple[float, list[NodeCapacity]] | None = None
        self._lock = threading.Lock()
        self.calls = {"squeue": 0, "sacct": 0}  # how many scheduler calls refreshes cost (tests and benchmarks read it)

    @staticmethod
    def available() -> bool:
        return shutil.which("sbatch") is not None

    def submit(
        self,
        script_path: Path,
        after: Iterable[str] = (),
        array: str | None = None,
        job_name: str | None = None,
        output: str | None = None,
        error: str | None = None,
    ) -> str:
        argv = ["sbatch", "--parsable"]
        after = [check("dependency_id", a, "dependency") for a in after]
        if after:
            # without --kill-on-invalid-dep a failed parent leaves its children pending forever
            argv += [f"--dependency=afterok:{':'.join(after)}", "--kill-on-invalid-dep=yes"]
        argv.append(str(script_path))
        proc = _run(argv, "sbatch")
        if proc.returncode != 0:
            raise KdgatError(f"sbatch refused {script_path.name}: {_first_line(proc.stderr or proc.stdout)}.")
        job_id = proc.stdout.strip().split(";")[0]
        if not job_id.isdigit():
            raise KdgatError(f"sbatch printed no job id ({proc.stdout.strip()!r}).")
        self._cache = None
        return job_id

    def jobs(self, refresh: bool = False) -> list[Job]:
        with self._lock:
            if not refresh and self._cache is not None and time.monotonic() - self._cache[0] < self.cache_seconds:
                return self._cache[1]
            merged = {job.raw_id: job for job in self._sacct()}
            for job in self._squeue():  # the live view wins: it has the pending reason and current state
                merged[job.raw_id] = job if job.raw_id not in merged else _prefer_live(merged[job.raw_id], job)
            jobs = sorted(merged.values(), key=_job_sort_key, reverse=True)
            self._cache = (time.monotonic(), jobs)
            return jobs

    def _squeue(self) -> list[Job]:
        self.calls["squeue"] += 1
        fmt = _SEP.join(["%i", "%A", "%j", "%T", "%M", "%N", "%r", "%P", "%V", "%S"])
        proc = _run(["squeue", "-h", "-t", "all", "-u", self.user, "-o", fmt], "squeue")
        if proc.returncode != 0:
            raise KdgatError(f"squeue failed: {_first_line(proc.stderr)}.")
        jobs = []
        for line in proc.stdout.splitlines():
            f = line.split(_SEP)
            if len(f) < 10:
                continue
            state = normalize_state(f[3])
            jobs.append(
                Job(
                    job_id=f[0],
                    raw_id=f[1],
                    name=f[2],
                    state=state,
                    elapsed=short_elapsed(f[4]),
                    node=f[5],
                    reason=shown_reason(state, f[6], f[5]),
                    partition=f[7],
                    submit_time=f[8],
                    start_time="" if f[9] in ("N/A", "Unknown") else f[9],
                    source="squeue",
                )
            )
        return jobs

    def _sacct(self) -> list[Job]:
        self.calls["sacct"] += 1
        fields = "JobID,JobIDRaw,JobName,State,Elapsed,NodeList,Reason,Partition,ExitCode,Submit,Start,End"
        proc = _run(
            ["sacct", "-n", "-P", "-X", "--delimiter", _SEP, "-u", self.user, "-S", HISTORY_WINDOW, "-o", fields],
            "sacct",
        )
        if proc.returncode != 0 or "accounting storage is disabled" in proc.stderr.lower():
            return []  # no accounting on this cluster: the queue alone still works
        jobs = []
        for line in proc.stdout.splitlines():
            f = line.split(_SEP)
            if len(f) < 12 or "[" in f[0]:
                continue  # a pending array range ("12_[1-3]") is listed task by task by squeue
            state = normalize_state(f[3])
            node = "" if f[5] == "None assigned" else f[5]
            jobs.append(
                Job(
                    job_id=f[0],
                    raw_id=f[1],
                    name=f[2],
                    state=state,
                    elapsed=short_elapsed(f[4]),
                    node=node,
                    reason=shown_reason(state, f[6], node),
                    partition=f[7],
                    exit_code=f[8],
                    submit_time=f[9],
                    start_time="" if f[10] in ("Unknown", "None") else f[10],
                    end_time="" if f[11] in ("Unknown", "None") else f[11],
                    source="sacct",
                )
            )
        return jobs

    def nodes(self) -> list[NodeCapacity]:
        """Every node of every partition (one sinfo call, kept a minute: partitions rarely change)."""
        if self._nodes is not None and time.monotonic() - self._nodes[0] < NODES_CACHE_SECONDS:
            return self._nodes[1]
        proc = _run(["sinfo", "-h", "-N", "-o", "%P|%N|%c|%m|%G|%l"], "sinfo")
        nodes = parse_sinfo(proc.stdout) if proc.returncode == 0 else []
        self._nodes = (time.monotonic(), nodes)
        return nodes

    def check_request(self, resources: Resources, script_path: Path | None = None) -> None:
        """Refuse a request no node of its partition can ever satisfy (else sbatch queues it to wait for good).

        sinfo answers for CPUs, memory, GPUs and time; a node feature constraint is left to `sbatch --test-only`."""
        problem = unmet_request(
            partition=resources.partition,
            cpus=resources.cpus,
            mem=resources.mem,
            gres=resources.gres_request,
            time=resources.time,
            nodes=self.nodes(),
        )
        if problem:
            raise KdgatError(problem)
        if script_path is not None and resources.constraint:
            proc = _run(["sbatch", "--test-only", str(script_path)], "sbatch --test-only")
            if proc.returncode != 0:
                raise KdgatError(
                    f"sbatch --test-only says this job can never start: {_first_line(proc.stderr or proc.stdout)}."
                )

    def cancel(self, job_ids: Iterable[str]) -> None:
        ids = [check("dependency_id", j, "job id") for j in job_ids]
        if not ids:
            return
        proc = _run(["scancel", *ids], "scancel")
        if proc.returncode != 0:
            raise KdgatError(f"scancel failed: {_first_line(proc.stderr)}.")
        self._cache = None

    def log_paths(self, job_id: str) -> tuple[str, str] | None:
        """stdout/stderr of a job the controller still knows (scontrol keeps it MinJobAge seconds)."""
        proc = _run(["scontrol", "show", "job", "-o", check("dependency_id", job_id, "job id")], "scontrol")
        if proc.returncode != 0:
            return None
        words = dict(w.split("=", 1) for w in proc.stdout.split() if "=" in w)
        if "StdOut" in words:
            return words["StdOut"], words.get("StdErr", words["StdOut"])
        return None


def short_elapsed(text: str) -> str:
    """sacct's 00:01:05 and squeue's 1:05 both as 1:05 (days kept: 1-02:03:04)."""
    days, _, clock = text.rpartition("-")
    parts = clock.split(":")
    if not all(p.isdigit() for p in parts):
        return text
    if days:
        return text
    while len(parts) > 2 and int(parts[0]) == 0:
        parts = parts[1:]
    parts[0] = str(int(parts[0]))
    return (f"{int(days)}-" if days else "") + ":".join(parts)


def shown_reason(state: str, reason: str, node: str) -> str:
    """The scheduler's reason matters while a job waits, or for a job that ended without ever running."""
    if reason in ("", "None"):
        return ""
    return reason if state == "PENDING" or (state == "CANCELLED" and not node) else ""


def reason_words(reason: str) -> str:
    """A pending job's reason code in words (`Resources` -> 'waiting for CPUs, memory or GPUs to free up')."""
    if not reason:
        return ""
    words = REASON_WORDS.get(reason) or REASON_WORDS.get(reason.split(",")[0].strip())
    if words:
        return words
    if reason.startswith(("QOS", "Assoc")):
        return "waiting for a limit of your account or QOS"
    return reason


def _prefer_live(history: Job, live: Job) -> Job:
    live.exit_code = live.exit_code or history.exit_code
    live.end_time = live.end_time or history.end_time
    return live


def _job_sort_key(job: Job) -> tuple[int, int]:
    base, _, task = job.job_id.partition("_")
    try:
        return int(base), int(task) if task.isdigit() else -1
    except ValueError:
        return 0, 0


_slurm_instance: SlurmScheduler | None = None


def shared_slurm() -> SlurmScheduler:
    """One per process, so its few-second cache is shared by every caller (CLI refresh, TUI timer)."""
    global _slurm_instance
    if _slurm_instance is None:
        seconds = float(os.environ.get("KDGAT_QUEUE_CACHE_SECONDS", QUEUE_CACHE_SECONDS))
        _slurm_instance = SlurmScheduler(cache_seconds=seconds)
    return _slurm_instance
