"""One settings table: the resources' fields, the environment and the README agree."""
import dagster as dg

from naics_pipeline import settings
from naics_pipeline.defs import resources
from naics_pipeline.settings import REPO_ROOT

RESOURCES = {"storage": resources.StorageResource, "source": resources.SourceResource,
             "training": resources.TrainingResource, "automation": resources.AutomationResource}


def test_readme_settings_table_is_the_generated_one():
    assert settings.markdown_table() in (REPO_ROOT / "README.md").read_text(), \
        "README settings table is stale: paste `python -m naics_pipeline.settings` into it"


def test_every_resource_setting_is_a_field_with_the_table_default():
    for s in settings.SETTINGS:
        if s.owner == "definitions":
            continue
        field = RESOURCES[s.owner].model_fields[s.field]
        assert field.default == s.default and s.env in field.description, s.env


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
