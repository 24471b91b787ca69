"""Text -> NAICS code: the trained model against baselines and BEACON, in one table.

    python benchmarks/bench_text.py --root DIR [--stage stage_3] [--no-cv] [--methods model,minilm,tfidf,beacon]

DIR holds naics_descriptions.parquet, naics_index_holdout.parquet and, for the model row, a trained
stage and text_embeddings.npz (`bench_training.py --prepare DIR` then `bench_training.py --root DIR`,
or a materialized storage root). Rows:
- held-out: fitted on the kept index entries + 6-digit titles, scored on naics_index_holdout;
- held-out novel: the same, without the entries that appear in their code's description or equal
  its title;
- 2-fold CV (seed 12345): over all 6-digit index entries, BEACON-style (the model is not in it until
  its text side can be trained per fold: add a fitter to `cv_fitters`);
- BEACON's published 0.825 (its own 2017 data) as a reference.
Also prints the model's batch-mode classify throughput.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow.parquet as pq  # noqa: E402

from naics_pipeline.layout import Layout  # noqa: E402
from naics_pipeline.text import baselines as bl  # noqa: E402
from naics_pipeline.text.classify import BATCH_SIZE  # noqa: E402

METHODS = ("model", "minilm", "tfidf", "beacon")
LABELS = {"model": "model (classify)", "minilm": "MiniLM nearest training entry",
          "tfidf": "TF-IDF nearest training entry", "beacon": "BEACON (fitted here)"}
COLUMNS = [f"top{k}_{d}digit" for d in (6, 4, 2) for k in (1, 5)]


def baseline_fitters(methods: list[str], beacon_path: Path, skipped: dict) -> dict[str, bl.Fitter]:
    fitters = {}
    if "minilm" in methods:
        fitters["minilm"] = bl.minilm_fitter()
    if "tfidf" in methods:
        fitters["tfidf"] = bl.tfidf_fitter()
    if "beacon" in methods:
        module, why = bl.load_beacon(beacon_path)
        if module is None:
            skipped["beacon"] = why
        else:
            fitters["beacon"] = bl.beacon_fitter(module)
    return fitters


def cv_fitters(fitters: dict[str, bl.Fitter]) -> dict[str, bl.Fitter]:
    """The fitters the cross-validation runs. Hook: once the text side of the model can be trained
    on a fold, add `"model": fit` here (fit(train_texts, train_codes) -> predict(texts, k))."""
    return dict(fitters)


def model_predict(root: Path, stage: str | None, skipped: dict):
    from naics_pipeline.text.classify import ClassifyError, TextClassifier

    try:
        clf = TextClassifier.load(root, stage)
    except ClassifyError as exc:
        skipped["model"] = f"model skipped: {exc}"
        return None, None
    return clf, bl.classifier_predict(clf)


def run_holdout(name: str, predict: bl.Predict, entries, codes, desc, fit_seconds: float = 0.0) -> list[dict]:
    """The held-out and held-out-novel rows; seconds = fit + predict, predict_s alone."""
    t0 = time.perf_counter()
    acc = bl.holdout_accuracy(predict, entries, codes, desc)
    predict_s = time.perf_counter() - t0
    plain = {c: acc[c] for c in COLUMNS}
    novel = {c: acc[f"{c}_novel"] for c in COLUMNS}
    return [{"method": name, "split": "held-out", "entries": acc["holdout_entries"], **plain,
             "seconds": fit_seconds + predict_s, "predict_s": predict_s},
            {"method": name, "split": "held-out novel", "entries": acc["holdout_entries_novel"], **novel}]


def markdown(rows: list[dict]) -> str:
    head = ["method", "split", "entries", "top-1 6d", "top-5 6d", "top-1 4d", "top-5 4d", "top-1 2d", "top-5 2d",
            "seconds"]
    out = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for r in rows:
        cells = [LABELS.get(r["method"], r["method"]), r["split"], f"{r['entries']:,}" if r.get("entries") else ""]
        cells += [f"{r[c]:.3f}" if r.get(c) is not None else "" for c in COLUMNS]
        cells.append(f"{r['seconds']:.0f}" if r.get("seconds") is not None else "")
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--stage", default=None, help="stage for the model row (default: the last trained)")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--no-cv", action="store_true", help="skip the 2-fold cross-validation")
    ap.add_argument("--beacon", default=str(bl.BEACON_PATH), help="path of BEACON's beacon.py")
    ap.add_argument("--out", default=None, help="write the rows as JSON here")
    args = ap.parse_args()
    layout = Layout(Path(args.root))
    desc, holdout = pq.read_table(layout.descriptions), pq.read_table(layout.index_holdout)
    methods = [m for m in args.methods.split(",") if m]
    train_texts, train_codes = bl.training_entries(desc)
    entries, codes = holdout.column("entry").to_pylist(), holdout.column("code").to_pylist()
    print(f"training entries: {len(train_texts):,} (kept index entries + 6-digit titles); held-out: {len(entries):,}",
          file=sys.stderr)
    rows, skipped = [], {}
    throughput = None
    if "model" in methods:
        t0 = time.perf_counter()
        clf, predict = model_predict(layout.root, args.stage, skipped)
        if predict is not None:
            name = f"model ({clf.stage}, {clf.encoder.__class__.__name__})"
            rows += run_holdout(name, predict, entries, codes, desc, time.perf_counter() - t0)
            throughput = len(entries) / rows[-2]["predict_s"]
    fitters = baseline_fitters(methods, Path(args.beacon), skipped)
    for name, fit in fitters.items():
        print(f"held-out: {name}", file=sys.stderr)
        t0 = time.perf_counter()
        predict = fit(train_texts, train_codes)
        rows += run_holdout(name, predict, entries, codes, desc, time.perf_counter() - t0)
    if not args.no_cv:
        cv_texts, cv_codes = bl.all_index_entries(desc, holdout)
        for name, fit in cv_fitters(fitters).items():
            print(f"2-fold CV: {name}", file=sys.stderr)
            t0 = time.perf_counter()
            cv = bl.cross_validate(fit, cv_texts, cv_codes, desc)
            rows.append({"method": name, "split": f"{cv['folds']}-fold CV (seed {bl.CV_SEED})",
                         "entries": cv["entries"], **{c: cv[c] for c in COLUMNS},
                         "seconds": time.perf_counter() - t0})
    rows.append({"method": "BEACON published", "split": "2-fold CV, BEACON's 2017 data", "entries": 41_918,
                 "top1_6digit": bl.BEACON_PUBLISHED_TOP1})
    print(markdown(rows))
    for why in skipped.values():
        print(f"- {why}")
    if throughput is not None:
        print(f"- classify batch mode: {throughput:,.0f} texts/s ({len(entries):,} held-out entries, encode + "
              f"map + rank, {BATCH_SIZE} texts a batch, {os.cpu_count()} CPU cores)")
    if args.out:
        Path(args.out).write_text(json.dumps({"rows": rows, "skipped": skipped}, indent=2))


if __name__ == "__main__":
    main()
