"""Modal dialogs: confirm before a mutation (k9s habit), pick one item, pick several, type a value."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList, SelectionList, Static
from textual.widgets.option_list import Option


class Confirm(ModalScreen[bool]):
    """Says exactly what will happen; only `y` (or enter on Yes) does it."""

    BINDINGS = [
        Binding("y", "answer(True)", "Yes, do it"),
        Binding("n,escape", "answer(False)", "No"),
        Binding("enter", "answer(False)", "No", show=False),
    ]

    def __init__(self, title: str, body: str) -> None:
        super().__init__()
        self.title_text, self.body = title, body

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="dialog-title")
            yield Static(self.body, classes="dialog-body", markup=False)
            yield Label("[b]y[/] yes    [b]n[/]/[b]esc[/] no", classes="dialog-keys")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class Pick(ModalScreen[str | None]):
    """Choose one item from a list; typing narrows it."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, items: list[tuple[str, str]], current: str | None = None) -> None:
        super().__init__()
        self.title_text, self.items, self.current = title, items, current

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="dialog-title")
            yield Input(placeholder="type to narrow", id="narrow")
            yield OptionList(*self._options(""), id="choices")

    def _options(self, text: str) -> list[Option]:
        low = text.lower()
        return [Option(label, id=value) for value, label in self.items if low in label.lower() or low in value.lower()]

    def on_mount(self) -> None:
        choices = self.query_one(OptionList)
        if self.current:
            for i, (value, _) in enumerate(self.items):
                if value == self.current:
                    choices.highlighted = i
        choices.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        choices = self.query_one(OptionList)
        choices.clear_options()
        choices.add_options(self._options(event.value))
        if choices.option_count:
            choices.highlighted = 0

    def on_input_submitted(self, event: Input.Submitted) -> None:
        choices = self.query_one(OptionList)
        if choices.option_count:
            self.dismiss(choices.get_option_at_index(choices.highlighted or 0).id)

    def on_key(self, event) -> None:
        # printable keys typed on the list go to the narrowing box
        if (
            event.character
            and event.character.isprintable()
            and not self.query_one(Input).has_focus
            and event.key not in ("space",)
        ):
            narrow = self.query_one(Input)
            narrow.focus()
            narrow.insert_text_at_cursor(event.character)
            event.stop()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)


class PickMany(ModalScreen[list[str] | None]):
    """Tick several items (space), enter to apply."""

    BINDINGS = [Binding("escape", "cancel", "Cancel"), Binding("enter", "apply", "Apply", priority=True)]

    def __init__(self, title: str, items: list[tuple[str, str]], chosen: list[str]) -> None:
        super().__init__()
        self.title_text, self.items, self.chosen = title, items, chosen

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="dialog-title")
            yield SelectionList[str](*[(label, value, value in self.chosen) for value, label in self.items])
            yield Label("[b]space[/] tick    [b]enter[/] apply    [b]esc[/] cancel", classes="dialog-keys")

    def action_apply(self) -> None:
        picked = self.query_one(SelectionList).selected
        # keep the order of the list, not the order of ticking
        self.dismiss([value for value, _ in self.items if value in picked])

    def action_cancel(self) -> None:
        self.dismiss(None)


class Ask(ModalScreen[str | None]):
    """One line of text (an export path, a dataset name)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, value: str = "", placeholder: str = "") -> None:
        super().__init__()
        self.title_text, self.value, self.placeholder = title, value, placeholder

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="dialog-title")
            yield Input(value=self.value, placeholder=self.placeholder)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)

    def action_cancel(self) -> None:
        self.dismiss(None)
