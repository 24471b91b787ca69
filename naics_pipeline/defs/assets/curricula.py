"""Group `curricula`: one sampling-index asset per curriculum YAML (discovered when definitions load)."""
import hashlib
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq

from naics_pipeline import settings
from naics_pipeline.curricula.config import Curriculum, curriculum_warnings, load_curricula
from naics_pipeline.curricula.index_builder import build_index
from naics_pipeline.curricula.sampling_index import HARDNESS, INDEX_VERSION, SamplingIndex
from naics_pipeline.defs.assets.source import OWNERS
from naics_pipeline.defs.placement import CATALOG_POOL
from naics_pipeline.defs.resources import StorageResource
from naics_pipeline.report.plots import bar_chart, markdown_image
from naics_pipeline.report.tables import mix_markdown
from naics_pipeline.storage import write_catalog

INDEX_SEED = 0


def sampling_index_key(curriculum_name: str) -> dg.AssetKey:
    return dg.AssetKey(f"sampling_index_{curriculum_name}")


def _code_version(c: Curriculum) -> str:
    # The YAML's own bytes (editing one curriculum makes only its index stale) and the index format.
    digest = hashlib.sha256(Path(c.path).read_bytes()).hexdigest()[:16] if c.path else "0"
    return f"{INDEX_VERSION}-{digest}"


def shortfall_warnings(meta: dict, pairs: int) -> list[str]:
    """One `Insufficient negatives for hardness X` line per bucket in the index's shortfalls."""
    out = []
    for h, s in meta["shortfalls"].items():
        went = ", ".join(f"{n:,} to hardness {g}" for g, n in s["went_to"].items()) or "nowhere"
        if meta["mix"] == "per_pair":
            out.append(f"Insufficient negatives for hardness {h}: {s['pairs_short']:,} of {pairs:,} pairs short, "
                       f"{s['negatives_short']:,} negatives fell back to easier levels ({went})")
        else:
            out.append(f"Insufficient negatives for hardness {h}: {100 * s['requested']:.2f}% requested, at most "
                       f"{100 * s['achievable']:.2f}% reachable from {s['candidates']:,} candidates; "
                       f"{s['negatives_short']:,} negatives per epoch went elsewhere ({went})")
    return out


def sampling_index_asset(c: Curriculum) -> dg.AssetsDefinition:
    @dg.asset(name=sampling_index_key(c.name).path[0], group_name="curricula",
              deps=["naics_triplets", "naics_distances", "naics_descriptions"],
              kinds={"parquet", "numpy"}, owners=OWNERS, code_version=_code_version(c), pool=CATALOG_POOL,
              description=f"Sampling index for curriculum {c.name} ({c.path.name if c.path else ''}, mix {c.mix}): "
                          f"filtered (anchor, positive) pairs and candidate negatives per hardness bucket.")
    def _asset(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
        layout = storage.layout
        for warning in curriculum_warnings(c):
            context.log.warning(warning)
        target = layout.sampling_index(c.name)
        stats = build_index(c, pq.read_table(layout.descriptions), layout.distances, layout.triplets,
                            target, seed=INDEX_SEED)
        meta = SamplingIndex(target).meta
        for warning in shortfall_warnings(meta, stats["pairs"]):
            context.log.warning(warning)
        shown = [str(h) for h in HARDNESS if str(h) in meta["requested_mix"] or str(h) in meta["realized_mix"]]
        plot = bar_chart(shown, {"requested": [100 * meta["requested_mix"].get(h, 0) for h in shown],
                                 "realized": [100 * meta["realized_mix"].get(h, 0) for h in shown]},
                         f"{c.name}: hardness mix over one simulated epoch ({meta['mix']})", "% of negatives")
        write_catalog(layout.root, layout.tables())
        extra = {"positive_shift": dg.MetadataValue.json(meta["positive_shift"])} if "positive_shift" in meta else {}
        return dg.MaterializeResult(metadata={
            "dagster/row_count": stats["pairs"], "pairs": stats["pairs"], "anchors": stats["anchors"],
            "candidate_groups": stats["groups"], "build_seconds": stats["build_seconds"],
            "curriculum": dg.MetadataValue.json(c.to_dict()),
            "allocation_of_k": dg.MetadataValue.json({str(h): n for h, n in c.allocation().items()}),
            "candidates_per_bucket": dg.MetadataValue.json(meta["candidates"]),
            "mix_mode": meta["mix"],
            "requested_mix": dg.MetadataValue.json(meta["requested_mix"]),
            "realized_mix": dg.MetadataValue.json(meta["realized_mix"]),
            "shortfalls": dg.MetadataValue.json(meta["shortfalls"]),
            "mix": dg.MetadataValue.md(mix_markdown(meta)),
            "mix_plot": dg.MetadataValue.md(markdown_image(plot, "requested vs realized mix")),
            "sampler_samples_per_second": meta["sampler_samples_per_second"],
            "path": dg.MetadataValue.path(str(target)),
            **extra,
        })

    return _asset


def curriculum_assets(folder: Path) -> list[dg.AssetsDefinition]:
    return [sampling_index_asset(c) for c in load_curricula(folder).values()]


@dg.definitions
def sampling_indexes() -> dg.Definitions:
    return dg.Definitions(assets=curriculum_assets(settings.curricula_dir()))
