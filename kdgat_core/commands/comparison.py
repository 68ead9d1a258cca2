"""How a paired or unpaired comparison prints (`kdgat ab`, `kdgat lineage --stats`): the sentence, then the numbers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from kdgat_core.commands.output import OutputFormat, emit, render, write_output

if TYPE_CHECKING:
    from kdgat_core.query.stats import Comparison


def print_comparison(result: Comparison, fmt: OutputFormat, output: Path | None) -> None:
    """The sentence first on a terminal (then the numbers); json is one object."""
    if fmt is OutputFormat.json:
        write_output(json.dumps(result.as_dict(), indent=2) + "\n", output)
        return
    if fmt is OutputFormat.table:
        write_output(result.sentence + "\n\n" + render(result.table(), fmt), output)
        return
    emit(result.table(), fmt, output, title=result.sentence)
