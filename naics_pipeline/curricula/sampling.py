"""Per-curriculum sampling index and the epoch sampler that training reads.

Index layout (a folder of Parquet files + meta.json):
- pairs:   the filtered (anchor, positive) pairs, each pointing at a candidate group and at its own
           hardness-8 candidates (read from the triplet table's hardness=8 partition);
- groups:  for hardness 2..7 the candidates of (a, p) depend only on (a, d(a, p)): the codes of a's
           sector at distance d(a, p) + diff. Pairs with the same anchor and positive distance share one
           group: CSR offsets into group_negatives, one range per hardness 2..7;
- hardness 1 (another sector) is drawn from the codes sorted by sector, skipping a's own sector;
- exclusions: (code, excluded code) pairs; a drawn negative excluded by a or p is hardness 8.
Drawing K negatives for a pair is O(K): a few array lookups, vectorized over a batch.
"""
from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from naics_pipeline.curricula.config import Curriculum
from naics_pipeline.data.descriptions import exclusion_pairs
from naics_pipeline.storage import atomic_path

HARDNESS = range(1, 9)
INDEX_VERSION = 2  # 2: exclusion links are never positives


class SamplingError(ValueError):
    pass


# ---------------------------------------------------------------------------------------------
# Building

def _hardness_sql() -> str:
    from naics_pipeline.data.triplets import HARDNESS_SQL  # imports duckdb

    return HARDNESS_SQL


def _sql_num(v):
    return "NULL" if v is None else repr(float(v))


