"""Group `curricula`: one sampling-index asset per curriculum YAML (discovered when definitions load)."""
import hashlib
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq

from naics_pipeline import settings
from naics_pipeline.curricula.config import Curriculum, curriculum_warnings, load_curricula
from naics_pipeline.curricula.sampling import HARDNESS, SamplingIndex, build_index, simulate_epoch
from naics_pipeline.defs.assets.source import OWNERS
from naics_pipeline.defs.resources import StorageResource
from naics_pipeline.report.plots import bar_chart, markdown_image
from naics_pipeline.report.tables import mix_markdown
from naics_pipeline.storage import write_catalog

INDEX_SEED = 0


def sampling_index_key(curriculum_name: str) -> dg.AssetKey:
    return dg.AssetKey(f"sampling_index_{curriculum_name}")


def _code_version(c: Curriculum) -> str:
    # The YAML's own bytes: editing one curriculum makes only its index stale.
    return hashlib.sha256(Path(c.path).read_bytes()).hexdigest()[:16] if c.path else "0"


def sampling_index_asset(c: Curriculum) -> dg.AssetsDefinition:
    @dg.asset(name=sampling_index_key(c.name).path[0], group_name="curricula",
              deps=["naics_triplets", "naics_distances", "naics_descriptions"],
              kinds={"parquet", "numpy"}, owners=OWNERS, code_version=_code_version(c),
              description=f"Sampling index for curriculum {c.name} ({c.path.name if c.path else ''}): "
                          f"filtered (anchor, positive) pairs and candidate negatives per hardness bucket.")
    def _asset(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
        layout = storage.layout
        for warning in curriculum_warnings(c):
            context.log.warning(warning)
        target = layout.sampling_index(c.name)
        stats = build_index(c, pq.read_table(layout.descriptions), layout.distances, layout.triplets,
                            target, seed=INDEX_SEED)
        index = SamplingIndex(target)
        candidates = index.candidate_totals()
        sim = simulate_epoch(index, seed=INDEX_SEED)
        for h in HARDNESS:
            if sim["fallback_pairs"][h]:
                context.log.warning(f"Insufficient negatives for hardness {h}: {sim['fallback_pairs'][h]:,} of "
                                    f"{stats['pairs']:,} pairs short, {sim['shortfall'][h]:,} negatives fell back "
                                    "to easier levels")
        shown = [h for h in HARDNESS if sim["requested"][h] or sim["realized"][h]]
        plot = bar_chart(shown, {"requested": [100 * sim["requested"][h] for h in shown],
                                 "realized": [100 * sim["realized"][h] for h in shown]},
                         f"{c.name}: hardness mix over one simulated epoch", "% of negatives")
        write_catalog(layout.root, layout.tables())
        return dg.MaterializeResult(metadata={
            "dagster/row_count": stats["pairs"], "pairs": stats["pairs"], "anchors": stats["anchors"],
            "candidate_groups": stats["groups"], "build_seconds": stats["build_seconds"],
            "curriculum": dg.MetadataValue.json(c.to_dict()),
            "allocation_of_k": dg.MetadataValue.json({str(h): n for h, n in c.allocation().items()}),
            "candidates_per_bucket": dg.MetadataValue.json({str(h): candidates[h] for h in HARDNESS}),
            "mix": dg.MetadataValue.md(mix_markdown(sim, candidates)),
            "mix_plot": dg.MetadataValue.md(markdown_image(plot, "requested vs realized mix")),
            "fallback_pairs": dg.MetadataValue.json({str(h): v for h, v in sim["fallback_pairs"].items() if v}),
            "sampler_samples_per_second": round(sim["samples_per_second"]),
            "path": dg.MetadataValue.path(str(target)),
        })

    return _asset


def curriculum_assets(folder: Path) -> list[dg.AssetsDefinition]:
    return [sampling_index_asset(c) for c in load_curricula(folder).values()]


@dg.definitions
def sampling_indexes() -> dg.Definitions:
    return dg.Definitions(assets=curriculum_assets(settings.curricula_dir()))
