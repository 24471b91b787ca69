"""The Dagster definitions: assets, checks, resources, jobs, sensors and schedules."""

import dagster as dg

from naics_pipeline.defs.assets_data import naics_descriptions, naics_distances, naics_graph, naics_source, naics_triplets
from naics_pipeline.defs.checks_data import DATA_CHECKS
from naics_pipeline.defs.assets_curricula import curriculum_assets
from naics_pipeline.defs.assets_training import training_assets
from naics_pipeline.defs.resources import SourceResource, StorageResource, TrainingResource
from naics_pipeline.settings import curricula_dir

DATA_ASSETS = [naics_source, naics_descriptions, naics_graph, naics_distances, naics_triplets]

data_job = dg.define_asset_job("data_job", selection=dg.AssetSelection.groups("source", "graph", "tables"),
                               description="Source files -> descriptions, graph, distances, triplets")


curricula_job = dg.define_asset_job("curricula_job", selection=dg.AssetSelection.groups("curricula"),
                                    description="One sampling index per curriculum YAML")


training_job = dg.define_asset_job("training_job", selection=dg.AssetSelection.groups("training", "evaluation"),
                                   description="Text embeddings, every stage, embeddings export and report")


def build_defs() -> dg.Definitions:
    folder = curricula_dir()
    train_assets, _ = training_assets(folder)
    return dg.Definitions(
        assets=[*DATA_ASSETS, *curriculum_assets(folder), *train_assets],
        asset_checks=DATA_CHECKS,
        jobs=[data_job, curricula_job, training_job],
        resources={"storage": StorageResource(), "source": SourceResource(), "training": TrainingResource()},
        # One process: steps are I/O- and DuckDB-bound and each would otherwise pay ~3 s of start-up.
        executor=dg.in_process_executor,
    )


defs = build_defs()
