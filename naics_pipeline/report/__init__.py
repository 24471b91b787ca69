"""Markdown tables and PNG plots for asset metadata."""
