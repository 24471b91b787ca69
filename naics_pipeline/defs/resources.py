"""Runtime settings as Dagster resources: `storage`, `source`, `training` and `automation`.

Each field, its default and its description come from naics_pipeline.settings. A setting whose
environment variable is set when the definitions load is bound as `dg.EnvVar` (read again when a run
launches, shown as such in the launchpad) where Dagster supports it (text and integer fields); float
and boolean fields take the parsed value. Any field can be overridden per run in the launchpad.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import dagster as dg
from pydantic import Field

from naics_pipeline import settings
from naics_pipeline.data.source import census_url
from naics_pipeline.defs.upstream import materialize_missing_upstream
from naics_pipeline.layout import Layout


def _field(env: str):
    s = settings.BY_ENV[env]
    by_device = f"; unset: {s.default}" if isinstance(s.default, settings.ByDevice) else ""
    return Field(default=settings.resource_field_default(env), description=f"{s.doc}{by_device} (env {s.env})")


def from_environment(cls: type[dg.ConfigurableResource]) -> dg.ConfigurableResource:
    """An instance of `cls` with every setting whose variable is set bound to it."""
    owner = cls.__name__.removesuffix("Resource").lower()
    kwargs = {}
    for s in settings.settings_of(owner):
        if settings.raw(s.env) is None:
            continue
        if s.kind is str:
            kwargs[s.field] = dg.EnvVar(s.env)
        elif s.kind is int:
            kwargs[s.field] = dg.EnvVar.int(s.env)
        else:
            kwargs[s.field] = settings.value(s.env)
    return cls(**kwargs)


class StorageResource(dg.ConfigurableResource):
    """Where every table, index and checkpoint lives."""

    root: str = _field("NAICS_STORAGE_ROOT")
    build_missing_upstream: bool = _field("NAICS_BUILD_MISSING_UPSTREAM")

    @property
    def layout(self) -> Layout:
        return Layout(Path(self.root))

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # Before any step of the run starts: Dagster records each step's inputs when the step starts,
        # so what is built here is seen as the run's input, never as a newer upstream.
        if context.run is not None and context.instance is not None:
            materialize_missing_upstream(context, self)


class SourceResource(dg.ConfigurableResource):
    """Where the Census NAICS spreadsheets come from."""

    location: Optional[str] = _field("NAICS_SOURCE")
    vintage: Optional[str] = _field("NAICS_VINTAGE")
    timeout_seconds: float = _field("NAICS_SOURCE_TIMEOUT_SECONDS")
    exclusion_holdout: float = _field("NAICS_EXCLUSION_HOLDOUT")

    @property
    def resolved_location(self) -> str:
        return self.location or census_url(self.vintage)


class TrainingResource(dg.ConfigurableResource):
    """Training settings; the GPU is used when there is one."""

    encoder: str = _field("NAICS_ENCODER")
    accelerator: str = _field("NAICS_ACCELERATOR")
    devices: str = _field("NAICS_DEVICES")
    strategy: str = _field("NAICS_STRATEGY")
    epochs: Optional[int] = _field("NAICS_EPOCHS")
    batch_size: Optional[int] = _field("NAICS_BATCH_SIZE")
    max_pairs_per_epoch: Optional[int] = _field("NAICS_MAX_PAIRS_PER_EPOCH")
    learning_rate: Optional[float] = _field("NAICS_LEARNING_RATE")
    seed: int = _field("NAICS_SEED")
    curvature: float = _field("NAICS_CURVATURE")
    temperature: float = _field("NAICS_TEMPERATURE")
    embedding_dim: int = _field("NAICS_EMBEDDING_DIM")
    load_balancing_coef: float = _field("NAICS_LOAD_BALANCING_COEF")
    exclusion_weight: float = _field("NAICS_EXCLUSION_WEIGHT")
    exclusion_margin: float = _field("NAICS_EXCLUSION_MARGIN")
    cuda_graphs: bool = _field("NAICS_CUDA_GRAPHS")
    text_encoder: Optional[str] = _field("NAICS_TEXT_ENCODER")


class AutomationResource(dg.ConfigurableResource):
    """What the source sensor requests when the source changes."""

    retrain_on_change: bool = _field("NAICS_SENSOR_TRAINING")


def resources_from_environment() -> dict[str, dg.ConfigurableResource]:
    return {"storage": from_environment(StorageResource), "source": from_environment(SourceResource),
            "training": from_environment(TrainingResource), "automation": from_environment(AutomationResource)}


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources=resources_from_environment())
