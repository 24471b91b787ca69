"""Metadata as the UI shows it: rounding, typed entries, the narrow mix tables, one shortfall line."""
from pathlib import Path

import dagster as dg
import numpy as np

from naics_pipeline.defs.assets.curricula import shortfall_summary
from naics_pipeline.defs.metadata import readable
from naics_pipeline.report.numbers import cell, significant
from naics_pipeline.report.tables import mix_markdown

META = {"mix": "per_pair", "requested_mix": {"1": 0.5, "2": 0.3, "8": 0.2},
        "realized_mix": {"1": 0.8, "2": 0.15, "8": 0.05}, "candidates": {str(h): 10 * h for h in range(1, 9)},
        "allocation": {"1": 8, "2": 5, "8": 3}, "realized_negatives": {"1": 1600, "2": 300, "8": 100},
        "shortfalls": {"2": {"pairs_short": 40, "negatives_short": 300, "went_to": {"1": 300}},
                       "8": {"pairs_short": 90, "negatives_short": 300, "went_to": {"2": 100, "1": 200}}}}


def test_numbers_keep_four_significant_digits():
    assert significant(0.835033129493773) == 0.835 and significant(1234.5678) == 1235.0
    assert significant(0.000123456) == 0.0001235 and significant(0.0) == 0.0
    assert (cell(976051440), cell(0.76331864), cell(12.3456), cell(None)) == ("976,051,440", "0.7633", "12.35", "n/a")


def test_readable_rounds_types_and_drops_empty_values(tmp_path):
    meta = readable({"spearman": 0.7633186482399343, "pairs": np.int64(538680), "checkpoint": tmp_path / "m.pt",
                     "usage": {"share": [0.2142857164144516]}, "missing": None, "done": True,
                     "given": dg.MetadataValue.float(2.3456789)})
    assert meta["spearman"] == dg.MetadataValue.float(0.7633) and meta["given"].value == 2.346
    assert meta["pairs"] == 538680 and type(meta["pairs"]) is int and meta["done"] is True
    assert meta["checkpoint"] == dg.MetadataValue.path(str(Path(tmp_path / "m.pt")))
    assert meta["usage"].data == {"share": [0.2143]} and "missing" not in meta


def test_mix_tables_are_narrow_and_short():
    md = mix_markdown(META)
    rows = [line for line in md.splitlines() if line.startswith("|")]
    assert max(line.count("|") - 1 for line in rows) <= 5     # five columns at most: no sideways scroll
    assert len(md) < 1000                                       # the UI renders it inline below 1,000 characters
    assert "| 8 | 90 | 300 | 1 (67%) |" in md


def test_one_shortfall_line_per_index():
    line = shortfall_summary("03_stage_hard", META)
    assert "\n" not in line and line.startswith("Insufficient negatives in sampling index 03_stage_hard: hardness 2, 8")
    assert "600 of 2,000 negatives per epoch (30.0%)" in line and "most pairs short at hardness 8 (90)" in line
    assert shortfall_summary("01_stage_easy", {**META, "shortfalls": {}}) is None
