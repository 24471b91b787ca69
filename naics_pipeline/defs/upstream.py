"""Materialize an asset's never-materialized ancestors before it runs.

`dagster asset materialize --select +stage_3` selects stage_3 and its direct parents only (in the CLI's
selection syntax `+` is one layer), so from a fresh clone stage_2 would find no stage_1 model and the
sampling index no triplet table. Each asset first asks the instance which of its ancestors have never
been materialized and, if any, materializes them (with their checks) in a run of their own, tagged with
the run that needed them, so the catalog stays true. Off with NAICS_BUILD_MISSING_UPSTREAM=0: the asset
then fails naming what is missing and the selection that builds it.
"""
from __future__ import annotations

import dagster as dg
from dagster_shared.check import CheckError

PARENT_RUN_TAG = "naics/needed_by_run"
RESOURCE_NAMES = ("storage", "source", "training")


def _location(context: dg.AssetExecutionContext):
    """(asset graph, implicit asset job) of the code location this run belongs to. Runs launched from
    the CLI or UI carry their repository; `dg.materialize` runs do not, and fall back to this package's
    definitions when they hold the asset (None otherwise: nothing to reason about)."""
    try:
        repo = context.repository_def
        return repo.asset_graph, repo.get_implicit_global_asset_job_def()
    except CheckError:  # what dagster raises when no repository is set on the step
        from naics_pipeline.defs import defs  # imported here: no cycle

        graph = defs.resolve_asset_graph()
        if not set(context.assets_def.keys) <= set(graph.get_all_asset_keys()):
            return None
        return graph, defs.resolve_implicit_global_asset_job_def()


def missing_ancestors(context: dg.AssetExecutionContext, graph) -> list[dg.AssetKey]:
    own = set(context.assets_def.keys)
    ancestors = dg.AssetSelection.assets(*own).upstream().resolve(graph) - own
    return sorted((k for k in ancestors if context.instance.get_latest_materialization_event(k) is None),
                  key=lambda k: k.to_user_string())


def _resource_config(context: dg.AssetExecutionContext) -> dict:
    """The run's resource values (launchpad overrides included) as run config for the child run."""
    out = {}
    for name in RESOURCE_NAMES:
        value = getattr(context.resources, name, None)
        if isinstance(value, dg.ConfigurableResource):
            out[name] = {"config": value.model_dump()}
    return {"resources": out}


def materialize_missing_upstream(context: dg.AssetExecutionContext, enabled: bool) -> None:
    if PARENT_RUN_TAG in context.run.tags:
        return  # a child run: its selection already holds every missing ancestor, in order
    location = _location(context)
    if location is None:
        return
    graph, job = location
    missing = missing_ancestors(context, graph)
    if not missing:
        return
    names = [k.to_user_string() for k in missing]
    me = context.assets_def.key.to_user_string() if len(context.assets_def.keys) == 1 else "this step"
    if not enabled:
        raise dg.Failure(
            f"{me} needs {', '.join(names)}, never materialized in this Dagster instance. Materialize "
            f"the whole upstream with: dagster asset materialize --select '*{me}' -m naics_pipeline "
            "(or set NAICS_BUILD_MISSING_UPSTREAM=1 to have it done here)")
    # A multi-asset that cannot be subset has to run whole (ours are all subsettable; this keeps it so).
    keys = sorted(dg.AssetSelection.assets(*missing).required_multi_asset_neighbors().resolve(graph),
                  key=lambda k: k.to_user_string())
    context.log.warning(f"{me}: upstream never materialized: {', '.join(names)}; materializing "
                        f"{len(keys)} asset(s) first in a run of their own")
    result = job.execute_in_process(
        asset_selection=keys, instance=context.instance, raise_on_error=False,
        run_config=_resource_config(context), tags={PARENT_RUN_TAG: context.run_id})
    if not result.success:
        raise dg.Failure(f"{me}: materializing its missing upstream ({', '.join(names)}) failed in run "
                         f"{result.run_id}; see that run's logs")
    context.log.info(f"upstream materialized in run {result.run_id}")
