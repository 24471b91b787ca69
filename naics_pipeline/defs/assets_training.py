"""Text embeddings, one training asset per stage of curricula/stages.yaml, embeddings export and report."""
import json
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq

from naics_pipeline.curricula import Stage, load_plan, plan_warnings
from naics_pipeline.defs.assets_curricula import sampling_index_key
from naics_pipeline.defs.assets_data import OWNERS
from naics_pipeline.defs.resources import StorageResource, TrainingResource
from naics_pipeline.defs.upstream import materialize_missing_upstream
from naics_pipeline.model import ModelConfig
from naics_pipeline.plots import bar_chart, line_chart, markdown_image
from naics_pipeline.storage import write_catalog, write_parquet
from naics_pipeline.text_encoder import TextEmbeddings, build_text_embeddings
from naics_pipeline.training import COLLAPSE_THRESHOLD, TrainConfig, embed_all, load_model, train_stage

METRIC_LABELS = [("spearman", "Spearman"), ("pearson", "Pearson"), ("ndcg_at_10", "NDCG@10"),
                 ("mean_distortion", "mean distortion"), ("parent_retrieval_accuracy", "parent retrieval"),
                 ("exclusion_separation", "exclusion separation"), ("load_balancing_loss", "load-balancing loss"),
                 ("final_train_loss", "final train loss"), ("final_val_loss", "final val loss")]


@dg.asset(deps=["naics_descriptions", "naics_index_holdout"], group_name="training",
          kinds={"pytorch", "numpy"}, owners=OWNERS, code_version="1")
def text_embeddings(context: dg.AssetExecutionContext, storage: StorageResource,
                    training: TrainingResource) -> dg.MaterializeResult:
    """Sentence embeddings of each code's title, description, examples and excluded text, plus the
    held-out index entries (computed once; the encoder is frozen)."""
    materialize_missing_upstream(context, storage.build_missing_upstream)
    layout = storage.layout
    emb = build_text_embeddings(pq.read_table(layout.descriptions), pq.read_table(layout.index_holdout),
                                training.encoder, progress=context.log.info)
    emb.save(layout.text_embeddings)
    coverage = {c: int(emb.present[:, i].sum()) for i, c in enumerate(("title", "description", "examples", "excluded"))}
    return dg.MaterializeResult(metadata={
        "encoder": emb.encoder, "codes": len(emb.codes), "dimension": int(emb.channels.shape[-1]),
        "codes_with_channel": dg.MetadataValue.json(coverage), "holdout_entries": len(emb.holdout_codes),
        "path": dg.MetadataValue.path(str(layout.text_embeddings))})


def _metrics_markdown(metrics: dict) -> str:
    rows = ["| metric | value |", "|---|---:|"]
    for key, label in METRIC_LABELS:
        v = metrics.get(key)
        rows.append(f"| {label} | {v:.4f} |" if isinstance(v, (int, float)) else f"| {label} | n/a |")
    for key, v in (metrics.get("retrieval") or {}).items():
        rows.append(f"| holdout {key} | {v:.4f} |" if isinstance(v, float) else f"| holdout {key} | {v} |")
    return "\n".join(rows)


def _train_config(training: TrainingResource, stage: Stage) -> TrainConfig:
    return TrainConfig(epochs=training.epochs or stage.epochs, batch_size=training.batch_size,
                       max_pairs_per_epoch=training.max_pairs_per_epoch, learning_rate=training.learning_rate,
                       seed=training.seed, accelerator=training.accelerator, devices=training.devices_value(),
                       strategy=training.strategy, exclusion_weight=training.exclusion_weight,
                       exclusion_margin=training.exclusion_margin, progress_bar=True)


def model_config(training: TrainingResource) -> ModelConfig:
    return ModelConfig(curvature=training.curvature, temperature=training.temperature,
                       embedding_dim=training.embedding_dim, load_balancing_coef=training.load_balancing_coef)


