"""Widgets named after what the user sees: the runs table, metric curves, the filter bar, dialogs."""
