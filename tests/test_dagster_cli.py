"""The real `dagster` CLI on a fresh Dagster instance, as a user types it."""
import os
import subprocess

from naics_pipeline.settings import REPO_ROOT
from tests.census_fixtures import write_census_folder
from tests.dagster_server import DAGSTER_BIN, graphql, webserver

STALE_QUERY = "{ assetNodes { assetKey { path } staleStatus staleCauses { key { path } reason } } }"


def test_select_stage_3_from_a_fresh_instance_leaves_nothing_stale(tmp_path):
    """`--select stage_3` alone, nothing materialized before: the never-materialized upstream is built
    first in a run of its own, stage_3 trains, and afterwards the catalog holds no stale asset."""
    home = tmp_path / "home"
    home.mkdir()
    env = {"DAGSTER_HOME": str(home), "NAICS_STORAGE_ROOT": str(tmp_path / "store"),
           "NAICS_SOURCE": str(write_census_folder(tmp_path / "census")), "NAICS_ENCODER": "hashing",
           "NAICS_EPOCHS": "1", "NAICS_BATCH_SIZE": "64", "NAICS_MAX_PAIRS_PER_EPOCH": "256",
           "NAICS_ACCELERATOR": "cpu", "NAICS_DEVICES": "1"}
    done = subprocess.run([str(DAGSTER_BIN / "dagster"), "asset", "materialize", "--select", "stage_3",
                           "-m", "naics_pipeline"], cwd=REPO_ROOT, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "upstream never materialized" in done.stdout + done.stderr
    assert (tmp_path / "store" / "training" / "stage_3" / "model.pt").is_file()

    with webserver(env, tmp_path / "webserver.log") as port:
        nodes = graphql(port, STALE_QUERY)["assetNodes"]
    status = {"/".join(n["assetKey"]["path"]): n["staleStatus"] for n in nodes}
    upstream = {"naics_source", "naics_descriptions", "naics_index_holdout", "naics_graph", "naics_distances",
                "naics_triplets", "sampling_index_01_stage_easy", "sampling_index_02_stage_medium",
                "sampling_index_03_stage_hard", "text_embeddings", "stage_1", "stage_2"}
    causes = {"/".join(n["assetKey"]["path"]): n["staleCauses"] for n in nodes if n["staleStatus"] == "STALE"}
    assert not causes, causes
    assert {k: status[k] for k in upstream | {"stage_3"}} == {k: "FRESH" for k in upstream | {"stage_3"}}
    # Downstream of stage_3 was not selected and was never built: missing, not stale.
    assert status["training_report"] == "MISSING"
