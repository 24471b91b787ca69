"""One curriculum stage of contrastive training with PyTorch Lightning (no dagster import).

A stage reads its curriculum's sampling index and the cached text embeddings, starts from the
previous stage's weights, checkpoints every epoch (a killed stage resumes from last.ckpt when rerun
with the same settings), and writes model.pt plus evaluation metrics.
"""
from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import lightning as L
import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import IterableDataset

from naics_pipeline.evaluation import evaluate_embeddings, exclusion_references, held_out_links, retrieval_accuracy
from naics_pipeline.model import ModelConfig, NaicsEmbedder, exclusion_hinge, info_nce
from naics_pipeline.sampling import Sampler, SamplingIndex
from naics_pipeline.storage import atomic_path
from naics_pipeline.text_encoder import TextEmbeddings

COLLAPSE_THRESHOLD = 0.2  # the guide: load_balancing_loss > 0.2 means MoE mode collapse


@dataclass
class TrainConfig:
    epochs: int = 3
    batch_size: int | None = None          # None: 4096 on GPU, 512 on CPU
    max_pairs_per_epoch: int | None = -1   # -1: all pairs on GPU, 8192 on CPU; None: all pairs
    learning_rate: float = 2e-3
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
    # Share of exclusion links kept out of the hinge (seeded), to measure whether separation carries
    # over to links the hinge never saw: metrics exclusion_separation_seen / _unseen. 0: use them all.
    exclusion_holdout: float = 0.0
    progress_bar: bool = True

    def resolved(self, on_gpu: bool) -> "TrainConfig":
        cfg = TrainConfig(**asdict(self))
        if cfg.batch_size is None:
            cfg.batch_size = 4096 if on_gpu else 512
        if cfg.max_pairs_per_epoch == -1:
            cfg.max_pairs_per_epoch = None if on_gpu else 8192
        if cfg.precision is None:
            cfg.precision = "bf16-mixed" if on_gpu else "32-true"
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


# ---------------------------------------------------------------------------------------------
# Data

