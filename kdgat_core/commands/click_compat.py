"""The parser's exceptions and the current command's context, from wherever this Typer keeps click.

Typer vendors click (typer._click) from 0.20 on; older Typer uses click itself.
"""

from __future__ import annotations

try:
    from typer._click import exceptions as click_exceptions
    from typer._click.globals import get_current_context
except ImportError:  # pragma: no cover - older Typer
    from click import exceptions as click_exceptions  # type: ignore[no-redef]
    from click import get_current_context  # type: ignore[no-redef]

__all__ = ["click_exceptions", "get_current_context"]
