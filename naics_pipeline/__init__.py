"""naics-pipeline: NAICS taxonomy -> hardness-labelled triplets -> curriculum-trained embeddings.

The core modules import nothing from dagster, so they run where dagster is not installed (the GPU
machine); the Dagster definitions are loaded only when dagster is importable.
"""
try:
    from naics_pipeline.defs import defs  # noqa: F401
except ModuleNotFoundError as exc:  # pragma: no cover - exercised on machines without dagster
    if exc.name not in ("dagster", "pydantic"):
        raise
