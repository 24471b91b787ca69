"""Training data as a LightningDataModule: the train/val split of a sampling index's pairs and, per
step, a batch of (anchor, positive, K negatives).

The loaders yield only step numbers. The epoch's pair order and the negatives are drawn where the model
runs (`on_after_batch_transfer`), by a sampler that holds the index on that device: on a GPU nothing
crosses from the host per step and nothing waits for the GPU.
"""
from __future__ import annotations

import math

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from naics_pipeline.curricula.sampling_index import SamplingIndex


def split_pairs(index: SamplingIndex, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train/val pair ids. A seeded share of *unordered* pairs {a, p} is held out, both directions
    together: a val pair's reverse is never a training pair."""
    lo, hi = np.minimum(index.anchor, index.positive), np.maximum(index.anchor, index.positive)
    key = lo * index.n_codes + hi
    unique = np.unique(key)
    n_val = min(int(round(len(unique) * val_fraction)), len(unique) - 1) if val_fraction > 0 else 0
    held = np.random.default_rng([seed, 7919]).choice(unique, size=n_val, replace=False)
    is_val = np.isin(key, held)
    return np.nonzero(~is_val)[0], np.nonzero(is_val)[0]


class _Steps(Dataset):
    """Step numbers 0..n-1: the batch itself is drawn on the device."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


TRAIN, VAL, TEXT = 0, 1, 2
VAL_BATCH = 16384   # pairs per validation batch at least


def _seed(*parts: int) -> int:
    """A 63-bit seed derived from integers (Python's hash() of strings differs between processes)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint32).view(np.uint64)[0]
               >> np.uint64(1))


def rank_world(trainer) -> tuple[int, int]:
    return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)


class PairDataModule(L.LightningDataModule):
    """Train and validation batches of one curriculum's sampling index. Each DDP rank takes a disjoint,
    equally long shard of the epoch's permutation (equal lengths keep the ranks in step)."""

    def __init__(self, index: SamplingIndex, batch_size: int, seed: int, max_pairs_per_epoch: int | None,
                 val_fraction: float, text_count: int = 0):
        super().__init__()
        self.index, self.batch_size, self.seed = index, batch_size, seed
        self.max_pairs_per_epoch = max_pairs_per_epoch
        self.train_ids, self.val_ids = split_pairs(index, val_fraction, seed)
        self.text_count = text_count   # text-alignment stages: every training text once per epoch, too
        self.sampler = None
        self._order = self._text_order = None

    # --- sizes, the same on every rank -------------------------------------------------------------
    def pairs_per_rank(self) -> int:
        world = rank_world(self.trainer)[1]
        per_rank = len(self.train_ids) // world
        if self.max_pairs_per_epoch:
            per_rank = min(per_rank, max(self.max_pairs_per_epoch // world, 1))
        return per_rank

    def steps_per_epoch(self) -> int:
        return math.ceil(self.pairs_per_rank() / self.batch_size)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(_Steps(self.steps_per_epoch()), batch_size=None)

    def val_dataloader(self) -> DataLoader | list:
        if not len(self.val_ids):
            return []
        return DataLoader(_Steps(math.ceil(len(self.val_ids) / self.val_batch_size())), batch_size=None)

    def val_batch_size(self) -> int:
        # Each batch embeds all codes once: on the CPU (512-pair batches) stage 3's 5,386 val pairs took
        # 11 forwards per epoch. Without a backward, larger batches cost little memory.
        return max(self.batch_size, VAL_BATCH)

    # --- drawing on the device ---------------------------------------------------------------------
    def _device_state(self, device: torch.device):
        if self.sampler is None or self.sampler.device != device:
            from naics_pipeline.curricula.torch_sampler import TorchSampler

            # The curriculum's mix decides the epoch: a permutation (per_pair) or weighted draws (global).
            self.sampler = TorchSampler(self.index, device, seed=self.seed, pair_ids=self.train_ids)
            self.val_ids_t = torch.as_tensor(self.val_ids, device=device)
        return self.sampler

    def _epoch_order(self, epoch: int, device: torch.device) -> torch.Tensor:
        """This rank's pair ids for the epoch: one seeded order shared by all ranks, sharded."""
        if self._order is None or self._order[0] != (epoch, device):
            rank, world = rank_world(self.trainer)
            order = self.sampler.epoch_order(epoch, rank, world)
            self._order = ((epoch, device), order[:self.pairs_per_rank()])
        return self._order[1]

    def _generator(self, device: torch.device, epoch: int, step: int, stage: int) -> torch.Generator:
        rank = rank_world(self.trainer)[0]
        return torch.Generator(device=device).manual_seed(_seed(self.seed, stage, epoch, step, rank))

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        step = int(batch)
        device = self.trainer.strategy.root_device
        sampler = self._device_state(device)
        epoch = self.trainer.current_epoch
        if self.trainer.training:
            pids = self._epoch_order(epoch, device)[step * self.batch_size:(step + 1) * self.batch_size]
            gen = self._generator(device, epoch, step, TRAIN)
        else:
            size = self.val_batch_size()
            pids = self.val_ids_t[step * size:(step + 1) * size]
            gen = self._generator(device, 0, step, VAL)    # the same negatives every epoch
        anchor, positive, negatives, _ = sampler.batch(pids, gen)
        batch = {"anchor": anchor, "positive": positive, "negatives": negatives}
        if self.text_count and self.trainer.training:
            batch["text"] = self._text_ids(epoch, step, device)
            batch["text_generator"] = self._generator(device, epoch, step, TEXT)
        return batch

    def _text_ids(self, epoch: int, step: int, device: torch.device) -> torch.Tensor:
        """This rank's texts for the step: each rank covers its shard of the texts once per epoch."""
        rank, world = rank_world(self.trainer)
        per_step = math.ceil(self.text_count / world / self.steps_per_epoch())
        if self._text_order is None or self._text_order[0] != (epoch, device):
            gen = torch.Generator(device="cpu").manual_seed(_seed(self.seed, TEXT, epoch))
            self._text_order = ((epoch, device), torch.randperm(self.text_count, generator=gen)[rank::world].to(device))
        order = self._text_order[1]
        # Always per_step texts (wrapping around): one shape every step, never an empty batch.
        return order[(step * per_step + torch.arange(per_step, device=device)) % len(order)]

