"""kdgat-tui in a real pseudo-terminal: the installed `kdgat-tui` inside tmux (the way researchers run it on a login
node), 80x24, TERM without truecolor: keys in, screen out, clean exit, and never more than 256 colours."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import require

pytestmark = pytest.mark.slow

KDGAT_TUI = Path(sys.executable).parent / "kdgat-tui"


class Tmux:
    """One private tmux server (its own socket), killed at the end: only what this test started."""

    def __init__(self, name: str) -> None:
        self.socket = name

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=check, timeout=30
        )

    def screen(self, escapes: bool = False) -> str:
        return self.run("capture-pane", "-p", *(["-e"] if escapes else []), "-t", "tui").stdout

    def wait_for(self, text: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            shown = self.screen()
            if text in shown:
                return shown
            time.sleep(0.2)
        raise AssertionError(f"'{text}' never appeared; the screen was:\n{self.screen()}")

    def alive(self) -> bool:
        return self.run("has-session", "-t", "tui", check=False).returncode == 0


def test_kdgat_tui_in_tmux_keys_screen_colours_and_clean_exit(sample_db, tmp_path):
    require(shutil.which("tmux") is not None, "tmux is not installed (apt-get install -y tmux)")
    require(KDGAT_TUI.is_file(), f"{KDGAT_TUI} is not installed (pip install -e .)")
    tmux = Tmux(f"kdgat-tui-test-{os.getpid()}")
    exit_file = tmp_path / "exit_code"
    env = {
        "TERM": "xterm-256color",
        "COLORTERM": "",
        "KDGAT_CACHE_DIR": str(tmp_path / "cache"),
        "HOME": os.environ.get("HOME", str(tmp_path)),
        "PATH": os.environ.get("PATH", ""),
    }
    command = f"{KDGAT_TUI} --tracking-uri {sample_db} --refresh 0; echo $? > {exit_file}; sleep 30"
    tmux.run(
        "-f",
        "/dev/null",
        "new-session",
        "-d",
        "-s",
        "tui",
        "-x",
        "80",
        "-y",
        "24",
        *[a for k, v in env.items() for a in ("-e", f"{k}={v}")],
        command,
    )
    try:
        tmux.run("set-option", "-t", "tui", "default-terminal", "tmux-256color", check=False)
        shown = tmux.wait_for("runs · sort")
        assert re.search(r"\d+ of \d+ runs", shown)
        assert "/ Filter" in shown.splitlines()[-1]  # the footer with the context keys, on a 24-line screen
        # filter by typing, as a user would: one key at a time (a single burst reads as a paste)
        for key in ["/", *"dataset=set_01", "Enter"]:
            tmux.run("send-keys", "-t", "tui", *(["-l", key] if len(key) == 1 else [key]))
            time.sleep(0.03)
        shown = tmux.wait_for("/dataset=set_01")
        # rows below the status line, the filter line and the header (a scrollbar may take a line of its own)
        body = [line for line in shown.splitlines()[3:-1] if "/" in line]
        assert body and all("set_01/" in line for line in body)
        # help lists keys; esc goes back
        tmux.run("send-keys", "-t", "tui", "?")
        tmux.wait_for("Keys · esc back")
        tmux.run("send-keys", "-t", "tui", "Escape")
        tmux.wait_for("/dataset=set_01")
        # at most 256 colours: no 24-bit colour escapes reach the terminal
        coloured = tmux.screen(escapes=True)
        assert "\x1b[" in coloured
        assert not re.search(r"\x1b\[[0-9;]*[34]8;2;", coloured), "truecolor escape sent to a 256-colour terminal"
        tmux.run("send-keys", "-t", "tui", "q")
        deadline = time.monotonic() + 30
        while not exit_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert exit_file.read_text().strip() == "0", "kdgat-tui did not exit cleanly"
        after = tmux.screen()
        assert "Traceback" not in after
    finally:
        tmux.run("kill-server", check=False)


def test_missing_database_is_one_sentence_and_exit_2(tmp_path):
    require(KDGAT_TUI.is_file(), f"{KDGAT_TUI} is not installed (pip install -e .)")
    proc = subprocess.run(
        [str(KDGAT_TUI), "--tracking-uri", str(tmp_path / "nope.db")],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("kdgat-tui: Tracking database")
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
