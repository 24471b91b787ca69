"""The entry index: every known text of the 6-digit codes, encoded by the stage's encoder, and the
fusion weights fitted over it. `classify` loads it (training/<stage>/entry_index.npz, the Dagster
asset text_entry_index).

Known texts, by kind: the kept index entries, the 6-digit titles, each 6-digit code's description, and
the cross-references: each activity that a code's exclusions send elsewhere ("Retailing bakery products
not for immediate consumption made elsewhere--are classified in U.S. Industry 445291"), a known text of
the code it is sent to.
Per (text, candidate code) features (FEATURES):
- geometry, geometry_far: the stage's log-probability g of the code (softmax of -Lorentz distance /
  temperature), cut at GEOMETRY_NEAR: max(g, GEOMETRY_NEAR) ranks the codes the geometry places near the
  text, min(g, GEOMETRY_NEAR) - GEOMETRY_NEAR says how far off the others are, each with its own weight
  (one weight on g let a far code's large negative g push every other sector out of the top five);
- entry / title / description / cross_reference: cosine of the text to the code's nearest kept entry,
  its title, its description, its nearest cross-reference (the stage's encoder; codes without one get 0);
- lexical: TF-IDF cosine to the code's nearest entry or title (word unigrams + bigrams);
- lexical_description: TF-IDF cosine to the code's description (one TF-IDF, fitted on the entries, titles and
  descriptions, for both lexical features);
- entry_group: the best `entry` cosine among the codes of the same 4-digit industry group;
- entry_high: max(entry - ENTRY_HIGH, 0), the part of a near-duplicate's cosine that one weight on
  `entry` over-trusts (its fitted weight is negative);
- entry_soft: 1 + tau log sum exp((cos - 1) / tau) over the code's kept entries (tau ENTRY_SOFT_TAU): a
  code with several close entries above one with a single one;
- lexical_char: TF-IDF cosine of character 3-5-grams (within words) to one document per code, all its
  known texts joined: spelling variants and word forms ("bakeries", "baker") that word n-grams miss.
`fit_index` fits the weights on two domains, weighted equally: the validation split of the index
entries (data.entry_splits; the model that gives their geometry never saw them) and the `dev` half of
the written descriptions (text.written; never in the index nor in any training). The entries are
cross-fitted: the validation entries are dealt into CROSSFIT_FOLDS folds and
each fold is scored against the index of every known text but that fold, so a validation text sees what
a new text sees at inference (its code short of about one entry, not of its whole 15% share). The
weights are fitted on every validation text's features; each text's temperature exp(a + b x entropy)
(text.fusion.calibrated_scores) on out-of-fold scores (each fold scored by weights fitted on the other
folds). Then the validation entries are back in the index."""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from naics_pipeline.text.calibration import PrecisionCuts
from naics_pipeline.text.fusion import calibrated_scores, fit_conditional_logit, fit_temperature, log_softmax
from naics_pipeline.text.rerank import Reranker, apply_to_features, fit_reranker
from naics_pipeline.text.retrieval import CodeSegments, DenseIndex, LexicalIndex, TermCounts

KINDS = ("entry", "title", "description", "cross_reference")
FEATURES = ("geometry", "geometry_far", "entry", "title", "description", "lexical", "entry_group",
            "lexical_description", "cross_reference", "entry_high", "entry_soft", "lexical_char")
# a cross-reference sent to a 4- or 5-digit code is a known text of its 6-digit codes, up to this many
CROSS_REFERENCE_SPREAD = 5
GEOMETRY_FEATURES = ("geometry", "geometry_far")
# log-probability where the geometry is cut in two (e^-4: 1.8%): the out-of-fold NLL of the two-domain
# fit over -2, -3, -4, -6, -8, -12 (CPU model) was lowest here
GEOMETRY_NEAR = -4.0
# entry_high's threshold (0.8 against 0.7; a second cut at 0.6 or 0.9 added nothing) and entry_soft's
# temperature (0.1 against 0.02 and 0.05): the lower out-of-fold NLL of the two-domain fit (CPU model;
# docs/text.md)
ENTRY_HIGH = 0.8
ENTRY_SOFT_TAU = 0.1
INDEX_FILE = "entry_index.npz"
FORMAT = 5          # 5: the reranker (text.rerank); 4: entry_high, entry_soft, lexical_char; 3: geometry in two
#                     features, lexical_description
CROSSFIT_FOLDS = 5
# fewer fitting texts than this (a small or packaged source): no reranker, the fused scores as they are.
# A guard, not a measured optimum: NAICS 2022 fits on 2,678 texts, 2,142 per cross-fitting fold.
RERANK_MIN_TEXTS = 1000

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


