"""One module per screen: runs (home), run_detail, diff, lineage, sql_console, jobs, submit, help."""
