"""The full hardness-labelled triplet table: hardness 2..8 written by DuckDB into Parquet, hardness 1
served by a DuckDB view over three small input files.

A triplet (a, p, n): p is in a's sector, p != a; n not in {a, p} with d(a, n) > d(a, p), or n in
another sector (always qualifies). Hardness is the curriculum guide's rule:
8 if n is in a's or p's excluded_codes, else 1 if unrelated, else by distance_diff
(<=0.5 -> 7, <=1 -> 6, <=2 -> 5, <=3 -> 4, <=4 -> 3, else 2).

Folder layout (written atomically as one folder):
- `hardness=H/*.parquet` for H = 2..8 (hive partitions, ~87M rows on NAICS 2022): materialized;
- `_hardness_1/{pairs,negatives,exclusions}.parquet`: the same-sector (anchor, positive) pairs, each
  anchor's other-sector codes minus the anchor's exclusions, and the positive-side exclusion links
  (~4.5M rows together). Hardness 1 (~890M rows on NAICS 2022) is their join, computed when read:
  nothing samples hardness 1 from the table (the sampler draws other-sector codes directly), and
  writing those rows cost ~75% of the build;
- `_relation.sql`: the SELECT that reads the whole table (both parts, same columns and types as a
  fully materialized table). `triplets_sql(folder)` returns it; the check, the catalog view
  `naics_triplets` and the tests all read the table through it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa

from naics_pipeline.data.descriptions import exclusion_pairs
from naics_pipeline.storage import RELATION_FILE, atomic_path, table_sql

HARDNESS_SQL = """CASE WHEN n.d2 - p.d2 <= 1 THEN 7 WHEN n.d2 - p.d2 <= 2 THEN 6 WHEN n.d2 - p.d2 <= 4 THEN 5
    WHEN n.d2 - p.d2 <= 6 THEN 4 WHEN n.d2 - p.d2 <= 8 THEN 3 ELSE 2 END"""

# Distances are held as d2 = 2 * distance (an exact small integer) and written as DECIMAL(3,1),
# an integer-backed type: 0.5 steps stay exact and queries read naturally (positive_distance <= 2.0).
COLUMNS_SQL = """p.a AS anchor, p.b AS positive, n.b AS negative,
    p.d AS positive_distance, n.d AS negative_distance, (n.d - p.d)::DECIMAL(3,1) AS distance_diff,
    n.unrelated AS unrelated"""

HARDNESS_1_DIR = "_hardness_1"
MATERIALIZED = range(2, 9)

# Hardness 1 = every (anchor, positive) pair x the anchor's other-sector codes (anchor exclusions
# already dropped from `negatives`), minus the positive's exclusion links. The anti-join runs only
# for the pairs whose positive has such links (~22% on NAICS 2022); the rest join plainly.
# `{folder}` is filled in when read, so the SQL stays valid after the folder's atomic rename.
def _hardness_1_branch(with_links: bool) -> str:
    src = f"{{folder}}/{HARDNESS_1_DIR}"
    anti = (f"ANTI JOIN read_parquet('{src}/exclusions.parquet') x "
            "ON x.code = p.positive AND x.excluded = n.negative") if with_links else ""
    return f"""SELECT p.anchor, p.positive, n.negative, p.positive_distance, n.negative_distance,
    (n.negative_distance - p.positive_distance)::DECIMAL(3,1) AS distance_diff,
    true AS unrelated, false AS excluded, 1::BIGINT AS hardness
