"""Nearest known texts per code: dense (the stage's encoder) and lexical (TF-IDF) similarity of a
query to every known text of each 6-digit code, reduced to one number per code.

The known texts are the kept index entries and the 6-digit titles (text.index decides which). Search
is exact: one (Q x N) product of normalised vectors then a per-code max (CodeSegments). At N ~ 17K x
384 float32 a batch of 512 queries costs ~6.4 GFLOP in torch's BLAS (about 17 ms on 2 cores against
0.6 s of encoding); an approximate index would add a dependency and recall loss to save nothing
measurable (benchmarks/bench_text.py times both parts). On a GPU (`device="cuda"`) the same exact
search runs there: the product in torch and the per-code max as a scatter_reduce."""
from __future__ import annotations

import numpy as np

SOFT_FLOOR = 1e-30   # the smallest sum of exponentials soft_per_code takes the log of


class CodeSegments:
    """Rows grouped by code, and codes grouped by their number of rows: `order` sorts the rows into that
    layout, where the n codes with L rows each take n x L adjacent columns (`blocks`: (first column, L, n)).
    A per-code max or sum is then one torch reduction of a (Q, n, L) view per distinct L (78 for the
    entries), threaded, where numpy's reduceat loops over every (query, code) segment: 12 -> 5 ms for
    512 x 16,300 on 2 cores. `codes` (C,) are the classifier's candidates; one with no row gets `empty`
    (no known text)."""

    def __init__(self, row_codes: list[str], candidates: list[str]):
        pos = {c: i for i, c in enumerate(candidates)}
        cand = np.array([pos.get(c, -1) for c in row_codes], np.int64)
        if (cand < 0).any():
            bad = row_codes[int(np.argmax(cand < 0))]
            raise ValueError(f"known text of code {bad!r}, which is not a 6-digit code of naics_descriptions")
        counts = np.bincount(cand, minlength=len(candidates))
        self.has = counts > 0
        by_length = np.flatnonzero(self.has)[np.argsort(counts[self.has], kind="stable")]   # codes, fewest rows first
        rank = np.zeros(len(candidates), np.int64)
        rank[by_length] = np.arange(len(by_length))
        self.order = np.argsort(rank[cand], kind="stable")
        self._cand = cand[self.order]                 # each laid-out row's candidate position
        lengths, first = np.unique(counts[by_length], return_index=True)
        n_codes = np.diff(np.r_[first, len(by_length)])
        columns = np.r_[0, np.cumsum(lengths * n_codes)]
        self.blocks = [(int(a), int(length), int(n)) for a, length, n in zip(columns, lengths, n_codes)]
        self._gather = rank[self.has]                 # candidate (with rows) -> its column in the blocks' output
        self.n = len(candidates)
        self.rows = len(row_codes)

    def torch_index(self, device):
        """(N,) candidate position of each laid-out row, on `device` (for scatter_reduce)."""
        import torch

        return torch.as_tensor(self._cand, device=device)

    def max_per_code_torch(self, sims, index, empty: float):
        """(Q, N) torch similarities -> (Q, C) float32 torch best per candidate, on their device."""
        import torch

        out = torch.full((sims.shape[0], self.n), empty, dtype=sims.dtype, device=sims.device)
        # include_self=False: a candidate with rows gets their max even below `empty`; one without keeps `empty`
        out.scatter_reduce_(1, index.expand(sims.shape[0], -1), sims, reduce="amax", include_self=False)
        return out.float()

    def _reduce(self, x: np.ndarray, how: str, empty: float) -> np.ndarray:
        """(Q, N) float32 values in the rows' layout -> (Q, C) float32 their per-candidate `how` ("amax"
        or "sum"), `empty` for a candidate without rows."""
        import torch

        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        q = t.shape[0]
        if not self.blocks:
            return np.full((q, self.n), empty, np.float32)
        parts = [getattr(t[:, a:a + length * n].reshape(q, n, length), how)(dim=2) for a, length, n in self.blocks]
        best = torch.cat(parts, 1)[:, torch.from_numpy(self._gather)].numpy()
        if self.has.all():
            return best
        out = np.full((q, self.n), empty, np.float32)
        out[:, self.has] = best
        return out

    def max_per_code(self, sims: np.ndarray, empty: float) -> np.ndarray:
        """(Q, N) similarities in the rows' layout -> (Q, C) float32 best per candidate."""
        return self._reduce(sims, "amax", empty)

    def soft_per_code(self, scaled: np.ndarray, tau: float) -> np.ndarray:
        """(Q, N) cos / tau in the rows' layout (overwritten) -> (Q, C) tau log sum exp(cos / tau) per
        candidate, i.e. 1 + tau log sum exp((cos - 1) / tau) (a candidate without rows: as if that sum
        were SOFT_FLOOR). cos <= 1 keeps exp(cos / tau) finite for tau >= 0.02 in float32."""
        import torch

        e = torch.from_numpy(scaled).exp_().numpy()
        floor = SOFT_FLOOR * np.exp(1.0 / tau)
        total = self._reduce(e, "sum", floor)
        return (tau * np.log(np.maximum(total, floor))).astype(np.float32)


