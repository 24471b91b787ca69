from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.census_fixtures import write_census_folder

REAL_NAICS = Path(os.environ.get("NAICS_TEST_REAL_DIR",
                                 Path(__file__).resolve().parents[2] / "shared" / "naics" / "2022"))


@pytest.fixture
def census_dir(tmp_path: Path) -> Path:
    """A small folder of generated spreadsheets in the Census layout."""
    return write_census_folder(tmp_path / "census")


@pytest.fixture
def real_naics() -> Path:
    if not (REAL_NAICS / "2-6 digit_2022_Codes.xlsx").is_file():
        pytest.skip(f"real Census files not found at {REAL_NAICS}")
    return REAL_NAICS


def data_definitions():
    """The data graph's assets and checks (source -> triplets), for runs over generated files."""
    import dagster as dg

    from naics_pipeline.defs import checks
    from naics_pipeline.defs.assets import source, tables

    return (list(dg.load_assets_from_modules([source, tables])),
            list(dg.load_asset_checks_from_modules([checks])))
