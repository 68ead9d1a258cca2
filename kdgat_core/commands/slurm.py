"""`kdgat` commands for the slurm area. Registered on the app by kdgat_core.cli; heavy imports stay inside functions."""
from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    pass
