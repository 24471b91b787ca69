"""The Dagster layer: assets per group, checks, jobs, schedules, sensors and resources, autoloaded by
naics_pipeline.definitions."""
