"""Materialize a run's never-materialized ancestors before the run's first step.

`dagster asset materialize --select stage_3` selects stage_3 alone; from a fresh Dagster instance it
would find no stage_2 model, no sampling index, no tables. When the `storage` resource is set up for
a run (before any step starts), it asks the instance which ancestors of the run's selected assets were
never materialized and materializes them, with their checks, through the public helper
`dg.materialize` in a run of their own tagged `naics/needed_by_run=<run id>`. Because this happens
before the selected steps start, Dagster records the fresh upstream as their input: nothing is left
stale. `NAICS_BUILD_MISSING_UPSTREAM=0` makes the run fail instead, naming what is missing.
"""
from __future__ import annotations

import dagster as dg

PARENT_RUN_TAG = "naics/needed_by_run"


class MissingUpstreamError(dg.DagsterError):
    """Ancestors of the selected assets were never materialized, and building them is off or failed."""


def code_location() -> dg.Definitions:
    from naics_pipeline.definitions import build_defs  # at run time: definitions import this module

    return build_defs()


def missing_ancestors(instance: dg.DagsterInstance, graph, selected: set[dg.AssetKey]) -> list[dg.AssetKey]:
    known = set(graph.get_all_asset_keys())
    ancestors = dg.AssetSelection.assets(*(selected & known)).upstream().resolve(graph) - selected
    return sorted((k for k in ancestors if instance.get_latest_materialization_event(k) is None),
                  key=lambda k: k.to_user_string())


def selected_assets(run: dg.DagsterRun, defs: dg.Definitions, graph) -> set[dg.AssetKey]:
    """The run's asset selection (CLI, UI, sensors), else the selection of the asset job it runs."""
    if run.asset_selection:
        return set(run.asset_selection)
    job = next((j for j in defs.jobs if getattr(j, "name", None) == run.job_name and hasattr(j, "selection")), None)
    return set(job.selection.resolve(graph)) if job is not None else set()


def materialize_missing_upstream(context: dg.InitResourceContext, storage: dg.ConfigurableResource) -> None:
    run = context.run
    if PARENT_RUN_TAG in run.tags:
        return  # a child run: its selection holds every missing ancestor, in order
    defs = code_location()
    graph = defs.resolve_asset_graph()
    wanted = selected_assets(run, defs, graph)
    missing = missing_ancestors(context.instance, graph, wanted) if wanted else []
    if not missing:
        return
    names = ", ".join(k.to_user_string() for k in missing)
    selection = ",".join(sorted("*" + k.to_user_string() for k in wanted))
    if not storage.build_missing_upstream:
        raise MissingUpstreamError(
            f"the selected assets need {names}, never materialized in this Dagster instance. Materialize "
            f"the whole upstream with: dagster asset materialize --select '{selection}' -m naics_pipeline "
            "(or set NAICS_BUILD_MISSING_UPSTREAM=1 to have it done first)")
    keys = dg.AssetSelection.assets(*missing).required_multi_asset_neighbors().resolve(graph)
    context.log.warning(f"upstream never materialized: {names}; materializing {len(keys)} asset(s) first "
                        "in a run of their own")
    resources = {**defs.resources, "storage": storage}
    run_config = {"resources": (run.run_config or {}).get("resources", {})}
    result = dg.materialize([*defs.assets, *defs.asset_checks], selection=sorted(keys, key=str),
                            instance=context.instance, resources=resources, run_config=run_config,
                            tags={PARENT_RUN_TAG: run.run_id}, raise_on_error=False)
    if not result.success:
        raise MissingUpstreamError(f"materializing the missing upstream ({names}) failed in run "
                                   f"{result.run_id}; see that run's logs")
    context.log.info(f"upstream materialized in run {result.run_id}")
