"""`?`: every key of every screen (the current screen's first), the filter syntax, and the command line."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static

from kdgat_tui.screens.base import KdgatScreen, is_mutating

FILTER_HELP = """\
Filter (/, the same as kdgat's --where): terms side by side are ANDed; | is OR; parentheses group; !( ) negates.
  hcrl_sa            free text on run names and tags (case-insensitive); !word excludes
  dataset=hcrl_sa    a column equals a value; dataset=hcrl_sa,set_01 or dataset in (hcrl_sa, set_01) means either
  (dataset=hcrl_sa | dataset=set_01) lr>=0.001   params by dotted key or unique leaf; not in (...) excludes
  f1>0.9 val_loss<=0.2   compare numbers (also >=, <, !=)
  status!=failed     not equal (runs without the column stay)
  name~kd$           regular expression; !~ excludes
  Aliases: size=model_size, kd=use_kd, name=run_name, id=run_id, job=slurm_job_id, teacher=teacher_run_id
Command line (:): runs, jobs, failures, sql [query], lineage [dataset], diff, submit [dataset], filter <expr>, help, quit"""


def screen_classes():
    from kdgat_tui.screens.chart import ChartScreen
    from kdgat_tui.screens.diff import DiffScreen
    from kdgat_tui.screens.failures import FailuresScreen
    from kdgat_tui.screens.jobs import JobsScreen, LogScreen
    from kdgat_tui.screens.lineage import LineageScreen
    from kdgat_tui.screens.run_detail import RunDetailScreen
    from kdgat_tui.screens.runs import RunsScreen
    from kdgat_tui.screens.sql_console import SqlConsole
    from kdgat_tui.screens.submit import SubmitScreen

    return [
        ("Runs", RunsScreen),
        ("Run detail", RunDetailScreen),
        ("Diff", DiffScreen),
        ("Chart", ChartScreen),
        ("Lineage", LineageScreen),
        ("SQL console", SqlConsole),
        ("Jobs", JobsScreen),
        ("Job log", LogScreen),
        ("Failures", FailuresScreen),
        ("Submit", SubmitScreen),
    ]


def key_rows(screen_cls, readonly: bool) -> list[tuple[str, str, str]]:
    """(key, what, why) for a screen class's bindings; the ones it declares mutating vanish under --readonly."""
    rows = []
    for b in screen_cls.BINDINGS:
        binding = b if isinstance(b, Binding) else Binding(*b)
        if readonly and is_mutating(screen_cls, binding.action):
            continue
        rows.append((_key_label(binding.key), binding.description, binding.tooltip or ""))
    return rows


def _key_label(key: str) -> str:
    return ", ".join(k.replace("ctrl+", "ctrl-") for k in key.split(","))


class HelpScreen(KdgatScreen):
    BINDINGS = [Binding("escape,q,question_mark", "app.pop_screen", "Back")]

    def __init__(self, current: Screen | None = None) -> None:
        super().__init__()
        self.current_cls = type(current) if current is not None else None

    def compose(self) -> ComposeResult:
        yield Static("Keys · esc back", classes="screen-title")
        with VerticalScroll():
            readonly = getattr(self.app, "readonly", False)
            if readonly:  # first: the help grew past one screen, and this is what a read-only user must see
                yield Static("read-only mode: submit and cancel are switched off.", classes="section muted")
            classes = screen_classes()
            classes.sort(key=lambda item: item[1] is not self.current_cls)
            for title, cls in classes:
                table = Table(
                    title=title,
                    title_justify="left",
                    title_style="bold",
                    box=None,
                    show_header=False,
                    pad_edge=False,
                    expand=True,
                )
                table.add_column("key", style="bold", no_wrap=True, width=12)
                table.add_column("does", no_wrap=True)
                table.add_column("detail", style="dim", ratio=1)
                for key, what, why in key_rows(cls, readonly):
                    table.add_row(key, what, why)
                yield Static(table, classes="section")
            everywhere = Table(
                title="Everywhere",
                title_justify="left",
                title_style="bold",
                box=None,
                show_header=False,
                pad_edge=False,
                expand=True,
            )
            everywhere.add_column("key", style="bold", no_wrap=True, width=12)
            everywhere.add_column("does", ratio=1)
            for key, what in (
                ("?", "this list"),
                ("ctrl-p", "command palette: the actions valid on this screen"),
                (":", "command line (k9s style)"),
                ("esc", "back"),
                ("ctrl-q", "quit"),
            ):
                everywhere.add_row(key, what)
            yield Static(everywhere, classes="section")
            yield Static(Text(FILTER_HELP), classes="section")
        yield Footer()
