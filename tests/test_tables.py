"""Graph, distances and triplets on the generated tree, against brute-force recomputation."""
import itertools

import duckdb
import networkx as nx
import pytest

from naics_pipeline.data import quality
from naics_pipeline.data.descriptions import build_descriptions
from naics_pipeline.data.distances import distances_table, tree_arrays
from naics_pipeline.data.graph import ROOT, build_graph, tree_problems
from naics_pipeline.data.source import fetch_source
from naics_pipeline.data.triplets import HARDNESS_1_DIR, build_triplets, triplets_sql
from naics_pipeline.storage import write_catalog


@pytest.fixture
def desc(census_dir, tmp_path):
    return build_descriptions(fetch_source(str(census_dir), tmp_path)).descriptions


def test_graph_is_tree(desc):
    g = build_graph(desc)
    assert tree_problems(g, expected_sectors=3) == []
    assert sorted(g.successors(ROOT)) == ["11", "31", "54"]
    g.add_edge("11", "541511")
    assert tree_problems(g, expected_sectors=3)


def brute_distances(desc):
    g = build_graph(desc)
    ug = g.to_undirected()
    codes = desc.column("code").to_pylist()
    out = {}
    for a, b in itertools.permutations(codes, 2):
        d = nx.shortest_path_length(ug, a, b)
        lineal = nx.has_path(g, a, b) or nx.has_path(g, b, a)
        out[a, b] = d - 0.5 if lineal else d
    return out


def test_distances_match_networkx(desc):
    table = distances_table(tree_arrays(desc)).to_pylist()
    codes = desc.column("code").to_pylist()
    brute = brute_distances(desc)
    assert len(table) == len(codes) * (len(codes) - 1)
    for r in table:
        assert r["distance"] == brute[codes[r["a"]], codes[r["b"]]]
    by_pair = {(codes[r["a"]], codes[r["b"]]): r for r in table}
    assert by_pair["541511", "541512"]["relation"] == "sibling" and by_pair["541511", "541512"]["distance"] == 2
    assert by_pair["541511", "54151"]["relation"] == "parent" and by_pair["541511", "54151"]["distance"] == 0.5
    assert by_pair["54151", "541511"]["relation"] == "child"
    assert by_pair["541511", "11"]["unrelated"] and by_pair["541511", "11"]["lca_depth"] == 0
    assert by_pair["311111", "312"]["relation"] == "great_uncle"
    assert by_pair["311111", "3121"]["relation"] == "cousin_removed"
    assert by_pair["111110", "111120"]["relation"] == "cousin" and by_pair["111110", "111120"]["distance"] == 4


def expected_hardness(diff):
    for limit, h in [(0.5, 7), (1, 6), (2, 5), (3, 4), (4, 3)]:
        if diff <= limit:
            return h
    return 2


def brute_triplets(desc):
    rows = desc.to_pylist()
    codes = [r["code"] for r in rows]
    excl = {r["code"]: set(r["excluded_codes"]) for r in rows}
    sector = {r["code"]: r["sector"] for r in rows}
    dist = brute_distances(desc)
    out = {}
    for a in codes:
        for p in codes:
            if p == a or sector[p] != sector[a]:
                continue
            for n in codes:
                if n in (a, p):
                    continue
                unrelated = sector[n] != sector[a]
                if not unrelated and dist[a, n] <= dist[a, p]:
                    continue
                excluded = n in excl[a] or n in excl[p]
                diff = dist[a, n] - dist[a, p]
                h = 8 if excluded else 1 if unrelated else expected_hardness(diff)
                out[a, p, n] = (dist[a, p], dist[a, n], diff, unrelated, excluded, h)
    return out


TRIPLET_TYPES = ["USMALLINT", "USMALLINT", "USMALLINT", "DECIMAL(3,1)", "DECIMAL(3,1)", "DECIMAL(3,1)",
                 "BOOLEAN", "BOOLEAN", "BIGINT"]


