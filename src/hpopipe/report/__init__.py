"""The report stage: plots and the self-contained HTML page."""