def cross_reference_texts(descriptions) -> tuple[list[str], list[str]]:
    """(activities, 6-digit codes they are sent to) of every code's kept exclusions (the `excluded`
    column: `ACTIVITY--are classified in U.S. Industry CODE, TITLE`, items separated by ';')."""
    cols = {c: descriptions.column(c).to_pylist() for c in ("code", "level", "excluded")}
    six = sorted(c for c, lv in zip(cols["code"], cols["level"]) if lv == 6)
    six_set = set(six)
    texts, codes = [], []
    for excluded in cols["excluded"]:
        for item in re.split(r";\s+(?:and\s+)?", excluded or ""):
            parts = re.split(r"\s*-*\s*\b(?:are|is) classified in\b", item, maxsplit=1)
            activity = re.sub(r"^(?:and|or)\s+", "", parts[0].strip(" -.,"))
            if len(parts) < 2 or not activity:
                continue
            rest = parts[1]
            targets: list[str] = []
            for ref in re.findall(r"\b\d{2,6}\b", rest):
                under = [ref] if ref in six_set else [c for c in six if c.startswith(ref)]
                if len(under) <= CROSS_REFERENCE_SPREAD:
                    targets += [c for c in under if c not in targets]
            texts += [activity] * len(targets)
            codes += targets
    return texts, codes


def known_texts(descriptions) -> tuple[list[str], list[str], np.ndarray]:
    """(texts, codes, kinds) of every kept entry, 6-digit title, 6-digit description and cross-reference."""
    from naics_pipeline.data.entry_splits import kept_entries

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
    xref_texts, xref_codes = cross_reference_texts(descriptions)
    return texts + xref_texts, codes + xref_codes, np.array(kinds + [3] * len(xref_texts), np.int8)


# features computed from the `entry` kind's cosines
ENTRY_DERIVED = {"entry_group", "entry_high", "entry_soft"}


def code_documents(known: KnownTexts) -> dict[str, str]:
    """One text per code: all its known texts (entries, title, description, cross-references) joined by
    ' ; ', for lexical_char."""
    docs: dict[str, list[str]] = {}
    for text, code in zip(known.texts, known.codes):
        docs.setdefault(code, []).append(text)
    return {code: " ; ".join(texts) for code, texts in docs.items()}


def lexical_counts() -> dict[str, TermCounts]:
    """The term counts a Scorer fits its word and character TF-IDF from."""
    return {"word": TermCounts("word", (1, 2)), "char_wb": TermCounts("char_wb", (3, 5))}


