"""The entry index: every known text of the 6-digit codes, encoded by the stage's encoder, and the
fusion weights fitted over it. `classify` loads it (training/<stage>/entry_index.npz, the Dagster
asset text_entry_index).

Known texts, by kind: the kept index entries, the 6-digit titles, and each 6-digit code's description.
Per (text, candidate code) features (FEATURES):
- geometry: the stage's log-probability of the code (softmax of -Lorentz distance / temperature);
- entry / title / description: cosine of the text to the code's nearest kept entry, its title, its
  description (the stage's encoder; codes without one get 0);
- lexical: TF-IDF cosine to the code's nearest entry or title (word unigrams + bigrams);
- entry_group: the best `entry` cosine among the codes of the same 4-digit industry group.
`fit_index` fits the weights on the validation split: those entries are taken out of the index, and
the model that gives their geometry never saw them (text.splits), then they are put back."""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from naics_pipeline.text.fusion import fit_conditional_logit, probabilities
from naics_pipeline.text.retrieval import DenseIndex, LexicalIndex

KINDS = ("entry", "title", "description")
FEATURES = ("geometry", "entry", "title", "description", "lexical", "entry_group")
INDEX_FILE = "entry_index.npz"
FORMAT = 1

# (Q, D) encoded texts -> (Q, C) log-probabilities of the candidates under the stage's geometry
Geometry = Callable[[np.ndarray], np.ndarray]


@dataclass
class KnownTexts:
    texts: list[str]
    codes: list[str]
    kinds: np.ndarray                # (N,) index into KINDS
    vectors: np.ndarray              # (N, D) float32, L2-normalised, by the stage's encoder

    def subset(self, keep: np.ndarray) -> KnownTexts:
        return KnownTexts([t for t, k in zip(self.texts, keep) if k], [c for c, k in zip(self.codes, keep) if k],
                          self.kinds[keep], self.vectors[keep])


def known_texts(descriptions) -> tuple[list[str], list[str], np.ndarray]:
    """(texts, codes, kinds) of every kept entry, 6-digit title and 6-digit description."""
    from naics_pipeline.text.splits import kept_entries

    texts, codes = kept_entries(descriptions)
    kinds = [0] * len(texts)
    for code, level, title, desc in zip(*(descriptions.column(c).to_pylist()
                                          for c in ("code", "level", "title", "description"))):
        if level != 6:
            continue
        for kind, text in ((1, title), (2, desc)):
            if text and text.strip():
                texts.append(text.strip())
                codes.append(code)
                kinds.append(kind)
    return texts, codes, np.array(kinds, np.int8)


