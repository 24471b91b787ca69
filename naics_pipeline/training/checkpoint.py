"""A trained stage's model.pt: write it, load it, embed codes and queries with it (torch only).

What classification and evaluation need from a stage, without the training loop or Lightning: the
code model (`load_model`), its points for every code (`embed_all`), free-text queries through the
code model (`embed_queries`) or through a text-alignment stage's query head (`load_query_head`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from naics_pipeline.encoders import TextEmbeddings
from naics_pipeline.storage import atomic_path
from naics_pipeline.training.model import ModelConfig, NaicsEmbedder, QueryHead


def save_model(path: Path, blob: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)


def load_model(path: Path, device: str = "cpu") -> tuple[NaicsEmbedder, dict]:
    blob = torch.load(path, map_location=device, weights_only=False)
    model = NaicsEmbedder(ModelConfig(**blob["model_config"]))
    model.load_state_dict(blob["state_dict"])
    model.eval()
    return model, blob


def load_query_head(blob: dict) -> QueryHead:
    """The query head a text-alignment stage stored in its model.pt (blob has "text_head")."""
    cfg = blob["model_config"]
    head = QueryHead(cfg["text_dim"], blob["text_config"]["hidden_dim"], cfg["embedding_dim"])
    head.load_state_dict(blob["text_head"])
    head.eval()
    return head


@torch.no_grad()
def embed_all(model: NaicsEmbedder, emb: TextEmbeddings, levels: np.ndarray) -> tuple[np.ndarray, dict]:
    model.eval()
    dev = next(model.parameters()).device
    points, lb, usage = model(torch.as_tensor(emb.channels, device=dev), torch.as_tensor(emb.present, device=dev),
                              torch.as_tensor(levels, dtype=torch.long, device=dev))
    return points.cpu().numpy(), {"load_balancing_loss": float(lb), "expert_usage": usage.cpu().tolist()}


@torch.no_grad()
def embed_queries(model: NaicsEmbedder, channels: np.ndarray, present: np.ndarray, level: int = 6) -> np.ndarray:
    dev = next(model.parameters()).device
    levels = torch.full((len(channels),), level, dtype=torch.long, device=dev)
    points, _, _ = model(torch.as_tensor(channels, device=dev), torch.as_tensor(present, device=dev), levels)
    return points.cpu().numpy()
