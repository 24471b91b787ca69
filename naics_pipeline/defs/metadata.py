"""Asset and check metadata as the UI shows it best: every float to 4 significant digits (so the Plots
tab charts it), integers as integers, `pathlib.Path` values as path metadata, the floats inside JSON
rounded too, and entries without a value left out. Every asset passes its metadata through `readable`."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg

from naics_pipeline.report.numbers import rounded, significant


def _value(v: Any):
    if isinstance(v, dg.JsonMetadataValue):
        return dg.MetadataValue.json(rounded(v.data))
    if isinstance(v, dg.FloatMetadataValue) and v.value is not None:
        return dg.MetadataValue.float(significant(v.value))
    if isinstance(v, dg.MetadataValue):
        return v
    if isinstance(v, Path):
        return dg.MetadataValue.path(str(v))
    if isinstance(v, (dict, list, tuple)):
        return dg.MetadataValue.json(rounded(v))
    v = rounded(v)
    return dg.MetadataValue.float(v) if isinstance(v, float) else v


def readable(metadata: dict[str, Any]) -> dict[str, Any]:
    """`metadata` with each value made readable (see the module docstring); None values are dropped."""
    return {k: _value(v) for k, v in metadata.items() if v is not None}
