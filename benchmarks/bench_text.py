"""Text -> NAICS code: the classifier and its parts against the baselines and BEACON, in one table,
with its calibration, coverage at a precision, and batch throughput.

    python benchmarks/bench_text.py --root DIR [--stage stage_4] [--no-cv] [--methods model,minilm,tfidf,beacon]
                                    [--device cuda] [--throughput-texts 2000]

DIR holds naics_descriptions.parquet, naics_index_holdout.parquet and, for the model row, a trained
stage and text_embeddings.npz (`bench_training.py --prepare DIR` then `bench_training.py --root DIR`,
or a materialized storage root). Rows:
- held-out: fitted on the kept index entries + 6-digit titles, scored on naics_index_holdout;
- held-out novel: the same, without the entries that appear in their code's description or equal
  its title;
- the model's parts on held-out: the stage's geometry alone, retrieval alone (the fusion without the
  geometry, refitted on the validation split), and the fused classifier (`classify`, with the entry
  index's weights: text_entry_index, or built here by the same code when the root lacks it);
- 2-fold CV (seed 12345): over all 6-digit index entries, BEACON-style; the model refitted per fold
  (text.crossfit: head, index and fusion on the fold's training part alone);
- written: every method as fitted for held-out, scored on the `test` half of the written descriptions
  (text.written: business descriptions written without the Index File, in five styles; the model's
  fusion is fitted on the `dev` half, nothing on this one), and per style;
- BEACON's published 0.825 (its own 2017 data) as a reference.
Then calibration (ECE) and coverage at 90/95/99% precision, 6-digit and with back-off, held-out and
CV (each level answering from min_precision's cut, fitted on the validation split of the index that
scores the texts: text.calibration.PrecisionCuts), and the batch throughput of classify against the
encoder's bare encoding of the same texts.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from naics_pipeline.layout import Layout  # noqa: E402
from naics_pipeline.text import baselines as bl  # noqa: E402
from naics_pipeline.text.classify import BATCH_SIZE  # noqa: E402
from naics_pipeline.text.written import WRITTEN_PATH, load_written  # noqa: E402
from naics_pipeline.training.evaluation import text_accuracy  # noqa: E402

METHODS = ("model", "minilm", "tfidf", "beacon")
LABELS = {"model": "model (refitted per fold)", "minilm": "MiniLM nearest training entry",
          "tfidf": "TF-IDF nearest training entry", "beacon": "BEACON (fitted here)"}
COLUMNS = [f"top{k}_{d}digit" for d in (6, 4, 2) for k in (1, 5)]


def written_row(name: str, top: np.ndarray, codes: list[str], styles: list[str], desc) -> list[dict]:
    """The written test half's row, and one per style."""
    out = []
    for style in [None, *sorted(set(styles) - {""})]:
        keep = np.array([style is None or s == style for s in styles])
        acc = text_accuracy(top[keep], [c for c, k in zip(codes, keep) if k], desc)
        out.append({"method": name, "split": "written test" if style is None else f"written test: {style}",
                    "entries": int(keep.sum()), **{c: acc[c] for c in COLUMNS}})
    return out


def baseline_fitters(methods: list[str], beacon_path: Path, skipped: dict, encoder=None) -> dict[str, bl.Fitter]:
    fitters = {}
    if "minilm" in methods:
        fitters["minilm"] = bl.minilm_fitter(encoder)
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
    """The baselines' fitters the cross-validation runs (the model's per-fold refit runs before them)."""
    return dict(fitters)


def load_model(root: Path, stage: str | None, device: str, skipped: dict):
    """The classifier of `stage` with its entry index (built here, as text_entry_index builds it, when
    the root has none), or None."""
    from naics_pipeline.text.classify import ClassifyError, TextClassifier, stage_model_path
    from naics_pipeline.text.index import build_entry_index

    try:
        clf = TextClassifier.load(root, stage, device=device)
    except ClassifyError as exc:
        skipped["model"] = f"model skipped: {exc}"
        return None
    if clf.index is None:
        layout = Layout(root)
        print(f"{clf.stage} has no entry index: building it (text_entry_index's code)", file=sys.stderr)
        clf.index = build_entry_index(clf, pq.read_table(layout.descriptions), stage_model_path(layout, clf.stage),
                                      None if clf.fine_tuned else layout.text_cache,
                                      log=lambda m: print(m, file=sys.stderr))
    return clf


