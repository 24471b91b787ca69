"""Group `training`: the text embeddings every stage reads."""
import time

import dagster as dg
import pyarrow.parquet as pq

from naics_pipeline.defs.assets.source import OWNERS
from naics_pipeline.defs.metadata import readable
from naics_pipeline.defs.resources import StorageResource, TrainingResource
from naics_pipeline.encoders import build_text_embeddings


@dg.asset(deps=["naics_descriptions", "naics_index_holdout"], group_name="training",
          kinds={"pytorch", "numpy"}, owners=OWNERS, code_version="1")
def text_embeddings(context: dg.AssetExecutionContext, storage: StorageResource,
                    training: TrainingResource) -> dg.MaterializeResult:
    """Sentence embeddings of each code's title, description, examples and excluded text, plus the
    held-out index entries. The encoder is frozen: each distinct text is encoded once per encoder version
    and kept in text_cache/, so a rebuild encodes only texts it has not seen."""
    layout = storage.layout
    started = time.perf_counter()
    emb = build_text_embeddings(pq.read_table(layout.descriptions), pq.read_table(layout.index_holdout),
                                training.encoder, progress=context.log.info, cache_dir=layout.text_cache)
    emb.save(layout.text_embeddings)
    seconds = time.perf_counter() - started
    coverage = {c: int(emb.present[:, i].sum()) for i, c in enumerate(("title", "description", "examples", "excluded"))}
    return dg.MaterializeResult(metadata=readable({
        "encoder": emb.encoder, "codes": len(emb.codes), "dimension": int(emb.channels.shape[-1]),
        "codes_with_channel": dg.MetadataValue.json(coverage), "holdout_entries": len(emb.holdout_codes),
        "texts": emb.stats["texts"], "texts_distinct": emb.stats["distinct"],
        "texts_encoded": emb.stats["encoded"], "texts_reused": emb.stats["reused"], "seconds": seconds,
        "cache": dg.MetadataValue.path(str(layout.text_cache)),
        "path": dg.MetadataValue.path(str(layout.text_embeddings))}))
