"""Source files -> descriptions -> graph -> distances -> triplets, and the checks over them."""
from naics_pipeline.data.descriptions import build_descriptions, exclusion_pairs
from naics_pipeline.data.pipeline import build_data
from naics_pipeline.data.source import SourceError, SourceFiles, fetch_source

__all__ = ["SourceError", "SourceFiles", "build_data", "build_descriptions", "exclusion_pairs", "fetch_source"]
