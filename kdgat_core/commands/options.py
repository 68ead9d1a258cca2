"""Options shared by `kdgat` commands: every command that reads or writes runs spells them the same way."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from kdgat_core.commands.output import OutputFormat

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
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite the --output file if it exists.")]
# Row counts: bounded, so a huge number is one sentence from the parser, not an overflow deep in DuckDB or Arrow
MAX_ROWS = 1_000_000_000
