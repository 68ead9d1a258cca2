"""kdgat-tui: the experiment dashboard over plain SSH (Textual). `kdgat-tui [--tracking-uri URI] [--readonly]`.

The app composes screens; every number comes from `kdgat_core.query` (through `kdgat_tui.source`) and every action
goes through `kdgat_core.slurm`. It never writes the tracking DB.
"""

from __future__ import annotations

import argparse
import sys

from textual.app import App
from textual.binding import Binding

from kdgat_core.config import KdgatError
from kdgat_tui.commands import ScreenCommands
from kdgat_tui.source import Source

DEFAULT_REFRESH_S = 5.0


class KdgatApp(App):
    CSS_PATH = "app.tcss"
    TITLE = "kdgat"
    COMMANDS = App.COMMANDS | {ScreenCommands}
    ENABLE_COMMAND_PALETTE = True
    BINDINGS = [
        Binding("?", "help", "Keys", tooltip="Every key on every screen"),
        Binding(":", "command_line", "Command", show=False, tooltip="k9s-style command line: runs, jobs, sql, ..."),
        Binding("ctrl+q", "quit", "Quit", show=False, priority=True),
    ]

    def __init__(
        self,
        tracking_uri: str | None = None,
        readonly: bool = False,
        refresh_s: float = DEFAULT_REFRESH_S,
        source: Source | None = None,
        slurm=None,
    ) -> None:
        super().__init__()
        self.readonly = readonly
        self.refresh_s = refresh_s
        self.source = source or Source(tracking_uri)
        self._slurm = slurm
        self.sub_title = ("read-only · " if readonly else "") + self.source.label
        self.error_reason: str | None = None

    def exit_with_error(self, reason: str) -> None:
        """Leave the app; `main` prints `reason` on stderr after the terminal is restored (nothing cut at 80 columns)."""
        self.error_reason = reason
        self.exit(return_code=2)

    @property
    def slurm(self):
        """kdgat_core.slurm, imported on first use (the Runs screen never needs it)."""
        if self._slurm is None:
            from kdgat_core import slurm

            self._slurm = slurm
        return self._slurm

    def on_mount(self) -> None:
        from kdgat_tui.screens.runs import RunsScreen

        # 256 colours are enough: the default theme's colours are downsampled by the terminal driver
        self.push_screen(RunsScreen())

    # ---- navigation shared by every screen ---------------------------------------------------------------------
    def action_help(self) -> None:
        from kdgat_tui.screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.screen))

    def action_command_line(self) -> None:
        from kdgat_tui.widgets.command_line import CommandLine

        self.push_screen(CommandLine(), self.run_command_line)

    def run_command_line(self, text: str | None) -> None:
        if text:
            dispatch(self, text)

    def open_jobs(self) -> None:
        from kdgat_tui.screens.jobs import JobsScreen

        self.push_screen(JobsScreen())

    def open_failures(self) -> None:
        from kdgat_tui.screens.failures import FailuresScreen

        self.push_screen(FailuresScreen())

    def open_sql(self, query: str | None = None) -> None:
        from kdgat_tui.screens.sql_console import SqlConsole

        self.push_screen(SqlConsole(query))

    def open_lineage(self, dataset: str | None = None, run_id: str | None = None) -> None:
        from kdgat_tui.screens.lineage import LineageScreen

        self.push_screen(LineageScreen(dataset=dataset, run_id=run_id))

    def open_run(self, run_id: str) -> None:
        from kdgat_tui.screens.run_detail import RunDetailScreen

        self.push_screen(RunDetailScreen(run_id))

    def open_chart(self, run_ids: list[str] | None = None, groups: list[tuple[str, list[str]]] | None = None) -> None:
        from kdgat_tui.screens.chart import ChartScreen

        self.push_screen(ChartScreen(run_ids, groups))

    def open_diff(self, run_ids: list[str]) -> None:
        from kdgat_tui.screens.diff import DiffScreen

        self.push_screen(DiffScreen(run_ids))

    def open_submit(self, run_id: str | None = None, dataset: str | None = None) -> None:
        if self.readonly:
            self.notify("read-only: submitting is switched off (--readonly).", severity="warning")
            return
        from kdgat_tui.screens.submit import SubmitScreen

        self.push_screen(SubmitScreen(run_id=run_id, dataset=dataset))


