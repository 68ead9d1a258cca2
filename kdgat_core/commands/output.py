"""How `kdgat` commands print: one output format enum, tables rendered as text (rich, csv, json, markdown, latex),
written to stdout or --output, and `fail` for a one-sentence error. Rich and csv load only when a table is rendered.
"""

from __future__ import annotations

import io
import sys
from enum import Enum
from pathlib import Path
from typing import Any, NoReturn

import typer


class OutputFormat(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"
    markdown = "markdown"
    latex = "latex"


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one sentence on stderr and exit non-zero."""
    typer.echo(f"kdgat: {message}", err=True)
    raise typer.Exit(code)


# Terminal tables shorten these (csv/json/markdown/latex keep full values): an 8-character id is unique in practice
# and `kdgat` accepts id prefixes; seconds and microseconds only make a table wrap.
SHORT_ID_COLUMNS = frozenset({"run_id", "teacher_run_id", "student_run_id"})


def _cell(value: Any, column: str = "", terminal: bool = False) -> str:
    if value is None:
        return ""
    if terminal:
        if column in SHORT_ID_COLUMNS and isinstance(value, str) and len(value) == 32:
            return value[:8]
        if hasattr(value, "strftime"):
            return value.strftime("%Y-%m-%d %H:%M")
    if isinstance(value, float):
        if value != value:  # NaN
            return "nan"
        return f"{value:.4f}" if abs(value) < 1e6 else f"{value:.4g}"
    return str(value)


def _records(data: Any) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows of a pandas DataFrame, a pyarrow Table, or a list of dicts."""
    if hasattr(data, "column_names") and hasattr(data, "to_pylist"):  # pyarrow.Table
        cols = list(data.column_names)
        return cols, [[row[c] for c in cols] for row in data.to_pylist()]
    if hasattr(data, "columns") and hasattr(data, "itertuples"):  # pandas.DataFrame
        cols = [str(c) for c in data.columns]
        return cols, [list(t) for t in data.itertuples(index=False, name=None)]
    if isinstance(data, list):
        keys: list[str] = []
        for row in data:
            for k in row:
                if k not in keys:
                    keys.append(k)
        return keys, [[row.get(c) for c in keys] for row in data]
    raise TypeError(f"cannot format {type(data).__name__}")


def render(data: Any, fmt: OutputFormat, title: str | None = None) -> str:
    """Render tabular data as text in the requested format (the table format uses rich)."""
    cols, rows = _records(data)
    if fmt is OutputFormat.csv:
        import csv

        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(cols)
        for r in rows:
            w.writerow(["" if v is None else v for v in r])
        return buf.getvalue()
    if fmt is OutputFormat.json:
        from kdgat_core.query.encode import json_records

        return json_records(cols, rows)
    if fmt is OutputFormat.markdown:
        lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
        lines += ["| " + " | ".join(_cell(v).replace("|", "\\|") for v in r) + " |" for r in rows]
        return ("" if not title else f"**{title}**\n\n") + "\n".join(lines) + "\n"
    if fmt is OutputFormat.latex:
        from kdgat_core.query.encode import latex_escape as esc

        out = ["\\begin{table}[t]", "\\centering"]
        if title:
            out.append(f"\\caption{{{esc(title)}}}")
        out += [
            f"\\begin{{tabular}}{{{'l' * len(cols)}}}",
            "\\toprule",
            " & ".join(esc(c) for c in cols) + " \\\\",
            "\\midrule",
        ]
        out += [" & ".join(esc(_cell(v)) for v in r) + " \\\\" for r in rows]
        out += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
        return "\n".join(out) + "\n"
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_lines=False, header_style="bold")
    for c in cols:
        table.add_column(c, overflow="fold")
    for r in rows:
        table.add_row(*(_cell(v, c, terminal=True) for c, v in zip(cols, r)))
    buf = io.StringIO()
    Console(file=buf, width=_terminal_width(), force_terminal=False, color_system=None).print(table)
    return buf.getvalue()


def _terminal_width() -> int:
    import shutil

    return max(80, shutil.get_terminal_size((160, 40)).columns)


def emit(
    data: Any, fmt: OutputFormat = OutputFormat.table, output: Path | None = None, title: str | None = None
) -> None:
    """Print (or write to --output) tabular data in the requested format."""
    write_output(render(data, fmt, title), output)


def write_output(text: str, output: Path | None = None, force: bool | None = None) -> None:
    """Print rendered text, or write it to --output: never onto the tracking DB, never over an existing file without
    --force, through a temporary file and a rename (kdgat_core.safe_io). `force` and the tracking URI default to the
    running command's own --force and --tracking-uri options."""
    if output is not None:
        from kdgat_core.commands.click_compat import get_current_context
        from kdgat_core.safe_io import write_text_output

        ctx = get_current_context(silent=True)
        params = ctx.params if ctx is not None else {}
        force = bool(params.get("force")) if force is None else force
        write_text_output(text, output, force=force, tracking_uri=params.get("tracking_uri"))
        typer.echo(f"wrote {output}", err=True)
    else:
        sys.stdout.write(text)