class Scorer:
    """Features of texts against the candidate codes over one set of known texts."""

    def __init__(self, known: KnownTexts, candidates: list[str], groups: np.ndarray,
                 features: tuple[str, ...] = FEATURES, device: str = "cpu", counts: dict | None = None):
        """`counts`: lexical_counts() shared by the scorers of several subsets of the same texts."""
        self.candidates, self.features = list(candidates), tuple(features)
        counts = counts or lexical_counts()
        self.dense = {}
        for k, kind in enumerate(KINDS):
            rows = known.kinds == k
            if (kind in features or (kind == "entry" and ENTRY_DERIVED & set(features))) and rows.any():
                # a code without a text of this kind scores 0
                self.dense[kind] = DenseIndex(known.vectors[rows], [c for c, r in zip(known.codes, rows) if r],
                                              self.candidates, device, empty=0.0)
        # one TF-IDF (vocabulary and idf of the entries, titles and descriptions) for both lexical features,
        # so each query is transformed once
        lexical = [f for f in ("lexical", "lexical_description") if f in features]
        fitted = known.kinds <= 2
        if lexical:
            vectorizer, fitted_rows = counts["word"].fit([t for t, f in zip(known.texts, fitted) if f])
            at = np.cumsum(fitted) - 1          # a fitted text's row in fitted_rows
        self.lexical = self.lexical_description = None
        for name, rows in (("lexical", known.kinds <= 1), ("lexical_description", known.kinds == 2)):
            if name in features and rows.any():
                setattr(self, name, LexicalIndex([t for t, r in zip(known.texts, rows) if r],
                                                 [c for c, r in zip(known.codes, rows) if r], self.candidates,
                                                 device=device, vectorizer=vectorizer, rows=fitted_rows[at[rows]]))
        self.lexical_char = None
        if "lexical_char" in features and len(known.texts):
            docs = code_documents(known)
            self.lexical_char = LexicalIndex(list(docs.values()), list(docs), self.candidates, analyzer="char_wb",
                                             ngram_range=(3, 5), device=device, counts=counts["char_wb"])
        # the candidates as the rows of their groups, for the group max
        names, self._group_of = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
        self._groups = CodeSegments(names[self._group_of].tolist(), names.tolist())

    def _lexical_queries(self, texts: list[str]):
        index = self.lexical or self.lexical_description
        return index.queries(texts) if index is not None else None

    def query_rows(self, texts: list[str]) -> tuple:
        """(word TF-IDF rows, character TF-IDF rows) of the texts (None without that index)."""
        return self._lexical_queries(texts), (self.lexical_char.queries(texts) if self.lexical_char else None)

    def group_max(self, x: np.ndarray) -> np.ndarray:
        """(Q, C) the best of x over each candidate's group (its 4-digit industry group)."""
        return self._groups.max_per_code(x[:, self._groups.order], -1.0)[:, self._group_of]

    def columns(self, vectors: np.ndarray, texts: list[str], geometry: np.ndarray | None) -> dict[str, np.ndarray]:
        """Each feature's (Q, C) matrix for texts (their vectors (Q, D)), with the geometry log-probs (Q, C)."""
        cols = {}
        for kind, index in self.dense.items():
            if kind == "entry" and "entry_soft" in self.features:
                cols[kind], cols["entry_soft"] = index.best_and_soft(vectors, ENTRY_SOFT_TAU)
            else:
                cols[kind] = index.best(vectors)
        if "entry_group" in self.features:
            cols["entry_group"] = self.group_max(cols["entry"])
        if "entry_high" in self.features:
            cols["entry_high"] = np.maximum(cols["entry"] - ENTRY_HIGH, 0.0)
        queries = self._lexical_queries(texts)
        for name in ("lexical", "lexical_description"):
            if getattr(self, name) is not None:
                cols[name] = getattr(self, name).best(texts, queries)
        if self.lexical_char is not None:
            cols["lexical_char"] = self.lexical_char.best(texts)
        if "geometry" in self.features:
            cols["geometry"] = np.maximum(geometry, GEOMETRY_NEAR).astype(np.float32)
        if "geometry_far" in self.features:
            cols["geometry_far"] = (np.minimum(geometry, GEOMETRY_NEAR) - GEOMETRY_NEAR).astype(np.float32)
        return cols

    def __call__(self, vectors: np.ndarray, texts: list[str], geometry: np.ndarray | None) -> np.ndarray:
        """(Q, C, F) features of texts (their vectors (Q, D)), with the geometry log-probs (Q, C)."""
        cols = self.columns(vectors, texts, geometry)
        zero = np.zeros((len(texts), len(self.candidates)), np.float32)
        return np.stack([np.asarray(cols.get(f, zero), np.float32) for f in self.features], axis=-1)

    def columns_torch(self, vectors: np.ndarray, texts: list[str], geometry, rows: tuple | None = None) -> dict:
        """columns() on the indexes' device: each feature's (Q, C) float32 torch; `geometry` a torch (Q, C);
        `rows`: the texts' query_rows when already computed."""
        import torch

        cols = {}
        for kind, index in self.dense.items():
            if kind == "entry" and "entry_soft" in self.features:
                cols[kind], cols["entry_soft"] = index.best_torch(vectors, ENTRY_SOFT_TAU)
            else:
                cols[kind] = index.best_torch(vectors)
        if "entry_high" in self.features:
            cols["entry_high"] = (cols["entry"] - ENTRY_HIGH).clamp(min=0.0)
        if "entry_group" in self.features:
            if not hasattr(self, "_group_of_t"):
                self._group_of_t = torch.as_tensor(self._group_of, device=geometry.device)
            g = torch.full((len(texts), self._groups.n), -1.0, device=geometry.device)
            g.scatter_reduce_(1, self._group_of_t.expand(len(texts), -1), cols["entry"], reduce="amax",
                              include_self=True)
            cols["entry_group"] = g[:, self._group_of_t]
        queries, char_queries = self.query_rows(texts) if rows is None else rows
        for name in ("lexical", "lexical_description"):
            if getattr(self, name) is not None:
                cols[name] = getattr(self, name).best_torch(texts, queries)
        if self.lexical_char is not None:
            cols["lexical_char"] = self.lexical_char.best_torch(texts, char_queries)
        g = geometry.float()
        if "geometry" in self.features:
            cols["geometry"] = g.clamp(min=GEOMETRY_NEAR)
        if "geometry_far" in self.features:
            cols["geometry_far"] = g.clamp(max=GEOMETRY_NEAR) - GEOMETRY_NEAR
        return cols

    def weighted(self, cols: dict, weights: np.ndarray):
        """(Q, C) w . x from columns() (float32 numpy; summed in float32, returned in float64) or
        columns_torch() (float32 torch)."""
        out = None
        for f, w in zip(self.features, weights):
            if f in cols:
                term = cols[f] * (np.float32(w) if isinstance(cols[f], np.ndarray) else float(w))
                if out is None:
                    out = term
                else:
                    out += term
        if out is None:
            raise ValueError("no feature of the index is computed")
        return out.astype(np.float64) if isinstance(out, np.ndarray) else out

    def scores_torch(self, vectors: np.ndarray, texts: list[str], geometry, weights: np.ndarray):
        """scores() on the GPU: (Q, C) float32 torch on the indexes' device; `geometry` a torch (Q, C)."""
        return self.weighted(self.columns_torch(vectors, texts, geometry), weights)

    def scores(self, vectors: np.ndarray, texts: list[str], geometry: np.ndarray | None,
               weights: np.ndarray) -> np.ndarray:
        """(Q, C) fused scores w . x(q, c), summed feature by feature (no (Q, C, F) stack)."""
        return self.weighted(self.columns(vectors, texts, geometry), weights)


