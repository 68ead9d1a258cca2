"""The query layer's views and methods, cross-checked against what MLflow itself answers on the same DB."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from kdgat_core.config import KdgatError
from kdgat_core.query import open_db
from kdgat_core.query.wide import METRIC_COLUMNS, TAG_COLUMNS

pytestmark = pytest.mark.usefixtures("query_cache_dir")


def _ms(value) -> int | None:
    if value is None or value in ("NaN", "NaT"):
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return round(value.timestamp() * 1000)


def _same(mine, theirs) -> bool:
    """MLflow's DataFrame shows a missing value as NaN (dumped as "NaN"); so are real NaN metrics."""
    if theirs == "NaN":
        return mine is None or (isinstance(mine, float) and math.isnan(mine))
    if theirs in ("inf", "-inf"):
        return mine == float(theirs)
    if isinstance(theirs, float) and abs(theirs) == 1.7976931348623157e308:  # MLflow's storage of +-inf, undecoded
        return mine == math.copysign(math.inf, theirs)
    return mine == theirs


@pytest.fixture
def fixture_db(store_db):
    """Every test here runs on SQLite and on PostgreSQL (the same content, written by MLflow's client)."""
    return store_db


@pytest.fixture
def mlflow_answers(store_answers):
    return store_answers


@pytest.fixture
def db(fixture_db):
    with open_db(fixture_db[0]) as handle:
        yield handle


def test_wide_table_equals_mlflow_search_runs(fixture_db, mlflow_answers):
    with open_db(fixture_db[0], cache=False) as db:
        mine = db.wide(arrow=True).to_pylist()
    theirs = mlflow_answers["all"]
    assert [r["run_id"] for r in mine] == [r["run_id"] for r in theirs]  # same runs, same order
    assert len(mine) == 18
    for m, t in zip(mine, theirs):
        assert m["mlflow_status"] == t["status"]
        assert _ms(m["start_time"]) == _ms(t["start_time"]) and _ms(m["end_time"]) == _ms(t["end_time"])
        for key, value in t.items():
            if key.startswith("metrics."):
                name = key[len("metrics.") :]
                col = name if name in METRIC_COLUMNS else key
            elif key.startswith("tags."):
                name = key[len("tags.") :]
                col = name if name in TAG_COLUMNS else key
            elif key.startswith("params."):
                col = key
            else:
                continue
            assert col in m, f"{key} has no column"
            assert _same(m[col], value), f"{m['run_name']} {key}: kdgat {m[col]!r} vs MLflow {value!r}"
    dynamic = {c for c in mine[0] if c.startswith(("metrics.", "params.", "tags."))}
    assert dynamic <= set(theirs[0]), "kdgat invented columns MLflow does not have"


@pytest.mark.parametrize("path", ["sqlite", "wide in memory", "fresh cache file"])
def test_leaderboard_equals_mlflow_order_by(fixture_db, mlflow_answers, path):
    ref = [r for r in mlflow_answers["leaderboard"] if r["metrics.f1"] != "NaN"]
    if path == "sqlite":
        db = open_db(fixture_db[0], cache=False)
    else:
        with open_db(fixture_db[0]) as warm:
            warm.wide(arrow=True)  # writes the cache file
        db = open_db(fixture_db[0])
        if path == "wide in memory":
            db.wide(arrow=True)
    with db:
        board = db.leaderboard("f1", top=10, dataset="hcrl_sa", stage="evaluation", arrow=True).to_pylist()
    assert [r["run_id"] for r in board] == [r["run_id"] for r in ref]
    assert [r["f1"] for r in board] == [r["metrics.f1"] for r in ref]
    assert [r["rank"] for r in board] == list(range(1, len(ref) + 1))


