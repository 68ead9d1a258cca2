"""The reader side starts fast: importing the CLI, `kdgat query` and `kdgat leaderboard` never load torch,
torch_geometric or mlflow. Checked in a fresh interpreter, the only way to prove a deferred import defers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.unit.conftest import REPO

HEAVY = ("torch", "torch_geometric", "mlflow")

PROBE = r"""
import json, sys
argv = json.loads(sys.argv[1])
if argv:
    sys.argv = ["kdgat", *argv]
    from kdgat_core import cli
    try:
        cli.main()
    except SystemExit as exc:
        code = exc.code
    else:
        code = 0
else:
    import kdgat_core.cli, kdgat_core.query
    code = 0
loaded = sorted(m for m in ("torch", "torch_geometric", "mlflow", "pandas", "pyarrow", "numpy") if m in sys.modules)
commands = sorted(m for m in sys.modules if m.startswith("kdgat_core.commands."))
sys.stderr.write("\nLOADED " + json.dumps({"code": code, "loaded": loaded, "commands": commands}) + "\n")
"""


def _probe(argv, cache_dir, **env_vars: str) -> dict:
    env = dict(os.environ, KDGAT_CACHE_DIR=str(cache_dir), **env_vars)
    res = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(argv)],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(REPO),
        timeout=120,
    )
    line = [ln for ln in res.stderr.splitlines() if ln.startswith("LOADED ")]
    assert line, res.stderr[-2000:]
    return {**json.loads(line[-1][len("LOADED ") :]), "stdout": res.stdout}


def test_importing_the_cli_and_query_layer_loads_no_heavy_module(tmp_path):
    out = _probe([], tmp_path)
    assert not set(out["loaded"]) & set(HEAVY), out


@pytest.mark.parametrize(
    "argv",
    [
        ["leaderboard", "--metric", "f1", "--dataset", "hcrl_sa", "-f", "csv"],
        ["query", "SELECT run_name, f1 FROM runs ORDER BY f1 DESC LIMIT 3"],
    ],
)
def test_reader_commands_load_no_heavy_module(fixture_db, tmp_path, argv):
    out = _probe([argv[0], "-u", f"sqlite:///{fixture_db[0]}", *argv[1:]], tmp_path)
    assert out["code"] in (0, None), out
    assert not set(out["loaded"]) & set(HEAVY), out
    if argv[0] == "leaderboard":
        # pandas (~0.4 s), pyarrow and numpy (~0.3 s) would use most of a 0.8 s budget: plain rows from DuckDB
        assert not {"pandas", "pyarrow", "numpy"} & set(out["loaded"]), out


def test_leaderboard_imports_no_other_command_module(fixture_db, tmp_path):
    """Commands are registered lazily (`kdgat_core.cli.COMMANDS`): `kdgat leaderboard` imports the analytics commands
    and none of the training, SLURM, data, annotation or analysis ones (they cost ~0.1 s of a 0.7 s process)."""
    from kdgat_core.cli import COMMANDS

    out = _probe(["leaderboard", "-u", f"sqlite:///{fixture_db[0]}", "--metric", "f1", "-f", "csv"], tmp_path)
    assert out["code"] in (0, None) and "run_name" in out["stdout"], out
    own = {"kdgat_core.commands.analytics", "kdgat_core.commands.store"}  # store: the global --read-uri
    others = {entry.module for entry in COMMANDS} - own
    assert len(others) >= 6 and not others & set(out["commands"]), out["commands"]
    assert "kdgat_core.commands.analytics" in out["commands"]
    assert not set(out["loaded"]) & set(HEAVY), out


def test_help_lists_every_command_without_importing_one(tmp_path):
    """`kdgat --help` shows each command with its line from `COMMANDS`, importing no command's module."""
    from kdgat_core.cli import COMMANDS

    out = _probe(["--help"], tmp_path, COLUMNS="300")
    assert out["code"] in (0, None), out
    assert set(out["commands"]) <= {"kdgat_core.commands.store", "kdgat_core.commands.click_compat"}, out["commands"]
    listed = {line.split()[1]: line for line in out["stdout"].splitlines() if line.startswith("│ ") and "  " in line}
    for entry in COMMANDS:
        assert entry.name in listed, (entry.name, out["stdout"])
        assert entry.help.replace("\\[", "[") in listed[entry.name], (entry, listed[entry.name])


def test_leaderboard_from_a_current_cache_loads_no_arrow(fixture_db, tmp_path):
    """Second call: served from the read cache's parquet copy, still without pyarrow or numpy in the process."""
    argv = ["leaderboard", "-u", f"sqlite:///{fixture_db[0]}", "--metric", "f1", "-f", "csv"]
    _probe(["runs", "-u", f"sqlite:///{fixture_db[0]}", "-f", "csv"], tmp_path)  # builds the cache
    assert list(tmp_path.glob("query/*/board.json")), "the runs command should have written the read cache"
    out = _probe(argv, tmp_path)
    assert out["code"] in (0, None), out
    assert not {"pandas", "pyarrow", "numpy"} & set(out["loaded"]), out


REFRESH_PROBE = r"""
import json, sys
from kdgat_core.query import open_db
with open_db(sys.argv[1]) as db:
    table = db.wide(arrow=True, include_deleted=True)
    mode = db.last_refresh.mode
sys.stderr.write("\nLOADED " + json.dumps({"mode": mode, "rows": table.num_rows, "pandas": "pandas" in sys.modules}) + "\n")
"""


def test_refreshing_the_read_cache_never_imports_pandas(db_copy, tmp_path):
    """A refresh after new runs (the TUI's worker, `kdgat runs`) stays off pandas: importing it costs 0.35 s here,
    more than half of the 1 s a refresh may take at 100k runs."""
    from tests.unit.conftest import MUTATE_FIXTURE, run_python

    path, ids = db_copy
    env = dict(os.environ, KDGAT_CACHE_DIR=str(tmp_path / "cache"))

    def refresh() -> dict:
        res = subprocess.run(
            [sys.executable, "-c", REFRESH_PROBE, str(path)],
            capture_output=True,
            text=True,
            env=env,
            cwd=str(REPO),
            timeout=120,
        )
        line = [ln for ln in res.stderr.splitlines() if ln.startswith("LOADED ")]
        assert line, res.stderr[-2000:]
        return json.loads(line[-1][len("LOADED ") :])

    first = refresh()
    assert first["mode"] == "full"
    ids_file = tmp_path / "ids.json"
    ids_file.write_text(json.dumps(ids))
    run_python(MUTATE_FIXTURE, str(path), str(ids_file), "1")  # new run, finished run, tags edited in place
    second = refresh()
    assert second["mode"] == "incremental" and second["rows"] == first["rows"] + 1, second
    assert second["pandas"] is False, second