def model_parts(clf, desc, entries: list[str], codes: list[str], written=None) -> tuple[list[dict], dict]:
    """Held-out rows (and written rows, with `written` = (texts, codes, styles)) of the geometry alone,
    retrieval alone and the fused classifier, and the fused probabilities' calibration reports."""
    from naics_pipeline.text.calibration import calibration_report
    from naics_pipeline.text.index import GEOMETRY_FEATURES, fit_index, validation_rows, written_fit_texts

    cands = clf.table.codes[clf.six]
    groups = np.asarray(clf.table.industry_group[clf.six], dtype=str)
    pos = {c: i for i, c in enumerate(cands)}
    # retrieval alone: the same validation split, written dev half and features, without the geometry, refitted
    feats = tuple(f for f in clf.index.features if f not in GEOMETRY_FEATURES)
    alone = fit_index(clf.index.known, validation_rows(clf.index.known), None, cands.tolist(), groups, feats,
                      written=written_fit_texts(clf.encode, cands.tolist()), device=str(clf.device))
    keep = [clf.index.features.index(f) for f in feats]

    def retrieval(vectors, texts):
        x = clf.index.scorer(cands.tolist(), groups)(vectors, texts, clf.geometry(vectors))
        return alone.probabilities(x[..., keep])
    parts = {"geometry alone": lambda v, _t: np.exp(clf.geometry(v)), "retrieval alone": retrieval,
             f"model ({clf.stage}, {'fine-tuned' if clf.fine_tuned else 'frozen'} {clf.encoder.name})":
                 lambda v, t: clf.probabilities(t, v)[0]}
    rows, reports = [], {}
    vectors = clf.encode(entries)
    for name, score in parts.items():
        t0 = time.perf_counter()
        p = score(vectors, entries)
        acc = text_accuracy(cands[np.argsort(-p, 1)[:, :5]], codes, desc, entries)
        rows.append({"method": name, "split": "held-out", "entries": len(entries),
                     **{c: acc[c] for c in COLUMNS}, "seconds": time.perf_counter() - t0})
        rows.append({"method": name, "split": "held-out novel", "entries": acc["holdout_entries_novel"],
                     **{c: acc[f"{c}_novel"] for c in COLUMNS}})
    reports["held-out"] = calibration_report(p, np.array([pos[c] for c in codes]), clf.levels, cuts=clf.cuts)
    if written is not None:
        texts, wcodes, styles = written
        wvectors = clf.encode(texts)
        for name, score in parts.items():
            p = score(wvectors, texts)
            rows += written_row(name, cands[np.argsort(-p, 1)[:, :5]], wcodes, styles, desc)
        reports["written"] = calibration_report(p, np.array([pos[c] for c in wcodes]), clf.levels, cuts=clf.cuts)
    return rows, reports


def throughput(clf, texts: list[str], batch_size: int, pairs: int = 5) -> dict:
    """texts/s of the encoder's bare encoding and of classify (encode + geometry + retrieval + fusion
    + top-k + back-off) over the same texts, after a warm-up: `pairs` runs of each, one right after the
    other, so that a shared host's load moves both sides of each pair's ratio alike. Best rate of each,
    and the median and range of the pairs' ratios."""
    clf.classify(texts[:64], 5, 0.95, batch_size=batch_size)
    runs = {"encode": lambda: [clf.encode(texts[i:i + batch_size]) for i in range(0, len(texts), batch_size)],
            "classify": lambda: clf.classify(texts, 5, 0.95, batch_size=batch_size)}
    seconds = {name: [] for name in runs}
    for _ in range(pairs):
        for name, run in runs.items():
            t0 = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - t0)
    ratios = np.array(seconds["classify"]) / np.array(seconds["encode"])
    return {"encode": len(texts) / min(seconds["encode"]), "classify": len(texts) / min(seconds["classify"]),
            "ratio_median": float(np.median(ratios)), "ratio_min": float(ratios.min()),
            "ratio_max": float(ratios.max()), "pairs": pairs}


class DiskCached:
    """An encoder whose vectors come from (and go to) the storage root's text cache."""

    def __init__(self, encoder, cache_dir: Path):
        self.encoder, self.cache_dir, self.dim, self.name = encoder, cache_dir, encoder.dim, encoder.name

    def encode(self, texts: list[str], **_) -> np.ndarray:
        from naics_pipeline.encoders import encode_texts

        return encode_texts(self.encoder, list(texts), self.cache_dir)[0]


def last_hierarchy_stage(layout: Layout, stage: str) -> str:
    """The last trained stage up to `stage` without text terms (its model.pt has no text head)."""
    import torch

    trained = sorted((p.name for p in (layout.root / "training").glob("stage_*") if (p / "model.pt").is_file()),
                     key=lambda n: (len(n), n))
    for name in reversed(trained[:trained.index(stage) + 1]):
        blob = torch.load(layout.stage_dir(name) / "model.pt", map_location="cpu", weights_only=False)
        if "text_head" not in blob:
            return name
    raise SystemExit(f"no hierarchy stage (without text terms) at or before {stage}")


