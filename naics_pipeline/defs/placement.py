"""Where steps run: the executor (NAICS_EXECUTOR) and the training steps' pool and Kubernetes placement.

Every training asset declares the `gpu` pool (deploy/dagster.yaml caps each pool at one step at a time
across runs) and the `dagster-k8s/config` op tags built here from the settings: a GPU limit, a node
selector, tolerations and optionally an image. The tags take effect only under dagster-k8s's
`k8s_job_executor` (NAICS_EXECUTOR=k8s), which starts one Kubernetes Job per step; under the other
executors they are inert. Job-level tags would not reach step pods: they must sit on each op.
"""
from __future__ import annotations

import json

import dagster as dg

from naics_pipeline import settings

GPU_POOL = "gpu"          # every training stage: one at a time on a one-GPU machine
CATALOG_POOL = "duckdb"   # the steps that rewrite naics.duckdb: DuckDB allows one writer at a time
EXECUTORS = ("in_process", "multiprocess", "k8s")
K8S_CONFIG_TAG = "dagster-k8s/config"
# A killed training step (OOM killer, preempted node) is retried once; the stage resumes from its
# last checkpoint. Under the multiprocess and k8s executors a crashed step process counts as a failure.
TRAINING_RETRY = dg.RetryPolicy(max_retries=1, delay=1)


def _json_setting(env: str):
    text = settings.value(env)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{env}: not valid JSON ({exc.msg} at character {exc.pos}): {text!r}") from None


def training_op_tags() -> dict:
    """The `dagster-k8s/config` op tags of a training step: GPU limit, node selector, tolerations, image."""
    gpus = int(settings.value("NAICS_K8S_TRAINING_GPUS"))
    selector = _json_setting("NAICS_K8S_TRAINING_NODE_SELECTOR")
    tolerations = _json_setting("NAICS_K8S_TRAINING_TOLERATIONS")
    if not isinstance(selector, dict):
        raise ValueError(f"NAICS_K8S_TRAINING_NODE_SELECTOR: a JSON object of labels, not {selector!r}")
    if not isinstance(tolerations, list):
        raise ValueError(f"NAICS_K8S_TRAINING_TOLERATIONS: a JSON list of tolerations, not {tolerations!r}")
    container: dict = {}
    if gpus:
        container["resources"] = {"limits": {"nvidia.com/gpu": gpus}}
    image = settings.value("NAICS_K8S_TRAINING_IMAGE")
    if image:
        container["image"] = image
    pod = {k: v for k, v in (("node_selector", selector), ("tolerations", tolerations)) if v}
    config = {k: v for k, v in (("container_config", container), ("pod_spec_config", pod)) if v}
    return {K8S_CONFIG_TAG: config} if config else {}


def executor() -> dg.ExecutorDefinition:
    """The code location's executor, by NAICS_EXECUTOR."""
    name = settings.value("NAICS_EXECUTOR")
    if name == "in_process":
        return dg.in_process_executor
    if name == "multiprocess":
        # Each step in a process forked from one that has already imported the definitions and torch:
        # a step starts in well under a second instead of paying the imports again.
        return dg.multiprocess_executor.configured(
            {"start_method": {"forkserver": {"preload_modules": ["naics_pipeline.definitions",
                                                                 "naics_pipeline.training.loop"]}}},
            name="multiprocess")
    if name == "k8s":
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor
    raise ValueError(f"NAICS_EXECUTOR: {name!r} is not one of {', '.join(EXECUTORS)}")
