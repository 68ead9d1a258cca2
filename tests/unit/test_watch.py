"""`kdgat watch`: rules and sinks from kdgat.toml, a real MLflow store (written by MLflow's client in another process),
a real HTTP server on 127.0.0.1 for the webhook, a real shell command; no alert twice, across restarts; a locked
tracking DB and a machine without a scheduler are survived."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from tests.conftest import require
from tests.unit.conftest import run_python

KDGAT = str(Path(sys.executable).parent / "kdgat")

ADD_RUNS = textwrap.dedent(r"""
    import sys
    from mlflow import MlflowClient
    from mlflow.entities import Metric, RunTag
    from kdgat_core import config as C
    client = MlflowClient("sqlite:///" + sys.argv[1])
    exp = client.get_experiment_by_name(C.EXPERIMENT_NAME)
    exp = exp.experiment_id if exp else client.create_experiment(C.EXPERIMENT_NAME)
    for spec in sys.argv[2:]:
        name, status, f1, loss = spec.split(":")
        r = client.create_run(exp, run_name=name)
        client.log_batch(r.info.run_id, metrics=[Metric("f1", float(f1), 0, 0), Metric("train_loss", float(loss), 0, 1)],
                         tags=[RunTag(C.Tag.STATUS.value, status), RunTag(C.Tag.RUN_ID.value, r.info.run_id)])