def cross_validate_model(refit, texts, codes, desc) -> dict:
    """bl.cross_validate of the per-fold refit, plus the calibration report over both folds' test texts
    (each fold's texts backed off by the cuts of the index fitted without them)."""
    from naics_pipeline.text.calibration import LEVELS, calibration_report

    probs, fold_cuts = [], []

    def recording(train_texts, train_codes):
        predict = refit(train_texts, train_codes)
        cuts = refit.last["index"].cuts

        def wrapped(q, k):
            out = predict(q, k)
            probs.append(refit.last["probabilities"])
            fold_cuts.append((cuts, len(q)))
            return out
        return wrapped
    res = bl.cross_validate(recording, texts, codes, desc)
    fold, codes_arr = bl.cv_folds(len(texts)), np.array(codes, dtype=object)
    pos = {c: i for i, c in enumerate(refit.candidates)}
    truth = np.concatenate([[pos[c] for c in codes_arr[fold == f]] for f in range(bl.CV_FOLDS)]).astype(np.int64)

    def per_row(prec):      # each level's cut for every text, from the index of its fold
        each = [cuts.cuts(prec) if cuts is not None else dict.fromkeys(LEVELS, prec) for cuts, _ in fold_cuts]
        counts = [n for _, n in fold_cuts]
        return {lv: np.repeat([c[lv] for c in each], counts) for lv in LEVELS}
    res["calibration"] = calibration_report(np.concatenate(probs), truth, refit.levels, cuts=per_row)
    res["fold_weights"] = refit.weights_seen
    return res



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



