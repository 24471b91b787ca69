"""A stage's experiment logs: Lightning's TensorBoardLogger beside the CSV log (no dagster import).

Under `<stage folder>/tensorboard/version_N/` (one version per training attempt; a resumed stage starts
the next one): the losses and the evaluation metrics the module logs every epoch, the model's and the
run's hyperparameters, and the curriculum's requested and realized hardness mix. The CSV log stays in
`<stage folder>/logs/` and history.json stays what the assets' plots read. `make tensorboard` opens them.
"""
from __future__ import annotations

import json
from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

TENSORBOARD_DIR = "tensorboard"


def tensorboard_dir(stage_dir: Path) -> Path:
    return Path(stage_dir) / TENSORBOARD_DIR


def stage_loggers(stage_dir: Path, run_hparams: dict) -> list:
    """The CSV logger (first: the trainer's log_dir stays logs/version_N) and the TensorBoard logger,
    which records `run_hparams` (the resolved training config) next to the module's own hyperparameters."""
    tensorboard = TensorBoardLogger(str(stage_dir), name=TENSORBOARD_DIR, default_hp_metric=False)
    tensorboard.log_hyperparams({f"train/{k}": v for k, v in run_hparams.items()})
    return [CSVLogger(str(stage_dir), name="logs"), tensorboard]


class CurriculumMixLog(L.Callback):
    """At fit start, the curriculum's requested and realized hardness mix (the sampling index's one
    simulated epoch) as scalars `curriculum/{requested,realized}_mix/hardness_H`, and the curriculum as text."""

    def on_fit_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        index = getattr(trainer.datamodule, "index", None)
        if index is None or not trainer.is_global_zero:
            return
        meta = index.meta
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                shares = {f"curriculum/{kind}/hardness_{h}": float(v)
                          for kind in ("requested_mix", "realized_mix") for h, v in meta.get(kind, {}).items()}
                logger.log_metrics(shares, step=0)
                logger.experiment.add_text("curriculum", "```\n" + json.dumps(meta.get("curriculum", {}),
                                                                             indent=2) + "\n```", 0)
