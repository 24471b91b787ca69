"""Per-curriculum sampling index and the epoch sampler that training reads.

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

Two readings of bucket_percentages (the curriculum's `mix`):
- per_pair (the guide's): each pair splits K by largest remainder; a bucket short of candidates
  hands its shortfall to the next easier level (8->7->...->1). Every pair is drawn once per epoch.
- global: the shares hold over the epoch's negatives. As if each negative's bucket h were drawn with
  probability w_h and then its pair with probability proportional to the bucket-h candidates the pair
  holds (at most K): a pair is drawn with weight sum_h w_h cap(p, h) / C_h and splits its K negatives in
  proportion to those terms (never more than it holds). The bucket weights w_h are fitted so that the
  epoch's expected mix equals the request. An epoch is len(pairs) draws (systematic sampling), so
  pairs that hold rare buckets come more often and the others less.
Both are expressed as one table per pair: the expected takes per bucket, as fixed-point cumulative
bounds that a per-row random offset rounds to integers summing to K (systematic rounding).
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

from naics_pipeline.curricula.config import MIX_MODES, Curriculum
from naics_pipeline.storage import atomic_path

HARDNESS = range(1, 9)
INDEX_VERSION = 4  # 4: held-out exclusion links are never positives; 3: exact, disjoint candidate sets, mix modes
UNIT = 1 << 20        # takes per bucket in fixed point (1/UNIT of a negative)
PAIR_UNIT = 1 << 20   # epoch draws per pair in fixed point
MIX_TOLERANCE = 0.02  # global mode: realized within +-2 percentage points of the request
FIT_TOLERANCE = 1e-6


class SamplingError(ValueError):
    pass


# ---------------------------------------------------------------------------------------------
# Building

def _hardness_sql() -> str:
    from naics_pipeline.data.triplets import HARDNESS_SQL  # imports duckdb

    return HARDNESS_SQL


def _sql_num(v):
    return "NULL" if v is None else repr(float(v))


def _skip_keys(con, sector_id: np.ndarray, pair_group: np.ndarray, anchor: np.ndarray,
               offsets: np.ndarray) -> np.ndarray:
    """Sorted keys (pid * 8 + h - 1) * (n_codes + 1) + (position - i), i-th excluded position of the
    pair's bucket h: a count of keys <= (.., j) maps the j-th allowed position to its raw position."""
    n_codes = len(sector_id)
    # Buckets 2..7: the group lists already lack the anchor's exclusions; the positive's are skipped.
    grouped = con.sql("""SELECT p.pid, c.h, c.flat FROM pairs_pid p JOIN excl e ON e.code = p.positive
        JOIN cand_flat c ON c.grp = p.grp AND c.negative = e.excluded""").fetchnumpy()
    pid_g, h_g = grouped["pid"].astype(np.int64), grouped["h"].astype(np.int64)
    pos_g = grouped["flat"].astype(np.int64) - offsets[pair_group[pid_g], h_g - 2]
    # Bucket 1: codes of other sectors that the anchor or the positive excludes, at their position in
    # the by-sector order with the anchor's own sector cut out.
    other = con.sql("""SELECT p.pid, e.excluded AS n FROM pairs_pid p JOIN excl e ON e.code = p.anchor
        UNION SELECT p.pid, e.excluded FROM pairs_pid p JOIN excl e ON e.code = p.positive""").fetchnumpy()
    pid_1, code = other["pid"].astype(np.int64), other["n"].astype(np.int64)
    by_sector = np.argsort(sector_id, kind="stable")
    rank = np.empty(n_codes, np.int64)
    rank[by_sector] = np.arange(n_codes)
    counts = np.bincount(sector_id)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    a_sector = sector_id[anchor[pid_1]]
    keep = sector_id[code] != a_sector
    pid_1, code, a_sector = pid_1[keep], code[keep], a_sector[keep]
    pos_1 = rank[code] - counts[a_sector] * (rank[code] > starts[a_sector])
    seg = np.concatenate([pid_g * 8 + h_g - 1, pid_1 * 8])
    raw = np.unique(seg * (n_codes + 1) + np.concatenate([pos_g, pos_1]))   # sorted, no repeats
    seg = raw // (n_codes + 1)
    ith = np.arange(len(raw)) - np.searchsorted(seg, seg)
    return raw - ith


