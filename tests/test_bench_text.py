"""benchmarks/bench_text.py end to end on a small trained store: the held-out rows of the model and a
baseline, and the written split from a written-descriptions file."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.census_fixtures import trained_store

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return trained_store(tmp_path_factory.mktemp("bench_text"), epochs=1)


def test_bench_text_scores_held_out_and_the_written_test_half(store, tmp_path):
    six = [r for r in pq.read_table(store.descriptions).to_pylist() if r["level"] == 6]
    written = tmp_path / "written.csv"
    with open(written, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "code", "style", "half"])
        for i, r in enumerate(six[:6]):
            w.writerow([f"we do {r['title'].lower()}", r["code"], ("short", "survey")[i % 2], ("dev", "test")[i < 4]])
    out = tmp_path / "rows.json"
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_text.py"), "--root", str(store.root),
                           "--no-cv", "--methods", "model,tfidf", "--throughput-texts", "0", "--written",
                           str(written), "--out", str(out)], capture_output=True, text=True, cwd=REPO,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    by = {(r["method"], r["split"]): r for r in rows}
    assert ("tfidf", "held-out") in by and ("tfidf", "written test") in by
    model = [r for r in rows if r["method"].startswith("model (") and r["split"] == "written test"]
    assert len(model) == 1 and model[0]["entries"] == 4                     # the test half only
    assert {r["split"] for r in rows if r["method"] == "tfidf"} >= {"written test: short", "written test: survey"}
    for r in rows:
        for key in ("top1_6digit", "top5_6digit"):
            if r.get(key) is not None:
                assert 0.0 <= r[key] <= 1.0 and r.get("top5_6digit", 1.0) >= r.get("top1_6digit", 0.0)
    assert "| TF-IDF nearest training entry | written test | 4 |" in done.stdout     # the printed table


def test_profile_classify_times_every_part_and_the_torch_scores_match_numpy(store, tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "profile_classify.py"), "--root", str(store.root),
                           "--batch", "64"], capture_output=True, text=True, cwd=REPO,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-2000:]
    parts = dict(line.strip("|").split("|")[:2] for line in done.stdout.splitlines()
                 if line.startswith("| ") and not line.startswith("| part"))
    assert {"encode", "character TF-IDF transform", "fused scores (scores_torch)", "classify"} <= {
        k.strip() for k in parts}
    assert all(float(v) >= 0 for v in parts.values())
    last = done.stdout.strip().splitlines()[-1]
    gap = float(last.split("largest difference ")[1].split(",")[0])
    assert gap < 0.05 and last.endswith("same top code 1.000"), last
