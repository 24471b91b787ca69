"""classify's batch rate against the thread switch interval it sets while a GPU batch's TF-IDF query
rows run in the background (text.classify.GPU_SWITCH_INTERVAL).

    python benchmarks/bench_switch_interval.py --root DIR [--device cuda] [--texts 40750] [--rounds 3]

Loads the root's last stage with its entry index, then classifies the held-out entries (repeated up to
--texts, 8,192 a batch) once per interval per round, the intervals in the same order each round, after a
warm-up. Prints texts/s per round and the median. Meaningful on a GPU only: the CPU path has no
background rows."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

INTERVALS = (None, 1e-3, 2e-4, 5e-5)


def main() -> None:
    from naics_pipeline.layout import Layout
    from naics_pipeline.text import classify

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--texts", type=int, default=40_750)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=8192)
    args = ap.parse_args()
    clf = classify.TextClassifier.load(Path(args.root), device=args.device)
    entries = [str(t) for t in pq.read_table(Layout(Path(args.root)).index_holdout).column("entry").to_pylist()]
    texts = (entries * (args.texts // len(entries) + 1))[:args.texts]
    clf.classify(texts[:args.batch_size], 5, 0.95, batch_size=args.batch_size)
    rates = {value: [] for value in INTERVALS}
    for _ in range(args.rounds):
        for value in INTERVALS:
            classify.GPU_SWITCH_INTERVAL = value
            t0 = time.perf_counter()
            clf.classify(texts, 5, 0.95, batch_size=args.batch_size)
            rates[value].append(len(texts) / (time.perf_counter() - t0))
    print(f"| switch interval ({len(texts):,} texts, {args.batch_size:,} a batch, {args.device}) | "
          + " | ".join(f"round {i + 1}" for i in range(args.rounds)) + " | median |")
    print("|---|" + "---:|" * (args.rounds + 1))
    for value, r in rates.items():
        name = "unchanged (5 ms)" if value is None else f"{value * 1e6:g} us"
        print(f"| {name} | " + " | ".join(f"{x:,.0f}" for x in r) + f" | {np.median(r):,.0f} |")


if __name__ == "__main__":
    main()
