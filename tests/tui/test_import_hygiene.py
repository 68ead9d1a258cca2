"""The TUI process never loads torch, torch_geometric or mlflow: checked in a fresh interpreter that imports every
TUI module and drives the app through each screen (runs, detail, diff, lineage, SQL, jobs, submit preview)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

HEAVY = ("torch", "torch_geometric", "mlflow")

SCRIPT = textwrap.dedent("""
    import asyncio, json, pkgutil, importlib, sys
    import kdgat_tui
    for mod in pkgutil.walk_packages(kdgat_tui.__path__, "kdgat_tui."):
        importlib.import_module(mod.name)
    from kdgat_tui.app import KdgatApp

    async def tour(uri):
        app = KdgatApp(tracking_uri=uri, refresh_s=0)
        async with app.run_test(size=(100, 30)) as pilot:
            while getattr(app.screen, "view", None) is None or app.screen.cached:
                await pilot.pause(0.05)
            run_id = app.screen.view.run_ids[0]
            for open_screen in (lambda: app.open_run(run_id), lambda: app.open_lineage(dataset="hcrl_sa"),
                                lambda: app.open_diff(app.screen.view.run_ids[:2]), lambda: app.open_sql("SELECT 1"),
                                lambda: app.open_jobs(), lambda: app.open_submit(run_id=run_id)):
                runs = app.screen
                open_screen()
                await pilot.pause(1.5)
                app.pop_screen()
                await pilot.pause()

    asyncio.run(tour(sys.argv[1]))
    print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torch_geometric", "mlflow"))))
""")


def test_tui_never_imports_torch_pyg_or_mlflow(sample_db):
    proc = subprocess.run([sys.executable, "-c", SCRIPT, sample_db], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert loaded == [], f"the TUI loaded {loaded}"


def test_the_entry_point_module_alone_is_light():
    code = (
        "import sys, kdgat_tui.app; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch','torch_geometric','mlflow','duckdb')))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"  # DuckDB too waits for the first read


def test_pandas_is_not_loaded_on_the_way_to_the_first_paint():
    """pyarrow imports pandas (~0.4 s) on its first conversion of a Python value; `skip_pyarrow_pandas_probe` spares
    the TUI that only if no module of the Runs screen converts one while it is imported."""
    code = (
        "import sys, kdgat_tui.app, kdgat_tui.screens.runs; kdgat_tui.app.skip_pyarrow_pandas_probe(); "
        "print('pandas' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
