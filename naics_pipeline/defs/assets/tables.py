"""Groups `tables` and `graph`: descriptions, the tree, distances and triplets (thin wrappers over
naics_pipeline.data.pipeline)."""

import dagster as dg

from naics_pipeline.data import pipeline
from naics_pipeline.data.snapshot import load_snapshot
from naics_pipeline.defs.assets.source import OWNERS
from naics_pipeline.defs.metadata import readable
from naics_pipeline.defs.placement import CATALOG_POOL
from naics_pipeline.defs.resources import SourceResource, StorageResource
from naics_pipeline.report.plots import bar_chart, markdown_image
from naics_pipeline.report.tables import hardness_markdown

EXCLUSION_COUNTS = ["codes_with_exclusions", "exclusion_links", "exclusion_holdout", "exclusion_links_kept",
                    "exclusion_links_held_out", "codes_with_kept_exclusions", "codes_with_held_out_exclusions",
                    "cross_reference_rows", "cross_reference_rows_without_code"]
# The rest of the descriptions build's counts (the exclusion counts above are also its `exclusions` table).
DESCRIPTION_COUNTS = ["codes", "index_entries", "holdout_entries", "empty_descriptions_filled_from_child",
                      "still_without_description"]


def exclusions_markdown(stats: dict) -> str:
    """Where the exclusion links come from and what the holdout took, as a table."""
    labels = [("exclusions_source", "source"), ("codes_with_exclusions", "codes with exclusions"),
              ("exclusion_links", "links"), ("exclusion_links_from_cross_references", "links from cross-references"),
              ("exclusion_links_from_description_text", "links from description text"),
              ("exclusion_holdout", "holdout share"), ("exclusion_links_kept", "links kept (trained on)"),
              ("exclusion_links_held_out", "links held out (evaluation only)"),
              ("cross_reference_rows", "cross-reference rows"),
              ("cross_reference_rows_with_several_codes", "rows naming several codes (one link each)"),
              ("cross_reference_rows_naming_no_code", "rows naming no code"),
              ("cross_reference_rows_naming_only_own_lineage", "rows naming only the code's own lineage")]
    lines = ["| | |", "|---|---:|"]
    for key, label in labels:
        if key in stats:
            v = stats[key]
            lines.append(f"| {label} | {v:,} |" if isinstance(v, int) else f"| {label} | {v} |")
    return "\n".join(lines)


def _common(step: pipeline.StepResult) -> dict:
    return {"dagster/row_count": step.rows, "path": step.path, "seconds": step.seconds, "size_mb": step.megabytes}


@dg.multi_asset(
    specs=[
        dg.AssetSpec("naics_descriptions", deps=["naics_source"], group_name="tables",
                     kinds={"parquet", "duckdb"}, owners=OWNERS, code_version="2",
                     description="One row per NAICS code: the guide's dataset spec (title, description, "
                                 "examples, excluded, excluded_codes), with a held-out share of the "
                                 "exclusion links moved to held_out_excluded_codes (source.exclusion_holdout)."),
        dg.AssetSpec("naics_index_holdout", deps=["naics_source"], group_name="tables",
                     kinds={"parquet"}, owners=OWNERS, code_version="1",
                     description="~20% of index-file entries per code, held out from the examples "
                                 "channel for retrieval evaluation."),
    ],
    # Subsettable so that a selection holding one of the two (`+stage_3` holds naics_descriptions
    # only) is a valid job; both files are written either way, only the selected are reported.
    can_subset=True,
)
def naics_descriptions(context: dg.AssetExecutionContext, storage: StorageResource, source: SourceResource):
    step = pipeline.step_descriptions(storage.layout, source.exclusion_holdout)
    stats = step.metadata["stats"]
    desc = pipeline.read_descriptions(storage.layout)
    preview = desc.select(["code", "level", "title", "excluded_codes"]).slice(0, 8).to_pylist()
    table = "| code | level | title | excluded_codes |\n|---|---|---|---|\n" + "\n".join(
        f"| {r['code']} | {r['level']} | {r['title']} | {', '.join(r['excluded_codes'])} |" for r in preview)
    levels = stats["codes_by_level"]
    selected = context.selected_asset_keys
    # The source's data version and the holdout: a new holdout share makes everything downstream stale.
    version = f"{load_snapshot(storage.layout.source_dir).data_version}-holdout-{source.exclusion_holdout:g}"
    if dg.AssetKey("naics_descriptions") in selected:
        meta = readable({
            **_common(step), "codes_by_level": dg.MetadataValue.json(levels),
            **{key: stats.get(key) for key in DESCRIPTION_COUNTS},
            "exclusions_source": stats["exclusions_source"],
            "exclusions": dg.MetadataValue.md(exclusions_markdown(stats)),
            **{key: stats[key] for key in EXCLUSION_COUNTS if key in stats},
            "cross_reference_rows_without_code_examples": dg.MetadataValue.json(
                stats.get("cross_reference_rows_without_code_examples", [])),
            "preview": dg.MetadataValue.md(table),
            "levels_plot": dg.MetadataValue.md(markdown_image(bar_chart(
                list(levels), {"codes": list(levels.values())}, "Codes per level", "codes"))),
        })
        yield dg.MaterializeResult(asset_key="naics_descriptions", data_version=dg.DataVersion(version), metadata=meta)
    if dg.AssetKey("naics_index_holdout") in selected:
        yield dg.MaterializeResult(asset_key="naics_index_holdout", metadata=readable({
            "dagster/row_count": step.metadata["holdout_rows"], "path": storage.layout.index_holdout}))


