"""Atomic writes and DuckDB access over the Parquet tables under the storage root.

Every table is a Parquet file or a folder of Parquet files. Writers build it under a temporary
name next to the target and rename it into place, so a killed run leaves either the old table or
none, never a half-written one that the next run trusts.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

TMP_PREFIX = ".tmp-"
LOCK_PREFIX = ".lock-"
# A table folder may hold this file: the SELECT that reads the whole table, with `{folder}` standing
# for the folder's path (used when part of a table is a view over small inputs, as triplets do).
RELATION_FILE = "_relation.sql"


class StorageBusyError(RuntimeError):
    """Another process is writing the same table under this storage root."""


@contextlib.contextmanager
def table_lock(target: Path) -> Iterator[None]:
    """Exclusive, non-blocking lock per table: a second concurrent writer fails at once, clearly.
    The kernel drops the lock when its holder dies, so a killed run never leaves it held."""
    import fcntl

    lock_path = target.with_name(f"{LOCK_PREFIX}{target.name}")
    with open(lock_path, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StorageBusyError(f"{target} is being written by another run (lock {lock_path}); "
                                   "wait for it to finish or use another NAICS_STORAGE_ROOT") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _tmp_sibling(target: Path) -> Path:
    return target.with_name(f"{TMP_PREFIX}{target.name}.{uuid.uuid4().hex[:8]}")


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path to write to; on success it replaces `target` (file or folder)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(target)
    with table_lock(target):
        yield from _write_and_swap(target, tmp)


def _write_and_swap(target: Path, tmp: Path) -> Iterator[Path]:
    try:
        yield tmp
        if target.is_dir() and tmp.is_dir():
            # A folder cannot be atomically swapped for another non-empty one: move the old one
            # aside first, then rename; a reader sees either the old or the new folder.
            old = _tmp_sibling(target)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink()


def clean_stale_temporaries(root: Path) -> int:
    """Remove temporaries left by killed runs (skipping tables being written now); returns the count."""
    removed = 0
    if not root.exists():
        return 0
    for p in root.rglob(f"{TMP_PREFIX}*"):
        table = p.with_name(p.name[len(TMP_PREFIX):].rsplit(".", 1)[0])
        try:
            with table_lock(table):
                pass
        except StorageBusyError:
            continue  # a live writer owns this temporary
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        removed += 1
    return removed


def write_parquet(table: pa.Table, target: Path, **kwargs) -> Path:
    with atomic_path(target) as tmp:
        pq.write_table(table, tmp, compression="zstd", **kwargs)
    return target


def connect(threads: int | None = None):
    import duckdb  # lazily: the training machine reads Parquet with pyarrow and has no duckdb

    con = duckdb.connect(":memory:")
    if threads:
        con.execute(f"SET threads={int(threads)}")
    con.execute("SET preserve_insertion_order=false")
    return con


def disk_bytes(path: Path) -> int:
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _sql_path(path: Path) -> str:
    return str(path).replace("'", "''")


def parquet_glob(path: Path) -> str:
    """A DuckDB read expression for a table stored as one file or a (hive-partitioned) folder."""
    path = Path(path)
    if path.is_dir():
        return f"read_parquet('{_sql_path(path)}/**/*.parquet', hive_partitioning=true)"
    return f"read_parquet('{_sql_path(path)}')"


def table_sql(path: Path) -> str:
    """The SELECT that reads a whole table as users see it: the folder's own RELATION_FILE when it has
    one, else every Parquet file of the file or folder."""
    path = Path(path)
    relation = path / RELATION_FILE
    if path.is_dir() and relation.is_file():
        return relation.read_text().strip().replace("{folder}", _sql_path(path))
    return f"SELECT * FROM {parquet_glob(path)}"


def write_catalog(root: Path, tables: dict[str, Path]) -> Path:
    """(Re)build `naics.duckdb`: a DuckDB file of views over the Parquet tables, for users' SQL."""
    import duckdb

    target = root / "naics.duckdb"
    with atomic_path(target) as tmp:
        con = duckdb.connect(str(tmp))
        for name, path in sorted(tables.items()):
            if Path(path).exists():
                con.execute(f"CREATE VIEW {name} AS {table_sql(path)}")
        con.close()
    return target