def dispatch(app: KdgatApp, text: str) -> None:
    """Run one command line; an unknown command is a notification, never an exception."""
    from kdgat_tui.screens.runs import RunsScreen
    from kdgat_tui.widgets.command_line import COMMANDS

    word, _, rest = text.strip().partition(" ")
    word, rest = word.lower(), rest.strip()
    matches = [c for c in COMMANDS if c.startswith(word)] if word else []
    if word in ("q", "q!", "quit"):
        app.exit()
        return
    if len(matches) != 1:
        app.notify(f"unknown command ':{word}'; try: {', '.join(COMMANDS)}", severity="warning")
        return
    cmd = matches[0]
    runs = next((s for s in app.screen_stack if isinstance(s, RunsScreen)), None)
    if cmd == "runs":
        while len(app.screen_stack) > 2 and not isinstance(app.screen, RunsScreen):
            app.pop_screen()
    elif cmd == "jobs":
        app.open_jobs()
    elif cmd == "failures":
        app.open_failures()
    elif cmd == "sql":
        app.open_sql(rest or None)
    elif cmd == "lineage":
        app.open_lineage(dataset=rest or None)
    elif cmd == "diff" and runs is not None:
        runs.action_diff()
    elif cmd == "submit":
        app.open_submit(dataset=rest or None)
    elif cmd == "filter" and runs is not None:
        while app.screen is not runs:
            app.pop_screen()
        runs.apply_filter(rest)
    elif cmd == "help":
        app.action_help()
    elif cmd == "quit":
        app.exit()


def skip_pyarrow_pandas_probe() -> None:
    """pyarrow imports pandas (about 0.5 s) the first time it converts a Python value, only to ask whether that value
    is a pandas object; the TUI never passes one. Let that first probe find no pandas: `to_pandas()` and the like
    still import it when something really asks for pandas (pyarrow retries the import then)."""
    if "pandas" in sys.modules:
        return
    import importlib.abc

    import pyarrow as pa

    class NoPandas(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "pandas":
                raise ImportError("pandas is not needed for this probe")
            return None

    finder = NoPandas()
    sys.meta_path.insert(0, finder)
    try:
        pa.scalar(0)
    finally:
        sys.meta_path.remove(finder)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="kdgat-tui", description="kdgat's experiment dashboard (keyboard only; ? lists keys)."
    )
    p.add_argument(
        "--tracking-uri",
        "-u",
        help="MLflow tracking URI or SQLite path (else MLFLOW_TRACKING_URI, kdgat.toml, sqlite:///mlflow.db).",
    )
    p.add_argument(
        "--read-uri",
        help="The database to read when jobs write through an MLflow server, e.g. postgresql://reader@host/mlflow "
        "(else KDGAT_READ_URI, kdgat.toml [tracking] read_uri, the tracking URI).",
    )
    p.add_argument("--readonly", action="store_true", help="Hide and refuse every key that submits or cancels jobs.")
    p.add_argument(
        "--refresh",
        type=float,
        default=DEFAULT_REFRESH_S,
        metavar="SECONDS",
        help=f"Auto-refresh interval in seconds (default {DEFAULT_REFRESH_S:g}; 0 turns it off).",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    skip_pyarrow_pandas_probe()
    try:
        source = Source(args.tracking_uri, args.read_uri)
        source.check()  # a missing DB is one sentence on stderr, before the screen switches to the app
    except KdgatError as exc:
        print(f"kdgat-tui: {exc}", file=sys.stderr)
        sys.exit(2)
    app = KdgatApp(readonly=args.readonly, refresh_s=args.refresh, source=source)
    app.run()
    if app.error_reason:
        print(f"kdgat-tui: {app.error_reason}", file=sys.stderr)
        sys.exit(app.return_code or 2)


if __name__ == "__main__":
    main()
