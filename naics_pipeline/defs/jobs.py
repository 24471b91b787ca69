"""Jobs per group; `refresh_job` is what the source sensor runs (its selection: `refresh_selection`)."""
import dagster as dg

DATA_GROUPS = ("source", "graph", "tables")
CURRICULA_GROUPS = ("curricula",)
TRAINING_GROUPS = ("training", "evaluation")


def refresh_selection(retrain: bool) -> dg.AssetSelection:
    """What a source change rebuilds: the data graph and the sampling indexes, and the stages if `retrain`."""
    return dg.AssetSelection.groups(*DATA_GROUPS, *CURRICULA_GROUPS, *(TRAINING_GROUPS if retrain else ()))


data_job = dg.define_asset_job("data_job", selection=dg.AssetSelection.groups(*DATA_GROUPS),
                               description="Source files -> descriptions, graph, distances, triplets")
curricula_job = dg.define_asset_job("curricula_job", selection=dg.AssetSelection.groups(*CURRICULA_GROUPS),
                                    description="One sampling index per curriculum YAML")
training_job = dg.define_asset_job("training_job", selection=dg.AssetSelection.groups(*TRAINING_GROUPS),
                                   description="Text embeddings, every stage, embeddings export and report")
everything_job = dg.define_asset_job("everything_job", selection=dg.AssetSelection.all(),
                                     description="Every asset: data, curricula, training, evaluation")
refresh_job = dg.define_asset_job(
    "refresh_job", selection=refresh_selection(retrain=True),
    description="What the source sensor runs on a change: the data graph, the sampling indexes and, "
                "unless automation.retrain_on_change is off, the training stages")
