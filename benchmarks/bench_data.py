"""Full data build from the real files (source -> triplets, all checks): prints stage, rows, s, rows/s, MB.

    python benchmarks/bench_data.py [--source DIR] [--root DIR]

Targets (issue 2, 2-core machine): whole build <= 60 s, triplets >= 20M rows/s, peak memory <= 8 GiB.
"""
from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow.parquet as pq  # noqa: E402

from naics_pipeline.data import pipeline, quality  # noqa: E402
from naics_pipeline.layout import Layout  # noqa: E402

DEFAULT_SOURCE = Path(__file__).resolve().parents[2] / "shared" / "naics" / "2022"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", default=str(DEFAULT_SOURCE))
    ap.add_argument("--root", default=None)
    args = ap.parse_args()
    root = Path(args.root or tempfile.mkdtemp(prefix="naics-bench-"))
    layout = Layout(root)
    t0 = time.perf_counter()
    steps = pipeline.build_data(layout, args.source)
    t = time.perf_counter()
    desc = pq.read_table(layout.descriptions)
    outcomes = [
        quality.descriptions_row_counts(desc, steps[0].metadata["src"].vintage),
        quality.descriptions_unique_codes(desc),
        quality.descriptions_parents_exist(desc), quality.descriptions_excluded_codes_exist(desc),
        quality.graph_is_naics_tree(pq.read_table(layout.graph_edges), desc),
        quality.distances_consistent(layout.distances, desc), quality.triplets_consistent(layout.triplets, desc),
    ]
    checks_s = time.perf_counter() - t
    total = time.perf_counter() - t0
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print("| stage | rows | seconds | rows/s | MB on disk |\n|---|---:|---:|---:|---:|")
    for s in steps:
        print(f"| {s.name} | {s.rows:,} | {s.seconds:.2f} | {s.rows / s.seconds:,.0f} | {s.megabytes:.1f} |")
    print(f"| all 7 checks ({sum(o.passed for o in outcomes)}/7 passed) | | {checks_s:.2f} | | |")
    print(f"| **total** | | **{total:.2f}** | | |")
    print(f"\npeak RSS {peak_gib:.2f} GiB; triplets {steps[-1].rows / steps[-1].seconds / 1e6:.1f}M rows/s; "
          f"stage seconds {({k: round(v, 1) for k, v in steps[-1].metadata['stage_seconds'].items()})}")
    if not all(o.passed for o in outcomes):
        sys.exit("checks failed: " + "; ".join(o.description for o in outcomes if not o.passed))


if __name__ == "__main__":
    main()