@dataclass
class EntryIndex:
    """Known texts + fusion weights + the reranker of each text's top codes (text.rerank; None: none) +
    the per-text temperature (a, b); `scorer` builds the features, `fused` the calibrated scores the
    softmax takes."""
    known: KnownTexts
    features: tuple[str, ...]
    weights: np.ndarray
    meta: dict = field(default_factory=dict)
    temperature: np.ndarray = field(default_factory=lambda: np.zeros(2))
    reranker: Reranker | None = None
    cuts: PrecisionCuts | None = None    # min_precision's cut per level (text.calibration; None: P itself)
    _scorer: dict | None = None

    def calibrate(self, scores):
        """(Q, C) fused scores w . x (numpy or torch) -> the scores the softmax takes."""
        return calibrated_scores(scores, self.temperature)

    def fused(self, scorer: Scorer, vectors: np.ndarray, texts: list[str], geometry, rows: tuple | None = None):
        """(Q, C) calibrated scores of texts: w . x, reranked, calibrated. numpy with a numpy `geometry`
        (or None), torch on the scorer's device with a torch one (`rows`: the texts' query_rows, when
        computed beforehand)."""
        on_torch = geometry is not None and not isinstance(geometry, np.ndarray)
        cols = (scorer.columns_torch(vectors, texts, geometry, rows) if on_torch
                else scorer.columns(vectors, texts, geometry))
        scores = scorer.weighted(cols, self.weights)
        if self.reranker is not None:
            scores = self.reranker.apply(scores, cols, self.features)
        return self.calibrate(scores)

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """(Q, C, F) features -> (Q, C) calibrated probabilities."""
        scores = apply_to_features(self.reranker, features @ self.weights, features, self.features)
        return np.exp(log_softmax(self.calibrate(scores)))

    def scorer(self, candidates: list[str], groups: np.ndarray, device: str = "cpu") -> Scorer:
        """The Scorer over every known text, built once per device."""
        if self._scorer is None:
            self._scorer = {}
        if device not in self._scorer:
            self._scorer[device] = Scorer(self.known, candidates, groups, self.features, device)
        return self._scorer[device]

    def save(self, path: Path) -> None:
        from naics_pipeline.storage import atomic_path

        with atomic_path(Path(path)) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, texts=_pack_texts(self.known.texts), codes=np.array(self.known.codes, dtype=str),
                         kinds=self.known.kinds, vectors=self.known.vectors.astype(np.float16),
                         features=np.array(self.features, dtype=str), weights=self.weights,
                         temperature=np.asarray(self.temperature, np.float64),
                         meta=np.array(json.dumps({**self.meta, "format": FORMAT})),
                         **(self.reranker.to_arrays() if self.reranker is not None else {}),
                         **(self.cuts.to_arrays() if self.cuts is not None else {}))

    @classmethod
    def load(cls, path: Path) -> EntryIndex:
        z = np.load(path, allow_pickle=False)
        meta = json.loads(str(z["meta"]))
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path} is entry index format {meta.get('format')}, this code reads {FORMAT}: "
                             "rematerialize text_entry_index")
        codes = z["codes"].tolist()
        known = KnownTexts(_unpack_texts(z["texts"], len(codes)), codes, z["kinds"], z["vectors"].astype(np.float32))
        return cls(known, tuple(z["features"].tolist()), z["weights"], meta, z["temperature"], Reranker.from_arrays(z),
                   PrecisionCuts.from_arrays(z))


