"""Groups `tables` and `graph`: descriptions, the tree, distances and triplets (thin wrappers over
naics_pipeline.data.pipeline)."""

import dagster as dg

from naics_pipeline.data import pipeline
from naics_pipeline.defs.assets.source import OWNERS
from naics_pipeline.defs.resources import StorageResource
from naics_pipeline.report.plots import bar_chart, markdown_image
from naics_pipeline.report.tables import hardness_markdown


def _common(step: pipeline.StepResult) -> dict:
    return {"dagster/row_count": step.rows, "path": dg.MetadataValue.path(str(step.path)),
            "seconds": round(step.seconds, 2), "size_mb": round(step.megabytes, 2)}


@dg.multi_asset(
    specs=[
        dg.AssetSpec("naics_descriptions", deps=["naics_source"], group_name="tables",
                     kinds={"parquet", "duckdb"}, owners=OWNERS, code_version="1",
                     description="One row per NAICS code: the guide's dataset spec (title, description, "
                                 "examples, excluded, excluded_codes)."),
        dg.AssetSpec("naics_index_holdout", deps=["naics_source"], group_name="tables",
                     kinds={"parquet"}, owners=OWNERS, code_version="1",
                     description="~20% of index-file entries per code, held out from the examples "
                                 "channel for retrieval evaluation."),
    ],
    # Subsettable so that a selection holding one of the two (`+stage_3` holds naics_descriptions
    # only) is a valid job; both files are written either way, only the selected are reported.
    can_subset=True,
)
def naics_descriptions(context: dg.AssetExecutionContext, storage: StorageResource):
    step = pipeline.step_descriptions(storage.layout)
    stats = step.metadata["stats"]
    desc = pipeline.read_descriptions(storage.layout)
    preview = desc.select(["code", "level", "title", "excluded_codes"]).slice(0, 8).to_pylist()
    table = "| code | level | title | excluded_codes |\n|---|---|---|---|\n" + "\n".join(
        f"| {r['code']} | {r['level']} | {r['title']} | {', '.join(r['excluded_codes'])} |" for r in preview)
    levels = stats["codes_by_level"]
    selected = context.selected_asset_keys
    if dg.AssetKey("naics_descriptions") in selected:
        yield dg.MaterializeResult(asset_key="naics_descriptions", metadata={
            **_common(step), "codes_by_level": dg.MetadataValue.json(levels), "stats": dg.MetadataValue.json(stats),
            "exclusions_source": stats["exclusions_source"], "preview": dg.MetadataValue.md(table),
            "levels_plot": dg.MetadataValue.md(markdown_image(bar_chart(
                list(levels), {"codes": list(levels.values())}, "Codes per level", "codes"))),
        })
    if dg.AssetKey("naics_index_holdout") in selected:
        yield dg.MaterializeResult(asset_key="naics_index_holdout", metadata={
            "dagster/row_count": step.metadata["holdout_rows"],
            "path": dg.MetadataValue.path(str(storage.layout.index_holdout))})


@dg.asset(deps=["naics_descriptions"], group_name="graph", kinds={"networkx", "parquet"},
          owners=OWNERS, code_version="1")
def naics_graph(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    """The NAICS tree (virtual root -> 20 sectors -> ... -> 6-digit), saved as a parent/child edge list."""
    step = pipeline.step_graph(storage.layout)
    g = step.metadata["graph"]
    return dg.MaterializeResult(metadata={**_common(step), "nodes": g.number_of_nodes(),
                                          "edges": g.number_of_edges()})


@dg.asset(deps=["naics_graph"], group_name="tables", kinds={"parquet", "duckdb"}, owners=OWNERS,
          code_version="1")
def naics_distances(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    """Every ordered code pair: tree distance (lineal pairs -0.5), unrelated flag, relation, LCA depth."""
    return dg.MaterializeResult(metadata=_common(pipeline.step_distances(storage.layout)))


@dg.asset(deps=["naics_distances", "naics_descriptions"], group_name="tables",
          kinds={"parquet", "duckdb"}, owners=OWNERS, code_version="2")
def naics_triplets(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    """The full hardness-labelled triplet table: hardness 2..8 written as hive partitions, hardness 1 (the
    other-sector negatives, ~91% of the rows) served by a DuckDB view over three small input files.
    Read it as one table: `naics_triplets` in naics.duckdb, or triplets_sql(path)."""
    step = pipeline.step_triplets(storage.layout, progress=lambda m: context.log.info(f"writing {m}"))
    counts = step.metadata["counts"]
    plot = bar_chart(list(range(1, 9)), {"triplets": [max(counts.get(h, 0), 1) for h in range(1, 9)]},
                     "Triplets per hardness (log scale)", "rows", log=True)
    return dg.MaterializeResult(metadata={
        **_common(step), "rows_per_second": round(step.rows / step.seconds),
        "materialized_rows": sum(n for h, n in counts.items() if h != 1),
        "view_rows": counts.get(1, 0),
        "hardness_table": dg.MetadataValue.md(hardness_markdown(counts)),
        "hardness_plot": dg.MetadataValue.md(markdown_image(plot, "triplets per hardness")),
        "stage_seconds": dg.MetadataValue.json({k: round(v, 2) for k, v in step.metadata["stage_seconds"].items()}),
        "catalog": dg.MetadataValue.path(str(storage.layout.root / "naics.duckdb")),
    })
