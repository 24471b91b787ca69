"""How close MiniLM text encoding runs to this machine's matrix-multiply peak, and the cold-cache
encoding time that `make demo` cannot go below. Prints one table.

    python benchmarks/bench_encoding.py --root DIR [--sample 1000] [--onnx]

DIR holds naics_descriptions.parquet and naics_index_holdout.parquet (a materialized storage root, or
`bench_training.py --prepare DIR`). Rows:
- GEMM peak: torch's float32 matmul at the encoder's shape (tokens x 384 @ 384 x 1536), the fastest
  this CPU multiplies (the encoder is linear layers at 78% of its profile);
- one row per text group of a cold `make demo` (the code channels and held-out entries that
  text_embeddings encodes, and the index entries the text stage encodes): its texts and tokens (at
  most 128 each), a sample's encoding rate, the achieved GFLOPS, and the whole group's seconds at that
  rate and at the GEMM peak;
- with --onnx (needs onnxruntime and onnx, not dependencies of the project): the descriptions through
  ONNX Runtime, the same weights exported from torch.

A token costs 2 x 10.6M multiply-adds (MiniLM-L6's non-embedding weights), 21.2 MFLOP.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402

from naics_pipeline.encoders import CHANNELS, MiniLMEncoder, channel_texts  # noqa: E402
from naics_pipeline.training.text_alignment import TextExamples  # noqa: E402

FLOP_PER_TOKEN = 21.2e6
MAX_TOKENS = 128


def gemm_peak_gflops(tokens: int = 5120, repeats: int = 20, trials: int = 5) -> float:
    """The best of a few trials: the peak, not the average under whatever else the machine runs."""
    a, b = torch.randn(tokens, 384), torch.randn(384, 1536)
    best = 0.0
    for _ in range(trials):
        t0 = time.perf_counter()
        for _ in range(repeats):
            a @ b
        best = max(best, 2 * tokens * 384 * 1536 * repeats / (time.perf_counter() - t0) / 1e9)
    return best


def text_groups(root: Path) -> dict[str, list[str]]:
    """The distinct texts a cold `make demo` encodes, by group, each encoded once (first group wins)."""
    descriptions = pq.read_table(root / "naics_descriptions.parquet")
    rows = descriptions.select(["code", *CHANNELS]).to_pylist()
    cells, texts = channel_texts(rows)
    groups: dict[str, list[str]] = {name: [] for name in CHANNELS}
    for (_, channel), text in zip(cells, texts):
        groups[CHANNELS[channel]].append(text)
    groups["held-out entries"] = pq.read_table(root / "naics_index_holdout.parquet").column("entry").to_pylist()
    groups["index entries (text stage)"] = TextExamples.from_descriptions(descriptions).texts
    seen: set[str] = set()
    for name, group in groups.items():
        groups[name] = [t for t in dict.fromkeys(group) if t not in seen]
        seen.update(groups[name])
    return groups


def onnx_seconds(encoder: MiniLMEncoder, texts: list[str], expected: np.ndarray, path: Path) -> float:
    """Encode `texts` with the encoder's weights in ONNX Runtime (mean pooling, normalized, as the
    sentence-transformers model does); checks that the vectors match torch's (`expected`)."""
    import onnxruntime as ort

    model, tokenizer = encoder.model[0].auto_model.eval(), encoder.model.tokenizer

    class Hidden(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, ids, mask):
            return self.model(input_ids=ids, attention_mask=mask).last_hidden_state

    example = tokenizer(["an example"] * 2, return_tensors="pt", padding="max_length", max_length=16)
    axes = {"ids": {0: "b", 1: "s"}, "mask": {0: "b", 1: "s"}, "hidden": {0: "b", 1: "s"}}
    torch.onnx.export(Hidden(), (example["input_ids"], example["attention_mask"]), str(path), dynamo=False,
                      input_names=["ids", "mask"], output_names=["hidden"], dynamic_axes=axes, opset_version=17)
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    order = np.argsort([-len(t) for t in texts])
    out = np.zeros((len(texts), encoder.dim), np.float32)
    t0 = time.perf_counter()
    for start in range(0, len(texts), 64):
        idx = order[start:start + 64]
        batch = tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=MAX_TOKENS,
                          return_tensors="np")
        hidden = session.run(None, {"ids": batch["input_ids"].astype(np.int64),
                                    "mask": batch["attention_mask"].astype(np.int64)})[0]
        mask = batch["attention_mask"][..., None].astype(np.float32)
        vectors = (hidden * mask).sum(1) / mask.sum(1)
        out[idx] = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    seconds = time.perf_counter() - t0
    cosine = float((out * expected).sum(1).min())
    if cosine < 0.9999:
        raise AssertionError(f"ONNX Runtime vectors differ from torch's (min cosine {cosine:.6f})")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--sample", type=int, default=1000, help="texts timed per group (at most)")
    ap.add_argument("--onnx", action="store_true", help="also time ONNX Runtime on the descriptions sample")
    args = ap.parse_args()
    encoder = MiniLMEncoder()
    encoder.encode(["warm-up"])
    peak = gemm_peak_gflops()
    rng = np.random.default_rng(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; GEMM peak {peak:.0f} GFLOPS")
    print("| group | texts | tokens | texts/s | GFLOPS | % of peak | seconds | at peak |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    total = {"texts": 0, "tokens": 0, "seconds": 0.0, "peak": 0.0}
    timed = {}   # group -> (sample, its vectors, seconds)
    for name, texts in text_groups(Path(args.root)).items():
        lengths = np.array([min(len(ids), MAX_TOKENS) for ids in encoder.model.tokenizer(texts)["input_ids"]])
        tokens = int(lengths.sum())
        picked = rng.choice(len(texts), min(args.sample, len(texts)), replace=False)
        sample, sample_tokens = [texts[i] for i in picked], int(lengths[picked].sum())
        t0 = time.perf_counter()
        vectors = encoder.encode(sample)
        dt = time.perf_counter() - t0
        timed[name] = (sample, vectors, dt)
        gflops = sample_tokens * FLOP_PER_TOKEN / dt / 1e9
        seconds, at_peak = dt * tokens / sample_tokens, tokens * FLOP_PER_TOKEN / peak / 1e9
        for key, value in (("texts", len(texts)), ("tokens", tokens), ("seconds", seconds), ("peak", at_peak)):
            total[key] += value
        print(f"| {name} | {len(texts):,} | {tokens:,} | {len(sample) / dt:.0f} | {gflops:.0f} | "
              f"{100 * gflops / peak:.0f}% | {seconds:.0f} | {at_peak:.0f} |")
    gflops = total["tokens"] * FLOP_PER_TOKEN / total["seconds"] / 1e9
    print(f"| **all** | {total['texts']:,} | {total['tokens']:,} | | {gflops:.0f} | {100 * gflops / peak:.0f}% | "
          f"**{total['seconds']:.0f}** | **{total['peak']:.0f}** |")
    if args.onnx:
        texts, vectors, torch_seconds = timed["description"]
        with tempfile.TemporaryDirectory() as tmp:
            ort_seconds = onnx_seconds(encoder, texts, vectors, Path(tmp) / "minilm.onnx")
        print(f"\ndescriptions sample ({len(texts)}): torch {torch_seconds:.1f} s, ONNX Runtime {ort_seconds:.1f} s "
              f"({torch_seconds / ort_seconds:.2f}x), vectors equal to cosine >= 0.9999")


if __name__ == "__main__":
    main()