TEXT_SEPARATOR = "\x1f"


def _pack_texts(texts: list[str]) -> np.ndarray:
    """The texts as UTF-8 bytes joined by TEXT_SEPARATOR: a numpy str array pads every row to the longest
    (the descriptions), which made the index 148 MB."""
    if any(TEXT_SEPARATOR in t for t in texts):
        raise ValueError("a known text contains the separator \\x1f")
    return np.frombuffer(TEXT_SEPARATOR.join(texts).encode(), np.uint8)


def _unpack_texts(packed: np.ndarray, count: int) -> list[str]:
    return packed.tobytes().decode().split(TEXT_SEPARATOR) if count else []


def validation_folds(known: KnownTexts, validation: np.ndarray, folds: int = CROSSFIT_FOLDS) -> np.ndarray:
    """(N,) fold of each validation entry row of `known` (-1 for every other row). Each code's validation
    entries, in hash order of (code, text), are dealt round-robin over the folds from a start chosen by
    the code's hash: a fold takes at most ceil(n / folds) of a code's n validation entries."""
    out = np.full(len(known.texts), -1, np.int64)
    val = validation & (known.kinds == 0)
    by_code: dict[str, list[int]] = {}
    for i in np.flatnonzero(val):
        by_code.setdefault(known.codes[i], []).append(int(i))
    key = lambda text: hashlib.blake2b(text.encode(), digest_size=8).digest()  # noqa: E731
    for code, rows in by_code.items():
        rows.sort(key=lambda i: key(f"{code}\x1f{known.texts[i]}"))
        start = int.from_bytes(key(code), "little") % folds
        for j, i in enumerate(rows):
            out[i] = (start + j) % folds
    return out


