"""Rerun on source change: the sensor fingerprints the source each tick and keeps the last fingerprint
in its cursor; a change requests `refresh_job`."""
import hashlib
import json

import dagster as dg

from naics_pipeline import settings
from naics_pipeline.data.fingerprint import changed_roles, fingerprint_source
from naics_pipeline.defs.jobs import refresh_selection
from naics_pipeline.defs.resources import AutomationResource, SourceResource


@dg.sensor(name="naics_source_sensor", job_name="refresh_job",
           minimum_interval_seconds=settings.sensor_interval_seconds(),
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Fingerprints the NAICS source (its vintage, and sha256 per file or ETag/Last-Modified for "
                       "a URL) and requests a refresh run when it changes, a new vintage's files included. The "
                       "first tick records a baseline. While the source cannot be read (a missing folder, no "
                       "network for the Census URL) every tick is skipped, requests nothing and retries on "
                       "the next; the tick's skip reason says why.")
def naics_source_sensor(context: dg.SensorEvaluationContext, source: SourceResource,
                        automation: AutomationResource):
    location = source.resolved_location
    try:
        current = fingerprint_source(location, timeout=source.timeout_seconds, vintage=source.vintage)
    except Exception as exc:  # a failing read is skipped and retried next tick, never a crash loop
        context.log.warning(f"cannot fingerprint NAICS source {location}: {exc}")
        return dg.SkipReason(f"source unreadable, nothing requested, retrying next tick: {location} "
                             f"({type(exc).__name__}: {exc})")
    previous = json.loads(context.cursor) if context.cursor else None
    context.update_cursor(json.dumps(current, sort_keys=True))
    if previous is None:
        return dg.SkipReason(f"baseline fingerprint recorded for {location}")
    changed = changed_roles(previous, current)
    if not changed:
        return dg.SkipReason("source unchanged")
    run_key = hashlib.sha256(json.dumps(current, sort_keys=True).encode()).hexdigest()[:32]
    if automation.retrain_on_change:
        keys = None  # the whole refresh_job
    else:
        keys = sorted(refresh_selection(retrain=False).resolve(context.repository_def.asset_graph), key=str)
    vintage = current.get("vintage", "")
    if "vintage" in changed:  # a new NAICS revision: every file is new, and so is the official shape
        context.log.info(f"NAICS vintage changed: {previous.get('vintage')} -> {vintage}")
        vintage = f"{previous.get('vintage')} -> {vintage}"
    return dg.RunRequest(run_key=run_key, asset_selection=keys,
                         tags={"naics/changed_files": ",".join(r for r in changed if r != "vintage"),
                               "naics/vintage": vintage, "naics/source": location})