def build_index(curriculum: Curriculum, descriptions: pa.Table, distances: Path, triplets: Path,
                target: Path, seed: int = 0) -> dict:
    """Filter pairs, group candidates, write the index folder atomically, simulate one epoch into
    meta.json (mix, requested_mix, realized_mix, shortfalls); returns build stats."""
    import duckdb  # only the builder needs it; training machines read the index with pyarrow alone

    from naics_pipeline.data.descriptions import exclusion_pairs, held_out_exclusion_pairs  # (imports duckdb)

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
    con.register("held", held_out_exclusion_pairs(descriptions))
    # Exclusion links either way round, held-out ones too (withheld: neither exclusion nor positive);
    # a plain equi-join keeps the positive filter a hash anti-join.
    con.execute("CREATE TEMP TABLE excl_both AS SELECT code, excluded FROM excl UNION SELECT excluded, code FROM excl "
                "UNION SELECT code, excluded FROM held UNION SELECT excluded, code FROM held")
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
          -- An exclusion link, either way round, is never a positive: it is hardness 8 material (or held out).
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
    con.execute("""CREATE TEMP TABLE pairs_pid AS SELECT row_number() OVER (ORDER BY anchor, positive) - 1 AS pid,
        anchor, positive, grp FROM pairs_arrow""")
    x8 = con.sql(f"""
        SELECT p.pid, t.negative FROM pairs_pid p
        JOIN read_parquet('{triplets}/hardness=8/*.parquet') t ON t.anchor = p.anchor AND t.positive = p.positive
        ORDER BY p.pid, t.negative""").to_arrow_table() if any(Path(triplets).glob("hardness=8/*.parquet")) \
        else pa.table({"pid": pa.array([], pa.int64()), "negative": pa.array([], pa.uint16())})
    x8_start = np.searchsorted(x8.column("pid").to_numpy(), np.arange(pairs.num_rows + 1))
    pairs = pairs.append_column("x8_start", pa.array(x8_start[:-1].astype(np.int64))) \
                 .append_column("x8_count", pa.array(np.diff(x8_start).astype(np.int32)))
    con.register("cand_flat", cand.append_column("flat", pa.array(np.arange(cand.num_rows, dtype=np.int64))))
    skip_keys = _skip_keys(con, sector_id.astype(np.int64), pairs.column("grp").to_numpy().astype(np.int64),
                           pairs.column("anchor").to_numpy().astype(np.int64), offsets)
    con.close()
    with atomic_path(Path(target)) as tmp:
        tmp.mkdir()
        pq.write_table(pairs, tmp / "pairs.parquet")
        pq.write_table(pa.table({f"o{j}": offsets[:, j - 2] for j in range(2, 9)}), tmp / "groups.parquet")
        pq.write_table(cand.select(["negative"]), tmp / "group_negatives.parquet")
        pq.write_table(x8.select(["negative"]), tmp / "pair_exclusions.parquet")
        pq.write_table(pa.table({"key": skip_keys}), tmp / "pair_skips.parquet")
        pq.write_table(pa.table({"sector": sector_id}), tmp / "codes.parquet")
        pq.write_table(exclusions, tmp / "exclusions.parquet")
        stats = {"pairs": pairs.num_rows, "anchors": len(np.unique(pairs.column("anchor").to_numpy())),
                 "groups": int(n_groups), "group_candidates": cand.num_rows,
                 "hardness8_candidates": x8.num_rows, "skipped_candidates": len(skip_keys)}
        meta = {"version": INDEX_VERSION, "curriculum": c.to_dict(), "mix": c.mix,
                "allocation": {str(k): v for k, v in c.allocation().items()}, "seed": seed, "stats": stats}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        index = SamplingIndex(tmp)
        if c.mix == "global":
            meta["bucket_weights"] = {str(h): float(v) for h, v in enumerate(index.bucket_weights) if v}
        meta.update(mix_report(index, simulate_epoch(index, seed=seed)))
        stats["build_seconds"] = round(time.perf_counter() - t0, 3)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    return stats


