"""Train every stage of curricula/stages.yaml on prepared tables and print time, losses and metrics.

Runs without dagster (the GPU machine has torch and lightning only). Prepare the inputs on a CPU
machine with `dagster asset materialize --select '+text_embeddings,sampling_index_*'` or:

    python benchmarks/bench_training.py --prepare DIR       # tables, indexes, text embeddings -> DIR
    python benchmarks/bench_training.py --root DIR [--epochs-scale 2] [--accelerator gpu]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow.parquet as pq  # noqa: E402

from naics_pipeline.curricula.config import load_plan  # noqa: E402
from naics_pipeline.layout import Layout  # noqa: E402
from naics_pipeline.settings import REPO_ROOT  # noqa: E402
from naics_pipeline.text.encoder import TextEmbeddings  # noqa: E402
from naics_pipeline.training.loop import TrainConfig, train_stage  # noqa: E402
from naics_pipeline.training.model import ModelConfig  # noqa: E402

SOURCE = Path(__file__).resolve().parents[2] / "shared" / "naics" / "2022"


def prepare(root: Path, encoder: str) -> None:
    from naics_pipeline.curricula.config import load_curricula
    from naics_pipeline.curricula.sampling import build_index
    from naics_pipeline.data import pipeline
    from naics_pipeline.text.encoder import build_text_embeddings

    layout = Layout(root)
    pipeline.build_data(layout, str(SOURCE))
    desc = pq.read_table(layout.descriptions)
    for name, c in load_curricula(REPO_ROOT / "curricula").items():
        build_index(c, desc, layout.distances, layout.triplets, layout.sampling_index(name))
    build_text_embeddings(desc, pq.read_table(layout.index_holdout), encoder).save(layout.text_embeddings)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=False)
    ap.add_argument("--prepare", default=None)
    ap.add_argument("--encoder", default="minilm")
    ap.add_argument("--epochs-scale", type=float, default=1.0)
    ap.add_argument("--accelerator", default="auto")
    ap.add_argument("--devices", default="auto")
    ap.add_argument("--strategy", default="auto")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--temperature", type=float, default=0.1)
    ap.add_argument("--embedding-dim", type=int, default=32)
    ap.add_argument("--no-radius-by-level", action="store_true")
    ap.add_argument("--exclusion-weight", type=float, default=TrainConfig.exclusion_weight)
    ap.add_argument("--exclusion-margin", type=float, default=TrainConfig.exclusion_margin)
    ap.add_argument("--stages", default=None, help="comma-separated stage names to train (default: all)")
    ap.add_argument("--init-from", default=None, help="model.pt the first trained stage starts from")
    ap.add_argument("--run-name", default=None, help="train into ROOT/runs/NAME instead of ROOT")
    ap.add_argument("--curricula", default=str(REPO_ROOT / "curricula"), help="folder with stages.yaml")
    ap.add_argument("--out", default=None, help="write the per-stage results as JSON here")
    args = ap.parse_args()
    if args.prepare:
        prepare(Path(args.prepare), args.encoder)
        return
    layout = Layout(Path(args.root))
    desc = pq.read_table(layout.descriptions)
    emb = TextEmbeddings.load(layout.text_embeddings)
    devices = int(args.devices) if args.devices.isdigit() else args.devices
    out = Layout(layout.root / "runs" / args.run_name) if args.run_name else layout
    wanted = set(args.stages.split(",")) if args.stages else None
    prev, rows, t_all = Path(args.init_from) if args.init_from else None, [], time.perf_counter()
    for stage in load_plan(Path(args.curricula)):
        if wanted is not None and stage.name not in wanted:
            continue
        cfg = TrainConfig(epochs=max(1, round(stage.epochs * args.epochs_scale)), accelerator=args.accelerator,
                          devices=devices, strategy=args.strategy, batch_size=args.batch_size,
                          learning_rate=args.lr, progress_bar=False, gpu_epoch_multiplier=1,
                          exclusion_weight=args.exclusion_weight, exclusion_margin=args.exclusion_margin)
        mcfg = ModelConfig(temperature=args.temperature, embedding_dim=args.embedding_dim,
                           radius_by_level=not args.no_radius_by_level)
        r = train_stage(stage.name, layout.sampling_index(stage.curriculum.name), emb, desc,
                        out.stage_dir(stage.name), mcfg, cfg, init_from=prev)
        prev = r.model_path
        if r.metrics:
            rows.append({"stage": stage.name, "epochs": cfg.epochs, **r.metrics})
    total = time.perf_counter() - t_all
    if not rows:
        return  # not rank 0
    cols = [("seconds", "s"), ("final_train_loss", "train loss"), ("final_val_loss", "val loss"),
            ("spearman", "Spearman"), ("ndcg_at_10", "NDCG@10"), ("mean_distortion", "distortion"),
            ("parent_retrieval_accuracy", "parent acc"), ("exclusion_separation", "excl. sep."),
            ("load_balancing_loss", "LB loss")]
    print("| stage | epochs | " + " | ".join(c[1] for c in cols) + " | holdout top1/top5 (6-digit) |")
    print("|---|---:|" + "---:|" * len(cols) + "---|")
    for r in rows:
        ret = r.get("retrieval") or {}
        print(f"| {r['stage']} | {r['epochs']} | " + " | ".join(
            f"{r[k]:.3f}" if isinstance(r.get(k), float) else str(r.get(k)) for k, _ in cols)
            + f" | {ret.get('top1_6digit', 0):.3f} / {ret.get('top5_6digit', 0):.3f} |")
    for r in rows:
        if "exclusion_separation_unseen" in r:
            print(f"{r['stage']}: exclusion separation on links the hinge saw {r['exclusion_separation_seen']:.3f}, "
                  f"on the {r['exclusion_links_unseen']} it did not {r['exclusion_separation_unseen']:.3f}")
    print(f"\nall stages: {total:.1f} s")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2, default=float))


if __name__ == "__main__":
    main()
