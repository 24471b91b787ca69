"""The Dagster layer: definitions load, and the data graph materializes with every check passing."""
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from naics_pipeline.data import quality
from naics_pipeline.data.descriptions import exclusion_pairs, held_out_exclusion_pairs
from naics_pipeline.data.snapshot import load_snapshot
from naics_pipeline.definitions import build_defs
from naics_pipeline.defs.resources import SourceResource, StorageResource, TrainingResource
from naics_pipeline.defs.upstream import PARENT_RUN_TAG
from tests.census_fixtures import CODES, write_census_folder
from tests.conftest import data_definitions

DATA_ASSETS, DATA_CHECKS = data_definitions()


def errors(result) -> list[tuple[str, str]]:
    """Checks that failed at ERROR severity (a WARN is a warning: an unknown vintage's row counts)."""
    return [(c.check_name, c.description) for c in result.get_asset_check_evaluations()
            if not c.passed and c.severity == dg.AssetCheckSeverity.ERROR]


def materialize_data(root, location, **source):
    result = dg.materialize(
        [*DATA_ASSETS, *DATA_CHECKS],
        resources={"storage": StorageResource(root=str(root)),
                   "source": SourceResource(location=str(location), **source)},
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    checks = result.get_asset_check_evaluations()
    assert len(checks) == len(DATA_CHECKS)
    assert not errors(result), errors(result)
    return result


def check(result, name):
    [evaluation] = [c for c in result.get_asset_check_evaluations() if c.check_name == name]
    return evaluation


def metadata(result, key):
    mats = [m for m in result.get_asset_materialization_events() if m.asset_key == dg.AssetKey(key)]
    return mats[-1].materialization.metadata


def test_definitions_load():
    names = {k.to_user_string() for k in build_defs().resolve_asset_graph().get_all_asset_keys()}
    assert {"naics_source", "naics_descriptions", "naics_index_holdout", "naics_graph", "naics_distances",
            "naics_triplets"} <= names


def test_data_graph_on_generated_files(census_dir, tmp_path):
    result = materialize_data(tmp_path / "store", census_dir)
    src = load_snapshot(tmp_path / "store" / "source")
    mats = [m for m in result.get_asset_materialization_events() if m.asset_key == dg.AssetKey("naics_source")]
    assert mats[0].materialization.tags["dagster/data_version"] == src.data_version
    source_meta = metadata(result, "naics_source")
    assert source_meta["vintage"].value == "2099" and source_meta["data_version"].value == src.data_version
    assert "NAICS 2099 has no official shape known here" in source_meta["warnings"].value
    # An unknown vintage: the structural rules pass, the row counts are a visible warning, not a failure.
    counts = check(result, "descriptions_row_counts")
    assert not counts.passed and counts.severity == dg.AssetCheckSeverity.WARN
    assert counts.description.startswith("WARNING: NAICS 2099 has no official shape known here")
    assert "| 8 | Exclusions |" in metadata(result, "naics_triplets")["hardness_table"].value
    assert "match networkx shortest paths" in check(result, "distances_consistent").description
    assert (tmp_path / "store" / "naics.duckdb").is_file()


def test_exclusion_holdout_setting_reaches_the_tables(census_dir, tmp_path):
    """The descriptions' generated exclusion links (11 -> 54151, 311 -> 312): at 0.5 one is held out of
    excluded_codes, and so out of the hardness-8 triplets; holdout 0 keeps both."""
    full = materialize_data(tmp_path / "full", census_dir, exclusion_holdout=0.0)
    half = materialize_data(tmp_path / "half", census_dir, exclusion_holdout=0.5)
    meta = {name: metadata(r, "naics_descriptions") for name, r in (("full", full), ("half", half))}
    assert (meta["full"]["exclusion_links_kept"].value, meta["full"]["exclusion_links_held_out"].value) == (2, 0)
    assert (meta["half"]["exclusion_links_kept"].value, meta["half"]["exclusion_links_held_out"].value) == (1, 1)
    assert "| links held out (evaluation only) | 1 |" in meta["half"]["exclusions"].value
    desc = pq.read_table(tmp_path / "half" / "naics_descriptions.parquet")
    assert held_out_exclusion_pairs(desc).num_rows == 1 and exclusion_pairs(desc).num_rows == 1
    h8 = {name: hardness_8_rows(root / "naics_triplets") for name, root in (("full", tmp_path / "full"),
                                                                              ("half", tmp_path / "half"))}
    assert 0 < h8["half"] < h8["full"]
    assert h8["half"] == independent_triplet_counts(desc)[1]
    assert "1 held-out links" in check(half, "descriptions_excluded_codes_exist").description
    versions = [[m for m in r.get_asset_materialization_events() if m.asset_key == dg.AssetKey("naics_descriptions")]
                [0].materialization.tags["dagster/data_version"] for r in (full, half)]
    assert versions[0].endswith("-holdout-0") and versions[1].endswith("-holdout-0.5")


def test_checks_fail_on_a_wrong_distance_and_a_link_in_both_columns(census_dir, tmp_path):
    """The distances check compares with networkx, not with the code that wrote the table: a table
    with two symmetric entries changed (still N*(N-1) unique symmetric pairs) fails it."""
    materialize_data(tmp_path / "store", census_dir)
    desc = pq.read_table(tmp_path / "store" / "naics_descriptions.parquet")
    dist = pq.read_table(tmp_path / "store" / "naics_distances.parquet")
    codes = desc.column("code").to_pylist()
    i, j = codes.index("541511"), codes.index("541512")
    d = dist.column("distance").to_numpy().copy()
    a, b = dist.column("a").to_numpy(), dist.column("b").to_numpy()
    d[((a == i) & (b == j)) | ((a == j) & (b == i))] = 4.0   # siblings are at 2
    pq.write_table(dist.set_column(2, "distance", pa.array(d)), tmp_path / "bad.parquet")
    outcome = quality.distances_consistent(tmp_path / "bad.parquet", desc)
    assert not outcome.passed and "2 of" in outcome.description and "differ from networkx" in outcome.description
    row = codes.index("11")
    held = desc.column("held_out_excluded_codes").to_pylist()
    held[row] = ["54151", "999999"]     # 54151 is also kept; 999999 is no code
    bad = desc.set_column(desc.schema.get_field_index("held_out_excluded_codes"), "held_out_excluded_codes",
                          pa.array(held, pa.list_(pa.string())))
    outcome = quality.descriptions_excluded_codes_exist(bad)
    assert not outcome.passed
    assert "held_out_excluded_codes: 1 unknown codes ['999999']" in outcome.description
    assert "1 links both kept and held out [('11', '54151')]" in outcome.description


def materialize_everything(root, location):
    """Every asset and check, with the fast hashing encoder and one short epoch per stage."""
    full = build_defs()
    assets = list(full.assets) + list(full.asset_checks)
    result = dg.materialize(
        assets, instance=dg.DagsterInstance.ephemeral(),
        resources={"storage": StorageResource(root=str(root)),
                   "source": SourceResource(location=str(location)),
                   "training": TrainingResource(encoder="hashing", epochs=1, batch_size=1024,
                                                max_pairs_per_epoch=1024, accelerator="cpu", devices="1")})
    assert result.success
    assert not errors(result), errors(result)
    return result


def hardness_8_rows(folder) -> int:
    return sum(pq.ParquetFile(f).metadata.num_rows for f in Path(folder).glob("hardness=8/*.parquet"))


def independent_triplet_counts(desc: pa.Table) -> tuple[int, int, int]:
    """(all triplets, hardness 8, stage-3 pairs) from their definitions, over networkx tree distances
    (quality.tree_distances_from, not distances.py) and the kept exclusion links, by numpy per anchor:
    a triplet is (a, p, n) with p != a in a's sector, n in another sector or farther from a than p;
    hardness 8 when n is excluded by a or by p. A stage-3 pair is any same-sector (a, p) that is not an
    exclusion link, kept or held out, either way round (03_stage_hard: every level, no distance bound)."""
    n = desc.num_rows
    signed = quality.tree_distances_from(desc, np.arange(n))   # negative: another sector
    other_sector, dist = signed < 0, np.abs(signed)
    excluded = np.zeros((n, n), bool)
    links = exclusion_pairs(desc)
    excluded[links["code"].to_numpy(), links["excluded"].to_numpy()] = True
    linked = excluded.copy()
    held = held_out_exclusion_pairs(desc)
    linked[held["code"].to_numpy(), held["excluded"].to_numpy()] = True
    total = h8 = pairs = 0
    for a in range(n):
        p = np.flatnonzero(~other_sector[a])
        p = p[p != a]
        qualifies = other_sector[a][None, :] | (dist[a][None, :] > dist[a, p][:, None])   # (|p|, n)
        total += int(qualifies.sum())
        h8 += int((qualifies & (excluded[a][None, :] | excluded[p])).sum())
        pairs += int((~(linked[a, p] | linked[p, a])).sum())
    return total, h8, pairs


# Counts that only the official 2022 files give, by their data version (vintage + every file's sha256):
# a regression guard on the reading of the cross-references, next to the counts derived above.
OFFICIAL_2022_DATA_VERSION = "1890faabdad570fd59f83b43"
OFFICIAL_2022_EXCLUSIONS = {"codes_with_exclusions": 1138, "exclusion_links": 4641, "exclusion_links_kept": 4177,
                            "exclusion_links_held_out": 464, "cross_reference_rows": 4601,
                            "cross_reference_rows_without_code": 76}


@pytest.mark.integration
def test_everything_on_real_files(real_naics, tmp_path):
    result = materialize_everything(tmp_path / "store", real_naics)
    desc = pq.read_table(tmp_path / "store" / "naics_descriptions.parquet")
    assert desc.num_rows == 2125 and check(result, "descriptions_row_counts").passed   # the official 2022 shape
    total, h8, stage_3_pairs = independent_triplet_counts(desc)
    meta = metadata(result, "naics_triplets")
    assert meta["dagster/row_count"].value == total
    assert f"| 8 | Exclusions | {h8:,} |" in meta["hardness_table"].value
    assert hardness_8_rows(tmp_path / "store" / "naics_triplets") == h8
    assert metadata(result, "sampling_index_03_stage_hard")["pairs"].value == stage_3_pairs
    stats = metadata(result, "naics_descriptions")
    assert stats["exclusions_source"].value.startswith("2022_NAICS_Cross_References.xlsx")
    kept, held = stats["exclusion_links_kept"].value, stats["exclusion_links_held_out"].value
    assert kept == exclusion_pairs(desc).num_rows and held == held_out_exclusion_pairs(desc).num_rows
    assert abs(held - 0.1 * (kept + held)) <= 10   # the default holdout, in whole groups of twin links
    if metadata(result, "naics_source")["data_version"].value == OFFICIAL_2022_DATA_VERSION:
        assert {k: stats[k].value for k in OFFICIAL_2022_EXCLUSIONS} == OFFICIAL_2022_EXCLUSIONS
    for stage in ("stage_1", "stage_2", "stage_3"):
        assert 0 < metadata(result, stage)["spearman"].value <= 1   # its own float entry, to 4 digits
    assert metadata(result, "stage_2")["initialised_from"].value.endswith("stage_1/model.pt")
    assert metadata(result, "naics_embeddings")["dagster/row_count"].value == 2125
    assert metadata(result, "naics_embeddings")["stage"].value == "stage_3"     # the last hierarchy stage
    index = metadata(result, "text_entry_index")
    assert index["validation_entries"].value > 0 and index["validation_top1"].value > 0
    assert set(index["fusion_weights"].value) >= {"geometry", "entry", "lexical"}
    assert set(index["temperature"].value) == {"a", "b"}                 # the per-text temperature, fitted
    assert set(index["validation_out_of_fold"].value["entries"]["calibrated"]) == {"nll", "ece", "top1"}
    cuts = index["min_precision_cuts"].value
    assert set(cuts) == {"0.9", "0.95", "0.99"} and all(0 < c <= 0.95 for c in cuts["0.95"].values())
    assert index["written_texts"].value >= 0
    assert "stage_3" in metadata(result, "training_report")["table"].value

    from naics_pipeline.cli import nearest
    rows = nearest("soybean farming", tmp_path / "store", k=5)
    assert len(rows) == 5 and all(r["level"] == 6 for r in rows)


def test_packaged_fallback_builds_the_official_tree(tmp_path):
    """Codes and titles packaged with the code (no files, no network) become the 2,125-code tree, every
    check of the graph passing. What follows the graph is the path of a source without index entries or
    cross-references, run end to end below on a generated tree."""
    result = dg.materialize(
        [*DATA_ASSETS, *DATA_CHECKS], instance=dg.DagsterInstance.ephemeral(),
        selection=dg.AssetSelection.assets("naics_source", "naics_descriptions", "naics_index_holdout", "naics_graph"),
        resources={"storage": StorageResource(root=str(tmp_path / "store")),
                   "source": SourceResource(location="packaged")})
    assert result.success and not errors(result), errors(result)
    assert {c.check_name for c in result.get_asset_check_evaluations()} >= {
        "descriptions_row_counts", "descriptions_unique_codes", "descriptions_parents_exist", "graph_is_naics_tree"}
    assert metadata(result, "naics_source")["packaged_fallback"].value is True
    assert metadata(result, "naics_descriptions")["dagster/row_count"].value == 2125
    assert check(result, "descriptions_row_counts").passed   # the official 2022 shape
    assert metadata(result, "naics_index_holdout")["dagster/row_count"].value == 0


def test_everything_without_index_entries_or_cross_references(tmp_path):
    """A source like the packaged fallback (no index entries, no cross-references): no held-out
    entries, no exclusion links, an empty hardness 8; every asset still materializes, the text stage
    trains on titles alone."""
    folder = write_census_folder(tmp_path / "census", index={}, descriptions={})
    result = materialize_everything(tmp_path / "store", folder)
    stats = metadata(result, "naics_descriptions")
    assert (stats["exclusion_links_kept"].value, stats["exclusion_links_held_out"].value) == (0, 0)
    assert metadata(result, "naics_index_holdout")["dagster/row_count"].value == 0
    assert "| 8 | Exclusions | 0 |" in metadata(result, "naics_triplets")["hardness_table"].value
    assert metadata(result, "naics_embeddings")["dagster/row_count"].value == len(CODES)
    assert metadata(result, "text_entry_index")["validation_entries"].value == 0   # geometry alone
    assert "stage_4" in metadata(result, "training_report")["table"].value


def test_minilm_encoder_runs_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from naics_pipeline.encoders import make_encoder

    enc = make_encoder("minilm", device="cpu")
    vecs = enc.encode(["Soybean farming", "Soy bean growing", "Custom computer programming"])
    assert vecs.shape == (3, 384)
    assert vecs[0] @ vecs[1] > vecs[0] @ vecs[2] + 0.2


def test_custom_curriculum_yaml_becomes_an_asset(census_dir, tmp_path, monkeypatch):
    import shutil

    from naics_pipeline.defs.assets.curricula import curriculum_assets
    from naics_pipeline.settings import REPO_ROOT

    folder = tmp_path / "curricula"
    shutil.copytree(REPO_ROOT / "curricula", folder)
    (folder / "my_experiment.yaml").write_text(
        "name: my_experiment\npositive_levels: [6]\npositive_distance_max: 2.0\nmax_positives: 5\n"
        "difficulty_buckets: [1, 5, 6]\nbucket_percentages: {1: 0.5, 5: 0.3, 6: 0.2}\nk_negatives: 24\n")
    monkeypatch.setenv("NAICS_CURRICULA_DIR", str(folder))
    keys = {k.to_user_string() for k in build_defs().resolve_asset_graph().get_all_asset_keys()}
    assert "sampling_index_my_experiment" in keys
    custom = [a for a in curriculum_assets(folder) if a.key.to_user_string() == "sampling_index_my_experiment"]
    result = dg.materialize(
        [*DATA_ASSETS, *custom],
        resources={"storage": StorageResource(root=str(tmp_path / "store")),
                   "source": SourceResource(location=str(census_dir))},
        instance=dg.DagsterInstance.ephemeral())
    assert result.success
    meta = metadata(result, "sampling_index_my_experiment")
    assert "| Hardness | Candidates | Requested | Realized" in meta["mix"].value
    assert meta["mix_plot"].value.startswith("![requested vs realized mix](data:image/png;base64,")


def test_invalid_curriculum_fails_definitions_with_file_and_field(tmp_path, monkeypatch):
    from naics_pipeline.curricula.config import CurriculumError

    (tmp_path / "bad.yaml").write_text("name: bad\npositive_levels: [6]\ndifficulty_buckets: [1, 2]\n"
                                       "bucket_percentages: {1: 0.5, 2: 0.4}\nk_negatives: 16\n")
    monkeypatch.setenv("NAICS_CURRICULA_DIR", str(tmp_path))
    with pytest.raises(Exception) as failure:
        build_defs()
    causes, exc = [], failure.value
    while exc is not None:
        causes.append(exc)
        exc = exc.__cause__ or exc.__context__
    bad = [e for e in causes if isinstance(e, CurriculumError)]
    assert bad and "bad.yaml: field 'bucket_percentages': shares sum to 0.900000" in str(bad[0])


def test_missing_upstream_is_materialized_first(census_dir, tmp_path, monkeypatch):
    """Like `--select naics_graph,naics_distances` from a fresh instance: one layer up, with naics_source
    and naics_descriptions never materialized (the CLI runs the implicit job with an asset selection)."""
    instance = dg.DagsterInstance.ephemeral()
    monkeypatch.setenv("NAICS_STORAGE_ROOT", str(tmp_path / "store"))
    monkeypatch.setenv("NAICS_SOURCE", str(census_dir))
    job = build_defs().resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey("naics_graph"),
                                                                        dg.AssetKey("naics_distances")])
    assert result.success
    children = instance.get_run_records(dg.RunsFilter(tags={PARENT_RUN_TAG: result.run_id}))
    assert len(children) == 1 and children[0].dagster_run.status == dg.DagsterRunStatus.SUCCESS
    child_id = children[0].dagster_run.run_id
    for key in ("naics_source", "naics_descriptions"):
        assert instance.get_latest_materialization_event(dg.AssetKey(key)).run_id == child_id
    # naics_descriptions is subsettable: the holdout half, not needed here, is not reported.
    assert instance.get_latest_materialization_event(dg.AssetKey("naics_index_holdout")) is None
    # The child ran the checks of what it built, too.
    checked = {e.dagster_event.event_specific_data.check_name for e in instance.all_logs(
        child_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)}
    assert "descriptions_unique_codes" in checked
    # Nothing is missing now: a second run starts no child run.
    again = job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey("naics_distances")])
    assert len(instance.get_run_records(dg.RunsFilter(tags={PARENT_RUN_TAG: again.run_id}))) == 0


def test_missing_upstream_can_be_an_error_instead(census_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("NAICS_STORAGE_ROOT", str(tmp_path / "store"))
    monkeypatch.setenv("NAICS_SOURCE", str(census_dir))
    monkeypatch.setenv("NAICS_BUILD_MISSING_UPSTREAM", "0")
    job = build_defs().resolve_implicit_global_asset_job_def()
    with pytest.raises(Exception, match=r"need naics_descriptions, naics_source, never materialized.*"
                                        r"--select '\*naics_graph'"):
        job.execute_in_process(instance=dg.DagsterInstance.ephemeral(), asset_selection=[dg.AssetKey("naics_graph")])
