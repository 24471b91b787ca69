"""The Dagster definitions: assets, checks, resources, jobs, sensors and schedules."""

import dagster as dg

from naics_pipeline.defs.assets_data import naics_descriptions, naics_distances, naics_graph, naics_source, naics_triplets
from naics_pipeline.defs.checks_data import DATA_CHECKS
from naics_pipeline.defs.assets_curricula import curriculum_assets
from naics_pipeline.defs.assets_training import training_assets
from naics_pipeline.defs.automation import build_source_sensor, refresh_selection, sensor_includes_training
from naics_pipeline.defs.resources import SourceResource, StorageResource, TrainingResource
from naics_pipeline.settings import curricula_dir

DATA_ASSETS = [naics_source, naics_descriptions, naics_graph, naics_distances, naics_triplets]

data_job = dg.define_asset_job("data_job", selection=dg.AssetSelection.groups("source", "graph", "tables"),
                               description="Source files -> descriptions, graph, distances, triplets")


curricula_job = dg.define_asset_job("curricula_job", selection=dg.AssetSelection.groups("curricula"),
                                    description="One sampling index per curriculum YAML")


training_job = dg.define_asset_job("training_job", selection=dg.AssetSelection.groups("training", "evaluation"),
                                   description="Text embeddings, every stage, embeddings export and report")


everything_job = dg.define_asset_job("everything_job", selection=dg.AssetSelection.all(),
                                     description="Every asset: data, curricula, training, evaluation")
weekly_refresh = dg.ScheduleDefinition(
    name="weekly_refresh", job=everything_job, cron_schedule="0 3 * * 1",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Mondays 03:00: materialize everything (off by default; start it in the UI)")


def build_defs() -> dg.Definitions:
    folder = curricula_dir()
    train_assets, _ = training_assets(folder)
    refresh_job = dg.define_asset_job(
        "refresh_job", selection=refresh_selection(sensor_includes_training()),
        description="What the source sensor runs on change: data graph, sampling indexes and (unless "
                    "NAICS_SENSOR_TRAINING=0) the training stages")
    return dg.Definitions(
        assets=[*DATA_ASSETS, *curriculum_assets(folder), *train_assets],
        asset_checks=DATA_CHECKS,
        jobs=[data_job, curricula_job, training_job, everything_job, refresh_job],
        schedules=[weekly_refresh],
        sensors=[build_source_sensor(refresh_job)],
        resources={"storage": StorageResource(), "source": SourceResource(), "training": TrainingResource()},
        # One process: steps are I/O- and DuckDB-bound and each would otherwise pay ~3 s of start-up.
        executor=dg.in_process_executor,
    )


defs = build_defs()