def calibration_markdown(reports: dict[str, dict]) -> str:
    head = ["split", "ECE 6d", "ECE 4d", "ECE 2d"] + [f"{what} at {p}%" for p in (90, 95, 99)
                                                      for what in ("6-digit coverage / precision",
                                                                   "back-off coverage / precision")]
    out = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for split, r in reports.items():
        cells = [split, *(f"{r[f'ece_{lv}digit']:.3f}" for lv in (6, 4, 2))]
        for p in (90, 95, 99):
            cells.append(f"{r[f'coverage6_at_{p}']:.3f} / {r[f'precision6_at_{p}']:.3f}")
            cells.append(f"{r[f'coverage_backoff_at_{p}']:.3f} / {r[f'precision_backoff_at_{p}']:.3f}")
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--stage", default=None, help="stage for the model row (default: the last trained)")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--no-cv", action="store_true", help="skip the 2-fold cross-validation")
    ap.add_argument("--beacon", default=str(bl.BEACON_PATH), help="path of BEACON's beacon.py")
    ap.add_argument("--device", default="cpu", help="cpu or cuda: where the model and MiniLM run")
    ap.add_argument("--batch-size", type=int, default=None, help="classify's batch (default: 512 CPU, 8192 GPU)")
    ap.add_argument("--throughput-texts", type=int, default=2000, help="held-out texts timed (0: skip)")
    ap.add_argument("--hierarchy-stage", default=None,
                    help="stage whose code points the CV refit uses (default: the last without text terms)")
    ap.add_argument("--written", default=str(WRITTEN_PATH),
                    help="written-descriptions CSV (text, code, style, half); its test half is scored ('': skip)")
    ap.add_argument("--out", default=None, help="write the rows as JSON here")
    args = ap.parse_args()
    layout = Layout(Path(args.root))
    desc, holdout = pq.read_table(layout.descriptions), pq.read_table(layout.index_holdout)
    methods = [m for m in args.methods.split(",") if m]
    gpu = args.device.startswith("cuda")
    batch = args.batch_size or (8192 if gpu else BATCH_SIZE)
    train_texts, train_codes = bl.training_entries(desc)
    entries, codes = holdout.column("entry").to_pylist(), holdout.column("code").to_pylist()
    print(f"training entries: {len(train_texts):,} (kept index entries + 6-digit titles); held-out: {len(entries):,}",
          file=sys.stderr)
    rows, skipped, reports, speed, clf = [], {}, {}, None, None
    written = None
    if args.written:
        test = load_written(Path(args.written)).half("test", [c for c, lv in zip(desc.column("code").to_pylist(),
                                                                                 desc.column("level").to_pylist())
                                                               if lv == 6])
        if len(test):
            written = (test.texts, test.codes, test.styles)
        else:
            skipped["written"] = (f"written split skipped: no test row of {args.written} has a 6-digit code "
                                  "of this source")
    if "model" in methods:
        t0 = time.perf_counter()
        clf = load_model(layout.root, args.stage, args.device, skipped)
        if clf is not None:
            print(f"model loaded in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
            part_rows, part_reports = model_parts(clf, desc, entries, codes, written)
            rows += part_rows
            reports.update(part_reports)
            if args.throughput_texts:     # the held-out entries, repeated when more are asked for
                timed = (entries * (args.throughput_texts // len(entries) + 1))[:args.throughput_texts]
                speed = throughput(clf, timed, batch)
    frozen = None
    if clf is not None and clf.encoder.name.startswith("minilm"):
        from naics_pipeline.encoders import make_encoder

        # the frozen MiniLM for the baseline and the CV refit: the model's own when it is frozen, with the
        # storage root's text cache; a fresh frozen copy when the stage fine-tuned its encoder
        frozen = DiskCached(clf.encoder, layout.text_cache) if not clf.fine_tuned else \
            make_encoder(clf.encoder.name, args.device)
    fitters = baseline_fitters(methods, Path(args.beacon), skipped, frozen)
    for name, fit in fitters.items():
        print(f"held-out: {name}", file=sys.stderr)
        t0 = time.perf_counter()
        predict = fit(train_texts, train_codes)
        rows += run_holdout(name, predict, entries, codes, desc, time.perf_counter() - t0)
        if written is not None:
            rows += written_row(name, predict(written[0], 5), written[1], written[2], desc)
    if not args.no_cv:
        cv_texts, cv_codes = bl.all_index_entries(desc, holdout)
        if clf is not None:
            from naics_pipeline.text.crossfit import FoldRefit

            hierarchy = args.hierarchy_stage or last_hierarchy_stage(layout, clf.stage)
            encoder = bl.CachedEncoder(frozen or clf.encoder, batch_size=1024 if gpu else 128)
            # a stage that fine-tuned its encoder is refitted the same way: MiniLM fine-tuned per fold
            fine_tune = (lambda: make_encoder(clf.encoder.name, args.device)) if clf.fine_tuned else None
            refit = FoldRefit(layout.root, hierarchy, encoder, features=clf.index.features, fine_tune=fine_tune,
                              device=args.device)
            print(f"2-fold CV: model, refitted per fold over {hierarchy}'s code points"
                  f"{', MiniLM fine-tuned per fold' if fine_tune else ''}", file=sys.stderr)
            t0 = time.perf_counter()
            res = cross_validate_model(refit, cv_texts, cv_codes, desc)
            reports["2-fold CV"] = res["calibration"]
            rows.append({"method": "model", "split": f"{res['folds']}-fold CV (seed {bl.CV_SEED})",
                         "entries": res["entries"], **{c: res[c] for c in COLUMNS},
                         "seconds": time.perf_counter() - t0})
            print(f"CV fusion weights per fold: {res['fold_weights']}", file=sys.stderr)
        for name, fit in cv_fitters(fitters).items():
            print(f"2-fold CV: {name}", file=sys.stderr)
            t0 = time.perf_counter()
            res = bl.cross_validate(fit, cv_texts, cv_codes, desc)
            rows.append({"method": name, "split": f"{res['folds']}-fold CV (seed {bl.CV_SEED})",
                         "entries": res["entries"], **{c: res[c] for c in COLUMNS},
                         "seconds": time.perf_counter() - t0})
    rows.append({"method": "BEACON published", "split": "2-fold CV, BEACON's 2017 data", "entries": 41_918,
                 "top1_6digit": bl.BEACON_PUBLISHED_TOP1})
    order = lambda r: (r["split"].startswith("written:"), r["split"].startswith("written"))  # noqa: E731
    print(markdown(sorted(rows, key=order)))
    for why in skipped.values():
        print(f"- {why}")
    if reports:
        print()
        print(calibration_markdown(reports))
    if clf is not None:
        print(f"- fusion weights ({clf.stage}): " + ", ".join(f"{f} {w:.2f}" for f, w in
                                                             zip(clf.index.features, clf.index.weights)))
    if speed is not None:
        import torch

        print(f"- batch throughput over {args.throughput_texts:,} held-out entries (repeated past {len(entries):,}), "
              f"{batch} a batch, device "
              f"{args.device}, {os.cpu_count()} CPU cores, torch threads {torch.get_num_threads()}: encoder alone "
              f"{speed['encode']:,.0f} texts/s, classify {speed['classify']:,.0f} texts/s "
              f"(classify costs {speed['ratio_median']:.2f}x the bare encoding, median of {speed['pairs']} "
              f"back-to-back pairs; range {speed['ratio_min']:.2f}-{speed['ratio_max']:.2f})")
    if args.out:
        Path(args.out).write_text(json.dumps({"rows": rows, "skipped": skipped, "calibration": reports,
                                              "throughput": speed}, indent=2, default=float))


if __name__ == "__main__":
    main()
