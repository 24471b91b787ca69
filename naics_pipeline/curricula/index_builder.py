"""Building a curriculum's sampling index with DuckDB: filter the (anchor, positive) pairs, group
the candidates, write the index folder atomically (layout: curricula.sampling_index) and simulate one
epoch into its meta.json (curricula.mix_report). Only the builder needs DuckDB."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from naics_pipeline.curricula.config import Curriculum
from naics_pipeline.curricula.mix_plan import SamplingError
from naics_pipeline.curricula.mix_report import mix_report, simulate_epoch
from naics_pipeline.curricula.sampling_index import INDEX_VERSION, SamplingIndex
from naics_pipeline.storage import atomic_path


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
