"""What `-f json` and `-f latex` write parses: JSON without NaN/Infinity literals, LaTeX escaped in one pass."""

from __future__ import annotations

import json

import pytest

from kdgat_core.query.encode import json_records, latex_escape
from tests.unit.test_cli_analytics import kdgat


def _strict(text: str):
    """json.loads as a strict parser (jq, JavaScript) reads it: NaN, Infinity and -Infinity are errors."""

    def refuse(name: str):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture
def uri(fixture_db):
    return f"sqlite:///{fixture_db[0]}"


def test_query_json_encodes_nan_as_null_and_inf_as_strings(uri, tmp_path):
    sql = (
        "SELECT 'inf'::DOUBLE AS pos, '-inf'::DOUBLE AS neg, 'nan'::DOUBLE AS nan_, 1.5::DOUBLE AS x, "
        "['inf'::DOUBLE, 'nan'::DOUBLE, 2.0] AS xs, {'a': '-inf'::DOUBLE} AS s"
    )
    res = kdgat("query", sql, "-u", uri, "-f", "json", cache_dir=tmp_path)
    assert res.returncode == 0, res.stderr
    assert _strict(res.stdout) == [
        {"pos": "inf", "neg": "-inf", "nan_": None, "x": 1.5, "xs": ["inf", None, 2.0], "s": {"a": "-inf"}}
    ]


def test_every_table_command_writes_strict_json(uri, fixture_db, tmp_path):
    """The fixture's student evaluation run logged auc=NaN and val_loss=inf."""
    rid = fixture_db[1]["hcrl_sa/student_evaluation"]
    runs = kdgat(
        "runs",
        "-u",
        uri,
        "--stage",
        "evaluation",
        "--model-size",
        "student",
        "--no-kd",
        "-f",
        "json",
        cache_dir=tmp_path,
    )
    assert runs.returncode == 0, runs.stderr
    assert [r["val_loss"] for r in _strict(runs.stdout)] == ["inf"]
    board = kdgat("leaderboard", "-u", uri, "-m", "val_loss", "-f", "json", "--top", "99", cache_dir=tmp_path)
    assert board.returncode == 0, board.stderr
    assert "inf" in [r["val_loss"] for r in _strict(board.stdout)]
    query = kdgat(
        "query", f"SELECT auc, val_loss FROM runs WHERE run_id = '{rid}'", "-u", uri, "-f", "json", cache_dir=tmp_path
    )
    assert _strict(query.stdout) == [{"auc": None, "val_loss": "inf"}]


def test_json_records_never_writes_a_non_json_literal():
    text = json_records(["a", "b"], [[float("nan"), float("-inf")], [float("inf"), 0.25]])
    assert _strict(text) == [{"a": None, "b": "-inf"}, {"a": "inf", "b": 0.25}]


def test_latex_escapes_a_backslash_once(uri, tmp_path):
    assert latex_escape("a\\b{c}_%") == r"a\textbackslash{}b\{c\}\_\%"
    res = kdgat("query", r"SELECT 'C:\runs{1}' AS path_", "-u", uri, "-f", "latex", cache_dir=tmp_path)
    assert res.returncode == 0, res.stderr
    assert r"C:\textbackslash{}runs\{1\} \\" in res.stdout
    assert r"\textbackslash\{\}" not in res.stdout and r"path\_" in res.stdout