def test_leaderboard_paths_agree_on_every_filter(fixture_db, monkeypatch):
    """Three sources, one answer: the indexed join inside the store, the wide table in memory, and the read cache's
    board file, sorted by the filter columns in row groups that a filter skips by their statistics (3 runs a group
    here, so a skip that dropped a matching run would show). A current board answers with the store only asked
    whether it changed: no Reader (schema checks, views) is opened."""
    import kdgat_core.query.wide as wide

    monkeypatch.setattr(wide, "BOARD_ROW_GROUP", 3)
    with open_db(fixture_db[0]) as first:
        first.wide(arrow=True)  # writes the cache, board file included (waited for on close)
    with (
        open_db(fixture_db[0], cache=False) as native,
        open_db(fixture_db[0]) as cached,
        open_db(fixture_db[0]) as board,
    ):
        cached.wide(arrow=True)
        for kw in (
            {},
            {"metric": "val_loss"},
            {"metric": "fpr", "top": 3},
            {"kd": True},
            {"kd": False, "top": 50},
            {"status": "complete", "model_size": "student"},
            {"metric": "auc"},
            {"metric": "test_01_known_vehicle_known_attack/f1"},
            {"dataset": "hcrl_sa", "stage": "evaluation", "top": 50},
            {"dataset": "hcrl_ch", "top": 50},
            {"stage": "curriculum", "model_size": "teacher", "kd": False},
        ):
            a, b, c = (
                [(r["run_id"], repr(r[kw.get("metric", "f1")])) for r in db.leaderboard(**kw, arrow=True).to_pylist()]
                for db in (native, cached, board)
            )
            assert a == b == c, kw
            assert (native.last_board_source, cached.last_board_source, board.last_board_source) == (
                "store",
                "wide",
                "cache",
            )
        assert board._reader_obj is None, "a current read cache answers without opening the Reader"


def test_lower_is_better_sorts_ascending_and_inf_nan_last(db):
    board = db.leaderboard("val_loss", top=50, arrow=True).to_pylist()
    values = [r["val_loss"] for r in board]
    assert values[0] == 0.2 and values[-1] == math.inf
    assert values == sorted(values)
    auc = db.leaderboard("auc", top=50, arrow=True).to_pylist()
    assert [r["auc"] for r in auc][:2] == [0.97, 0.96] and math.isnan(auc[-1]["auc"])


def test_filters_equal_mlflow_filter_strings(db, mlflow_answers):
    assert db.runs(status="failed").run_id.tolist() == [r["run_id"] for r in mlflow_answers["failed"]]
    assert db.runs(kd=True, status="complete").run_id.tolist() == [r["run_id"] for r in mlflow_answers["kd"]]


def test_runs_view_works_as_written_in_kdgat_query(db, mlflow_answers):
    got = db.sql("SELECT * FROM runs WHERE dataset = 'hcrl_sa'")
    want = [r["run_id"] for r in mlflow_answers["all"] if r.get("tags.dataset") == "hcrl_sa"]
    assert sorted(got.run_id) == sorted(want)
    assert list(got.columns[:9]) == [
        "run_id",
        "run_name",
        "experiment_id",
        "experiment",
        "mlflow_status",
        "lifecycle",
        "start_time",
        "end_time",
        "duration_s",
    ]
    assert {"dataset", "stage", "model_size", "use_kd", "teacher_run_id", "status", "f1", "precision_"} <= set(
        got.columns
    )


def test_params_tags_metrics_views(db, fixture_db, mlflow_answers):
    ids = fixture_db[1]
    tid = ids["hcrl_sa/teacher_curriculum"]
    lr = db.sql(f"SELECT value FROM params WHERE run_id = '{tid}' AND key = 'train.lr'").value.tolist()
    ref = next(r for r in mlflow_answers["all"] if r["run_id"] == tid)
    assert lr == [ref["params.train.lr"]]
    assert db.sql(f"SELECT value FROM tags WHERE run_id = '{tid}' AND key = 'stage'").value.tolist() == ["curriculum"]
    sid = ids["hcrl_sa/student_evaluation"]
    special = db.sql(
        f"SELECT key, value FROM metrics WHERE run_id = '{sid}' AND key IN ('auc', 'val_loss') ORDER BY key"
    )
    assert math.isnan(special.value[0]) and special.value[1] == math.inf
    # deleted runs and runs of deleted experiments are in no view
    hidden = (ids["deleted_run"], ids["in_deleted_experiment"])
    for view in ("runs", "params", "tags", "metrics", "metric_history"):
        assert db.sql(f"SELECT count(*) AS n FROM {view} WHERE run_id IN {hidden}").n[0] == 0, view


def test_metric_history_keeps_newest_point_per_step(db, fixture_db):
    tid = fixture_db[1]["hcrl_sa/teacher_curriculum"]
    view = db.sql(f"SELECT step, value FROM metric_history WHERE run_id = '{tid}' AND key = 'val_loss' ORDER BY step")
    assert view.values.tolist() == [[1, 0.6], [2, 0.4], [3, 0.2]]
    hist = db.history("hcrl_sa/teacher_curriculum", "val_loss", arrow=True)
    assert hist["step"].to_pylist() == [1, 2, 3] and hist["value"].to_pylist() == [0.6, 0.4, 0.2]
    assert db.history(tid[:10], "train_loss")["value"].tolist() == [1.0, 0.5, 1 / 3, 0.25, 0.2]


