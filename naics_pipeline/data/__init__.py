"""Source files -> descriptions -> graph -> distances -> triplets, and the checks over them.

Names are imported on first use: the table builders need DuckDB, which the training machine lacks,
while `naics_pipeline.data.descriptions` and `distances` (read by training) need only pyarrow and numpy.
"""
import importlib

_EXPORTS = {"build_descriptions": "descriptions", "exclusion_pairs": "descriptions",
            "held_out_exclusion_pairs": "descriptions", "build_data": "pipeline", "SourceError": "source",
            "SourceFiles": "source", "fetch_source": "source"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"naics_pipeline.data.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'naics_pipeline.data' has no attribute {name!r}")
