"""The Dagster definitions: assets, checks, resources, jobs, sensors and schedules."""

import dagster as dg

from naics_pipeline.defs.assets_data import naics_descriptions, naics_distances, naics_graph, naics_source, naics_triplets
from naics_pipeline.defs.checks_data import DATA_CHECKS
from naics_pipeline.defs.assets_curricula import curriculum_assets
from naics_pipeline.defs.resources import SourceResource, StorageResource
from naics_pipeline.settings import curricula_dir

DATA_ASSETS = [naics_source, naics_descriptions, naics_graph, naics_distances, naics_triplets]

data_job = dg.define_asset_job("data_job", selection=dg.AssetSelection.groups("source", "graph", "tables"),
                               description="Source files -> descriptions, graph, distances, triplets")


curricula_job = dg.define_asset_job("curricula_job", selection=dg.AssetSelection.groups("curricula"),
                                    description="One sampling index per curriculum YAML")


def build_defs() -> dg.Definitions:
    return dg.Definitions(
        assets=[*DATA_ASSETS, *curriculum_assets(curricula_dir())],
        asset_checks=DATA_CHECKS,
        jobs=[data_job, curricula_job],
        resources={"storage": StorageResource(), "source": SourceResource()},
        # One process: steps are I/O- and DuckDB-bound and each would otherwise pay ~3 s of start-up.
        executor=dg.in_process_executor,
    )


defs = build_defs()
