"""How well each trained stage's code points keep the NAICS hierarchy, beside two references, in one table.

    python benchmarks/bench_hierarchy.py --root DIR [--out rows.json]

DIR is a storage root with naics_descriptions.parquet, text_embeddings.npz and trained stages
(training/stage_N/points.npz, written by every stage). Rows:
- each trained stage: Lorentz distances between its code points;
- the frozen encoder (the baseline: no training): 1 - cosine between each code's mean channel vector
  (title, description, examples, excluded text, as text_embeddings holds them);
- the tree distance itself (the ceiling of the ranking metrics; ties counted for the relevant code).
Columns: Spearman and NDCG@10 against the tree distance, parent retrieval, held-out exclusion
separation, Nickel & Kiela reconstruction mean rank and MAP, Sala neighbour MAP (training.evaluation).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from naics_pipeline.encoders import TextEmbeddings  # noqa: E402
from naics_pipeline.layout import Layout  # noqa: E402
from naics_pipeline.training import lorentz  # noqa: E402
from naics_pipeline.training.evaluation import evaluate_distances  # noqa: E402

COLUMNS = [("spearman", "Spearman"), ("ndcg_at_10", "NDCG@10"), ("parent_retrieval_accuracy", "parent acc."),
           ("exclusion_separation_held_out", "held-out excl. sep."), ("reconstruction_mean_rank", "recon. mean rank"),
           ("reconstruction_map", "recon. MAP"), ("neighbour_map", "neighbour MAP")]


def encoder_distances(emb: TextEmbeddings) -> np.ndarray:
    present = emb.present[..., None].astype(np.float32)
    mean = (emb.channels * present).sum(1) / np.maximum(present.sum(1), 1.0)
    mean /= np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)
    return np.clip(1.0 - mean.astype(np.float64) @ mean.T.astype(np.float64), 0.0, 2.0)


def stage_rows(layout: Layout, desc) -> list[dict]:
    import torch

    rows = []
    stages = sorted((p for p in (layout.root / "training").glob("stage_*") if (p / "points.npz").is_file()),
                    key=lambda p: (len(p.name), p.name))
    for folder in stages:
        blob = torch.load(folder / "model.pt", map_location="cpu", weights_only=False)
        points = np.load(folder / "points.npz")["points"]
        dist = lorentz.pairwise_distance(points, points, c=blob["model_config"]["curvature"])
        rows.append({"method": folder.name, **evaluate_distances(dist, desc)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--out", default=None, help="write the rows as JSON here")
    args = ap.parse_args()
    layout = Layout(Path(args.root))
    started = time.perf_counter()
    desc = pq.read_table(layout.descriptions)
    rows = stage_rows(layout, desc)
    frozen = evaluate_distances(encoder_distances(TextEmbeddings.load(layout.text_embeddings)), desc)
    rows.append({"method": "frozen encoder, no training (baseline)", **frozen})
    rows.append({"method": "tree distance itself (ceiling)", "spearman": 1.0, "ndcg_at_10": 1.0,
                 "parent_retrieval_accuracy": 1.0, "reconstruction_mean_rank": frozen["tree_reconstruction_mean_rank"],
                 "reconstruction_map": frozen["tree_reconstruction_map"],
                 "neighbour_map": frozen["tree_neighbour_map"]})
    print("| " + " | ".join(["codes' distances", *(c[1] for c in COLUMNS)]) + " |")
    print("|---|" + "---:|" * len(COLUMNS))
    for r in rows:
        cells = [f"{r[k]:.3f}" if isinstance(r.get(k), float) else "" for k, _ in COLUMNS]
        print(f"| {r['method']} | " + " | ".join(cells) + " |")
    print(f"\n{len(desc):,} codes; {time.perf_counter() - started:.1f} s")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2, default=float))


if __name__ == "__main__":
    main()
