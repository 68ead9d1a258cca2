"""`:` command line (k9s habit): `:jobs`, `:runs`, `:sql SELECT ...`, `:lineage hcrl_sa`, `:filter f1>0.9`, `:q`."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import ModalScreen
from textual.suggester import SuggestFromList
from textual.widgets import Input

COMMANDS = ("runs", "jobs", "failures", "sql", "lineage", "diff", "submit", "filter", "help", "quit")


class CommandLine(ModalScreen[str | None]):
    BINDINGS = [Binding("escape", "cancel", "Cancel")]
    DEFAULT_CSS = """
    CommandLine { align: left bottom; }
    CommandLine Input { dock: bottom; width: 100%; border: none; height: 1; padding: 0 1; }
    """

    def compose(self) -> ComposeResult:
        yield Input(
            placeholder=":" + " ".join(COMMANDS),
            suggester=SuggestFromList(COMMANDS, case_sensitive=False),
            id="command",
        )

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip().lstrip(":") or None)

    def action_cancel(self) -> None:
        self.dismiss(None)


def dispatch(app, text: str) -> None:
    """Run one command line; an unknown command is a notification, never an exception."""
    from kdgat_tui.screens.runs import RunsScreen

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
