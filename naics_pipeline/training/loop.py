"""One curriculum stage of contrastive training with PyTorch Lightning (no dagster import).

A stage reads its curriculum's sampling index and the cached text embeddings, starts from the
previous stage's weights, checkpoints every epoch (a killed stage resumes from last.ckpt when rerun
with the same settings), and writes model.pt plus evaluation metrics. `train_stage` builds the run
(`_start`: fingerprint and resume), the module (`_module`), the data and the trainer, and fits; the
`StageExport` callback scores the stage and writes its files when the fit ends.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import timedelta
from pathlib import Path

import lightning as L
import numpy as np
import pyarrow as pa
import torch

from naics_pipeline.curricula.sampling_index import SamplingIndex
from naics_pipeline.encoders import TextEmbeddings, encode_texts, make_encoder
from naics_pipeline.settings import ByDevice, config_field, for_device
from naics_pipeline.training.checkpoint import embed_all, embed_queries, load_model, save_model
from naics_pipeline.training.datamodule import PairDataModule
from naics_pipeline.training.evaluation import evaluate_embeddings, exclusion_references, retrieval_accuracy
from naics_pipeline.training.experiment_log import CurriculumMixLog, stage_loggers
from naics_pipeline.training.model import ModelConfig, NaicsEmbedder
from naics_pipeline.training.module import EpochHistory, NaicsContrastive, exclusion_tensors
from naics_pipeline.training.text_alignment import TextAlignmentModule, TextConfig, TextSide, TextTask, leaf_hardness

COLLAPSE_THRESHOLD = 0.2  # the guide: load_balancing_loss > 0.2 means MoE mode collapse


@dataclass
class TrainConfig:
    """How one stage trains. The fields declared by `config_field` are settings: naics_pipeline/settings.py
    gives their defaults (some by device: a ByDevice, or None for the setting's) and meanings."""
    epochs: int = 3
    batch_size: int | ByDevice | None = config_field("NAICS_BATCH_SIZE")
    max_pairs_per_epoch: int | ByDevice | None = config_field("NAICS_MAX_PAIRS_PER_EPOCH")
    learning_rate: float | ByDevice | None = config_field("NAICS_LEARNING_RATE")
    weight_decay: float = 0.01
    warmup_fraction: float = 0.05
    val_fraction: float = 0.01             # share of anchors held out for validation (the guide: 1%)
    seed: int = config_field("NAICS_SEED")
    accelerator: str = config_field("NAICS_ACCELERATOR")
    devices: str | int = config_field("NAICS_DEVICES")
    strategy: str = config_field("NAICS_STRATEGY")
    precision: str | ByDevice = ByDevice("bf16-mixed", "32-true")
    gpu_epoch_multiplier: int = 4          # on a GPU each stage runs epochs x this (measured: Spearman 0.853 -> 0.879)
    exclusion_weight: float = config_field("NAICS_EXCLUSION_WEIGHT")
    exclusion_margin: float = config_field("NAICS_EXCLUSION_MARGIN")
    # A checkpoint for resuming at most this often (seconds; 0: every epoch). Only last.ckpt is kept,
    # and it is removed once the stage is complete: a finished stage is retrained, never resumed.
    checkpoint_every_seconds: float | ByDevice = ByDevice(60.0, 0.0)
    cuda_graphs: bool = config_field("NAICS_CUDA_GRAPHS")
    progress_bar: bool = True

    def resolved(self, on_gpu: bool) -> TrainConfig:
        """Every device-dependent value picked (the one place they are), the epochs scaled on a GPU."""
        values = {f.name: for_device(getattr(self, f.name), f.metadata.get("env"), on_gpu) for f in fields(self)}
        cfg = TrainConfig(**values)
        if cfg.max_pairs_per_epoch < 0:
            raise ValueError(f"max_pairs_per_epoch (NAICS_MAX_PAIRS_PER_EPOCH) is {cfg.max_pairs_per_epoch}: "
                             "give 0 (all pairs) or a positive count")
        if str(cfg.devices).isdigit():
            cfg.devices = int(cfg.devices)
        if on_gpu:
            cfg.epochs = cfg.epochs * cfg.gpu_epoch_multiplier
        return cfg


@dataclass
class StageResult:
    stage: str
    model_path: Path
    metrics: dict
    history: list[dict]
    seconds: float
    resumed_from_checkpoint: bool
    config: dict = field(default_factory=dict)


@dataclass
class StageRun:
    """What one stage reads and where it writes: built once, read by the module, the export and the result."""
    stage: str
    out_dir: Path
    index: SamplingIndex
    embeddings: TextEmbeddings
    descriptions: pa.Table
    model_cfg: ModelConfig
    cfg: TrainConfig                    # resolved for the device
    on_gpu: bool
    text: TextTask | None
    holdout_texts: list[str] | None     # the held-out index entries (scored, never trained on)
    fingerprint: str = ""
    resume: bool = False
    started: float = field(default_factory=time.perf_counter)

    @property
    def levels(self) -> np.ndarray:
        return self.descriptions.column("level").to_numpy().astype(np.int64)

    @property
    def last_checkpoint(self) -> Path:
        return self.out_dir / "checkpoints" / "last.ckpt"


def uses_gpu(accelerator: str) -> bool:
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def _file_hash(path: Path | None) -> str | None:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16] if path and Path(path).exists() else None


