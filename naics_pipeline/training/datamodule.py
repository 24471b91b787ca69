"""Training data: the train/val split of a sampling index's pairs and the epoch batches, as a
LightningDataModule (no dagster import)."""
from __future__ import annotations

import math

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from naics_pipeline.curricula.sampling import Sampler, SamplingIndex


def split_pairs(index: SamplingIndex, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train/val pair ids, split by anchor (a deterministic hash of the anchor's index)."""
    anchors = np.unique(index.anchor)
    n_val = max(1, int(round(len(anchors) * val_fraction))) if val_fraction > 0 else 0
    rng = np.random.default_rng([seed, 7919])
    val_anchors = rng.choice(anchors, size=min(n_val, len(anchors) - 1), replace=False) if n_val else []
    is_val = np.isin(index.anchor, val_anchors)
    return np.nonzero(~is_val)[0], np.nonzero(is_val)[0]


class PairBatches(IterableDataset):
    """Batches of (anchor, positive, K negatives) for one epoch; each DDP rank gets a disjoint,
    equally long shard of the epoch's permutation (equal lengths keep the ranks in step)."""

    def __init__(self, index: SamplingIndex, pair_ids: np.ndarray, batch_size: int, seed: int,
                 max_pairs: int | None, shuffle: bool = True):
        self.sampler = Sampler(index, batch_size=batch_size, seed=seed, pair_ids=pair_ids)
        self.pair_ids, self.batch_size, self.seed = pair_ids, batch_size, seed
        self.max_pairs, self.shuffle = max_pairs, shuffle
        self.epoch = 0

    def _rank_world(self):
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def _per_rank(self, world: int) -> int:
        per_rank = len(self.pair_ids) // world
        if self.max_pairs:
            per_rank = min(per_rank, max(self.max_pairs // world, 1))
        return per_rank

    def _shard(self, rng) -> np.ndarray:
        rank, world = self._rank_world()
        # The sampler's epoch: a permutation (per_pair mix) or weighted draws of as many pairs (global mix).
        ids = self.sampler.epoch_order(rng) if self.shuffle else self.pair_ids
        return ids[rank::world][:self._per_rank(world)]

    def __len__(self) -> int:
        return math.ceil(self._per_rank(self._rank_world()[1]) / self.batch_size)

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch if self.shuffle else 0])
        ids = self._shard(rng)
        for i in range(0, len(ids), self.batch_size):
            b = self.sampler.batch(ids[i:i + self.batch_size], rng)
            yield {"anchor": torch.from_numpy(b.anchor), "positive": torch.from_numpy(b.positive),
                   "negatives": torch.from_numpy(b.negatives)}


class PairDataModule(L.LightningDataModule):
    """Train and validation batches of one curriculum's sampling index."""

    def __init__(self, index: SamplingIndex, batch_size: int, seed: int, max_pairs_per_epoch: int | None,
                 val_fraction: float):
        super().__init__()
        self.index, self.batch_size, self.seed = index, batch_size, seed
        self.max_pairs_per_epoch = max_pairs_per_epoch
        self.train_ids, self.val_ids = split_pairs(index, val_fraction, seed)

    def train_dataloader(self) -> DataLoader:
        data = PairBatches(self.index, self.train_ids, self.batch_size, self.seed, self.max_pairs_per_epoch)
        return DataLoader(data, batch_size=None)

    def val_dataloader(self) -> DataLoader | list:
        if not len(self.val_ids):
            return []
        data = PairBatches(self.index, self.val_ids, self.batch_size, self.seed + 1, None, shuffle=False)
        return DataLoader(data, batch_size=None)
