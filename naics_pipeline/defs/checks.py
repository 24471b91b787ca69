"""Asset checks over the data tables (logic in naics_pipeline.data.quality)."""

import dagster as dg
import pyarrow.parquet as pq

from naics_pipeline.data import quality
from naics_pipeline.data.snapshot import load_snapshot
from naics_pipeline.defs.metadata import readable
from naics_pipeline.defs.resources import StorageResource


def _result(outcome: quality.Outcome) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=outcome.passed, description=outcome.description,
                               metadata=readable(outcome.metadata), severity=dg.AssetCheckSeverity[outcome.severity])


@dg.asset_check(asset="naics_descriptions", blocking=True,
                description="codes per level as the vintage's official shape (2022: 20/96/308/689/1,012; "
                            "2017: 20/99/311/709/1,057); another vintage: levels 2-6 and a warning")
def descriptions_row_counts(storage: StorageResource):
    desc = pq.read_table(storage.layout.descriptions)
    return _result(quality.descriptions_row_counts(desc, load_snapshot(storage.layout.source_dir).vintage))


@dg.asset_check(asset="naics_descriptions", blocking=True, description="code is a unique key")
def descriptions_unique_codes(storage: StorageResource):
    return _result(quality.descriptions_unique_codes(pq.read_table(storage.layout.descriptions)))


@dg.asset_check(asset="naics_descriptions", blocking=True, description="every code's parent exists")
def descriptions_parents_exist(storage: StorageResource):
    return _result(quality.descriptions_parents_exist(pq.read_table(storage.layout.descriptions)))


@dg.asset_check(asset="naics_descriptions",
                description="every kept and held-out excluded code is a real code, no link in both")
def descriptions_excluded_codes_exist(storage: StorageResource):
    return _result(quality.descriptions_excluded_codes_exist(pq.read_table(storage.layout.descriptions)))


@dg.asset_check(asset="naics_graph", blocking=True,
                description="a tree, every parent exists, the vintage's sectors (20 in 2017 and 2022)")
def graph_is_naics_tree(storage: StorageResource):
    layout = storage.layout
    return _result(quality.graph_is_naics_tree(pq.read_table(layout.graph_edges), pq.read_table(layout.descriptions),
                                               quality.expected_sectors(load_snapshot(layout.source_dir).vintage)))


@dg.asset_check(asset="naics_distances", blocking=True,
                description="N*(N-1) unique pairs, symmetric; a seeded sample equal to networkx shortest paths")
def distances_consistent(storage: StorageResource):
    layout = storage.layout
    return _result(quality.distances_consistent(layout.distances, pq.read_table(layout.descriptions)))


@dg.asset_check(asset="naics_triplets", blocking=True,
                description="row count implied by the tree, hardness in 1..8, positive closer than negative")
def triplets_consistent(storage: StorageResource):
    layout = storage.layout
    return _result(quality.triplets_consistent(layout.triplets, pq.read_table(layout.descriptions)))

