"""The examples in kdgat_core.query's docstrings run, as written, against the query fixture DB.

The fixture (`fixture_db` in tests/unit/conftest.py) is written by MLflow's own client in a separate process; this
process reads it only through DuckDB. Each docstring with examples is one test, with ``db = open_db(<fixture>)`` in
its globals, so a user pasting an example into a notebook sees what the docstring shows.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import kdgat_core.query as query_pkg
from kdgat_core.query import TrackingDB, open_db

# Whitespace differences in DataFrame reprs are not what the examples are about; "..." stands for elided output.
OPTIONS = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS
# The notebook API of docs/INTERFACES.md: each of these must show a runnable example.
PUBLIC_METHODS = (
    "runs",
    "leaderboard",
    "compare",
    "config_diff",
    "sweep",
    "dataset_summary",
    "lineage",
    "history",
    "sql",
    "resolve_run",
)


def _query_modules():
    yield query_pkg
    for info in pkgutil.iter_modules(query_pkg.__path__, query_pkg.__name__ + "."):
        yield importlib.import_module(info.name)


def _examples() -> list[doctest.DocTest]:
    finder = doctest.DocTestFinder(exclude_empty=True)
    found: dict[str, doctest.DocTest] = {}
    for module in _query_modules():
        for test in finder.find(module, module.__name__):
            # an object re-exported by another module is found twice: keep one, named by where it is defined
            if test.examples and test.name not in found:
                found[test.name] = test
    return sorted(found.values(), key=lambda t: t.name)


EXAMPLES = _examples()


@pytest.fixture
def doctest_db(fixture_db, tmp_path):
    """The fixture DB opened the way a notebook opens it, with its read cache in the test's tmp dir."""
    db = open_db(fixture_db[0], cache_dir=tmp_path / "cache")
    yield db
    db.close()


@pytest.fixture
def stable_pandas_display():
    """DataFrame reprs depend on pandas' display options and the terminal width: pin them while examples run."""
    import pandas as pd

    with pd.option_context(
        "display.width", 200, "display.max_columns", 50, "display.max_rows", 60, "display.max_colwidth", 80
    ):
        yield


@pytest.mark.parametrize("example", EXAMPLES, ids=[t.name.removeprefix("kdgat_core.query.") for t in EXAMPLES])
def test_docstring_example_runs_as_shown(example, doctest_db, stable_pandas_display):
    example.globs = {**example.globs, "db": doctest_db, "open_db": open_db}
    runner = doctest.DocTestRunner(optionflags=OPTIONS)
    out: list[str] = []
    result = runner.run(example, out=out.append, clear_globs=False)
    assert result.failed == 0, f"{example.name} ({example.filename}:{example.lineno}):\n" + "".join(out)


def test_every_public_query_method_has_an_example():
    missing = [name for name in PUBLIC_METHODS if ">>>" not in (getattr(TrackingDB, name).__doc__ or "")]
    if ">>>" not in (open_db.__doc__ or ""):
        missing.append("open_db")
    assert not missing, f"query API without a docstring example: {', '.join(missing)}"


def test_the_examples_are_found():
    # guards the finder itself: a refactor that hid every example would otherwise pass with zero tests
    names = {t.name.rsplit(".", 1)[-1] for t in EXAMPLES}
    assert {"leaderboard", "history", "open_db"} <= names, sorted(names)