def validation_features(known: KnownTexts, validation: np.ndarray, geometry: Geometry | None,
                        candidates: list[str], groups: np.ndarray, features: tuple[str, ...] = FEATURES,
                        folds: int = CROSSFIT_FOLDS, counts: dict | None = None):
    """(features (V, C, F), true candidate positions (V,), the feature names) of the `validation` rows of
    `known` (kept entries only, in row order), cross-fitted: the rows of each fold (validation_folds)
    scored against the index of every known text but that fold's. folds=1: all against an index
    without any validation entry. `counts`: lexical_counts() of the known texts, shared by the folds."""
    counts = counts or lexical_counts()
    if geometry is None:
        features = tuple(f for f in features if f not in GEOMETRY_FEATURES)
    val = validation & (known.kinds == 0)
    if not val.any():
        raise ValueError("no validation entries to fit the fusion on (every code has fewer than 3 kept entries)")
    fold = validation_folds(known, val, folds)
    pos = {c: i for i, c in enumerate(candidates)}
    rows = np.flatnonzero(val)
    target = np.array([pos[known.codes[i]] for i in rows])
    vecs = known.vectors[rows]
    geo = geometry(vecs) if geometry is not None else None
    x = np.zeros((len(rows), len(candidates), len(features)), np.float32)
    for k in range(folds):
        mine = fold[rows] == k
        if not mine.any():
            continue
        scorer = Scorer(known.subset(fold != k), candidates, groups, features, counts=counts)
        x[mine] = scorer(vecs[mine], [known.texts[i] for i in rows[mine]], geo[mine] if geo is not None else None)
    return x, target, features


def written_features(written, known: KnownTexts, geometry: Geometry | None, candidates: list[str],
                     groups: np.ndarray, features: tuple[str, ...], counts: dict | None = None):
    """(features (W, C, F), true positions (W,)) of the written fitting texts `written` = (vectors (W, D),
    texts, codes), scored against every known text (none of them is one)."""
    vectors, texts, codes = written
    pos = {c: i for i, c in enumerate(candidates)}
    x = Scorer(known, candidates, groups, features, counts=counts)(
        vectors, list(texts), geometry(vectors) if geometry is not None else None)
    return x, np.array([pos[c] for c in codes], np.int64)


