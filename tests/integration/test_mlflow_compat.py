"""Users' own `mlflow.search_runs` snippets return the right runs, unchanged, on a DB that `kdgat run` wrote.

MLflow's client runs in this process against a private copy of the tiny pipeline DB; kdgat's reader (DuckDB) only
ever reads that copy from a `kdgat` subprocess, so no process opens the file through both SQLite copies.
Expected run ids and metric values come from the fixture: what each `kdgat run` printed when it finished.
"""

from __future__ import annotations

import json
import math

import pytest

from kdgat_core.config import EXPERIMENT_NAME, PIPELINE_ORDER, Metric, MlflowStatus, ModelSize, RunStatus, Stage, Tag

pytestmark = pytest.mark.slow

F1 = Metric.F1.value
TEACHER, STUDENT = ModelSize.TEACHER.value, ModelSize.STUDENT.value
EVALUATION = Stage.EVALUATION.value


@pytest.fixture(scope="module")
def mlflow_on_copy(tiny_pipeline_db, tmp_path_factory):
    """`mlflow` with its tracking URI on a copy of the tiny pipeline DB (restored afterwards), and the experiment id."""
    import mlflow
    from mlflow.tracking._tracking_service import utils as tracking_utils

    copy = tiny_pipeline_db.copy_db(tmp_path_factory.mktemp("mlflow_compat"))
    uri = f"sqlite:///{copy}"
    previous = tracking_utils._tracking_uri
    mlflow.set_tracking_uri(uri)
    try:
        experiment = mlflow.get_experiment_by_name(EXPERIMENT_NAME)
        assert experiment is not None, f"kdgat wrote no '{EXPERIMENT_NAME}' experiment"
        yield mlflow, [experiment.experiment_id], copy
    finally:
        mlflow.set_tracking_uri(previous)


def ids(df) -> set[str]:
    return set(df["run_id"])


def test_best_model_for_a_dataset(mlflow_on_copy, tiny_pipeline_db):
    mlflow, experiment_ids, _ = mlflow_on_copy
    best = mlflow.search_runs(
        experiment_ids=experiment_ids,
        filter_string="tags.dataset = 'synthetic' AND tags.stage = 'evaluation'",
        order_by=["metrics.f1 DESC"],
        max_results=1,
    )
    evaluations = {
        tiny_pipeline_db.run_id(size, EVALUATION, kd): tiny_pipeline_db.metrics[(size, EVALUATION, kd)][F1]
        for size, kd in ((TEACHER, False), (STUDENT, False), (STUDENT, True))
    }
    top_f1 = max(evaluations.values())
    assert len(best) == 1
    row = best.iloc[0]
    assert row["metrics.f1"] == pytest.approx(top_f1, abs=1e-12)
    # tiny models can tie on f1; then any of the tied runs is a right answer
    assert row["run_id"] in {rid for rid, f1 in evaluations.items() if f1 == pytest.approx(top_f1, abs=1e-12)}
    assert row["tags.dataset"] == "synthetic" and row["tags.stage"] == EVALUATION


def test_kdgat_leaderboard_agrees_with_search_runs(mlflow_on_copy, tiny_pipeline_db):
    mlflow, experiment_ids, copy = mlflow_on_copy
    theirs = mlflow.search_runs(
        experiment_ids=experiment_ids,
        filter_string="tags.dataset = 'synthetic' AND tags.stage = 'evaluation'",
        order_by=["metrics.f1 DESC"],
    )
    proc = tiny_pipeline_db.kdgat(
        "leaderboard",
        "--dataset",
        "synthetic",
        "--stage",
        EVALUATION,
        "--metric",
        F1,
        "--format",
        "json",
        "--tracking-uri",
        f"sqlite:///{copy}",
        check=True,
    )
    ours = json.loads(proc.stdout)
    assert [r["rank"] for r in ours] == list(range(1, len(theirs) + 1))
    assert {r["run_id"]: r[F1] for r in ours} == pytest.approx(dict(zip(theirs["run_id"], theirs["metrics.f1"])))
    assert [r[F1] for r in ours] == pytest.approx(list(theirs["metrics.f1"]))  # same order, ties aside
    assert ours[0][F1] == pytest.approx(theirs.iloc[0]["metrics.f1"])
    if len(theirs) < 2 or theirs.iloc[0]["metrics.f1"] != theirs.iloc[1]["metrics.f1"]:
        assert ours[0]["run_id"] == theirs.iloc[0]["run_id"]


