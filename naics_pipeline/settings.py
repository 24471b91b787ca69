"""Runtime settings read from environment variables (the Dagster layer wraps these in resources)."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CENSUS_2022_URL = "https://www.census.gov/naics/2022NAICS"
PACKAGED = "packaged"


def storage_root() -> Path:
    """Where every table, index and checkpoint lives (env NAICS_STORAGE_ROOT, default ./data)."""
    return Path(os.environ.get("NAICS_STORAGE_ROOT", REPO_ROOT / "data")).resolve()


def source_location() -> str:
    """A folder, an http(s) base URL or 'packaged' (env NAICS_SOURCE, default the Census 2022 URL)."""
    return os.environ.get("NAICS_SOURCE", CENSUS_2022_URL)


def curricula_dir() -> Path:
    return Path(os.environ.get("NAICS_CURRICULA_DIR", REPO_ROOT / "curricula")).resolve()