def build_index(curriculum: Curriculum, descriptions: pa.Table, distances: Path, triplets: Path,
                target: Path, seed: int = 0) -> dict:
    """Filter pairs, group candidates, write the index folder atomically; returns build stats."""
    import duckdb  # only the builder needs it; training machines read the index with pyarrow alone

    t0 = time.perf_counter()
    c = curriculum
    con = duckdb.connect(":memory:")
    con.execute("SET preserve_insertion_order=false")
    codes = descriptions.select(["index", "level", "sector"])
    sectors = sorted(set(codes.column("sector").to_pylist()))
    sector_id = np.array([sectors.index(s) for s in codes.column("sector").to_pylist()], np.uint16)
    exclusions = exclusion_pairs(descriptions)
    con.register("codes", pa.table({"idx": codes.column("index"), "level": codes.column("level")}))
    con.register("excl", exclusions)
    # Exclusion links either way round: a plain equi-join keeps the positive filter a hash anti-join.
    con.execute("CREATE TEMP TABLE excl_both AS SELECT code, excluded FROM excl "
                "UNION SELECT excluded, code FROM excl")
    con.execute(f"CREATE TEMP TABLE dist AS SELECT a, b, (distance * 2)::UTINYINT AS d2, unrelated "
                f"FROM read_parquet('{distances}') WHERE NOT unrelated")
    levels = ", ".join(str(v) for v in c.positive_levels)
    dmin, dmax = c.positive_distance_min, c.positive_distance_max
    limit = f"QUALIFY row_number() OVER (PARTITION BY d.a ORDER BY hash(d.a, d.b, {int(seed)})) <= {c.max_positives}" \
        if c.max_positives else ""
    con.execute(f"""CREATE TEMP TABLE pairs0 AS
        SELECT d.a AS anchor, d.b AS positive, d.d2 FROM dist d JOIN codes k ON k.idx = d.b
        WHERE k.level IN ({levels})
          AND ({_sql_num(dmin)} IS NULL OR d.d2 > 2 * {_sql_num(dmin)})
          AND ({_sql_num(dmax)} IS NULL OR d.d2 <= 2 * {_sql_num(dmax)})
          -- An exclusion link, either way round, is never a positive: it is hardness 8 material.
          AND NOT EXISTS (SELECT 1 FROM excl_both e WHERE e.code = d.a AND e.excluded = d.b) {limit}""")
    con.execute("""CREATE TEMP TABLE groups AS
        SELECT (row_number() OVER (ORDER BY anchor, d2) - 1)::INT AS grp, anchor, d2
        FROM (SELECT DISTINCT anchor, d2 FROM pairs0)""")
    # In-sector candidates of every hardness 2..7 (fallback may reach levels the curriculum did not
    # ask for), without the anchor's own exclusions (those are hardness 8).
    cand = con.sql(f"""
        SELECT p.grp, ({_hardness_sql()})::UTINYINT AS h, n.b AS negative
        FROM groups p JOIN dist n ON n.a = p.anchor AND n.d2 > p.d2
        WHERE NOT EXISTS (SELECT 1 FROM excl e WHERE e.code = p.anchor AND e.excluded = n.b)
        ORDER BY p.grp, h, negative""").to_arrow_table()
    n_groups = con.execute("SELECT count(*) FROM groups").fetchall()[0][0]
    grp, h = cand.column("grp").to_numpy(), cand.column("h").to_numpy()
    offsets = np.zeros((n_groups, 7), np.int64)  # start of h=2..7, then the end
    key = grp.astype(np.int64) * 8 + h
    for j, hh in enumerate(range(2, 9)):
        offsets[:, j] = np.searchsorted(key, np.arange(n_groups, dtype=np.int64) * 8 + hh)
    pairs = con.sql("""
        SELECT p.anchor, p.positive, (p.d2 / 2)::FLOAT AS positive_distance, g.grp
        FROM pairs0 p JOIN groups g ON g.anchor = p.anchor AND g.d2 = p.d2
        ORDER BY p.anchor, p.positive""").to_arrow_table()
    if pairs.num_rows == 0:
        raise SamplingError(f"curriculum {c.name}: no (anchor, positive) pair passes positive_levels="
                            f"{list(c.positive_levels)}, distance ({dmin}, {dmax}]")
    con.register("pairs_arrow", pairs)
    x8 = con.sql(f"""
        SELECT p.pid, t.negative FROM
          (SELECT row_number() OVER (ORDER BY anchor, positive) - 1 AS pid, anchor, positive FROM pairs_arrow) p
        JOIN read_parquet('{triplets}/hardness=8/*.parquet') t ON t.anchor = p.anchor AND t.positive = p.positive
        ORDER BY p.pid, t.negative""").to_arrow_table() if any(Path(triplets).glob("hardness=8/*.parquet")) \
        else pa.table({"pid": pa.array([], pa.int64()), "negative": pa.array([], pa.uint16())})
    x8_start = np.searchsorted(x8.column("pid").to_numpy(), np.arange(pairs.num_rows + 1))
    pairs = pairs.append_column("x8_start", pa.array(x8_start[:-1].astype(np.int64))) \
                 .append_column("x8_count", pa.array(np.diff(x8_start).astype(np.int32)))
    con.close()
    with atomic_path(Path(target)) as tmp:
        tmp.mkdir()
        pq.write_table(pairs, tmp / "pairs.parquet")
        pq.write_table(pa.table({f"o{j}": offsets[:, j - 2] for j in range(2, 9)}), tmp / "groups.parquet")
        pq.write_table(cand.select(["negative"]), tmp / "group_negatives.parquet")
        pq.write_table(x8.select(["negative"]), tmp / "pair_exclusions.parquet")
        pq.write_table(pa.table({"sector": sector_id}), tmp / "codes.parquet")
        pq.write_table(exclusions, tmp / "exclusions.parquet")
        stats = {"pairs": pairs.num_rows, "anchors": len(np.unique(pairs.column("anchor").to_numpy())),
                 "groups": int(n_groups), "group_candidates": cand.num_rows,
                 "hardness8_candidates": x8.num_rows, "build_seconds": round(time.perf_counter() - t0, 3)}
        meta = {"version": INDEX_VERSION, "curriculum": c.to_dict(),
                "allocation": {str(k): v for k, v in c.allocation().items()}, "seed": seed, "stats": stats}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    return stats


# ---------------------------------------------------------------------------------------------
# Loading and sampling

@dataclass
class Batch:
    anchor: np.ndarray      # (B,) code index
    positive: np.ndarray    # (B,)
    negatives: np.ndarray   # (B, K)
    hardness: np.ndarray    # (B, K) true hardness of each negative


def _col(path: Path, name: str) -> np.ndarray:
    return pq.read_table(path, columns=[name]).column(name).to_numpy()


