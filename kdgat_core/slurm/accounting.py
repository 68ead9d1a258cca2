"""What each job used of what it asked for, from one `sacct` call for all jobs (steps included), cached.

Per job (array tasks each): elapsed against the time limit, CPU time against elapsed x allocated CPUs, peak memory
(MaxRSS over the job's steps) against the requested memory, GPUs where the cluster accounts `gres/gpu` (AllocTRES,
and `gres/gpuutil` in TRESUsageInTot when it gathers GPU usage). Also the scheduler's cause of a failure
(out of memory, time limit, node failure, cancelled and by whom, preempted). These are scheduler facts: joining them
with runs happens in kdgat_core.query (the `jobs` view), fed by the caller.
"""

from __future__ import annotations

import getpass
import os
import pwd
import re
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from kdgat_core.config import FailureCause, KdgatError
from kdgat_core.slurm.capacity import mem_mb, minutes
from kdgat_core.slurm.scheduler import _SEP, HISTORY_WINDOW, QUEUE_CACHE_SECONDS, _run, normalize_state

FIELDS = (
    "JobID",
    "JobIDRaw",
    "JobName",
    "State",
    "ExitCode",
    "Partition",
    "NodeList",
    "Submit",
    "Start",
    "End",
    "ElapsedRaw",
    "TimelimitRaw",
    "AllocCPUS",
    "TotalCPU",
    "ReqMem",
    "MaxRSS",
    "AllocTRES",
    "TRESUsageInTot",
)
# An OverMemoryKill (no cgroups) ends the job FAILED with signal 9 and a peak at or above the request, not OUT_OF_MEMORY.
OOM_PEAK_SHARE = 0.95
_STATE_CAUSE = {
    "OUT_OF_MEMORY": FailureCause.OOM,
    "TIMEOUT": FailureCause.TIMEOUT,
    "DEADLINE": FailureCause.TIMEOUT,
    "NODE_FAIL": FailureCause.NODE_FAIL,
    "BOOT_FAIL": FailureCause.NODE_FAIL,
    "PREEMPTED": FailureCause.PREEMPTED,
    "CANCELLED": FailureCause.CANCELLED,
    "FAILED": FailureCause.FAILED,
    "REVOKED": FailureCause.CANCELLED,
}


@dataclass
class JobUsage:
    """One job or array task: its request, what it used, and the scheduler's cause if it failed."""

    job_id: str  # 1234 or 1234_5
    raw_id: str  # the run's slurm_job_id
    name: str
    state: str
    exit_code: str = ""
    partition: str = ""
    node: str = ""
    submit_time: str = ""
    start_time: str = ""
    end_time: str = ""
    elapsed_s: int = 0
    time_limit_s: int | None = None
    cpus: int = 0
    cpu_time_s: float = 0.0
    req_mem_mb: float | None = None
    max_rss_mb: float | None = None
    gpus: int = 0
    gpu_util: float | None = None  # mean utilisation over the allocated GPUs, 0-1, when gathered
    cancelled_by: str = ""
    job_cause: str = ""  # a FailureCause value from the scheduler's view; "" for a job that ended well or still runs
    steps: list[str] = field(default_factory=list, repr=False)

    @property
    def time_eff(self) -> float | None:
        return self.elapsed_s / self.time_limit_s if self.time_limit_s and self.elapsed_s else None

    @property
    def cpu_eff(self) -> float | None:
        wall = self.elapsed_s * self.cpus
        return min(self.cpu_time_s / wall, 1.0) if wall > 0 and self.start_time else None

    @property
    def mem_eff(self) -> float | None:
        if not self.req_mem_mb or self.max_rss_mb is None:
            return None
        return self.max_rss_mb / self.req_mem_mb

    def facts(self) -> dict[str, Any]:
        """The row the query layer's `jobs` view is built from."""
        out = asdict(self)
        out.pop("steps")
        out.update(time_eff=self.time_eff, cpu_eff=self.cpu_eff, mem_eff=self.mem_eff, gpu_eff=self.gpu_util)
        return out


def seconds(text: str) -> float:
    """sacct's [DD-[HH:]]MM:SS[.mmm] (TotalCPU) or HH:MM:SS in seconds."""
    text = text.strip()
    if not text or text in ("INVALID", "Unknown"):
        return 0.0
    days, _, clock = text.rpartition("-")
    parts = clock.split(":")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        return 0.0
    total = 0.0
    for v in values:
        total = total * 60 + v
    return total + (int(days) * 86400 if days.isdigit() else 0)