class DenseIndex:
    """Known texts' encoder vectors (rows L2-normalised), max cosine per candidate code; `empty` for a
    code without a text. With empty=0 such a code gets a zero vector (cosine 0), so every candidate has
    a segment and the per-code max needs no scatter."""

    def __init__(self, vectors: np.ndarray, row_codes: list[str], candidates: list[str], device: str = "cpu",
                 empty: float = -1.0):
        if empty == 0.0:
            missing = sorted(set(candidates) - set(row_codes))
            if missing:
                vectors = np.vstack([vectors, np.zeros((len(missing), vectors.shape[1]), vectors.dtype)])
                row_codes = list(row_codes) + missing
        self.segments = CodeSegments(row_codes, candidates)
        self.vectors = np.ascontiguousarray(vectors[self.segments.order], dtype=np.float32)
        import torch

        self._cpu_t = torch.from_numpy(self.vectors)
        self.empty = empty
        self.device = device
        self._onehot = None      # (N, C) row -> candidate on the device, for the soft max's sums
        if device != "cpu":
            self._vectors = torch.as_tensor(self.vectors, device=device).half()
            self._index = self.segments.torch_index(device)

    def best(self, queries: np.ndarray) -> np.ndarray:
        if self.device == "cpu":
            return self.segments.max_per_code(self._product(queries), self.empty)
        return self.best_torch(queries).cpu().numpy()

    def _product(self, queries: np.ndarray) -> np.ndarray:
        """(Q, N) float32 queries . known vectors on the CPU, by torch: numpy's BLAS would leave its own
        threads spinning beside torch's (the encoder, the per-code reductions), which slowed both."""
        import torch

        return (torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32)) @ self._cpu_t.T).numpy()

    def best_and_soft(self, queries: np.ndarray, tau: float) -> tuple[np.ndarray, np.ndarray]:
        """(best(), soft max per candidate: 1 + tau log sum exp((cos - 1) / tau) over its texts) from one
        product of the queries scaled by 1 / tau, exponentiated in place. The soft max counts how many of
        a code's texts are close, not only the closest."""
        scaled = self._product(queries.astype(np.float32) * np.float32(1.0 / tau))
        best = self.segments.max_per_code(scaled, self.empty / tau) * np.float32(tau)
        return best, self.segments.soft_per_code(scaled, tau)

    def best_torch(self, queries, soft_tau: float | None = None):
        """best() on the index's device, (Q, C) float32 torch (not for device "cpu"); with `soft_tau`,
        (best, soft) as best_and_soft."""
        import torch

        q = torch.as_tensor(queries, device=self.device).half()
        sims = q @ self._vectors.T
        best = self.segments.max_per_code_torch(sims, self._index, self.empty)
        if soft_tau is None:
            return best
        if self._onehot is None:             # the per-code sums as one matmul
            self._onehot = torch.zeros((len(self._index), self.segments.n), dtype=torch.float32, device=self.device)
            self._onehot[torch.arange(len(self._index), device=self.device), self._index] = 1.0
        total = sims.float().sub_(1.0).mul_(1.0 / soft_tau).exp_() @ self._onehot
        return best, 1.0 + soft_tau * total.clamp_(min=SOFT_FLOOR).log_()


