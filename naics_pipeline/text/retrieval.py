"""Nearest known texts per code: dense (the stage's encoder) and lexical (TF-IDF) similarity of a
query to every known text of each 6-digit code, reduced to one number per code.

The known texts are the kept index entries and the 6-digit titles (text.index decides which). Search
is exact: one (Q x N) product of normalised vectors then a segmented max per code. At N ~ 17K x 384
float32 a batch of 512 queries costs ~3.4 GFLOP in numpy's BLAS (tens of ms on 2 cores against
seconds of encoding); an approximate index would add a dependency and recall loss to save nothing
measurable (benchmarks/bench_text.py times both parts)."""
from __future__ import annotations

import numpy as np


class CodeSegments:
    """Rows grouped by code: `codes` (C,) in the classifier's candidate order, `order` sorting the
    rows by candidate, `starts` (C,) where each candidate's rows begin. A candidate with no row gets
    `empty` (no known text)."""

    def __init__(self, row_codes: list[str], candidates: list[str]):
        pos = {c: i for i, c in enumerate(candidates)}
        cand = np.array([pos.get(c, -1) for c in row_codes], np.int64)
        if (cand < 0).any():
            bad = row_codes[int(np.argmax(cand < 0))]
            raise ValueError(f"known text of code {bad!r}, which is not a 6-digit code of naics_descriptions")
        self.order = np.argsort(cand, kind="stable")
        counts = np.bincount(cand, minlength=len(candidates))
        self.has = counts > 0
        self.starts = np.concatenate([[0], np.cumsum(counts)[:-1]])[self.has]
        self.n = len(candidates)

    def max_per_code(self, sims: np.ndarray, empty: float) -> np.ndarray:
        """(Q, N) similarities in the rows' sorted order -> (Q, C) best per candidate."""
        out = np.full((sims.shape[0], self.n), empty, np.float32)
        if sims.shape[1]:
            out[:, self.has] = np.maximum.reduceat(sims, self.starts, axis=1)
        return out


class DenseIndex:
    """Known texts' encoder vectors (rows L2-normalised), max cosine per candidate code."""

    def __init__(self, vectors: np.ndarray, row_codes: list[str], candidates: list[str]):
        self.segments = CodeSegments(row_codes, candidates)
        self.vectors = np.ascontiguousarray(vectors[self.segments.order], dtype=np.float32)

    def best(self, queries: np.ndarray) -> np.ndarray:
        return self.segments.max_per_code(queries.astype(np.float32) @ self.vectors.T, -1.0)


class LexicalIndex:
    """TF-IDF over the known texts (word unigrams + bigrams, sublinear tf), max cosine per code;
    the vocabulary and idf are fitted on the known texts."""

    def __init__(self, texts: list[str], row_codes: list[str], candidates: list[str], analyzer: str = "word",
                 ngram_range: tuple[int, int] = (1, 2)):
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.segments = CodeSegments(row_codes, candidates)
        self.vectorizer = TfidfVectorizer(ngram_range=ngram_range, analyzer=analyzer, sublinear_tf=True,
                                          strip_accents="unicode", dtype=np.float32)
        matrix = self.vectorizer.fit_transform(texts)
        self.matrix_t = matrix[self.segments.order].T.tocsr()

    def best(self, texts: list[str]) -> np.ndarray:
        sims = (self.vectorizer.transform(texts) @ self.matrix_t).toarray()
        return self.segments.max_per_code(sims, 0.0)
