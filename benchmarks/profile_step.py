"""Where a stage-3 training step's time goes: sampling, host->device copy, MoE forward, loss, backward,
optimizer. Prints one table.

Two measurements per path, over the same steps (batch 4,096 pairs, K = 16, bf16 autocast on a GPU):
- per phase: a CUDA event pair around each phase and a synchronize after every step, so each phase's
  time is its own (the phases cannot overlap: this is attribution, not throughput);
- the step rate with no synchronize until the end (what training sees, CPU and GPU overlapping).

Paths: `host` draws the batch with the numpy sampler and copies it to the device (the pipeline before
issue 13); `device` draws it on the device with the torch sampler (the pipeline since). Run the host
path from an older checkout with `--path host` and PYTHONPATH pointing at it.

    python benchmarks/profile_step.py --root DIR --path device [--steps 200]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

sys.path.append(str(Path(__file__).resolve().parents[1]))  # after PYTHONPATH: an older checkout can be profiled

PHASES = ["sampling", "host->device copy", "MoE forward", "loss", "backward", "optimizer"]


def _imports():
    """The pipeline's modules, from this checkout's layout or an older one's (the profile compares checkouts)."""
    try:
        from naics_pipeline.curricula.sampler import Sampler
        from naics_pipeline.curricula.sampling_index import SamplingIndex
        from naics_pipeline.encoders import TextEmbeddings
        from naics_pipeline.training.evaluation import exclusion_references
        from naics_pipeline.training.losses import exclusion_hinge, info_nce
        from naics_pipeline.training.model import ModelConfig, NaicsEmbedder
        from naics_pipeline.training.module import exclusion_tensors
    except ImportError:
        try:
            from naics_pipeline.curricula.sampling import Sampler, SamplingIndex
            from naics_pipeline.encoders import TextEmbeddings
            from naics_pipeline.training.evaluation import exclusion_references
            from naics_pipeline.training.model import ModelConfig, NaicsEmbedder, exclusion_hinge, info_nce
            from naics_pipeline.training.module import exclusion_tensors
        except ImportError:
            from naics_pipeline.encoders import TextEmbeddings
            from naics_pipeline.evaluation import exclusion_references
            from naics_pipeline.model import ModelConfig, NaicsEmbedder, exclusion_hinge, info_nce
            from naics_pipeline.sampling import Sampler, SamplingIndex
            from naics_pipeline.training import exclusion_tensors
    return (Sampler, SamplingIndex, TextEmbeddings, exclusion_references, ModelConfig, NaicsEmbedder,
            exclusion_hinge, info_nce, exclusion_tensors)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True, help="prepared tables (bench_training.py --prepare)")
    ap.add_argument("--curriculum", default="03_stage_hard")
    ap.add_argument("--index", default=None, help="the sampling index folder (default ROOT/sampling_index/CURRICULUM)")
    ap.add_argument("--path", choices=["host", "device"], default="device")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--graph", action="store_true",
                    help="forward + loss + backward replayed as CUDA graphs (torch.cuda.make_graphed_callables)")
    ap.add_argument("--ops", type=int, default=0,
                    help="also print the N ops that take most device time (torch.profiler)")
    args = ap.parse_args()
    (Sampler, SamplingIndex, TextEmbeddings, exclusion_references, ModelConfig, NaicsEmbedder, exclusion_hinge,
     info_nce, exclusion_tensors) = _imports()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    root = Path(args.root)
    desc = pq.read_table(root / "naics_descriptions.parquet")
    emb = TextEmbeddings.load(root / "text_embeddings.npz")
    index = SamplingIndex(Path(args.index) if args.index else root / "sampling_index" / args.curriculum)
    cfg = ModelConfig()
    torch.manual_seed(0)
    model = NaicsEmbedder(cfg).to(dev).train()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01, fused=dev.type == "cuda")
    channels = torch.as_tensor(emb.channels, device=dev)
    present = torch.as_tensor(emb.present, device=dev)
    levels = torch.as_tensor(desc.column("level").to_numpy().astype(np.int64), device=dev)
    links = exclusion_references(desc)
    ex = {k: torch.as_tensor(v, device=dev) for k, v in exclusion_tensors(links, np.ones(len(links[0]), bool)).items()}
    b = args.batch_size
    if args.path == "host":
        sampler, rng = Sampler(index, batch_size=b, seed=0), np.random.default_rng(0)
        order = rng.permutation(len(index))

        def draw(i):
            batch = sampler.batch(order[(i * b) % (len(order) - b):][:b], rng)
            return batch.anchor, batch.positive, batch.negatives

        def to_device(arrays):
            return [torch.from_numpy(a).to(dev) for a in arrays]
    else:
        from naics_pipeline.curricula.torch_sampler import TorchSampler

        sampler = TorchSampler(index, dev)
        order = torch.as_tensor(np.random.default_rng(0).permutation(len(index)), device=dev)
        gen = torch.Generator(device=dev).manual_seed(0)

        def draw(i):
            out = sampler.batch(order[(i * b) % (len(order) - b):][:b], gen)
            return out[0], out[1], out[2]

        def to_device(tensors):
            return tensors

    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")

    def eager_loss(a, p, n, mark=lambda k: None):
        with autocast:
            points, lb, _ = model(channels, present, levels)
        mark(3)
        loss = info_nce(points, a, p, n, c=cfg.curvature, temperature=cfg.temperature) + cfg.load_balancing_coef * lb
        return loss + exclusion_hinge(points, ex["ex_code"], ex["ex_excluded"], ex["ex_ref"], ex["ex_mask"],
                                      c=cfg.curvature, margin=0.1)

    if args.graph:
        # The pipeline's own graphed step (training/cuda_graphs.py) over a module that owns `model`.
        from naics_pipeline.training.cuda_graphs import GraphedTrainLoss
        from naics_pipeline.training.module import NaicsContrastive

        owner = NaicsContrastive(cfg.to_dict(), 2e-3, 0.01, 0.05, emb.channels, emb.present,
                                 levels.cpu().numpy(), {k: v.cpu().numpy() for k, v in ex.items()},
                                 exclusion_weight=1.0, exclusion_margin=0.1).to(dev)
        owner.model = model
        graphed = GraphedTrainLoss(owner)

        def compute_loss(a, p, n):
            with autocast:
                result = graphed({"anchor": a, "positive": p, "negatives": n})
            if result is None:
                raise SystemExit("CUDA graph capture failed (see the warning above)")
            return result[0]

    def step(i, marks=None):
        def mark(k):
            if marks is not None:
                marks[k].record()
        mark(0)
        drawn = draw(i)
        mark(1)
        a, p, n = to_device(drawn)
        mark(2)
        if args.graph:
            mark(3)   # one graph: forward and loss are timed together, as "loss"
            loss = compute_loss(a, p, n)
        else:
            loss = eager_loss(a, p, n, mark)
        mark(4)
        loss.backward()
        mark(5)
        opt.step()
        opt.zero_grad(set_to_none=True)
        mark(6)

    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    for i in range(10):  # warm-up: allocator, kernels
        step(i)
    sync()
    per_phase = np.zeros(len(PHASES))
    if dev.type == "cuda":
        for i in range(args.steps):
            marks = [torch.cuda.Event(enable_timing=True) for _ in range(7)]
            step(i, marks)
            sync()
            per_phase += [marks[j].elapsed_time(marks[j + 1]) for j in range(6)]
        per_phase /= args.steps
    t = time.perf_counter()
    for i in range(args.steps):
        step(i)
    sync()
    step_ms = (time.perf_counter() - t) / args.steps * 1e3
    if args.ops:
        from torch.profiler import ProfilerActivity, profile
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
        with profile(activities=activities) as prof:
            for i in range(20):
                step(i)
            sync()
        key = "self_cuda_time_total" if dev.type == "cuda" else "self_cpu_time_total"
        print(prof.key_averages().table(sort_by=key, row_limit=args.ops, max_name_column_width=60))
    print(f"| phase ({args.path} sampling, {dev.type}{', CUDA graphs' if args.graph else ''}) | ms per step |")
    print("|---|---:|")
    for name, ms in zip(PHASES, per_phase):
        print(f"| {name} | {ms:.2f} |")
    print(f"| **sum of phases (synchronized)** | **{per_phase.sum():.2f}** |")
    print(f"| **step, unsynchronized** | **{step_ms:.2f}** ({b / step_ms * 1e3:,.0f} pairs/s) |")


if __name__ == "__main__":
    main()
