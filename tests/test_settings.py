"""One settings table: the resources' fields, the training configs, the environment and
docs/settings.md agree."""
import dataclasses
import typing

import dagster as dg
import pytest

from naics_pipeline import settings
from naics_pipeline.defs import resources
from naics_pipeline.defs.assets.training import _train_config, model_config
from naics_pipeline.settings import REPO_ROOT, ByDevice
from naics_pipeline.training.loop import TrainConfig
from naics_pipeline.training.model import ModelConfig

RESOURCES = {"storage": resources.StorageResource, "source": resources.SourceResource,
             "training": resources.TrainingResource, "automation": resources.AutomationResource}
# Training settings that no config field takes: the asset reads them itself.
READ_BY_THE_ASSETS = {"NAICS_ENCODER", "NAICS_EPOCHS", "NAICS_TEXT_ENCODER"}


def test_settings_doc_is_the_generated_one():
    assert (REPO_ROOT / "docs" / "settings.md").read_text() == settings.settings_markdown(), \
        "docs/settings.md is stale: run `python -m naics_pipeline.settings`"


def test_every_resource_setting_is_a_field_with_the_table_default():
    for s in settings.SETTINGS:
        if s.owner == "definitions":
            continue
        field = RESOURCES[s.owner].model_fields[s.field]
        assert field.default == settings.resource_field_default(s.env) and s.env in field.description, s.env
        kinds = typing.get_args(field.annotation) or (field.annotation,)
        assert s.kind in kinds, f"{s.env}: the table says {s.kind.__name__}, the field {field.annotation}"


def test_the_configs_take_their_defaults_from_the_table():
    declared = {}
    for config in (TrainConfig, ModelConfig):
        for f in dataclasses.fields(config):
            if "env" in f.metadata:
                s = settings.BY_ENV[f.metadata["env"]]
                assert f.name == s.field and f.default == s.default, f"{config.__name__}.{f.name}"
                declared[s.env] = config.__name__
    training = {s.env for s in settings.settings_of("training")}
    assert training - READ_BY_THE_ASSETS == set(declared), "a training setting that reaches no config"


@pytest.mark.parametrize("on_gpu", [True, False])
def test_device_defaults_are_resolved_from_the_table(on_gpu):
    """Unset (the resource's None) and the config's own default resolve to the table's device value."""
    for cfg in (TrainConfig(), _train_config(resources.TrainingResource(), _Stage())):
        done = cfg.resolved(on_gpu)
        for f in dataclasses.fields(TrainConfig):
            env = f.metadata.get("env")
            if env and isinstance(settings.default_of(env), ByDevice):
                assert getattr(done, f.name) == settings.default_of(env).pick(on_gpu), f.name
    assert TrainConfig(max_pairs_per_epoch=0, batch_size=8).resolved(on_gpu).max_pairs_per_epoch == 0   # all
    with pytest.raises(ValueError, match="NAICS_MAX_PAIRS_PER_EPOCH"):
        TrainConfig(max_pairs_per_epoch=-1).resolved(on_gpu)


def test_resource_values_reach_the_configs():
    training = resources.TrainingResource(curvature=2.0, temperature=0.2, embedding_dim=8, batch_size=64, seed=3,
                                          epochs=2)
    assert model_config(training) == ModelConfig(curvature=2.0, temperature=0.2, embedding_dim=8)
    cfg = _train_config(training, _Stage())
    assert (cfg.batch_size, cfg.seed, cfg.epochs, cfg.gpu_epoch_multiplier) == (64, 3, 2, 1)
    assert _train_config(resources.TrainingResource(), _Stage()).epochs == _Stage.epochs


class _Stage:
    epochs = 5


def test_set_variables_bind_as_env_vars_and_typed_values(monkeypatch):
    monkeypatch.setenv("NAICS_SOURCE", "/somewhere")
    monkeypatch.setenv("NAICS_EPOCHS", "7")
    monkeypatch.setenv("NAICS_LEARNING_RATE", "0.5")
    monkeypatch.setenv("NAICS_BUILD_MISSING_UPSTREAM", "0")
    bound = resources.resources_from_environment()
    assert bound["source"].location == dg.EnvVar("NAICS_SOURCE")   # read again when a run launches
    assert bound["training"].epochs == dg.EnvVar.int("NAICS_EPOCHS")
    assert bound["training"].learning_rate == 0.5 and bound["storage"].build_missing_upstream is False
    monkeypatch.delenv("NAICS_SOURCE")
    assert resources.resources_from_environment()["source"].location is None   # the Census URL at run time


def test_no_module_but_settings_reads_the_environment():
    offenders = [str(p.relative_to(REPO_ROOT)) for p in (REPO_ROOT / "naics_pipeline").rglob("*.py")
                 if p.name != "settings.py" and ("os.environ" in p.read_text() or "getenv" in p.read_text())]
    assert offenders == []
