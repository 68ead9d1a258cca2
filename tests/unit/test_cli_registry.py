"""The one list of `kdgat` commands (`kdgat_core.cli.COMMANDS`): every entry runs, its help line is its docstring's,
and a mistyped command is one sentence that suggests the right one. Run through `kdgat_core.cli.main` in this process.
"""

from __future__ import annotations

import importlib
import inspect

import pytest

from kdgat_core.cli import COMMANDS
from tests.unit.cli_inprocess import assert_one_sentence, run_kdgat


def test_each_help_line_is_the_first_paragraph_of_its_commands_docstring():
    """`kdgat --help` reads the lines from COMMANDS without importing the commands: they must not drift apart."""
    assert len({entry.name for entry in COMMANDS}) == len(COMMANDS)
    for entry in COMMANDS:
        function = getattr(importlib.import_module(entry.module), entry.function)
        first = " ".join((inspect.getdoc(function) or "").split("\n\n")[0].split())
        assert entry.help == first, entry.name


@pytest.mark.parametrize("name", [entry.name for entry in COMMANDS])
def test_every_command_shows_its_own_help(capsys, tmp_path, name):
    res = run_kdgat(capsys, [name, "--help"], tmp_path, env={"COLUMNS": "200"})
    assert res.code == 0, res.err
    usage = next(line for line in res.out.splitlines() if "Usage:" in line)
    assert f" {name} [OPTIONS]" in usage, res.out[:500]


def test_a_mistyped_command_is_one_sentence_with_the_right_one(capsys, tmp_path):
    res = run_kdgat(capsys, ["leaderbord", "-n", "3"], tmp_path)
    assert_one_sentence(res)
    assert "No such command 'leaderbord'. Did you mean 'leaderboard'? See `" in res.err, res.err


def test_version_prints_the_packages_version(capsys, tmp_path):
    from importlib.metadata import version

    res = run_kdgat(capsys, ["version"], tmp_path)
    assert res.code == 0 and res.out.strip() == version("kdgat"), res
