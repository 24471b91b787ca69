"""Draw the code location's asset graph as docs/img/asset_graph.png (the README's picture).

    python scripts/asset_graph.py [--out docs/img/asset_graph.png]

Reads the definitions (no instance, no server) and lays them out with Graphviz's `dot` (Debian package
`graphviz`), one box per asset grouped by asset group. It draws the transitive reduction of the
dependencies: an edge that another path already implies (stage_2 -> naics_descriptions, say) is left
out so that the picture stays legible.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import networkx as nx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

GROUP_COLOURS = {"source": "#c7e9c0", "tables": "#c6dbef", "graph": "#c6dbef", "curricula": "#fdd0a2",
                 "training": "#dadaeb", "evaluation": "#fcbba1"}


def asset_dag() -> tuple[nx.DiGraph, dict[str, str]]:
    from naics_pipeline.definitions import build_defs

    dag, groups = nx.DiGraph(), {}
    for spec in build_defs().resolve_all_asset_specs():
        name = spec.key.to_user_string()
        groups[name] = spec.group_name or "default"
        dag.add_node(name)
        for dep in spec.deps:
            dag.add_edge(dep.asset_key.to_user_string(), name)
    return dag, groups


def dot_source(dag: nx.DiGraph, groups: dict[str, str]) -> str:
    lines = ['digraph assets {', '  rankdir=LR; nodesep=0.15; ranksep=0.35; fontname="Helvetica";',
             '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=11, height=0.3];',
             '  edge [color="#777777", arrowsize=0.6];']
    for group in sorted(set(groups.values())):
        lines.append(f'  subgraph "cluster_{group}" {{ label="{group}"; fontsize=11; color="#bbbbbb";')
        for node in sorted(n for n, g in groups.items() if g == group):
            lines.append(f'    "{node}" [fillcolor="{GROUP_COLOURS.get(group, "#eeeeee")}"];')
        lines.append('  }')
    for a, b in sorted(nx.transitive_reduction(dag).edges):
        lines.append(f'  "{a}" -> "{b}";')
    lines.append('}')
    return "\n".join(lines) + "\n"


def render(source: str, out: Path) -> None:
    if shutil.which("dot") is None:
        raise SystemExit("scripts/asset_graph.py needs Graphviz's `dot` (apt-get install graphviz)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".tmp-{out.name}")
    subprocess.run(["dot", "-Tpng", "-Gdpi=110", "-o", str(tmp)], input=source, text=True, check=True)
    tmp.replace(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(REPO / "docs" / "img" / "asset_graph.png"))
    args = ap.parse_args()
    dag, groups = asset_dag()
    render(dot_source(dag, groups), Path(args.out))
    print(f"wrote {args.out}: {dag.number_of_nodes()} assets, {dag.number_of_edges()} dependencies")


if __name__ == "__main__":
    main()