class Scorer:
    """Features of texts against the candidate codes over one set of known texts."""

    def __init__(self, known: KnownTexts, candidates: list[str], groups: np.ndarray,
                 features: tuple[str, ...] = FEATURES, device: str = "cpu"):
        self.candidates, self.features = list(candidates), tuple(features)
        self.dense = {}
        for k, kind in enumerate(KINDS):
            rows = known.kinds == k
            if (kind in features or (kind == "entry" and "entry_group" in features)) and rows.any():
                self.dense[kind] = DenseIndex(known.vectors[rows], [c for c, r in zip(known.codes, rows) if r],
                                              self.candidates, device)
        lex = known.kinds <= 1
        self.lexical = (LexicalIndex([t for t, r in zip(known.texts, lex) if r],
                                     [c for c, r in zip(known.codes, lex) if r], self.candidates, device=device)
                        if "lexical" in features else None)
        # candidates sorted by group, where each group starts: for the group max
        self._group_order = np.argsort(groups, kind="stable")
        g = groups[self._group_order]
        self._group_starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
        self._group_of = np.empty(len(groups), np.int64)
        self._group_of[self._group_order] = np.repeat(np.arange(len(self._group_starts)),
                                                      np.diff(np.r_[self._group_starts, len(groups)]))

    def group_max(self, x: np.ndarray) -> np.ndarray:
        best = np.maximum.reduceat(x[:, self._group_order], self._group_starts, axis=1)
        return best[:, self._group_of]

    def columns(self, vectors: np.ndarray, texts: list[str], geometry: np.ndarray | None) -> dict[str, np.ndarray]:
        """Each feature's (Q, C) matrix for texts (their vectors (Q, D)), with the geometry log-probs (Q, C)."""
        cols, entry = {}, None
        for kind, index in self.dense.items():
            cols[kind] = best = index.best(vectors)
            best[best <= -1.0] = 0.0          # a code without a text of this kind
            if kind == "entry":
                entry = best
        if "entry_group" in self.features:
            cols["entry_group"] = self.group_max(entry)
        if self.lexical is not None:
            cols["lexical"] = self.lexical.best(texts)
        if "geometry" in self.features:
            cols["geometry"] = geometry
        return cols

    def __call__(self, vectors: np.ndarray, texts: list[str], geometry: np.ndarray | None) -> np.ndarray:
        """(Q, C, F) features of texts (their vectors (Q, D)), with the geometry log-probs (Q, C)."""
        cols = self.columns(vectors, texts, geometry)
        zero = np.zeros((len(texts), len(self.candidates)), np.float32)
        return np.stack([np.asarray(cols.get(f, zero), np.float32) for f in self.features], axis=-1)

    def scores_torch(self, vectors: np.ndarray, texts: list[str], geometry, weights: np.ndarray):
        """scores() on the GPU: (Q, C) float32 torch on the indexes' device; `geometry` a torch (Q, C)."""
        import torch

        out = torch.zeros((len(texts), len(self.candidates)), dtype=torch.float32, device=geometry.device)
        w = dict(zip(self.features, map(float, weights)))
        entry = None
        for kind, index in self.dense.items():
            best = index.best_torch(vectors)
            best = torch.where(best <= -1.0, torch.zeros_like(best), best)
            if kind == "entry":
                entry = best
            if kind in w:
                out += w[kind] * best
        if "entry_group" in w:
            if not hasattr(self, "_group_of_t"):
                self._group_of_t = torch.as_tensor(self._group_of, device=out.device)
            g = torch.full((len(texts), len(self._group_starts)), -1.0, device=out.device)
            g.scatter_reduce_(1, self._group_of_t.expand(len(texts), -1), entry, reduce="amax", include_self=True)
            out += w["entry_group"] * g[:, self._group_of_t]
        if self.lexical is not None:
            out += w["lexical"] * self.lexical.best_torch(texts)
        if "geometry" in w:
            out += w["geometry"] * geometry.float()
        return out

    def scores(self, vectors: np.ndarray, texts: list[str], geometry: np.ndarray | None,
               weights: np.ndarray) -> np.ndarray:
        """(Q, C) fused scores w . x(q, c), summed feature by feature (no (Q, C, F) stack)."""
        cols = self.columns(vectors, texts, geometry)
        out = np.zeros((len(texts), len(self.candidates)), np.float64)
        for f, w in zip(self.features, weights):
            if f in cols:
                out += w * cols[f]
        return out


@dataclass
class EntryIndex:
    """Known texts + fusion weights; `scorer` builds the features, `probabilities` fuses them."""
    known: KnownTexts
    features: tuple[str, ...]
    weights: np.ndarray
    meta: dict = field(default_factory=dict)
    _scorer: Scorer | None = None

    def scorer(self, candidates: list[str], groups: np.ndarray, device: str = "cpu") -> Scorer:
        if self._scorer is None:
            self._scorer = Scorer(self.known, candidates, groups, self.features, device)
        return self._scorer

    def save(self, path: Path) -> None:
        from naics_pipeline.storage import atomic_path

        with atomic_path(Path(path)) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, texts=np.array(self.known.texts, dtype=str), codes=np.array(self.known.codes, dtype=str),
                         kinds=self.known.kinds, vectors=self.known.vectors.astype(np.float16),
                         features=np.array(self.features, dtype=str), weights=self.weights,
                         meta=np.array(json.dumps({**self.meta, "format": FORMAT})))

    @classmethod
    def load(cls, path: Path) -> EntryIndex:
        z = np.load(path, allow_pickle=False)
        meta = json.loads(str(z["meta"]))
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path} is entry index format {meta.get('format')}, this code reads {FORMAT}: "
                             "rematerialize text_entry_index")
        known = KnownTexts(z["texts"].tolist(), z["codes"].tolist(), z["kinds"], z["vectors"].astype(np.float32))
        return cls(known, tuple(z["features"].tolist()), z["weights"], meta)


