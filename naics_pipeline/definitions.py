"""The code location: every definition under naics_pipeline/defs/, autoloaded."""
from pathlib import Path

import dagster as dg


def build_defs() -> dg.Definitions:
    return dg.Definitions.merge(
        dg.load_from_defs_folder(path_within_project=Path(__file__).parent),
        # One process: steps are I/O- and DuckDB-bound and each would otherwise pay ~3 s of start-up.
        dg.Definitions(executor=dg.in_process_executor),
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_defs()
