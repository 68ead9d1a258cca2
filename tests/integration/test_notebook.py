"""notebooks/analytics.ipynb runs top to bottom (nbclient, a real ipykernel on this venv's Python) against the tiny
pipeline DB, and shows what a user should see: the evaluation runs, the leaderboard, teacher vs student deltas, a
metric curve and CSV exports. The committed notebook carries no outputs.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest

from kdgat_core.config import PIPELINE_ORDER, Metric, ModelSize, Stage

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "notebooks" / "analytics.ipynb"
# the brief: the notebook uses only the query API, pandas and matplotlib (plus the standard library)
ALLOWED_IMPORTS = {"kdgat_core.query", "pandas", "matplotlib", "matplotlib.pyplot", "os", "pathlib"}
CELL_TIMEOUT_S = 300
F1 = Metric.F1.value


def test_committed_notebook_has_no_outputs():
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code
    dirty = [i for i, c in enumerate(code) if c.outputs or c.execution_count is not None]
    assert not dirty, f"code cells {dirty} of {NOTEBOOK.name} carry outputs; clear them before committing"


def test_notebook_imports_only_the_query_api_pandas_and_matplotlib():
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    imported = set()
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for node in ast.walk(ast.parse(cell.source)):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                imported.add(node.module)
    assert "kdgat_core.query" in imported
    assert imported <= ALLOWED_IMPORTS, sorted(imported - ALLOWED_IMPORTS)


@pytest.fixture(scope="module")
def executed(tiny_pipeline_db, tmp_path_factory):
    """The notebook executed against the tiny pipeline DB: (notebook, export folder)."""
    import nbformat
    from nbclient import NotebookClient

    work = tmp_path_factory.mktemp("notebook")
    out = work / "exports"
    # a kernelspec naming this interpreter, so the kernel sees the same venv whatever else is installed
    spec = work / "jupyter" / "kernels" / "kdgat-tests"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "kdgat tests",
                "language": "python",
            }
        )
    )
    mp = pytest.MonkeyPatch()
    mp.setenv("JUPYTER_PATH", str(work / "jupyter"))
    mp.setenv("KDGAT_NOTEBOOK_DB", str(tiny_pipeline_db.db_path))
    mp.setenv("KDGAT_NOTEBOOK_OUT", str(out))
    mp.setenv("KDGAT_CACHE_DIR", str(work / "cache"))
    mp.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend shows the figure under its cell
    mp.delenv("KDGAT_NOTEBOOK_DATASET", raising=False)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    try:
        NotebookClient(
            nb,
            timeout=CELL_TIMEOUT_S,
            startup_timeout=120,
            kernel_name="kdgat-tests",
            resources={"metadata": {"path": str(work)}},
        ).execute()
    finally:
        mp.undo()
    return nb, out


def cell_text(nb, tag: str) -> str:
    """The text a user sees under the cell tagged `tag` (its plain-text results and printed output)."""
    cells = [c for c in nb.cells if tag in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"expected one cell tagged {tag!r}"
    parts = []
    for o in cells[0].outputs:
        assert o.output_type != "error", f"cell {tag!r} raised {o.get('ename')}: {o.get('evalue')}"
        parts.append(o.get("text") or o.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


def test_no_cell_raised(executed):
    nb, _ = executed
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors, [f"{e.ename}: {e.evalue}" for e in errors]
    assert all(c.execution_count for c in nb.cells if c.cell_type == "code")


def test_filtered_queries_show_the_runs(executed, tiny_pipeline_db):
    nb, _ = executed
    p = tiny_pipeline_db
    evaluations = cell_text(nb, "evaluations")
    for size, kd in (
        (ModelSize.TEACHER.value, False),
        (ModelSize.STUDENT.value, False),
        (ModelSize.STUDENT.value, True),
    ):
        assert p.run_id(size, Stage.EVALUATION.value, kd) in evaluations
    kd_students = cell_text(nb, "kd_students")
    for stage in PIPELINE_ORDER:
        assert f"synthetic/student_{stage}_kd" in kd_students
    assert "synthetic/teacher_" not in kd_students
    assert p.failed_run_id in cell_text(nb, "failed")
    assert "'synthetic'" in cell_text(nb, "dataset")


def test_leaderboard_csv_holds_the_evaluation_runs_best_first(executed, tiny_pipeline_db):
    import pandas as pd

    _, out = executed
    p = tiny_pipeline_db
    board = pd.read_csv(out / "leaderboard.csv")
    assert {"rank", "run_id", "run_name", "model_size", "use_kd", F1} <= set(board.columns)
    reported = {
        p.run_id(s, Stage.EVALUATION.value, kd): p.metrics[(s, Stage.EVALUATION.value, kd)][F1]
        for s, kd in (
            (ModelSize.TEACHER.value, False),
            (ModelSize.STUDENT.value, False),
            (ModelSize.STUDENT.value, True),
        )
    }
    assert set(board["run_id"]) == set(reported)
    assert list(board["rank"]) == [1, 2, 3]
    assert list(board[F1]) == pytest.approx(sorted(reported.values(), reverse=True))
    assert dict(zip(board["run_id"], board[F1])) == pytest.approx(reported)


def test_teacher_vs_student_deltas(executed, tiny_pipeline_db):
    import pandas as pd

    nb, out = executed
    p = tiny_pipeline_db
    table = pd.read_csv(out / "teacher_vs_student.csv").set_index("stage")
    assert list(table.index) == [s.value for s in PIPELINE_ORDER]
    for stage in table.index:
        teacher = p.metrics[(ModelSize.TEACHER.value, stage, False)][F1]
        student = p.metrics[(ModelSize.STUDENT.value, stage, False)][F1]
        kd = p.metrics[(ModelSize.STUDENT.value, stage, True)][F1]
        assert table.loc[stage, "teacher"] == pytest.approx(teacher)
        assert table.loc[stage, "delta_student"] == pytest.approx(student - teacher)
        assert table.loc[stage, "delta_student_kd"] == pytest.approx(kd - teacher)
    lineage = pd.read_csv(out / "lineage.csv")
    assert set(lineage["student_run_id"]) == {p.run_id(ModelSize.STUDENT.value, s.value, True) for s in PIPELINE_ORDER}
    assert set(lineage["teacher_run_id"]) == {p.run_id(ModelSize.TEACHER.value, s.value) for s in PIPELINE_ORDER}
    assert "delta_f1" in cell_text(nb, "lineage")


def test_metric_curve_plot_and_run_export(executed, tiny_pipeline_db):
    import pandas as pd

    nb, out = executed
    png = out / "curriculum_curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    curves = [c for c in nb.cells if "curves" in c.metadata.get("tags", [])][0]
    assert any("image/png" in o.get("data", {}) for o in curves.outputs), "the curve cell shows no figure"
    runs = pd.read_csv(out / "runs.csv")
    assert set(runs["run_id"]) == tiny_pipeline_db.complete_run_ids | {tiny_pipeline_db.failed_run_id}
