"""Change detection and faults, as a person operating the pipeline would meet them (the UI: test_dagster_cli)."""
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq

from naics_pipeline.data.snapshot import load_snapshot
from naics_pipeline.data.source import file_names
from naics_pipeline.definitions import build_defs
from naics_pipeline.defs.jobs import refresh_job
from naics_pipeline.defs.resources import AutomationResource, SourceResource, StorageResource
from naics_pipeline.defs.sensors import naics_source_sensor
from naics_pipeline.settings import REPO_ROOT
from tests.census_fixtures import CODES, write_census_folder
from tests.conftest import data_definitions

DATA_ASSETS, DATA_CHECKS = data_definitions()


def tick(defs: dg.Definitions, instance, cursor=None):
    sensor = defs.resolve_sensor_def("naics_source_sensor")
    ctx = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs,
                                  resources={k: defs.resources[k] for k in ("source", "automation")})
    result = sensor.evaluate_tick(ctx)
    return result, ctx.cursor


def make_defs(root: Path, location) -> dg.Definitions:
    return dg.Definitions(assets=DATA_ASSETS, asset_checks=DATA_CHECKS, jobs=[refresh_job],
                          sensors=[naics_source_sensor],
                          resources={"storage": StorageResource(root=str(root)),
                                     "source": SourceResource(location=str(location)),
                                     "automation": AutomationResource()})


def data_version(instance) -> str:
    event = instance.get_latest_materialization_event(dg.AssetKey("naics_source"))
    return event.asset_materialization.tags["dagster/data_version"]


