"""The examples in kdgat_core.query's docstrings run against the fixture DB (the notebook API's documentation)."""
from __future__ import annotations

import doctest

import pytest

import kdgat_core.query.db as query_db
from kdgat_core.query import open_db


def test_docstring_examples(fixture_db, query_cache_dir):
    pd = pytest.importorskip("pandas")
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    with pd.option_context("display.width", 200, "display.max_columns", 20), open_db(fixture_db[0]) as db:
        tests = [t for t in finder.find(query_db, globs={"db": db, "open_db": open_db}) if t.examples]
        assert len(tests) >= 10, "every public TrackingDB method documents an example"
        for test in tests:
            runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed (details above)"