class LexicalIndex:
    """TF-IDF over the known texts (word unigrams + bigrams, sublinear tf), max cosine per code; the
    vocabulary and idf are fitted on the known texts, or come with `vectorizer` (fitted), which several
    indexes can share so that a query is transformed once for all of them (`queries`)."""

    def __init__(self, texts: list[str], row_codes: list[str], candidates: list[str], analyzer: str = "word",
                 ngram_range: tuple[int, int] = (1, 2), device: str = "cpu", vectorizer=None, rows=None,
                 counts: TermCounts | None = None):
        """`rows`: the texts' rows under `vectorizer` when the caller has them; `counts`: the TermCounts
        to fit the vectorizer from when none is given (a fresh one by default)."""
        self.segments = CodeSegments(row_codes, candidates)
        if vectorizer is None:
            vectorizer, rows = (counts or TermCounts(analyzer, ngram_range)).fit(texts)
        self.vectorizer = vectorizer
        self._char_rows = (WordCachedCharRows(vectorizer) if vectorizer.analyzer == "char_wb" and vectorizer.use_idf
                           and vectorizer.sublinear_tf and vectorizer.norm == "l2" else None)
        self.matrix_t = (self.queries(texts) if rows is None else rows)[self.segments.order].T.tocsr()
        self.device = device
        if device != "cpu":
            import torch

            self._dense_t = torch.as_tensor(self.matrix_t.toarray(), device=device)     # (V, N) float32
            self._index = self.segments.torch_index(device)

    def queries(self, texts: list[str]):
        """The texts' TF-IDF rows (sparse), for best / best_torch of every index sharing the vectorizer."""
        return self._char_rows.transform(texts) if self._char_rows is not None else self.vectorizer.transform(texts)

    def best(self, texts: list[str], queries=None) -> np.ndarray:
        q = self.queries(texts) if queries is None else queries
        if self.device == "cpu":
            return self.segments.max_per_code((q @ self.matrix_t).toarray(), 0.0)
        return self.best_torch(texts, q).cpu().numpy()

    def best_torch(self, texts: list[str], queries=None):
        """best() on the index's device, (Q, C) float32 torch (not for device "cpu")."""
        import torch

        q = (self.queries(texts) if queries is None else queries).tocsr()
        sparse = torch.sparse_csr_tensor(torch.as_tensor(q.indptr, dtype=torch.int64),
                                         torch.as_tensor(q.indices, dtype=torch.int64),
                                         torch.as_tensor(q.data, dtype=torch.float32), size=q.shape,
                                         check_invariants=False).to(self.device)   # scipy's CSR already holds them
        return self.segments.max_per_code_torch(torch.sparse.mm(sparse, self._dense_t), self._index, 0.0)


