"""Where batch `classify` spends its time, part by part, and how far the torch scores are from numpy's.

    python benchmarks/profile_classify.py --root DIR [--device cuda] [--batch 8192]

Loads the root's last stage with its entry index (rebuilt here when the stage has none, as
text_entry_index builds it), then times each part of one batch of held-out entries (repeated up to
--batch): the encoding, the encoding of one (text, title) pair per text (the least a cross-encoder
reranker pays per candidate), each dense product, the two TF-IDF transforms of the queries, the three TF-IDF
products, the fused scores and the whole classify. Best of three after a warm-up, synchronized on a GPU.
Ends with the largest difference between the device's fused scores and the numpy ones over 300 texts.
Prints a table."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def timer(device: str):
    import torch

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    def timed(f, n: int = 3) -> float:
        f()
        sync()
        best = float("inf")
        for _ in range(n):
            t0 = time.perf_counter()
            f()
            sync()
            best = min(best, time.perf_counter() - t0)
        return best * 1000
    return timed


def torch_device(device: str) -> str:
    """classify scores with numpy on "cpu"; torch's "cpu:0" runs its torch path on the CPU."""
    return "cpu:0" if device == "cpu" else device


def scorer_on(clf, device: str):
    """The entry index's scorer on `device` ("cpu": numpy), built once per device by the index."""
    groups = np.asarray(clf.table.industry_group[clf.six], dtype=str)
    return clf.index.scorer(clf.table.codes[clf.six].tolist(), groups, device)


def profile(clf, texts: list[str], device: str) -> list[tuple[str, float]]:
    import torch

    from naics_pipeline.text.index import ENTRY_SOFT_TAU

    timed, sc = timer(device), scorer_on(clf, torch_device(device))
    vectors = clf.encode(texts)
    rows = [("encode", timed(lambda: clf.encode(texts)))]
    # what one cross-encoder pass over (text, candidate title) would cost at least: the same encoder over
    # each text joined to a title, one pair per text (a reranker of the top k pays k of these)
    titles = clf.table.titles[clf.six]
    pairs = [f"{t} [SEP] {titles[i % len(titles)]}" for i, t in enumerate(texts)]
    rows.append(("encode text + title pairs (one per text)", timed(lambda: clf.encode(pairs))))
    rows += [(f"dense {kind}", timed(lambda idx=idx: idx.best_torch(vectors))) for kind, idx in sc.dense.items()]
    rows.append(("dense entry + entry_soft", timed(lambda: sc.dense["entry"].best_torch(vectors, ENTRY_SOFT_TAU))))
    rows.append(("word TF-IDF transform", timed(lambda: sc.lexical.queries(texts))))
    rows.append(("character TF-IDF transform", timed(lambda: sc.lexical_char.queries(texts))))
    words, chars = sc.query_rows(texts)
    rows.append(("lexical product", timed(lambda: sc.lexical.best_torch(texts, words))))
    rows.append(("lexical_description product", timed(lambda: sc.lexical_description.best_torch(texts, words))))
    rows.append(("lexical_char product", timed(lambda: sc.lexical_char.best_torch(texts, chars))))
    geometry = torch.as_tensor(clf.geometry(vectors), device=torch_device(device))
    rows.append(("fused scores (scores_torch)", timed(lambda: sc.scores_torch(vectors, texts, geometry,
                                                                              clf.index.weights))))
    rows.append(("classify", timed(lambda: clf.classify(texts, 5, 0.95, batch_size=len(texts)), 2)))
    return rows


def parity(clf, texts: list[str], device: str) -> tuple[float, float]:
    """(largest |numpy - torch| fused score, share of texts with the same top code) over `texts`."""
    import torch

    vectors = clf.encode(texts)
    geometry = clf.geometry(vectors)
    on = torch_device(device)
    a = scorer_on(clf, "cpu").scores(vectors, texts, geometry, clf.index.weights)
    b = scorer_on(clf, on).scores_torch(vectors, texts, torch.as_tensor(geometry, device=on),
                                        clf.index.weights).cpu().numpy()
    return float(np.abs(a - b).max()), float((a.argmax(1) == b.argmax(1)).mean())


def main() -> None:
    from naics_pipeline.layout import Layout
    from naics_pipeline.text.classify import TextClassifier, stage_model_path
    from naics_pipeline.text.index import build_entry_index

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, required=True, help="storage root with a trained text stage")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--batch", type=int, default=8192, help="texts in the timed batch")
    args = ap.parse_args()
    clf = TextClassifier.load(args.root, device=args.device)
    layout = Layout(args.root)
    if clf.index is None:
        clf.index = build_entry_index(clf, pq.read_table(layout.descriptions), stage_model_path(layout, clf.stage))
    entries = pq.read_table(layout.index_holdout).column("entry").to_pylist()
    texts = (entries * (args.batch // len(entries) + 1))[:args.batch]
    print(f"| part ({args.batch:,} texts, device {args.device}) | ms |\n|---|---:|")
    for name, ms in profile(clf, texts, args.device):
        print(f"| {name} | {ms:.1f} |")
    gap, agree = parity(clf, texts[:300], args.device)
    print(f"\nnumpy against {args.device} fused scores over 300 texts: largest difference {gap:.4f}, "
          f"same top code {agree:.3f}")


if __name__ == "__main__":
    main()
