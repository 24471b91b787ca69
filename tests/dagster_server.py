"""Start the Dagster webserver on a given instance and ask it GraphQL questions, as the UI does."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from naics_pipeline.settings import REPO_ROOT

DAGSTER_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def graphql(port: int, query: str) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(),
                                 headers={"Content-Type": "application/json"})
    answer = json.loads(urllib.request.urlopen(req, timeout=120).read())
    assert "errors" not in answer, answer["errors"]
    return answer["data"]


@contextlib.contextmanager
def webserver(env: dict, log: Path, command: str = "dagster-webserver"):
    """`dagster-webserver` or `dagster dev` on -m naics_pipeline, or `dg dev` (as `make dev`: the project
    from pyproject.toml); yields its port once it answers."""
    port = free_port()
    args = {"dagster-webserver": [], "dagster": ["dev"], "dg": ["dev"]}[command]
    target = [] if command == "dg" else ["-m", "naics_pipeline"]
    server = subprocess.Popen([str(DAGSTER_BIN / command), *args, *target, "-h", "127.0.0.1", "-p", str(port)],
                              cwd=REPO_ROOT, env={**os.environ, "VIRTUAL_ENV": str(DAGSTER_BIN.parent), **env},
                              stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 180
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2)
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    pytest.fail(f"{command} did not start:\n" + log.read_text()[-3000:])
                time.sleep(1)
        yield port
    finally:
        _stop(server)


def _stop(server: subprocess.Popen) -> None:
    """SIGTERM to the server's process group; SIGKILL if it has not exited after 10 s (a `dagster dev`
    waiting on an open UI connection has been seen to hang on shutdown in CI)."""
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)
