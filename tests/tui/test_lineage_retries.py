"""Retries in lineage: runs written by kdgat's own writer (open_run, MLflow's client) with the retry_of tag set the
way a resubmitted job sets it (KDGAT_RETRY_OF in its environment); `kdgat lineage`, the notebook API and the TUI's
lineage tree each show a retry under the run it retries, chains in order."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from textual.widgets import Tree

from kdgat_core.config import RETRY_MARK
from kdgat_core.query import open_db
from kdgat_tui.app import KdgatApp
from kdgat_tui.screens.lineage import LineageScreen
from tests.tui.conftest import wait_for

REPO = Path(__file__).resolve().parents[2]

# A curriculum teacher that fails twice (the second a retry of the first) and completes on its third try; a KD student
# that fails and completes on its retry; and a run retrying a job that died before it opened a run.
WRITE = textwrap.dedent("""
    import json, os, sys
    from kdgat_core.config import ENV_RETRY_OF, preset
    from kdgat_core.tracking import open_run

    uri, ids = sys.argv[1], {}

    def run(key, spec, retry_of=None, fail=None, f1=None, teacher=None):
        os.environ.pop(ENV_RETRY_OF, None)
        if retry_of:
            os.environ[ENV_RETRY_OF] = retry_of  # what `kdgat resubmit` exports to the retried job
        cfg = preset(spec, dataset="synthetic")
        if teacher:
            cfg.kd.enabled, cfg.kd.teacher_run_id = True, teacher
        try:
            with open_run(cfg, tracking_uri=uri) as r:
                ids[key] = r.run_id
                if fail:
                    raise RuntimeError(fail)
                r.log_final({"f1": f1})
        except RuntimeError:
            pass

    run("first", "gat,teacher", fail="CUDA out of memory")
    run("second", "gat,teacher", retry_of=ids["first"], fail="loss is nan")
    run("third", "gat,teacher", retry_of=ids["second"], f1=0.93)
    run("student", "gat,student", fail="disk full", teacher=ids["third"])
    run("student_retry", "gat,student", retry_of=ids["student"], f1=0.88, teacher=ids["third"])
    run("after_job", "gat,teacher", retry_of="job 4242", f1=0.9)
    print(json.dumps(ids))
