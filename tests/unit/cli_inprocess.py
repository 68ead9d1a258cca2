"""Running `kdgat` in the test process (its real entry point, `kdgat_core.cli.main`): exit code, stdout, stderr.

Much faster than a subprocess per case (torch, duckdb and mlflow load once), so a test can sweep many bad inputs.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


def run_kdgat(capsys, args, cwd: Path, env: dict[str, str] | None = None) -> Result:
    """`kdgat *args` through main(), in `cwd`, with MLFLOW_TRACKING_URI unset unless `env` sets it."""
    from kdgat_core.cli import main

    saved_env = dict(os.environ)
    saved_cwd = os.getcwd()
    capsys.readouterr()
    try:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        os.environ.update(env or {})
        os.chdir(cwd)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr("sys.argv", ["kdgat", *map(str, args)])
            with pytest.raises(SystemExit) as stop:
                main()
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
    captured = capsys.readouterr()
    code = stop.value.code
    return Result(code if isinstance(code, int) else (0 if code is None else 1), captured.out, captured.err)


def assert_one_sentence(res: Result, contains: str = "") -> None:
    """Exit 2, exactly one line on stderr starting `kdgat:`, no traceback."""
    assert res.code == 2, (res.code, res.err, res.out[-500:])
    assert "Traceback" not in res.err + res.out
    assert len(res.err_lines) == 1 and res.err_lines[0].startswith("kdgat: "), res.err
    assert contains in res.err, res.err


def digest(path: Path) -> str:
    """Bytes of a file (or of every file under a folder), or what kind of thing is there."""
    if path.is_symlink() or (path.exists() and not (path.is_file() or path.is_dir())):
        return f"special {os.lstat(path).st_mode:o}"
    if path.is_dir():
        return ";".join(f"{p.relative_to(path)}={digest(p)}" for p in sorted(path.rglob("*")) if p.is_file())
    if not path.exists():
        return "missing"
    return hashlib.sha256(path.read_bytes()).hexdigest()
