"""Train every stage of curricula/stages.yaml on prepared tables and print time, losses and metrics.

Runs without dagster (the GPU machine has torch and lightning only). Prepare the inputs on a CPU
machine with `dagster asset materialize --select '+text_embeddings,sampling_index_*'` or:

    python benchmarks/bench_training.py --prepare DIR       # tables, indexes, text embeddings -> DIR
    python benchmarks/bench_training.py --embed DIR --encoder minilm:MODEL_DIR   # only the text embeddings
    python benchmarks/bench_training.py --root DIR [--epochs-scale 4] [--accelerator gpu] [--stages stage_3]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from naics_pipeline.curricula.config import load_curricula, load_plan  # noqa: E402
from naics_pipeline.encoders import CHANNELS, TextEmbeddings, build_text_embeddings  # noqa: E402
from naics_pipeline.layout import Layout  # noqa: E402
from naics_pipeline.settings import REPO_ROOT, default_of  # noqa: E402

SOURCE = Path(__file__).resolve().parents[2] / "shared" / "naics" / "2022"
COLUMNS = [("seconds", "s"), ("final_train_loss", "train loss"), ("final_val_loss", "val loss"),
           ("spearman", "Spearman"), ("ndcg_at_10", "NDCG@10"), ("mean_distortion", "distortion"),
           ("parent_retrieval_accuracy", "parent acc"), ("exclusion_separation", "excl. sep."),
           ("load_balancing_loss", "LB loss")]


def prepare(root: Path, encoder: str, curricula: Path) -> None:
    from naics_pipeline.curricula.index_builder import build_index
    from naics_pipeline.data import pipeline

    layout = Layout(root)
    pipeline.build_data(layout, str(SOURCE), exclusion_holdout=default_of("NAICS_EXCLUSION_HOLDOUT"))
    desc = pq.read_table(layout.descriptions)
    for name, c in load_curricula(curricula).items():
        build_index(c, desc, layout.distances, layout.triplets, layout.sampling_index(name))
    embed(root, encoder)


def embed(root: Path, encoder: str) -> None:
    layout = Layout(root)
    t = time.perf_counter()
    emb = build_text_embeddings(pq.read_table(layout.descriptions), pq.read_table(layout.index_holdout), encoder)
    emb.save(layout.text_embeddings)
    print(f"text embeddings ({encoder}): {len(emb.codes)} codes, {len(emb.holdout_codes)} held-out entries, "
          f"{time.perf_counter() - t:.1f} s")


def text_options(pairs: list[str]) -> dict:
    """FIELD=VALUE strings -> TextConfig overrides, each value cast to the field's default's type."""
    from dataclasses import fields

    from naics_pipeline.training.text_alignment import TextConfig

    types = {f.name: type(f.default) for f in fields(TextConfig)}
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or name not in types:
            raise SystemExit(f"--text-option {pair!r}: expected FIELD=VALUE with FIELD one of {', '.join(types)}")
        out[name] = value.lower() in ("1", "true", "yes") if types[name] is bool else types[name](value)
    return out


def arguments() -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=False)
    ap.add_argument("--prepare", default=None)
    ap.add_argument("--embed", default=None, help="(re)compute ROOT/text_embeddings.npz with --encoder")
    ap.add_argument("--encoder", default="minilm", help="minilm, minilm:MODEL_DIR or hashing")
    ap.add_argument("--epochs-scale", type=float, default=1.0)
    ap.add_argument("--accelerator", default="auto")
    ap.add_argument("--devices", default="auto")
    ap.add_argument("--strategy", default="auto")
    by_device = "default: the pipeline's, by device (docs/settings.md)"
    ap.add_argument("--batch-size", type=int, default=None, help=by_device)
    ap.add_argument("--max-pairs-per-epoch", type=int, default=None, help=f"{by_device}; 0: all")
    ap.add_argument("--lr", type=float, default=None, help=by_device)
    ap.add_argument("--temperature", type=float, default=default_of("NAICS_TEMPERATURE"))
    ap.add_argument("--embedding-dim", type=int, default=default_of("NAICS_EMBEDDING_DIM"))
    ap.add_argument("--no-radius-by-level", action="store_true")
    ap.add_argument("--exclusion-weight", type=float, default=default_of("NAICS_EXCLUSION_WEIGHT"))
    ap.add_argument("--exclusion-margin", type=float, default=default_of("NAICS_EXCLUSION_MARGIN"))
    ap.add_argument("--eager", action="store_true", help="no CUDA graphs (NAICS_CUDA_GRAPHS=0)")
    ap.add_argument("--text-encoder", default=None, help="text stages: frozen, finetune or auto")
    ap.add_argument("--text-option", action="append", default=[], metavar="FIELD=VALUE",
                    help="text stages: override a TextConfig field (repeatable), e.g. hard_weight=0.3")
    ap.add_argument("--stages", default=None, help="comma-separated stage names to train (default: all)")
    ap.add_argument("--curriculum", default=None, help="train the (first) selected stage on this curriculum")
    ap.add_argument("--init-from", default=None, help="model.pt the first trained stage starts from")
    ap.add_argument("--run-name", default=None, help="train into ROOT/runs/NAME instead of ROOT")
    ap.add_argument("--curricula", default=str(REPO_ROOT / "curricula"), help="folder with stages.yaml")
    ap.add_argument("--out", default=None, help="write the per-stage results as JSON here")
    ap.add_argument("--without-examples", action="store_true",
                    help="blank every code's examples channel (the index entries), e.g. for the cross-validation, "
                         "whose test folds would otherwise be in the codes' own inputs")
    ap.add_argument("--text-folds", default=None,
                    help="parquet of (text, code, fold): train each text stage once per fold on the other folds' "
                         "texts and score it on the fold's (the BEACON-style cross-validation)")
    return ap.parse_args()


def main() -> None:
    args = arguments()
    if args.prepare:
        prepare(Path(args.prepare), args.encoder, Path(args.curricula))
        return
    if args.embed:
        embed(Path(args.embed), args.encoder)
        return
    from naics_pipeline.training.loop import TrainConfig, train_stage
    from naics_pipeline.training.model import ModelConfig
    from naics_pipeline.training.text_alignment import TextConfig, TextTask

    layout = Layout(Path(args.root))
    desc = pq.read_table(layout.descriptions)
    emb = TextEmbeddings.load(layout.text_embeddings)
    if args.without_examples:
        examples = CHANNELS.index("examples")
        emb.channels[:, examples], emb.present[:, examples] = 0.0, False
    holdout = pq.read_table(layout.index_holdout).column("entry").to_pylist()
    out = Layout(layout.root / "runs" / args.run_name) if args.run_name else layout
    wanted = set(args.stages.split(",")) if args.stages else None
    prev, rows, t_all = Path(args.init_from) if args.init_from else None, [], time.perf_counter()
    plan = load_plan(Path(args.curricula))
    curricula = {s.curriculum.name: s.curriculum for s in plan} | load_curricula(Path(args.curricula))
    for stage in plan:
        if wanted is not None and stage.name not in wanted:
            continue
        if args.curriculum:
            stage, args.curriculum = replace(stage, curriculum=curricula[args.curriculum]), None
        cfg = TrainConfig(epochs=max(1, round(stage.epochs * args.epochs_scale)), accelerator=args.accelerator,
                          devices=args.devices, strategy=args.strategy, batch_size=args.batch_size,
                          max_pairs_per_epoch=args.max_pairs_per_epoch,
                          learning_rate=args.lr, progress_bar=False, gpu_epoch_multiplier=1,
                          exclusion_weight=args.exclusion_weight, exclusion_margin=args.exclusion_margin,
                          cuda_graphs=not args.eager)
        mcfg = ModelConfig(temperature=args.temperature, embedding_dim=args.embedding_dim,
                           radius_by_level=not args.no_radius_by_level)
        text = None
        if stage.text is not None:
            text = TextConfig(**{**stage.text, **({"encoder": args.text_encoder} if args.text_encoder else {}),
                                 **text_options(args.text_option)})
        if text is not None and args.text_folds:
            rows += cross_validate(stage, layout, out, emb, desc, mcfg, cfg, prev, text, Path(args.text_folds))
            continue
        text = TextTask.of_index(text, desc, emb, holdout) if text is not None else None
        r = train_stage(stage.name, layout.sampling_index(stage.curriculum.name), emb, desc,
                        out.stage_dir(stage.name), mcfg, cfg, init_from=prev, text=text, holdout_texts=holdout,
                        text_cache=layout.text_cache)
        prev = r.model_path
        if r.metrics:
            rows.append({"stage": stage.name, "curriculum": stage.curriculum.name, "epochs": cfg.epochs,
                         **r.metrics})
    total = time.perf_counter() - t_all
    if rows:   # rank 0 only
        print_table(rows, total)
    if rows and args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2, default=float))


def cross_validate(stage, layout, out, emb, desc, mcfg, cfg, init, text, folds_path: Path) -> list[dict]:
    """One text stage per fold, from the same starting model, scored on the fold's own texts."""
    from naics_pipeline.training.loop import train_stage
    from naics_pipeline.training.text_alignment import TextExamples, TextTask

    folds = pq.read_table(folds_path).to_pydict()
    row_of = {c: i for i, c in enumerate(desc.column("code").to_pylist())}
    rows = []
    for f in sorted(set(folds["fold"])):
        train = [i for i, k in enumerate(folds["fold"]) if k != f]
        test = [i for i, k in enumerate(folds["fold"]) if k == f]
        examples = TextExamples([folds["text"][i] for i in train],
                                np.array([row_of[folds["code"][i]] for i in train], np.int64))
        task = TextTask(text, examples, [folds["text"][i] for i in test], [folds["code"][i] for i in test])
        r = train_stage(f"{stage.name}_fold{f}", layout.sampling_index(stage.curriculum.name), emb, desc,
                        out.stage_dir(f"{stage.name}_fold{f}"), mcfg, cfg, init_from=init, text=task)
        if r.metrics:
            rows.append({"stage": f"{stage.name}_fold{f}", "curriculum": stage.curriculum.name,
                         "epochs": cfg.epochs, **r.metrics})
    return rows


def print_table(rows: list[dict], total: float) -> None:
    print("| stage | curriculum | epochs | " + " | ".join(c[1] for c in COLUMNS) +
          " | holdout top1/top5 (6-digit) | text top1/top5 (6-digit) |")
    print("|---|---|---:|" + "---:|" * len(COLUMNS) + "---|---|")
    for r in rows:
        ret, text = r.get("retrieval") or {}, r.get("text_retrieval") or {}
        print(f"| {r['stage']} | {r['curriculum']} | {r['epochs']} | " + " | ".join(
            f"{r[k]:.3f}" if isinstance(r.get(k), float) else str(r.get(k)) for k, _ in COLUMNS)
            + f" | {ret.get('top1_6digit', 0):.3f} / {ret.get('top5_6digit', 0):.3f}"
            + (f" | {text['top1_6digit']:.3f} / {text['top5_6digit']:.3f} |" if text else " | |"))
    print(f"\nall stages: {total:.1f} s")


if __name__ == "__main__":
    main()
