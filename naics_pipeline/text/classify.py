"""Free text -> NAICS codes: `TextClassifier` and the file readers and writers of `naics-pipeline classify`.

The path from text to codes:
    texts --the stage's encoder (MiniLM frozen or fine-tuned, or hashing)--> vectors
          (a) --query mapper--> points among the codes --Lorentz distance--> geometry log-probabilities
          (b) --entry index (text.index)--> nearest known texts per code, TF-IDF similarity
          --conditional logit fitted on the validation split (text.fusion), its top codes reranked by a
            small MLP of the same features (text.rerank)--> calibrated probabilities
          --> the k most probable 6-digit codes; with min_precision, the deepest confident level
              (text.calibration.back_off).
`query_mapper` is the one place that turns encoded texts into points: the stage's text head when it
has one, else its code model with the text in the title channel. A stage without an entry index
(text_entry_index) is ranked by its geometry alone.
"""
from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from naics_pipeline.layout import Layout

BATCH_SIZE = 512                       # texts encoded and ranked per step in batch mode
ENCODE_BATCH_CPU, ENCODE_BATCH_GPU = 64, 4096   # the encoder's own batch inside a step
# CPU: from this many texts the fusion runs as two halves in two threads (numpy, scipy and torch release the
# GIL, and its sparse products run on one core): classify 1.26x -> 1.21x the bare encoding on 2 cores
SPLIT_FUSION_FROM = 256
# GPU: while the query rows are computed in the background (Python-heavy, holding the GIL), the thread that
# drives the GPU waits for the GIL after each op that released it, up to the switch interval (5 ms by
# default); classify shortens it while it runs (None: leave it)
GPU_SWITCH_INTERVAL: float | None = 5e-5
INPUT_FORMATS = (".csv", ".parquet")
OUTPUT_FORMATS = (".csv", ".parquet", ".json")
OUTPUT_SCHEMA = pa.schema([
    ("row", pa.int64()), ("rank", pa.int32()), ("code", pa.string()), ("title", pa.string()),
    ("score", pa.float64()), ("distance", pa.float64()), ("level", pa.int8()),
    ("sector", pa.string()), ("sector_title", pa.string()),
    ("industry_group", pa.string()), ("industry_group_title", pa.string()),
])
# with min_precision: the text's deepest level whose probability reaches that level's cut (null: none does)
CONFIDENT_FIELDS = [("confident_code", pa.string()), ("confident_level", pa.int8()), ("confident_score", pa.float64())]
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
        dev = next(model.parameters()).device
        head.to(dev)

        @torch.no_grad()
        def through_head(channels, present, level):
            radius = model.level_radius(torch.tensor([6]))
            return head(torch.as_tensor(channels[:, 0], device=dev).float(), radius, c=cfg["curvature"]).cpu().numpy()
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

    def six_digit_levels(self):
        """The text.calibration.LevelMap of the 6-digit codes (in table order) onto their groups and sectors."""
        from naics_pipeline.text.calibration import LevelMap

        six = np.nonzero(self.levels == 6)[0]
        codes = self.codes[six]
        return LevelMap(codes.tolist(), {4: dict(zip(codes, self.industry_group[six])),
                                         2: dict(zip(codes, self.sector[six]))})

    def title_of(self, codes: np.ndarray) -> np.ndarray:
        pos = {c: i for i, c in enumerate(self.codes)}
        return np.array([None if c is None else self.titles[pos[c]] for c in codes], dtype=object)