def test_kd_and_non_kd_students(mlflow_on_copy, tiny_pipeline_db):
    mlflow, experiment_ids, _ = mlflow_on_copy
    kd = mlflow.search_runs(
        experiment_ids=experiment_ids, filter_string="tags.use_kd = 'True' AND tags.status = 'complete'"
    )
    plain = mlflow.search_runs(
        experiment_ids=experiment_ids, filter_string="tags.use_kd = 'False' AND tags.status = 'complete'"
    )
    p = tiny_pipeline_db
    assert ids(kd) == {p.run_id(STUDENT, s.value, True) for s in PIPELINE_ORDER}
    assert ids(plain) == {p.run_id(size, s.value) for size in (TEACHER, STUDENT) for s in PIPELINE_ORDER}
    assert p.failed_run_id not in ids(plain)
    assert set(kd["tags.model_size"]) == {STUDENT}
    assert (kd["status"] == MlflowStatus.FINISHED.value).all() and (
        plain["status"] == MlflowStatus.FINISHED.value
    ).all()


def test_failed_runs(mlflow_on_copy, tiny_pipeline_db):
    mlflow, experiment_ids, _ = mlflow_on_copy
    failed = mlflow.search_runs(experiment_ids=experiment_ids, filter_string="tags.status = 'failed'")
    assert list(failed["run_id"]) == [tiny_pipeline_db.failed_run_id]
    row = failed.iloc[0]
    assert row["status"] == MlflowStatus.FAILED.value
    assert row["tags.stage"] == Stage.CURRICULUM.value and row["tags.use_kd"] == "False"
    # the error a user sees in the DB is the sentence kdgat printed
    assert tiny_pipeline_db.failed_reason and tiny_pipeline_db.failed_reason in row[f"tags.{Tag.ERROR_MSG}"]
    assert row["end_time"] is not None


@pytest.mark.parametrize("stage", [s.value for s in PIPELINE_ORDER])
def test_lineage_from_a_kd_student_to_its_teacher(mlflow_on_copy, tiny_pipeline_db, stage):
    mlflow, experiment_ids, _ = mlflow_on_copy
    p = tiny_pipeline_db
    student_id = p.run_id(STUDENT, stage, True)
    students = mlflow.search_runs(experiment_ids=experiment_ids, filter_string=f"tags.run_id = '{student_id}'")
    assert list(students["run_id"]) == [student_id]
    student = students.iloc[0]
    teacher_id = student["tags.teacher_run_id"]
    assert teacher_id == p.run_id(TEACHER, stage)

    teachers = mlflow.search_runs(experiment_ids=experiment_ids, filter_string=f"tags.run_id = '{teacher_id}'")
    assert list(teachers["run_id"]) == [teacher_id]
    teacher = teachers.iloc[0]
    assert teacher["tags.model_size"] == TEACHER and teacher["tags.stage"] == stage

    assert F1 in p.metrics[(STUDENT, stage, True)] and F1 in p.metrics[(TEACHER, stage, False)], (
        "every stage reports f1"
    )
    delta = student["metrics.f1"] - teacher["metrics.f1"]
    expected = p.metrics[(STUDENT, stage, True)][F1] - p.metrics[(TEACHER, stage, False)][F1]
    assert not math.isnan(delta)
    assert delta == pytest.approx(expected, abs=1e-12)


def test_every_kdgat_run_is_visible_to_mlflow(mlflow_on_copy, tiny_pipeline_db):
    mlflow, experiment_ids, _ = mlflow_on_copy
    everything = mlflow.search_runs(experiment_ids=experiment_ids)
    assert ids(everything) == tiny_pipeline_db.complete_run_ids | {tiny_pipeline_db.failed_run_id}
    complete = everything[everything["tags.status"] == RunStatus.COMPLETE.value]
    for _, row in complete.iterrows():
        key = (row["tags.model_size"], row["tags.stage"], row["tags.use_kd"] == "True")
        assert row["run_id"] == tiny_pipeline_db.run_ids[key]
        reported = tiny_pipeline_db.metrics[key]
        for name, value in reported.items():
            assert row[f"metrics.{name}"] == pytest.approx(value, rel=1e-9, abs=1e-12, nan_ok=True), (key, name)