def _start(run: StageRun, init_from: Path | None) -> StageRun:
    """The run's fingerprint (everything that decides its result) and whether to resume: only an
    interrupted run of the same fingerprint resumes; a finished one is retrained from scratch."""
    text = run.text
    parts = (run.model_cfg.to_dict(), asdict(run.cfg), run.index.meta, _file_hash(init_from), run.embeddings.encoder,
             asdict(text.config) if text else None, len(text.examples.texts) if text else None)
    fingerprint = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]
    run_file = run.out_dir / "run.json"
    previous = json.loads(run_file.read_text()) if run_file.is_file() else {}
    resume = (run.last_checkpoint.is_file() and previous.get("fingerprint") == fingerprint
              and not previous.get("complete"))
    if not resume:
        shutil.rmtree(run.out_dir / "checkpoints", ignore_errors=True)
        (run.out_dir / "history.json").unlink(missing_ok=True)
    run.out_dir.mkdir(parents=True, exist_ok=True)
    run_file.write_text(json.dumps({"fingerprint": fingerprint, "complete": False}))
    return replace(run, fingerprint=fingerprint, resume=resume)


def _trainer(cfg: TrainConfig, out_dir: Path, callbacks: list) -> L.Trainer:
    every = cfg.checkpoint_every_seconds
    # One file on disk: the latest checkpoint, with last.ckpt a link to it.
    checkpoint = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=str(out_dir / "checkpoints"), save_last="link", save_top_k=1, save_on_train_epoch_end=True,
        **({"train_time_interval": timedelta(seconds=every)} if every else {"every_n_epochs": 1}))
    return L.Trainer(
        max_epochs=cfg.epochs, accelerator=cfg.accelerator, devices=cfg.devices, strategy=cfg.strategy,
        precision=cfg.precision, default_root_dir=str(out_dir),
        logger=stage_loggers(out_dir, asdict(cfg)),   # CSV and TensorBoard (training.experiment_log)
        callbacks=[EpochHistory(out_dir / "history.json"), CurriculumMixLog(), *callbacks, checkpoint],
        enable_progress_bar=cfg.progress_bar, num_sanity_val_steps=0, log_every_n_steps=10,
        enable_model_summary=False, deterministic=False)


def _module(run: StageRun, init_from: Path | None, text_cache: Path | None, log) -> NaicsContrastive:
    """The stage's LightningModule, from `init_from`'s weights unless it resumes. The exclusion hinge
    follows the curriculum: the guide keeps exclusions out of the stages without bucket 8."""
    cfg, emb = run.cfg, run.embeddings
    with_exclusions = 8 in run.index.meta["curriculum"]["difficulty_buckets"] and cfg.exclusion_weight > 0
    links = exclusion_references(run.descriptions)
    hierarchy = dict(
        model_cfg=run.model_cfg.to_dict(), learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay,
        warmup_fraction=cfg.warmup_fraction, channels=emb.channels, present=emb.present, levels=run.levels,
        exclusions=exclusion_tensors(links, np.ones(len(links[0]), bool)) if with_exclusions else None,
        exclusion_weight=cfg.exclusion_weight, exclusion_margin=cfg.exclusion_margin)
    if run.text is None:
        module = NaicsContrastive(**hierarchy, cuda_graphs=cfg.cuda_graphs)
    else:
        module = _text_module(hierarchy, run, text_cache, log)
    if init_from is not None and not run.resume:
        module.model.load_state_dict(load_model(init_from)[0].state_dict())
        log(f"{run.stage}: starting from {init_from}")
    return module


