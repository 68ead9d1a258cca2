"""The sbatch templates ship inside the wheel: a non-editable install renders scripts without the checkout."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_templates_ship_in_the_wheel_and_render_from_it(tmp_path: Path):
    # build from a copy: setuptools writes build/ and *.egg-info next to the sources
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    for name in ("kdgat_core", "kdgat_tui", "slurm_templates"):
        shutil.copytree(REPO / name, source / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(source),
            "-w",
            str(tmp_path / "wheel"),
            "--no-deps",
            "--no-build-isolation",
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = next((tmp_path / "wheel").glob("kdgat-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {Path(n).name for n in names if n.startswith("kdgat_core/slurm/templates/")}
    assert {
        "base.sh.j2",
        "autoencoder.sh.j2",
        "curriculum.sh.j2",
        "fusion.sh.j2",
        "evaluation.sh.j2",
        "preprocess.sh.j2",
    } <= shipped
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "import kdgat_core.slurm.render as r; from kdgat_core.config import preset; "
        "print(r.__file__); print(r.render_sbatch(preset('gat,teacher', dataset='synthetic')))"
    )
    # outside the checkout, with the unpacked wheel first on the path (ahead of the editable install)
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site), "HOME": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr
    first, script = proc.stdout.split("\n", 1)
    assert first.startswith(str(site))
    assert "#SBATCH --job-name=synthetic/teacher_curriculum" in script and "kdgat run curriculum" in script
