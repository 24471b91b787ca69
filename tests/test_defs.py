"""The Dagster layer: definitions load, and the data graph materializes with every check passing."""
import dagster as dg
import pyarrow.parquet as pq
import pytest

from naics_pipeline.data.snapshot import load_snapshot
from naics_pipeline.definitions import build_defs
from naics_pipeline.defs.resources import SourceResource, StorageResource, TrainingResource
from naics_pipeline.defs.upstream import PARENT_RUN_TAG
from tests.conftest import data_definitions

DATA_ASSETS, DATA_CHECKS = data_definitions()


def materialize_data(root, location):
    result = dg.materialize(
        [*DATA_ASSETS, *DATA_CHECKS],
        resources={"storage": StorageResource(root=str(root)),
                   "source": SourceResource(location=str(location))},
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
    names = {k.to_user_string() for k in build_defs().resolve_asset_graph().get_all_asset_keys()}
    assert {"naics_source", "naics_descriptions", "naics_index_holdout", "naics_graph", "naics_distances",
            "naics_triplets"} <= names


def test_data_graph_on_generated_files(census_dir, tmp_path):
    result = materialize_data(tmp_path / "store", census_dir)
    src = load_snapshot(tmp_path / "store" / "source")
    mats = [m for m in result.get_asset_materialization_events() if m.asset_key == dg.AssetKey("naics_source")]
    assert mats[0].materialization.tags["dagster/data_version"] == src.data_version
    assert "| 8 | Exclusions |" in metadata(result, "naics_triplets")["hardness_table"].value
    assert (tmp_path / "store" / "naics.duckdb").is_file()


def materialize_everything(root, location):
    """Every asset and check, with the fast hashing encoder and one short epoch per stage."""
    full = build_defs()
    assets = list(full.assets) + list(full.asset_checks)
    result = dg.materialize(
        assets, instance=dg.DagsterInstance.ephemeral(),
        resources={"storage": StorageResource(root=str(root)),
                   "source": SourceResource(location=str(location)),
                   "training": TrainingResource(encoder="hashing", epochs=1, batch_size=256,
                                                max_pairs_per_epoch=2048, accelerator="cpu", devices="1")})
    assert result.success
    failed = [(c.check_name, c.description) for c in result.get_asset_check_evaluations() if not c.passed]
    assert not failed, failed
    return result


@pytest.mark.integration
def test_everything_on_real_files(real_naics, tmp_path):
    result = materialize_everything(tmp_path / "store", real_naics)
    assert pq.read_table(tmp_path / "store" / "naics_descriptions.parquet").num_rows == 2125
    meta = metadata(result, "naics_triplets")
    assert meta["dagster/row_count"].value == 976_051_440
    assert "| 8 | Exclusions | 26,811 |" in meta["hardness_table"].value
    assert metadata(result, "naics_descriptions")["exclusions_source"].value.startswith("description text")
    assert metadata(result, "sampling_index_03_stage_hard")["pairs"].value == 544_146
    for stage in ("stage_1", "stage_2", "stage_3"):
        assert "| Spearman |" in metadata(result, stage)["metrics"].value
    assert metadata(result, "stage_2")["initialised_from"].value.endswith("stage_1/model.pt")
    assert metadata(result, "naics_embeddings")["dagster/row_count"].value == 2125
    assert "stage_3" in metadata(result, "training_report")["table"].value

    from naics_pipeline.cli import nearest
    rows = nearest("soybean farming", tmp_path / "store", k=5)
    assert len(rows) == 5 and all(r["level"] == 6 for r in rows)


def test_packaged_default_runs_end_to_end(tmp_path):
    result = materialize_everything(tmp_path / "store", "packaged")
    assert metadata(result, "naics_source")["packaged_fallback"].value is True
    assert metadata(result, "naics_descriptions")["dagster/row_count"].value == 2125
    assert metadata(result, "naics_embeddings")["dagster/row_count"].value == 2125


def test_minilm_encoder_runs_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from naics_pipeline.text.encoder import make_encoder

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
