"""Run a job through a Dagster webserver and wait for it: what `make demo` does with `everything_job`.

`dg launch --job` executes the run inside the calling process, and such a run carries no code-location
origin: the UI lists it under Runs but not under its job (Jobs, Overview's timeline). Submitted through the
webserver instead (Dagster's GraphQL client), the run belongs to the `naics_pipeline` location and shows
on every page. With --port, the run goes to a UI already serving this project (say `make dev`'s);
without, `dg dev` is started for the run and stopped once it is done, its log (the run's) on this
terminal. Exits 1 when the run does not succeed.

    python scripts/run_job.py everything_job              # starts and stops `dg dev` itself
    python scripts/run_job.py data_job --port 3000        # a UI that is already up
"""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

LOCATION = "naics_pipeline"   # pyproject.toml's [tool.dg.project] code_location_name, workspace.yaml's
ROOT = Path(__file__).resolve().parents[1]
FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_up(port: int, server: subprocess.Popen | None, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2)
            return
        except OSError:
            if server is not None and server.poll() is not None:
                raise SystemExit(f"run_job: dg dev exited with status {server.returncode} before serving") from None
            if time.time() > deadline:
                raise SystemExit(f"run_job: no Dagster webserver answered on port {port} in {timeout:.0f} s") from None
            time.sleep(1)


@contextlib.contextmanager
def dev_server(port: int):
    """`dg dev` on `port` from the project root (its output on this terminal), stopped on exit."""
    dg = Path(sys.executable).parent / "dg"
    server = subprocess.Popen([str(dg), "dev", "-h", "127.0.0.1", "-p", str(port)], cwd=ROOT,
                              env={**os.environ, "VIRTUAL_ENV": str(Path(sys.executable).parents[1])},
                              start_new_session=True)
    try:
        _wait_until_up(port, server)
        yield
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:   # dg dev has been seen to hang on shutdown
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)


def run(job: str, port: int, poll_seconds: float = 2.0) -> tuple[str, str]:
    """Submits `job` to the webserver on `port` and waits for it; returns (run id, final status)."""
    from dagster_graphql import DagsterGraphQLClient

    client = DagsterGraphQLClient("127.0.0.1", port_number=port)
    run_id = client.submit_job_execution(job, repository_location_name=LOCATION)
    print(f"run_job: {job} submitted as run {run_id} (http://127.0.0.1:{port}/runs/{run_id})", flush=True)
    while (status := client.get_run_status(run_id).value) not in FINISHED:
        time.sleep(poll_seconds)
    return run_id, status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("job", help="a job of the naics_pipeline location, e.g. everything_job")
    parser.add_argument("--port", type=int, help="a running webserver's port; else dg dev is started for the run")
    args = parser.parse_args(argv)
    if args.port:
        _wait_until_up(args.port, None, timeout=10)
        run_id, status = run(args.job, args.port)
    else:
        port = _free_port()
        with dev_server(port):
            run_id, status = run(args.job, port)
    print(f"run_job: {args.job} run {run_id} finished: {status}", flush=True)
    return 0 if status == "SUCCESS" else 1


if __name__ == "__main__":
    sys.exit(main())
