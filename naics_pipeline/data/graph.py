"""The NAICS tree as a networkx DiGraph (virtual root -> sectors -> ... -> 6-digit industries)."""
from __future__ import annotations

import networkx as nx
import pyarrow as pa

ROOT = "ROOT"
EDGES_SCHEMA = pa.schema([("parent", pa.string()), ("child", pa.string())])


def build_graph(descriptions: pa.Table) -> nx.DiGraph:
    g = nx.DiGraph()
    g.add_node(ROOT, index=-1, level=1, title="NAICS")
    for row in descriptions.select(["index", "code", "level", "title", "parent"]).to_pylist():
        g.add_node(row["code"], index=row["index"], level=row["level"], title=row["title"])
        g.add_edge(row["parent"] or ROOT, row["code"])
    return g


def edges_table(g: nx.DiGraph) -> pa.Table:
    parents, children = zip(*sorted(g.edges())) if g.number_of_edges() else ((), ())
    return pa.table({"parent": list(parents), "child": list(children)}, schema=EDGES_SCHEMA)


def graph_from_tables(edges: pa.Table, descriptions: pa.Table) -> nx.DiGraph:
    g = nx.DiGraph()
    g.add_node(ROOT, index=-1, level=1, title="NAICS")
    for row in descriptions.select(["index", "code", "level", "title"]).to_pylist():
        g.add_node(row["code"], index=row["index"], level=row["level"], title=row["title"])
    g.add_edges_from(zip(edges.column("parent").to_pylist(), edges.column("child").to_pylist()))
    return g


def tree_problems(g: nx.DiGraph, expected_sectors: int | None = 20) -> list[str]:
    """Every reason `g` is not the NAICS tree we expect; empty when it is."""
    problems = []
    if not nx.is_tree(g):
        problems.append("graph is not a tree")
    if not nx.is_arborescence(g):
        problems.append("graph is not an arborescence rooted at ROOT")
    orphans = [n for n in g.nodes if n != ROOT and g.in_degree(n) != 1]
    if orphans:
        problems.append(f"{len(orphans)} codes without exactly one parent, e.g. {orphans[:5]}")
    sectors = list(g.successors(ROOT)) if ROOT in g else []
    if expected_sectors is not None and len(sectors) != expected_sectors:
        problems.append(f"{len(sectors)} sectors, expected {expected_sectors}")
    bad_levels = [c for p, c in g.edges if p != ROOT and g.nodes[c]["level"] != g.nodes[p]["level"] + 1]
    if bad_levels:
        problems.append(f"{len(bad_levels)} children not one level below their parent, e.g. {bad_levels[:5]}")
    return problems