def tfidf_vectorizer(analyzer: str = "word", ngram_range: tuple[int, int] = (1, 2), vocabulary=None):
    """The unfitted TF-IDF of LexicalIndex (sublinear tf, accents stripped, float32)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(ngram_range=ngram_range, analyzer=analyzer, sublinear_tf=True, strip_accents="unicode",
                           dtype=np.float32, vocabulary=vocabulary)


class TermCounts:
    """The n-gram counts of texts under tfidf_vectorizer(analyzer, ngram_range)'s analyzer, each distinct
    text analysed once (for "char_wb" each distinct word: its n-grams never cross a word, so a text's
    counts are the sum of its words'), over one vocabulary that grows with the texts. fit(texts) gives
    what tfidf_vectorizer(...).fit(texts) and its transform(texts) would, from those counts: cross-fitting
    fits a TF-IDF per fold over subsets of the same texts, and scikit-learn's fit analysed every text of
    every fold again (most of an entry index's scoring time)."""

    def __init__(self, analyzer: str = "word", ngram_range: tuple[int, int] = (1, 2)):
        self.analyzer, self.ngram_range = analyzer, ngram_range
        proto = tfidf_vectorizer(analyzer, ngram_range)
        self._pre, self._analyze = proto.build_preprocessor(), proto.build_analyzer()
        self._terms: dict[str, int] = {}
        self._units: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def _unit(self, unit: str) -> tuple[np.ndarray, np.ndarray]:
        hit = self._units.get(unit)
        if hit is None:
            hit = self._units[unit] = _gram_counts(self._analyze(unit),
                                                   lambda gram: self._terms.setdefault(gram, len(self._terms)))
        return hit

    def counts(self, texts: list[str]):
        """(len(texts), terms so far) CSR counts."""
        if self.analyzer == "char_wb":
            parts = [[self._unit(w) for w in self._pre(t).split()] for t in texts]
        else:
            parts = [[self._unit(t)] for t in texts]
        return _summed_counts(parts, len(self._terms))

    def fit(self, texts: list[str]):
        """(the fitted vectorizer, its (len(texts), V) float32 rows of the texts)."""
        m = self.counts(texts)
        df = np.bincount(m.indices, minlength=m.shape[1])
        used = np.flatnonzero(df)
        if not len(used):
            raise ValueError("empty vocabulary; perhaps the documents only contain stop words")
        terms = np.array(list(self._terms), dtype=object)
        order = used[np.argsort(terms[used].astype(str), kind="stable")]   # scikit-learn's vocabulary is sorted
        vectorizer = tfidf_vectorizer(self.analyzer, self.ngram_range, {t: i for i, t in enumerate(terms[order])})
        idf = (np.log((1.0 + len(texts)) / (1.0 + df[order])) + 1.0).astype(np.float32)   # smooth idf
        vectorizer.idf_ = idf
        return vectorizer, _sublinear_tfidf(m[:, order].astype(np.float32), idf)


class WordCachedCharRows:
    """The rows a fitted character TF-IDF (analyzer "char_wb", sublinear tf, l2 norm) gives texts, built
    from each word's n-gram counts, cached: char_wb n-grams never cross a word, so a text's counts are
    the sum of its words'. Queries repeat words far more than texts, so most of a batch is dict lookups
    instead of scikit-learn's Python loop over every n-gram (its transform set the GPU rate)."""

    def __init__(self, vectorizer, max_words: int = 200_000):
        self.max_words = max_words
        self._pre, self._analyze = vectorizer.build_preprocessor(), vectorizer.build_analyzer()
        self._vocabulary = vectorizer.vocabulary_
        self._idf = vectorizer.idf_.astype(np.float32)
        self._words: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def _word(self, word: str) -> tuple[np.ndarray, np.ndarray]:
        hit = self._words.get(word)
        if hit is None:
            hit = _gram_counts(self._analyze(word), self._vocabulary.get)
            if len(self._words) < self.max_words:
                self._words[word] = hit
        return hit

    def transform(self, texts: list[str]):
        """(Q, V) float32 CSR rows, as vectorizer.transform(texts) gives them."""
        parts = [[self._word(w) for w in self._pre(t).split()] for t in texts]
        return _sublinear_tfidf(_summed_counts(parts, len(self._idf), np.float32), self._idf)


def _gram_counts(grams, term_id) -> tuple[np.ndarray, np.ndarray]:
    """(term ids, counts) of an analysed unit's n-grams; `term_id(gram)` gives a gram's id, None to skip it."""
    counts: dict[int, int] = {}
    for gram in grams:
        j = term_id(gram)
        if j is not None:
            counts[j] = counts.get(j, 0) + 1
    return np.fromiter(counts, np.int64, len(counts)), np.fromiter(counts.values(), np.float32, len(counts))


def _summed_counts(parts: list[list[tuple[np.ndarray, np.ndarray]]], columns: int, dtype=np.float64):
    """(len(parts), columns) CSR: row i sums the (term ids, counts) pieces of parts[i]."""
    from scipy.sparse import csr_matrix

    lengths = np.array([sum(len(i) for i, _ in pieces) for pieces in parts], np.int64)
    flat = [p for pieces in parts for p in pieces]
    indices = np.concatenate([i for i, _ in flat]) if flat else np.zeros(0, np.int64)
    counts = np.concatenate([c for _, c in flat]).astype(dtype, copy=False) if flat else np.zeros(0, dtype)
    m = csr_matrix((counts, indices, np.r_[0, np.cumsum(lengths)]), shape=(len(parts), columns))
    m.sum_duplicates()
    return m


def _sublinear_tfidf(counts, idf: np.ndarray):
    """Count rows (CSR, float32) -> TF-IDF rows as the vectorizer makes them: (1 + log tf) x idf, l2 norm."""
    from sklearn.preprocessing import normalize

    np.log(counts.data, counts.data)
    counts.data += 1.0
    counts.data *= idf[counts.indices]
    return normalize(counts, norm="l2", copy=False)
