"""All ordered code pairs with tree distance, lineal/unrelated flags, relation name and LCA depth.

Tree distance is the path length in the tree with the virtual root above the sectors (sector
depth 1), minus 0.5 when one code is an ancestor of the other. Pairs in different sectors meet only
at the virtual root: they are flagged `unrelated` and hardness treats them as such.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

RELATIONS = ["unrelated", "parent", "grandparent", "ancestor", "child", "grandchild", "descendant",
             "sibling", "uncle", "great_uncle", "nephew", "grand_nephew", "cousin", "cousin_removed"]


@dataclass
class TreeArrays:
    """Per-code arrays in `index` order: depth (sector = 1) and the ancestor chain (index per depth)."""
    codes: list[str]
    depth: np.ndarray        # (N,) int8
    ancestors: np.ndarray    # (N, 5) int32, -1 past the code's own depth

    @property
    def sector(self) -> np.ndarray:
        return self.ancestors[:, 0]


def tree_arrays(descriptions: pa.Table) -> TreeArrays:
    codes = descriptions.column("code").to_pylist()
    parents = descriptions.column("parent").to_pylist()
    pos = {c: i for i, c in enumerate(codes)}
    n = len(codes)
    depth = np.zeros(n, np.int8)
    anc = np.full((n, 5), -1, np.int32)
    for i in range(n):
        chain, c = [], codes[i]
        while c is not None:
            chain.append(pos[c])
            c = parents[pos[c]]
        depth[i] = len(chain)
        anc[i, : len(chain)] = chain[::-1]
    return TreeArrays(codes, depth, anc)


def ancestor_lookup(descriptions: pa.Table, digits: int) -> dict[str, str]:
    """Code -> its ancestor with `digits` digits (itself when it has that many; the sector column's
    code for 2, e.g. 31 for 311111). Codes shallower than `digits` are left out."""
    t = tree_arrays(descriptions)
    codes = np.array(t.codes)
    levels = descriptions.column("level").to_numpy()
    at_level = (t.ancestors >= 0) & (levels[t.ancestors] == digits)
    keep = at_level.any(1)
    return dict(zip(codes[keep].tolist(), codes[t.ancestors[keep, at_level[keep].argmax(1)]].tolist()))


def lca_depth_matrix(t: TreeArrays) -> np.ndarray:
    """(N, N) depth of the lowest common ancestor: number of shared leading ancestors (0 = root)."""
    a = t.ancestors
    same = (a[:, None, :] == a[None, :, :]) & (a[:, None, :] >= 0)
    return np.cumprod(same, axis=2, dtype=np.int8).sum(axis=2, dtype=np.int8)


def distance_matrix(t: TreeArrays, lca: np.ndarray | None = None) -> np.ndarray:
    """(N, N) float32 tree distance (diagonal 0)."""
    lca = lca_depth_matrix(t) if lca is None else lca
    d = t.depth.astype(np.float32)
    dist = d[:, None] + d[None, :] - 2 * lca
    lineal = (lca == np.minimum(t.depth[:, None], t.depth[None, :])) & (dist > 0)
    dist[lineal] -= 0.5
    return dist


def relation_codes(t: TreeArrays, lca: np.ndarray) -> np.ndarray:
    """(N, N) index into RELATIONS naming what the second code is to the first."""
    up_a = (t.depth[:, None] - lca).astype(np.int16)   # steps from a up to the LCA
    up_b = (t.depth[None, :] - lca).astype(np.int16)
    rel = np.full(lca.shape, RELATIONS.index("cousin_removed"), np.int8)
    rules = [
        ((up_a == up_b) & (up_a >= 2), "cousin"),
        ((up_a == 1) & (up_b >= 3), "grand_nephew"),
        ((up_a == 1) & (up_b == 2), "nephew"),
        ((up_a >= 3) & (up_b == 1), "great_uncle"),
        ((up_a == 2) & (up_b == 1), "uncle"),
        ((up_a == 1) & (up_b == 1), "sibling"),
        ((up_a == 0) & (up_b >= 3), "descendant"),
        ((up_a == 0) & (up_b == 2), "grandchild"),
        ((up_a == 0) & (up_b == 1), "child"),
        ((up_b == 0) & (up_a >= 3), "ancestor"),
        ((up_b == 0) & (up_a == 2), "grandparent"),
        ((up_b == 0) & (up_a == 1), "parent"),
        (lca == 0, "unrelated"),
    ]
    for mask, name in rules:  # later rules win
        rel[mask] = RELATIONS.index(name)
    return rel


def distances_table(t: TreeArrays) -> pa.Table:
    """Every ordered pair (a, b), a != b, in (a, b) order."""
    n = len(t.codes)
    lca = lca_depth_matrix(t)
    dist = distance_matrix(t, lca)
    rel = relation_codes(t, lca)
    a, b = np.nonzero(~np.eye(n, dtype=bool))
    lca_ab = lca[a, b]
    depth_min = np.minimum(t.depth[a], t.depth[b])
    return pa.table({
        "a": a.astype(np.uint16),
        "b": b.astype(np.uint16),
        "distance": dist[a, b],
        "lineal": lca_ab == depth_min,
        "unrelated": lca_ab == 0,
        "relation": pa.DictionaryArray.from_arrays(rel[a, b].astype(np.int8), RELATIONS),
        "lca_depth": lca_ab.astype(np.uint8),
    })
