"""The code location: every definition under naics_pipeline/defs/, autoloaded."""
from pathlib import Path

import dagster as dg

from naics_pipeline.defs.placement import executor


def build_defs() -> dg.Definitions:
    return dg.Definitions.merge(
        dg.load_from_defs_folder(path_within_project=Path(__file__).parent),
        # One process by default: steps are I/O- and DuckDB-bound and each would otherwise pay ~3 s of
        # start-up. NAICS_EXECUTOR=multiprocess or k8s for a deployment (deploy/, defs/placement.py).
        dg.Definitions(executor=executor()),
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_defs()
