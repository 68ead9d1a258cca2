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