def test_change_file_then_sensor_requests_run_with_new_data_version(census_dir, tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    defs = make_defs(tmp_path / "store", census_dir)
    job = defs.resolve_job_def("refresh_job")
    assert job.execute_in_process(instance=instance).success
    first = data_version(instance)

    result, cursor = tick(defs, instance)                       # first tick: baseline, no run
    assert not result.run_requests and "baseline" in result.skip_message
    result, cursor = tick(defs, instance, cursor)               # nothing changed: no run
    assert not result.run_requests and result.skip_message == "source unchanged"

    write_census_folder(census_dir, index={"111110": ["Soybean farming", "Soy milk beans, growing"]})
    result, cursor = tick(defs, instance, cursor)
    [request] = result.run_requests
    assert request.tags["naics/changed_files"] == "index"
    assert job.execute_in_process(instance=instance, tags=request.tags).success
    assert data_version(instance) != first

    # the cursor survives a restart: a fresh sensor evaluation with the stored cursor sees no change
    result, _ = tick(make_defs(tmp_path / "store", census_dir), dg.DagsterInstance.ephemeral(), cursor)
    assert not result.run_requests


def source_and_descriptions(instance, defs, tags=None):
    """Materialize naics_source and naics_descriptions (with their checks) as the refresh job would."""
    job = defs.resolve_job_def("refresh_job")
    keys = [dg.AssetKey("naics_source"), dg.AssetKey("naics_descriptions"), dg.AssetKey("naics_index_holdout")]
    return job.execute_in_process(instance=instance, tags=tags, asset_selection=keys, raise_on_error=False)


def row_counts_check(result):
    return {c.check_name: c for c in result.get_asset_check_evaluations()}["descriptions_row_counts"]


def test_a_new_vintage_is_a_source_change(tmp_path):
    """Generated files under 2022 names, then the same folder holding NAICS 2027 files instead: the sensor
    requests a run and the rerun materializes vintage 2027 (structural checks, a warning, no failure)."""
    folder = write_census_folder(tmp_path / "census", vintage="2022")
    instance = dg.DagsterInstance.ephemeral()
    defs = make_defs(tmp_path / "store", folder)
    run = source_and_descriptions(instance, defs)
    # A 28-code tree under 2022 names is held to the official 2022 shape, and fails it (blocking).
    assert not run.success and row_counts_check(run).severity == dg.AssetCheckSeverity.ERROR
    assert "NAICS 2022: {2: 20, 3: 96, 4: 308, 5: 689, 6: 1012}" in row_counts_check(run).description
    first = data_version(instance)
    event = instance.get_latest_materialization_event(dg.AssetKey("naics_source"))
    assert event.asset_materialization.metadata["vintage"].value == "2022"
    _, cursor = tick(defs, instance)                                   # baseline

    for name in file_names("2022").values():                           # the 2027 revision replaces 2022
        (folder / name).unlink(missing_ok=True)
    write_census_folder(folder, vintage="2027", codes=CODES + [("541513", "Computer Facilities Management")])
    result, cursor = tick(defs, instance, cursor)
    [request] = result.run_requests
    assert request.tags["naics/vintage"] == "2022 -> 2027"
    assert request.tags["naics/changed_files"] == "codes,descriptions,index"
    rerun = source_and_descriptions(instance, defs, request.tags)
    assert rerun.success and data_version(instance) != first
    event = instance.get_latest_materialization_event(dg.AssetKey("naics_source"))
    assert event.asset_materialization.metadata["vintage"].value == "2027"
    counts = row_counts_check(rerun)
    assert counts.severity == dg.AssetCheckSeverity.WARN and "NAICS 2027 has no official shape" in counts.description
    assert load_snapshot(tmp_path / "store" / "source").vintage == "2027"
    assert "541513" in pq.read_table(tmp_path / "store" / "naics_descriptions.parquet").column("code").to_pylist()
    assert not tick(defs, instance, cursor)[0].run_requests             # settled


def test_two_vintages_in_the_folder_is_a_skip_naming_both(tmp_path):
    folder = write_census_folder(tmp_path / "census", vintage="2022")
    write_census_folder(folder, vintage="2027")
    result, cursor = tick(make_defs(tmp_path / "store", folder), dg.DagsterInstance.ephemeral(), '{"codes": "x"}')
    assert not result.run_requests and "several NAICS vintages (2022 and 2027)" in result.skip_message
    assert cursor == '{"codes": "x"}'


def test_unreachable_source_is_a_logged_skip(tmp_path, caplog):
    defs = make_defs(tmp_path, "http://127.0.0.1:9/naics")
    result, cursor = tick(defs, dg.DagsterInstance.ephemeral(), cursor='{"codes": "x"}')
    assert not result.run_requests and "source unreadable" in result.skip_message
    assert cursor == '{"codes": "x"}'        # kept: the next tick compares against the last good one
    missing = make_defs(tmp_path, tmp_path / "nowhere")
    result, _ = tick(missing, dg.DagsterInstance.ephemeral())
    assert "does not exist" in result.skip_message


# Runs the triplet build, stalled right after its first hardness partitions are on disk (in the temporary
# folder) until the test kills it: the kill lands mid-write every time, whatever the machine's speed.
STALLED_TRIPLET_BUILD = """
import sys, time
from pathlib import Path
import naics_pipeline.data.triplets as T
from naics_pipeline.data import pipeline
from naics_pipeline.layout import Layout
copy = T._copy
def stalled_copy(con, query, target, partition=False):
    rows = copy(con, query, target, partition)
    if partition:
        Path(sys.argv[2]).touch()
        time.sleep(600)
    return rows
T._copy = stalled_copy
pipeline.step_triplets(Layout(Path(sys.argv[1])))
"""


def test_sigkill_mid_write_leaves_no_table_and_rerun_succeeds(tmp_path):
    """SIGKILL the triplet build mid-write (generated tree); nothing half-written is visible, and the
    rerun cleans the temporary and writes a table that passes its check."""
    import pyarrow.parquet as pq

    from naics_pipeline.data import pipeline, quality
    from naics_pipeline.layout import Layout
    from naics_pipeline.storage import clean_stale_temporaries

    layout = Layout(tmp_path / "store")
    pipeline.step_source(layout, str(write_census_folder(tmp_path / "census")))
    for step in (pipeline.step_descriptions(layout), pipeline.step_graph(layout), pipeline.step_distances(layout)):
        assert step.rows
    stalled = tmp_path / "stalled"
    proc = subprocess.Popen([sys.executable, "-c", STALLED_TRIPLET_BUILD, str(layout.root), str(stalled)],
                            cwd=REPO_ROOT)
    deadline = time.time() + 120
    while time.time() < deadline and not stalled.exists() and proc.poll() is None:
        time.sleep(0.05)
    assert stalled.exists(), "the build never reached its first partition write"
    half_written = list(layout.root.glob(".tmp-naics_triplets*/hardness=*/*.parquet"))
    assert half_written and list(layout.root.glob(".tmp-naics_triplets*/_hardness_1/pairs.parquet"))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not layout.triplets.exists()                      # never a half-written table in place
    assert list(layout.root.glob(".tmp-naics_triplets*"))    # the killed run's temporary is left behind
    assert clean_stale_temporaries(layout.root) >= 1         # ...and removed by the next run
    assert not list(layout.root.glob(".tmp-naics_triplets*"))
    pipeline.step_triplets(layout)
    assert quality.triplets_consistent(layout.triplets, pq.read_table(layout.descriptions)).passed


def test_changed_curriculum_changes_only_its_own_code_version(tmp_path, monkeypatch):

    folder = tmp_path / "curricula"
    shutil.copytree(REPO_ROOT / "curricula", folder)
    monkeypatch.setenv("NAICS_CURRICULA_DIR", str(folder))

    def versions():
        graph = build_defs().resolve_asset_graph()
        return {k.to_user_string(): graph.get(k).code_version for k in graph.get_all_asset_keys()}
    before = versions()
    path = folder / "02_stage_medium.yaml"
    path.write_text(path.read_text().replace("k_negatives: 16", "k_negatives: 24"))
    after = versions()
    assert [k for k in before if before[k] != after[k]] == ["sampling_index_02_stage_medium"]
