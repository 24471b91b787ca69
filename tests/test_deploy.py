"""The deployment of deploy/, run for real: a PostgreSQL server started here, `dagster code-server start`,
`dagster-webserver` on deploy/workspace.yaml and `dagster-daemon run`, all on deploy/dagster.yaml with a
plain postgresql:// DAGSTER_POSTGRES_URL and the multiprocess executor. One server and one set of
processes serve every test of the module, in order: a run launched as the UI's Materialize button
launches it, a source change picked up by the daemon's sensor, a training step killed with SIGKILL,
and two training runs sharing the `gpu` pool."""
from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import pytest

from naics_pipeline.settings import REPO_ROOT
from tests.census_fixtures import write_census_folder
from tests.dagster_server import DAGSTER_BIN, free_port

# Debian's server binaries (postgresql-15 on these machines; the newest installed version is taken).
PG_BIN = Path(os.environ.get("NAICS_TEST_PG_BIN") or max(glob.glob("/usr/lib/postgresql/*/bin"),
                                                         key=lambda p: int(Path(p).parent.name), default="/nowhere"))
LOCATION = {"repositoryLocationName": "naics_pipeline", "repositoryName": "__repository__"}
DONE = {"SUCCESS", "FAILURE", "CANCELED"}

pytestmark = pytest.mark.skipif(not (PG_BIN / "initdb").is_file(),
                                reason=f"PostgreSQL server binaries not found ({PG_BIN}/initdb; "
                                       "apt-get install postgresql-15, as .ci/run does)")


# --- PostgreSQL ------------------------------------------------------------------------------------------
def _as_postgres() -> dict:
    """initdb refuses to run as root: run initdb and the server as the `postgres` user then (the server
    itself is the child, so it gets the test's signals directly)."""
    return {"user": "postgres", "group": "postgres", "extra_groups": []} if os.geteuid() == 0 else {}


@pytest.fixture(scope="module")
def postgres_url():
    """A throw-away cluster on a free loopback port; yields a plain postgresql:// URL."""
    folder = Path(tempfile.mkdtemp(prefix="naics-pg-"))   # not under pytest's root-only tmp folder
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
    folder.chmod(0o700)
    port = free_port()
    subprocess.run([str(PG_BIN / "initdb"), "-D", str(folder / "data"), "-A", "trust", "-U", "dagster",
                    "-E", "UTF8", "--no-sync"], check=True, capture_output=True, timeout=120, **_as_postgres())
    log = open(folder / "server.log", "w")
    server = subprocess.Popen([str(PG_BIN / "postgres"), "-D", str(folder / "data"), "-h", "127.0.0.1",
                               "-p", str(port), "-k", str(folder), "-c", "fsync=off", "-c", "synchronous_commit=off",
                               "-c", "full_page_writes=off", "-c", "max_connections=300"],
                              stdout=log, stderr=subprocess.STDOUT, **_as_postgres())
    try:
        deadline = time.time() + 60
        while subprocess.run([str(PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)],
                             capture_output=True).returncode != 0:
            assert server.poll() is None and time.time() < deadline, (folder / "server.log").read_text()
            time.sleep(0.2)
        subprocess.run([str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "dagster", "dagster"],
                       check=True, capture_output=True, timeout=60)
        yield f"postgresql://dagster@127.0.0.1:{port}/dagster"
    finally:
        server.send_signal(signal.SIGINT)      # fast shutdown
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        shutil.rmtree(folder, ignore_errors=True)


def sql(url: str, query: str, *args) -> list[tuple]:
    import psycopg2

    with contextlib.closing(psycopg2.connect(url)) as con, con.cursor() as cur:
        cur.execute(query, args)
        return cur.fetchall()


# --- the Dagster processes ---------------------------------------------------------------------------------
def _start(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(args, cwd=REPO_ROOT, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _wait(what: str, ready, procs: dict[str, subprocess.Popen], logs: Path, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while not ready():
        dead = [name for name, p in procs.items() if p.poll() is not None]
        if dead or time.time() > deadline:
            tails = "\n".join(f"--- {p.name}\n{p.read_text()[-2500:]}" for p in sorted(logs.glob("*.log")))
            pytest.fail(f"{what}: {'exited: ' + ', '.join(dead) if dead else 'timed out'}\n{tails}")
        time.sleep(0.5)


def stop_all(procs) -> None:
    """SIGINT to every process group at once, SIGKILL to what is left after 8 s (measured: the webserver
    and the daemon stop in 2-4 s; `dagster code-server start` was still up 40 s after SIGINT or SIGTERM)."""
    procs = [p for p in procs if p.poll() is None]
    for p in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGINT)
    deadline = time.time() + 8
    for p in procs:
        try:
            p.wait(timeout=max(deadline - time.time(), 0.1))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=30)


def gql(port: int, query: str, variables: dict | None = None) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/graphql",
                                 data=json.dumps({"query": query, "variables": variables or {}}).encode(),
                                 headers={"Content-Type": "application/json"})
    answer = json.loads(urllib.request.urlopen(req, timeout=120).read())
    assert "errors" not in answer, answer["errors"]
    return answer["data"]