def _text_module(hierarchy: dict, run: StageRun, text_cache: Path | None, log) -> TextAlignmentModule:
    """The text-alignment module over the task's training texts (never the held-out)."""
    text, examples, encoder_name = run.text.config, run.text.examples, run.embeddings.encoder
    if text.encoder == "auto":
        text = replace(text, encoder="finetune" if run.on_gpu and encoder_name.startswith("minilm") else "frozen")
    leaves, hardness = leaf_hardness(run.descriptions)
    leaf_of_row = {int(r): j for j, r in enumerate(leaves)}
    if text.encoder == "finetune":
        if not encoder_name.startswith("minilm"):
            raise ValueError(f"text encoder 'finetune' needs the minilm encoder, not {encoder_name!r}")
        st = make_encoder(encoder_name).trainable()
        st.max_seq_length = text.max_tokens
        tokens = {k: v.numpy() for k, v in st.tokenize(examples.texts).items() if k in ("input_ids", "attention_mask")}
        side = TextSide(encoder=st, tokens=tokens)
    else:
        features, stats = encode_texts(make_encoder(encoder_name), examples.texts, text_cache)
        log(f"text features: {stats['encoded']:,} texts encoded, {stats['reused']:,} reused from the cache")
        side = TextSide(features=features)
    log(f"text alignment: {len(examples.texts):,} texts of {len(leaves):,} codes, {trained_weights(text)}")
    return TextAlignmentModule(**hierarchy, text_cfg=asdict(text), text_side=side, leaves=leaves,
                               text_leaf=np.array([leaf_of_row[int(r)] for r in examples.code_index]),
                               leaf_hardness=hardness,
                               allocation={int(h): n for h, n in run.index.meta["allocation"].items()})


def trained_weights(text: TextConfig | None) -> str:
    if text is None:
        return "code model (MoE fusion, level radii); the text encoder is frozen"
    if text.encoder == "finetune":
        return "code model, query head and every weight of the MiniLM text encoder (fine-tuned)"
    return "code model and query head; the MiniLM text encoder is frozen"


@torch.no_grad()
def text_queries(module: TextAlignmentModule, texts: list[str], features: np.ndarray | None,
                 encoder_name: str) -> np.ndarray:
    """Texts as query points through the stage's own text side (the fine-tuned encoder, or the frozen
    encoder's features: `features` when given, else encoded here)."""
    module.eval()
    if module.text_side.encoder is not None:
        features = module.text_side.encoder.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    elif features is None:
        features = make_encoder(encoder_name).encode(texts)
    return module.queries(torch.as_tensor(features, device=module.device).float()).cpu().numpy()


def _evaluate(model: NaicsEmbedder, embeddings: TextEmbeddings, descriptions: pa.Table, levels: np.ndarray,
              curvature: float, holdout_texts: list[str] | None) -> dict:
    points, routing = embed_all(model, embeddings, levels)
    metrics = {**evaluate_embeddings(points, descriptions, curvature), **routing}
    metrics["moe_collapse"] = routing["load_balancing_loss"] > COLLAPSE_THRESHOLD
    if len(embeddings.holdout_codes):
        q = np.zeros((len(embeddings.holdout), 4, embeddings.holdout.shape[1]), np.float32)
        q[:, 0] = embeddings.holdout
        present = np.zeros((len(q), 4), bool)
        present[:, 0] = True
        metrics["retrieval"] = retrieval_accuracy(embed_queries(model, q, present), embeddings.holdout_codes,
                                                  points, descriptions, curvature, holdout_texts)
    return metrics


