"""The real `dagster` CLI and UI on a fresh Dagster instance, as a user types them. One CLI run, one
`dg dev` (as `make dev` starts it, on the project's instance settings) and one run of `make demo`'s job
serve every test here (each start-up costs 10-30 s of the suite)."""
import os
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from naics_pipeline.definitions import build_defs
from naics_pipeline.report.numbers import significant
from naics_pipeline.settings import REPO_ROOT
from scripts import run_job, ui_screenshots
from tests.census_fixtures import write_census_folder
from tests.conftest import data_definitions
from tests.dagster_server import DAGSTER_BIN, graphql, webserver

STALE_QUERY = "{ assetNodes { assetKey { path } staleStatus staleCauses { key { path } reason } } }"
CHROMIUM = ui_screenshots.chromium()


@pytest.fixture(scope="module")
def selected_stage_3(tmp_path_factory):
    """`dagster asset materialize --select stage_3` alone, nothing materialized before; then `dg dev` on
    the same instance (its sensor's first tick only records a baseline). The catalog's stale status is
    read once the UI is up, before `demo_run` below materializes the rest."""
    tmp = tmp_path_factory.mktemp("cli")
    home = tmp / "home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "instance" / "dagster.yaml", home / "dagster.yaml")   # what `make dev` copies
    env = {"DAGSTER_HOME": str(home), "NAICS_STORAGE_ROOT": str(tmp / "store"),
           "NAICS_SOURCE": str(write_census_folder(tmp / "census")), "NAICS_ENCODER": "hashing",
           "NAICS_EPOCHS": "1", "NAICS_BATCH_SIZE": "64", "NAICS_MAX_PAIRS_PER_EPOCH": "256",
           "NAICS_ACCELERATOR": "cpu", "NAICS_DEVICES": "1"}
    done = subprocess.run([str(DAGSTER_BIN / "dagster"), "asset", "materialize", "--select", "stage_3",
                           "-m", "naics_pipeline"], cwd=REPO_ROOT, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with webserver(env, tmp / "dev.log", command="dg") as port:
        yield SimpleNamespace(tmp=tmp, port=port, output=done.stdout + done.stderr, log=tmp / "dev.log",
                              stale_nodes=graphql(port, STALE_QUERY)["assetNodes"])


@pytest.fixture(scope="module")
def demo_run(selected_stage_3):
    """`make demo`'s job, everything_job, submitted to the fixture's UI as scripts/run_job.py does."""
    run_id, status = run_job.run("everything_job", selected_stage_3.port, poll_seconds=1)
    assert status == "SUCCESS", f"everything_job run {run_id}: {status}"
    return SimpleNamespace(run_id=run_id, base=f"http://127.0.0.1:{selected_stage_3.port}", **vars(selected_stage_3))


def test_select_stage_3_from_a_fresh_instance_leaves_nothing_stale(selected_stage_3):
    """The never-materialized upstream is built first in a run of its own, stage_3 trains, and
    afterwards the catalog holds no stale asset."""
    assert "upstream never materialized" in selected_stage_3.output
    assert (selected_stage_3.tmp / "store" / "training" / "stage_3" / "model.pt").is_file()
    nodes = selected_stage_3.stale_nodes
    status = {"/".join(n["assetKey"]["path"]): n["staleStatus"] for n in nodes}
    upstream = {"naics_source", "naics_descriptions", "naics_index_holdout", "naics_graph", "naics_distances",
                "naics_triplets", "sampling_index_01_stage_easy", "sampling_index_02_stage_medium",
                "sampling_index_03_stage_hard", "text_embeddings", "stage_1", "stage_2"}
    causes = {"/".join(n["assetKey"]["path"]): n["staleCauses"] for n in nodes if n["staleStatus"] == "STALE"}
    assert not causes, causes
    assert {k: status[k] for k in upstream | {"stage_3"}} == {k: "FRESH" for k in upstream | {"stage_3"}}
    # Downstream of stage_3 was not selected and was never built: missing, not stale.
    assert status["training_report"] == "MISSING"


def test_ui_lists_every_asset_and_check_in_its_groups(selected_stage_3):
    data = graphql(selected_stage_3.port, "{ assetNodes { assetKey { path } groupName "
                                          "assetChecksOrError { ... on AssetChecks { checks { name } } } } }")
    listed = {"/".join(n["assetKey"]["path"]) for n in data["assetNodes"]}
    assert listed == {k.to_user_string() for k in build_defs().resolve_asset_graph().get_all_asset_keys()}
    checks = {c["name"] for n in data["assetNodes"] for c in n["assetChecksOrError"].get("checks", [])}
    assert checks == {key.name for c in data_definitions()[1] for key in c.check_keys}
    assert {n["groupName"] for n in data["assetNodes"]} == {"source", "graph", "tables", "curricula", "training",
                                                           "evaluation"}


def test_dev_log_has_no_location_name_or_superseded_warning(demo_run):
    log = demo_run.log.read_text()
    assert "Serving dagster-webserver" in log
    assert "does not match the name" not in log and "superseded" not in log
    assert "No dagster instance configuration file" not in log


def test_the_demo_run_belongs_to_its_job(demo_run):
    """The Jobs page and Overview list a job's runs by code location: the demo's run is among them."""
    data = graphql(demo_run.port, '{ pipelineOrError(params: {pipelineName: "everything_job", repositoryName: '
                                  '"__repository__", repositoryLocationName: "naics_pipeline"}) '
                                  '{ ... on Pipeline { runs { runId status } } } }')
    assert {"runId": demo_run.run_id, "status": "SUCCESS"} in data["pipelineOrError"]["runs"]


STAGE_METADATA = ('{ assetOrError(assetKey: {path: ["stage_3"]}) { ... on Asset { assetMaterializations(limit: 1) '
                  '{ metadataEntries { label __typename ... on FloatMetadataEntry { floatValue } } } } } }')
DECIMAL = re.compile(r"(?<![\d.])\d[\d,]*\.\d+(?![\d.])")


def long_numbers(text: str) -> list[str]:
    """Decimal numbers shown with more than 4 significant digits (0.04507 has 4, 0.7633182 has 7)."""
    return [n for n in DECIMAL.findall(text) if len(n.replace(",", "").replace(".", "").lstrip("0")) > 4]


def test_stage_metadata_is_rounded_and_typed(demo_run):
    [mat] = graphql(demo_run.port, STAGE_METADATA)["assetOrError"]["assetMaterializations"]
    kinds = {e["label"]: e["__typename"] for e in mat["metadataEntries"]}
    floats = {e["label"]: e["floatValue"] for e in mat["metadataEntries"] if "floatValue" in e}
    assert {"spearman", "ndcg_at_10", "final_val_loss", "holdout_top1_6digit", "seconds"} <= set(floats)
    assert all(significant(v) == v for v in floats.values()), floats
    assert kinds["initialised_from"] == kinds["checkpoint"] == "PathMetadataEntry"
    assert "metrics" not in kinds and "JsonMetadataEntry" not in {kinds[k] for k in kinds if k != "config"}


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium; .ci/run does)")
def test_ui_first_visit(demo_run):
    """What a newcomer sees after `make demo` and `make dev`: no community dialog over the page, the demo's
    run on Overview's timeline, and numbers on the stage and index pages a person reads at a glance. Saves
    the lineage and stage screenshots (NAICS_UI_SCREENSHOTS=folder keeps them; scripts/ui_screenshots.py
    makes docs/img's)."""
    timeline = ui_screenshots.page_text(f"{demo_run.base}/overview/activity/timeline")
    assert "Join the Dagster community" not in timeline
    assert "everything_job" in timeline
    stage = ui_screenshots.page_text(f"{demo_run.base}/assets/stage_3")
    assert "spearman" in stage and "ranking_vs_tree" in stage
    assert not long_numbers(stage), long_numbers(stage)
    index = ui_screenshots.page_text(f"{demo_run.base}/assets/sampling_index_03_stage_hard")
    assert "Negatives short" in index, "the mix table is not shown inline"   # behind [Show Markdown] past 1,000 chars
    assert not long_numbers(index), long_numbers(index)
    shots = ui_screenshots.take(demo_run.base, demo_run.tmp / "shots")
    assert all(p.stat().st_size > 20_000 for p in shots)
    keep = os.environ.get("NAICS_UI_SCREENSHOTS")
    if keep:
        for p in shots:
            shutil.copy(p, Path(keep) / p.name)