""")


@pytest.fixture(scope="module")
def retried(tmp_path_factory) -> tuple[str, dict[str, str]]:
    """(uri, {key: run id}) of a store holding the runs above, written in a subprocess (this one never loads mlflow)."""
    folder = tmp_path_factory.mktemp("retries")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    proc = subprocess.run(
        [sys.executable, "-c", WRITE, uri], capture_output=True, text=True, cwd=folder, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return uri, json.loads(proc.stdout.strip().splitlines()[-1])


def _kdgat(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in __import__("os").environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["KDGAT_CACHE_DIR"] = str(cache)
    return subprocess.run(
        [sys.executable, "-m", "kdgat_core.cli", *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=120
    )


def test_notebook_api_gives_chains_in_order(retried):
    uri, ids = retried
    with open_db(uri) as db:
        chains = db.retries(arrow=True).to_pylist()
        assert [(r["retry_of"], r["run_id"], r["attempt"]) for r in chains if r["chain_root"] == ids["first"]] == [
            (ids["first"], ids["second"], 1),
            (ids["second"], ids["third"], 2),
        ]
        assert [r["status"] for r in chains if r["chain_root"] == ids["first"]] == ["failed", "complete"]
        assert {r["chain_root"] for r in chains} == {ids["first"], ids["student"], "job 4242"}
        # a run anywhere in a chain selects the whole chain
        around = db.retries(run=ids["second"], arrow=True).to_pylist()
        assert [r["run_id"] for r in around] == [ids["second"], ids["third"]]
        # the KD edge says its student is a retry
        kd = db.lineage(arrow=True).to_pylist()
        assert [(r["student_run_id"], r["retry_of"]) for r in kd if r["student_run_id"] == ids["student_retry"]] == [
            (ids["student_retry"], ids["student"])
        ]


def test_cli_tree_shows_each_retry_under_the_run_it_retries(retried, tmp_path):
    uri, ids = retried
    res = _kdgat("lineage", "-u", uri, cache=tmp_path)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()

    def line_of(run_id: str, retry: bool) -> int:
        hits = [i for i, line in enumerate(lines) if f"{run_id[:8]}  " in line and (RETRY_MARK in line) == retry]
        assert hits, f"{run_id[:8]} not in:\n{res.stdout}"
        return hits[-1]

    def depth(i: int) -> int:
        return len(lines[i]) - len(lines[i].lstrip("│ ├└─"))

    first, second, third = line_of(ids["first"], False), line_of(ids["second"], True), line_of(ids["third"], True)
    assert first < second < third and depth(first) < depth(second) < depth(third)  # a chain, in order, nested
    assert f"↻ retry of {ids['first'][:8]}" in lines[second] and "failed" in lines[second]
    assert (
        f"↻ retry of {ids['second'][:8]}" in lines[third] and "complete" in lines[third] and "f1=0.9300" in lines[third]
    )
    job = next(i for i, line in enumerate(lines) if "job 4242 (it died before opening a run)" in line)
    assert "↻ retry of job 4242" in lines[job + 1] and ids["after_job"][:8] in lines[job + 1]
    # in the teacher -> student tree, the KD student's retry is marked as one
    kd_line = next(line for line in lines if ids["student_retry"][:8] in line and "delta=" in line)
    assert f"↻ retry of {ids['student'][:8]}" in kd_line

    # the run filter keeps a lone chain (no teacher, no students) instead of refusing it
    res = _kdgat("lineage", ids["first"], "-u", uri, cache=tmp_path)
    assert res.returncode == 0, res.stderr
    assert ids["third"][:8] in res.stdout and ids["after_job"][:8] not in res.stdout

    flat = list(csv.DictReader(io.StringIO(_kdgat("lineage", "-u", uri, "-f", "csv", cache=tmp_path).stdout)))
    links = {(r["link"], r["teacher_run_id"], r["student_run_id"], r["attempt"]) for r in flat}
    assert ("retry", ids["second"], ids["third"], "2") in links and ("kd", ids["third"], ids["student"], "") in links


@pytest.mark.anyio
async def test_tui_lineage_tree_nests_retries(retried):
    uri, ids = retried
    app = KdgatApp(tracking_uri=uri, refresh_s=0)
    async with app.run_test(size=(180, 50)) as pilot:
        app.open_lineage(run_id=ids["second"])
        await wait_for(
            pilot,
            lambda: isinstance(app.screen, LineageScreen) and any(app.screen.query("#lineage-tree")),
            what="lineage",
        )
        tree = app.screen.query_one("#lineage-tree", Tree)
        await wait_for(pilot, lambda: len(tree.root.children) > 0, what="the lineage tree")
        await pilot.pause()

        roots = [n for n in _walk(tree.root) if n.data == ids["first"] and RETRY_MARK not in str(n.label)]
        assert len(roots) == 1, "the first failed run heads its chain of retries"
        chain_root = roots[0]
        second = [n for n in chain_root.children if n.data == ids["second"]]
        assert second and f"↻ retry of {ids['first'][:8]}" in str(second[0].label)
        third = [n for n in second[0].children if n.data == ids["third"]]
        assert third and "complete" in str(third[0].label)
        # the cursor starts on the run the user came from
        assert tree.cursor_node is not None and tree.cursor_node.data == ids["second"]
        # the KD student that is a retry says so in the teacher -> student tree
        kd_leaf = [n for n in _walk(tree.root) if n.data == ids["student_retry"] and "Δ" in str(n.label)]
        assert kd_leaf and f"↻ retry of {ids['student'][:8]}" in str(kd_leaf[0].label)
        # enter opens the retry's run
        tree.move_cursor(third[0])
        await pilot.press("enter")
        await wait_for(pilot, lambda: not isinstance(app.screen, LineageScreen), what="the run detail")
        assert ids["third"] in str(getattr(app.screen, "run_id", ""))


def _walk(node):
    yield node
    for child in node.children:
        yield from _walk(child)