""")


class Hook(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Hook.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def webhook():
    Hook.received = []
    server = HTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", Hook.received
    server.shutdown()
    server.server_close()


def watch(project: Path, path_dir: Path, **env_vars: str) -> subprocess.CompletedProcess[str]:
    # no sbatch on PATH (unless path_dir has one): this machine has no scheduler (the store alone is watched)
    # and nothing another test left in the environment chooses the store, the cache or the scheduler for it
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("KDGAT_", "MLFLOW_", "SLURM_"))}
    env = {**keep, "PATH": f"{path_dir}:{Path(sys.executable).parent}", "TMUX": "", **env_vars}
    return subprocess.run([KDGAT, "watch", "--once"], cwd=project, capture_output=True, text=True, timeout=180, env=env)


# A cluster whose controller and accounting daemon are down (nothing listens on port 9): SLURM's real clients refuse
# at once with "Connection refused".
DOWN_CLUSTER = """ClusterName=down
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=9
AuthType=auth/munge
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=9
NodeName=localhost CPUs=1
PartitionName=debug Nodes=localhost Default=YES
"""


def test_watch_says_once_that_the_scheduler_does_not_answer_and_alerts_from_the_runs(tmp_path):
    import shutil

    from tests.conftest import require

    require(shutil.which("sacct") is not None and shutil.which("sbatch") is not None, "SLURM's clients are missing")
    (tmp_path / "kdgat.toml").write_text('[tracking]\nuri = "mlflow.db"\n')
    (tmp_path / "slurm.conf").write_text(DOWN_CLUSTER)
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("sacct", "sbatch"):
        (tools / tool).symlink_to(str(shutil.which(tool)))
    down = {"SLURM_CONF": str(tmp_path / "slurm.conf")}
    run_python(ADD_RUNS, str(tmp_path / "mlflow.db"), "b/teacher_fusion:complete:0.97:0.1")
    state = tmp_path / "experimentruns" / ".watch_state.json"
    state.parent.mkdir()
    state.write_text('{"seen": []}')  # a watcher that has run before: what the store shows now is news
    second = watch(tmp_path, tools, **down)
    assert second.returncode == 0 and "Traceback" not in second.stderr, second.stderr
    assert "the scheduler does not answer (sacct could not read the job accounting" in second.stderr, second.stderr
    assert "b/teacher_fusion finished" in second.stdout  # the runs are still watched
    assert second.stderr.count("does not answer") == 1  # one sentence per check, not one per rule


def test_watch_alerts_each_new_event_once_through_every_sink_and_survives_a_locked_db(tmp_path, webhook):
    url, received = webhook
    db = tmp_path / "mlflow.db"
    (tmp_path / "kdgat.toml").write_text(
        textwrap.dedent(f"""\
        [tracking]
        uri = "mlflow.db"
        [watch]
        webhook = "{url}"
        command = "cat >> {tmp_path / "events.jsonl"}; echo >> {tmp_path / "events.jsonl"}"
        [[watch.metric]]
        name = "f1"
        above = 0.9
    """)
    )
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("sh", "cat", "echo"):
        (tools / tool).symlink_to(subprocess.run(["which", tool], capture_output=True, text=True).stdout.strip())
    run_python(ADD_RUNS, str(db), "old/teacher_curriculum:complete:0.95:0.5")

    first = watch(tmp_path, tools)
    assert first.returncode == 0 and "alerts start now" in first.stderr
    assert received == [] and first.stdout == ""  # what happened before the watcher started is not news

    run_python(ADD_RUNS, str(db), "a/student_curriculum:failed:0.5:nan", "b/teacher_fusion:complete:0.97:0.1")
    second = watch(tmp_path, tools)
    assert second.returncode == 0, second.stderr
    kinds = sorted((e["kind"], e["run_name"]) for e in received)
    assert kinds == [
        ("metric", "b/teacher_fusion"),
        ("nan_loss", "a/student_curriculum"),
        ("stage_finished", "b/teacher_fusion"),
    ], f"watch said:\n{second.stdout}\n{second.stderr}"  # once seen empty under load: keep what the watcher said
    assert "b/teacher_fusion" in second.stdout and "train_loss is NaN" in second.stdout
    lines = [json.loads(x) for x in (tmp_path / "events.jsonl").read_text().splitlines() if x.strip()]
    assert sorted(e["key"] for e in lines) == sorted(e["key"] for e in received)  # the command got the same events

    again = watch(tmp_path, tools)  # a restart: the state file remembers what was alerted
    assert again.returncode == 0 and again.stdout == "" and len(received) == 3

    lock = sqlite3.connect(db, timeout=1)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        locked = watch(tmp_path, tools)
    finally:
        lock.rollback()
        lock.close()
    assert locked.returncode == 0 and "cannot read the tracking DB" in locked.stderr
    assert "Traceback" not in locked.stderr and len(received) == 3


def test_watch_inside_tmux_puts_the_alert_on_the_status_line_of_the_attached_client(tmp_path):
    """The tmux sink as a user sees it: `kdgat watch` in one session of a private tmux server, a client attached to that
    session (itself running in a second session's pane, so the test can read its screen), the alert on its status line."""
    require(subprocess.run(["which", "tmux"], capture_output=True).returncode == 0, "tmux is not installed")
    db = tmp_path / "mlflow.db"
    (tmp_path / "kdgat.toml").write_text('[tracking]\nuri = "mlflow.db"\n[watch]\nterminal = false\n')
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("sh", "tmux", "env"):
        (tools / tool).symlink_to(subprocess.run(["which", tool], capture_output=True, text=True).stdout.strip())
    run_python(ADD_RUNS, str(db), "old/teacher_curriculum:complete:0.95:0.5")
    assert watch(tmp_path, tools).returncode == 0  # the first watch only starts the clock
    run_python(ADD_RUNS, str(db), "tmuxed/student_curriculum:failed:0.5:nan")

    keep = {k: v for k, v in os.environ.items() if not k.startswith(("KDGAT_", "MLFLOW_", "SLURM_", "TMUX"))}
    env = {**keep, "PATH": f"{tools}:{Path(sys.executable).parent}"}
    socket = f"kdgat-watch-test-{os.getpid()}"

    def tmux(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["tmux", "-L", socket, *args], capture_output=True, text=True, timeout=30, env=env)

    done = tmp_path / "exit_code"
    tmux("-f", "/dev/null", "new-session", "-d", "-s", "alerts", "-x", "120", "-y", "10", "sh")
    try:
        tmux("set-option", "-g", "display-time", "120000")  # the message stays until the test has read it
        tmux(
            "new-session",
            "-d",
            "-s",
            "viewer",
            "-x",
            "120",
            "-y",
            "10",
            f"env -u TMUX tmux -L {socket} attach -t alerts",
        )
        deadline = time.monotonic() + 30
        while "alerts" not in tmux("list-clients", "-F", "#{session_name}").stdout:
            assert time.monotonic() < deadline, "no client attached to the alerts session"
            time.sleep(0.2)
        tmux("send-keys", "-t", "alerts", f"cd {tmp_path} && {KDGAT} watch --once; echo $? > {done}", "Enter")
        deadline = time.monotonic() + 180
        while not (done.exists() and done.read_text().strip()):
            assert time.monotonic() < deadline, "kdgat watch did not finish inside tmux"
            time.sleep(0.5)
        assert done.read_text().strip() == "0"
        deadline = time.monotonic() + 10
        while "kdgat: " not in (shown := tmux("capture-pane", "-p", "-t", "viewer").stdout):
            assert time.monotonic() < deadline, f"no alert on the attached client's status line:\n{shown}"
            time.sleep(0.2)
        status = next(line for line in shown.splitlines() if "kdgat: " in line)
        assert "tmuxed/student_curriculum" in status
    finally:
        tmux("kill-server")
