"""The local executor: runs rendered sbatch scripts with bash in the background on a machine without SLURM.

Same scripts, same log paths (`%j`, `%A`, `%a` filled in here), job ids `L1`, `L2`, ... and one small JSON record per
job under `<experimentruns>/.local_jobs/`, so `kdgat jobs`, `logs` and `cancel` work as they do on a cluster.
Each job is a detached runner process (`python -m kdgat_core.slurm.local STATE_DIR JOB_ID`) that waits for its
`--after` parents, runs the script (an array task by task) and records the outcome; cancel signals its process group.
The run's slurm_job_id tag gets the local id: the runner exports SLURM_JOB_ID (and SLURM_ARRAY_TASK_ID).
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from kdgat_core.config import KdgatError
from kdgat_core.slurm.resources import check
from kdgat_core.slurm.scheduler import ENDED_STATES, Job, shown_reason

LOCAL_PREFIX = "L"
POLL_SECONDS = 0.25
KILL_WAIT_SECONDS = 2.0


def now_iso() -> str:
    return datetime.now().isoformat(timespec="seconds")


def expand_array(spec: str) -> list[int]:
    """SLURM's array syntax (0-3, 1,2,3, 0-9:2, %N throttle ignored) to the list of task indices."""
    spec = spec.split("%", 1)[0]
    out: list[int] = []
    for part in spec.split(","):
        rng, _, step = part.partition(":")
        lo, _, hi = rng.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1, int(step or 1)))
    return out


