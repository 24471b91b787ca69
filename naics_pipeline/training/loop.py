"""One curriculum stage of contrastive training with PyTorch Lightning (no dagster import).

A stage reads its curriculum's sampling index and the cached text embeddings, starts from the
previous stage's weights, checkpoints every epoch (a killed stage resumes from last.ckpt when rerun
with the same settings), and writes model.pt plus evaluation metrics.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import timedelta
from pathlib import Path

import lightning as L
import numpy as np
import pyarrow as pa
import torch

from naics_pipeline.curricula.sampling import SamplingIndex
from naics_pipeline.storage import atomic_path
from naics_pipeline.text.encoder import TextEmbeddings, encode_texts, make_encoder
from naics_pipeline.training.datamodule import PairDataModule
from naics_pipeline.training.evaluation import evaluate_embeddings, exclusion_references, retrieval_accuracy
from naics_pipeline.training.experiment_log import CurriculumMixLog, stage_loggers
from naics_pipeline.training.model import ModelConfig, NaicsEmbedder
from naics_pipeline.training.module import EpochHistory, NaicsContrastive, exclusion_tensors
from naics_pipeline.training.text_alignment import (
    TextAlignmentModule,
    TextConfig,
    TextExamples,
    TextSide,
    leaf_hardness,
)

COLLAPSE_THRESHOLD = 0.2  # the guide: load_balancing_loss > 0.2 means MoE mode collapse


@dataclass
class TrainConfig:
    epochs: int = 3
    batch_size: int | None = None          # None: 16384 on GPU, 2048 on CPU
    max_pairs_per_epoch: int | None = -1   # -1: all pairs on GPU, 32768 on CPU; None: all pairs
    learning_rate: float | None = None     # None: 4e-3 on GPU (its 16,384-pair batches), 2e-3 on CPU
    weight_decay: float = 0.01
    warmup_fraction: float = 0.05
    val_fraction: float = 0.01             # share of anchors held out for validation (the guide: 1%)
    seed: int = 0
    accelerator: str = "auto"
    devices: str | int = "auto"
    strategy: str = "auto"
    precision: str | None = None           # None: bf16-mixed on GPU, 32-true on CPU
    gpu_epoch_multiplier: int = 4          # on a GPU each stage runs epochs x this (measured: Spearman 0.853 -> 0.879)
    # Exclusion hinge, on in stages whose curriculum has bucket 8: an excluded code should sit at least
    # (1 + margin) x the code's mean sibling distance away. 0 turns it off.
    exclusion_weight: float = 1.0
    exclusion_margin: float = 0.1
    # A checkpoint for resuming at most this often (seconds; 0: every epoch). Only last.ckpt is kept,
    # and it is removed once the stage is complete: a finished stage is retrained, never resumed.
    checkpoint_every_seconds: float | None = None   # None: 60 on GPU, every epoch on CPU
    cuda_graphs: bool = True               # hierarchy steps on a GPU replayed as CUDA graphs (training.cuda_graphs)
    progress_bar: bool = True

    def resolved(self, on_gpu: bool) -> TrainConfig:
        cfg = TrainConfig(**asdict(self))
        if cfg.batch_size is None:
            # A step costs about the same at 4,096 or 16,384 pairs on an H200 (the 2,125-code forward and
            # kernel launches dominate); 4x the batch at 2x the rate keeps the stage-3 metrics (README).
            # On the CPU too a step's cost is the 2,125-code forward and backward: 2,048 pairs x 16 steps
            # per epoch beat 512 x 16 on every stage-3 metric at about the same time (README, CPU).
            cfg.batch_size = 16384 if on_gpu else 2048
        if cfg.learning_rate is None:
            cfg.learning_rate = 4e-3 if on_gpu else 2e-3
        if cfg.max_pairs_per_epoch == -1:
            cfg.max_pairs_per_epoch = None if on_gpu else 32768
        if cfg.precision is None:
            cfg.precision = "bf16-mixed" if on_gpu else "32-true"
        if cfg.checkpoint_every_seconds is None:
            cfg.checkpoint_every_seconds = 60.0 if on_gpu else 0.0
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


def uses_gpu(accelerator: str) -> bool:
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())



def _fingerprint(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _file_hash(path: Path | None) -> str | None:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16] if path and Path(path).exists() else None


def load_model(path: Path, device: str = "cpu") -> tuple[NaicsEmbedder, dict]:
    blob = torch.load(path, map_location=device, weights_only=False)
    model = NaicsEmbedder(ModelConfig(**blob["model_config"]))
    model.load_state_dict(blob["state_dict"])
    model.eval()
    return model, blob


@torch.no_grad()
def embed_all(model: NaicsEmbedder, emb: TextEmbeddings, levels: np.ndarray) -> tuple[np.ndarray, dict]:
    model.eval()
    dev = next(model.parameters()).device
    points, lb, usage = model(torch.as_tensor(emb.channels, device=dev), torch.as_tensor(emb.present, device=dev),
                              torch.as_tensor(levels, dtype=torch.long, device=dev))
    return points.cpu().numpy(), {"load_balancing_loss": float(lb), "expert_usage": usage.cpu().tolist()}


@torch.no_grad()
def embed_queries(model: NaicsEmbedder, channels: np.ndarray, present: np.ndarray, level: int = 6) -> np.ndarray:
    dev = next(model.parameters()).device
    levels = torch.full((len(channels),), level, dtype=torch.long, device=dev)
    points, _, _ = model(torch.as_tensor(channels, device=dev), torch.as_tensor(present, device=dev), levels)
    return points.cpu().numpy()


def _resume_state(out_dir: Path, fingerprint: str) -> bool:
    """Resume only an interrupted run of the same settings; a finished one is retrained from scratch."""
    run_file, last = out_dir / "run.json", out_dir / "checkpoints" / "last.ckpt"
    previous = json.loads(run_file.read_text()) if run_file.is_file() else {}
    resume = last.is_file() and previous.get("fingerprint") == fingerprint and not previous.get("complete")
    if not resume:
        shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
        (out_dir / "history.json").unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    run_file.write_text(json.dumps({"fingerprint": fingerprint, "complete": False}))
    return resume


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


def _text_module(common: tuple, common_kw: dict, text: TextConfig, index: SamplingIndex, descriptions: pa.Table,
                 encoder_name: str, on_gpu: bool, log, examples: TextExamples | None = None,
                 text_cache: Path | None = None) -> tuple[TextAlignmentModule, int]:
    """The text-alignment module over the kept index entries and 6-digit titles (never the held-out),
    or over `examples` (a cross-validation fold)."""
    if text.encoder == "auto":
        text = replace(text, encoder="finetune" if on_gpu and encoder_name.startswith("minilm") else "frozen")
    examples = examples or TextExamples.from_descriptions(descriptions)
    leaves, hardness = leaf_hardness(descriptions)
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
    module = TextAlignmentModule(*common, **common_kw, text_cfg=asdict(text), text_side=side, leaves=leaves,
                                 text_leaf=np.array([leaf_of_row[int(r)] for r in examples.code_index]),
                                 leaf_hardness=hardness,
                                 allocation={int(h): n for h, n in index.meta["allocation"].items()})
    return module, len(examples.texts)


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


def save_model(path: Path, blob: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)


def train_stage(stage: str, index_dir: Path, embeddings: TextEmbeddings, descriptions: pa.Table, out_dir: Path,
                model_cfg: ModelConfig, train_cfg: TrainConfig, init_from: Path | None = None,
                log=print, callbacks: list | None = None, text: TextConfig | None = None,
                holdout_texts: list[str] | None = None, text_examples: TextExamples | None = None,
                holdout_codes: list[str] | None = None, text_cache: Path | None = None) -> StageResult:
    """Train one stage; with `text`, a text-alignment stage (see training.text_alignment), scored on
    `holdout_texts` (the held-out index entries; with `holdout_codes`, any texts and their codes)."""
    t0 = time.perf_counter()
    on_gpu = uses_gpu(train_cfg.accelerator)
    cfg = train_cfg.resolved(on_gpu)
    out_dir = Path(out_dir)
    index = SamplingIndex(index_dir)
    levels = descriptions.column("level").to_numpy().astype(np.int64)
    if embeddings.codes != descriptions.column("code").to_pylist():
        raise ValueError("text embeddings do not match naics_descriptions: rematerialize text_embeddings")
    fingerprint = _fingerprint(model_cfg.to_dict(), asdict(cfg), index.meta, _file_hash(init_from),
                               embeddings.encoder, asdict(text) if text else None,
                               len(text_examples.texts) if text_examples else None)
    resume = _resume_state(out_dir, fingerprint)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    # The guide keeps exclusions out of early stages: the hinge follows the curriculum's bucket 8.
    with_exclusions = 8 in index.meta["curriculum"]["difficulty_buckets"] and cfg.exclusion_weight > 0
    links = exclusion_references(descriptions)
    common = (model_cfg.to_dict(), cfg.learning_rate, cfg.weight_decay, cfg.warmup_fraction,
              embeddings.channels, embeddings.present, levels)
    common_kw = {"exclusions": exclusion_tensors(links, np.ones(len(links[0]), bool)) if with_exclusions else None,
                 "exclusion_weight": cfg.exclusion_weight, "exclusion_margin": cfg.exclusion_margin}
    text_count = 0
    if text is not None:
        module, text_count = _text_module(common, common_kw, text, index, descriptions, embeddings.encoder,
                                          on_gpu, log, text_examples, text_cache)
    else:
        module = NaicsContrastive(*common, **common_kw, cuda_graphs=cfg.cuda_graphs)
    if init_from is not None and not resume:
        module.model.load_state_dict(load_model(init_from)[0].state_dict())
        log(f"{stage}: starting from {init_from}")
    data = PairDataModule(index, cfg.batch_size, cfg.seed, cfg.max_pairs_per_epoch, cfg.val_fraction, text_count)
    trainer = _trainer(cfg, out_dir, callbacks or [])
    log(f"{stage}: {len(data.train_ids):,} train / {len(data.val_ids):,} val pairs, batch {cfg.batch_size}, "
        f"{cfg.epochs} epochs, precision {cfg.precision}, exclusion hinge={module.use_exclusions}, resume={resume}")
    trainer.fit(module, datamodule=data, ckpt_path=str(out_dir / "checkpoints" / "last.ckpt") if resume else None)
    history = module.history or EpochHistory.read(out_dir / "history.json")  # ddp_spawn trains in children
    model_path = out_dir / "model.pt"
    metrics: dict = {}
    if trainer.is_global_zero:
        model = module.model.float()
        entries = None if holdout_codes else holdout_texts
        metrics = _evaluate(model, embeddings, descriptions, levels, model_cfg.curvature, entries)
        metrics["trained_weights"] = trained_weights(getattr(module, "text_cfg", None))
        if module.graphed_loss is not None:   # None when eager, in a text stage, in ddp_spawn's parent
            metrics["cuda_graph_shapes"] = [list(map(list, key)) for key in module.graphed_loss.captured()]
        extra, points = {}, embed_all(model, embeddings, levels)[0]
        arrays = {"points": points}   # the codes' coordinates (and the held-out entries'), for later scoring
        if text is not None:
            extra = module.text_state()
            features = None if holdout_codes else embeddings.holdout
            queries = text_queries(module.float(), holdout_texts or [], features, embeddings.encoder)
            metrics["text_retrieval"] = retrieval_accuracy(queries, holdout_codes or embeddings.holdout_codes, points,
                                                           descriptions, model_cfg.curvature, holdout_texts)
            arrays["holdout_queries"] = queries
        np.savez(out_dir / "points.npz", **arrays)
        last_row = history[-1] if history else {}
        metrics.update(final_train_loss=last_row.get("train_loss"), final_val_loss=last_row.get("val_loss"),
                       seconds=time.perf_counter() - t0)
        save_model(model_path, {"state_dict": model.state_dict(), "model_config": model_cfg.to_dict(),
                                "train_config": asdict(cfg), "stage": stage, "metrics": metrics,
                                "history": history, "codes": embeddings.codes, "encoder": embeddings.encoder,
                                **extra})
        (out_dir / "metrics.json").write_text(json.dumps({"metrics": metrics, "history": history},
                                                         indent=2, default=float))
        (out_dir / "run.json").write_text(json.dumps({"fingerprint": fingerprint, "complete": True}))
        shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
    # Under `ddp` every rank runs this function: the others must not start the next stage (which loads
    # this model.pt) before rank 0 has written it. A no-op without a process group (ddp_spawn's parent).
    trainer.strategy.barrier("naics_model_written")
    return StageResult(stage, model_path, metrics, history, time.perf_counter() - t0, resume, asdict(cfg))
