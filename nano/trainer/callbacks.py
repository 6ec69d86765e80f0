"""The Lightning callback that applies Nano's training options inside ``Trainer`` runs."""

from __future__ import annotations

import math

import lightning.pytorch as pl

from nano.trainer.auto_lr import attach_lr_scaling
from nano.trainer.channels_last import use_channels_last
from nano.trainer.ipex_training import ipex_optimize
from nano.trainer.training_options import TrainingOptions


class NanoTrainingCallback(pl.Callback):
    """channels_last on the model, lr scaling on the optimizers, IPEX when asked for."""

    def __init__(self, options: TrainingOptions):
        self.options = options

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.options.channels_last:
            use_channels_last(pl_module)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.options.use_ipex:
            optimizers = []
            for opt in trainer.optimizers:
                _, opt = ipex_optimize(pl_module, opt, self.options.bf16)
                optimizers.append(opt)
            trainer.strategy.optimizers = optimizers
        if self.options.auto_lr is not None:
            config = self.options.auto_lr
            if config.warmup_epochs is not None:
                trainer.estimated_stepping_batches  # sets the training data up, to count it
                batches = trainer.num_training_batches
                steps = math.ceil(batches / trainer.accumulate_grad_batches) \
                    if math.isfinite(batches) else None
                config = config.per_epoch(steps)
            for opt in trainer.optimizers:
                attach_lr_scaling(opt, trainer.world_size, config)