class SamplingIndex:
    """The index folder loaded into numpy arrays."""

    def __init__(self, folder: Path):
        folder = Path(folder)
        if not (folder / "meta.json").is_file():
            raise SamplingError(f"no sampling index at {folder}")
        self.meta = json.loads((folder / "meta.json").read_text())
        self.k = int(self.meta["curriculum"]["k_negatives"])
        self.allocation = np.zeros(9, np.int64)
        for h, n in self.meta["allocation"].items():
            self.allocation[int(h)] = n
        p = folder / "pairs.parquet"
        self.anchor = _col(p, "anchor").astype(np.int64)
        self.positive = _col(p, "positive").astype(np.int64)
        self.group = _col(p, "grp").astype(np.int64)
        self.x8_start = _col(p, "x8_start").astype(np.int64)
        self.x8_count = _col(p, "x8_count").astype(np.int64)
        g = pq.read_table(folder / "groups.parquet")
        self.group_offsets = np.stack([g.column(f"o{j}").to_numpy() for j in range(2, 9)], axis=1)
        self.group_negatives = _col(folder / "group_negatives.parquet", "negative").astype(np.int64)
        self.pair_exclusions = _col(folder / "pair_exclusions.parquet", "negative").astype(np.int64)
        # Buckets 2..8 read one flat array: group candidates, then the pairs' hardness-8 candidates.
        self.flat = np.concatenate([self.group_negatives, self.pair_exclusions, [0]]).astype(np.uint16)
        sector = _col(folder / "codes.parquet", "sector").astype(np.int64)
        self.n_codes = len(sector)
        self.by_sector = np.argsort(sector, kind="stable").astype(np.uint16)
        counts = np.bincount(sector)
        self.sector_start = np.concatenate([[0], np.cumsum(counts)[:-1]])[sector[self.anchor]]
        self.sector_size = counts[sector[self.anchor]]
        ex = pq.read_table(folder / "exclusions.parquet")
        self.exclusions = {k: ex.column(k).to_numpy().astype(np.int64) for k in ("code", "excluded")}
        self.exclusion_keys = np.sort(self.exclusions["code"] * self.n_codes + self.exclusions["excluded"])
        has_exclusions = np.zeros(self.n_codes, bool)
        has_exclusions[self.exclusions["code"]] = True
        # Only pairs whose anchor or positive excludes something need the exclusion test.
        self.pair_has_exclusions = has_exclusions[self.anchor] | has_exclusions[self.positive]

    def __len__(self) -> int:
        return len(self.anchor)

    def available(self, pids: np.ndarray) -> np.ndarray:
        """(B, 9) candidate counts per hardness (column 0 unused)."""
        out = np.zeros((len(pids), 9), np.int64)
        out[:, 1] = self.n_codes - self.sector_size[pids]
        off = self.group_offsets[self.group[pids]]
        out[:, 2:8] = off[:, 1:] - off[:, :-1]
        out[:, 8] = self.x8_count[pids]
        return out

    def bases(self, pids: np.ndarray) -> np.ndarray:
        """(B, 9) start of each bucket's candidates in `flat` (h >= 2)."""
        out = np.zeros((len(pids), 9), np.int64)
        out[:, 2:8] = self.group_offsets[self.group[pids], :6]
        out[:, 8] = len(self.group_negatives) + self.x8_start[pids]
        return out

    @functools.cached_property
    def plan(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per pair, computed once and shared by every Sampler over this index: draws per hardness
        after fallback (P, 9), candidates per hardness as float (P, 9), bucket starts in `flat` (P, 9)."""
        all_ids = np.arange(len(self))
        avail = self.available(all_ids)
        take = fallback_takes(self.allocation, avail).astype(np.int32)
        return take, avail.astype(np.float64), self.bases(all_ids).astype(np.int32)

    def candidate_totals(self) -> dict[int, int]:
        avail = self.available(np.arange(len(self)))
        return {h: int(avail[:, h].sum()) for h in HARDNESS}

    def excluded(self, codes: np.ndarray, negatives: np.ndarray) -> np.ndarray:
        if len(self.exclusion_keys) == 0:
            return np.zeros(negatives.shape, bool)
        keys = codes * self.n_codes + negatives
        pos = np.searchsorted(self.exclusion_keys, keys).clip(max=len(self.exclusion_keys) - 1)
        return self.exclusion_keys[pos] == keys


def fallback_takes(allocation: np.ndarray, avail: np.ndarray) -> np.ndarray:
    """(B, 9) draws per hardness: each bucket's shortfall moves to the next easier level (8->7->...->1)."""
    take = np.zeros_like(avail)
    carry = np.zeros(len(avail), np.int64)
    for h in range(8, 0, -1):
        want = allocation[h] + carry
        take[:, h] = want if h == 1 else np.minimum(want, avail[:, h])
        carry = want - take[:, h]
    return take


class Sampler:
    """Deterministic per (seed, epoch): yields Batch objects covering every pair once per epoch."""

    def __init__(self, index: SamplingIndex, batch_size: int = 1024, seed: int = 0,
                 pair_ids: np.ndarray | None = None):
        self.index = index
        self.batch_size = batch_size
        self.seed = seed
        self.pair_ids = np.arange(len(index)) if pair_ids is None else np.asarray(pair_ids)
        self.fallback_pairs = np.zeros(9, np.int64)   # pairs whose bucket h came up short
        self.shortfall = np.zeros(9, np.int64)        # negatives moved away from bucket h
        # Everything that depends on the pair alone is computed once per index, not per batch.
        self._take, self._avail, self._base = index.plan

    def __len__(self) -> int:
        return -(-len(self.pair_ids) // self.batch_size)

    def epoch(self, epoch: int):
        rng = np.random.default_rng([self.seed, epoch])
        order = self.pair_ids[rng.permutation(len(self.pair_ids))]
        for i in range(0, len(order), self.batch_size):
            yield self.batch(order[i:i + self.batch_size], rng)

    def batch(self, pids: np.ndarray, rng: np.random.Generator) -> Batch:
        ix = self.index
        b, k = len(pids), ix.k
        take = self._take[pids]
        want = ix.allocation[1:]
        self.fallback_pairs[1:] += (take[:, 1:] < want).sum(0)
        self.shortfall[1:] += np.maximum(want - take[:, 1:], 0).sum(0)
        # Flat slots, row-major, hardest bucket first: every row's takes sum to K.
        counts = take[:, :0:-1].ravel()                                # (B*8,) h = 8..1 per row
        cell = np.repeat(np.arange(b * 8), counts)                     # (B*K,) which (row, bucket)
        row, h = cell >> 3, 8 - (cell & 7)
        j = np.arange(b * k) - np.repeat(np.cumsum(counts) - counts, counts)
        t = counts[cell].astype(np.float64)
        # Per-pair values are gathered once per row (B random reads), then expanded locally.
        rc = row * 9 + h
        n = self._avail[pids].ravel()[rc]
        # Stratified draw: one position from each of t equal slices of the n candidates, so the
        # t draws are distinct and O(t) whatever n is.
        # (float division of exact integers < 2**31: floor is exact since the gap to the next
        # integer is at least 1/t.)
        step = n / t
        lo = np.floor(j * step)
        pos = (lo + np.floor(rng.random(b * k) * (np.floor((j + 1) * step) - lo))).astype(np.int64)
        base = self._base[pids].ravel()[rc]
        start, size = ix.sector_start[pids][row], ix.sector_size[pids][row]
        neg = self._resolve(h, pos, base, start, size)
        label = h.astype(np.int8)
        flagged = ix.pair_has_exclusions[pids]
        if flagged.any():
            self._reject_excluded(pids, row, h, n, pos, base, start, size, neg, label, flagged, rng)
        return Batch(ix.anchor[pids], ix.positive[pids], neg.reshape(b, k), label.reshape(b, k))

    def _resolve(self, h, pos, base, start, size) -> np.ndarray:
        """Candidate at position `pos` of each slot's bucket (flat arrays, branch-free)."""
        ix = self.index
        other_sector = ix.by_sector[np.minimum(pos + size * (pos >= start), ix.n_codes - 1)]
        listed = ix.flat[np.minimum(base + pos, len(ix.flat) - 1)]
        return np.where(h == 1, other_sector, listed).astype(np.int64)

    def _reject_excluded(self, pids, row, h, n, pos, base, start, size, neg, label, flagged, rng) -> None:
        """A candidate excluded by the anchor or positive is really hardness 8: redraw it from the same
        range, and label it 8 if it keeps coming back (a tiny, all-excluded range)."""
        ix = self.index
        check = np.nonzero(flagged[row] & (h != 8))[0]
        p = pids[row[check]]
        a, pos_code = ix.anchor[p], ix.positive[p]
        for attempt in range(4):
            cand = neg[check]
            bad = ix.excluded(a, cand) | ix.excluded(pos_code, cand)
            if not bad.any():
                return
            redo = check[bad]
            if attempt == 3:
                label[redo] = 8
                return
            new_pos = (rng.random(len(redo)) * n[redo]).astype(np.int64)
            neg[redo] = self._resolve(h[redo], new_pos, base[redo], start[redo], size[redo])


def simulate_epoch(index: SamplingIndex, seed: int = 0, batch_size: int = 4096) -> dict:
    """Realized hardness mix and fallbacks over one epoch."""
    sampler = Sampler(index, batch_size=batch_size, seed=seed)
    counts = np.zeros(9, np.int64)
    t = time.perf_counter()
    for batch in sampler.epoch(0):
        counts += np.bincount(batch.hardness.ravel(), minlength=9)
    seconds = time.perf_counter() - t
    total = counts.sum()
    requested = index.allocation / max(index.k, 1)
    return {
        "requested": {h: float(requested[h]) for h in HARDNESS},
        "realized": {h: float(counts[h] / total) if total else 0.0 for h in HARDNESS},
        "negatives": {h: int(counts[h]) for h in HARDNESS},
        "fallback_pairs": {h: int(sampler.fallback_pairs[h]) for h in HARDNESS},
        "shortfall": {h: int(sampler.shortfall[h]) for h in HARDNESS},
        "samples_per_second": len(index) / seconds if seconds else 0.0,
    }
