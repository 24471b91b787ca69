"""Where each table lives under the storage root."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def source_dir(self) -> Path:          # snapshot of the source files + manifest.json
        return self.root / "source"

    @property
    def downloads(self) -> Path:
        return self.root / "downloads"

    @property
    def descriptions(self) -> Path:
        return self.root / "naics_descriptions.parquet"

    @property
    def index_holdout(self) -> Path:
        return self.root / "naics_index_holdout.parquet"

    @property
    def graph_edges(self) -> Path:
        return self.root / "naics_graph_edges.parquet"

    @property
    def distances(self) -> Path:
        return self.root / "naics_distances.parquet"

    @property
    def triplets(self) -> Path:
        return self.root / "naics_triplets"

    def sampling_index(self, curriculum: str) -> Path:
        return self.root / "sampling_index" / curriculum

    @property
    def text_embeddings(self) -> Path:
        return self.root / "text_embeddings.npz"

    @property
    def text_cache(self) -> Path:          # <encoder>-<version>.npz: vectors by text hash, kept across builds
        return self.root / "text_cache"

    def stage_dir(self, stage: str) -> Path:
        return self.root / "training" / stage

    @property
    def embeddings(self) -> Path:
        return self.root / "naics_embeddings.parquet"

    def tables(self) -> dict[str, Path]:
        """DuckDB view name -> Parquet path, for the catalog file."""
        return {
            "naics_descriptions": self.descriptions,
            "naics_index_holdout": self.index_holdout,
            "naics_graph_edges": self.graph_edges,
            "naics_distances": self.distances,
            "naics_triplets": self.triplets,
            "naics_embeddings": self.embeddings,
        }
