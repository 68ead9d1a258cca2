"""The base of every kdgat screen: it declares which of its actions change something (submit, cancel), and it is
the one place where a failed worker becomes something the user can read.

`--readonly`, the footer, the help screen (`?`) and the command palette (ctrl+p) all read that one declaration:
`check_action` refuses a mutating action under --readonly, and a refused action's key is hidden everywhere.

Workers (`@work(thread=True, exit_on_error=False, group=...)`) post their results as `Message`s (thread-safe) and
never catch what they raise: `on_worker_state_changed` turns a worker that ended in ERROR into one line on the
screen's status line (`STATUS_LINE`), worded by `error_line`; `worker_failed` is where a screen does more.
"""

from __future__ import annotations

from typing import ClassVar

from textual.screen import Screen
from textual.widgets import Static
from textual.worker import Worker, WorkerState


class KdgatScreen(Screen):
    # Actions that submit, cancel or otherwise change something outside the TUI; hidden and refused under --readonly.
    MUTATING: ClassVar[frozenset[str]] = frozenset()
    # The Static that says what the screen shows, and why it shows nothing when a read failed.
    STATUS_LINE: ClassVar[str] = ""
    # The first word of that line when a worker failed (`diff: database locked by a writer`).
    ERROR_PREFIX: ClassVar[str] = ""

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in self.MUTATING and getattr(self.app, "readonly", False):
            return False
        return self.action_state(action, parameters)

    def action_state(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """A screen's own rule for an allowed action: True shown, None shown dimmed, False hidden."""
        return True

    # ---- the one error path of the screen's workers ---------------------------------------------------------
    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        error = event.worker.error
        if event.state is WorkerState.ERROR and error is not None:
            self.worker_failed(event.worker, error)

    def worker_failed(self, worker: Worker, error: BaseException) -> None:
        """A worker raised: say why on the status line (a screen overrides this to do more, e.g. notify)."""
        if self.STATUS_LINE:
            self.query_one(self.STATUS_LINE, Static).update(self.error_line(worker, error))
        else:
            self.notify(self.error_line(worker, error), severity="error")

    def error_line(self, worker: Worker, error: BaseException) -> str:
        """The status line after a failed read: `<prefix>: <the error's first line>` (a lock is named as such)."""
        return f"{self.ERROR_PREFIX}: {self.app.source.describe_error(error)}"


def first_line(error: BaseException) -> str:
    """An error from the scheduler or a log file as one line (its repr when it has no message)."""
    return str(error).splitlines()[0] if str(error) else repr(error)


def is_mutating(screen_cls: type[Screen], action: str) -> bool:
    """Whether a binding's action (e.g. `submit`, `tab('params')`) is one its screen declares mutating."""
    return action.split("(")[0] in getattr(screen_cls, "MUTATING", frozenset())
