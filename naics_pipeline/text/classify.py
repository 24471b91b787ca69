"""Free text -> NAICS codes: `TextClassifier` and the file readers and writers of `naics-pipeline classify`.

The path from text to codes:
    texts --encoder (the stage's: MiniLM or hashing)--> title-channel features
          --query mapper--> points in the codes' Lorentz space
          --Lorentz distance to every candidate code's point--> the k nearest codes.
The code points come from the same stage's model over text_embeddings.npz, so any stage can be
asked. `query_mapper` is the one place that turns encoded texts into points: today the stage's code
model with the text in the title channel; a stage that trains a text head stores it in model.pt and
`query_mapper` returns that head's mapping instead. Everything downstream (ranking, scores, the CLI,
the benchmark) goes through `TextClassifier.query_points` and needs no change.
"""
from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from naics_pipeline.layout import Layout

BATCH_SIZE = 512                       # texts encoded and ranked per step in batch mode
INPUT_FORMATS = (".csv", ".parquet")
OUTPUT_FORMATS = (".csv", ".parquet", ".json")
OUTPUT_SCHEMA = pa.schema([
    ("row", pa.int64()), ("rank", pa.int32()), ("code", pa.string()), ("title", pa.string()),
    ("score", pa.float64()), ("distance", pa.float64()), ("level", pa.int8()),
    ("sector", pa.string()), ("sector_title", pa.string()),
    ("industry_group", pa.string()), ("industry_group_title", pa.string()),
])
MATERIALIZE_HINT = ("materialize the training stages first: `make demo`, or "
                    "`dagster asset materialize --select '+stage_3' -m naics_pipeline`")


class ClassifyError(RuntimeError):
    """Bad input or a storage root without what classification needs; the message says what to do."""


QueryMapper = Callable[[np.ndarray, np.ndarray, int], np.ndarray]


def query_mapper(model, blob: dict) -> QueryMapper:
    """(channels (Q, 4, D), present (Q, 4), level) of encoded texts -> (Q, d+1) Lorentz points.

    Today: the stage's code model, the text in the title channel, embedded as a code of `level`
    (the level of the codes it is ranked against; 6 by default).
    Seam for a trained text side: when a stage stores a query head in model.pt (blob), build it here
    and return its mapping; TextClassifier, the CLI and the benchmark then use it unchanged."""
    if "text_head" in blob:   # a text-alignment stage: its query head onto the 6-digit codes' shell
        import torch

        from naics_pipeline.training.checkpoint import load_query_head

        head, cfg = load_query_head(blob), blob["model_config"]

        @torch.no_grad()
        def through_head(channels, present, level):
            radius = model.level_radius(torch.tensor([6]))
            return head(torch.as_tensor(channels[:, 0]).float(), radius, c=cfg["curvature"]).numpy()
        return through_head
    from naics_pipeline.training.checkpoint import embed_queries

    return lambda channels, present, level: embed_queries(model, channels, present, level)


@dataclass
class CodeTable:
    """The codes a classifier ranks, in naics_descriptions order, with their 2- and 4-digit ancestors."""
    codes: np.ndarray
    titles: np.ndarray
    levels: np.ndarray
    sector: np.ndarray          # the sector column's code (31 for 31-33)
    industry_group: np.ndarray  # 4-digit ancestor, None above level 4

    @classmethod
    def from_descriptions(cls, descriptions: pa.Table) -> CodeTable:
        from naics_pipeline.data.distances import ancestor_lookup

        codes = descriptions.column("code").to_pylist()
        sector, group = ancestor_lookup(descriptions, 2), ancestor_lookup(descriptions, 4)
        return cls(np.array(codes, dtype=object), np.array(descriptions.column("title").to_pylist(), dtype=object),
                   descriptions.column("level").to_numpy().astype(np.int8),
                   np.array([sector.get(c) for c in codes], dtype=object),
                   np.array([group.get(c) for c in codes], dtype=object))

    def title_of(self, codes: np.ndarray) -> np.ndarray:
        pos = {c: i for i, c in enumerate(self.codes)}
        return np.array([None if c is None else self.titles[pos[c]] for c in codes], dtype=object)


