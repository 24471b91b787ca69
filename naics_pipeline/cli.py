"""`naics-pipeline nearest "text"`: the NAICS codes nearest to a free-text description."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from naics_pipeline.layout import Layout
from naics_pipeline.settings import storage_root


def nearest(text: str, root: Path, k: int = 10, level: int | None = 6, stage: str | None = None,
            encoder_name: str | None = None) -> list[dict]:
    from naics_pipeline.text.encoder import make_encoder, query_features
    from naics_pipeline.training.loop import embed_queries, load_model
    from naics_pipeline.training.lorentz import pairwise_distance

    layout = Layout(Path(root))
    stages = sorted(p for p in (layout.root / "training").glob("stage_*") if (p / "model.pt").is_file())
    if not stages:
        raise SystemExit(f"no trained stage under {layout.root / 'training'}: materialize the stages first")
    model_dir = layout.stage_dir(stage) if stage else max(stages, key=lambda p: int(p.name.split("_")[1]))
    model, blob = load_model(model_dir / "model.pt")
    table = pq.read_table(layout.embeddings) if layout.embeddings.is_file() else None
    if table is None:
        raise SystemExit(f"no {layout.embeddings}: materialize naics_embeddings first")
    encoder = make_encoder(encoder_name or blob["encoder"])
    channels, present = query_features(encoder, [text])
    query = embed_queries(model, channels, present, level or 6)
    points = np.array(table.column("coordinates").to_pylist(), np.float64)
    dist = pairwise_distance(query, points, blob["model_config"]["curvature"])[0]
    levels = table.column("level").to_numpy()
    order = [i for i in np.argsort(dist) if level is None or levels[i] == level][:k]
    codes, titles = table.column("code").to_pylist(), table.column("title").to_pylist()
    return [{"code": codes[i], "title": titles[i], "level": int(levels[i]), "distance": round(float(dist[i]), 4)}
            for i in order]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="naics-pipeline")
    sub = ap.add_subparsers(dest="command", required=True)
    near = sub.add_parser("nearest", help="NAICS codes nearest to a text")
    near.add_argument("text")
    near.add_argument("-k", type=int, default=10)
    near.add_argument("--level", type=int, default=6, help="only codes of this level (0: all levels)")
    near.add_argument("--stage", default=None, help="stage folder to use (default: the last trained stage)")
    near.add_argument("--root", default=str(storage_root()))
    near.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    rows = nearest(args.text, Path(args.root), args.k, args.level or None, args.stage)
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        print()
        return
    for r in rows:
        print(f"{r['code']:<7} {r['distance']:>8.4f}  {r['title']}")


if __name__ == "__main__":
    main()
