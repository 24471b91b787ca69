"""Group `training`: text embeddings and one asset per stage of curricula/stages.yaml, each starting
from the previous stage's checkpoint."""
import dagster as dg
import pyarrow.parquet as pq

from naics_pipeline import settings
from naics_pipeline.curricula.config import Stage, load_plan, plan_warnings
from naics_pipeline.defs.assets.curricula import sampling_index_key
from naics_pipeline.defs.assets.source import OWNERS
from naics_pipeline.defs.metadata import readable
from naics_pipeline.defs.placement import GPU_POOL, TRAINING_RETRY, training_op_tags
from naics_pipeline.defs.resources import StorageResource, TrainingResource
from naics_pipeline.encoders import TextEmbeddings
from naics_pipeline.report.plots import bar_chart, line_chart, markdown_image
from naics_pipeline.report.tables import HEADLINE_METRICS, calibration_markdown, retrieval_entries, retrieval_markdown


def _train_config(training: TrainingResource, stage: Stage):
    from dataclasses import replace

    from naics_pipeline.training.loop import TrainConfig

    cfg = TrainConfig(**settings.config_values(TrainConfig, training))
    # An explicit epoch count is taken as is on every device; the plan's is scaled on a GPU.
    return replace(cfg, epochs=training.epochs, gpu_epoch_multiplier=1) if training.epochs else \
        replace(cfg, epochs=stage.epochs)


def model_config(training: TrainingResource):
    from naics_pipeline.training.model import ModelConfig

    return ModelConfig(**settings.config_values(ModelConfig, training))


def stage_asset(stage: Stage, previous: Stage | None) -> dg.AssetsDefinition:
    deps = [sampling_index_key(stage.curriculum.name), "text_embeddings", "naics_descriptions"]
    if previous:
        deps.append(previous.name)
    if stage.text is not None:
        deps.append("naics_index_holdout")   # scored on the held-out entries, never trained on
    kind = "Text alignment (index entries -> their code)" if stage.text is not None else "Contrastive training"

    @dg.asset(name=stage.name, deps=deps, group_name="training", kinds={"pytorch"}, owners=OWNERS,
              code_version="1", pool=GPU_POOL, op_tags=training_op_tags(), retry_policy=TRAINING_RETRY,
              description=f"{kind} on curriculum {stage.curriculum.name} ({stage.epochs} epochs by "
                          f"default), starting from {previous.name if previous else 'random weights'}.")
    def _asset(context: dg.AssetExecutionContext, storage: StorageResource,
               training: TrainingResource) -> dg.MaterializeResult:
        from naics_pipeline.training.loop import COLLAPSE_THRESHOLD, train_stage  # torch: imported when run
        from naics_pipeline.training.text_alignment import TextConfig, TextTask

        layout = storage.layout
        init = layout.stage_dir(previous.name) / "model.pt" if previous else None
        if init is not None and not init.is_file():
            raise FileNotFoundError(f"{previous.name} has no checkpoint at {init}: materialize it first")
        embeddings, descriptions = TextEmbeddings.load(layout.text_embeddings), pq.read_table(layout.descriptions)
        holdout_texts = pq.read_table(layout.index_holdout).column("entry").to_pylist()
        text = None
        if stage.text is not None:
            chosen = {"encoder": training.text_encoder} if training.text_encoder else {}
            config = TextConfig(**{**stage.text, **chosen})
            text = TextTask.of_index(config, descriptions, embeddings, holdout_texts)
        result = train_stage(stage.name, layout.sampling_index(stage.curriculum.name), embeddings, descriptions,
                             layout.stage_dir(stage.name), model_config(training), _train_config(training, stage),
                             init_from=init, log=context.log.info, text=text, holdout_texts=holdout_texts,
                             text_cache=layout.text_cache)
        m = result.metrics
        if m.get("moe_collapse"):
            context.log.warning(f"MoE mode collapse: load_balancing_loss {m['load_balancing_loss']:.3f} > "
                                f"{COLLAPSE_THRESHOLD}; the guide suggests more bucket diversity or a larger "
                                "load_balancing_coef (NAICS_LOAD_BALANCING_COEF)")
        hist = result.history
        epochs = [h["epoch"] + 1 for h in hist]
        shown = ("train_loss", "val_loss", "train_exclusion_loss", "train_text_loss", "train_text_hard_loss")
        curves = {k: [h[k] for h in hist if k in h] for k in shown}
        plot = line_chart(epochs, {k: v for k, v in curves.items() if len(v) == len(epochs)},
                          f"{stage.name} losses (InfoNCE; exclusion hinge in bucket-8 stages)", "epoch", "loss")
        usage = m.get("expert_usage", [])
        return dg.MaterializeResult(metadata=readable({
            "checkpoint": result.model_path, "curriculum": stage.curriculum.name,
            "tensorboard": layout.stage_dir(stage.name) / "tensorboard",  # make tensorboard
            "initialised_from": init if init else "random weights",
            "resumed_from_checkpoint": result.resumed_from_checkpoint, "seconds": result.seconds,
            # Each its own number, so the Plots tab charts it across materializations.
            **{key: m.get(key) for key in HEADLINE_METRICS},
            **retrieval_entries(m),
            "ranking_vs_tree": dg.MetadataValue.md(calibration_markdown(m)),
            "holdout_retrieval": dg.MetadataValue.md(retrieval_markdown(m)) if m.get("retrieval") else None,
            "loss_plot": dg.MetadataValue.md(markdown_image(plot, "loss per epoch")),
            "expert_usage_plot": dg.MetadataValue.md(markdown_image(bar_chart(
                [f"expert {i}" for i in range(len(usage))], {"share of codes": usage}, "MoE top-1 expert usage",
                "share"))),
            "config": dg.MetadataValue.json(result.config), "trained_weights": m.get("trained_weights") or None,
        }))

    return _asset


def stage_plan() -> list[Stage]:
    stages = load_plan(settings.curricula_dir())
    for w in plan_warnings(stages):
        print(f"naics-pipeline curricula warning: {w}")
    return stages


@dg.definitions
def training_stages() -> dg.Definitions:
    stages = stage_plan()
    return dg.Definitions(assets=[stage_asset(s, stages[i - 1] if i else None) for i, s in enumerate(stages)])