def fit_index(known: KnownTexts, validation: np.ndarray, geometry: Geometry | None, candidates: list[str],
              groups: np.ndarray, features: tuple[str, ...] = FEATURES, log=lambda *_: None,
              folds: int = CROSSFIT_FOLDS, written=None, rerank: bool = True, device: str = "cpu",
              levels=None) -> EntryIndex:
    """Fit the fusion weights on the `validation` rows of `known` (cross-fitted features:
    validation_features) and on the `written` fitting texts ((vectors, texts, codes), text.written's dev
    half; None: the entries alone), each domain half of the NLL; fit the per-text temperature on
    the entries' out-of-fold scores (the written ones are sharper: one (a, b) for both over-sharpened the
    entries: out-of-fold ECE 0.068 on the validation entries); return the index over every known text
    with those weights and that temperature. `rerank`: also fit the reranker of each text's top codes
    (text.rerank) after the weights, on the same texts. `geometry` must come from a model that never
    trained on either. The weights and the reranker are fitted on `device`. With `levels` (the candidates'
    text.calibration.LevelMap) min_precision's cuts are fitted on the entries' calibrated out-of-fold
    probabilities."""
    import time

    counts = {kind: int((known.kinds == k).sum()) for k, kind in enumerate(KINDS)}
    if geometry is not None and not (validation & (known.kinds == 0)).any():
        # a source without index entries (the packaged fallback): nothing to fit on, the geometry alone
        log("no validation entries (no code has 3 kept index entries): the fused score is the geometry alone")
        weights = np.array([1.0 if f in GEOMETRY_FEATURES else 0.0 for f in features])
        fit = {"nll": None, "top1": None, "top5": None, "texts": 0, "weights": dict(zip(features, weights.tolist()))}
        return EntryIndex(known, tuple(features), weights, {"validation": fit, "texts_per_kind": counts,
                                                           "validation_entries": 0, "written_texts": 0,
                                                           "dimension": int(known.vectors.shape[1])})
    started = time.perf_counter()
    term_counts = lexical_counts()
    x, target, features = validation_features(known, validation, geometry, candidates, groups, features, folds,
                                              term_counts)
    val = validation & (known.kinds == 0)
    fold = validation_folds(known, val, folds)[val]
    domain = np.zeros(len(target), np.int8)
    if written is not None and len(written[1]):
        xw, tw = written_features(written, known, geometry, candidates, groups, features, term_counts)
        x, target = np.concatenate([x, xw]), np.concatenate([target, tw])
        fold = np.concatenate([fold, np.arange(len(tw)) % folds])
        domain = np.concatenate([domain, np.ones(len(tw), np.int8)])
    share = np.where(domain == 0, 1.0 / max((domain == 0).sum(), 1), 1.0 / max((domain == 1).sum(), 1))
    scored = time.perf_counter()
    weights, reranker, fit = _fit_scores(x, target, share, rerank, device)
    # out-of-fold scores: each fold by the weights (and reranker) fitted on the other folds -> the per-text
    # temperature and min_precision's cuts
    entries = domain == 0
    if len(np.unique(fold)) > 1:
        oof = np.zeros(x.shape[:2])
        for k in np.unique(fold):
            w_k, r_k, _ = _fit_scores(x[fold != k], target[fold != k], share[fold != k], rerank, device)
            oof[fold == k] = apply_to_features(r_k, x[fold == k] @ w_k, x[fold == k], features)
        temperature = fit_temperature(oof[entries], target[entries])
    else:
        oof, temperature = apply_to_features(reranker, x @ weights, x, features), np.zeros(2)
    seconds = {"features": round(scored - started, 1), "fit": round(time.perf_counter() - scored, 1)}
    before, after = log_softmax(oof), log_softmax(calibrated_scores(oof, temperature))
    cuts = (PrecisionCuts.fit(np.exp(after[entries]), target[entries], levels)
            if levels is not None and len(np.unique(fold)) > 1 else None)
    index = EntryIndex(known, tuple(features), weights, {}, temperature, reranker, cuts)
    p = index.probabilities(x)
    for d, name in ((0, "entries"), (1, "written")):
        m = domain == d
        if m.any():
            fit[name] = {"texts": int(m.sum()), "nll": float(-np.log(p[m, target[m]]).mean()),
                         "top1": float((p[m].argmax(1) == target[m]).mean()),
                         "top5": float((np.argsort(-p[m], 1)[:, :5] == target[m, None]).any(1).mean()),
                         **{f"out_of_fold_{n}": _nll_ece(lp[m], target[m]) for n, lp in
                            (("uncalibrated", before), ("calibrated", after))}}
    fit.update({"folds": int(folds), "temperature": {"a": float(temperature[0]), "b": float(temperature[1])},
                "weights": dict(zip(features, map(float, weights))), "seconds": seconds,
                "reranker": None if reranker is None else {"top_k": reranker.k, "hidden": int(len(reranker.b1))}})
    for name in ("nll", "top1", "top5"):
        fit[name] = fit["entries"][name]
    parts = [f"{name} ({fit[name]['texts']:,}): NLL {fit[name]['nll']:.3f}, top-1 {fit[name]['top1']:.3f}, "
             f"out of fold NLL / ECE {fit[name]['out_of_fold_calibrated']['nll']:.3f} / "
             f"{fit[name]['out_of_fold_calibrated']['ece']:.3f}" for name in ("entries", "written") if name in fit]
    log(f"fusion fitted ({folds} cross-fitted folds, per-text temperature a {temperature[0]:.3f}, "
        f"b {temperature[1]:.3f}) on " + "; ".join(parts) +
        f"; weights {', '.join(f'{k} {v:.2f}' for k, v in fit['weights'].items())}; "
        f"{seconds['features']} s scoring the fitting texts, {seconds['fit']} s fitting")
    index.meta.update({"validation": fit, "texts_per_kind": counts, "validation_entries": int((domain == 0).sum()),
                       "written_texts": int((domain == 1).sum()), "dimension": int(known.vectors.shape[1])})
    return index


