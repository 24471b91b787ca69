"""Hyperbolic embedding model, Lightning training of one stage, and evaluation against the tree.

Names are imported on first use: `naics_pipeline.training.lorentz` needs only torch, while the
training loop pulls in Lightning (seconds to import).
"""
import importlib

_EXPORTS = {
    "ModelConfig": "model", "NaicsEmbedder": "model", "TrainConfig": "loop", "StageResult": "loop",
    "train_stage": "loop", "load_model": "loop", "embed_all": "loop", "evaluate_embeddings": "evaluation",
    "evaluate_distances": "evaluation",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"naics_pipeline.training.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'naics_pipeline.training' has no attribute {name!r}")
