"""The Kubernetes Job dagster-k8s's k8s_job_executor would create for a step, built with dagster-k8s's own
job-construction API from the step's tags in the real definitions (no cluster)."""
import json

import dagster as dg
import pytest
from dagster_k8s import DagsterK8sJobConfig, construct_dagster_k8s_job
from dagster_k8s.job import get_user_defined_k8s_config

from naics_pipeline.definitions import build_defs
from naics_pipeline.defs.assets.training import stage_plan
from naics_pipeline.defs.placement import CATALOG_POOL, GPU_POOL, executor, training_op_tags


def step_job(defs: dg.Definitions, asset: str):
    """The V1Job of `asset`'s step: its op tags as the step handler reads them, merged the way it merges them."""
    node = defs.resolve_asset_graph().get(dg.AssetKey(asset)).assets_def
    config = get_user_defined_k8s_config(node.op.tags)
    job_config = DagsterK8sJobConfig(job_image="naics-pipeline:cpu", dagster_home="/opt/dagster/dagster_home",
                                     image_pull_policy="IfNotPresent")
    return construct_dagster_k8s_job(job_config, ["dagster", "api", "execute_step"], f"dagster-step-{asset}",
                                     user_defined_k8s_config=config, component="step_worker")


def test_stage_3_step_job_asks_for_a_gpu_node_and_a_data_step_for_none():
    defs = build_defs()
    train = step_job(defs, "stage_3")
    [container] = train.spec.template.spec.containers
    assert container.resources.limits == {"nvidia.com/gpu": "1"}   # a Kubernetes quantity
    assert train.spec.template.spec.node_selector == {"nvidia.com/gpu.present": "true"}
    [toleration] = train.spec.template.spec.tolerations
    assert (toleration.key, toleration.operator, toleration.effect) == ("nvidia.com/gpu", "Exists", "NoSchedule")
    assert container.image == "naics-pipeline:cpu"              # the code location's image unless set

    data = step_job(defs, "naics_triplets")
    [container] = data.spec.template.spec.containers
    assert not (container.resources and container.resources.limits)
    assert data.spec.template.spec.node_selector is None and data.spec.template.spec.tolerations is None


def test_placement_follows_the_settings(monkeypatch):
    monkeypatch.setenv("NAICS_K8S_TRAINING_GPUS", "2")
    monkeypatch.setenv("NAICS_K8S_TRAINING_NODE_SELECTOR", json.dumps({"cloud.google.com/gke-accelerator":
                                                                       "nvidia-h100-80gb"}))
    monkeypatch.setenv("NAICS_K8S_TRAINING_TOLERATIONS", "[]")
    monkeypatch.setenv("NAICS_K8S_TRAINING_IMAGE", "registry.example.com/naics-pipeline:cuda")
    defs = build_defs()
    job = step_job(defs, "stage_1")
    [container] = job.spec.template.spec.containers
    assert container.resources.limits == {"nvidia.com/gpu": "2"}
    assert container.image == "registry.example.com/naics-pipeline:cuda"
    assert job.spec.template.spec.node_selector == {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}
    assert job.spec.template.spec.tolerations is None
    graph = defs.resolve_asset_graph()
    pools = {k.to_user_string(): graph.get(k).pools for k in graph.get_all_asset_keys()}
    assert {k for k, p in pools.items() if p == {GPU_POOL}} == {s.name for s in stage_plan()}
    # The steps that rewrite naics.duckdb; every other asset has no pool.
    assert {k for k, p in pools.items() if p == {CATALOG_POOL}} == {
        "naics_triplets", "naics_embeddings", *(k for k in pools if k.startswith("sampling_index_"))}
    assert all(p in ({GPU_POOL}, {CATALOG_POOL}, set()) for p in pools.values()), pools


def test_bad_placement_settings_are_one_line_errors(monkeypatch):
    monkeypatch.setenv("NAICS_K8S_TRAINING_NODE_SELECTOR", "{gpu: yes}")
    with pytest.raises(ValueError, match="NAICS_K8S_TRAINING_NODE_SELECTOR: not valid JSON"):
        training_op_tags()
    monkeypatch.delenv("NAICS_K8S_TRAINING_NODE_SELECTOR")
    monkeypatch.setenv("NAICS_EXECUTOR", "celery")
    with pytest.raises(ValueError, match="NAICS_EXECUTOR: 'celery' is not one of in_process, multiprocess, k8s"):
        executor()
    monkeypatch.setenv("NAICS_EXECUTOR", "k8s")
    assert build_defs().resolve_job_def("training_job").executor_def.name == "k8s"
