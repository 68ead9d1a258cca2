"""Efficiency, causes, failures and resubmission without a cluster: sacct's real output parsed, the `jobs` view over
a real MLflow store (written by MLflow's client in another process) and DuckDB, the advice, the resource adjustment."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from kdgat_core.config import FailureCause, retry_of_for_task, retry_of_value
from kdgat_core.query import open_db
from kdgat_core.query.jobs import advise, attach_jobs, efficiency_rows, failures, group_failures, toml_snippet
from kdgat_core.slurm.accounting import JobUsage, parse_sacct
from kdgat_core.slurm.resources import Resources
from kdgat_core.slurm.resubmit import FailedJob, adjusted
from kdgat_core.slurm.scheduler import _SEP
from tests.unit.conftest import run_python

# Lines `sacct -n -P -o <FIELDS>` printed on the local test cluster (22.05): an OverMemoryKill, a completed job,
# a time limit, a job cancelled while pending, an array task with a GPU; the last field of a step is TRESUsageInTot.
SACCT = [
    "1|1|oom.sh|FAILED|0:9|debug|vm|2026-12-03T12:01:38|2026-12-03T12:01:38|2026-12-03T12:01:40|2|2|1|00:00.004|100M||"
    "billing=1,cpu=1,mem=100M,node=1|",
    "1.batch|1.batch|batch|CANCELLED by 0|0:9||vm|2026-12-03T12:01:38|2026-12-03T12:01:38|2026-12-03T12:01:40|2||1|"
    "00:00.004||159392K|cpu=1,mem=100M,node=1|cpu=00:00:00,mem=159392K",
    "2|2|eff.sh|COMPLETED|0:0|debug|vm|2026-12-03T12:02:00|2026-12-03T12:02:00|2026-12-03T12:02:09|9|2|2|00:03.449|1G||"
    "billing=2,cpu=2,mem=1G,node=1|",
    "2.batch|2.batch|batch|COMPLETED|0:0||vm|2026-12-03T12:02:00|2026-12-03T12:02:00|2026-12-03T12:02:09|9||2|"
    "00:03.449||323528K|cpu=2,mem=1G,node=1|cpu=00:00:03,mem=323528K",
    "3|3|to.sh|TIMEOUT|0:0|debug|vm|2026-12-03T12:02:09|2026-12-03T12:02:09|2026-12-03T12:03:28|79|1|1|00:00.011|100M||"
    "billing=1,cpu=1,mem=100M,node=1|",
    "3.batch|3.batch|batch|CANCELLED|0:15||vm|2026-12-03T12:02:09|2026-12-03T12:02:09|2026-12-03T12:03:28|79||1|"
    "00:00.011||4680K|cpu=1,mem=100M,node=1|mem=4680K",
    "9|9|eff.sh|CANCELLED by 0|0:0|debug|None assigned|2026-12-03T12:03:09|None|2026-12-03T12:03:10|0|2|16|00:00:00|"
    "128G||billing=16,cpu=16,mem=128G,node=1|",
    "20_1|21|train|COMPLETED|0:0|gpu|vm|2026-12-03T12:04:00|2026-12-03T12:04:00|2026-12-03T12:14:00|600|60|4|"
    "00:20:00|8G||billing=4,cpu=4,gres/gpu=2,mem=8G,node=1|",
    "21.batch|21.batch|batch|COMPLETED|0:0||vm|2026-12-03T12:04:00|2026-12-03T12:04:00|2026-12-03T12:14:00|600||4|"
    "00:20:00||2G|cpu=4,gres/gpu=2,mem=8G,node=1|cpu=00:20:00,gres/gpuutil=50,mem=2G",
    "20_[2-3]|20|train|PENDING|0:0|gpu|None assigned|2026-12-03T12:04:00|Unknown|Unknown|0|60|4|00:00:00|8G||"
    "billing=4,cpu=4,mem=8G,node=1|",
]


def sacct_text() -> str:
    return "\n".join(line.replace("|", _SEP) for line in SACCT)


def test_sacct_rows_fold_steps_into_jobs_and_say_why_each_failed():
    jobs = {j.job_id: j for j in parse_sacct(sacct_text())}
    assert list(jobs) == ["1", "2", "3", "9", "20_1"]  # the pending range waits for squeue; steps are folded in
    oom, done, timeout, cancelled, task = (jobs[k] for k in ("1", "2", "3", "9", "20_1"))
    # OverMemoryKill: FAILED with signal 9 and a peak above the request, not OUT_OF_MEMORY
    assert (oom.job_cause, oom.req_mem_mb, round(oom.max_rss_mb)) == (FailureCause.OOM, 100, 156)
    assert done.job_cause == "" and done.mem_eff == pytest.approx(323528 / 1024 / 1024)
    assert done.cpu_eff == pytest.approx(3.449 / (9 * 2)) and done.time_eff == pytest.approx(9 / 120)
    assert timeout.job_cause == FailureCause.TIMEOUT and timeout.time_limit_s == 60
    assert (cancelled.job_cause, cancelled.cancelled_by, cancelled.cpu_eff) == (FailureCause.CANCELLED, "root", None)
    assert (task.raw_id, task.gpus, task.gpu_util, task.max_rss_mb) == ("21", 2, 0.25, 2048)


# GPU jobs as sacct prints them where the cluster gathers GPU usage (AcctGatherGpu via NVML:
# AccountingStorageTRES=gres/gpu,gres/gpumem,gres/gpuutil): a typed and a generic count in AllocTRES, gpumem and
# gpuutil (percent, summed over the step's GPUs) in TRESUsageInTot; then a job whose AllocTRES names only the GPU type,
# a node failure and a preemption.
SACCT_GPU = [
    "40|40|train|COMPLETED|0:0|gpu|gpu07|2026-12-03T09:00:00|2026-12-03T09:00:05|2026-12-03T10:00:05|3600|360|8|"
    "05:20:00|64G||billing=8,cpu=8,gres/gpu:a100=2,gres/gpu=2,mem=64G,node=1|",
    "40.batch|40.batch|batch|COMPLETED|0:0||gpu07|2026-12-03T09:00:05|2026-12-03T09:00:05|2026-12-03T10:00:05|3600||8|"
    "05:20:00||20480000K|cpu=8,gres/gpu:a100=2,gres/gpu=2,mem=64G,node=1|"
    "cpu=05:20:00,energy=0,fs/disk=40397700,gres/gpumem=12345M,gres/gpuutil=130,mem=20480000K,pages=0,vmem=21000000K",
    "40.extern|40.extern|extern|COMPLETED|0:0||gpu07|2026-12-03T09:00:05|2026-12-03T09:00:05|2026-12-03T10:00:05|3600||"
    "8|00:00:00||1000K|billing=8,cpu=8,gres/gpu:a100=2,gres/gpu=2,mem=64G,node=1|"
    "cpu=00:00:00,energy=0,fs/disk=2012,mem=1000K,pages=0,vmem=4000K",
    "41|41|eval|COMPLETED|0:0|gpu|gpu03|2026-12-03T09:00:00|2026-12-03T09:00:05|2026-12-03T09:10:05|600|120|4|"
    "00:09:00|16G||billing=4,cpu=4,gres/gpu:h100=1,mem=16G,node=1|",
    "41.batch|41.batch|batch|COMPLETED|0:0||gpu03|2026-12-03T09:00:05|2026-12-03T09:00:05|2026-12-03T09:10:05|600||4|"
    "00:09:00||3G|cpu=4,gres/gpu:h100=1,mem=16G,node=1|"
    "cpu=00:09:00,energy=0,fs/disk=1000,gres/gpumem=900M,gres/gpuutil=3,mem=3G,pages=0,vmem=3G",
    "42|42|train|NODE_FAIL|0:0|gpu|gpu09|2026-12-03T09:00:00|2026-12-03T09:00:05|2026-12-03T09:30:05|1800|360|8|"
    "00:00:00|64G||billing=8,cpu=8,gres/gpu=1,mem=64G,node=1|",
    "43|43|train|PREEMPTED|0:15|gpu|gpu09|2026-12-03T09:00:00|2026-12-03T09:00:05|2026-12-03T09:20:05|1200|360|8|"
    "00:00:00|64G||billing=8,cpu=8,gres/gpu=1,mem=64G,node=1|",
]


def test_gpu_use_comes_from_tres_usage_and_node_failures_and_preemptions_are_named():
    jobs = {j.job_id: j for j in parse_sacct("\n".join(line.replace("|", _SEP) for line in SACCT_GPU))}
    two, typed, lost, preempted = (jobs[k] for k in ("40", "41", "42", "43"))
    # gres/gpumem and gres/gpu:a100 are not counted as GPUs; 130 % over two GPUs is 65 % each
    assert (two.gpus, two.gpu_util, two.job_cause) == (2, pytest.approx(0.65), "")
    assert two.facts()["gpu_eff"] == pytest.approx(0.65) and two.max_rss_mb == pytest.approx(20480000 / 1024)
    assert (typed.gpus, typed.gpu_util) == (1, pytest.approx(0.03))  # only the typed count was given
    assert (lost.job_cause, preempted.job_cause) == (FailureCause.NODE_FAIL, FailureCause.PREEMPTED)
    assert lost.gpu_util is None  # nothing gathered: unknown, not zero
    # an idle GPU is advice to give it back
    rows = [dict(j.facts(), stage="evaluation", model_size="student", variant="", cause=j.job_cause) for j in [typed]]
    (advice,) = advise(rows)
    assert "1 GPU at 3% at most: run it on CPUs" in advice["advice"] and "gpus=0" in advice["suggested"]


def test_resources_after_an_oom_double_and_after_a_time_limit_double():
    res = Resources(time="1", mem="400M")
    assert adjusted(res, [FailedJob("5", FailureCause.OOM.value, max_rss_mb=410)]).mem == "1024M"
    assert adjusted(res, [FailedJob("5", FailureCause.OOM.value, max_rss_mb=2000)]).mem == "3G"  # 1.5 x the peak
    assert adjusted(res, [FailedJob("5", FailureCause.TIMEOUT.value)]).time == "00:02:00"
    assert adjusted(Resources(time="1-00:00:00"), [FailedJob("5", FailureCause.TIMEOUT.value)]).time == "2-00:00:00"
    same = adjusted(res, [FailedJob("5", FailureCause.EXCEPTION.value)])
    assert (same.mem, same.time) == ("400M", "1")


def test_an_array_retry_hands_each_task_the_run_it_retries():
    value = retry_of_value({"1": "abc", "3": "job 7_3"})
    assert (retry_of_for_task(value, "1"), retry_of_for_task(value, "3"), retry_of_for_task(value, "0")) == (
        "abc",
        "job 7_3",
        None,
    )
    assert retry_of_for_task(retry_of_value({"": "abc"}), None) == "abc"


# runs tagged with job ids: an exception, a NaN loss, a lost run (job killed for memory), a CUDA OOM without a job
WRITE_RUNS = textwrap.dedent(r"""
    import sys, json
    from mlflow import MlflowClient
    from mlflow.entities import Metric, RunTag
    from kdgat_core import config as C
    client = MlflowClient("sqlite:///" + sys.argv[1])
    exp = client.create_experiment(C.EXPERIMENT_NAME)
    ids = {}
    def run(key, job, status, error=None, loss=1.0):
        r = client.create_run(exp, run_name="synthetic/student_autoencoder")
        tags = {C.Tag.DATASET: "synthetic", C.Tag.STAGE: "autoencoder", C.Tag.MODEL_SIZE: "student",
                C.Tag.STATUS: status, C.Tag.RUN_ID: r.info.run_id}
        if job:
            tags[C.Tag.SLURM_JOB_ID] = job
        if error:
            tags[C.Tag.ERROR_MSG] = error
        client.log_batch(r.info.run_id, metrics=[Metric("train_loss", loss, 0, 1)],
                         tags=[RunTag(str(k), v) for k, v in tags.items()])
        ids[key] = r.info.run_id
    run("exception", "102", "failed", "ValueError: window larger than the capture")
    run("nan", "103", "failed", "RuntimeError: training diverged", loss=float("nan"))
    run("lost", "101", "running")
    run("done", "104", "complete")
    run("cuda", None, "failed", "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB")
    json.dump(ids, open(sys.argv[2], "w"))
