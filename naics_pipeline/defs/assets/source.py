"""Group `source`: the Census spreadsheets, snapshotted with their sha256."""
import dagster as dg

from naics_pipeline.data import pipeline
from naics_pipeline.data.quality import unknown_vintage_warning
from naics_pipeline.defs.metadata import readable
from naics_pipeline.defs.resources import SourceResource, StorageResource
from naics_pipeline.storage import clean_stale_temporaries

OWNERS = ["team:naics-ml"]


@dg.asset(group_name="source", kinds={"excel"}, owners=OWNERS, code_version="1")
def naics_source(context: dg.AssetExecutionContext, storage: StorageResource,
                 source: SourceResource) -> dg.MaterializeResult:
    """The Census NAICS spreadsheets of one vintage, each opened and checked for its role's header before
    they are snapshotted with their sha256 (the vintage and the hashes make the asset's data version)."""
    removed = clean_stale_temporaries(storage.layout.root)
    if removed:
        context.log.warning(f"removed {removed} temporaries left by an interrupted run")
    step = pipeline.step_source(storage.layout, source.resolved_location, source.timeout_seconds, source.vintage)
    src = step.metadata["src"]
    warnings = [*src.warnings, *filter(None, [unknown_vintage_warning(src.vintage)])]
    for warning in warnings:
        context.log.warning(warning)
    meta = {"location": src.location, "vintage": src.vintage, "packaged_fallback": src.packaged,
            "data_version": src.data_version,
            "files": dg.MetadataValue.json({r: p.name for r, p in src.paths.items()}),
            "rows": dg.MetadataValue.json(src.rows), "sha256": dg.MetadataValue.json(src.sha256),
            "warnings": dg.MetadataValue.md("\n".join(f"- **{w}**" for w in warnings) or "none"),
            "path": step.path}
    return dg.MaterializeResult(metadata=readable(meta), data_version=dg.DataVersion(src.data_version))