def test_include_deleted(fixture_db):
    ids = fixture_db[1]
    with open_db(fixture_db[0], include_deleted=True) as db:
        runs = db.runs()
        assert {ids["deleted_run"], ids["in_deleted_experiment"]} <= set(runs.run_id)
        assert set(runs[runs.run_id.isin([ids["deleted_run"], ids["in_deleted_experiment"]])].lifecycle) == {"deleted"}
        assert db.leaderboard("f1", top=1).f1[0] == 0.999
    with open_db(fixture_db[0]) as db:
        assert db.leaderboard("f1", top=1).f1[0] == 0.95
        assert len(db.runs(include_deleted=True)) == 20


def test_lineage(db, fixture_db):
    ids = fixture_db[1]
    edges = db.lineage(dataset="hcrl_sa")
    assert len(edges) == 4
    cur = edges[edges.stage == "curriculum"].iloc[0]
    assert (cur.teacher_run_id, cur.student_run_id) == (
        ids["hcrl_sa/teacher_curriculum"],
        ids["hcrl_sa/student_curriculum_kd"],
    )
    assert cur.delta_f1 == pytest.approx(0.89 - 0.91)
    around = db.lineage(run="hcrl_sa/teacher_evaluation" if False else ids["eval_seed0"])
    assert around.student_name.tolist() == ["hcrl_sa/student_evaluation_kd"]
    assert db.sql("SELECT count(*) AS n FROM lineage").n[0] == 4
    with pytest.raises(KdgatError, match="no teacher and no students"):
        db.lineage(run="hcrl_ch/teacher_curriculum")


def test_compare_and_config_diff(db):
    c = db.compare("hcrl_sa/teacher_curriculum", "hcrl_sa/student_curriculum_kd").set_index("metric")
    assert c.loc["f1", "a"] == 0.91 and c.loc["f1", "b"] == 0.89
    assert c.loc["f1", "delta"] == pytest.approx(-0.02) and c.loc["f1", "better"] == "a"
    lossy = db.compare("hcrl_sa/student_curriculum", "hcrl_sa/teacher_curriculum").set_index("metric")
    assert lossy.loc["val_loss", "better"] == "b"  # 0.20 < 0.28: lower is better
    d = db.config_diff(["hcrl_sa/teacher_curriculum", "hcrl_sa/student_curriculum"])
    assert d.key.tolist() == ["gat.heads", "gat.hidden", "gat.layers", "model_size"]
    assert d.iloc[:, 1].tolist() == ["8", "48", "3", "teacher"] and d.iloc[:, 2].tolist() == ["4", "24", "2", "student"]
    full = db.config_diff(["hcrl_sa/teacher_curriculum", "hcrl_sa/student_curriculum"], all=True)
    assert len(full) > 40 and "train.lr" in set(full.key)


def test_sweep_numeric_order_and_dotted_or_leaf_keys(db):
    s = db.sweep("train.lr", "f1")
    assert s["train.lr"].tolist() == ["1e-05", "0.0005", "0.001"]  # numeric order, not string order
    teachers = db.sweep("lr", "f1", dataset="hcrl_sa", stage="evaluation", model_size="teacher")
    row = teachers.set_index("train.lr").loc["0.001"]
    assert (row["count"], row["mean"], row["min"], row["max"]) == (3, pytest.approx(0.94), 0.93, 0.95)
    assert row["std"] == pytest.approx(0.01)
    with pytest.raises(KdgatError, match="Unknown param 'train.lrr'.*train.lr"):
        db.sweep("train.lrr", "f1")
    with pytest.raises(KdgatError, match="ambiguous.*gat.hidden"):
        db.sweep("hidden", "f1")


def test_by_config_groups_seeds(db):
    g = db.leaderboard("f1", dataset="hcrl_sa", stage="evaluation", model_size="teacher", by_config=True)
    first = g.iloc[0]
    assert (first.n, first.seeds) == (3, "0,1,2") and first.f1_mean == pytest.approx(0.94)
    assert first.f1_std == pytest.approx(0.01)
    assert g.iloc[1].n == 1 and g.iloc[1].f1_mean == 0.90  # lr differs: another configuration


