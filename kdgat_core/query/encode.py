"""Writing query results as text other programs parse: JSON that strict parsers accept, LaTeX that compiles.

JSON has no NaN or infinity (Python's `json` writes `NaN`/`Infinity`, which jq, JavaScript and strict parsers
reject). One encoding everywhere (`kdgat ... -f json`, the TUI's .json export): NaN -> null (no value: a metric
MLflow stored as NaN), +inf/-inf -> the strings "inf"/"-inf" (a diverged loss stays visible; `float("inf")` and
pandas read them back), datetimes -> ISO 8601 strings, anything else JSON lacks -> its str().
"""

from __future__ import annotations

import json
import math
from typing import Any

# one pass over the text: replacing one character at a time would escape the braces of \textbackslash{} again
_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\^{}",
}


def json_value(value: Any) -> Any:
    """`value` as something `json.dumps(..., allow_nan=False)` writes: see the module docstring for the encoding."""
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if type(value).__name__ == "Decimal":
        return json_value(float(value))
    return str(value)


def json_records(columns: list[str], rows: list[list[Any]], indent: int | None = 2) -> str:
    """Rows as a JSON array of objects (valid JSON: no NaN or Infinity literals), with a trailing newline."""
    records = [{c: json_value(v) for c, v in zip(columns, row)} for row in rows]
    return json.dumps(records, indent=indent, allow_nan=False) + "\n"


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters in one pass (a backslash becomes \\textbackslash{}, braces intact)."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)