# ---------------------------------------------------------------------------------------------
# Mix plans: expected takes per pair and bucket, for either reading of bucket_percentages

def fallback_takes(allocation: np.ndarray, avail: np.ndarray) -> np.ndarray:
    """(B, 9) draws per hardness: each bucket's shortfall moves to the next easier level (8->7->...->1)."""
    take = np.zeros_like(avail)
    carry = np.zeros(len(avail), avail.dtype)
    for h in range(8, 0, -1):
        want = allocation[h] + carry
        take[:, h] = want if h == 1 else np.minimum(want, avail[:, h])
        carry = want - take[:, h]
    return take


def fallback_flows(allocation: np.ndarray, avail: np.ndarray) -> np.ndarray:
    """(9, 9) negatives requested at bucket o (row) and drawn at bucket h (column), summed over pairs.
    Attribution: a level serves its own allocation first, then carries from harder levels, hardest
    first (the sampler only sees the totals, which equal fallback_takes)."""
    flows = np.zeros((9, 9), np.int64)
    own = np.minimum(allocation[None, :], avail)
    own[:, 1] = allocation[1]
    spare = avail - own
    for o in range(8, 1, -1):
        flows[o, o] = own[:, o].sum()
        carry = allocation[o] - own[:, o]
        for h in range(o - 1, 0, -1):
            got = carry if h == 1 else np.minimum(carry, spare[:, h])
            spare[:, h] -= got
            carry = carry - got
            flows[o, h] = got.sum()
    flows[1, 1] = own[:, 1].sum()
    return flows


def _water_fill(prio: np.ndarray, cap: np.ndarray, total: np.ndarray) -> np.ndarray:
    """Per row, takes proportional to prio, none above cap, summing to total (<= the row's cap sum)."""
    takes = np.zeros_like(prio)
    free = prio > 0
    for _ in range(prio.shape[1] + 1):
        left = total - np.where(free, 0.0, takes).sum(1)
        weight = np.where(free, prio, 0.0).sum(1)
        scale = np.divide(left, weight, out=np.zeros_like(left), where=weight > 0)
        trial = np.where(free, scale[:, None] * prio, takes)
        over = free & (trial > cap)
        takes = np.where(over, cap, trial)
        if not over.any():
            break
        free &= ~over
    return takes


def capped_supply(avail: np.ndarray, requested: np.ndarray, k: int) -> np.ndarray:
    """C_h: the bucket-h candidates the pairs hold, at most K per pair (requested buckets only)."""
    return (np.minimum(avail, k) * (requested > 0)).sum(0, dtype=np.float64)


