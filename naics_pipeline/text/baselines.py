"""Text -> 6-digit NAICS baselines and the two harnesses that score any text classifier.

A classifier is a *fitter*: `fit(train_texts, train_codes) -> predict`, with `predict(texts, k)`
returning a (len(texts), k) array of codes, best first ("" where it has none). Baselines:
- `nearest_entry_fitter(embed)`: the code of the most similar training entry (cosine); codes are
  ranked by their best entry. `minilm_fitter` embeds with the frozen all-MiniLM-L6-v2 of
  text.encoder, `tfidf_fitter` with TF-IDF over word unigrams and bigrams (scikit-learn).
- `beacon_fitter`: the Census Bureau's BEACON, imported at run time from its file
  (../shared/peers/beacon/beacon.py); `load_beacon` says why when it is absent.
Harnesses (both return text_accuracy's dict: top-1/top-5 at 6, 4 and 2 digits):
- `holdout_accuracy`: one predict over the held-out index entries (naics_index_holdout), fitted on
  `training_entries` (the kept entries, naics_descriptions.examples split on '; ', plus the 6-digit
  titles); with the `_novel` rows over entries found in neither their code's description nor title.
- `cross_validate`: BEACON-style k-fold (2 folds, seed 12345) over `all_index_entries`.
Hook for a trained text model: write a fitter that trains its text side on (train_texts,
train_codes) and returns a predict over TextClassifier (see `classifier_predict`), then pass it to
`cross_validate` like any baseline; benchmarks/bench_text.py's `cv_fitters` lists the ones it runs.
"""
from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa

from naics_pipeline.training.evaluation import text_accuracy

Predict = Callable[[list[str], int], np.ndarray]
Fitter = Callable[[list[str], list[str]], Predict]

CV_FOLDS = 2
CV_SEED = 12345           # BEACON's published cross-validation seed
QUERY_CHUNK = 256         # queries scored against every training entry at a time
BEACON_PATH = Path(__file__).resolve().parents[3] / "shared" / "peers" / "beacon" / "beacon.py"
# BEACON's README figure: 2-fold CV on its own 2017 example data (index entries + titles, 41,918 rows,
# weighted by establishment counts), 6-digit top-1. A reference row, not measured here.
BEACON_PUBLISHED_TOP1 = 0.825

def training_entries(descriptions: pa.Table) -> tuple[list[str], list[str]]:
    """(texts, codes): every kept index entry of a 6-digit code (by code), then every 6-digit title (by code)."""
    from naics_pipeline.text.splits import kept_entries

    texts, codes = kept_entries(descriptions)
    order = sorted(range(len(texts)), key=lambda i: codes[i])
    six = sorted((c, t) for c, t, lv in zip(descriptions.column("code").to_pylist(),
                                            descriptions.column("title").to_pylist(),
                                            descriptions.column("level").to_pylist()) if lv == 6)
    return [texts[i] for i in order] + [t for _, t in six], [codes[i] for i in order] + [c for c, _ in six]


def all_index_entries(descriptions: pa.Table, holdout: pa.Table) -> tuple[list[str], list[str]]:
    """(texts, codes): the 6-digit index entries, kept and held out (no titles), ordered by (code, entry):
    the cross-validation set."""
    from naics_pipeline.text.splits import kept_entries

    texts, codes = kept_entries(descriptions)
    six = {c for c, lv in zip(descriptions.column("code").to_pylist(), descriptions.column("level").to_pylist())
           if lv == 6}
    rows = list(zip(codes, texts)) + [(c, e) for c, e in zip(holdout.column("code").to_pylist(),
                                                             holdout.column("entry").to_pylist()) if c in six]
    rows.sort()
    return [e for _, e in rows], [c for c, _ in rows]


# ---------------------------------------------------------------------------------------------
# Nearest training entry

class EntryIndex:
    """Training entry vectors grouped by code: `top_codes` ranks codes by their best entry."""

    def __init__(self, vectors, codes: list[str]):
        order = np.argsort(np.asarray(codes, dtype=str), kind="stable")
        self.vectors = vectors[order]
        self.codes, self.starts = np.unique(np.asarray(codes, dtype=str)[order], return_index=True)

    def top_codes(self, query_vectors, k: int) -> np.ndarray:
        k = min(k, len(self.codes))
        out = np.empty((query_vectors.shape[0], k), dtype=object)
        for start in range(0, query_vectors.shape[0], QUERY_CHUNK):
            sims = query_vectors[start:start + QUERY_CHUNK] @ self.vectors.T
            sims = sims.toarray() if hasattr(sims, "toarray") else np.asarray(sims)
            best = np.maximum.reduceat(sims, self.starts, axis=1)          # (q, codes): best entry per code
            top = np.argpartition(-best, k - 1, axis=1)[:, :k]
            top = np.take_along_axis(top, np.argsort(-np.take_along_axis(best, top, axis=1), axis=1,
                                                     kind="stable"), axis=1)
            out[start:start + QUERY_CHUNK] = self.codes[top]
        return out


