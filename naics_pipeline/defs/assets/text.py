"""Group `training`: the text embeddings every stage reads, and the final stage's entry index that
`classify` searches."""
import time

import dagster as dg
import pyarrow.parquet as pq

from naics_pipeline.curricula.config import Stage
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


def _entry_index_asset(final: Stage) -> dg.AssetsDefinition:
    @dg.asset(name="text_entry_index", deps=[final.name, "naics_descriptions", "text_embeddings"],
              group_name="training", kinds={"numpy", "scikitlearn"}, owners=OWNERS, code_version="4")
    def text_entry_index(context: dg.AssetExecutionContext, storage: StorageResource,
                         training: TrainingResource) -> dg.MaterializeResult:
        """What `classify` searches and how it fuses: every kept index entry, 6-digit title and description
        encoded by the final stage's encoder (its fine-tuned weights where it fine-tuned them), and the
        fusion weights of geometry, retrieval and lexical similarity fitted on the validation split of the
        kept entries (withheld from the model; data.entry_splits) and on the written descriptions' dev half
        (text.written). Rebuilt when the stage or the source changes."""
        from naics_pipeline.text.classify import TextClassifier
        from naics_pipeline.text.index import INDEX_FILE, build_entry_index
        from naics_pipeline.training.loop import uses_gpu

        layout = storage.layout
        device = "cuda" if uses_gpu(training.accelerator) else "cpu"
        clf = TextClassifier.load(layout.root, final.name, device=device)
        index = build_entry_index(clf, pq.read_table(layout.descriptions), layout.stage_dir(final.name) / "model.pt",
                                  layout.text_cache, log=context.log.info)
        path = layout.stage_dir(final.name) / INDEX_FILE
        index.save(path)
        fit = index.meta["validation"]
        return dg.MaterializeResult(metadata={
            "stage": final.name, "encoder": index.meta["encoder"], "fine_tuned_encoder": index.meta["fine_tuned"],
            "texts_per_kind": dg.MetadataValue.json(index.meta["texts_per_kind"]),
            "dimension": index.meta["dimension"], "validation_entries": index.meta["validation_entries"],
            "fusion_weights": dg.MetadataValue.json(fit["weights"]),
            **{f"validation_{k}": round(fit[k], 4) for k in ("nll", "top1", "top5") if fit[k] is not None},
            "written_texts": index.meta["written_texts"],
            **({f"written_{k}": round(fit["written"][k], 4) for k in ("nll", "top1", "top5")}
               if "written" in fit else {}),
            **({"validation_out_of_fold": dg.MetadataValue.json({d: {k: fit[d][f"out_of_fold_{k}"] for k in
                                                                    ("uncalibrated", "calibrated")}
                                                                for d in ("entries", "written") if d in fit}),
                "temperature": dg.MetadataValue.json(fit["temperature"])} if "temperature" in fit else {}),
            **({"min_precision_cuts": dg.MetadataValue.json(
                {f"{prec:g}": {f"{lv} digits": round(c, 4) for lv, c in index.cuts.cuts(prec).items()}
                 for prec in (0.9, 0.95, 0.99)})} if index.cuts is not None else {}),
            "seconds": index.meta["seconds"],
            "path": dg.MetadataValue.path(str(path))})
    return text_entry_index


@dg.definitions
def text_assets() -> dg.Definitions:
    from naics_pipeline.defs.assets.training import stage_plan

    return dg.Definitions(assets=[text_embeddings, _entry_index_asset(stage_plan()[-1])])
