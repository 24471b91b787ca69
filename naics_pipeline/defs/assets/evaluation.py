"""Group `evaluation`: the last hierarchy stage's embeddings exported as a table, and every stage side by side."""
import json

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq

from naics_pipeline.curricula.config import Stage
from naics_pipeline.defs.assets.source import OWNERS
from naics_pipeline.defs.assets.training import stage_plan
from naics_pipeline.defs.resources import StorageResource
from naics_pipeline.report.plots import bar_chart, markdown_image
from naics_pipeline.report.tables import stages_markdown
from naics_pipeline.storage import write_catalog, write_parquet
from naics_pipeline.text.encoder import TextEmbeddings


def _embeddings_asset(final: Stage) -> dg.AssetsDefinition:
    @dg.asset(name="naics_embeddings", deps=[final.name, "text_embeddings"], group_name="evaluation",
              kinds={"parquet", "duckdb"}, owners=OWNERS, code_version="1")
    def naics_embeddings(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
        """Lorentz coordinates of every code from the last hierarchy stage's model (the last stage without
        text terms): a text-alignment stage pulls the codes towards their texts and loses hierarchy
        quality, while `classify` fuses that stage's geometry with retrieval anyway."""
        from naics_pipeline.training.loop import embed_all, load_model  # torch: imported when the asset runs

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
        rows = {}
        for s in stages:
            f = storage.layout.stage_dir(s.name) / "metrics.json"
            rows[s.name] = json.loads(f.read_text())["metrics"] if f.is_file() else {}
        shown = ["spearman", "ndcg_at_10", "parent_retrieval_accuracy", "exclusion_separation"]
        plot = bar_chart(shown, {s: [rows[s].get(k) or 0 for k in shown] for s in rows},
                         "Quality per stage", "value")
        return dg.MaterializeResult(metadata={"table": dg.MetadataValue.md(stages_markdown(rows)),
                                              "plot": dg.MetadataValue.md(markdown_image(plot, "quality per stage"))})
    return training_report


@dg.definitions
def evaluation_assets() -> dg.Definitions:
    stages = stage_plan()
    hierarchy = [s for s in stages if s.text is None] or stages
    return dg.Definitions(assets=[_embeddings_asset(hierarchy[-1]), _report_asset(stages)])
