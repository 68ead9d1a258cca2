"""The base of every kdgat screen: it declares which of its actions change something (submit, cancel).

`--readonly`, the footer, the help screen (`?`) and the command palette (ctrl+p) all read that one declaration:
`check_action` refuses a mutating action under --readonly, and a refused action's key is hidden everywhere.
"""

from __future__ import annotations

from typing import ClassVar

from textual.screen import Screen


class KdgatScreen(Screen):
    # Actions that submit, cancel or otherwise change something outside the TUI; hidden and refused under --readonly.
    MUTATING: ClassVar[frozenset[str]] = frozenset()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in self.MUTATING and getattr(self.app, "readonly", False):
            return False
        return self.action_state(action, parameters)

    def action_state(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """A screen's own rule for an allowed action: True shown, None shown dimmed, False hidden."""
        return True


def is_mutating(screen_cls: type[Screen], action: str) -> bool:
    """Whether a binding's action (e.g. `submit`, `tab('params')`) is one its screen declares mutating."""
    return action.split("(")[0] in getattr(screen_cls, "MUTATING", frozenset())