def test_triplets_equal_brute_force(desc, tmp_path):
    """The table as users read it (the catalog view naics_triplets, i.e. triplets_sql: materialized hardness
    2..8 plus the hardness-1 view) holds exactly the brute-force triplets, with the fixed column types."""
    dist = distances_table(tree_arrays(desc))
    folder = tmp_path / "triplets"
    built = build_triplets(dist, desc, folder)
    con = duckdb.connect(str(write_catalog(tmp_path, {"naics_triplets": folder})), read_only=True)
    assert [(c, t) for c, t, *_ in con.sql("DESCRIBE naics_triplets").fetchall()] == list(zip(
        ["anchor", "positive", "negative", "positive_distance", "negative_distance", "distance_diff",
         "unrelated", "excluded", "hardness"], TRIPLET_TYPES))
    codes = desc.column("code").to_pylist()
    rows = con.sql("SELECT * FROM naics_triplets").fetchall()
    got = {(codes[a], codes[p], codes[n]): (float(pd), float(nd), float(df), u, e, h)
           for a, p, n, pd, nd, df, u, e, h in rows}
    brute = brute_triplets(desc)
    assert len(rows) == len(got) == built.rows == len(brute) == quality.expected_triplet_count(desc)
    assert got == brute
    assert {h for *_, h in brute.values()} >= {1, 2, 5, 6, 7, 8}
    assert built.counts == dict(con.sql("SELECT hardness, count(*) FROM naics_triplets GROUP BY 1").fetchall())
    assert sorted(duckdb.sql(triplets_sql(folder)).fetchall()) == sorted(rows)
    # Both branches of the view run: positives with exclusion links into another sector, and without.
    links = duckdb.sql(f"SELECT DISTINCT positive_has_links FROM '{folder}/{HARDNESS_1_DIR}/pairs.parquet'").fetchall()
    assert sorted(links) == [(False,), (True,)]
    assert not list(folder.glob("hardness=1"))   # hardness 1 is served by the view, not written
    assert quality.triplets_consistent(folder, desc).passed


def test_triplets_write_is_atomic(desc, tmp_path, monkeypatch):
    dist = distances_table(tree_arrays(desc))
    target = tmp_path / "triplets"
    build_triplets(dist, desc, target)
    before = sorted(p.name for p in target.rglob("*.parquet"))
    import naics_pipeline.data.triplets as T

    def boom(*a, **k):
        raise RuntimeError("killed mid-write")
    monkeypatch.setattr(T, "count_by_hardness", boom)
    with pytest.raises(RuntimeError):
        build_triplets(dist, desc, target)
    assert sorted(p.name for p in target.rglob("*.parquet")) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    monkeypatch.undo()
    assert build_triplets(dist, desc, target).rows > 0   # the lock was released by the failed run


def test_checks_fail_on_bad_tables(desc, tmp_path):
    dist = distances_table(tree_arrays(desc))
    import pyarrow as pa
    import pyarrow.parquet as pq
    bad = dist.set_column(2, "distance", pa.array(dist.column("distance").to_numpy() * 0 + 1))
    pq.write_table(bad, tmp_path / "d.parquet")
    assert not quality.distances_consistent(tmp_path / "d.parquet", desc).passed
    pq.write_table(dist, tmp_path / "ok.parquet")
    assert quality.distances_consistent(tmp_path / "ok.parquet", desc).passed
    assert not quality.descriptions_row_counts(desc, "2022").passed  # small tree is not the 2,125-code NAICS


def test_triplet_check_fails_on_a_bad_view(desc, tmp_path):
    """The check reads hardness 1 through the view: broken view inputs fail it, with the reason."""
    import pyarrow.parquet as pq

    folder = tmp_path / "triplets"
    build_triplets(distances_table(tree_arrays(desc)), desc, folder)
    src = folder / HARDNESS_1_DIR
    links = pq.read_table(src / "exclusions.parquet")
    pq.write_table(links.slice(0, 0), src / "exclusions.parquet")      # positive-side exclusions not removed
    outcome = quality.triplets_consistent(folder, desc)
    assert not outcome.passed and "expected" in outcome.description
    pq.write_table(links, src / "exclusions.parquet")
    assert quality.triplets_consistent(folder, desc).passed
    neg = pq.read_table(src / "negatives.parquet")
    same_sector = neg.set_column(1, "negative", neg.column("anchor"))   # negative = anchor, same sector
    pq.write_table(same_sector, src / "negatives.parquet")
    outcome = quality.triplets_consistent(folder, desc)
    assert not outcome.passed
    assert "rows with negative = anchor: hardness 1: some" in outcome.description
    assert "negatives.parquet" in outcome.description