class TextClassifier:
    """Ranks NAICS codes for free texts with one trained stage. `load` it from a storage root."""

    def __init__(self, encoder, to_points: QueryMapper, points: np.ndarray, table: CodeTable,
                 curvature: float, temperature: float, stage: str):
        self.encoder = encoder
        self.to_points = to_points
        self.points = points
        self.table = table
        self.curvature = curvature
        self.temperature = temperature
        self.stage = stage

    @classmethod
    def load(cls, root: Path, stage: str | None = None, encoder: str | None = None,
             device: str = "cpu") -> TextClassifier:
        """The last trained stage under `root` (or `stage`), its code points and its encoder
        (`encoder` overrides the one model.pt records)."""
        from naics_pipeline.encoders import TextEmbeddings, make_encoder
        from naics_pipeline.training.checkpoint import embed_all, load_model

        layout = Layout(Path(root))
        model_path = stage_model_path(layout, stage)
        for path, asset in ((layout.descriptions, "naics_descriptions"), (layout.text_embeddings, "text_embeddings")):
            if not path.is_file():
                raise ClassifyError(f"no {path}: materialize {asset} first ({MATERIALIZE_HINT})")
        model, blob = load_model(model_path, device)
        descriptions = pq.read_table(layout.descriptions)
        embeddings = TextEmbeddings.load(layout.text_embeddings)
        if embeddings.codes != descriptions.column("code").to_pylist() or blob["codes"] != embeddings.codes:
            raise ClassifyError(f"{model_path}, {layout.text_embeddings} and {layout.descriptions} hold different "
                                f"codes: rematerialize text_embeddings and the stages ({MATERIALIZE_HINT})")
        table = CodeTable.from_descriptions(descriptions)
        points, _ = embed_all(model, embeddings, table.levels.astype(np.int64))
        cfg = blob["model_config"]
        text_encoder = make_encoder(encoder or blob["encoder"], device)
        if "text_encoder" in blob:   # the stage fine-tuned the encoder: its own weights, not the frozen ones
            text_encoder.model.load_state_dict({k: v.float() for k, v in blob["text_encoder"].items()})
        temperature = blob["text_config"]["temperature"] if "text_config" in blob else cfg["temperature"]
        return cls(text_encoder, query_mapper(model, blob), points, table, cfg["curvature"], temperature,
                   model_path.parent.name)

    def query_points(self, texts: list[str], level: int = 6) -> np.ndarray:
        """Texts -> (len(texts), d+1) points in the codes' space: encode, then map (query_mapper)."""
        from naics_pipeline.encoders import query_features

        channels, present = query_features(self.encoder, list(texts))
        return self.to_points(channels, present, level)

    def rank(self, query_points: np.ndarray, k: int, level: int | None = 6):
        """Candidate-code indexes (Q, k) nearest first, their Lorentz distances and scores. The score is
        the code's softmax probability among all candidates of the level, logits -distance / the
        model's InfoNCE temperature."""
        from naics_pipeline.training.lorentz import pairwise_distance

        candidates = np.arange(len(self.table.codes)) if level is None else np.nonzero(self.table.levels == level)[0]
        if not len(candidates):
            raise ClassifyError(f"no codes of level {level}; levels are 2 to 6")
        k = min(k, len(candidates))
        dist = pairwise_distance(query_points, self.points[candidates], c=self.curvature)
        top = np.argpartition(dist, k - 1, axis=1)[:, :k]
        top = np.take_along_axis(top, np.argsort(np.take_along_axis(dist, top, axis=1), axis=1), axis=1)
        logits = -dist / self.temperature
        log_norm = logits.max(1, keepdims=True)
        log_norm = log_norm + np.log(np.exp(logits - log_norm).sum(1, keepdims=True))
        top_dist = np.take_along_axis(dist, top, axis=1)
        return candidates[top], top_dist, np.exp(-top_dist / self.temperature - log_norm)

    def predict_table(self, texts: list[str], k: int = 5, level: int | None = 6,
                      batch_size: int = BATCH_SIZE) -> pa.Table:
        """One row per (text, rank) in OUTPUT_SCHEMA; texts are encoded and ranked `batch_size` at a time."""
        if k < 1:
            raise ClassifyError(f"k must be at least 1, not {k}")
        parts = []
        for start in range(0, len(texts), batch_size):
            points = self.query_points(texts[start:start + batch_size], level or 6)
            idx, dist, score = self.rank(points, k, level)
            parts.append(self._rows(idx, dist, score, start))
        return pa.concat_tables(parts) if parts else OUTPUT_SCHEMA.empty_table()

    def predict(self, texts: list[str], k: int = 5, level: int | None = 6) -> list[dict]:
        return self.predict_table(texts, k, level).to_pylist()

    def _rows(self, idx: np.ndarray, dist: np.ndarray, score: np.ndarray, first_row: int) -> pa.Table:
        q, k = idx.shape
        flat = idx.ravel()
        t = self.table
        return pa.table({
            "row": np.repeat(np.arange(first_row, first_row + q), k),
            "rank": np.tile(np.arange(1, k + 1, dtype=np.int32), q),
            "code": t.codes[flat].tolist(), "title": t.titles[flat].tolist(),
            "score": score.ravel(), "distance": dist.ravel(), "level": t.levels[flat],
            "sector": t.sector[flat].tolist(), "sector_title": t.title_of(t.sector[flat]).tolist(),
            "industry_group": t.industry_group[flat].tolist(),
            "industry_group_title": t.title_of(t.industry_group[flat]).tolist(),
        }, schema=OUTPUT_SCHEMA)