def size_mb(text: str, cpus: int = 1) -> float | None:
    """`159392K`, `1.5G`, `100M`, `4000Mn`, `256Mc` (per CPU), plain bytes, in megabytes; None when empty."""
    m = re.fullmatch(r"([\d.]+)([KMGTP]?)([nc]?)", text.strip())
    if not m:
        return None
    per_mb = {"": 1 / 1024 / 1024, "K": 1 / 1024, "M": 1, "G": 1024, "T": 1024**2, "P": 1024**3}[m.group(2)]
    return float(m.group(1)) * per_mb * (cpus if m.group(3) == "c" else 1)


def tres(text: str) -> dict[str, str]:
    """`billing=1,cpu=1,gres/gpu=1,mem=100M` -> {name: value}."""
    out = {}
    for item in text.split(","):
        if "=" in item:
            key, value = item.split("=", 1)
            out[key.strip()] = value.strip()
    return out


def gpu_count(alloc: dict[str, str]) -> int:
    """GPUs of an AllocTRES: `gres/gpu=2`, else the typed counts summed (`gres/gpu:a100=2` alone); `gres/gpumem` and
    `gres/gpuutil` are usage, not GPUs."""
    generic = _number(alloc.get("gres/gpu", ""))
    if generic is not None:
        return int(generic)
    return int(sum(_number(v) or 0 for k, v in alloc.items() if k.startswith("gres/gpu:")))


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _who(state_text: str) -> str:
    """'CANCELLED by 1000' -> the user name of uid 1000."""
    m = re.search(r"by (\d+)", state_text)
    if not m:
        return ""
    try:
        return pwd.getpwuid(int(m.group(1))).pw_name
    except (KeyError, OverflowError):
        return f"uid {m.group(1)}"


def _signal(exit_code: str) -> int:
    _, _, sig = exit_code.partition(":")
    return int(sig) if sig.isdigit() else 0


def parse_sacct(text: str) -> list[JobUsage]:
    """Rows of `sacct -P -o <FIELDS>` with steps (`123.batch`, `123_4.extern`) folded into their job."""
    jobs: dict[str, JobUsage] = {}
    order: list[str] = []
    step_rows: list[list[str]] = []
    for line in text.splitlines():
        f = line.split(_SEP)
        if len(f) < len(FIELDS):
            continue
        if "." in f[1]:
            step_rows.append(f)
            continue
        if "[" in f[0]:
            continue  # a pending array range ("12_[1-3]") has no usage yet
        cpus = int(f[12]) if f[12].isdigit() else 0
        alloc = tres(f[16])
        limit = minutes(f[11]) if f[11].isdigit() else None
        job = JobUsage(
            job_id=f[0],
            raw_id=f[1],
            name=f[2],
            state=normalize_state(f[3]),
            exit_code=f[4],
            partition=f[5],
            node="" if f[6] == "None assigned" else f[6],
            submit_time=f[7],
            start_time="" if f[8] in ("Unknown", "None") else f[8],
            end_time="" if f[9] in ("Unknown", "None") else f[9],
            elapsed_s=int(f[10]) if f[10].isdigit() else 0,
            time_limit_s=limit * 60 if limit is not None else None,
            cpus=cpus,
            cpu_time_s=seconds(f[13]),
            req_mem_mb=size_mb(f[14], cpus) if f[14] else (mem_mb(alloc["mem"]) if "mem" in alloc else None),
            max_rss_mb=size_mb(f[15]) if f[15] else None,
            gpus=gpu_count(alloc),
            cancelled_by=_who(f[3]),
        )
        job.steps.append(f[3])
        jobs[f[1]] = job
        order.append(f[1])
    for f in step_rows:
        owner = jobs.get(f[1].split(".", 1)[0])
        if owner is None:
            continue
        job = owner
        job.steps.append(f[3])
        rss = size_mb(f[15]) if f[15] else None
        if rss is not None:
            job.max_rss_mb = max(job.max_rss_mb or 0.0, rss)
        usage = tres(f[17])
        util = _number(usage.get("gres/gpuutil", ""))
        if util is not None and job.gpus:  # percent summed over the step's GPUs (NVML/RSMI gathering)
            job.gpu_util = max(job.gpu_util or 0.0, util / 100 / job.gpus)
        if not job.cancelled_by:
            job.cancelled_by = _who(f[3]) if job.state == "CANCELLED" else ""
    for job in jobs.values():
        job.job_cause = cause_of(job)
    return [jobs[k] for k in order]