def _elapsed(start: str, end: str) -> str:
    if not start:
        return "0:00"
    t0 = datetime.fromisoformat(start)
    t1 = datetime.fromisoformat(end) if end else datetime.now()
    secs = max(0, int((t1 - t0).total_seconds()))
    h, rem = divmod(secs, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
            return True
        except OSError:
            return False


def _process_start_epoch(pid: int) -> float | None:
    """When a process started (seconds since the epoch), from /proc; None where /proc cannot tell."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as fh:
            boot = next(int(line.split()[1]) for line in fh if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def run_process_gone(pid: object, host: object, started_ms: object = None) -> bool:
    """True when a run's process (its `pid` and `host` tags) is known to be gone: same host, and the pid is dead,
    a zombie, or now a process that started after the run did (pid reuse). Another host cannot tell: False."""
    import socket

    try:
        pid_int = int(str(pid))
    except (TypeError, ValueError):
        return False
    if pid_int <= 0 or not host or str(host) != socket.gethostname():
        return False
    if not _pid_alive(pid_int):
        return True
    began = _process_start_epoch(pid_int)
    try:
        run_start = float(str(started_ms)) / 1000 if started_ms is not None else None
    except ValueError:
        run_start = None
    # a process that began after the run started cannot be the one that started it (2 s: clock-tick rounding)
    return began is not None and run_start is not None and began > run_start + 2.0


class LocalScheduler:
    kind = "local"

    def __init__(self, state_dir: Path):
        self.state_dir = Path(state_dir)
        self.calls = {"squeue": 0, "sacct": 0}

    # --- records ------------------------------------------------------------------------------------------------
    def _path(self, job_id: str) -> Path:
        return self.state_dir / f"{job_id}.json"

    def read(self, job_id: str) -> dict[str, Any] | None:
        try:
            return json.loads(self._path(job_id).read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def write(self, record: dict[str, Any]) -> None:
        tmp = self._path(record["job_id"]).with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=1))
        tmp.replace(self._path(record["job_id"]))

    def _next_id(self) -> str:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.state_dir / "counter", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            fh.seek(0)
            n = int(fh.read().strip() or 0) + 1
            fh.seek(0)
            fh.truncate()
            fh.write(str(n))
        return f"{LOCAL_PREFIX}{n}"

    # --- the Scheduler interface --------------------------------------------------------------------------------
    def submit(
        self,
        script_path: Path,
        after: Iterable[str] = (),
        array: str | None = None,
        job_name: str | None = None,
        output: str | None = None,
        error: str | None = None,
    ) -> str:
        after = [check("dependency_id", a, "dependency") for a in after]
        for parent in after:
            if self.read(parent) is None:
                raise KdgatError(f"No local job {parent} to depend on.")
        job_id = self._next_id()
        tasks = expand_array(array) if array else [None]
        record = {
            "job_id": job_id,
            "name": job_name or script_path.stem,
            "script": str(script_path),
            "output": output or str(script_path.parent / "slurm-%j.out"),
            "error": error or str(script_path.parent / "slurm-%j.err"),
            "after": after,
            "array": array,
            "state": "PENDING",
            "reason": "Dependency" if after else "None",
            "submit_time": now_iso(),
            "start_time": "",
            "end_time": "",
            "exit_code": "",
            "pid": None,
            "tasks": [
                {"task": t, "state": "PENDING", "start_time": "", "end_time": "", "exit_code": ""} for t in tasks
            ],
        }
        self.write(record)
        # the runner records its own pid first thing, so this process never races it on the record
        subprocess.Popen(
            [sys.executable, "-m", "kdgat_core.slurm.local", str(self.state_dir), job_id],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
        )
        return job_id

    def jobs(self, refresh: bool = False) -> list[Job]:
        out: list[Job] = []
        if not self.state_dir.is_dir():
            return out
        for path in sorted(self.state_dir.glob(f"{LOCAL_PREFIX}*.json"), key=lambda p: int(p.stem[1:]), reverse=True):
            record = self.read(path.stem)
            if record is None:
                continue
            runner_gone = record["state"] not in ENDED_STATES and record.get("pid") and not _pid_alive(record["pid"])
            for task in record["tasks"]:
                state = task["state"]
                if runner_gone and state not in ENDED_STATES:
                    state = "NODE_FAIL"  # the runner died without recording an outcome (a reboot, a kill -9)
                task_id = record["job_id"] if task["task"] is None else f"{record['job_id']}_{task['task']}"
                out.append(
                    Job(
                        job_id=task_id,
                        raw_id=task_id,
                        name=record["name"],
                        state=state,
                        elapsed=_elapsed(task["start_time"], task["end_time"]),
                        node="localhost" if task["start_time"] else "",
                        reason=shown_reason(state, record["reason"], "localhost" if task["start_time"] else ""),
                        partition="local",
                        exit_code=task["exit_code"],
                        submit_time=record["submit_time"],
                        start_time=task["start_time"],
                        end_time=task["end_time"],
                        source="local",
                    )
                )
        return out

    def cancel(self, job_ids: Iterable[str]) -> None:
        for job_id in job_ids:
            base = job_id.split("_", 1)[0]
            record = self.read(base)
            if record is None:
                raise KdgatError(f"No local job {job_id}.")
            if record["state"] in ENDED_STATES:
                continue
            pid = record.get("pid")
            if pid is not None and _pid_alive(pid):
                try:
                    os.killpg(pid, signal.SIGTERM)  # the runner is a session leader: its group is the whole job
                except ProcessLookupError:
                    pass
                deadline = time.monotonic() + KILL_WAIT_SECONDS + 3
                while _pid_alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.05)
            record = self.read(base) or record
            if record["state"] not in ENDED_STATES:  # runner gone or not yet started: record it ourselves
                _finish_record(record, "CANCELLED", "0:15")
                self.write(record)

    def log_paths(self, job_id: str) -> tuple[str, str] | None:
        base, _, task = job_id.partition("_")
        record = self.read(base)
        if record is None:
            return None
        index = task or (record["tasks"][0]["task"] if record["array"] else None)
        return _fill(record["output"], base, index), _fill(record["error"], base, index)


def _fill(pattern: str, job_id: str, task: Any) -> str:
    unique = job_id if task is None else f"{job_id}_{task}"
    return pattern.replace("%A", job_id).replace("%a", "" if task is None else str(task)).replace("%j", unique)


def _finish_record(record: dict[str, Any], state: str, exit_code: str) -> None:
    record["state"] = state
    record["end_time"] = record["end_time"] or now_iso()
    for task in record["tasks"]:
        if task["state"] not in ENDED_STATES:
            task["state"] = state
            task["end_time"] = task["end_time"] or record["end_time"]
            task["exit_code"] = task["exit_code"] or exit_code


# --- the runner: one detached process per job -------------------------------------------------------------------------
def run_job(state_dir: Path, job_id: str) -> int:
    sched = LocalScheduler(state_dir)
    record = sched.read(job_id)
    if record is None or record["state"] in ENDED_STATES:  # cancelled before it started
        return 0
    record["pid"] = os.getpid()
    sched.write(record)
    child: list[subprocess.Popen[bytes]] = []
    cancelled = {"flag": False}

    def on_term(signum: int, frame: Any) -> None:
        cancelled["flag"] = True
        for proc in child:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_term)

    # wait for parents like afterok + kill-on-invalid-dep
    while record["after"]:
        states = [(sched.read(p) or {}).get("state", "UNKNOWN") for p in record["after"]]
        if cancelled["flag"]:
            break
        if all(s == "COMPLETED" for s in states):
            break
        if any((s in ENDED_STATES and s != "COMPLETED") or s == "UNKNOWN" for s in states):
            record = sched.read(job_id) or record
            record["reason"] = "DependencyNeverSatisfied"
            _finish_record(record, "CANCELLED", "0:0")
            sched.write(record)
            return 0
        time.sleep(POLL_SECONDS)
    if cancelled["flag"]:
        record = sched.read(job_id) or record
        _finish_record(record, "CANCELLED", "0:15")
        sched.write(record)
        return 0

    record = sched.read(job_id) or record
    record["state"], record["reason"], record["start_time"] = "RUNNING", "None", now_iso()
    sched.write(record)
    final = "COMPLETED"
    for _i, task in enumerate(record["tasks"]):
        if cancelled["flag"]:
            task.update(state="CANCELLED", end_time=now_iso(), exit_code="0:15")
            final = "CANCELLED"
            continue
        index = task["task"]
        unique = job_id if index is None else f"{job_id}_{index}"
        env = dict(os.environ, SLURM_JOB_ID=unique, SLURM_JOB_NAME=record["name"], KDGAT_EXECUTOR="local")
        if index is not None:
            env.update(SLURM_ARRAY_JOB_ID=job_id, SLURM_ARRAY_TASK_ID=str(index))
        out_path, err_path = _fill(record["output"], job_id, index), _fill(record["error"], job_id, index)
        Path(out_path).parent.mkdir(parents=True, exist_ok=True)
        task.update(state="RUNNING", start_time=now_iso())
        sched.write(record)
        with open(out_path, "ab") as out, open(err_path, "ab") as err:
            proc = subprocess.Popen(
                ["bash", record["script"]], stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env
            )
            child[:] = [proc]
            if cancelled["flag"]:
                proc.send_signal(signal.SIGTERM)
            code = proc.wait()
        if cancelled["flag"]:
            state, exit_code = "CANCELLED", "0:15"
        elif code == 0:
            state, exit_code = "COMPLETED", "0:0"
        else:
            state, exit_code = "FAILED", f"{code}:0" if code > 0 else f"0:{-code}"
        task.update(state=state, end_time=now_iso(), exit_code=exit_code)
        if state != "COMPLETED" and final == "COMPLETED":
            final = state
        sched.write(record)
    record["state"], record["end_time"] = final, now_iso()
    record["exit_code"] = next((t["exit_code"] for t in record["tasks"] if t["state"] != "COMPLETED"), "0:0")
    sched.write(record)
    return 0


if __name__ == "__main__":
    sys.exit(run_job(Path(sys.argv[1]), sys.argv[2]))
