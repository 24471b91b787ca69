"""Group `curricula`: one sampling-index asset per curriculum YAML (discovered when definitions load)."""
import hashlib
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq

from naics_pipeline import settings
from naics_pipeline.curricula.config import Curriculum, curriculum_warnings, load_curricula, load_plan
from naics_pipeline.curricula.index_builder import build_index
from naics_pipeline.curricula.sampling_index import HARDNESS, INDEX_VERSION, SamplingIndex
from naics_pipeline.defs.assets.source import OWNERS
from naics_pipeline.defs.metadata import readable
from naics_pipeline.defs.placement import CATALOG_POOL
from naics_pipeline.defs.resources import StorageResource
from naics_pipeline.report.plots import bar_chart, markdown_image
from naics_pipeline.report.tables import mix_markdown, negatives_short, positive_shift_markdown
from naics_pipeline.storage import write_catalog

INDEX_SEED = 0


def sampling_index_key(curriculum_name: str) -> dg.AssetKey:
    return dg.AssetKey(f"sampling_index_{curriculum_name}")


def _code_version(c: Curriculum) -> str:
    # The YAML's own bytes (editing one curriculum makes only its index stale) and the index format.
    digest = hashlib.sha256(Path(c.path).read_bytes()).hexdigest()[:16] if c.path else "0"
    return f"{INDEX_VERSION}-{digest}"


def shortfall_summary(name: str, meta: dict) -> str | None:
    """One line for the index's shortfalls (the per-bucket detail is its `mix` table), None when no bucket
    fell short."""
    short = meta["shortfalls"]
    if not short:
        return None
    lost = sum(s["negatives_short"] for s in short.values())
    total = sum(meta.get("realized_negatives", {}).values()) or 1
    if meta["mix"] == "per_pair":
        worst = max(short, key=lambda h: short[h]["pairs_short"])
        detail = f"; most pairs short at hardness {worst} ({short[worst]['pairs_short']:,})"
    else:
        detail = ""
    return (f"Insufficient negatives in sampling index {name}: hardness {', '.join(short)} fell short of the "
            f"requested mix; {lost:,} of {total:,} negatives per epoch ({100 * lost / total:.1f}%) came from "
            f"other levels instead{detail}. The `mix` metadata table has the numbers per bucket.")


def _positives(c: Curriculum) -> str:
    levels = ", ".join(map(str, c.positive_levels))
    bounds = [f"distance >= {c.positive_distance_min:g}" if c.positive_distance_min is not None else "",
              f"distance <= {c.positive_distance_max:g}" if c.positive_distance_max is not None else "",
              f"at most {c.max_positives:,} per anchor" if c.max_positives is not None else ""]
    return f"levels {levels}" + "".join(f", {b}" for b in bounds if b) + f"; K = {c.k_negatives} negatives per pair"


def sampling_index_asset(c: Curriculum, trained: bool = True) -> dg.AssetsDefinition:
    """`trained`: a stage of curricula/stages.yaml reads this index (said in the description when not)."""
    unused = ("" if trained else " No stage of stages.yaml trains on it: it is built for comparison (its mix "
              "table beside the stage curriculum's); name it in stages.yaml to train on it.")

    @dg.asset(name=sampling_index_key(c.name).path[0], group_name="curricula",
              deps=["naics_triplets", "naics_distances", "naics_descriptions"],
              kinds={"parquet", "numpy"}, owners=OWNERS, code_version=_code_version(c), pool=CATALOG_POOL,
              description=f"Sampling index for curriculum {c.name} ({c.path.name if c.path else ''}, mix {c.mix}): "
                          f"filtered (anchor, positive) pairs and candidate negatives per hardness bucket.{unused}")
    def _asset(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
        layout = storage.layout
        for warning in curriculum_warnings(c):
            context.log.warning(warning)
        target = layout.sampling_index(c.name)
        stats = build_index(c, pq.read_table(layout.descriptions), layout.distances, layout.triplets,
                            target, seed=INDEX_SEED)
        meta = SamplingIndex(target).meta
        summary = shortfall_summary(c.name, meta)
        if summary:
            context.log.warning(summary)
        shown = [str(h) for h in HARDNESS if str(h) in meta["requested_mix"] or str(h) in meta["realized_mix"]]
        plot = bar_chart(shown, {"requested": [100 * meta["requested_mix"].get(h, 0) for h in shown],
                                 "realized": [100 * meta["realized_mix"].get(h, 0) for h in shown]},
                         f"{c.name}: hardness mix over one simulated epoch ({meta['mix']})", "% of negatives")
        write_catalog(layout.root, layout.tables())
        return dg.MaterializeResult(metadata=readable({
            "dagster/row_count": stats["pairs"], "pairs": stats["pairs"], "anchors": stats["anchors"],
            "candidate_groups": stats["groups"], "negatives_short": negatives_short(meta),
            "build_seconds": stats["build_seconds"], "sampler_samples_per_second": meta["sampler_samples_per_second"],
            "curriculum_file": c.path, "positives": _positives(c), "mix_mode": meta["mix"],
            # Requested and realized shares, candidates, K's split, shortfalls: its two tables (no JSON copies).
            "mix": dg.MetadataValue.md(mix_markdown(meta)),
            "positive_shift": dg.MetadataValue.md(positive_shift_markdown(meta["positive_shift"]))
            if "positive_shift" in meta else None,
            "mix_plot": dg.MetadataValue.md(markdown_image(plot, "requested vs realized mix")),
            "path": target,
        }))

    return _asset


def curriculum_assets(folder: Path) -> list[dg.AssetsDefinition]:
    curricula = load_curricula(folder)
    trained = {s.curriculum.name for s in load_plan(folder, curricula)}
    return [sampling_index_asset(c, c.name in trained) for c in curricula.values()]


@dg.definitions
def sampling_indexes() -> dg.Definitions:
    return dg.Definitions(assets=curriculum_assets(settings.curricula_dir()))