def split_pairs(index: SamplingIndex, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train/val pair ids, split by anchor (a deterministic hash of the anchor's index)."""
    anchors = np.unique(index.anchor)
    n_val = max(1, int(round(len(anchors) * val_fraction))) if val_fraction > 0 else 0
    rng = np.random.default_rng([seed, 7919])
    val_anchors = rng.choice(anchors, size=min(n_val, len(anchors) - 1), replace=False) if n_val else []
    is_val = np.isin(index.anchor, val_anchors)
    return np.nonzero(~is_val)[0], np.nonzero(is_val)[0]


class PairBatches(IterableDataset):
    """Batches of (anchor, positive, K negatives) for one epoch; each DDP rank gets a disjoint,
    equally long shard of the epoch's permutation (equal lengths keep the ranks in step)."""

    def __init__(self, index: SamplingIndex, pair_ids: np.ndarray, batch_size: int, seed: int,
                 max_pairs: int | None, shuffle: bool = True):
        self.sampler = Sampler(index, batch_size=batch_size, seed=seed, pair_ids=pair_ids)
        self.pair_ids, self.batch_size, self.seed = pair_ids, batch_size, seed
        self.max_pairs, self.shuffle = max_pairs, shuffle
        self.epoch = 0

    def _rank_world(self):
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def _per_rank(self, world: int) -> int:
        per_rank = len(self.pair_ids) // world
        if self.max_pairs:
            per_rank = min(per_rank, max(self.max_pairs // world, 1))
        return per_rank

    def _shard(self, rng) -> np.ndarray:
        rank, world = self._rank_world()
        ids = self.pair_ids[rng.permutation(len(self.pair_ids))] if self.shuffle else self.pair_ids
        return ids[rank::world][:self._per_rank(world)]

    def __len__(self) -> int:
        return math.ceil(self._per_rank(self._rank_world()[1]) / self.batch_size)

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch if self.shuffle else 0])
        ids = self._shard(rng)
        for i in range(0, len(ids), self.batch_size):
            b = self.sampler.batch(ids[i:i + self.batch_size], rng)
            yield {"anchor": torch.from_numpy(b.anchor), "positive": torch.from_numpy(b.positive),
                   "negatives": torch.from_numpy(b.negatives)}


# ---------------------------------------------------------------------------------------------
# Lightning module

def _mean(values: list[torch.Tensor]) -> float:
    return float(torch.stack([v.float() for v in values]).mean())


def exclusion_tensors(links, keep: np.ndarray) -> dict[str, np.ndarray]:
    """The exclusion links (exclusion_references' output) selected by `keep`, with their reference
    codes padded into a matrix (mask marks the real ones)."""
    code, excluded, refs = links
    code, excluded, refs = code[keep], excluded[keep], [r for r, k in zip(refs, keep) if k]
    width = max((len(r) for r in refs), default=1)
    ref = np.zeros((len(refs), width), np.int64)
    mask = np.zeros((len(refs), width), bool)
    for i, r in enumerate(refs):
        ref[i, :len(r)], mask[i, :len(r)] = r, True
    return {"ex_code": code, "ex_excluded": excluded, "ex_ref": ref, "ex_mask": mask}


class NaicsContrastive(L.LightningModule):
    def __init__(self, model_cfg: dict, learning_rate: float, weight_decay: float, warmup_fraction: float,
                 channels: np.ndarray, present: np.ndarray, levels: np.ndarray,
                 exclusions: dict[str, np.ndarray] | None = None, exclusion_weight: float = 0.0,
                 exclusion_margin: float = 0.1):
        super().__init__()
        self.save_hyperparameters(ignore=["channels", "present", "levels", "exclusions"])
        self.cfg = ModelConfig(**model_cfg)
        self.model = NaicsEmbedder(self.cfg)
        self.register_buffer("channels", torch.as_tensor(channels, dtype=torch.float32), persistent=False)
        self.register_buffer("present", torch.as_tensor(present), persistent=False)
        self.register_buffer("levels", torch.as_tensor(levels, dtype=torch.long), persistent=False)
        self.use_exclusions = bool(exclusions) and exclusion_weight > 0 and len(exclusions["ex_code"]) > 0
        for name, value in (exclusions or {}).items():
            self.register_buffer(name, torch.as_tensor(value), persistent=False)
        self.history: list[dict] = []
        self._epoch_sums: dict[str, list[torch.Tensor]] = {}

    def all_points(self):
        return self.model(self.channels, self.present, self.levels)

    def _step(self, batch, stage: str):
        # 2,125 codes: embedding every code once per step is cheaper than gathering features.
        points, lb, usage = self.all_points()
        nce = info_nce(points, batch["anchor"], batch["positive"], batch["negatives"],
                       self.cfg.curvature, self.cfg.temperature)
        loss = nce + self.cfg.load_balancing_coef * lb
        bs = len(batch["anchor"])
        if stage == "train" and self.use_exclusions:
            ex = exclusion_hinge(points, self.ex_code, self.ex_excluded, self.ex_ref, self.ex_mask,
                                 self.cfg.curvature, self.hparams.exclusion_margin)
            loss = loss + self.hparams.exclusion_weight * ex
            self.log("train_exclusion_loss", ex, batch_size=bs)
            self._epoch_sums.setdefault("train_exclusion_loss", []).append(ex.detach())
        self.log(f"{stage}_loss", nce, prog_bar=True, batch_size=bs, sync_dist=stage == "val")
        self.log(f"{stage}_load_balancing_loss", lb, batch_size=bs, sync_dist=stage == "val")
        # Detached tensors, reduced once per epoch: float() here would sync the GPU every step.
        self._epoch_sums.setdefault(f"{stage}_loss", []).append(nce.detach())
        self._epoch_sums.setdefault(f"{stage}_load_balancing_loss", []).append(lb.detach())
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def on_train_epoch_start(self):
        loader = self.trainer.train_dataloader
        dataset = getattr(loader, "dataset", None)
        if isinstance(dataset, PairBatches):
            dataset.epoch = self.current_epoch

    def on_validation_epoch_end(self):
        # Validation runs inside the training epoch, before on_train_epoch_end: keep its means apart.
        self._val_means = {k: _mean(v) for k, v in self._epoch_sums.items() if k.startswith("val") and v}
        self._epoch_sums = {k: v for k, v in self._epoch_sums.items() if not k.startswith("val")}

    def record_epoch(self):
        row = {"epoch": self.current_epoch}
        row.update({k: _mean(v) for k, v in self._epoch_sums.items() if v})
        row.update(getattr(self, "_val_means", {}))
        self.history.append(row)
        self._epoch_sums, self._val_means = {}, {}

    def on_save_checkpoint(self, checkpoint):
        checkpoint["naics_history"] = self.history

    def on_load_checkpoint(self, checkpoint):
        self.history = checkpoint.get("naics_history", [])

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.learning_rate,
                                weight_decay=self.hparams.weight_decay)
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        warmup = max(int(total * self.hparams.warmup_fraction), 1)

        def schedule(step):
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * min((step - warmup) / max(total - warmup, 1), 1.0)))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class EpochHistory(L.Callback):
    """Appends the epoch's mean losses to module.history. Lightning runs checkpoint callbacks after
    all others, so the row is in the checkpoint saved at the same epoch end."""

    def on_train_epoch_end(self, trainer, module):
        module.record_epoch()


