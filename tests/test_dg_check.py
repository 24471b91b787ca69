"""`dg check defs`, the dg CLI's own view of the project (pyproject's [tool.dg]): part of the suite so
that it runs beside the other tests instead of before them."""
import os
import subprocess

from naics_pipeline.settings import REPO_ROOT
from tests.dagster_server import DAGSTER_BIN


def test_dg_check_defs(tmp_path):
    """Fails when dg cannot load the definitions (checked: a syntax error in a defs module)."""
    done = subprocess.run([str(DAGSTER_BIN / "dg"), "check", "defs"], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "DAGSTER_HOME": str(tmp_path)})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "All definitions loaded successfully" in done.stdout + done.stderr
