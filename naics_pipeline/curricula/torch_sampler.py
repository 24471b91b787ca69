"""The sampling index held on a torch device, drawing batches there with no host synchronisation.

Same semantics as `sampler.Sampler` (both read `SamplingIndex.plan(mode)`): the same candidate
set per (pair, bucket) with the pair's excluded codes skipped, the same takes per bucket (per_pair:
the fallback takes; global: the fixed-point bounds rounded by one random offset per row), one
stratified position per slice of each bucket (distinct negatives), an epoch of len(pairs) pair ids
(a permutation, or global mode's weighted systematic draws), deterministic per (seed, epoch).

The hot path is fixed-shape tensor work: gathers, integer arithmetic, `searchsorted`, `randint`/`rand`
on a device `torch.Generator`. Nothing reads a tensor's value on the host (.item(), .tolist(), boolean
masks, nonzero), so on a GPU the draw queues behind the model step without stalling it.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import torch

from naics_pipeline.curricula.mix_plan import PAIR_UNIT, UNIT, epoch_weights_fixed
from naics_pipeline.curricula.sampling_index import SamplingIndex

SENTINEL = torch.iinfo(torch.int64).max  # closes skip_keys so searchsorted never sees an empty list


class TorchBatch(NamedTuple):
    """One batch, all on the device."""
    anchor: torch.Tensor      # (B,)
    positive: torch.Tensor    # (B,)
    negatives: torch.Tensor   # (B, K)
    hardness: torch.Tensor    # (B, K) int8


def _seed(*parts: int) -> int:
    """A 63-bit generator seed from (seed, epoch, ...), independent of the device."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1, np.uint64)[0] >> np.uint64(1))


class TorchSampler:
    """`TorchSampler(index, device, mode)`; `epoch_order(epoch)` -> pair ids; `batch(pids, generator)`.

    `pair_ids` restricts the epoch to some pairs (a train split); global mode then draws len(pair_ids)
    pairs among them with the index's pair weights.
    """

    def __init__(self, index: SamplingIndex, device: str | torch.device = "cpu", mode: str | None = None,
                 seed: int = 0, pair_ids: np.ndarray | None = None):
        self.index = index
        self.device = torch.device(device)
        self.mode = mode or index.mix
        self.seed = seed
        self.k = index.k
        weights, _, bounds = index.plan(self.mode)
        ids = np.arange(len(index)) if pair_ids is None else np.asarray(pair_ids, np.int64)

        def put(array, dtype=torch.int64):
            return torch.as_tensor(np.ascontiguousarray(array)).to(device=self.device, dtype=dtype)

        self.anchor, self.positive = put(index.anchor), put(index.positive)
        self.bounds = put(bounds)
        # Whole takes (per_pair mode): the row offset cannot change them, skip drawing it.
        self.cuts = put(bounds // UNIT) if not (bounds % UNIT).any() else None
        # Per pair and bucket: candidates, start in `flat`, start of its skip keys (int32 rows of 4).
        self.slot_table = put(index.slot_table.reshape(len(index), 9, 4)[:, :, :3], torch.int32)
        self.skip_keys = put(np.append(index.skip_keys, SENTINEL))
        self.flat = put(index.flat, torch.int32)
        self.pair_ids = put(ids)
        self.cum_weights = put(epoch_weights_fixed(weights[ids])) if self.mode == "global" else None
        self.ticks = torch.arange(len(ids), device=self.device, dtype=torch.int64) * PAIR_UNIT
        self.slots = torch.arange(self.k, device=self.device, dtype=torch.int64)
        self.span, self.n_flat = index.span, len(index.flat)

    def __len__(self) -> int:
        return len(self.pair_ids)

    def generator(self, epoch: int, *stream: int) -> torch.Generator:
        g = torch.Generator(device=self.device)
        g.manual_seed(_seed(self.seed, epoch, *stream))
        return g

    def epoch_order(self, epoch: int, rank: int = 0, world: int = 1,
                    generator: torch.Generator | None = None) -> torch.Tensor:
        """This rank's pair ids for the epoch: every rank draws the same order from (seed, epoch) and
        keeps an equally long, disjoint shard of it."""
        g = generator or self.generator(epoch)
        n = len(self.pair_ids)
        if self.cum_weights is None:
            drawn = self.pair_ids
        else:  # systematic sampling: the ticks u + i * PAIR_UNIT land on pairs in proportion to weight
            u = torch.randint(0, PAIR_UNIT, (1,), generator=g, device=self.device)
            drawn = self.pair_ids[torch.searchsorted(self.cum_weights, u + self.ticks, right=True)]
        order = drawn[torch.randperm(n, generator=g, device=self.device)]
        return order[rank::world][:n // world]

    def batch(self, pids: torch.Tensor, generator: torch.Generator) -> TorchBatch:
        g, k, dev = generator, self.k, self.device
        b = pids.shape[0]
        # Takes per bucket: the pair's fixed-point bounds rounded by one offset per row, as (B, 9) cuts
        # ceil((bound - u) / UNIT), h = 8..1.
        if self.cuts is not None:
            cuts = self.cuts[pids]
        else:
            offset = torch.randint(0, UNIT, (b, 1), generator=g, device=dev)
            cuts = -torch.div(offset - self.bounds[pids], UNIT, rounding_mode="floor")
        # Slot s of a row belongs to bucket column c (0: h = 8 ... 7: h = 1) when cuts[c] <= s < cuts[c+1].
        col = (cuts[:, 1:].unsqueeze(1) <= self.slots.view(1, k, 1)).sum(-1)          # (B, K)
        h = 8 - col
        start = cuts.gather(1, col)
        t = cuts.gather(1, col + 1) - start
        j = self.slots.unsqueeze(0) - start
        slot = self.slot_table[pids].long()                                                 # (B, 9, 3)
        n, base, first = (slot[:, :, i].gather(1, h) for i in range(3))
        # Stratified: one position from each of t equal slices of the n candidates (distinct draws).
        lo = torch.div(j * n, t, rounding_mode="floor")
        width = torch.div((j + 1) * n, t, rounding_mode="floor") - lo
        r = torch.rand((b, k), generator=g, device=dev)
        pos = lo + torch.minimum((r * width).long(), (width - 1).clamp(min=0))
        # Skip the codes that the anchor or positive excludes (buckets 1..7; bucket 8 has no keys).
        seg = pids.unsqueeze(1) * 8 + h - 1
        pos = pos + torch.searchsorted(self.skip_keys, seg * self.span + pos, right=True) - first
        negatives = self.flat[(base + pos).clamp(max=self.n_flat - 1)].long()
        return TorchBatch(self.anchor[pids], self.positive[pids], negatives, h.to(torch.int8))

    def epoch(self, epoch: int, batch_size: int, rank: int = 0, world: int = 1,
              drop_last: bool = False) -> Iterator[TorchBatch]:
        """The rank's batches of one epoch (the order from (seed, epoch), the draws from (seed, epoch, rank))."""
        order = self.epoch_order(epoch, rank, world)
        g = self.generator(epoch, rank + 1)
        stop = len(order) - len(order) % batch_size if drop_last else len(order)
        for i in range(0, stop, batch_size):
            yield self.batch(order[i:i + batch_size], g)
