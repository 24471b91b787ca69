"""Embedding quality against the tree: rank correlations, NDCG@10, distortion, parent retrieval,
exclusion separation, and retrieval of held-out index entries."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from naics_pipeline.data.descriptions import exclusion_pairs
from naics_pipeline.data.distances import distance_matrix, tree_arrays
from naics_pipeline.training import lorentz

NDCG_K = 10
RELEVANCE_CUTOFF = 8.0  # relevance = max(0, 8 - tree distance): 8 is the farthest pair inside a sector


def rankdata(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank), like scipy.stats.rankdata."""
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    _, first, counts = np.unique(sorted_x, return_index=True, return_counts=True)
    avg = first + 1 + (counts - 1) / 2.0
    ranks = np.empty(len(x), np.float64)
    ranks[order] = np.repeat(avg, counts)
    return ranks


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x - x.mean(), y - y.mean()
    return float((x * y).sum() / np.sqrt((x * x).sum() * (y * y).sum()))


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    return pearson(rankdata(x), rankdata(y))


def ndcg_at_k(emb: np.ndarray, tree: np.ndarray, k: int = NDCG_K) -> float:
    e = emb.copy()
    np.fill_diagonal(e, np.inf)
    rel = np.maximum(RELEVANCE_CUTOFF - tree, 0.0)
    np.fill_diagonal(rel, 0.0)
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    top = np.argpartition(e, k, axis=1)[:, :k]
    top = np.take_along_axis(top, np.argsort(np.take_along_axis(e, top, axis=1), axis=1), axis=1)
    dcg = (np.take_along_axis(rel, top, axis=1) * discount).sum(1)
    ideal = -np.sort(-rel, axis=1)[:, :k]
    idcg = (ideal * discount).sum(1)
    ok = idcg > 0
    return float((dcg[ok] / idcg[ok]).mean()) if ok.any() else 0.0


def evaluate_embeddings(points: np.ndarray, descriptions: pa.Table, c: float,
                        held_links: np.ndarray | None = None) -> dict:
    return evaluate_distances(lorentz.pairwise_distance(points, points, c), descriptions, held_links)


def evaluate_distances(emb: np.ndarray, descriptions: pa.Table, held_links: np.ndarray | None = None) -> dict:
    """Every tree metric for an (N, N) matrix of embedding distances. With `held_links` (a mask over
    exclusion_references' links kept out of training), exclusion separation is also split into the
    links training saw and those it did not."""
    tree = distance_matrix(tree_arrays(descriptions)).astype(np.float64)
    iu = np.triu_indices(len(emb), k=1)
    te, tt = emb[iu], tree[iu]
    scale = te.mean() / tt.mean()
    levels = descriptions.column("level").to_numpy()
    codes = descriptions.column("code").to_pylist()
    pos = {code: i for i, code in enumerate(codes)}
    parents = descriptions.column("parent").to_pylist()
    wins = exclusion_wins(emb, exclusion_references(descriptions))
    metrics = {
        "spearman": spearman(te, tt),
        "pearson": pearson(te, tt),
        "ndcg_at_10": ndcg_at_k(emb, tree),
        "mean_distortion": float(np.mean(np.abs(te / scale - tt) / tt)),
        "parent_retrieval_accuracy": _parent_accuracy(emb, levels, parents, pos),
        "exclusion_separation": float(wins.mean()) if len(wins) else None,
        "pairs": int(len(tt)),
    }
    if held_links is not None and held_links.any():
        metrics["exclusion_separation_seen"] = float(wins[~held_links].mean())
        metrics["exclusion_separation_unseen"] = float(wins[held_links].mean())
        metrics["exclusion_links_unseen"] = int(held_links.sum())
    return metrics


def _parent_accuracy(emb, levels, parents, pos) -> float:
    hits, total = 0, 0
    for lvl in range(3, 7):
        children = np.nonzero(levels == lvl)[0]
        candidates = np.nonzero(levels == lvl - 1)[0]
        if not len(children):
            continue
        nearest = candidates[np.argmin(emb[np.ix_(children, candidates)], axis=1)]
        hits += int(sum(nearest[i] == pos[parents[ch]] for i, ch in enumerate(children)))
        total += len(children)
    return hits / total if total else 0.0


def exclusion_references(descriptions: pa.Table) -> tuple[np.ndarray, np.ndarray, list[list[int]]]:
    """Exclusion links (code, excluded) as row indexes, each with the codes its distance is compared
    with: the code's siblings that it does not exclude, or its parent when there are none (a code
    whose only sibling is the excluded one). A sector without such siblings is dropped."""
    parents = descriptions.column("parent").to_pylist()
    pos = {code: i for i, code in enumerate(descriptions.column("code").to_pylist())}
    children: dict = {}
    for i, p in enumerate(parents):
        children.setdefault(p, []).append(i)
    links = exclusion_pairs(descriptions)
    pairs = list(zip(links.column("code").to_pylist(), links.column("excluded").to_pylist()))
    excludes: dict = {}
    for i, j in pairs:
        excludes.setdefault(i, set()).add(j)
    code, excluded, refs = [], [], []
    for i, j in pairs:
        siblings = [s for s in children.get(parents[i], []) if s != i and s not in excludes[i]]
        ref = siblings or ([pos[parents[i]]] if parents[i] is not None else [])
        if ref:
            code.append(i)
            excluded.append(j)
            refs.append(ref)
    return np.array(code, np.int64), np.array(excluded, np.int64), refs


def exclusion_wins(emb: np.ndarray, links) -> np.ndarray:
    """Per exclusion link of `links` (exclusion_references' output): is the excluded code farther from
    the code than the code's other siblings on average (its parent, for a code without other siblings)?"""
    code, excluded, refs = links
    return np.array([emb[i, j] > emb[i, ref].mean() for i, j, ref in zip(code, excluded, refs)], bool)


def held_out_links(n_links: int, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of the exclusion links kept out of training (a seeded random share)."""
    held = np.zeros(n_links, bool)
    held[np.random.default_rng([seed, 104729]).permutation(n_links)[:round(n_links * fraction)]] = True
    return held


def retrieval_accuracy(query_points: np.ndarray, query_codes: list[str], points: np.ndarray,
                       descriptions: pa.Table, c: float) -> dict:
    """Top-1/top-5 of held-out index entries among 6-digit codes, judged at 6 and 2 digits."""
    if not len(query_codes):
        return {}
    codes = np.array(descriptions.column("code").to_pylist())
    sectors = np.array(descriptions.column("sector").to_pylist())
    six = np.nonzero(descriptions.column("level").to_numpy() == 6)[0]
    top5 = six[np.argsort(lorentz.pairwise_distance(query_points, points[six], c), axis=1)[:, :5]]
    truth = np.array(query_codes)
    sector_of = dict(zip(codes, sectors))
    true_sector = np.array([sector_of[t] for t in truth])
    return {
        "holdout_entries": int(len(truth)),
        "top1_6digit": float(np.mean(codes[top5[:, 0]] == truth)),
        "top5_6digit": float(np.mean((codes[top5] == truth[:, None]).any(1))),
        "top1_2digit": float(np.mean(sectors[top5[:, 0]] == true_sector)),
        "top5_2digit": float(np.mean((sectors[top5] == true_sector[:, None]).any(1))),
    }
