"""Rerun on source change (sensor with a cursor) and the weekly full refresh (schedule, off by default)."""
import hashlib
import json
import os

import dagster as dg

from naics_pipeline.defs.resources import SourceResource
from naics_pipeline.fingerprint import changed_roles, fingerprint_source


def sensor_interval_seconds() -> int:
    return int(os.environ.get("NAICS_SENSOR_INTERVAL_SECONDS", "3600"))


def sensor_includes_training() -> bool:
    return os.environ.get("NAICS_SENSOR_TRAINING", "1") != "0"


def refresh_selection(include_training: bool) -> dg.AssetSelection:
    groups = ["source", "graph", "tables", "curricula"] + (["training", "evaluation"] if include_training else [])
    return dg.AssetSelection.groups(*groups)


def build_source_sensor(job) -> dg.SensorDefinition:
    @dg.sensor(name="naics_source_sensor", job=job, minimum_interval_seconds=sensor_interval_seconds(),
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="Fingerprints the NAICS source (sha256 per file, or ETag/Last-Modified for a URL) and "
                           "requests a refresh run when it changes. The first tick records a baseline.")
    def naics_source_sensor(context: dg.SensorEvaluationContext, source: SourceResource):
        try:
            current = fingerprint_source(source.location, timeout=source.timeout_seconds)
        except Exception as exc:  # a failing read is skipped and retried next tick, never a crash loop
            context.log.warning(f"cannot fingerprint NAICS source {source.location}: {exc}")
            return dg.SkipReason(f"source unreadable ({type(exc).__name__}: {exc}); retrying next tick")
        previous = json.loads(context.cursor) if context.cursor else None
        context.update_cursor(json.dumps(current, sort_keys=True))
        if previous is None:
            return dg.SkipReason(f"baseline fingerprint recorded for {source.location}")
        changed = changed_roles(previous, current)
        if not changed:
            return dg.SkipReason("source unchanged")
        run_key = hashlib.sha256(json.dumps(current, sort_keys=True).encode()).hexdigest()[:32]
        return dg.RunRequest(run_key=run_key,
                             tags={"naics/changed_files": ",".join(changed), "naics/source": source.location})

    return naics_source_sensor