LOCATION_QUERY = """{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename ... on PythonError { message } } } } } }"""


def _location_loaded(port: int) -> bool:
    try:
        entries = gql(port, LOCATION_QUERY)["workspaceOrError"]["locationEntries"]
    except OSError:
        return False
    return any(e["locationOrLoadError"] and e["locationOrLoadError"]["__typename"] == "RepositoryLocation"
               for e in entries)


def _code_server_up(port: int) -> bool:
    return subprocess.run([str(DAGSTER_BIN / "dagster"), "api", "grpc-health-check", "-p", str(port),
                           "-h", "127.0.0.1"], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def deployment(postgres_url, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("deploy")
    home, logs = tmp / "dagster_home", tmp / "logs"
    home.mkdir()
    logs.mkdir()
    shutil.copy(REPO_ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
    curricula = tmp / "curricula"        # two stages of the plan: fewer steps in every run
    curricula.mkdir()
    for name in ("01_stage_easy", "02_stage_medium"):
        shutil.copy(REPO_ROOT / "curricula" / f"{name}.yaml", curricula)
    (curricula / "stages.yaml").write_text("stages:\n  - curriculum: 01_stage_easy\n    epochs: 1\n"
                                           "  - curriculum: 02_stage_medium\n    epochs: 1\n")
    grpc_port, web_port = free_port(), free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), "DAGSTER_POSTGRES_URL": postgres_url,
           "DAGSTER_CODE_SERVER_HOST": "127.0.0.1", "DAGSTER_CODE_SERVER_PORT": str(grpc_port),
           "NAICS_EXECUTOR": "multiprocess", "NAICS_STORAGE_ROOT": str(tmp / "store"),
           "NAICS_SOURCE": str(write_census_folder(tmp / "census")), "NAICS_ENCODER": "hashing",
           "NAICS_EPOCHS": "1", "NAICS_BATCH_SIZE": "64", "NAICS_MAX_PAIRS_PER_EPOCH": "256",
           "NAICS_ACCELERATOR": "cpu", "NAICS_DEVICES": "1", "NAICS_SENSOR_INTERVAL_SECONDS": "2",
           "NAICS_SENSOR_TRAINING": "0", "NAICS_CURRICULA_DIR": str(curricula)}
    procs = {"code-server": _start([str(DAGSTER_BIN / "dagster"), "code-server", "start", "-h", "127.0.0.1",
                                    "-p", str(grpc_port), "-m", "naics_pipeline.definitions"],
                                   env, logs / "code-server.log")}
    try:
        _wait("dagster code-server start", lambda: _code_server_up(grpc_port), procs, logs)
        workspace = str(REPO_ROOT / "deploy" / "workspace.yaml")
        procs["webserver"] = _start([str(DAGSTER_BIN / "dagster-webserver"), "-w", workspace, "-h", "127.0.0.1",
                                     "-p", str(web_port)], env, logs / "webserver.log")
        procs["daemon"] = _start([str(DAGSTER_BIN / "dagster-daemon"), "run", "-w", workspace], env,
                                 logs / "daemon.log")
        _wait("dagster-webserver loading the code server", lambda: _location_loaded(web_port), procs, logs)
        yield SimpleNamespace(tmp=tmp, port=web_port, url=postgres_url, store=tmp / "store", env=env,
                              census=tmp / "census", procs=procs, logs=logs)
    finally:
        stop_all(procs.values())


# --- runs, as the UI launches and watches them ---------------------------------------------------------------
LAUNCH = """mutation($params: ExecutionParams!) { launchRun(executionParams: $params) { __typename
  ... on LaunchRunSuccess { run { runId status } } ... on PythonError { message }
  ... on RunConfigValidationInvalid { errors { message } } ... on InvalidSubsetError { message } } }"""
RUN = "query($id: ID!) { runOrError(runId: $id) { ... on Run { status jobName tags { key value } } } }"


def materialize(d, *assets: str, run_config: dict | None = None) -> tuple[str, str]:
    """What the UI's Materialize button sends: the implicit asset job with an asset selection."""
    params = {"selector": {**LOCATION, "jobName": "__ASSET_JOB", "assetSelection": [{"path": [a]} for a in assets],
                           "assetCheckSelection": []},
              "runConfigData": run_config or {}, "executionMetadata": {"tags": []}}
    answer = gql(d.port, LAUNCH, {"params": params})["launchRun"]
    assert answer["__typename"] == "LaunchRunSuccess", answer
    return answer["run"]["runId"], answer["run"]["status"]


def wait_run(d, run_id: str, timeout: float = 300) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = gql(d.port, RUN, {"id": run_id})["runOrError"]["status"]
        if status in DONE:
            return status
        time.sleep(0.5)
    pytest.fail(f"run {run_id} still not done after {timeout} s")


def events(d, run_id: str, *types: str) -> list[dict]:
    """The run's events as stored in PostgreSQL: type, step, timestamp, and the event itself."""
    rows = sql(d.url, "SELECT dagster_event_type, step_key, timestamp, event, asset_key FROM event_logs "
                      "WHERE run_id = %s ORDER BY id", run_id)
    out = [{"type": t, "step": s, "at": ts, "event": dg.deserialize_value(e, dg.EventLogEntry), "asset": a}
           for t, s, ts, e, a in rows]
    return [e for e in out if not types or e["type"] in types]


def materializations(d, run_id: str) -> list[str]:
    return [json.loads(e["asset"])[0] for e in events(d, run_id, "ASSET_MATERIALIZATION")]


def run_log(d, run_id: str) -> str:
    return "\n".join(f"{e['type']} {e['step']}: {e['event'].user_message[:300]}" for e in events(d, run_id))


# --- the tests -------------------------------------------------------------------------------------------
def test_materialize_button_run_is_queued_dequeued_by_the_daemon_and_succeeds(deployment):
    """The Materialize button of stage_1, clicked twice: two queued runs (the second is the pool test's)."""
    d = deployment
    launched = [materialize(d, "stage_1") for _ in range(2)]
    assert [status for _, status in launched] == ["QUEUED", "QUEUED"]   # the QueuedRunCoordinator took them
    d.gpu_runs = [run_id for run_id, _ in launched]
    assert [wait_run(d, r) for r in d.gpu_runs] == ["SUCCESS", "SUCCESS"], [run_log(d, r) for r in d.gpu_runs]
    for run_id in d.gpu_runs:
        kinds = [e["type"] for e in events(d, run_id)]
        assert kinds.index("PIPELINE_ENQUEUED") < kinds.index("PIPELINE_STARTING") < kinds.index("PIPELINE_START") \
            < kinds.index("PIPELINE_SUCCESS"), kinds
        assert materializations(d, run_id) == ["stage_1"]
    # Nothing but the daemon dequeues: its QueuedRunCoordinatorDaemon says so.
    assert re.search(r"QueuedRunCoordinatorDaemon - \S*INFO\S* - Launched \d runs", (d.logs / "daemon.log").read_text())
    # From a fresh instance the never-built upstream ran first, in a run of its own, also in Postgres.
    [(child,)] = sql(d.url, "SELECT run_id FROM run_tags JOIN runs USING (run_id) WHERE key = "
                            "'naics/needed_by_run' AND value IN %s", tuple(d.gpu_runs))
    assert "naics_triplets" in materializations(d, child)
    # The stage's TensorBoard log: the metadata points at it, and it holds losses, mix and hyperparameters.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    [materialized] = events(d, d.gpu_runs[0], "ASSET_MATERIALIZATION")
    logdir = Path(materialized["event"].asset_materialization.metadata["tensorboard"].path)
    assert logdir == d.store / "training" / "stage_1" / "tensorboard"
    versions = sorted(logdir.iterdir())
    assert [v.name for v in versions] == ["version_0", "version_1"]      # one per training of the stage
    acc = EventAccumulator(str(versions[-1]))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    history = json.loads((d.store / "training" / "stage_1" / "history.json").read_text())  # what the plots read
    per_epoch = set(history[-1]) - {"epoch"}
    assert "train_loss" in per_epoch and per_epoch | {"curriculum/realized_mix/hardness_1"} <= tags, tags
    assert acc.Scalars("curriculum/requested_mix/hardness_1")[0].value > 0
    assert "train/batch_size: 64" in (versions[-1] / "hparams.yaml").read_text()


def test_two_training_runs_share_the_gpu_pool_one_step_at_a_time(deployment):
    """The two stage_1 runs of the test above, both launched at once with the `gpu` pool at limit 1."""
    d = deployment
    runs = getattr(d, "gpu_runs", None)
    if not runs:
        pytest.fail("the runs are launched by test_materialize_button_run_is_queued_dequeued_by_the_daemon_...")

    def span(run_id: str, step: str | None, start: str, end: str) -> tuple[float, float]:
        found = {e["type"]: e["at"] for e in events(d, run_id, start, end) if e["step"] == step}
        return found[start].timestamp(), found[end].timestamp()
    steps = sorted(span(r, "stage_1", "STEP_START", "STEP_SUCCESS") for r in runs)
    assert steps[0][1] <= steps[1][0], steps                       # the training steps never overlap
    # ...though both runs were submitted before the first step finished: the later one waited for the slot.
    enqueued = [e["at"].timestamp() for r in runs for e in events(d, r, "PIPELINE_ENQUEUED")]
    assert max(enqueued) < steps[0][1], (enqueued, steps)


SENSOR_TICKS = """query($s: SensorSelector!) { sensorOrError(sensorSelector: $s) { ... on Sensor {
  sensorState { status ticks(limit: 1) { status skipReason runIds } } } } }"""
REFRESH_RUNS = """{ runsOrError(filter: {pipelineName: "refresh_job"}) { ... on Runs { results { runId status
  tags { key value } } } } }"""


def test_source_change_makes_the_daemons_sensor_launch_refresh_job(deployment):
    d = deployment
    selector = {**LOCATION, "sensorName": "naics_source_sensor"}

    def ticks():
        return gql(d.port, SENSOR_TICKS, {"s": selector})["sensorOrError"]["sensorState"]["ticks"]
    def has_baseline() -> bool:   # the latest tick recorded the baseline, or compared against it
        return any(w in (t["skipReason"] or "") for t in ticks()[:1] for w in ("baseline", "source unchanged"))
    _wait("the sensor's baseline tick", has_baseline, d.procs, d.logs, timeout=120)
    assert not gql(d.port, REFRESH_RUNS)["runsOrError"]["results"]
    write_census_folder(d.census, index={"111110": ["Soybean farming", "Soy milk beans, growing"]})
    _wait("refresh_job requested by the sensor", lambda: gql(d.port, REFRESH_RUNS)["runsOrError"]["results"],
          d.procs, d.logs, timeout=120)
    [run] = gql(d.port, REFRESH_RUNS)["runsOrError"]["results"]
    assert {t["key"]: t["value"] for t in run["tags"]}["naics/changed_files"] == "index"
    assert wait_run(d, run["runId"]) == "SUCCESS", run_log(d, run["runId"])
    done = materializations(d, run["runId"])
    assert {"naics_source", "naics_triplets", "sampling_index_02_stage_medium"} <= set(done)
    assert "stage_1" not in done                                  # NAICS_SENSOR_TRAINING=0


def test_sigkilled_training_step_is_retried_and_resumes_from_its_checkpoint(deployment):
    """SIGKILL the stage_2 step process once its first checkpoint is on disk, as the OOM killer would:
    the multiprocess executor reports the crash, the step's retry policy reruns it, and it resumes."""
    d = deployment
    stage_1_before = sql(d.url, "SELECT count(*) FROM event_logs WHERE dagster_event_type = "
                                "'ASSET_MATERIALIZATION' AND asset_key LIKE '%%\"stage_1\"%%'")
    # Launchpad config for the training resource replaces its environment-bound values: all are given.
    config = {"encoder": "hashing", "accelerator": "cpu", "devices": "1", "epochs": 10, "batch_size": 64,
              "max_pairs_per_epoch": 256}
    run_id, _ = materialize(d, "stage_2", run_config={"resources": {"training": {"config": config}}})
    _wait("stage_2's step", lambda: events(d, run_id, "STEP_START") or wait_done(d, run_id), d.procs, d.logs)
    [start] = events(d, run_id, "STEP_START")
    checkpoint = d.store / "training" / "stage_2" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 240
    while not checkpoint.exists() and time.time() < deadline and not (d.store / "training" / "stage_2" /
                                                                     "model.pt").exists():
        time.sleep(0.02)
    assert checkpoint.exists(), "no checkpoint of stage_2 seen before it finished: " + run_log(d, run_id)
    os.kill(start["event"].dagster_event.pid, signal.SIGKILL)        # the step's own process, mid-stage
    assert wait_run(d, run_id) == "SUCCESS", run_log(d, run_id)
    kinds = [e["type"] for e in events(d, run_id) if e["step"] == "stage_2"]
    assert kinds.count("STEP_START") == 1 and kinds.count("STEP_RESTARTED") == 1, kinds
    assert "STEP_UP_FOR_RETRY" in kinds and "STEP_FAILURE" not in kinds
    crash = [e for e in events(d, run_id, "ENGINE_EVENT") if "terminated by signal 9" in e["event"].user_message]
    assert crash, run_log(d, run_id)
    [materialized] = events(d, run_id, "ASSET_MATERIALIZATION")
    assert materialized["event"].asset_materialization.metadata["resumed_from_checkpoint"].value is True
    assert materializations(d, run_id) == ["stage_2"]               # nothing finished was recomputed
    assert sql(d.url, "SELECT count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION' "
                      "AND asset_key LIKE '%%\"stage_1\"%%'") == stage_1_before


def wait_done(d, run_id: str) -> bool:
    return gql(d.port, RUN, {"id": run_id})["runOrError"]["status"] in DONE