def test_dataset_summary(db):
    s = db.dataset_summary("hcrl_ch")
    assert s[["stage", "model_size", "runs", "complete", "failed"]].values.tolist() == [
        ["autoencoder", "teacher", 1, 1, 0],
        ["curriculum", "teacher", 1, 1, 0],
        ["curriculum", "student", 1, 0, 1],
    ]
    assert s.best_run.tolist()[:2] == ["hcrl_ch/teacher_autoencoder", "hcrl_ch/teacher_curriculum"]
    with pytest.raises(KdgatError, match="No runs for dataset 'nope'.*hcrl_ch, hcrl_sa"):
        db.dataset_summary("nope")


def test_resolve_run(db, fixture_db):
    ids = fixture_db[1]
    rid = ids["hcrl_sa/teacher_curriculum"]
    assert db.resolve_run(rid) == rid and db.resolve_run(rid[:8]) == rid and db.resolve_run(rid.upper()[:8]) == rid
    assert db.resolve_run("hcrl_sa/teacher_evaluation") == ids["eval_lr"]  # newest of four
    with pytest.raises(KdgatError, match="No run matches 'hcrl_sa/teacher_curiculum'.*hcrl_sa/teacher_curriculum"):
        db.resolve_run("hcrl_sa/teacher_curiculum")
    visible = [v for k, v in ids.items() if k not in ("deleted_run", "in_deleted_experiment")]
    prefix = next(p for p in "0123456789abcdef" if sum(v.startswith(p) for v in visible) >= 2)
    with pytest.raises(KdgatError, match=f"prefix '{prefix}' is ambiguous"):
        db.resolve_run(prefix)
    with pytest.raises(KdgatError, match="is deleted"):
        db.resolve_run(ids["deleted_run"])


def test_unknown_metric_names_close_matches(db):
    with pytest.raises(KdgatError, match="Unknown metric 'f_1'.*Did you mean: f1"):
        db.leaderboard("f_1")
    with pytest.raises(KdgatError, match="has no metric 'val_los'.*val_loss"):
        db.history("hcrl_sa/teacher_curriculum", "val_los")


def test_arrow_and_pandas_agree(db):
    arrow = db.runs(arrow=True)
    frame = db.runs()
    assert arrow.column_names == list(frame.columns) and arrow["run_id"].to_pylist() == frame.run_id.tolist()


def test_a_db_written_by_kdgats_tracking_writer_reads_like_mlflow_says(sample_db):
    """The sample DB of kdgat_core.tracking.sample (open_run, the real writer): views == mlflow.search_runs."""
    path, ids, answers = sample_db
    with open_db(path) as db:
        runs = db.runs(arrow=True).to_pylist()
        assert [r["run_id"] for r in runs] == [r["run_id"] for r in answers["all"]]
        assert not set(ids["deleted"]) & {r["run_id"] for r in runs}
        assert {r["run_id"] for r in runs if r["status"] == "failed"} == set(ids["failed"])
        board = db.leaderboard("f1", top=10, dataset="hcrl_sa", stage="evaluation", arrow=True).to_pylist()
        assert [r["run_id"] for r in board] == [
            r["run_id"] for r in answers["leaderboard"] if r["metrics.f1"] != "NaN"
        ][:10]
        for r, t in zip(runs, answers["all"]):
            assert all(_same(r[k], t[f"metrics.{k}"]) for k in METRIC_COLUMNS if f"metrics.{k}" in t)
            assert all(_same(r[k], t[f"tags.{k}"]) for k in TAG_COLUMNS if f"tags.{k}" in t)
        assert len(db.lineage(dataset="hcrl_sa")) > 0


def test_prefixed_error_rates_and_losses_sort_ascending():
    """`kdgat leaderboard --metric val_fpr` must put the fewest false alarms first, like `fpr` itself."""
    from kdgat_core.config import metric_direction

    for name in ("fpr", "val_fpr", "gat_val_fpr", "test_02_unknown_vehicle_known_attack/fnr", "kd_loss", "val_loss"):
        assert metric_direction(name) == "asc", name
    for name in ("f1", "val_f1", "gat_val_f1", "detection_rate_at_fpr_1e-3", "auc"):
        assert metric_direction(name) == "desc", name
