"""Full data build from the real files (source -> triplets, all checks): one row per stage with rows,
wall seconds, CPU seconds (all threads), rows/s, MB on disk and the peak RSS so far.

    python benchmarks/bench_data.py [--source DIR] [--root DIR]

The triplet table is reported in two parts: hardness 2..8, written as Parquet, and hardness 1, served by
a DuckDB view over three small input files (its rows are computed when read, never written).
Targets (issue 13, idle 2-core machine): source -> triplets with checks <= 30 s.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow.parquet as pq  # noqa: E402

from naics_pipeline.data import pipeline, quality  # noqa: E402
from naics_pipeline.data.snapshot import load_snapshot  # noqa: E402
from naics_pipeline.data.triplets import HARDNESS_1_DIR  # noqa: E402
from naics_pipeline.layout import Layout  # noqa: E402
from naics_pipeline.storage import disk_bytes  # noqa: E402

DEFAULT_SOURCE = Path(__file__).resolve().parents[2] / "shared" / "naics" / "2022"


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


class Table:
    def __init__(self):
        self.lines = ["| stage | rows | seconds | CPU s | rows/s | MB on disk | peak RSS so far (GiB) |",
                      "|---|---:|---:|---:|---:|---:|---:|"]

    def row(self, name, rows, seconds, cpu, mb, rss=None, rate=True):
        rate = f"{rows / seconds:,.0f}" if rate and rows and seconds else ""
        self.lines.append(f"| {name} | {f'{rows:,}' if rows else ''} | {seconds:.2f} | {cpu} | {rate} | "
                          f"{'' if mb is None else f'{mb:.1f}'} | {'' if rss is None else f'{rss:.2f}'} |")


def timed(fn):
    t, c = time.perf_counter(), cpu_seconds()
    out = fn()
    return out, time.perf_counter() - t, f"{cpu_seconds() - c:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", default=str(DEFAULT_SOURCE))
    ap.add_argument("--root", default=None)
    args = ap.parse_args()
    layout = Layout(Path(args.root or tempfile.mkdtemp(prefix="naics-bench-")))
    load_before = os.getloadavg()[0]
    table = Table()
    t0, c0 = time.perf_counter(), cpu_seconds()
    steps = [lambda: pipeline.step_source(layout, args.source), lambda: pipeline.step_descriptions(layout),
             lambda: pipeline.step_graph(layout), lambda: pipeline.step_distances(layout),
             lambda: pipeline.step_triplets(layout)]
    for step_fn in steps:
        step, _, cpu = timed(step_fn)
        table.row(step.name, step.rows, step.seconds, cpu, step.megabytes, peak_gib())
    counts, stage_s = step.metadata["counts"], step.metadata["stage_seconds"]
    written = sum(disk_bytes(p) for p in layout.triplets.glob("hardness=*")) / 1e6
    table.row("&nbsp;&nbsp;of which hardness 2-8, written", sum(n for h, n in counts.items() if h != 1),
              sum(s for k, s in stage_s.items() if k.startswith("hardness") and "view" not in k), "", written)
    table.row("&nbsp;&nbsp;of which hardness 1, DuckDB view (inputs written, rows computed when read)",
              counts.get(1, 0), stage_s["hardness 1 (view inputs)"], "",
              disk_bytes(layout.triplets / HARDNESS_1_DIR) / 1e6, rate=False)
    desc = pq.read_table(layout.descriptions)
    vintage = load_snapshot(layout.source_dir).vintage
    small_checks = lambda: [  # noqa: E731
        quality.descriptions_row_counts(desc, vintage), quality.descriptions_unique_codes(desc),
        quality.descriptions_parents_exist(desc), quality.descriptions_excluded_codes_exist(desc),
        quality.graph_is_naics_tree(pq.read_table(layout.graph_edges), desc, quality.expected_sectors(vintage)),
        quality.distances_consistent(layout.distances, desc)]
    outcomes, seconds, cpu = timed(small_checks)
    table.row(f"6 checks: descriptions, graph, distances ({sum(o.passed for o in outcomes)}/6 passed)",
              None, seconds, cpu, None, peak_gib())
    triplet_check, seconds, cpu = timed(lambda: quality.triplets_consistent(layout.triplets, desc))
    verdict = "passed" if triplet_check.passed else "FAILED"
    table.row(f"check triplets_consistent ({verdict}; counts all {triplet_check.metadata['rows']:,} rows as read)",
              None, seconds, cpu, None, peak_gib())
    outcomes.append(triplet_check)
    table.row("**total**", None, time.perf_counter() - t0, f"{cpu_seconds() - c0:.1f}", None, peak_gib())
    print("\n".join(table.lines))
    print(f"\nload average (1 min) before {load_before:.2f}, after {os.getloadavg()[0]:.2f}; "
          f"{os.cpu_count()} CPUs; triplet stage seconds {({k: round(v, 2) for k, v in stage_s.items()})}")
    if not all(o.passed for o in outcomes):
        sys.exit("checks failed: " + "; ".join(o.description for o in outcomes if not o.passed))


if __name__ == "__main__":
    main()
