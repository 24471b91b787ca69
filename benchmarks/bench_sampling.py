"""Build the three built-in sampling indexes from the real 2022 tables and measure the sampler.

    python benchmarks/bench_sampling.py [--root DIR]   # builds the data tables first if DIR lacks them

Targets (issue 3): all three indexes <= 20 s; sampler >= 1M (anchor, positive, K=16) samples/s, one core.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow.parquet as pq  # noqa: E402

from naics_pipeline.curricula.config import load_curricula  # noqa: E402
from naics_pipeline.curricula.sampling import Sampler, SamplingIndex, build_index  # noqa: E402
from naics_pipeline.data import pipeline  # noqa: E402
from naics_pipeline.layout import Layout  # noqa: E402
from naics_pipeline.settings import REPO_ROOT  # noqa: E402

SOURCE = Path(__file__).resolve().parents[2] / "shared" / "naics" / "2022"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default=None)
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args()
    layout = Layout(Path(args.root or tempfile.mkdtemp(prefix="naics-bench-")))
    if not layout.triplets.exists():
        pipeline.build_data(layout, str(SOURCE))
    desc = pq.read_table(layout.descriptions)
    print("| curriculum | pairs | build s | sampler samples/s (K) |\n|---|---:|---:|---:|")
    total = 0.0
    for name, c in load_curricula(REPO_ROOT / "curricula").items():
        t = time.perf_counter()
        build_index(c, desc, layout.distances, layout.triplets, layout.sampling_index(name))
        build_s = time.perf_counter() - t
        total += build_s
        sampler = Sampler(SamplingIndex(layout.sampling_index(name)), batch_size=4096)
        for _ in sampler.epoch(10_000):   # warm-up epoch, not timed
            pass
        # At least 1M samples, so small indexes are timed over many epochs, not one batch.
        epochs = max(args.epochs, -(-1_000_000 // len(sampler.index)))
        t, n = time.perf_counter(), 0
        for epoch in range(epochs):
            for batch in sampler.epoch(epoch):
                n += len(batch.anchor)
        rate = n / (time.perf_counter() - t)
        print(f"| {name} | {len(sampler.index):,} | {build_s:.2f} | {rate:,.0f} (K={c.k_negatives}) |")
    print(f"| **all three** | | **{total:.2f}** | |")


if __name__ == "__main__":
    main()
