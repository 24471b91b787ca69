"""Curriculum YAMLs (the guide's format), the stage plan, and per-curriculum sampling: the index builder,
mix plans, the index reader, the samplers and the mix report."""
from naics_pipeline.curricula.config import (
                                             Curriculum,
                                             CurriculumError,
                                             Stage,
                                             load_curricula,
                                             load_curriculum,
                                             load_plan,
                                             parse_curriculum,
)
from naics_pipeline.curricula.index_builder import build_index
from naics_pipeline.curricula.mix_report import simulate_epoch
from naics_pipeline.curricula.sampler import Sampler
from naics_pipeline.curricula.sampling_index import SamplingIndex

__all__ = ["Curriculum", "CurriculumError", "Sampler", "SamplingIndex", "Stage", "build_index", "load_curricula",
           "load_curriculum", "load_plan", "parse_curriculum", "simulate_epoch"]