def cause_of(job: JobUsage) -> str:
    """The scheduler's reason a job failed; "" when it completed or has not ended."""
    if any(s.startswith("OUT_OF_MEMORY") for s in job.steps):
        return FailureCause.OOM.value
    peak_over = job.req_mem_mb and job.max_rss_mb is not None and job.max_rss_mb >= OOM_PEAK_SHARE * job.req_mem_mb
    if job.state in ("FAILED", "CANCELLED") and peak_over and _signal(job.exit_code) == 9:
        return FailureCause.OOM.value  # OverMemoryKill: SIGKILL once the peak passed the request
    cause = _STATE_CAUSE.get(job.state)
    return cause.value if cause is not None else ""


# --- one cached sacct call ---------------------------------------------------------------------------------------------
_cache: dict[tuple[str, str], tuple[float, list[JobUsage]]] = {}
_lock = threading.Lock()
calls = {"sacct": 0}  # how many sacct calls refreshes cost (tests read it)


def job_usage(
    since: str | None = None, user: str | None = None, refresh: bool = False, cache_seconds: float | None = None
) -> list[JobUsage]:
    """Every job of the user since `since` (a sacct time, default 7 days ago): one sacct call, cached a few seconds.

    An empty list where the cluster keeps no accounting (no slurmdbd)."""
    if shutil.which("sacct") is None:
        return []  # no SLURM here: runs alone still tell their story
    user = user or getpass.getuser()
    window = since or HISTORY_WINDOW
    ttl = (
        float(os.environ.get("KDGAT_QUEUE_CACHE_SECONDS", QUEUE_CACHE_SECONDS))
        if cache_seconds is None
        else cache_seconds
    )
    key = (user, window)
    with _lock:
        hit = _cache.get(key)
        if hit is not None and not refresh and time.monotonic() - hit[0] < ttl:
            return hit[1]
        calls["sacct"] += 1
        proc = _run(
            ["sacct", "-n", "-P", "--delimiter", _SEP, "-u", user, "-S", window, "-o", ",".join(FIELDS)], "sacct"
        )
        if "accounting storage is disabled" in proc.stderr.lower():
            rows: list[JobUsage] = []  # a cluster without slurmdbd: nothing to read, and nothing wrong
        elif proc.returncode != 0:  # slurmdbd down or unreachable: the caller says so and goes on with the runs
            raise KdgatError(f"sacct could not read the job accounting ({_first_error(proc.stderr)}).")
        else:
            rows = parse_sacct(proc.stdout)
        _cache[key] = (time.monotonic(), rows)
        return rows


def _first_error(stderr: str) -> str:
    """sacct's last error line without its `sacct: error: ` prefix (the last one names the cause)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return re.sub(r"^sacct: (error: )?", "", lines[-1]).rstrip(".") if lines else "no message"


def job_facts(
    settings: Any = None, tracking_uri: str | None = None, since: str | None = None, refresh: bool = False
) -> list[dict[str, Any]]:
    """job_usage as rows for the query layer's `jobs` view, each with what kdgat's submission record says about it
    (dataset, stage, size, preset variant, run name): a job that died before opening its run still has them."""
    from kdgat_core.config import load_settings
    from kdgat_core.slurm.render import artifact_root
    from kdgat_core.slurm.submit import read_submissions

    settings = settings or load_settings()
    records = read_submissions(artifact_root(tracking_uri, settings))
    retried_by = {str(old): job for job, rec in records.items() for old in rec.get("retry_of") or []}
    rows = []
    for job in job_usage(since=since, refresh=refresh):
        row = job.facts()
        record = records.get(job.job_id.split("_", 1)[0]) or {}
        row.update(
            dataset=record.get("dataset"),
            stage=record.get("stage"),
            model_size=record.get("model_size"),
            variant=record.get("variant"),
            run_name=record.get("run_name"),
            retried_by=retried_by.get(job.job_id),
        )
        rows.append(row)
    return rows