def nearest_entry_fitter(make_embed: Callable[[list[str]], Callable[[list[str]], object]]) -> Fitter:
    """A fitter from `make_embed(train_texts) -> embed`, embed giving L2-normalised rows (dense or sparse)."""
    def fit(train_texts: list[str], train_codes: list[str]) -> Predict:
        embed = make_embed(train_texts)
        index = EntryIndex(embed(train_texts), train_codes)
        return lambda texts, k: index.top_codes(embed(list(texts)), k)
    return fit


class CachedEncoder:
    """Encodes each distinct text once (the folds of a cross-validation share their texts)."""

    def __init__(self, encoder, batch_size: int = 128):
        self.encoder = encoder
        self.batch_size = batch_size
        self.cache: dict[str, np.ndarray] = {}

    def __call__(self, texts: list[str]) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if t not in self.cache))
        if missing:
            self.cache.update(zip(missing, self.encoder.encode(missing, batch_size=self.batch_size)))
        return np.stack([self.cache[t] for t in texts]) if texts else np.zeros((0, self.encoder.dim), np.float32)


def minilm_fitter(encoder=None) -> Fitter:
    """Nearest training entry by cosine of frozen sentence embeddings (all-MiniLM-L6-v2 by default;
    any object with encode(texts, batch_size=) -> normalised rows and `dim`)."""
    if encoder is None:
        from naics_pipeline.text.encoder import make_encoder

        encoder = make_encoder("minilm", "cpu")
    cached = CachedEncoder(encoder)
    return nearest_entry_fitter(lambda _train: cached)


def tfidf_fitter() -> Fitter:
    """Nearest training entry by cosine of TF-IDF vectors (word unigrams and bigrams, sublinear tf),
    the vocabulary and idf fitted on the training texts."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    def make_embed(train_texts: list[str]):
        vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, strip_accents="unicode")
        vectorizer.fit(train_texts)
        return vectorizer.transform
    return nearest_entry_fitter(make_embed)


# ---------------------------------------------------------------------------------------------
# BEACON

def load_beacon(path: Path = BEACON_PATH):
    """(beacon module, None), or (None, why it is skipped)."""
    path = Path(path)
    if not path.is_file():
        return None, f"BEACON skipped: {path} not found (the peers folder ../shared/peers/beacon is absent)"
    try:
        spec = importlib.util.spec_from_file_location("naics_peer_beacon", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except ImportError as exc:
        return None, f"BEACON skipped: importing {path} failed ({exc}); it needs numpy and scikit-learn"
    return module, None


def beacon_fitter(module) -> Fitter:
    """BEACON (freq_thresh=1, its defaults) fitted on the training texts, unweighted."""
    def fit(train_texts: list[str], train_codes: list[str]) -> Predict:
        model = module.BeaconModel(freq_thresh=1).fit(np.array(train_texts), np.array(train_codes))

        def predict(texts: list[str], k: int) -> np.ndarray:
            top = model.predict_top10(np.array(list(texts))).astype(object)     # "" pads missing codes
            return top[:, :k] if k <= top.shape[1] else np.pad(top, ((0, 0), (0, k - top.shape[1])),
                                                                 constant_values="")
        return predict
    return fit


# ---------------------------------------------------------------------------------------------
# Harnesses

def classifier_predict(classifier) -> Predict:
    """A TextClassifier (the trained model) as a predict: its k nearest 6-digit codes per text."""
    def predict(texts: list[str], k: int) -> np.ndarray:
        table = classifier.predict_table(list(texts), k)
        return np.array(table.column("code").to_pylist(), dtype=object).reshape(len(texts), -1)
    return predict


def holdout_accuracy(predict: Predict, entries: list[str], codes: list[str], descriptions: pa.Table) -> dict:
    """text_accuracy of `predict`'s top 5 over held-out entries, with the `_novel` rows."""
    return text_accuracy(predict(entries, 5), codes, descriptions, entries)


def cv_folds(n: int, folds: int = CV_FOLDS, seed: int = CV_SEED) -> np.ndarray:
    """Fold number per row: a seeded permutation cut into `folds` near-equal parts."""
    fold = np.empty(n, np.int64)
    fold[np.random.default_rng(seed).permutation(n)] = np.arange(n) % folds
    return fold


def cross_validate(fit: Fitter, texts: list[str], codes: list[str], descriptions: pa.Table,
                   folds: int = CV_FOLDS, seed: int = CV_SEED) -> dict:
    """Fit on all folds but one, score on that one, for each fold; the mean of text_accuracy."""
    fold = cv_folds(len(texts), folds, seed)
    texts_arr, codes_arr = np.array(texts, dtype=object), np.array(codes, dtype=object)
    scores = []
    for f in range(folds):
        train, test = fold != f, fold == f
        predict = fit(texts_arr[train].tolist(), codes_arr[train].tolist())
        scores.append(text_accuracy(predict(texts_arr[test].tolist(), 5), codes_arr[test].tolist(), descriptions))
    out = {key: float(np.mean([s[key] for s in scores])) for key in scores[0] if key != "holdout_entries"}
    out["entries"] = len(texts)
    out["folds"] = folds
    return out
