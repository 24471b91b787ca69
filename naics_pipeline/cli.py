"""`naics-pipeline classify` (texts or a file of texts -> NAICS codes) and `naics-pipeline nearest`
(the codes nearest to one text, any level). Both go through naics_pipeline.text.classify.TextClassifier."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from naics_pipeline.settings import storage_root


def nearest(text: str, root: Path, k: int = 10, level: int | None = 6, stage: str | None = None,
            encoder_name: str | None = None) -> list[dict]:
    from naics_pipeline.text.classify import TextClassifier

    rows = TextClassifier.load(Path(root), stage, encoder=encoder_name).predict([text], k, level)
    return [{"code": r["code"], "title": r["title"], "level": r["level"], "distance": round(r["distance"], 4)}
            for r in rows]


def classify(args: argparse.Namespace) -> None:
    from naics_pipeline.text.classify import ClassifyError, TextClassifier, read_texts, write_predictions

    if bool(args.texts) == bool(args.input):
        raise ClassifyError("give either texts to classify or --input FILE, not both and not neither")
    if args.input and not args.text_column:
        raise ClassifyError("--input needs --text-column: the column holding the texts")
    texts = read_texts(Path(args.input), args.text_column) if args.input else args.texts
    clf = TextClassifier.load(Path(args.root), args.stage)
    t0 = time.perf_counter()
    table = clf.predict_table(texts, args.k, batch_size=args.batch_size, min_precision=args.min_precision)
    seconds = time.perf_counter() - t0
    if args.output:
        write_predictions(table, Path(args.output))
        print(f"{len(texts):,} texts -> {table.num_rows:,} rows in {args.output} ({clf.stage}, "
              f"{len(texts) / seconds:,.0f} texts/s)", file=sys.stderr)
    elif args.json:
        json.dump(table.to_pylist(), sys.stdout, indent=1)
        print()
    else:
        for r in table.to_pylist():
            if r["rank"] == 1:
                print(f"[{r['row']}] {texts[r['row']]}")
            print(f"  {r['rank']:>2}. {r['code']}  {r['score']:.3f}  {r['title']}  "
                  f"({r['industry_group']} {r['industry_group_title']}; {r['sector']} {r['sector_title']})")
            if args.min_precision is not None and r["rank"] == min(args.k, len(clf.six)):
                print(f"      at precision {args.min_precision:g}: " + (
                    f"{r['confident_code']} ({r['confident_level']} digits, {r['confident_score']:.3f})"
                    if r["confident_code"] else "no level is confident enough: review by hand"))


def serve(args: argparse.Namespace) -> None:
    from naics_pipeline.settings import prefer_passive_openmp

    prefer_passive_openmp()
    from naics_pipeline.text.service import serve as run_service

    run_service(Path(args.root), args.stage, args.host, args.port, args.log_level)


def add_serve_parser(sub) -> None:
    srv = sub.add_parser("serve", help="an HTTP service over classify: POST /classify, GET /healthz, /docs")
    srv.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    srv.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    srv.add_argument("--stage", default=None, help="stage folder to use (default: the last trained stage)")
    srv.add_argument("--root", default=str(storage_root()))
    srv.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                     help="uvicorn's log level (info logs each request)")


def main(argv: list[str] | None = None) -> None:
    from naics_pipeline.text.classify import BATCH_SIZE, ClassifyError

    ap = argparse.ArgumentParser(prog="naics-pipeline")
    sub = ap.add_subparsers(dest="command", required=True)
    near = sub.add_parser("nearest", help="NAICS codes nearest to a text")
    near.add_argument("text")
    near.add_argument("-k", type=int, default=10)
    near.add_argument("--level", type=int, default=6, help="only codes of this level (0: all levels)")
    near.add_argument("--stage", default=None, help="stage folder to use (default: the last trained stage)")
    near.add_argument("--root", default=str(storage_root()))
    near.add_argument("--json", action="store_true")
    cls = sub.add_parser("classify", help="6-digit NAICS codes for texts, or for a column of a CSV/Parquet file")
    cls.add_argument("texts", nargs="*", help="texts to classify (or use --input)")
    cls.add_argument("--input", default=None, help="a .csv or .parquet file with one text per row")
    cls.add_argument("--text-column", default=None, help="the column of --input holding the texts")
    cls.add_argument("-k", type=int, default=5, help="codes per text (default 5)")
    cls.add_argument("--output", default=None, help="write rows to OUT.csv, OUT.parquet or OUT.json")
    cls.add_argument("--json", action="store_true", help="print rows as JSON (without --output)")
    cls.add_argument("--stage", default=None, help="stage folder to use (default: the last trained stage)")
    cls.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="texts encoded per step")
    cls.add_argument("--min-precision", type=float, default=None, metavar="P",
                     help="also give each text the deepest level (6, 4 or 2 digits) at which it can be coded "
                          "with precision P (each level's probability cut fitted on the validation split, "
                          "never above P), or say that none is (0 < P <= 1)")
    cls.add_argument("--root", default=str(storage_root()))
    add_serve_parser(sub)
    args = ap.parse_args(argv)
    try:
        if args.command == "serve":
            serve(args)
            return
        if args.command == "classify":
            classify(args)
            return
        rows = nearest(args.text, Path(args.root), args.k, args.level or None, args.stage)
    except ClassifyError as exc:
        raise SystemExit(f"naics-pipeline {args.command}: {exc}") from None
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        print()
        return
    for r in rows:
        print(f"{r['code']:<7} {r['distance']:>8.4f}  {r['title']}")


if __name__ == "__main__":
    main()
