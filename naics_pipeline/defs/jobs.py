"""Jobs per group; `refresh_job` is what the source sensor runs."""
import dagster as dg

DATA_GROUPS = ("source", "graph", "tables")
REFRESH_GROUPS = (*DATA_GROUPS, "curricula", "training", "evaluation")

data_job = dg.define_asset_job("data_job", selection=dg.AssetSelection.groups(*DATA_GROUPS),
                               description="Source files -> descriptions, graph, distances, triplets")
curricula_job = dg.define_asset_job("curricula_job", selection=dg.AssetSelection.groups("curricula"),
                                    description="One sampling index per curriculum YAML")
training_job = dg.define_asset_job("training_job", selection=dg.AssetSelection.groups("training", "evaluation"),
                                   description="Text embeddings, every stage, embeddings export and report")
everything_job = dg.define_asset_job("everything_job", selection=dg.AssetSelection.all(),
                                     description="Every asset: data, curricula, training, evaluation")
refresh_job = dg.define_asset_job(
    "refresh_job", selection=dg.AssetSelection.groups(*REFRESH_GROUPS),
    description="What the source sensor runs on a change: the data graph, the sampling indexes and, "
                "unless automation.retrain_on_change is off, the training stages")