class TextClassifier:
    """Ranks NAICS codes for free texts with one trained stage. `load` it from a storage root.

    With the stage's entry index (text.index; the asset text_entry_index), the 6-digit probability
    of a code fuses the stage's geometry with the nearest known texts (calibrated on the validation
    split); without it, it is the geometry's softmax alone (`self.index is None`)."""

    def __init__(self, encoder, to_points: QueryMapper, points: np.ndarray, table: CodeTable,
                 curvature: float, temperature: float, stage: str, index=None, fine_tuned: bool = False,
                 device: str = "cpu"):
        self.encoder = encoder
        self.to_points = to_points
        self.points = points
        self.table = table
        self.curvature = curvature
        self.temperature = temperature
        self.stage = stage
        self.index = index
        self.fine_tuned = fine_tuned     # the stage fine-tuned the encoder: its vectors are its own, not cached
        self.device = device
        self.six = np.nonzero(table.levels == 6)[0]
        self.levels = table.six_digit_levels()
        self._scorer = None
        self._cuts: dict = {}        # min_precision -> its cut per level (the index's PrecisionCuts)
        self._pools: dict = {}       # thread pools by name (query rows on a GPU, fusion halves on the CPU)

    @classmethod
    def load(cls, root: Path, stage: str | None = None, device: str = "cpu",
             encoder: str | None = None) -> TextClassifier:
        """The last trained stage under `root` (or `stage`), its code points, its encoder (`encoder`
        overrides the one model.pt records) and its entry index when the stage has one."""
        from naics_pipeline.encoders import TextEmbeddings, make_encoder
        from naics_pipeline.text.index import INDEX_FILE, EntryIndex
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
        if device.startswith("cuda") and hasattr(text_encoder, "model"):
            text_encoder.model.half()   # inference in fp16 on a GPU: the entry index is encoded the same way
        temperature = blob["text_config"]["temperature"] if "text_config" in blob else cfg["temperature"]
        index = None
        index_path = model_path.parent / INDEX_FILE
        if index_path.is_file() and encoder is None:
            try:
                index = EntryIndex.load(index_path)
            except (ValueError, KeyError, OSError) as exc:
                raise ClassifyError(f"{index_path}: {exc}") from exc
            if index.meta.get("model") != _file_digest(model_path):
                raise ClassifyError(f"{index_path} was built for another {model_path}: rematerialize text_entry_index")
        return cls(text_encoder, query_mapper(model, blob), points, table, cfg["curvature"], temperature,
                   model_path.parent.name, index, "text_encoder" in blob, device)

    # -- the two signals -------------------------------------------------------------------------
    def encode(self, texts: list[str]) -> np.ndarray:
        """(Q, D) L2-normalised vectors of the texts by the stage's encoder."""
        batch = ENCODE_BATCH_GPU if self.device.startswith("cuda") else ENCODE_BATCH_CPU
        return self.encoder.encode(list(texts), batch_size=batch).astype(np.float32)

    def points_of(self, vectors: np.ndarray, level: int = 6) -> np.ndarray:
        """Encoded texts -> (Q, d+1) points in the codes' space (query_mapper, the text in the title channel)."""
        from naics_pipeline.encoders import CHANNELS

        channels = np.zeros((len(vectors), len(CHANNELS), vectors.shape[1]), np.float32)
        channels[:, 0] = vectors
        present = np.zeros((len(vectors), len(CHANNELS)), bool)
        present[:, 0] = True
        return self.to_points(channels, present, level)

    def query_points(self, texts: list[str], level: int = 6) -> np.ndarray:
        """Texts -> (len(texts), d+1) points in the codes' space: encode, then map (query_mapper)."""
        return self.points_of(self.encode(texts), level)

    def distances(self, vectors: np.ndarray) -> np.ndarray:
        """(Q, C6) Lorentz distances of encoded texts to the 6-digit codes."""
        from naics_pipeline.training.lorentz import pairwise_distance

        return pairwise_distance(self.points_of(vectors, 6), self.points[self.six], c=self.curvature)

    def geometry(self, vectors: np.ndarray) -> np.ndarray:
        """(Q, C6) log-probabilities of the 6-digit codes under the geometry alone (-distance / temperature)."""
        from naics_pipeline.text.fusion import log_softmax

        return log_softmax(-self.distances(vectors) / self.temperature)

    def _threads(self, name: str, workers: int):
        if name not in self._pools:
            from concurrent.futures import ThreadPoolExecutor

            self._pools[name] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        return self._pools[name]

    def _query_rows_later(self, texts: list[str]):
        """The texts' TF-IDF query rows (CPU) as a future, computed in the background."""
        return self._threads("query-rows", 1).submit(self.scorer().query_rows, list(texts))

    def cuts(self, min_precision: float) -> dict[int, float] | None:
        """{level: the probability from which that level answers} for min_precision: the index's cuts,
        fitted on the validation split (text.calibration.PrecisionCuts); None: min_precision itself."""
        if self.index is None or self.index.cuts is None:
            return None
        if min_precision not in self._cuts:
            self._cuts[min_precision] = self.index.cuts.cuts(min_precision)
        return self._cuts[min_precision]

    def scorer(self):
        if self._scorer is None:
            self._scorer = self.index.scorer(self.table.codes[self.six].tolist(),
                                             np.asarray(self.table.industry_group[self.six], dtype=str), self.device)
        return self._scorer

    def probabilities(self, texts: list[str], vectors: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """((Q, C6) probabilities of the 6-digit codes, (Q, C6) Lorentz distances) for texts."""
        from naics_pipeline.text.fusion import log_softmax

        vectors = self.encode(texts) if vectors is None else vectors
        dist = self.distances(vectors)
        geometry = log_softmax(-dist / self.temperature)
        if self.index is None:
            return np.exp(geometry), dist
        return np.exp(log_softmax(self._fused(list(texts), vectors, geometry))), dist

    def _fused(self, texts: list[str], vectors: np.ndarray, geometry: np.ndarray) -> np.ndarray:
        """The index's fused (Q, C) scores on the CPU, two halves in two threads from SPLIT_FUSION_FROM texts."""
        if len(texts) < SPLIT_FUSION_FROM:
            return self.index.fused(self.scorer(), vectors, texts, geometry)
        scorer = self.scorer()

        def half(rows: np.ndarray) -> np.ndarray:
            return self.index.fused(scorer, vectors[rows], [texts[i] for i in rows], geometry[rows])
        return np.concatenate(list(self._threads("fusion", 2).map(half, np.array_split(np.arange(len(texts)), 2))))

    def _on_device(self) -> bool:
        return self.device != "cpu" and self.index is not None

    def batches(self, texts: list[str], batch_size: int, fused: bool = True):
        """(first row, chunk, the chunk's query rows as a future or None) per `batch_size` texts. On a GPU
        the TF-IDF rows of the queries (CPU) are computed in the background one chunk ahead, while the
        encoder and the fusion of the chunk before run there (`fused` False: no rows, for the geometry alone)."""
        starts = range(0, len(texts), batch_size)
        chunks = [list(texts[s:s + batch_size]) for s in starts]
        if not (fused and self._on_device()):
            yield from ((s, c, None) for s, c in zip(starts, chunks))
            return
        with _switch_interval(GPU_SWITCH_INTERVAL):
            ahead = self._query_rows_later(chunks[0]) if chunks else None
            for i, (start, chunk) in enumerate(zip(starts, chunks)):
                rows, ahead = ahead, (self._query_rows_later(chunks[i + 1]) if i + 1 < len(chunks) else None)
                yield start, chunk, rows

    def ranked(self, texts: list[str], k: int, min_precision: float | None = None, rows=None):
        """(top-k positions among the 6-digit codes (Q, k), their probabilities, their Lorentz distances,
        back_off's list or None) for texts. On a GPU the fusion, softmax, top-k and level sums stay there
        (`rows`: the texts' query rows as a future, from batches)."""
        from naics_pipeline.text.calibration import LEVELS, back_off, choose_level

        on_device = self._on_device()
        if on_device and rows is None:
            rows = self._query_rows_later(texts)
        vectors = self.encode(texts)
        k = min(k, len(self.six))
        if not on_device:
            p, dist = self.probabilities(texts, vectors)
            top = np.argpartition(-p, k - 1, axis=1)[:, :k] if k < p.shape[1] else np.tile(np.arange(k), (len(p), 1))
            top = np.take_along_axis(top, np.argsort(-np.take_along_axis(p, top, 1), axis=1, kind="stable"), 1)
            chosen = (back_off(p, self.levels, min_precision, self.cuts(min_precision))
                      if min_precision is not None else None)
            return top, np.take_along_axis(p, top, 1), np.take_along_axis(dist, top, 1), chosen
        import torch

        from naics_pipeline.training.lorentz import pairwise_distance

        if not hasattr(self, "_six_points_t"):
            self._six_points_t = torch.as_tensor(self.points[self.six], device=self.device)
            self._onehot_t = {lv: torch.as_tensor(m, device=self.device) for lv, m in self.levels.onehot.items()}
        q = torch.as_tensor(self.points_of(vectors, 6), device=self.device)
        dist = pairwise_distance(q, self._six_points_t, c=self.curvature)
        geometry = torch.log_softmax(-dist / self.temperature, dim=1)
        p = torch.softmax(self.index.fused(self.scorer(), vectors, list(texts), geometry, rows.result()), dim=1)
        score, top = p.topk(k, dim=1)
        chosen = None
        if min_precision is not None:
            best = {}
            for level in LEVELS:
                pl = p if level == 6 else p @ self._onehot_t[level]
                conf, arg = pl.max(1)
                best[level] = (arg.cpu().numpy(), conf.double().cpu().numpy())
            chosen = choose_level(best, min_precision, self.cuts(min_precision))
        return (top.cpu().numpy(), score.double().cpu().numpy(), dist.gather(1, top).cpu().numpy(), chosen)

    # -- answers ---------------------------------------------------------------------------------
    def classify(self, texts: list[str], k: int = 5, min_precision: float | None = None,
                 batch_size: int = BATCH_SIZE) -> list[dict]:
        """Per text: {"text", "codes": the k most probable 6-digit codes [{"code", "title", "score",
        "level"}], "confident": {"code", "level", "score"} of the deepest level (6, 4, 2 digits) whose
        probability reaches that level's cut for min_precision (`cuts`), or None (also when min_precision
        is None)}."""
        check_arguments(k, min_precision)
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise ClassifyError("texts must be a list of strings")
        out = []
        k = min(k, len(self.six))
        for _, chunk, rows in self.batches(texts, batch_size):
            top, score, _, chosen = self.ranked(chunk, k, min_precision, rows)
            chosen = chosen if chosen is not None else [None] * len(chunk)
            for i, text in enumerate(chunk):
                rows = self.six[top[i]]
                codes = [{"code": c, "title": t, "score": float(s), "level": 6}
                         for c, t, s in zip(self.table.codes[rows], self.table.titles[rows], score[i])]
                confident = None
                if chosen[i] is not None:
                    level, pos, conf = chosen[i]
                    confident = {"code": str(self.levels.codes[level][pos]), "level": level, "score": conf}
                out.append({"text": text, "codes": codes, "confident": confident})
        return out

    def rank(self, query_points: np.ndarray, k: int, level: int | None = 6):
        """Geometry alone, any level: candidate-code indexes (Q, k) nearest first, their Lorentz distances
        and scores (softmax among all candidates of the level, logits -distance / temperature)."""
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
                      batch_size: int = BATCH_SIZE, min_precision: float | None = None) -> pa.Table:
        """One row per (text, rank) in OUTPUT_SCHEMA, `batch_size` texts at a time. At level 6 the
        ranking and score are the classifier's probabilities (fused when the stage has an entry
        index); at other levels (`nearest --level`) the geometry's. With `min_precision`, every row
        also carries its text's back-off answer (CONFIDENT_FIELDS; null where no level reaches it)."""
        check_arguments(k, min_precision)
        if min_precision is not None and level != 6:
            raise ClassifyError("min_precision needs the 6-digit ranking (level 6)")
        parts = []
        for start, chunk, rows in self.batches(texts, batch_size, fused=level == 6):
            if level == 6:
                top, score, d, chosen = self.ranked(chunk, min(k, len(self.six)), min_precision, rows)
                idx = self.six[top]
            else:
                idx, d, score = self.rank(self.query_points(chunk, level or 6), k, level)
            part = self._rows(idx, d, score, start)
            if min_precision is not None:
                per_text = [(None, None, None) if c is None else
                            (str(self.levels.codes[c[0]][c[1]]), c[0], c[2]) for c in chosen]
                rep = np.repeat(np.arange(len(chunk)), idx.shape[1])
                for j, (name, kind) in enumerate(CONFIDENT_FIELDS):
                    part = part.append_column(pa.field(name, kind), pa.array([per_text[i][j] for i in rep], kind))
            parts.append(part)
        if parts:
            return pa.concat_tables(parts)
        schema = OUTPUT_SCHEMA if min_precision is None else pa.schema([*OUTPUT_SCHEMA, *CONFIDENT_FIELDS])
        return schema.empty_table()

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


@contextmanager
def _switch_interval(seconds: float | None):
    """The interpreter's thread switch interval at most `seconds` inside the block (None: unchanged)."""
    before = sys.getswitchinterval()
    if seconds is not None:
        sys.setswitchinterval(min(before, seconds))
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def check_arguments(k, min_precision) -> None:
    """ClassifyError for k < 1 or min_precision outside (0, 1]."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ClassifyError(f"k must be an integer of at least 1, not {k!r}")
    if min_precision is not None:
        if isinstance(min_precision, bool) or not isinstance(min_precision, (int, float)) \
                or not 0 < min_precision <= 1:
            raise ClassifyError(f"min_precision must be a number in (0, 1], not {min_precision!r}")


def _file_digest(path: Path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


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
    if path.suffix.lower() == ".csv":
        _check_utf8(path)
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


def _check_utf8(path: Path) -> None:
    """ClassifyError naming the row (0-based data row, the header not counted) of the first byte that
    is not UTF-8, instead of pyarrow's conversion error."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start)
        where = "the header" if line == 0 else f"row {line - 1} (0-based data rows)"
        raise ClassifyError(f"{path}: {where} is not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset "
                            f"{exc.start}); save the file as UTF-8") from None


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
