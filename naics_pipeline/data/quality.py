"""Data-quality checks as plain functions; the Dagster layer turns each into an asset check."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from naics_pipeline.data.distances import TreeArrays, distance_matrix, tree_arrays
from naics_pipeline.data.graph import ROOT, build_graph, graph_from_tables, tree_problems
from naics_pipeline.data.triplets import HARDNESS_1_DIR, triplets_sql
from naics_pipeline.storage import connect

# The official shape of each known vintage: codes per level (2 = sector).
OFFICIAL_LEVELS = {
    "2017": {2: 20, 3: 99, 4: 311, 5: 709, 6: 1057},
    "2022": {2: 20, 3: 96, 4: 308, 5: 689, 6: 1012},
}


@dataclass
class Outcome:
    passed: bool
    description: str
    metadata: dict = field(default_factory=dict)
    severity: str = "ERROR"     # "WARN": shown as a warning, never blocks downstream assets


def expected_sectors(vintage: str | None) -> int | None:
    return OFFICIAL_LEVELS[vintage][2] if vintage in OFFICIAL_LEVELS else None


def unknown_vintage_warning(vintage: str | None) -> str | None:
    if vintage in OFFICIAL_LEVELS:
        return None
    return (f"NAICS {vintage} has no official shape known here (known: {', '.join(OFFICIAL_LEVELS)}): "
            "its tables get the structural checks only (unique codes, parents, a tree, levels 2-6)")


def descriptions_row_counts(desc: pa.Table, vintage: str | None) -> Outcome:
    """A known vintage is held to its official shape. Any other gets the structural rule (codes at levels
    2-6 only, sectors present) and, when that holds, a warning: nothing to compare its counts with."""
    levels = dict(zip(*np.unique(desc.column("level").to_numpy(), return_counts=True)))
    levels = {int(k): int(v) for k, v in levels.items()}
    meta = {"codes": desc.num_rows, "vintage": str(vintage)}
    if vintage in OFFICIAL_LEVELS:
        expected = OFFICIAL_LEVELS[vintage]
        return Outcome(levels == expected, f"codes by level {levels} (NAICS {vintage}: {expected})", meta)
    structural = set(levels) <= {2, 3, 4, 5, 6} and levels.get(2, 0) > 0
    if not structural:
        return Outcome(False, f"codes by level {levels}: expected sectors (level 2) and levels 2-6 only", meta)
    return Outcome(False, f"WARNING: {unknown_vintage_warning(vintage)}; codes by level {levels}", meta, "WARN")


def descriptions_unique_codes(desc: pa.Table) -> Outcome:
    codes = desc.column("code")
    dup = desc.num_rows - len(pc.unique(codes))
    return Outcome(dup == 0, f"{dup} duplicate codes", {"duplicates": dup})


def descriptions_parents_exist(desc: pa.Table) -> Outcome:
    codes = set(desc.column("code").to_pylist())
    missing = [p for p in desc.column("parent").to_pylist() if p is not None and p not in codes]
    return Outcome(not missing, f"{len(missing)} parents missing {missing[:5]}", {"missing": len(missing)})


def descriptions_excluded_codes_exist(desc: pa.Table) -> Outcome:
    """Every kept and held-out exclusion link names a real code; no link is both kept and held out."""
    codes = set(desc.column("code").to_pylist())
    meta, problems = {}, []
    links = {}
    for column in ("excluded_codes", "held_out_excluded_codes"):
        lists = desc.column(column).to_pylist() if column in desc.column_names else []
        links[column] = {(c, x) for c, xs in zip(desc.column("code").to_pylist(), lists) for x in xs or []}
        bad = sorted({x for _, x in links[column] if x not in codes})
        meta[column] = len(links[column])
        if bad:
            problems.append(f"{column}: {len(bad)} unknown codes {bad[:5]}")
    both = sorted(links["excluded_codes"] & links["held_out_excluded_codes"])
    if both:
        problems.append(f"{len(both)} links both kept and held out {both[:5]}")
    return Outcome(not problems, "; ".join(problems) or f"{meta['excluded_codes']:,} kept and "
                   f"{meta['held_out_excluded_codes']:,} held-out links, every code real, none in both", meta)


def graph_is_naics_tree(edges: pa.Table, desc: pa.Table, expected_sectors: int | None = 20) -> Outcome:
    g = graph_from_tables(edges, desc)
    problems = tree_problems(g, expected_sectors)
    sectors = g.out_degree("ROOT")
    return Outcome(not problems, "; ".join(problems) or f"tree with {sectors} sectors, every parent present",
                   {"nodes": g.number_of_nodes(), "edges": g.number_of_edges()})


def tree_distances_from(desc: pa.Table, sources: np.ndarray) -> np.ndarray:
    """(len(sources), N) tree distances by networkx breadth-first search over the parent/child graph (a
    virtual root above the sectors), independent of distances.py: lineal pairs (the path runs straight
    up or down: length = depth difference) take -0.5; pairs whose path climbs to the root are unrelated,
    marked by a negative sign."""
    g = nx.Graph(build_graph(desc))
    codes = desc.column("code").to_pylist()
    depth = nx.single_source_shortest_path_length(g, ROOT)
    depths = np.array([depth[c] for c in codes], np.float32)
    out = np.zeros((len(sources), len(codes)), np.float32)
    for row, source in enumerate(sources):
        reach = nx.single_source_shortest_path_length(g, codes[source])
        d = np.array([reach[c] for c in codes], np.float32)
        lineal = (d == np.abs(depths - depths[source])) & (d > 0)
        through_root = d == depths + depths[source]
        out[row] = np.where(lineal, d - 0.5, d) * np.where(through_root, -1, 1)
    return out


def distances_consistent(path: Path, desc: pa.Table, sample: int = 64, seed: int = 0) -> Outcome:
    """Row count N*(N-1), unique (a, b), symmetric; and, for a seeded sample of codes, every distance and
    `unrelated` flag equal to networkx shortest paths in the tree (tree_distances_from)."""
    n = desc.num_rows
    t = pq.read_table(path, columns=["a", "b", "distance", "unrelated"])
    a, b = t.column("a").to_numpy().astype(np.int64), t.column("b").to_numpy().astype(np.int64)
    problems = []
    if t.num_rows != n * (n - 1):
        problems.append(f"{t.num_rows} rows, expected {n * (n - 1)}")
    if t.num_rows and max(a.max(), b.max()) >= n:
        return Outcome(False, f"code indexes up to {max(a.max(), b.max())}, but only {n} codes", {"rows": t.num_rows})
    m = np.full((n, n), np.nan, np.float32)
    # distance signed by relatedness: unrelated pairs negative, as tree_distances_from writes them
    m[a, b] = t.column("distance").to_numpy() * np.where(t.column("unrelated").to_numpy(zero_copy_only=False), -1, 1)
    # Not np.unique: on numpy 2.4 it took 15-21 s for these 4.5M keys; bincount takes ~0.2 s.
    keys = int(np.count_nonzero(np.bincount(a * n + b, minlength=n * n)))
    if keys != t.num_rows:
        problems.append(f"{t.num_rows - keys} duplicate (a, b) keys")
    np.fill_diagonal(m, 0)
    if not np.array_equal(m, m.T, equal_nan=True):
        problems.append("distance matrix is not symmetric")
    sources = np.sort(np.random.default_rng(seed).choice(n, size=min(sample, n), replace=False))
    expected = tree_distances_from(desc, sources)
    wrong = np.argwhere(~np.isclose(m[sources], expected))
    if len(wrong):
        i, j = wrong[0]
        problems.append(f"{len(wrong):,} of {expected.size:,} sampled pairs differ from networkx shortest paths, "
                        f"e.g. ({desc.column('code')[int(sources[i])]}, {desc.column('code')[int(j)]}): "
                        f"table {m[sources[i], j]}, networkx {expected[i, j]} (negative: unrelated)")
    return Outcome(not problems, "; ".join(problems) or f"N*(N-1) unique symmetric pairs; {expected.size:,} "
                   f"pairs from {len(sources)} sampled codes match networkx shortest paths",
                   {"rows": t.num_rows, "pairs_checked_against_networkx": int(expected.size)})


def expected_triplet_count(desc: pa.Table) -> int:
    """Triplets implied by the tree alone: for each (a, p) in one sector, the negatives farther than p
    plus every code of another sector. Exclusions only relabel rows, so the total is the same."""
    return _expected_triplet_count(tree_arrays(desc))


def _expected_triplet_count(t: TreeArrays, dist: np.ndarray | None = None) -> int:
    dist = distance_matrix(t) if dist is None else dist
    sector = t.sector
    total = 0
    for s in np.unique(sector):
        members = np.nonzero(sector == s)[0]
        cross = len(sector) - len(members)
        sub = np.sort(dist[np.ix_(members, members)], axis=1)[:, 1:]  # drop each anchor itself (0)
        for d in sub:  # distances from one anchor to the rest of its sector, ascending
            farther = len(d) - np.searchsorted(d, d, side="right")
            total += int(farther.sum()) + len(d) * cross
    return total


# The label rules every row obeys; the check counts the rows breaking each.
_LABEL_RULES = [
    ("related rows with positive_distance >= negative_distance", "NOT unrelated AND positive_distance >= negative_distance"),
    ("hardness 1 rows not unrelated or excluded", "hardness = 1 AND (NOT unrelated OR excluded)"),
    ("hardness 2-7 rows flagged unrelated/excluded", "hardness BETWEEN 2 AND 7 AND (unrelated OR excluded)"),
    ("hardness 8 rows not excluded", "hardness = 8 AND NOT excluded"),
    ("rows with anchor = positive", "anchor = positive"),
    ("rows with negative = anchor", "negative = anchor"),
    ("rows with negative = positive", "negative = positive"),
]


def _scan_counts(con, relation: str) -> dict[int, list[int]]:
    """Materialized hardness levels, every row scanned: hardness -> [rows, rows breaking each rule]."""
    filters = ", ".join(f"count(*) FILTER (WHERE {rule})" for _, rule in _LABEL_RULES)
    rows = con.execute(f"SELECT hardness, count(*), {filters} FROM ({relation}) WHERE hardness <> 1 "
                       "GROUP BY hardness").fetchall()
    return {int(h): list(rest) for h, *rest in rows}


def _view_counts(con, relation: str) -> list[int]:
    """Hardness 1 (the view, ~890M rows on NAICS 2022): [rows, 0/1 per rule: whether any row breaks it].
    Asked one rule at a time, each rule reaches the view's join as a filter or a join key (the optimizer
    pushes it down), so no rule rescans the 890M rows; only the count computes them."""
    rows = con.execute(f"SELECT count(*) FROM ({relation}) WHERE hardness = 1").fetchall()[0][0]
    return [rows] + [con.execute(f"SELECT count(*) FROM (SELECT 1 FROM ({relation}) WHERE hardness = 1 AND ({rule}) "
                                 "LIMIT 1)").fetchall()[0][0] for _, rule in _LABEL_RULES]


def _view_input_problems(folder: Path, t: TreeArrays, dist: np.ndarray) -> list[str]:
    """The view's rows are unrelated by construction (`unrelated` is a constant there): hold its inputs to
    the tree: pairs in one sector at their tree distance, negatives in another sector at theirs."""
    src = Path(folder) / HARDNESS_1_DIR
    if not src.is_dir():
        return []  # a fully materialized table: every row went through the scan
    problems = []
    for name, other, dcol, want_same in (("pairs", "positive", "positive_distance", True),
                                         ("negatives", "negative", "negative_distance", False)):
        tab = pq.read_table(src / f"{name}.parquet", columns=["anchor", other, dcol])
        a, b = (tab.column(c).to_numpy().astype(np.int64) for c in ("anchor", other))
        d = pc.cast(tab.column(dcol), pa.float64()).to_numpy()
        wrong_sector = int(((t.sector[a] == t.sector[b]) != want_same).sum())
        wrong_distance = int((dist[a, b] != d).sum())
        if wrong_sector or wrong_distance:
            problems.append(f"hardness-1 view input {name}.parquet: {wrong_sector:,} rows in the wrong sector, "
                            f"{wrong_distance:,} with a distance other than the tree's")
    return problems


def triplets_consistent(folder: Path, desc: pa.Table) -> Outcome:
    """Reads the table as users do (triplets_sql): row count per hardness, in total the tree's; every label
    rule over every row (hardness 2..8 scanned, hardness 1 asked of the view); the view's inputs."""
    con = connect()
    relation = triplets_sql(folder)
    per_hardness = {**_scan_counts(con, relation), 1: _view_counts(con, relation)}
    counts = {h: v[0] for h, v in sorted(per_hardness.items()) if v[0]}
    t = tree_arrays(desc)
    dist = distance_matrix(t)
    expected = _expected_triplet_count(t, dist)
    rows = sum(counts.values())
    problems = []
    if rows != expected:
        problems.append(f"{rows:,} rows, expected {expected:,} from the tree")
    if set(counts) - set(range(1, 9)):
        problems.append(f"hardness outside 1..8: {sorted(set(counts) - set(range(1, 9)))}")
    for i, (label, _) in enumerate(_LABEL_RULES, start=1):
        bad = {h: v[i] for h, v in per_hardness.items() if v[i]}
        if bad:
            problems.append(f"{label}: " + ", ".join(
                f"hardness {h}: {'some' if h == 1 else f'{n:,}'}" for h, n in sorted(bad.items())))
    problems += _view_input_problems(folder, t, dist)
    return Outcome(not problems, "; ".join(problems) or f"{rows:,} rows as the tree implies, labels consistent",
                   {"rows": rows, "expected_rows": expected, **{f"hardness_{h}": n for h, n in counts.items()}})
