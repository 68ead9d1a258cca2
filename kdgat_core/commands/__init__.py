"""kdgat command groups: one module per area with top-level command functions; kdgat_core.cli registers them."""
