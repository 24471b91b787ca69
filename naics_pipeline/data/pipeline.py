"""The data build as plain functions, one per table: the Dagster assets and the benchmark call these."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from naics_pipeline.data.descriptions import build_descriptions
from naics_pipeline.data.distances import distances_table, tree_arrays
from naics_pipeline.data.graph import build_graph, edges_table
from naics_pipeline.data.snapshot import load_snapshot, snapshot_source
from naics_pipeline.data.triplets import build_triplets
from naics_pipeline.layout import Layout
from naics_pipeline.storage import disk_bytes, write_catalog, write_parquet


@dataclass
class StepResult:
    name: str
    rows: int
    seconds: float
    path: Path
    metadata: dict = field(default_factory=dict)

    @property
    def megabytes(self) -> float:
        return disk_bytes(self.path) / 1e6


def _timed(name: str, path: Path, fn) -> StepResult:
    t = time.perf_counter()
    rows, metadata = fn()
    return StepResult(name, rows, time.perf_counter() - t, path, metadata)


def read_descriptions(layout: Layout) -> pa.Table:
    return pq.read_table(layout.descriptions)


def step_source(layout: Layout, location: str, timeout: float = 30.0, vintage: str | None = None) -> StepResult:
    def run():
        src = snapshot_source(location, layout.source_dir, layout.downloads, timeout, vintage)
        return len(src.paths), {"src": src}
    return _timed("naics_source", layout.source_dir, run)


def step_descriptions(layout: Layout, exclusion_holdout: float = 0.0) -> StepResult:
    def run():
        built = build_descriptions(load_snapshot(layout.source_dir), exclusion_holdout)
        write_parquet(built.descriptions, layout.descriptions)
        write_parquet(built.holdout, layout.index_holdout)
        return built.descriptions.num_rows, {"stats": built.stats, "holdout_rows": built.holdout.num_rows}
    return _timed("naics_descriptions", layout.descriptions, run)


def step_graph(layout: Layout) -> StepResult:
    def run():
        g = build_graph(read_descriptions(layout))
        edges = edges_table(g)
        write_parquet(edges, layout.graph_edges)
        return edges.num_rows, {"graph": g}
    return _timed("naics_graph", layout.graph_edges, run)


def step_distances(layout: Layout) -> StepResult:
    def run():
        table = distances_table(tree_arrays(read_descriptions(layout)))
        write_parquet(table, layout.distances)
        return table.num_rows, {}
    return _timed("naics_distances", layout.distances, run)


def step_triplets(layout: Layout, threads: int | None = None, progress=None) -> StepResult:
    def run():
        built = build_triplets(pq.read_table(layout.distances), read_descriptions(layout),
                               layout.triplets, threads=threads, progress=progress)
        write_catalog(layout.root, layout.tables())
        return built.rows, {"counts": built.counts, "stage_seconds": built.stage_seconds}
    return _timed("naics_triplets", layout.triplets, run)


def build_data(layout: Layout, location: str, progress=None, vintage: str | None = None,
               exclusion_holdout: float = 0.0) -> list[StepResult]:
    """source -> descriptions -> graph -> distances -> triplets, in order."""
    return [step_source(layout, location, vintage=vintage), step_descriptions(layout, exclusion_holdout),
            step_graph(layout), step_distances(layout), step_triplets(layout, progress=progress)]