@dg.asset(deps=["naics_descriptions"], group_name="graph", kinds={"networkx", "parquet"},
          owners=OWNERS, code_version="1")
def naics_graph(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    """The NAICS tree (virtual root -> 20 sectors -> ... -> 6-digit), saved as a parent/child edge list."""
    step = pipeline.step_graph(storage.layout)
    g = step.metadata["graph"]
    return dg.MaterializeResult(metadata=readable({**_common(step), "nodes": g.number_of_nodes(),
                                                   "edges": g.number_of_edges()}))


@dg.asset(deps=["naics_graph"], group_name="tables", kinds={"parquet", "duckdb"}, owners=OWNERS,
          code_version="1")
def naics_distances(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    """Every ordered code pair: tree distance (lineal pairs -0.5), unrelated flag, relation, LCA depth."""
    return dg.MaterializeResult(metadata=readable(_common(pipeline.step_distances(storage.layout))))


@dg.asset(deps=["naics_distances", "naics_descriptions"], group_name="tables",
          kinds={"parquet", "duckdb"}, owners=OWNERS, code_version="2", pool=CATALOG_POOL)
def naics_triplets(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    """The full hardness-labelled triplet table: hardness 2..8 written as hive partitions, hardness 1 (the
    other-sector negatives, ~91% of the rows) served by a DuckDB view over three small input files.
    Read it as one table: `naics_triplets` in naics.duckdb, or triplets_sql(path).

    The hardness table's "Guide count" and "Guide %" columns are the curriculum guide's figures for its own
    263M-triplet set, for comparison; the measured rows are every triplet the rule admits on this vintage's
    tree (each same-sector positive with every qualifying negative), hence ~976M on NAICS 2022: compare the
    shares, not the counts."""
    step = pipeline.step_triplets(storage.layout, progress=lambda m: context.log.info(f"writing {m}"))
    counts = step.metadata["counts"]
    plot = bar_chart(list(range(1, 9)), {"triplets": [max(counts.get(h, 0), 1) for h in range(1, 9)]},
                     "Triplets per hardness (log scale)", "rows", log=True)
    return dg.MaterializeResult(metadata=readable({
        **_common(step), "rows_per_second": round(step.rows / step.seconds),
        "materialized_rows": sum(n for h, n in counts.items() if h != 1),
        "view_rows": counts.get(1, 0),
        "hardness_table": dg.MetadataValue.md(hardness_markdown(counts)),
        "hardness_plot": dg.MetadataValue.md(markdown_image(plot, "triplets per hardness")),
        "stage_seconds": step.metadata["stage_seconds"], "catalog": storage.layout.root / "naics.duckdb",
    }))