class StageExport(L.Callback):
    """When the fit ends, rank zero scores the stage and writes model.pt, points.npz, metrics.json and a
    complete run.json, and removes the checkpoints. Every rank then waits for it: under `ddp` each rank
    goes on to the next stage, which loads this model.pt. (Under ddp_spawn this runs in the workers.)"""

    def __init__(self, run: StageRun):
        self.run = run

    def on_fit_end(self, trainer: L.Trainer, module: NaicsContrastive) -> None:
        if trainer.is_global_zero:
            self.export(module)
        trainer.strategy.barrier("naics_model_written")

    def export(self, module: NaicsContrastive) -> None:
        run, emb, desc = self.run, self.run.embeddings, self.run.descriptions
        model, curvature = module.model.float(), run.model_cfg.curvature
        metrics = _evaluate(model, emb, desc, run.levels, curvature, run.holdout_texts)
        metrics["trained_weights"] = trained_weights(getattr(module, "text_cfg", None))
        if module.graphed_loss is not None:   # None when eager or in a text stage
            metrics["cuda_graph_shapes"] = [list(map(list, key)) for key in module.graphed_loss.captured()]
        extra, points = {}, embed_all(model, emb, run.levels)[0]
        arrays = {"points": points}   # the codes' coordinates (and the held-out entries'), for later scoring
        if run.text is not None:
            extra, t = module.text_state(), run.text
            queries = text_queries(module.float(), t.test_texts, t.test_features, emb.encoder)
            metrics["text_retrieval"] = retrieval_accuracy(queries, t.test_codes, points, desc, curvature, t.test_texts)
            arrays["holdout_queries"] = queries
        np.savez(run.out_dir / "points.npz", **arrays)
        history = module.history
        last_row = history[-1] if history else {}
        metrics.update(final_train_loss=last_row.get("train_loss"), final_val_loss=last_row.get("val_loss"),
                       seconds=time.perf_counter() - run.started)
        save_model(run.out_dir / "model.pt", {
            "state_dict": model.state_dict(), "model_config": run.model_cfg.to_dict(), "train_config": asdict(run.cfg),
            "stage": run.stage, "metrics": metrics, "history": history, "codes": emb.codes, "encoder": emb.encoder,
            **extra})
        (run.out_dir / "metrics.json").write_text(json.dumps({"metrics": metrics, "history": history},
                                                             indent=2, default=float))
        (run.out_dir / "run.json").write_text(json.dumps({"fingerprint": run.fingerprint, "complete": True}))
        shutil.rmtree(run.out_dir / "checkpoints", ignore_errors=True)


def _result(run: StageRun, trainer: L.Trainer, module: NaicsContrastive) -> StageResult:
    """What the stage wrote, on rank zero (under ddp_spawn the workers wrote it); {} metrics elsewhere."""
    written = json.loads((run.out_dir / "metrics.json").read_text()) if trainer.is_global_zero else {}
    history = module.history or EpochHistory.read(run.out_dir / "history.json")   # ddp_spawn trains in workers
    return StageResult(run.stage, run.out_dir / "model.pt", written.get("metrics", {}), history,
                       time.perf_counter() - run.started, run.resume, asdict(run.cfg))


def train_stage(stage: str, index_dir: Path, embeddings: TextEmbeddings, descriptions: pa.Table, out_dir: Path,
                model_cfg: ModelConfig, train_cfg: TrainConfig, *, init_from: Path | None = None,
                text: TextTask | None = None, holdout_texts: list[str] | None = None,
                text_cache: Path | None = None, log=print, callbacks: list | None = None) -> StageResult:
    """Train one stage from `init_from`'s weights; with `text`, a text-alignment stage (training.text_alignment).
    `holdout_texts` are the held-out index entries the code model is scored on."""
    if embeddings.codes != descriptions.column("code").to_pylist():
        raise ValueError("text embeddings do not match naics_descriptions: rematerialize text_embeddings")
    on_gpu = uses_gpu(train_cfg.accelerator)
    run = _start(StageRun(stage, Path(out_dir), SamplingIndex(index_dir), embeddings, descriptions, model_cfg,
                          train_cfg.resolved(on_gpu), on_gpu, text, holdout_texts), init_from)
    cfg = run.cfg
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    module = _module(run, init_from, text_cache, log)
    data = PairDataModule(run.index, cfg.batch_size, cfg.seed, cfg.max_pairs_per_epoch, cfg.val_fraction,
                          len(text.examples.texts) if text else 0)
    trainer = _trainer(cfg, run.out_dir, [*(callbacks or []), StageExport(run)])
    log(f"{stage}: {len(data.train_ids):,} train / {len(data.val_ids):,} val pairs, batch {cfg.batch_size}, "
        f"{cfg.epochs} epochs, precision {cfg.precision}, exclusion hinge={module.use_exclusions}, resume={run.resume}")
    trainer.fit(module, datamodule=data, ckpt_path=str(run.last_checkpoint) if run.resume else None)
    return _result(run, trainer, module)
