"""The hierarchy train step's forward and backward replayed as CUDA graphs.

A step embeds all 2,125 codes, gathers B x (2 + K) points and takes float64 distances: some 600 small
kernels. On an H200 the GPU ran them in 2.7 ms while Python dispatched them in about 10 ms, so the step
was bound by kernel launches, not arithmetic. Replaying the captured kernels costs one launch:
benchmarks/profile_step.py measured 10.1 ms -> 3.0 ms per 16,384-pair step (README, GPU).

torch.cuda.make_graphed_callables captures the loss of the batch tensors and its backward; the optimizer
step stays eager (fused AdamW: a few kernels). One graph per batch shape; a shape beyond MAX_SHAPES, or
any step that is not a CUDA train step, runs eagerly.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import nn

BATCH_KEYS = ("anchor", "positive", "negatives")
MAX_SHAPES = 4


class _LossOfBatch(nn.Module):
    """The train loss as a function of the batch tensors alone (what a graph can replay). It holds the
    LightningModule without registering it, so no state_dict key changes."""

    def __init__(self, owner, autocast_dtype: torch.dtype | None):
        super().__init__()
        self.model = owner.model   # the graphed module must own the parameters it trains
        object.__setattr__(self, "_owner", owner)
        self.autocast_dtype = autocast_dtype
        self.part_names: list[str] = []

    def forward(self, anchor, positive, negatives):
        owner = self._owner
        with torch.autocast("cuda", dtype=self.autocast_dtype or torch.float32,
                            enabled=self.autocast_dtype is not None, cache_enabled=False):
            points, lb, _ = owner.all_points()
        batch = {"anchor": anchor, "positive": positive, "negatives": negatives}
        loss, parts = owner.hierarchy_losses(points, lb, batch, train=True)
        self.part_names = list(parts)   # Python runs during the warm-up and capture only
        # Logged parts leave the graph detached: their buffers are overwritten by the next replay.
        return (loss, *(v.detach() for v in parts.values()))


class GraphedTrainLoss:
    """Call with a train batch: (loss, {name: value}) from a replayed graph, or None when that batch
    must run eagerly."""

    def __init__(self, owner):
        self.owner = owner
        self.graphs: dict[tuple, tuple[Callable, _LossOfBatch] | None] = {}

    def __call__(self, batch: dict) -> tuple[torch.Tensor, dict] | None:
        args = tuple(batch[k] for k in BATCH_KEYS)
        key = tuple(tuple(a.shape) for a in args)
        if key not in self.graphs:
            if len(self.graphs) >= MAX_SHAPES:
                return None
            self.graphs[key] = self._capture(args)
        if self.graphs[key] is None:
            return None
        graphed, module = self.graphs[key]
        loss, *parts = graphed(*args)
        return loss, {name: value.clone() for name, value in zip(module.part_names, parts)}

    def captured(self) -> list[tuple]:
        """The batch shapes (anchor, positive, negatives) that replay a graph."""
        return [key for key, graph in self.graphs.items() if graph is not None]

    def _capture(self, args: tuple) -> tuple[Callable, _LossOfBatch]:
        # Inside the trainer's autocast (bf16-mixed) the graph casts the same way; capture refuses
        # autocast's weight cache, so autocast is off around the capture and on inside the module.
        dtype = torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else None
        module = _LossOfBatch(self.owner, dtype)
        try:
            with torch.autocast("cuda", enabled=False, cache_enabled=False), warnings.catch_warnings():
                # The warm-up runs on a side stream; torch notes that parameters first seen on the default
                # stream now receive gradients there (a one-time synchronisation, nothing more).
                warnings.filterwarnings("ignore", message="The AccumulateGrad node's stream")
                return torch.cuda.make_graphed_callables(module, args), module
        except RuntimeError as exc:   # an op that cannot be captured: this shape trains eagerly
            warnings.warn(f"CUDA graph capture failed for batch shape {[tuple(a.shape) for a in args]}, "
                          f"training eagerly (NAICS_CUDA_GRAPHS=0 silences this): {exc}", stacklevel=2)
            return None
