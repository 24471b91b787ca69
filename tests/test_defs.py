"""The Dagster layer: definitions load, and the data graph materializes with every check passing."""
import dagster as dg
import pyarrow.parquet as pq
import pytest

from naics_pipeline.defs import DATA_ASSETS, defs
from naics_pipeline.defs.checks_data import DATA_CHECKS
from naics_pipeline.defs.resources import SourceResource, StorageResource
from naics_pipeline.snapshot import load_snapshot


def materialize_data(root, location, expect_2022=True):
    result = dg.materialize(
        [*DATA_ASSETS, *DATA_CHECKS],
        resources={"storage": StorageResource(root=str(root)),
                   "source": SourceResource(location=str(location), expect_naics_2022=expect_2022)},
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    checks = result.get_asset_check_evaluations()
    assert len(checks) == len(DATA_CHECKS)
    failed = [(c.check_name, c.description) for c in checks if not c.passed]
    assert not failed, failed
    return result


def metadata(result, key):
    mats = [m for m in result.get_asset_materialization_events() if m.asset_key == dg.AssetKey(key)]
    return mats[-1].materialization.metadata


def test_definitions_load():
    names = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {"naics_source", "naics_descriptions", "naics_index_holdout", "naics_graph", "naics_distances",
            "naics_triplets"} <= names


def test_data_graph_on_generated_files(census_dir, tmp_path):
    result = materialize_data(tmp_path / "store", census_dir, expect_2022=False)
    src = load_snapshot(tmp_path / "store" / "source")
    mats = [m for m in result.get_asset_materialization_events() if m.asset_key == dg.AssetKey("naics_source")]
    assert mats[0].materialization.tags["dagster/data_version"] == src.data_version
    assert "| 8 | Exclusions |" in metadata(result, "naics_triplets")["hardness_table"].value
    assert (tmp_path / "store" / "naics.duckdb").is_file()


@pytest.mark.integration
def test_data_graph_on_real_files(real_naics, tmp_path):
    result = materialize_data(tmp_path / "store", real_naics)
    desc = pq.read_table(tmp_path / "store" / "naics_descriptions.parquet")
    assert desc.num_rows == 2125
    meta = metadata(result, "naics_triplets")
    assert meta["dagster/row_count"].value == 976_051_440
    assert "| 8 | Exclusions | 28,449 |" in meta["hardness_table"].value
    assert metadata(result, "naics_descriptions")["exclusions_source"].value.startswith("description text")


def test_packaged_default_runs_end_to_end(tmp_path):
    result = materialize_data(tmp_path / "store", "packaged")
    assert metadata(result, "naics_source")["packaged_fallback"].value is True
    assert metadata(result, "naics_descriptions")["dagster/row_count"].value == 2125


def test_custom_curriculum_yaml_becomes_an_asset(census_dir, tmp_path, monkeypatch):
    import shutil

    from naics_pipeline.defs import build_defs
    from naics_pipeline.defs.assets_curricula import curriculum_assets
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
                   "source": SourceResource(location=str(census_dir), expect_naics_2022=False)},
        instance=dg.DagsterInstance.ephemeral())
    assert result.success
    meta = metadata(result, "sampling_index_my_experiment")
    assert "| Hardness | Candidates | Requested | Realized" in meta["mix"].value
    assert meta["mix_plot"].value.startswith("![requested vs realized mix](data:image/png;base64,")


def test_invalid_curriculum_fails_definitions_with_file_and_field(tmp_path, monkeypatch):
    from naics_pipeline.curricula import CurriculumError
    from naics_pipeline.defs import build_defs

    (tmp_path / "bad.yaml").write_text("name: bad\npositive_levels: [6]\ndifficulty_buckets: [1, 2]\n"
                                       "bucket_percentages: {1: 0.5, 2: 0.4}\nk_negatives: 16\n")
    monkeypatch.setenv("NAICS_CURRICULA_DIR", str(tmp_path))
    with pytest.raises(CurriculumError, match="bad.yaml: field 'bucket_percentages': shares sum to 0.900000"):
        build_defs()
