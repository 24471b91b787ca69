"""The LightningModule: hyperbolic InfoNCE over (anchor, positive, K negatives), the exclusion hinge,
per-epoch loss history, AdamW with a cosine schedule."""
from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import numpy as np
import torch

from naics_pipeline.training.cuda_graphs import GraphedTrainLoss
from naics_pipeline.training.losses import exclusion_hinge, info_nce
from naics_pipeline.training.model import ModelConfig, NaicsEmbedder


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
    # Constructor arguments kept out of hparams (data, not settings); a subclass extends the tuple.
    not_hyperparameters = ("channels", "present", "levels", "exclusions")

    def __init__(self, *, model_cfg: dict, learning_rate: float, weight_decay: float, warmup_fraction: float,
                 channels: np.ndarray, present: np.ndarray, levels: np.ndarray,
                 exclusions: dict[str, np.ndarray] | None = None, exclusion_weight: float = 0.0,
                 exclusion_margin: float = 0.1, cuda_graphs: bool = False):
        super().__init__()
        self.save_hyperparameters(ignore=list(self.not_hyperparameters))
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
        self.graphed_loss: GraphedTrainLoss | None = None

    def on_fit_start(self):
        if self.hparams.cuda_graphs and self.device.type == "cuda":
            self.graphed_loss = GraphedTrainLoss(self)

    def all_points(self):
        return self.model(self.channels, self.present, self.levels)

    def _step(self, batch, stage: str):
        graphed = self.graphed_loss(batch) if stage == "train" and self.graphed_loss is not None else None
        if graphed is not None:
            loss, parts = graphed
            self.accumulate_parts(stage, parts)
            return loss
        # 2,125 codes: embedding every code once per step is cheaper than gathering features.
        points, lb, _ = self.all_points()
        return self.hierarchy_loss(points, lb, batch, stage)

    def hierarchy_losses(self, points: torch.Tensor, lb: torch.Tensor, batch: dict,
                         train: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss to minimise and its logged parts (InfoNCE, load balancing, the hinge in training)."""
        nce = info_nce(points, batch["anchor"], batch["positive"], batch["negatives"],
                       c=self.cfg.curvature, temperature=self.cfg.temperature)
        loss = nce + self.cfg.load_balancing_coef * lb
        parts = {"loss": nce, "load_balancing_loss": lb}
        if train and self.use_exclusions:
            ex = exclusion_hinge(points, self.ex_code, self.ex_excluded, self.ex_ref, self.ex_mask,
                                 c=self.cfg.curvature, margin=self.hparams.exclusion_margin)
            loss = loss + self.hparams.exclusion_weight * ex
            parts["exclusion_loss"] = ex
        return loss, parts

    def hierarchy_loss(self, points: torch.Tensor, lb: torch.Tensor, batch: dict, stage: str) -> torch.Tensor:
        loss, parts = self.hierarchy_losses(points, lb, batch, stage == "train")
        self.accumulate_parts(stage, parts)
        return loss

    def accumulate_parts(self, stage: str, parts: dict[str, torch.Tensor]) -> None:
        for name, value in parts.items():
            self.accumulate(f"{stage}_{name}", value)

    def accumulate(self, name: str, value: torch.Tensor) -> None:
        # Detached tensors, reduced once per epoch: logging or float() here would sync the GPU every step.
        self._epoch_sums.setdefault(name, []).append(value.detach())

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def on_validation_epoch_end(self):
        # Validation runs inside the training epoch, before on_train_epoch_end: keep its means apart.
        self._val_means = {k: self._reduced(v) for k, v in self._epoch_sums.items() if k.startswith("val") and v}
        self._epoch_sums = {k: v for k, v in self._epoch_sums.items() if not k.startswith("val")}

    def _reduced(self, values: list[torch.Tensor]) -> float:
        """The epoch mean over this rank's steps, averaged over the ranks (one sync per epoch)."""
        return float(self.trainer.strategy.reduce(torch.stack([v.float() for v in values]).mean(), reduce_op="mean"))

    def record_epoch(self):
        row = {"epoch": self.current_epoch}
        row.update({k: self._reduced(v) for k, v in self._epoch_sums.items() if v})
        row.update(getattr(self, "_val_means", {}))
        self.history.append(row)
        self.log_dict({k: v for k, v in row.items() if k != "epoch"}, on_epoch=True, sync_dist=False)
        self._epoch_sums, self._val_means = {}, {}

    def on_save_checkpoint(self, checkpoint):
        checkpoint["naics_history"] = self.history

    def on_load_checkpoint(self, checkpoint):
        self.history = checkpoint.get("naics_history", [])

    def parameter_groups(self) -> list[dict]:
        return [{"params": list(self.parameters())}]

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameter_groups(), lr=self.hparams.learning_rate,
                                weight_decay=self.hparams.weight_decay, fused=self.device.type == "cuda")
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        warmup = max(int(total * self.hparams.warmup_fraction), 1)

        def schedule(step):
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * min((step - warmup) / max(total - warmup, 1), 1.0)))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class EpochHistory(L.Callback):
    """Appends the epoch's mean losses to module.history and (rank 0) to a JSON file, which is how the
    history reaches the parent process under ddp_spawn. Lightning runs checkpoint callbacks after all
    others, so the row is also in a checkpoint saved at the same epoch end."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def on_train_epoch_end(self, trainer, module):
        module.record_epoch()
        if trainer.is_global_zero:
            self.path.write_text(json.dumps(module.history, default=float))

    @staticmethod
    def read(path: Path) -> list[dict]:
        return json.loads(Path(path).read_text()) if Path(path).is_file() else []
