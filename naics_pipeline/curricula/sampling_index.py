"""A curriculum's sampling index, loaded into numpy arrays (`SamplingIndex`).

Index layout (a folder of Parquet files + meta.json):
- pairs:   the filtered (anchor, positive) pairs, each pointing at a candidate group and at its own
           hardness-8 candidates (read from the triplet table's hardness=8 partition);
- groups:  for hardness 2..7 the candidates of (a, p) depend only on (a, d(a, p)): the codes of a's
           sector at distance d(a, p) + diff. Pairs with the same anchor and positive distance share one
           group: CSR offsets into group_negatives, one range per hardness 2..7;
- hardness 1 (another sector): at load, one list per sector of every other sector's codes;
- skips:   per pair and bucket 1..7, the positions of the codes that a or p excludes (they are the
           pair's hardness 8). A draw indexes the bucket with those positions skipped, so every bucket's
           candidate set is exact and the buckets are disjoint: no redraw, no relabelling.
Every bucket of every pair is a range of one flat array once loaded. Drawing K negatives for a pair
is O(K): a few array lookups, vectorized over a batch.
The builder is curricula.index_builder; the epoch sampler curricula.sampler.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from naics_pipeline.curricula.config import MIX_MODES
from naics_pipeline.curricula.mix_plan import (
    SamplingError,
    capped_supply,
    cumulative_bounds,
    distinct_rows,
    fallback_takes,
    fit_bucket_weights,
    global_plan,
)

HARDNESS = range(1, 9)
INDEX_VERSION = 4  # 4: held-out exclusion links are never positives; 3: exact, disjoint candidate sets, mix modes


def _col(path: Path, name: str) -> np.ndarray:
    return pq.read_table(path, columns=[name]).column(name).to_numpy()


class SamplingIndex:
    """The index folder loaded into numpy arrays."""

    def __init__(self, folder: Path):
        folder = Path(folder)
        if not (folder / "meta.json").is_file():
            raise SamplingError(f"no sampling index at {folder}")
        self.meta = json.loads((folder / "meta.json").read_text())
        if self.meta.get("version") != INDEX_VERSION:
            raise SamplingError(f"sampling index at {folder} has version {self.meta.get('version')}, "
                                f"this code reads {INDEX_VERSION}: rematerialize it")
        self.k = int(self.meta["curriculum"]["k_negatives"])
        self.mix = self.meta.get("mix", "per_pair")
        self.allocation = np.zeros(9, np.int64)
        for h, n in self.meta["allocation"].items():
            self.allocation[int(h)] = n
        self.requested = np.zeros(9)
        for h, v in self.meta["curriculum"]["bucket_percentages"].items():
            self.requested[int(h)] = v
        p = folder / "pairs.parquet"
        self.anchor = _col(p, "anchor").astype(np.int64)
        self.positive = _col(p, "positive").astype(np.int64)
        self.positive_distance = _col(p, "positive_distance").astype(np.float32)
        self.group = _col(p, "grp").astype(np.int64)
        x8_start = _col(p, "x8_start").astype(np.int64)
        x8_count = _col(p, "x8_count").astype(np.int64)
        g = pq.read_table(folder / "groups.parquet")
        group_offsets = np.stack([g.column(f"o{j}").to_numpy() for j in range(2, 9)], axis=1)
        group_negatives = _col(folder / "group_negatives.parquet", "negative").astype(np.int64)
        self.pair_exclusions = _col(folder / "pair_exclusions.parquet", "negative").astype(np.int64)
        sector = _col(folder / "codes.parquet", "sector").astype(np.int64)
        self.n_codes = len(sector)
        self.span = self.n_codes + 1
        # Bucket 1 of an anchor is the codes of every other sector in by-sector order: one list per sector.
        by_sector = np.argsort(sector, kind="stable")
        counts = np.bincount(sector)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        other_lists = [np.concatenate([by_sector[:s], by_sector[s + c:]]) for s, c in zip(starts, counts)]
        other_start = np.concatenate([[0], np.cumsum([len(o) for o in other_lists])[:-1]])
        # Every bucket reads one flat array: group candidates (2..7), the pairs' hardness-8 candidates,
        # then the other-sector lists (1).
        self.flat = np.concatenate([group_negatives, self.pair_exclusions, *other_lists, [0]]).astype(np.uint16)
        self.skip_keys = _col(folder / "pair_skips.parquet", "key").astype(np.int64)
        n = len(self.anchor)
        segment_counts = np.bincount(self.skip_keys // self.span, minlength=n * 8).reshape(n, 8)
        # What a slot reads, one row per pair, four values per bucket h (column 0 unused): the bucket's
        # candidate count, its start in `flat`, where its skipped positions start in skip_keys and
        # how many there are (h <= 7). `avail`, `base`, `skip_start`, `skip_count` are views of it.
        self.slot_table = np.zeros((n, 9, 4), np.int32)
        self.avail, self.base, self.skip_start, self.skip_count = (self.slot_table[:, :, i] for i in range(4))
        self.skip_count[:, 1:] = segment_counts
        self.skip_start[:, 1:] = (np.cumsum(segment_counts.ravel()) - segment_counts.ravel()).reshape(n, 8)
        off = group_offsets[self.group]
        self.avail[:, 1] = self.n_codes - counts[sector[self.anchor]]
        self.avail[:, 2:8] = off[:, 1:] - off[:, :-1]
        self.avail[:, 8] = x8_count
        self.avail -= self.skip_count
        self.base[:, 1] = len(group_negatives) + len(self.pair_exclusions) + other_start[sector[self.anchor]]
        self.base[:, 2:8] = off[:, :6]
        self.base[:, 8] = len(group_negatives) + x8_start
        self.slot_table = self.slot_table.reshape(n, 36)
        longest = int(segment_counts.max()) if segment_counts.size else 0
        self.search_steps = int(np.ceil(np.log2(longest + 1)))
        self.skip_keys_padded = np.append(self.skip_keys, np.iinfo(np.int64).max)   # mid may equal len(keys)
        ex = pq.read_table(folder / "exclusions.parquet")
        self.exclusions = {k: ex.column(k).to_numpy().astype(np.int64) for k in ("code", "excluded")}
        self._plans: dict[str, tuple] = {}

    def __len__(self) -> int:
        return len(self.anchor)

    def available(self, pids: np.ndarray) -> np.ndarray:
        """(B, 9) candidate counts per hardness (column 0 unused), exclusions already removed."""
        return self.avail[pids].astype(np.int64)

    def candidate_totals(self) -> dict[int, int]:
        return {h: int(self.avail[:, h].sum(dtype=np.int64)) for h in HARDNESS}

    @functools.cached_property
    def bucket_weights(self) -> np.ndarray:
        """Global mode's fitted bucket weights (from meta.json when the build stored them)."""
        stored = self.meta.get("bucket_weights")
        if stored is not None:
            out = np.zeros(9)
            for h, v in stored.items():
                out[int(h)] = v
            return out
        return fit_bucket_weights(self.avail, self.requested, self.k)[0]

    def plan(self, mode: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(pair draw weights (P,), expected takes (P, 9), fixed-point bounds (P, 9)) for a mix mode,
        computed once per index and shared by every sampler over it."""
        if mode not in MIX_MODES:
            raise SamplingError(f"unknown mix mode {mode!r} (allowed: {', '.join(MIX_MODES)})")
        if mode not in self._plans:
            avail = self.available(np.arange(len(self)))
            rows, inverse, _ = distinct_rows(avail, self.k)
            if mode == "per_pair":
                weights, takes = np.ones(len(rows)), fallback_takes(self.allocation, rows).astype(np.float64)
            else:
                supply = capped_supply(avail, self.requested, self.k)
                weights, takes = global_plan(rows, self.requested, self.k, self.bucket_weights, supply)
            bounds = cumulative_bounds(takes, rows, self.k)
            self._plans[mode] = weights[inverse], takes[inverse], bounds[inverse]
        return self._plans[mode]

    def positions(self, pids: np.ndarray, h: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """Raw positions in each bucket's list of the pos-th allowed candidate (skips excluded codes)."""
        seg = pids * 8 + h - 1
        found = np.searchsorted(self.skip_keys, seg * self.span + pos, side="right")
        return pos + np.where(h <= 7, found - self.skip_start[pids, h], 0)

    def count_up_to(self, key: np.ndarray, first: np.ndarray, count: np.ndarray) -> np.ndarray:
        """How many of skip_keys[first:first + count] are <= key, per element: a binary search bounded
        to each segment (at most 17 long on the 2022 data, so 5 steps of gathers into a few MB, where a
        searchsorted over all keys walks 19 levels)."""
        lo, hi = first.astype(np.int64), first + count.astype(np.int64)
        for _ in range(self.search_steps):
            mid = (lo + hi) >> 1
            right = (mid < hi) & (self.skip_keys_padded[mid] <= key)
            lo, hi = np.where(right, mid + 1, lo), np.where(right, hi, mid)
        return lo - first

    def resolve(self, pids: np.ndarray, h: np.ndarray, raw: np.ndarray) -> np.ndarray:
        """Code at raw position `raw` of bucket h of each pair."""
        return self.flat[self.base[pids, h] + raw].astype(np.int64)

    def candidates(self, pid: int, h: int) -> np.ndarray:
        """Every candidate of bucket h for one pair, in draw order (the sampler's own mapping)."""
        n = int(self.avail[pid, h])
        pids, hs = np.full(n, pid), np.full(n, h)
        return self.resolve(pids, hs, self.positions(pids, hs, np.arange(n)))


