"""The epoch sampler over a sampling index (numpy): deterministic batches of (anchor, positive, K
negatives) per (seed, epoch), in either mix mode (curricula.mix_plan). Training on a GPU draws the same
way on the device (curricula.torch_sampler)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from naics_pipeline.curricula.mix_plan import PAIR_UNIT, UNIT, epoch_weights_fixed
from naics_pipeline.curricula.sampling_index import SamplingIndex


@dataclass
class Batch:
    anchor: np.ndarray      # (B,) code index
    positive: np.ndarray    # (B,)
    negatives: np.ndarray   # (B, K)
    hardness: np.ndarray    # (B, K) true hardness of each negative



class Sampler:
    """Deterministic per (seed, epoch): yields Batch objects. per_pair mode covers every pair once per
    epoch; global mode draws as many pairs, weighted by the buckets they can supply."""

    def __init__(self, index: SamplingIndex, batch_size: int = 1024, seed: int = 0,
                 pair_ids: np.ndarray | None = None, mode: str | None = None):
        self.index = index
        self.batch_size = batch_size
        self.seed = seed
        self.mode = mode or index.mix
        self.pair_ids = np.arange(len(index)) if pair_ids is None else np.asarray(pair_ids)
        # Everything that depends on the pair alone is computed once per index, not per batch.
        weights, self.takes, self._bounds = index.plan(self.mode)
        self._cum_weights = epoch_weights_fixed(weights[self.pair_ids]) if self.mode == "global" else None
        # Whole takes (per_pair mode): the row offset cannot change them, skip drawing it.
        self._cuts = self._bounds // UNIT if not (self._bounds % UNIT).any() else None

    def __len__(self) -> int:
        return -(-len(self.pair_ids) // self.batch_size)

    def epoch_order(self, rng: np.random.Generator) -> np.ndarray:
        """The epoch's pair ids: a permutation (per_pair), or len(pair_ids) weighted draws (global)."""
        n = len(self.pair_ids)
        if self._cum_weights is None:
            return self.pair_ids[rng.permutation(n)]
        ticks = int(rng.integers(0, PAIR_UNIT)) + np.arange(n, dtype=np.int64) * PAIR_UNIT
        drawn = self.pair_ids[np.searchsorted(self._cum_weights, ticks, side="right")]
        return drawn[rng.permutation(n)]

    def epoch(self, epoch: int):
        rng = np.random.default_rng([self.seed, epoch])
        order = self.epoch_order(rng)
        for i in range(0, len(order), self.batch_size):
            yield self.batch(order[i:i + self.batch_size], rng)

    def batch(self, pids: np.ndarray, rng: np.random.Generator) -> Batch:
        ix = self.index
        b, k = len(pids), ix.k
        # Takes per bucket: the pair's fixed-point bounds rounded by one offset per row, as (B, 9) cuts
        # ceil((bound - u) / UNIT). (np.take: numpy's row gathers through [] are many times slower.)
        if self._cuts is not None:
            cuts = np.take(self._cuts, pids, axis=0)
        else:
            cuts = -((rng.integers(0, UNIT, size=(b, 1)) - np.take(self._bounds, pids, axis=0)) // UNIT)
        counts = np.diff(cuts, axis=1).ravel()                           # (B*8,) h = 8..1 per row
        # Flat slots, row-major, hardest bucket first: every row's takes sum to K.
        cell = np.repeat(np.arange(b * 8), counts)                       # (B*K,) which (row, bucket)
        row, h = cell >> 3, 8 - (cell & 7)
        j = np.arange(b * k) - row * k - np.repeat(cuts[:, :8].ravel(), counts)
        t = counts[cell]
        # What each slot reads (candidates, start in flat, skip keys): B rows, then local picks.
        slot = np.take(np.take(ix.slot_table, pids, axis=0).reshape(b * 9, 4), row * 9 + h, axis=0)
        n, base, first, skips = slot[:, 0], slot[:, 1], slot[:, 2], slot[:, 3]
        # Stratified draw: one position from each of t equal slices of the n candidates, so the
        # t draws are distinct and O(t) whatever n is.
        lo, hi = j * n // t, (j + 1) * n // t
        pos = lo + np.minimum((rng.random(b * k) * (hi - lo)).astype(np.int64), np.maximum(hi - lo - 1, 0))
        skipped = np.flatnonzero(skips)
        if len(skipped):   # positions past the pair's excluded codes (the slots' buckets are 1..7)
            at = pos[skipped]
            key = (pids[row[skipped]] * 8 + h[skipped] - 1) * ix.span + at
            pos[skipped] = at + ix.count_up_to(key, first[skipped], skips[skipped])
        neg = ix.flat[base + pos].astype(np.int64)
        return Batch(ix.anchor[pids], ix.positive[pids], neg.reshape(b, k), h.astype(np.int8).reshape(b, k))
