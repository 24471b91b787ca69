"""Curriculum YAMLs (the guide's format), the stage plan, and per-curriculum sampling."""
from naics_pipeline.curricula.config import (
                                             Curriculum,
                                             CurriculumError,
                                             Stage,
                                             load_curricula,
                                             load_curriculum,
                                             load_plan,
                                             parse_curriculum,
)
from naics_pipeline.curricula.sampling import Sampler, SamplingIndex, build_index, simulate_epoch

__all__ = ["Curriculum", "CurriculumError", "Sampler", "SamplingIndex", "Stage", "build_index", "load_curricula",
           "load_curriculum", "load_plan", "parse_curriculum", "simulate_epoch"]
