"""The Lightning callback that applies Nano's training options inside ``Trainer`` runs."""

from __future__ import annotations

import math
from typing import Any, Optional

import lightning.pytorch as pl

from nano.trainer.auto_lr import VisibleScaling, attach_lr_scaling
from nano.trainer.channels_last import use_channels_last
from nano.trainer.ipex_training import ipex_optimize
from nano.trainer.training_options import TrainingOptions


class NanoTrainingCallback(pl.Callback):
    """channels_last on the model, lr scaling on the optimizers, IPEX when asked for."""

    def __init__(self, options: TrainingOptions):
        self.options = options
        self._visible: Optional[VisibleScaling] = None  # BigDL-Nano's form of auto_lr

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
        self._visible = None
        if self.options.auto_lr is not None and trainer.world_size > 1:
            config = self.options.auto_lr
            total = trainer.estimated_stepping_batches  # sets the training data up, to count it
            if config.warmup_epochs is not None:
                batches = trainer.num_training_batches
                steps = math.ceil(batches / trainer.accumulate_grad_batches) \
                    if math.isfinite(batches) else None
                config = config.per_epoch(steps)
            config = config.for_run(int(total) if math.isfinite(total) else None)
            if config.visible:
                schedulers = [c.scheduler for c in trainer.lr_scheduler_configs]
                self._visible = VisibleScaling(trainer.optimizers, schedulers,
                                               trainer.world_size, config)
            else:
                for opt in trainer.optimizers:
                    attach_lr_scaling(opt, trainer.world_size, config)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                             batch: Any, batch_idx: int) -> None:
        if self._visible is not None:
            self._visible.before_step(trainer.global_step)