def _fit_scores(x: np.ndarray, target: np.ndarray, share: np.ndarray, rerank: bool, device: str = "cpu"):
    """(weights, reranker or None, the linear fit's summary) on (Q, C, F) features."""
    weights, fit = fit_conditional_logit(x, target, sample_weight=share, device=device)
    reranker = (fit_reranker(x, x @ weights, target, share, device=device)
                if rerank and len(target) >= RERANK_MIN_TEXTS else None)
    return weights, reranker, fit


def _nll_ece(logp: np.ndarray, target: np.ndarray) -> dict:
    from naics_pipeline.text.calibration import expected_calibration_error

    return {"nll": float(-logp[np.arange(len(target)), target].mean()),
            "ece": expected_calibration_error(np.exp(logp.max(1)), logp.argmax(1) == target),
            "top1": float((logp.argmax(1) == target).mean())}


def validation_rows(known: KnownTexts) -> np.ndarray:
    """(N,) the validation split (data.entry_splits) over the kept-entry rows of `known`."""
    from naics_pipeline.data.entry_splits import validation_mask

    entry = known.kinds == 0
    out = np.zeros(len(known.texts), bool)
    out[entry] = validation_mask([t for t, e in zip(known.texts, entry) if e],
                                 [c for c, e in zip(known.codes, entry) if e])
    return out


def written_fit_texts(encode, candidates: list[str], path: Path | None = None):
    """fit_index's `written`: (vectors, texts, codes) of the written descriptions' dev half whose code is
    a candidate, encoded by `encode(texts) -> (W, D)`; None when there is none."""
    from naics_pipeline.text.written import WRITTEN_PATH, load_written

    dev = load_written(path or WRITTEN_PATH).half("dev", candidates)
    return (np.asarray(encode(dev.texts), np.float32), dev.texts, dev.codes) if len(dev) else None


def build_entry_index(clf, descriptions, model_path: Path, cache_dir: Path | None = None,
                      log=lambda *_: None, written_path: Path | None = None) -> EntryIndex:
    """The entry index of a loaded TextClassifier's stage: every known text encoded by the stage's
    encoder (frozen vectors reused from the text cache; a fine-tuned encoder's computed afresh), the
    fusion fitted on the validation split (data.entry_splits) and the written descriptions' dev half
    (text.written, those whose code the source has) with the stage's geometry."""
    import time

    from naics_pipeline.encoders import encode_texts

    started = time.perf_counter()
    texts, codes, kinds = known_texts(descriptions)
    candidates = clf.table.codes[clf.six].tolist()
    if clf.fine_tuned or cache_dir is None:
        encode = clf.encode
        stats = {"encoded": len(texts), "reused": 0}
        vectors = encode(texts)
    else:
        def encode(batch):
            return encode_texts(clf.encoder, batch, cache_dir)[0]
        vectors, stats = encode_texts(clf.encoder, texts, cache_dir)
    written = written_fit_texts(encode, candidates, written_path)
    log(f"entry index: {len(texts):,} known texts, {stats['encoded']:,} encoded, {stats['reused']:,} reused; "
        f"{len(written[1]) if written else 0} written descriptions to fit on")
    known = KnownTexts(texts, codes, kinds, vectors.astype(np.float32))
    index = fit_index(known, validation_rows(known), clf.geometry, candidates,
                      np.asarray(clf.table.industry_group[clf.six], dtype=str), log=log, written=written,
                      device=str(clf.device), levels=clf.levels)
    from naics_pipeline.text.classify import _file_digest

    index.meta.update({"stage": clf.stage, "encoder": clf.encoder.name, "fine_tuned": bool(clf.fine_tuned),
                       "model": _file_digest(model_path), "seconds": round(time.perf_counter() - started, 1)})
    return index
