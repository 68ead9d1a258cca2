"""Analysis that answers research questions: metric summaries and expressions, groups with statistics (one
implementation for the CLI, the notebook API and the TUI), paired comparisons, the filter language.

All on real MLflow stores written by MLflow's client (tests/unit/analysis_db.py plants known effects).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys

import pytest

from kdgat_core.query import open_db
from tests.unit.analysis_db import WRITE_ANALYSIS_DB
from tests.unit.conftest import REPO, run_python


@pytest.fixture(scope="module")
def analysis_db(tmp_path_factory):
    folder = tmp_path_factory.mktemp("analysis")
    db, ids = folder / "mlflow.db", folder / "ids.json"
    run_python(WRITE_ANALYSIS_DB, str(db), str(ids))
    return db, json.loads(ids.read_text())


@pytest.fixture
def adb(analysis_db, tmp_path):
    with open_db(analysis_db[0], cache_dir=tmp_path / "cache") as db:
        yield db


def kdgat(db_path, *args, cache=None, cwd=None):
    env = dict(os.environ, PYTHONPATH=str(REPO), KDGAT_CACHE_DIR=str(cache or db_path.parent / "cli-cache"))
    return subprocess.run(
        [sys.executable, "-m", "kdgat_core.cli", *args, "--tracking-uri", str(db_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=str(cwd or REPO),
    )


# -- metric summaries and expressions ---------------------------------------------------------------------------------
def test_summary_where_last_differs_from_best(adb, analysis_db):
    rid = analysis_db[1]["d1/1/kd"]
    s = {r["key"]: r for r in adb.metric_summary(rid, arrow=True).to_pylist()}
    f1 = s["f1"]["last"]
    assert s["val_f1"]["last"] == pytest.approx(f1)
    assert s["val_f1"]["max"] == pytest.approx(f1 + 0.02)
    assert (s["val_f1"]["argmax_step"], s["val_f1"]["n_steps"], s["val_f1"]["last_step"]) == (5, 8, 8)
    assert (s["val_loss"]["argmin_step"], s["val_loss"]["min"]) == (6, pytest.approx(0.2))
    assert s["val_loss"]["last"] == pytest.approx(0.22)
    # the SQL view says the same
    row = adb.sql(f"SELECT max, argmax_step FROM metric_summary WHERE run_id = '{rid}' AND key = 'val_f1'").iloc[0]
    assert (row["max"], row["argmax_step"]) == (pytest.approx(f1 + 0.02), 5)


def test_expressions_rank_by_best_epoch_not_last(adb):
    final = adb.leaderboard("val_f1", top=3, arrow=True).to_pylist()
    best = adb.leaderboard("max(val_f1)", top=3, arrow=True).to_pylist()
    assert [r["run_id"] for r in final] == [r["run_id"] for r in best]  # +0.02 for everyone: the same order
    assert best[0]["max(val_f1)"] == pytest.approx(final[0]["val_f1"] + 0.02)
    at5 = adb.leaderboard("val_f1@5", top=1, arrow=True).to_pylist()[0]
    assert at5["val_f1@5"] == pytest.approx(best[0]["max(val_f1)"])
    # lower is better follows the metric inside: min(val_loss) ascends
    low = adb.leaderboard("min(val_loss)", top=2, arrow=True).column("min(val_loss)").to_pylist()
    assert low == sorted(low) and low[0] == pytest.approx(0.2)
    steps = adb.leaderboard("argmin(val_loss)", top=40, arrow=True).column("argmin(val_loss)").to_pylist()
    assert set(steps) == {6.0}


@pytest.mark.parametrize(
    "bad, words",
    [("mean(f1)", "Unknown function 'mean'"), ("max(f1", "Cannot read metric"), ("max(nope)", "Unknown metric 'nope'")],
)
def test_a_bad_expression_is_one_sentence(analysis_db, bad, words):
    proc = kdgat(analysis_db[0], "leaderboard", "--metric", bad)
    assert proc.returncode == 2
    assert proc.stderr.startswith("kdgat: ") and words in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_summary_cache_updates_only_the_runs_that_logged(analysis_db, tmp_path):
    db_path = tmp_path / "mlflow.db"
    shutil.copyfile(analysis_db[0], db_path)
    rid = analysis_db[1]["d2/3/student"]
    cache = tmp_path / "cache"
    with open_db(db_path, cache_dir=cache) as db:
        before = db.metric_summary_table()
        assert db._summary.stats.mode == "full"
    run_python(
        "import sys\nfrom mlflow import MlflowClient\n"
        "MlflowClient('sqlite:///' + sys.argv[1]).log_metric(sys.argv[2], 'val_f1', 0.999, step=9)",
        str(db_path),
        rid,
    )
    with open_db(db_path, cache_dir=cache) as db:
        after = db.metric_summary_table()
        assert (db._summary.stats.mode, db._summary.stats.changed_runs) == ("incremental", 1)
        with open_db(db_path, cache=False) as fresh:
            assert _rows(after) == _rows(fresh.metric_summary_table())
        row = db.metric_summary(rid, "val_f1", arrow=True).to_pylist()[0]
        assert (row["max"], row["argmax_step"], row["last"], row["n_steps"]) == (0.999, 9, 0.999, 9)
        assert after.num_rows == before.num_rows


def _k(r):
    return (r["run_id"], r["key"])


def _rows(table):
    """Rows sorted by (run, key), NaN spelled out so that equal tables compare equal."""
    return sorted(({k: "NaN" if v != v else v for k, v in r.items()} for r in table.to_pylist()), key=_k)


# -- groups: one implementation, three doors --------------------------------------------------------------------------
def test_group_statistics_match_pandas_and_scipy(adb):
    import pandas as pd
    from scipy import stats

    got = adb.groups(["model_size", "use_kd", "lr"], "f1").set_index(["model_size", "use_kd", "params.train.lr"])
    frame = adb.frame(["f1"])
    frame["f1"] = frame["f1"].astype(float)
    want = frame.groupby(["model_size", "use_kd", "params.train.lr"], dropna=False)["f1"].agg(
        ["count", "mean", "std", "median", "min", "max", "size"]
    )
    assert len(got) == len(want) == 6
    for key, w in want.iterrows():
        g = got.loc[key]
        assert (g["runs"], g["f1_n"]) == (w["size"], w["count"])
        for s in ("mean", "std", "median", "min", "max"):
            assert g[f"f1_{s}"] == pytest.approx(w[s], abs=1e-12)
        lo, hi = stats.t.interval(0.95, w["count"] - 1, loc=w["mean"], scale=w["std"] / math.sqrt(w["count"]))
        assert (g["f1_ci_low"], g["f1_ci_high"]) == (pytest.approx(lo), pytest.approx(hi))
    # the NaN and the missing f1 are runs of their groups, never values
    assert int(got["runs"].sum() - got["f1_n"].sum()) == 3
    assert not pd.isna(got["f1_mean"]).any()


def test_by_config_is_the_same_in_the_cli_the_notebook_api_and_the_tui(adb, analysis_db, tmp_path):
    from kdgat_tui.runs_model import RunsModel

    def key(r):
        return (r["dataset"], r["model_size"], r["use_kd"], r["newest_run_id"])

    api = {key(r): r for r in adb.leaderboard("f1", by_config=True, top=None, arrow=True).to_pylist()}
    proc = kdgat(analysis_db[0], "leaderboard", "--by-config", "--top", "1000", "--format", "json", cache=tmp_path)
    assert proc.returncode == 0, proc.stderr
    cli = {key(r): r for r in json.loads(proc.stdout)}
    model = RunsModel(adb.wide(arrow=True), metrics=["f1"])
    tui = {}
    for g in model.group_table().to_pylist():
        if g["f1_n"]:
            tui[(g["dataset"], g["model_size"], g["use_kd"], g["run_ids"][0])] = g
    assert set(api) == set(cli) == set(tui) and len(api) > 10
    for k in api:
        assert api[k]["n"] == cli[k]["n"] == tui[k]["f1_n"]
        assert api[k]["f1_mean"] == pytest.approx(cli[k]["f1_mean"]) == pytest.approx(tui[k]["f1_mean"])
        sa, sc, st = api[k]["f1_std"], cli[k]["f1_std"], tui[k]["f1_std"]
        assert (sa is None or sa != sa) == (sc is None) == (st is None)
        if sc is not None:
            assert sa == pytest.approx(sc) == pytest.approx(st)
    assert sum(1 for r in api.values() if r["n"] >= 2) >= 1  # some group really has several seeds


# -- paired comparisons -----------------------------------------------------------------------------------------------
def test_ab_recovers_the_planted_kd_effect(adb):
    c = adb.ab("use_kd", "f1", pair_on=["dataset", "seed"], model_size="student")
    assert (c.a, c.b, c.paired, c.n) == ("False", "True", True, 12)  # the run without f1 leaves its pair intact
    assert c.diff == pytest.approx(0.01, abs=0.002)
    assert 0 < c.ci_low < 0.01 < c.ci_high < 0.02
    assert c.p_value < 0.01 and c.p_t < 0.001 and c.effect_size > 2
    assert c.sentence.startswith("use_kd=True: +0.0") and "a real difference (better)" in c.sentence


def test_ab_finds_nothing_where_nothing_was_planted(adb):
    c = adb.ab("batch_size", "f1", pair_on=["dataset", "model_size", "use_kd", "lr"])
    assert c.paired and c.n == 12
    assert c.ci_low < 0 < c.ci_high and c.p_value > 0.05
    assert "no evidence of a difference" in c.sentence
    unpaired = adb.ab("batch_size", "f1")
    assert not unpaired.paired and unpaired.p_value > 0.05 and unpaired.ci_low < 0 < unpaired.ci_high


def test_ab_refuses_too_few_pairs_in_one_sentence(analysis_db):
    proc = kdgat(
        analysis_db[0], "ab", "--by", "use_kd", "--pair-on", "dataset,seed", "--where", "seed in (1, 2) dataset=d1"
    )
    assert proc.returncode == 2
    assert "Only 2 pairs" in proc.stderr and "at least 3" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_ab_cli_prints_the_sentence_and_json(analysis_db):
    proc = kdgat(analysis_db[0], "ab", "--by", "use_kd", "--pair-on", "dataset,seed", "--model-size", "student")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0].startswith("use_kd=True: +0.0")
    proc = kdgat(analysis_db[0], "ab", "--by", "use_kd", "--model-size", "student", "--format", "json")
    out = json.loads(proc.stdout)
    assert out["paired"] is False and out["test"] == "Mann-Whitney U" and out["diff"] > 0


def test_lineage_stats_pairs_students_with_their_teachers(adb):
    c = adb.lineage_stats("f1")
    assert c.paired and c.n == 12
    assert c.diff == pytest.approx(-0.02, abs=0.003)  # KD students: base + 0.01 against teachers' base + 0.03
    assert c.ci_high < 0 and "worse" in c.sentence


# -- filters ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "where, sql",
    [
        ("dataset=d1 | seed=3", "dataset = 'd1' OR seed = '3'"),
        ("(dataset=d1 | dataset=d2) model_size=student", "dataset IN ('d1', 'd2') AND model_size = 'student'"),
        ("dataset in (d2) lr>0.005", "dataset = 'd2' AND TRY_CAST(\"params.train.lr\" AS DOUBLE) > 0.005"),
        ("seed not in (0, 1, 2) !(use_kd=yes)", "seed NOT IN ('0', '1', '2') AND use_kd <> 'True'"),
        ("f1>0.85 | f1<0.81", "(f1 > 0.85 OR f1 < 0.81) AND NOT isnan(f1)"),  # NaN is neither
        (
            "max(val_f1)>0.87 kd=no",
            "run_id IN (SELECT run_id FROM metric_summary WHERE key = 'val_f1' AND max > 0.87) AND use_kd = 'False'",
        ),
        ("student !kd", "contains(lower(run_name), 'student') AND NOT contains(lower(run_name), 'kd')"),
    ],
)
def test_or_and_in_filters_agree_with_sql(adb, where, sql):
    got = set(adb.frame(where=where, arrow=True).column("run_id").to_pylist())
    want = set(adb.sql(f"SELECT run_id FROM runs_wide WHERE {sql}", arrow=True).column("run_id").to_pylist())
    assert got == want and got


@pytest.mark.parametrize(
    "where, words",
    [
        ("(dataset=d1", "never closed"),
        ("dataset=d1 |", "needs a term on both sides"),
        ("f1>high", "'high' is not a number"),
        ("colour=red", "unknown column 'colour'"),
        ("f1>", "has no value after '>'"),
    ],
)
def test_a_bad_filter_term_is_one_sentence(analysis_db, where, words):
    proc = kdgat(analysis_db[0], "group", "--by", "dataset", "--where", where)
    assert proc.returncode == 2 and words in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_the_tui_filter_speaks_the_same_grammar(adb):
    from kdgat_tui.runs_model import RunsModel

    model = RunsModel(adb.wide(arrow=True))
    for text in (
        "(dataset=d1 | dataset=d2) model_size=student",
        "dataset in (d2) lr>0.005",
        "seed not in (0,1) | kd=yes",
    ):
        model.filter_text = text
        shown = set(model.selected_rows().column("run_id").to_pylist())
        assert shown == set(adb.frame(where=text, arrow=True).column("run_id").to_pylist()) and shown
    model.filter_text = "dataset=d1 |"  # the TUI keeps its rows and says why (p7b's lenient filter)
    assert model.selected_rows().num_rows == adb.wide(arrow=True).num_rows
    assert "needs a term on both sides" in model.filter_problem
    model.filter_text = "dataset=d1 colour=red"
    assert set(model.selected_rows().column("dataset").to_pylist()) == {"d1"}
    assert model.filter_problem.startswith("'colour=red' ignored: unknown column 'colour'")


# -- what matters -----------------------------------------------------------------------------------------------------
def test_importance_ranks_the_driving_param_first(adb):
    result = adb.importance("f1", model_size="student")
    rows = result.table.to_pylist()
    assert rows[0]["param"] == "train.lr" and rows[0]["spearman"] > 0.8 and rows[0]["spearman_p"] < 0.001
    assert {r["param"] for r in rows} == {"train.lr", "train.batch_size", "model.dropout"}
    assert rows[0]["rf_importance"] > 5 * max(r["rf_importance"] for r in rows[1:])
    assert result.warning is None and result.runs == 24


def test_importance_warns_with_few_runs_and_refuses_with_fewer(analysis_db):
    proc = kdgat(analysis_db[0], "importance", "--where", "dataset=d1 model_size=student")
    assert proc.returncode == 0, proc.stderr
    assert "warning: Only 12 runs for 3 varying params" in proc.stderr and "train.lr" in proc.stdout
    proc = kdgat(analysis_db[0], "importance", "--where", "dataset=d1 use_kd=yes seed<3")
    assert proc.returncode == 2 and "importance needs at least 10" in proc.stderr


# -- compare N runs, the CLI's new options ----------------------------------------------------------------------------
def test_compare_takes_n_runs_and_names_the_best(adb, analysis_db):
    ids = analysis_db[1]
    t = adb.compare(ids["d1/1/teacher"], ids["d1/1/student"], ids["d1/1/kd"], arrow=True)
    assert t.column_names == ["metric", "a", "b", "c", "delta_b", "delta_c", "best"]
    row = {r["metric"]: r for r in t.to_pylist()}
    assert row["f1"]["best"] == "a" and row["f1"]["delta_c"] == pytest.approx(row["f1"]["c"] - row["f1"]["a"])
    assert row["metrics.val_loss" if "metrics.val_loss" in row else "val_loss"]["best"] in ("a", "b", "c")
    proc = kdgat(analysis_db[0], "compare", ids["d1/1/teacher"], ids["d1/1/student"], ids["d1/1/kd"], "-f", "json")
    assert proc.returncode == 0, proc.stderr
    assert [r["best"] for r in json.loads(proc.stdout) if r["metric"] == "f1"] == ["a"]


def test_leaderboard_where_group_by_and_lineage_stats_on_the_cli(analysis_db):
    proc = kdgat(
        analysis_db[0], "leaderboard", "-m", "max(val_f1)", "--where", "dataset=d2 | seed in (0)", "-f", "json"
    )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert rows and all(r["dataset"] == "d2" or r["run_name"].startswith("d1/") for r in rows)
    values = [r["max(val_f1)"] for r in rows]
    assert values == sorted(values, reverse=True)
    proc = kdgat(analysis_db[0], "leaderboard", "--group-by", "model_size,use_kd", "-f", "json")
    groups = json.loads(proc.stdout)
    assert [(g["model_size"], g["use_kd"]) for g in groups][0] == ("teacher", "False") and len(groups) == 3
    proc = kdgat(analysis_db[0], "lineage", "--stats")
    assert proc.returncode == 0 and proc.stdout.startswith("KD students: -0.0"), proc.stderr


# -- curves and figures -----------------------------------------------------------------------------------------------
def test_group_curves_are_the_mean_and_std_of_the_runs_histories(adb):
    import statistics

    from kdgat_core.query import curves as cv

    g = adb.groups(["use_kd"], "f1", model_size="student", arrow=True).to_pylist()
    named = [(f"use_kd={r['use_kd']}", r["run_ids"]) for r in g]
    lines = {c.label: c for c in cv.group_curves(adb, named, "val_f1")}
    kd = lines["use_kd=True"]
    assert kd.x == [float(s) for s in range(1, 9)] and kd.n == [12] * 8
    points = {}
    for rid in dict(named)["use_kd=True"]:
        for r in adb.history(rid, "val_f1", arrow=True).to_pylist():
            points.setdefault(r["step"], []).append(r["value"])
    assert kd.y == pytest.approx([statistics.mean(points[s]) for s in range(1, 9)])
    assert kd.std == pytest.approx([statistics.stdev(points[s]) for s in range(1, 9)])
    assert kd.colour == cv.Curve("use_kd=True", [], []).colour  # stable: the label decides the colour
    assert cv.ema([1.0, 1.0, 1.0], 0.9) == pytest.approx([1.0, 1.0, 1.0])


def test_run_curves_draw_the_teacher_underneath(adb, analysis_db):
    from kdgat_core.query import curves as cv

    lines = cv.run_curves(adb, [analysis_db[1]["d2/4/kd"]], "val_loss")
    assert [c.teacher for c in lines] == [True, False] and lines[0].run_ids == [analysis_db[1]["d2/4/teacher"]]
    assert lines[1].y[5] == pytest.approx(0.2)


@pytest.mark.parametrize("args", [["--group-by", "use_kd", "-m", "val_f1"], ["--parallel", "-m", "f1"]])
def test_plot_writes_a_figure(analysis_db, tmp_path, args):
    for suffix, magic in ((".png", b"\x89PNG"), (".svg", b"<?xml"), (".pdf", b"%PDF")):
        out = tmp_path / f"fig{suffix}"
        proc = kdgat(analysis_db[0], "plot", *args, "-o", str(out), "--model-size", "student")
        assert proc.returncode == 0, proc.stderr
        assert out.read_bytes().startswith(magic) and out.stat().st_size > 5000
    proc = kdgat(analysis_db[0], "plot", *args, "-o", str(tmp_path / "fig.txt"))
    assert proc.returncode == 2 and "write a .png, .svg or .pdf" in proc.stderr


# -- saved views ------------------------------------------------------------------------------------------------------
def test_runs_view_applies_the_saved_filter_columns_sort_and_grouping(analysis_db, adb, tmp_path):
    (tmp_path / "kdgat.toml").write_text(
        '[views.best-epoch]\nwhere = "dataset=d1 | seed in (0)"\ncolumns = ["f1", "max(val_f1)"]\n'
        'sort = "max(val_f1)"\n\n[views.kd]\ncolumns = ["argmax(val_f1)"]\ngroup_by = ["use_kd"]\n'
    )
    proc = kdgat(analysis_db[0], "runs", "--view", "best-epoch", "-f", "json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    want = adb.frame(["max(val_f1)"], where="dataset=d1 | seed in (0)", arrow=True)
    assert {r["run_id"] for r in rows} == set(want["run_id"].to_pylist())
    best = [r["max(val_f1)"] for r in rows if r["max(val_f1)"] is not None]
    assert best == sorted(best, reverse=True) and list(rows[0])[-2:] == ["f1", "max(val_f1)"]
    proc = kdgat(analysis_db[0], "runs", "--view", "kd", "-f", "json", cwd=tmp_path)
    groups = {g["use_kd"]: g for g in json.loads(proc.stdout)}
    assert groups["True"]["argmax(val_f1)_mean"] == 5.0 and groups["True"]["argmax(val_f1)_n"] == 12
    proc = kdgat(analysis_db[0], "runs", "--view", "nope", cwd=tmp_path)
    assert proc.returncode == 2 and "saved views: best-epoch, kd" in proc.stderr


def test_a_group_lists_each_seed_once_however_many_runs_share_it():
    import pyarrow as pa

    from kdgat_core.config import Tag
    from kdgat_core.query.groups import group_stats

    seeds = ["1", "0", "1", "1", None, "0"]
    table = pa.table(
        {
            "run_id": [f"r{i}" for i in range(6)],
            "run_name": [f"n{i}" for i in range(6)],
            "start_time": list(range(6)),
            "dataset": ["a"] * 6,
            Tag.SEED.value: seeds,
            "f1": [0.9, 0.8, 0.7, 0.6, 0.5, 0.4],
        }
    )
    row = group_stats(table, ["dataset"], ["f1"]).to_pylist()[0]
    assert (row["runs"], row["seeds"], row["f1_n"]) == (6, "0,1,?", 6)
