"""The `kdgat` command line: thin. Parses arguments, calls the layers, prints what they return.

Command groups live in `kdgat_core/commands/<area>.py`, each with a `register(app)`; this module holds the app,
the shared options, output formatting and the one place where a KdgatError becomes a sentence on stderr.
Heavy modules (torch, torch_geometric, mlflow) are imported inside the commands that need them, never here.
"""

from __future__ import annotations

import io
import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from kdgat_core.config import KdgatError

app = typer.Typer(
    name="kdgat",
    help="kdgat: CAN intrusion-detection experiments on GNNs - data, training, tracking, analytics, SLURM.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


class OutputFormat(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"
    markdown = "markdown"
    latex = "latex"


# Shared options: every command that reads or writes runs takes the same spelling.
TrackingUriOpt = Annotated[
    Optional[str],
    typer.Option(
        "--tracking-uri",
        "-u",
        help="MLflow tracking URI or SQLite path (else MLFLOW_TRACKING_URI, kdgat.toml, sqlite:///mlflow.db).",
    ),
]
FormatOpt = Annotated[
    OutputFormat,
    typer.Option(
        "--format", "-f", help="Output format: table on a terminal, or csv|json|markdown|latex for pipes and papers."
    ),
]
OutputOpt = Annotated[
    Optional[Path], typer.Option("--output", "-o", help="Write the output to this file instead of stdout.")
]


def fail(message: str, code: int = 2) -> typer.Exit:
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
        cols: list[str] = []
        for row in data:
            for k in row:
                if k not in cols:
                    cols.append(k)
        return cols, [[row.get(c) for c in cols] for row in data]
    raise TypeError(f"cannot format {type(data).__name__}")


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and value != value:
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


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
        return json.dumps([{c: _jsonable(v) for c, v in zip(cols, r)} for r in rows], indent=2, default=str) + "\n"
    if fmt is OutputFormat.markdown:
        lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
        lines += ["| " + " | ".join(_cell(v).replace("|", "\\|") for v in r) + " |" for r in rows]
        return ("" if not title else f"**{title}**\n\n") + "\n".join(lines) + "\n"
    if fmt is OutputFormat.latex:

        def esc(s: str) -> str:
            for a, b in (
                ("\\", r"\textbackslash{}"),
                ("&", r"\&"),
                ("%", r"\%"),
                ("$", r"\$"),
                ("#", r"\#"),
                ("_", r"\_"),
                ("{", r"\{"),
                ("}", r"\}"),
                ("~", r"\textasciitilde{}"),
                ("^", r"\^{}"),
            ):
                s = s.replace(a, b)
            return s

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


def write_output(text: str, output: Path | None = None) -> None:
    """Print rendered text, or write it to --output (an unwritable path is one sentence, not a traceback)."""
    if output is not None:
        try:
            output.write_text(text)
        except OSError as exc:
            raise KdgatError(f"Cannot write {output}: {exc.strerror or exc}.") from None
        typer.echo(f"wrote {output}", err=True)
    else:
        sys.stdout.write(text)


@app.command("version")
def version() -> None:
    """Print kdgat's version."""
    from kdgat_core import __version__

    typer.echo(__version__)


if __name__ == "__main__":
    # `python -m kdgat_core.cli`: command modules import kdgat_core.cli; let them find this module, not a second copy
    sys.modules.setdefault("kdgat_core.cli", sys.modules[__name__])


def _register_commands() -> None:
    from kdgat_core.commands import analysis, analytics, data, slurm, train

    for module in (analytics, analysis, data, train, slurm):
        module.register(app)


_register_commands()


def main() -> None:
    """Entry point: user mistakes become one sentence on stderr and exit code 2, never a traceback."""
    try:
        app()
    except KdgatError as exc:
        typer.echo(f"kdgat: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("kdgat: interrupted.", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)


if __name__ == "__main__":
    main()
