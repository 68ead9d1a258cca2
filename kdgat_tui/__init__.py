"""kdgat-tui: the Textual dashboard."""
