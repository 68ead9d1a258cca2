"""Metric curves drawn in the terminal with plotext: loss and F1 over epochs, a student over its teacher."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import Static

# 256-colour-safe names plotext knows; the teacher is drawn grey under the run's own colours.
SERIES_COLOURS = ("cyan", "orange", "green", "magenta", "yellow", "blue")
TEACHER_COLOUR = "gray"


def _figure(plt: Any, width: int, height: int, title: str | None) -> Any:
    """plotext's one figure, cleared, sized (never below 20x6) and titled for a new plot."""
    fig = plt.figure
    fig.clear()
    fig.plot_size(max(width, 20), max(height, 6))
    fig.theme("dark")
    if title:
        fig.title(title)
    return fig


def render_curves(
    series: list[tuple[str, list[int], list[float], bool]], width: int, height: int, title: str = ""
) -> Text:
    """One plot: (label, steps, values, is_teacher) per line, as ANSI text the terminal draws (plotext 6 API)."""
    import plotext as plt

    drawn = [(label, steps, values, teacher) for label, steps, values, teacher in series if steps]
    if not drawn:
        return Text("no points logged", style="dim")
    fig = _figure(plt, width, height, title)
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


def render_lines(
    lines: list, width: int, height: int, title: str = "", log_y: bool = False, smooth: float = 0.0
) -> Text:
    """Curves of kdgat_core.query.curves (runs, or groups with a ± std band drawn as thin lines), the colours
    `kdgat plot` uses; teachers grey, first, so the runs are drawn over them."""
    import math

    import plotext as plt

    from kdgat_core.query.curves import ema

    if not lines:
        return Text("no points logged", style="dim")

    def tf(values: list[float]) -> list[float]:
        values = ema(values, smooth) if smooth else list(values)
        return [math.log10(v) if log_y and v == v and v > 0 else (float("nan") if log_y else v) for v in values]

    fig = _figure(plt, width, height, title)
    for c in sorted(lines, key=lambda c: not c.teacher):
        rgb = tuple(int(c.colour[i : i + 2], 16) for i in (1, 3, 5))
        y = tf(c.y)
        keep = [(x, v) for x, v in zip(c.x, y) if v == v]
        if not keep:
            continue
        xs, ys = [k[0] for k in keep], [k[1] for k in keep]
        fig.draw(fig.signal(xs, ys, marker=plt.marker("hd", pixel=rgb)).lines().label(c.label[:32]))
        if c.std is not None and any(s for s in c.std):
            raw = ema(c.y, smooth) if smooth else c.y
            for sign in (-1, 1):
                band = [m + sign * s for m, s in zip(raw, c.std)]
                band = [math.log10(v) if v > 0 else float("nan") for v in band] if log_y else band
                pts = [(x, v) for x, v in zip(c.x, band) if v == v]
                if pts:
                    fig.draw(fig.signal([p[0] for p in pts], [p[1] for p in pts], marker=plt.marker("·", pixel=rgb)))
    return Text.from_ansi(fig.build().string())
