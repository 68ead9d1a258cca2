"""Metric curves drawn in the terminal with plotext: loss and F1 over epochs, a student over its teacher."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

# 256-colour-safe names plotext knows; the teacher is drawn grey under the run's own colours.
SERIES_COLOURS = ("cyan", "orange", "green", "magenta", "yellow", "blue")
TEACHER_COLOUR = "gray"


def render_curves(
    series: list[tuple[str, list[int], list[float], bool]], width: int, height: int, title: str = ""
) -> Text:
    """One plot: (label, steps, values, is_teacher) per line, as ANSI text the terminal draws (plotext 6 API)."""
    import plotext as plt

    drawn = [(label, steps, values, teacher) for label, steps, values, teacher in series if steps]
    if not drawn:
        return Text("no points logged", style="dim")
    fig = plt.figure
    fig.clear()
    fig.plot_size(max(width, 20), max(height, 6))
    fig.theme("dark")
    if title:
        fig.title(title)
    colour = iter(SERIES_COLOURS)
    for label, steps, values, teacher in drawn:
        pixel = TEACHER_COLOUR if teacher else next(colour, "white")
        fig.draw(fig.signal(list(steps), list(values), marker=plt.marker("hd", pixel=pixel)).lines().label(label))
    fig.label("epoch", axis="x")
    return Text.from_ansi(fig.build().string())


class Curves(Static):
    """Redraws its plot at its own size whenever the size or the data change."""

    DEFAULT_CSS = "Curves { height: 1fr; min-height: 8; }"

    def __init__(self, title: str = "", **kwargs) -> None:
        super().__init__("", **kwargs)
        self.title = title
        self.series: list[tuple[str, list[int], list[float], bool]] = []

    def set_series(self, series: list[tuple[str, list[int], list[float], bool]]) -> None:
        self.series = series
        self._draw()

    def on_resize(self) -> None:
        self._draw()

    def _draw(self) -> None:
        w, h = self.size.width, self.size.height
        if w < 10 or h < 4:
            return
        self.update(render_curves(self.series, w, h, self.title))