""")


def fact(job: str, state: str, cause: str = "", **kw) -> dict:
    row = JobUsage(job_id=job, raw_id=job, name="synthetic/student_autoencoder", state=state, job_cause=cause).facts()
    row.update(dataset="synthetic", stage="autoencoder", model_size="student", variant="tiny", **kw)
    return row


@pytest.fixture(scope="module")
def jobs_db(tmp_path_factory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("jobs_view")
    run_python(WRITE_RUNS, str(folder / "mlflow.db"), str(folder / "ids.json"))
    return folder / "mlflow.db", json.loads((folder / "ids.json").read_text())


FACTS = [
    fact("101", "FAILED", "oom", req_mem_mb=400.0, max_rss_mb=410.0, elapsed_s=20, time_limit_s=1800, cpus=1),
    fact("102", "FAILED", "failed"),
    fact("103", "FAILED", "failed"),
    fact("104", "COMPLETED", req_mem_mb=3072.0, max_rss_mb=680.0, elapsed_s=60, time_limit_s=1800, cpus=1),
    fact("105", "TIMEOUT", "timeout", elapsed_s=70, time_limit_s=60, cpus=1),
    fact("106", "CANCELLED", "cancelled", cancelled_by="alice"),
]


def test_the_jobs_view_names_each_failures_cause_and_joins_with_runs(jobs_db):
    path, ids = jobs_db
    with open_db(path) as db:
        attach_jobs(db, FACTS)
        causes = {r["job_id"]: r["cause"] for r in db.sql("SELECT job_id, cause FROM jobs", arrow=True).to_pylist()}
        assert causes == {
            "101": "oom",
            "102": "exception",
            "103": "nan_loss",
            "104": None,
            "105": "timeout",
            "106": "cancelled",
        }
        joined = db.sql(
            "SELECT j.job_id, r.run_id, j.run_status FROM jobs j JOIN runs r USING (run_id) ORDER BY j.job_id",
            arrow=True,
        ).to_pylist()
        assert [(r["job_id"], r["run_id"], r["run_status"]) for r in joined] == [
            ("101", ids["lost"], "lost"),
            ("102", ids["exception"], "failed"),
            ("103", ids["nan"], "failed"),
            ("104", ids["done"], "complete"),
        ]
        rows = failures(db)
        eff = efficiency_rows(db)
    groups = {g.cause: g for g in group_failures(rows)}
    assert set(groups) == {
        "oom",
        "timeout",
        "cancelled",
        "nan_loss",
        "cuda_oom",
        "exception: ValueError",
    }
    assert groups["cancelled"].detail == "by alice"
    assert groups["exception: ValueError"].detail == "ValueError: window larger than the capture"
    assert groups["cuda_oom"].runs[0]["run_id"] == ids["cuda"]  # a run without a job is classified from its error
    advice = advise(eff)
    assert len(advice) == 1 and advice[0]["variant"] == "tiny"
    assert "1 ran out of memory: mem=1024M" in advice[0]["advice"]
    assert "1 hit the time limit: time=00:05:00" in advice[0]["advice"]


def test_advice_lowers_a_request_far_above_the_peak_and_the_toml_stores_it():
    rows = [
        {"stage": "curriculum", "model_size": "teacher", "variant": "", "state": "COMPLETED", "cause": None,
         "elapsed_s": 1800, "time_limit_s": 21600, "cpus": 16, "cpu_time_s": 1800 * 3.0, "req_mem_mb": 32768.0,
         "max_rss_mb": 3174.0 + i, "gpus": 1, "gpu_util": 0.6, "time_eff": 1 / 12, "cpu_eff": 3 / 16,
         "mem_eff": 0.1}
        for i in range(12)
    ]  # fmt: skip
    (row,) = advise(rows)
    assert row["advice"].startswith("asked 32.0G, peak 3.1G over 12 runs: --mem 4G would do")
    assert "--cpus-per-task 4" in row["advice"] and "--time 00:45:00" in row["advice"]
    assert toml_snippet([row]) == ('[cluster.resources.curriculum.teacher]\nmem = "4G"\ntime = "00:45:00"\ncpus = 4\n')


def test_the_stored_suggestion_is_what_the_next_job_of_that_stage_asks_for(tmp_path):
    from kdgat_core.config import load_settings, preset
    from kdgat_core.slurm.render import prepare_job

    rows = [
        {"stage": "curriculum", "model_size": "teacher", "variant": "", "state": "COMPLETED", "cause": None,
         "elapsed_s": 1800, "time_limit_s": 21600, "cpus": 16, "cpu_time_s": 1800 * 3.0, "req_mem_mb": 32768.0,
         "max_rss_mb": 3174.0, "gpus": 1, "gpu_util": 0.6, "time_eff": 1 / 12, "cpu_eff": 3 / 16, "mem_eff": 0.1}
    ]  # fmt: skip
    (tmp_path / "kdgat.toml").write_text('[cluster.resources]\npartition = "gpu"\n\n' + toml_snippet(advise(rows)))
    settings = load_settings(tmp_path)
    teacher = prepare_job(preset("gat,teacher", dataset="synthetic"), None, settings).resources
    assert (teacher.mem, teacher.time, teacher.cpus, teacher.gpus) == ("4G", "00:45:00", 4, 1)
    student = prepare_job(preset("gat,student", dataset="synthetic"), None, settings).resources
    assert (student.mem, student.cpus) == ("128G", 16)  # another size of the stage keeps its own request


def test_failures_on_a_machine_without_slurm_come_from_the_runs_alone(jobs_db, tmp_path):
    import os
    import subprocess
    import sys

    path, ids = jobs_db
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}  # no sacct, no sbatch
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "kdgat"), "failures", "-u", str(path), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    causes = {r["run_id"]: r["cause"] for r in json.loads(proc.stdout)}
    assert causes == {ids["cuda"]: "cuda_oom", ids["exception"]: "exception", ids["nan"]: "nan_loss"}