FROM read_parquet('{src}/pairs.parquet') p
JOIN read_parquet('{src}/negatives.parquet') n ON n.anchor = p.anchor {anti}
WHERE {"" if with_links else "NOT "}p.positive_has_links"""


_MATERIALIZED_BRANCH = "SELECT * FROM read_parquet('{folder}/hardness=*/*.parquet', hive_partitioning=true)"


def relation_template(has_materialized: bool) -> str:
    """The whole table as one SELECT (materialized partitions first: they fix the column order)."""
    branches = [_MATERIALIZED_BRANCH] if has_materialized else []
    branches += [_hardness_1_branch(False), _hardness_1_branch(True)]
    return "\nUNION ALL\n".join(branches)


def triplets_sql(folder: Path) -> str:
    """The SELECT over the full triplet table (all hardness levels) as users read it."""
    return table_sql(folder)


@dataclass
class TripletBuild:
    path: Path
    counts: dict[int, int]
    seconds: float
    stage_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(self.counts.values())

    @property
    def materialized_rows(self) -> int:
        return sum(n for h, n in self.counts.items() if h in MATERIALIZED)


def _register(con: duckdb.DuckDBPyConnection, distances: pa.Table, descriptions: pa.Table) -> None:
    excl = exclusion_pairs(descriptions).rename_columns(["x", "n"])
    con.register("dist_arrow", distances.select(["a", "b", "distance", "unrelated"]))
    con.register("excl", excl)
    # d2 = 2 * distance; ex_a: b is in a's excluded_codes.
    con.execute("""CREATE TEMP TABLE dist AS
        SELECT d.a, d.b, (d.distance * 2)::UTINYINT AS d2, d.distance::DECIMAL(3,1) AS d, d.unrelated,
               e.x IS NOT NULL AS ex_a
        FROM dist_arrow d LEFT JOIN (SELECT DISTINCT x, n FROM excl) e ON e.x = d.a AND e.n = d.b""")
    # (anchor, positive) pairs split by whether the positive has exclusions of its own: only the
    # few pairs in pos_x need the per-row (positive, negative) exclusion test.
    con.execute("""CREATE TEMP TABLE pos AS SELECT a, b, d2, d, b IN (SELECT x FROM excl) AS has_x
        FROM dist WHERE NOT unrelated""")
    con.execute("CREATE TEMP TABLE pos_clean AS SELECT * FROM pos WHERE NOT has_x")
    con.execute("CREATE TEMP TABLE pos_x AS SELECT * FROM pos WHERE has_x")
    # Negative candidates with the anchor-side exclusions already removed.
    con.execute("CREATE TEMP TABLE neg_cross AS SELECT * FROM dist WHERE unrelated AND NOT ex_a")
    con.execute("CREATE TEMP TABLE neg_same AS SELECT * FROM dist WHERE NOT unrelated AND NOT ex_a")
    # Exclusion links into another sector: the only ones that can remove a hardness-1 row.
    con.execute("""CREATE TEMP TABLE excl_cross AS SELECT DISTINCT e.x, e.n FROM excl e
        JOIN dist d ON d.a = e.x AND d.b = e.n WHERE d.unrelated""")


def _copy(con, query: str, target: Path, partition: bool = False) -> int:
    # No dictionary pages: they cost ~30% of the write of the ~86M hardness 2..7 rows and save little
    # once zstd has run (7.8 vs 7.1 MB).
    opts = "FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 1000000, DICTIONARY_SIZE_LIMIT 0"
    if partition:
        opts += ", PARTITION_BY (hardness), OVERWRITE_OR_IGNORE true, FILENAME_PATTERN '{uuid}'"
    return con.execute(f"COPY ({query}) TO '{target}' ({opts})").fetchall()[0][0]


def _selects(extra_where: str, hardness_sql: str | None, excluded: str) -> str:
    """The same query over clean positives and, with the (p, n) exclusion anti-join, the others."""
    cols = f"{COLUMNS_SQL}, {excluded} AS excluded"
    if hardness_sql:
        cols += f", ({hardness_sql})::UTINYINT AS hardness"
    return f"""SELECT {cols} FROM pos_clean p JOIN {{neg}} n ON n.a = p.a {extra_where}
        UNION ALL
        SELECT {cols} FROM pos_x p JOIN {{neg}} n ON n.a = p.a {extra_where}
            AND NOT EXISTS (SELECT 1 FROM excl e WHERE e.x = p.b AND e.n = n.b)"""


def _hardness_1_inputs(con, folder: Path) -> None:
    """The three small tables the hardness-1 view joins (sorted by anchor: the join reads them in order)."""
    folder.mkdir()
    inputs = {
        "pairs": """SELECT a AS anchor, b AS positive, d AS positive_distance,
                           b IN (SELECT x FROM excl_cross) AS positive_has_links FROM pos ORDER BY a, b""",
        "negatives": "SELECT a AS anchor, b AS negative, d AS negative_distance FROM neg_cross ORDER BY a, b",
        "exclusions": "SELECT x AS code, n AS excluded FROM excl_cross ORDER BY x, n",
    }
    for name, query in inputs.items():
        _copy(con, query, folder / f"{name}.parquet")


def _materialized_steps() -> list[tuple[str, str]]:
    qualifies = "(n.unrelated OR n.d2 > p.d2)"
    return [
        ("hardness 2-7 (same sector)", _selects("AND n.d2 > p.d2", HARDNESS_SQL, "false").format(neg="neg_same")),
        # Exclusions: only pairs listed in excl can be hardness 8, so start from them.
        ("hardness 8 (exclusions)", f"""
            SELECT {COLUMNS_SQL}, true AS excluded, 8::UTINYINT AS hardness
            FROM pos p JOIN dist n ON n.a = p.a AND n.ex_a WHERE {qualifies}
            UNION
            SELECT {COLUMNS_SQL}, true AS excluded, 8::UTINYINT AS hardness
            FROM excl e JOIN pos p ON p.b = e.x JOIN dist n ON n.a = p.a AND n.b = e.n
            WHERE {qualifies} AND n.b <> p.a"""),
    ]


def build_triplets(distances: pa.Table, descriptions: pa.Table, target: Path,
                   threads: int | None = None, progress=None) -> TripletBuild:
    """Write the triplet table to `target` (a folder), atomically. `progress(stage)` is called per step."""
    say = progress or (lambda msg: None)
    t0 = time.perf_counter()
    stages = {}
    con = duckdb.connect(":memory:")
    if threads:
        con.execute(f"SET threads={int(threads)}")
    con.execute("SET preserve_insertion_order=false")
    _register(con, distances, descriptions)
    stages["prepare"] = time.perf_counter() - t0
    with atomic_path(Path(target)) as tmp:
        tmp.mkdir()
        say("hardness 1 (view inputs)")
        t = time.perf_counter()
        _hardness_1_inputs(con, tmp / HARDNESS_1_DIR)
        stages["hardness 1 (view inputs)"] = time.perf_counter() - t
        for name, query in _materialized_steps():
            say(name)
            t = time.perf_counter()
            _copy(con, query, tmp, partition=True)
            stages[name] = time.perf_counter() - t
        has_materialized = any(tmp.glob("hardness=*/*.parquet"))
        (tmp / RELATION_FILE).write_text(relation_template(has_materialized) + "\n")
        counts = count_by_hardness(con, tmp)
    con.close()
    return TripletBuild(Path(target), counts, time.perf_counter() - t0, stages)


def count_by_hardness(con: duckdb.DuckDBPyConnection, folder: Path) -> dict[int, int]:
    """Row counts per hardness without reading rows: Parquet footers for the materialized partitions,
    and for the hardness-1 view sum(other-sector codes per pair) - (positive exclusion links hit)."""
    counts = dict(con.execute(f"""SELECT regexp_extract(file_name, 'hardness=(\\d+)', 1)::INT AS h,
            sum(num_rows)::BIGINT FROM parquet_file_metadata('{folder}/hardness=*/*.parquet')
        GROUP BY h ORDER BY h""").fetchall()) if any(Path(folder).glob("hardness=*/*.parquet")) else {}
    src = f"{folder}/{HARDNESS_1_DIR}"
    h1 = con.execute(f"""SELECT
        (SELECT coalesce(sum(c), 0) FROM read_parquet('{src}/pairs.parquet') p
            JOIN (SELECT anchor, count(*) AS c FROM read_parquet('{src}/negatives.parquet') GROUP BY anchor) n
            USING (anchor))
        - (SELECT count(*) FROM read_parquet('{src}/pairs.parquet') p
            JOIN read_parquet('{src}/exclusions.parquet') x ON x.code = p.positive
            JOIN read_parquet('{src}/negatives.parquet') n ON n.anchor = p.anchor AND n.negative = x.excluded)
        """).fetchall()[0][0]
    return dict(sorted({**counts, 1: int(h1)}.items()))
