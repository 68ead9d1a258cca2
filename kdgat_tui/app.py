"""kdgat-tui entry point (the Textual app arrives with part 5)."""
from __future__ import annotations


def main() -> None:
    raise SystemExit("kdgat-tui: not built yet.")
