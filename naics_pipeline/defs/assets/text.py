"""Group `training`: the text embeddings every stage reads."""
import dagster as dg
import pyarrow.parquet as pq

from naics_pipeline.defs.assets.source import OWNERS
from naics_pipeline.defs.resources import StorageResource, TrainingResource
from naics_pipeline.text.encoder import build_text_embeddings


@dg.asset(deps=["naics_descriptions", "naics_index_holdout"], group_name="training",
          kinds={"pytorch", "numpy"}, owners=OWNERS, code_version="1")
def text_embeddings(context: dg.AssetExecutionContext, storage: StorageResource,
                    training: TrainingResource) -> dg.MaterializeResult:
    """Sentence embeddings of each code's title, description, examples and excluded text, plus the
    held-out index entries (computed once; the encoder is frozen)."""
    layout = storage.layout
    emb = build_text_embeddings(pq.read_table(layout.descriptions), pq.read_table(layout.index_holdout),
                                training.encoder, progress=context.log.info)
    emb.save(layout.text_embeddings)
    coverage = {c: int(emb.present[:, i].sum()) for i, c in enumerate(("title", "description", "examples", "excluded"))}
    return dg.MaterializeResult(metadata={
        "encoder": emb.encoder, "codes": len(emb.codes), "dimension": int(emb.channels.shape[-1]),
        "codes_with_channel": dg.MetadataValue.json(coverage), "holdout_entries": len(emb.holdout_codes),
        "path": dg.MetadataValue.path(str(layout.text_embeddings))})