def global_plan(avail: np.ndarray, requested: np.ndarray, k: int, weights: np.ndarray,
                supply: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pair draw weights (P,) and expected takes (P, 9) of global mode for bucket weights w_h
    (`supply`: C_h of the whole index when `avail` holds only some of its rows)."""
    cap = np.minimum(avail, k).astype(np.float64)
    cap[:, requested <= 0] = 0
    supply = cap.sum(0) if supply is None else supply
    prio = cap * np.divide(weights, supply, out=np.zeros(9), where=supply > 0)
    takes = _water_fill(prio, cap, np.minimum(cap.sum(1), k))
    # A pair whose requested buckets cannot fill K passes the rest down the fallback chain, from
    # the hardest requested bucket (the per-pair rule; only curricula without bucket 1 get here).
    left = k - takes.sum(1)
    left[left < 1e-9] = 0
    top = int(np.nonzero(requested)[0].max())
    for h in range(top, 0, -1):
        got = left if h == 1 else np.minimum(left, avail[:, h] - takes[:, h])
        takes[:, h] += got
        left = left - got
    return prio.sum(1), takes


def expected_mix(pair_weights: np.ndarray, takes: np.ndarray, k: int) -> np.ndarray:
    total = pair_weights.sum()
    return pair_weights @ takes / (k * total) if total > 0 else np.zeros(takes.shape[1])


def distinct_rows(avail: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct rows of min(avail, K) (a plan depends on nothing else), the row of each pair
    and how many pairs share each row."""
    capped = np.minimum(avail, k).astype(np.int64)
    if (k + 1) ** capped.shape[1] < 2 ** 62:   # one int64 key per row: far faster than unique(axis=0)
        keys = capped @ ((k + 1) ** np.arange(capped.shape[1], dtype=np.int64))
        _, first, inverse, count = np.unique(keys, return_index=True, return_inverse=True, return_counts=True)
        return capped[first], inverse, count
    rows, inverse, count = np.unique(capped, axis=0, return_inverse=True, return_counts=True)
    return rows, inverse.ravel(), count


def fit_bucket_weights(avail: np.ndarray, requested: np.ndarray, k: int,
                       iterations: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """Bucket weights w (9,) whose global plan's expected mix is the request (or as near as the
    candidates allow), and that mix. Multiplicative fixed point on the distinct capped rows."""
    rows, _, count = distinct_rows(avail, k)
    supply = capped_supply(avail, requested, k)
    has = supply > 0
    weights = np.where(has, requested, 0.0)
    weights /= weights.sum()

    def mix_of(weights):
        w, takes = global_plan(rows, requested, k, weights, supply)
        return expected_mix(w * count, takes, k)

    mix = mix_of(weights)
    for _ in range(iterations):
        if np.abs(np.where(has, mix - requested, 0)).max() < FIT_TOLERANCE:
            break
        ratio = np.divide(requested, mix, out=np.ones(9), where=mix > 0)
        weights = np.where(has, weights * ratio, 0.0)
        # A bucket that no weighting can fill keeps squeezing the others: floor them (finite arithmetic).
        weights = np.where(has, np.maximum(weights / weights.sum(), 1e-12 * requested), 0.0)
        weights /= weights.sum()
        mix = mix_of(weights)
    return weights, mix


def cumulative_bounds(takes: np.ndarray, avail: np.ndarray, k: int) -> np.ndarray:
    """(P, 9) int64: 0, then the running sum of the takes of h = 8, 7, ..., 1 in 1/UNIT, ending at
    K * UNIT. A row offset u in [0, UNIT) rounds them: bucket h gets floor or ceil of its take, never
    more than it holds, the row K in all (largest remainder keeps each bucket within its ceiling)."""
    exact = takes[:, :0:-1] * UNIT                      # h = 8..1
    units = np.floor(exact + 1e-6).astype(np.int64)     # snap float noise below a whole unit
    cap = np.maximum(avail[:, :0:-1], np.ceil(takes[:, :0:-1] - 1e-9)).astype(np.int64) * UNIT
    units = np.minimum(units, cap)
    deficit = k * UNIT - units.sum(1)
    if deficit.min() < 0 or deficit.max() > units.shape[1]:
        raise SamplingError(f"takes do not sum to K={k} (deficit {deficit.min()}..{deficit.max()})")
    order = np.argsort(-(exact - units) + (units >= cap) * 2, axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(units.shape[1])[None, :].repeat(len(units), 0), axis=1)
    units += rank < deficit[:, None]
    return np.concatenate([np.zeros((len(units), 1), np.int64), np.cumsum(units, axis=1)], axis=1)


def epoch_weights_fixed(weights: np.ndarray) -> np.ndarray:
    """Cumulative pair weights in 1/PAIR_UNIT of a draw: an epoch of n draws is the ticks
    u + i * PAIR_UNIT (i < n), each landing on one pair (systematic sampling)."""
    n = len(weights)
    running = np.cumsum(weights, dtype=np.float64)
    if running[-1] <= 0:
        raise SamplingError("no pair can supply any requested bucket")
    cum = np.round(running / running[-1] * (n * PAIR_UNIT)).astype(np.int64)
    cum[-1] = n * PAIR_UNIT
    return cum


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


# ---------------------------------------------------------------------------------------------
# One simulated epoch and the mix report written into meta.json

def simulate_epoch(index: SamplingIndex, seed: int = 0, batch_size: int = 4096, mode: str | None = None) -> dict:
    """Realized hardness mix, draws per pair and sampler speed over one epoch."""
    sampler = Sampler(index, batch_size=batch_size, seed=seed, mode=mode)
    counts = np.zeros(9, np.int64)
    draws = np.zeros(len(index), np.int64)
    t = time.perf_counter()
    rng = np.random.default_rng([seed, 0])
    order = sampler.epoch_order(rng)
    for i in range(0, len(order), batch_size):
        batch = sampler.batch(order[i:i + batch_size], rng)
        counts += np.bincount(batch.hardness.ravel(), minlength=9)
    seconds = time.perf_counter() - t
    np.add.at(draws, order, 1)
    total = counts.sum()
    return {"mode": sampler.mode, "negatives": counts, "draws": draws,
            "realized": counts / total if total else np.zeros(9),
            "samples_per_second": len(order) / seconds if seconds else 0.0}


def _shares(values: np.ndarray, keep) -> dict[str, float]:
    return {str(h): round(float(values[h]), 6) for h in HARDNESS if keep(h)}


def _distance_shares(index: SamplingIndex, weights: np.ndarray) -> dict[str, float]:
    d, inverse = np.unique(index.positive_distance, return_inverse=True)
    per = np.bincount(inverse, weights=weights, minlength=len(d))
    return {f"{v:g}": round(float(s), 6) for v, s in zip(d, per / per.sum())}


def mix_report(index: SamplingIndex, sim: dict) -> dict:
    """meta.json fields: mix, requested_mix, realized_mix, shortfalls (and global mode's positive shift)."""
    mode, requested, realized = sim["mode"], index.requested, sim["realized"]
    avail = index.available(np.arange(len(index)))
    out = {"mix": mode, "requested_mix": _shares(requested, lambda h: requested[h] > 0),
           "realized_mix": _shares(realized, lambda h: requested[h] > 0 or realized[h] > 0),
           "realized_negatives": {str(h): int(sim["negatives"][h]) for h in HARDNESS if sim["negatives"][h]},
           "candidates": {str(h): int(avail[:, h].sum()) for h in HARDNESS},
           "epoch_draws": int(sim["draws"].sum()), "sampler_samples_per_second": round(sim["samples_per_second"])}
    if mode == "per_pair":
        out["shortfalls"] = _per_pair_shortfalls(index, avail)
    else:
        out["shortfalls"] = _global_shortfalls(index, avail, realized, int(sim["negatives"].sum()))
        draws = sim["draws"]
        out["positive_shift"] = {
            "pairs_drawn_share": round(float((draws > 0).mean()), 6), "max_draws_per_pair": int(draws.max()),
            "positive_distance": {"per_pair": _distance_shares(index, np.ones(len(index))),
                                  "global": _distance_shares(index, draws.astype(np.float64))}}
    return out


def _per_pair_shortfalls(index: SamplingIndex, avail: np.ndarray) -> dict:
    flows = fallback_flows(index.allocation, avail)
    out = {}
    for h in HARDNESS:
        short = index.allocation[h] > avail[:, h]
        if h > 1 and short.any():
            out[str(h)] = {"candidates": int(avail[:, h].sum()), "pairs_with_candidates": int((avail[:, h] > 0).sum()),
                           "pairs_short": int(short.sum()),
                           "negatives_short": int((index.allocation[h] - avail[short, h]).sum()),
                           "went_to": {str(g): int(flows[h, g]) for g in range(h - 1, 0, -1) if flows[h, g]}}
    return out


def _global_shortfalls(index: SamplingIndex, avail: np.ndarray, realized: np.ndarray, negatives: int) -> dict:
    """Buckets whose fitted (expected) share stays below the request: no choice of pair weights
    within the global rule reaches it. The missing negatives are split over the buckets in excess."""
    weights, takes, _ = index.plan("global")
    expected = expected_mix(weights, takes, index.k)
    excess = np.maximum(realized - index.requested, 0)
    out = {}
    for h in HARDNESS:
        gap = index.requested[h] - expected[h]
        if index.requested[h] > 0 and gap > 1e-4:
            went = excess / excess.sum() * gap * negatives if excess.sum() > 0 else np.zeros(9)
            out[str(h)] = {"candidates": int(avail[:, h].sum()), "pairs_with_candidates": int((avail[:, h] > 0).sum()),
                           "requested": round(float(index.requested[h]), 6), "achievable": round(float(expected[h]), 6),
                           "negatives_short": int(round(gap * negatives)),
                           "went_to": {str(g): int(round(went[g])) for g in HARDNESS if round(went[g])}}
    return out
