"""Data-quality checks as plain functions; the Dagster layer turns each into an asset check."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from naics_pipeline.data.distances import distance_matrix, tree_arrays
from naics_pipeline.data.graph import ROOT, build_graph, graph_from_tables, tree_problems
from naics_pipeline.data.triplets import count_by_hardness
from naics_pipeline.storage import connect, parquet_glob

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
    t = tree_arrays(desc)
    dist = distance_matrix(t)
    sector = t.sector
    total = 0
    for s in np.unique(sector):
        members = np.nonzero(sector == s)[0]
        cross = len(sector) - len(members)
        sub = dist[np.ix_(members, members)]
        for row in sub:  # row = distances from one anchor to its sector
            d = np.sort(row)[1:]  # drop the anchor itself (distance 0)
            farther = len(d) - np.searchsorted(d, d, side="right")
            total += int(farther.sum()) + len(d) * cross
    return total


def triplets_consistent(folder: Path, desc: pa.Table) -> Outcome:
    con = connect()
    counts = count_by_hardness(con, folder)
    expected = expected_triplet_count(desc)
    rows = sum(counts.values())
    problems = []
    if rows != expected:
        problems.append(f"{rows:,} rows, expected {expected:,} from the tree")
    if set(counts) - set(range(1, 9)):
        problems.append(f"hardness outside 1..8: {sorted(set(counts) - set(range(1, 9)))}")
    # Hardness 2..8 rows (~86M) are scanned in full; hardness 1 is validated on its footer stats.
    bad = con.execute(f"""SELECT
        count(*) FILTER (WHERE NOT unrelated AND positive_distance >= negative_distance),
        count(*) FILTER (WHERE hardness BETWEEN 2 AND 7 AND (unrelated OR excluded)),
        count(*) FILTER (WHERE hardness = 8 AND NOT excluded),
        count(*) FILTER (WHERE anchor = positive OR negative = anchor OR negative = positive)
        FROM {parquet_glob(folder)} WHERE hardness >= 2""").fetchall()[0]
    labels = ["related rows with positive_distance >= negative_distance",
              "hardness 2-7 rows flagged unrelated/excluded", "hardness 8 rows not excluded",
              "rows repeating a code"]
    problems += [f"{n:,} {label}" for n, label in zip(bad, labels) if n]
    # Hardness 1 (~890M rows) is checked from footer statistics: every row unrelated, none excluded.
    h1 = con.execute(f"""SELECT path_in_schema, min(stats_min_value), max(stats_max_value)
        FROM parquet_metadata('{folder}/hardness=1/*.parquet')
        WHERE path_in_schema IN ('unrelated', 'excluded') GROUP BY 1""").fetchall()
    h1 = {col: (lo, hi) for col, lo, hi in h1}
    if counts.get(1) and (h1.get("unrelated", ("false",))[0] != "true" or h1.get("excluded", (0, "true"))[1] != "false"):
        problems.append(f"hardness 1 rows not all unrelated and unexcluded (footer stats {h1})")
    return Outcome(not problems, "; ".join(problems) or f"{rows:,} rows as the tree implies, labels consistent",
                   {"rows": rows, "expected_rows": expected, **{f"hardness_{h}": n for h, n in counts.items()}})