def validation_features(known: KnownTexts, validation: np.ndarray, geometry: Geometry | None,
                        candidates: list[str], groups: np.ndarray, features: tuple[str, ...] = FEATURES):
    """(features (V, C, F), true candidate positions (V,), the feature names) of the `validation` rows of
    `known` (kept entries only), scored against an index without them."""
    if geometry is None:
        features = tuple(f for f in features if f != "geometry")
    val = validation & (known.kinds == 0)
    if not val.any():
        raise ValueError("no validation entries to fit the fusion on (every code has fewer than 3 kept entries)")
    scorer = Scorer(known.subset(~val), candidates, groups, features)
    pos = {c: i for i, c in enumerate(candidates)}
    target = np.array([pos[c] for c, v in zip(known.codes, val) if v])
    vecs = known.vectors[val]
    texts = [t for t, v in zip(known.texts, val) if v]
    return scorer(vecs, texts, geometry(vecs) if geometry is not None else None), target, features


def fit_index(known: KnownTexts, validation: np.ndarray, geometry: Geometry | None, candidates: list[str],
              groups: np.ndarray, features: tuple[str, ...] = FEATURES, log=lambda *_: None) -> EntryIndex:
    """Fit the fusion weights on the `validation` rows of `known` against an index without them, then
    return the index over every known text with those weights. `geometry` must come from a model
    that never trained on the validation rows."""
    x, target, features = validation_features(known, validation, geometry, candidates, groups, features)
    weights, fit = fit_conditional_logit(x, target)
    p = probabilities(x, weights)
    fit.update({"top5": float((np.argsort(-p, 1)[:, :5] == target[:, None]).any(1).mean()),
                "weights": dict(zip(features, map(float, weights)))})
    log(f"fusion fitted on {len(target):,} validation entries: NLL {fit['nll']:.3f}, top-1 {fit['top1']:.3f}, "
        f"weights {', '.join(f'{k} {v:.2f}' for k, v in fit['weights'].items())}")
    counts = {kind: int((known.kinds == k).sum()) for k, kind in enumerate(KINDS)}
    return EntryIndex(known, tuple(features), weights,
                      {"validation": fit, "texts_per_kind": counts, "validation_entries": int(len(target)),
                       "dimension": int(known.vectors.shape[1])})


def build_entry_index(clf, descriptions, model_path: Path, cache_dir: Path | None = None,
                      log=lambda *_: None) -> EntryIndex:
    """The entry index of a loaded TextClassifier's stage: every known text encoded by the stage's
    encoder (frozen vectors reused from the text cache; a fine-tuned encoder's computed afresh), the
    fusion fitted on the validation split (text.splits) with the stage's geometry."""
    import time

    from naics_pipeline.text.encoder import encode_texts
    from naics_pipeline.text.splits import validation_mask

    started = time.perf_counter()
    texts, codes, kinds = known_texts(descriptions)
    if clf.fine_tuned or cache_dir is None:
        vectors = clf.encode(texts)
        stats = {"encoded": len(texts), "reused": 0}
    else:
        vectors, stats = encode_texts(clf.encoder, texts, cache_dir)
    log(f"entry index: {len(texts):,} known texts, {stats['encoded']:,} encoded, {stats['reused']:,} reused")
    entry = kinds == 0
    val = np.zeros(len(texts), bool)
    val[entry] = validation_mask([t for t, e in zip(texts, entry) if e], [c for c, e in zip(codes, entry) if e])
    known = KnownTexts(texts, codes, kinds, vectors.astype(np.float32))
    index = fit_index(known, val, clf.geometry, clf.table.codes[clf.six].tolist(),
                      np.asarray(clf.table.industry_group[clf.six], dtype=str), log=log)
    from naics_pipeline.text.classify import _file_digest

    index.meta.update({"stage": clf.stage, "encoder": clf.encoder.name, "fine_tuned": bool(clf.fine_tuned),
                       "model": _file_digest(model_path), "seconds": round(time.perf_counter() - started, 1)})
    return index