# ---------------------------------------------------------------------------------------------
# A stage

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


def train_stage(stage: str, index_dir: Path, embeddings: TextEmbeddings, descriptions: pa.Table, out_dir: Path,
                model_cfg: ModelConfig, train_cfg: TrainConfig, init_from: Path | None = None,
                log=print, callbacks: list | None = None) -> StageResult:
    t0 = time.perf_counter()
    on_gpu = uses_gpu(train_cfg.accelerator)
    cfg = train_cfg.resolved(on_gpu)
    out_dir = Path(out_dir)
    ckpt_dir = out_dir / "checkpoints"
    index = SamplingIndex(index_dir)
    levels = descriptions.column("level").to_numpy().astype(np.int64)
    if embeddings.codes != descriptions.column("code").to_pylist():
        raise ValueError("text embeddings do not match naics_descriptions: rematerialize text_embeddings")
    fingerprint = _fingerprint(model_cfg.to_dict(), asdict(cfg), index.meta, _file_hash(init_from),
                               embeddings.encoder)
    run_file = out_dir / "run.json"
    last = ckpt_dir / "last.ckpt"
    previous = json.loads(run_file.read_text()) if run_file.is_file() else {}
    # Resume only an interrupted run of the same settings; a finished one is retrained from scratch.
    resume = last.is_file() and previous.get("fingerprint") == fingerprint and not previous.get("complete")
    if not resume:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    run_file.write_text(json.dumps({"fingerprint": fingerprint, "stage": stage, "complete": False}))

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    # The guide keeps exclusions out of early stages: the hinge follows the curriculum's bucket 8.
    with_exclusions = 8 in index.meta["curriculum"]["difficulty_buckets"] and cfg.exclusion_weight > 0
    links = exclusion_references(descriptions)
    held = held_out_links(len(links[0]), cfg.exclusion_holdout, cfg.seed)
    module = NaicsContrastive(model_cfg.to_dict(), cfg.learning_rate, cfg.weight_decay, cfg.warmup_fraction,
                              embeddings.channels, embeddings.present, levels,
                              exclusion_tensors(links, ~held) if with_exclusions else None,
                              cfg.exclusion_weight, cfg.exclusion_margin)
    if init_from is not None and not resume:
        prev, _ = load_model(init_from)
        module.model.load_state_dict(prev.state_dict())
        log(f"{stage}: starting from {init_from}")
    train_ids, val_ids = split_pairs(index, cfg.val_fraction, cfg.seed)
    train_data = PairBatches(index, train_ids, cfg.batch_size, cfg.seed, cfg.max_pairs_per_epoch)
    val_data = PairBatches(index, val_ids, cfg.batch_size, cfg.seed + 1, None, shuffle=False) if len(val_ids) else None
    trainer = L.Trainer(
        max_epochs=cfg.epochs, accelerator=cfg.accelerator, devices=cfg.devices, strategy=cfg.strategy,
        precision=cfg.precision, default_root_dir=str(out_dir), logger=L.pytorch.loggers.CSVLogger(str(out_dir), name="logs"),
        callbacks=[EpochHistory(), *(callbacks or []),
                   L.pytorch.callbacks.ModelCheckpoint(dirpath=str(ckpt_dir), filename="epoch{epoch}",
                                                       save_last=True, save_top_k=1, save_on_train_epoch_end=True)],
        enable_progress_bar=cfg.progress_bar, num_sanity_val_steps=0, log_every_n_steps=10,
        enable_model_summary=False, deterministic=False)
    log(f"{stage}: {len(train_ids):,} train / {len(val_ids):,} val pairs, batch {cfg.batch_size}, "
        f"{cfg.epochs} epochs, precision {cfg.precision}, exclusion hinge={module.use_exclusions}, resume={resume}")
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(train_data, batch_size=None),
                val_dataloaders=torch.utils.data.DataLoader(val_data, batch_size=None) if val_data else None,
                ckpt_path=str(last) if resume else None)
    if not module.history and last.is_file():
        # ddp_spawn trains in child processes: the main process gets the weights back, not the history.
        module.history = torch.load(last, map_location="cpu", weights_only=False).get("naics_history", [])
    model_path = out_dir / "model.pt"
    metrics: dict = {}
    if trainer.is_global_zero:
        model = module.model.float()
        points, routing = embed_all(model, embeddings, levels)
        metrics = evaluate_embeddings(points, descriptions, model_cfg.curvature, held)
        metrics.update(routing)
        metrics["moe_collapse"] = routing["load_balancing_loss"] > COLLAPSE_THRESHOLD
        if len(embeddings.holdout_codes):
            q = np.zeros((len(embeddings.holdout), 4, embeddings.holdout.shape[1]), np.float32)
            q[:, 0] = embeddings.holdout
            present = np.zeros((len(q), 4), bool)
            present[:, 0] = True
            metrics["retrieval"] = retrieval_accuracy(embed_queries(model, q, present), embeddings.holdout_codes,
                                                      points, descriptions, model_cfg.curvature)
        last_row = module.history[-1] if module.history else {}
        metrics["final_train_loss"] = last_row.get("train_loss")
        metrics["final_val_loss"] = last_row.get("val_loss")
        metrics["seconds"] = time.perf_counter() - t0
        with atomic_path(model_path) as tmp:
            torch.save({"state_dict": model.state_dict(), "model_config": model_cfg.to_dict(),
                        "train_config": asdict(cfg), "stage": stage, "metrics": metrics,
                        "history": module.history, "codes": embeddings.codes,
                        "encoder": embeddings.encoder}, tmp)
        (out_dir / "metrics.json").write_text(json.dumps({"metrics": metrics, "history": module.history},
                                                         indent=2, default=float))
        run_file.write_text(json.dumps({"fingerprint": fingerprint, "stage": stage, "complete": True}))
    # Under `ddp` every rank runs this function: the others must not start the next stage (which loads
    # this model.pt) before rank 0 has written it. A no-op without a process group (ddp_spawn's parent).
    trainer.strategy.barrier("naics_model_written")
    return StageResult(stage, model_path, metrics, module.history, time.perf_counter() - t0, resume, asdict(cfg))
