"""The metric expression language: one way to name a number about a run, wherever a metric is accepted.

``f1`` (the final value, MLflow's latest), ``last(val_f1)`` (the same, from the history), ``max(val_f1)``,
``min(val_loss)``, ``argmin(val_loss)`` / ``argmax(val_f1)`` (the step of the best point), ``val_f1@20`` (the value
at step 20); per-scenario names (``test_02_unknown_vehicle_known_attack/f1``) work inside all of them.
Better is lower for a value of a lower-is-better metric (``min(val_loss)`` sorts ascending like ``val_loss``);
a step (``argmin``/``argmax``) sorts ascending: the earlier the best epoch, the better.

>>> parse_metric("max(val_f1)")
MetricExpr(key='val_f1', agg='max', step=None)
>>> parse_metric("val_f1@20").text, parse_metric("min(val_loss)").direction
('val_f1@20', 'asc')
>>> parse_metric("mean(f1)")
Traceback (most recent call last):
...
kdgat_core.config.KdgatError: Unknown function 'mean' in metric 'mean(f1)'; use one of last, min, max, argmin, argmax, or NAME@STEP.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kdgat_core.config import KdgatError, metric_direction

# Functions over a run's history of one metric (the summary columns of the `metric_summary` view)
FUNCTIONS = ("last", "min", "max", "argmin", "argmax")
_NAME = r"[A-Za-z_][\w./-]*"
_CALL = re.compile(rf"^\s*(?P<fn>[A-Za-z_]\w*)\s*\(\s*(?P<key>{_NAME})\s*\)\s*$")
_AT = re.compile(rf"^\s*(?P<key>{_NAME})\s*@\s*(?P<step>-?\d+)\s*$")
_PLAIN = re.compile(rf"^\s*(?P<key>{_NAME})\s*$")


@dataclass(frozen=True)
class MetricExpr:
    """A parsed metric expression: a metric key and what to take of it (``final``, a function, or ``at`` a step)."""

    key: str
    agg: str = "final"  # final | last | min | max | argmin | argmax | at
    step: int | None = None

    @property
    def text(self) -> str:
        """The canonical spelling, used as the column name of its values."""
        if self.agg == "final":
            return self.key
        if self.agg == "at":
            return f"{self.key}@{self.step}"
        return f"{self.agg}({self.key})"

    @property
    def direction(self) -> str:
        """'asc' when lower is better (a loss, or a step), else 'desc'."""
        return "asc" if self.agg in ("argmin", "argmax") else metric_direction(self.key)

    @property
    def from_history(self) -> bool:
        """True when the value comes from the per-step history, not from the final value."""
        return self.agg != "final"

    def __str__(self) -> str:
        return self.text


def parse_metric(text: str | MetricExpr) -> MetricExpr:
    """Parse a metric expression; a mistake is one sentence (KdgatError) that says what is accepted."""
    if isinstance(text, MetricExpr):
        return text
    raw = str(text or "")
    m = _PLAIN.match(raw)
    if m:
        return MetricExpr(m.group("key"))
    m = _CALL.match(raw)
    if m:
        fn = m.group("fn").lower()
        if fn not in FUNCTIONS:
            raise KdgatError(
                f"Unknown function '{m.group('fn')}' in metric '{raw}'; use one of {', '.join(FUNCTIONS)}, or NAME@STEP."
            )
        return MetricExpr(m.group("key"), fn)
    m = _AT.match(raw)
    if m:
        return MetricExpr(m.group("key"), "at", int(m.group("step")))
    if not raw.strip():
        raise KdgatError("Empty metric; give a name such as f1, or max(val_f1), min(val_loss), val_f1@20.")
    raise KdgatError(
        f"Cannot read metric '{raw}'; write a name (f1), a function of one (max(val_f1), argmin(val_loss)) "
        "or a value at a step (val_f1@20)."
    )