def stage_model_path(layout: Layout, stage: str | None) -> Path:
    """model.pt of `stage`, or of the highest-numbered trained stage_N."""
    trained = sorted((p for p in (layout.root / "training").glob("stage_*") if (p / "model.pt").is_file()),
                     key=lambda p: (len(p.name), p.name))
    if stage is not None:
        path = layout.stage_dir(stage) / "model.pt"
        if not path.is_file():
            names = ", ".join(p.name for p in trained) or "none"
            raise ClassifyError(f"stage {stage!r} has no trained model at {path} (trained stages: {names}); "
                                f"{MATERIALIZE_HINT}")
        return path
    if not trained:
        raise ClassifyError(f"no trained model under {layout.root / 'training'}: {MATERIALIZE_HINT}")
    return trained[-1] / "model.pt"


def read_texts(path: Path, column: str) -> list[str]:
    """The `column` of a .csv or .parquet file as a list of texts; fails naming the file, the column
    or the first empty rows (0-based data rows, the header not counted)."""
    path = Path(path)
    if path.suffix.lower() not in INPUT_FORMATS:
        raise ClassifyError(f"{path}: input must be one of {', '.join(INPUT_FORMATS)}")
    if not path.is_file():
        raise ClassifyError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ClassifyError(f"{path} is empty: expected a header row with column {column!r} and one text per row")
    names = _column_names(path)
    if column not in names:
        raise ClassifyError(f"{path} has no column {column!r}; its columns are: {', '.join(names) or '(none)'}")
    values = _read_column(path, column)
    if not values:
        raise ClassifyError(f"{path} has no rows under its header: nothing to classify")
    empty = [i for i, v in enumerate(values) if v is None or not str(v).strip()]
    if empty:
        rows = ", ".join(map(str, empty[:10])) + (f" and {len(empty) - 10} more" if len(empty) > 10 else "")
        raise ClassifyError(f"{path}: column {column!r} is empty in row {rows} (0-based data rows)")
    return [str(v) for v in values]


def _column_names(path: Path) -> list[str]:
    if path.suffix.lower() == ".parquet":
        return pq.read_schema(path).names
    import pyarrow.csv as pacsv

    try:
        with pacsv.open_csv(path) as reader:
            return reader.schema.names
    except pa.ArrowInvalid as exc:
        raise ClassifyError(f"{path}: not a readable CSV file ({exc})") from exc


def _read_column(path: Path, column: str) -> list:
    if path.suffix.lower() == ".parquet":
        return pq.read_table(path, columns=[column]).column(column).to_pylist()
    import pyarrow.csv as pacsv

    table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
        include_columns=[column], column_types={column: pa.string()}, strings_can_be_null=True))
    return table.column(column).to_pylist()


def write_predictions(table: pa.Table, path: Path) -> None:
    """Write to .csv, .parquet or .json (a list of row objects) by the name's suffix, atomically
    (a temporary sibling renamed into place)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise ClassifyError(f"{path}: output must end in one of {', '.join(OUTPUT_FORMATS)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}.{uuid.uuid4().hex[:8]}")
    try:
        if suffix == ".parquet":
            pq.write_table(table, tmp)
        elif suffix == ".csv":
            import pyarrow.csv as pacsv

            pacsv.write_csv(table, tmp)
        else:
            import json

            tmp.write_text(json.dumps(table.to_pylist(), indent=1) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