def stage_asset(stage: Stage, previous: Stage | None) -> dg.AssetsDefinition:
    deps = [sampling_index_key(stage.curriculum.name), "text_embeddings", "naics_descriptions"]
    if previous:
        deps.append(previous.name)

    @dg.asset(name=stage.name, deps=deps, group_name="training", kinds={"pytorch"}, owners=OWNERS,
              code_version="1",
              description=f"Contrastive training on curriculum {stage.curriculum.name} ({stage.epochs} epochs by "
                          f"default), starting from {previous.name if previous else 'random weights'}.")
    def _asset(context: dg.AssetExecutionContext, storage: StorageResource,
               training: TrainingResource) -> dg.MaterializeResult:
        materialize_missing_upstream(context, storage.build_missing_upstream)
        layout = storage.layout
        init = layout.stage_dir(previous.name) / "model.pt" if previous else None
        if init is not None and not init.is_file():
            raise FileNotFoundError(f"{previous.name} has no checkpoint at {init}: materialize it first")
        result = train_stage(stage.name, layout.sampling_index(stage.curriculum.name),
                             TextEmbeddings.load(layout.text_embeddings), pq.read_table(layout.descriptions),
                             layout.stage_dir(stage.name), model_config(training), _train_config(training, stage),
                             init_from=init, log=context.log.info)
        m = result.metrics
        if m.get("moe_collapse"):
            context.log.warning(f"MoE mode collapse: load_balancing_loss {m['load_balancing_loss']:.3f} > "
                                f"{COLLAPSE_THRESHOLD}; the guide suggests more bucket diversity or a larger "
                                "load_balancing_coef (NAICS_LOAD_BALANCING_COEF)")
        hist = result.history
        epochs = [h["epoch"] + 1 for h in hist]
        curves = {k: [h[k] for h in hist if k in h] for k in ("train_loss", "val_loss", "train_exclusion_loss")}
        plot = line_chart(epochs, {k: v for k, v in curves.items() if len(v) == len(epochs)},
                          f"{stage.name} losses (InfoNCE; exclusion hinge in bucket-8 stages)", "epoch", "loss")
        usage = m.get("expert_usage", [])
        return dg.MaterializeResult(metadata={
            "checkpoint": dg.MetadataValue.path(str(result.model_path)),
            "curriculum": stage.curriculum.name, "initialised_from": str(init) if init else "random",
            "resumed_from_checkpoint": result.resumed_from_checkpoint, "seconds": round(result.seconds, 1),
            "metrics": dg.MetadataValue.md(_metrics_markdown(m)),
            "loss_plot": dg.MetadataValue.md(markdown_image(plot, "loss per epoch")),
            "expert_usage_plot": dg.MetadataValue.md(markdown_image(bar_chart(
                list(range(len(usage))), {"share of codes": usage}, "MoE top-1 expert usage", "share"))),
            "spearman": m.get("spearman"), "ndcg_at_10": m.get("ndcg_at_10"),
            "final_val_loss": m.get("final_val_loss"), "config": dg.MetadataValue.json(result.config),
        })

    return _asset


def training_assets(curricula_folder: Path) -> tuple[list[dg.AssetsDefinition], list[Stage]]:
    stages = load_plan(curricula_folder)
    for w in plan_warnings(stages):
        print(f"naics-pipeline curricula warning: {w}")
    assets = [stage_asset(s, stages[i - 1] if i else None) for i, s in enumerate(stages)]
    return [text_embeddings, *assets, _embeddings_asset(stages[-1]), _report_asset(stages)], stages


def _embeddings_asset(final: Stage) -> dg.AssetsDefinition:
    @dg.asset(name="naics_embeddings", deps=[final.name, "text_embeddings"], group_name="evaluation",
              kinds={"parquet", "duckdb"}, owners=OWNERS, code_version="1")
    def naics_embeddings(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
        """Lorentz coordinates of every code from the final stage's model."""
        materialize_missing_upstream(context, storage.build_missing_upstream)
        layout = storage.layout
        model, blob = load_model(layout.stage_dir(final.name) / "model.pt")
        desc = pq.read_table(layout.descriptions)
        points, _ = embed_all(model, TextEmbeddings.load(layout.text_embeddings),
                              desc.column("level").to_numpy().astype("int64"))
        table = pa.table({"code": desc.column("code"), "level": desc.column("level"), "title": desc.column("title"),
                          "coordinates": pa.array(points.tolist(), pa.list_(pa.float64()))})
        write_parquet(table, layout.embeddings)
        write_catalog(layout.root, layout.tables())
        return dg.MaterializeResult(metadata={"dagster/row_count": table.num_rows, "stage": final.name,
                                              "dimension": int(points.shape[1]),
                                              "curvature": blob["model_config"]["curvature"],
                                              "path": dg.MetadataValue.path(str(layout.embeddings))})
    return naics_embeddings


def _report_asset(stages: list[Stage]) -> dg.AssetsDefinition:
    @dg.asset(name="training_report", deps=[s.name for s in stages], group_name="evaluation",
              kinds={"pytorch"}, owners=OWNERS, code_version="1")
    def training_report(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
        """Metrics of every stage side by side."""
        materialize_missing_upstream(context, storage.build_missing_upstream)
        rows = {}
        for s in stages:
            f = storage.layout.stage_dir(s.name) / "metrics.json"
            rows[s.name] = json.loads(f.read_text())["metrics"] if f.is_file() else {}
        header = "| metric | " + " | ".join(rows) + " |\n|---|" + "---:|" * len(rows)
        lines = [header]
        for key, label in METRIC_LABELS + [("seconds", "seconds")]:
            vals = [rows[s].get(key) for s in rows]
            lines.append(f"| {label} | " + " | ".join(f"{v:.4f}" if isinstance(v, (int, float)) else "n/a"
                                                      for v in vals) + " |")
        shown = ["spearman", "ndcg_at_10", "parent_retrieval_accuracy", "exclusion_separation"]
        plot = bar_chart(shown, {s: [rows[s].get(k) or 0 for k in shown] for s in rows},
                         "Quality per stage", "value")
        return dg.MaterializeResult(metadata={"table": dg.MetadataValue.md("\n".join(lines)),
                                              "plot": dg.MetadataValue.md(markdown_image(plot, "quality per stage"))})
    return training_report
