"""The real `dagster` CLI and UI on a fresh Dagster instance, as a user types them. One CLI run and one
`dagster dev` serve every test here (each start-up costs 10-30 s of the suite)."""
import os
import shutil
import subprocess
from types import SimpleNamespace

import pytest

from naics_pipeline.definitions import build_defs
from naics_pipeline.settings import REPO_ROOT
from tests.census_fixtures import write_census_folder
from tests.conftest import data_definitions
from tests.dagster_server import DAGSTER_BIN, graphql, webserver

STALE_QUERY = "{ assetNodes { assetKey { path } staleStatus staleCauses { key { path } reason } } }"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def selected_stage_3(tmp_path_factory):
    """`dagster asset materialize --select stage_3` alone, nothing materialized before; then `dagster dev`
    on the same instance (its sensor's first tick only records a baseline)."""
    tmp = tmp_path_factory.mktemp("cli")
    home = tmp / "home"
    home.mkdir()
    env = {"DAGSTER_HOME": str(home), "NAICS_STORAGE_ROOT": str(tmp / "store"),
           "NAICS_SOURCE": str(write_census_folder(tmp / "census")), "NAICS_ENCODER": "hashing",
           "NAICS_EPOCHS": "1", "NAICS_BATCH_SIZE": "64", "NAICS_MAX_PAIRS_PER_EPOCH": "256",
           "NAICS_ACCELERATOR": "cpu", "NAICS_DEVICES": "1"}
    done = subprocess.run([str(DAGSTER_BIN / "dagster"), "asset", "materialize", "--select", "stage_3",
                           "-m", "naics_pipeline"], cwd=REPO_ROOT, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with webserver(env, tmp / "dev.log", command="dagster") as port:
        yield SimpleNamespace(tmp=tmp, port=port, output=done.stdout + done.stderr)


def test_select_stage_3_from_a_fresh_instance_leaves_nothing_stale(selected_stage_3):
    """The never-materialized upstream is built first in a run of its own, stage_3 trains, and
    afterwards the catalog holds no stale asset."""
    assert "upstream never materialized" in selected_stage_3.output
    assert (selected_stage_3.tmp / "store" / "training" / "stage_3" / "model.pt").is_file()
    nodes = graphql(selected_stage_3.port, STALE_QUERY)["assetNodes"]
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


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium; .ci/run does)")
def test_ui_renders_the_asset_graph(selected_stage_3):
    tmp = selected_stage_3.tmp
    shot = tmp / "asset-graph.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run",
                    f"--user-data-dir={tmp / 'chrome'}", "--window-size=1600,1000",
                    "--virtual-time-budget=15000", f"--screenshot={shot}",
                    f"http://127.0.0.1:{selected_stage_3.port}/asset-groups"], check=True, timeout=120,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert shot.is_file() and shot.stat().st_size > 20_000
    out = os.environ.get("NAICS_UI_SCREENSHOT")
    if out:
        shutil.copy(shot, out)
