"""BigDL-Nano's ``Trainer.compile(model, loss, optimizer, scheduler, metrics)``: a plain
``nn.Module`` with its loss, optimizer and metrics, as a LightningModule.

A batch is ``(*inputs, target)``: the model is called on the inputs and the loss and
metrics compare its output with the target; ``predict`` calls it on the inputs (a
batch of inputs only is fine too). Logged: ``train/loss``, ``val/loss``,
``test/loss`` and each metric as ``val/<Name>`` / ``test/<Name>``.
"""

from __future__ import annotations

import weakref
from typing import Any, Optional, Sequence

import lightning.pytorch as pl
import torch

from nano.errors import NanoValueError


def _split(batch: Any) -> tuple[tuple, Any]:
    """``(inputs, target)`` of a batch; target None for a batch of inputs only."""
    if isinstance(batch, (list, tuple)):
        if len(batch) > 1:
            return tuple(batch[:-1]), batch[-1]
        return tuple(batch), None
    return (batch,), None


# plain module -> the CompiledModule made of it last: an accelerated model traced from the
# plain module is validated with that module's loss and metrics (BigDL-Nano's form)
_COMPILED: "weakref.WeakKeyDictionary[torch.nn.Module, CompiledModule]" = \
    weakref.WeakKeyDictionary()


def compiled_for(model: Optional[torch.nn.Module]) -> Optional["CompiledModule"]:
    """The CompiledModule ``Trainer.compile`` made of ``model`` (the latest), or None."""
    return _COMPILED.get(model) if model is not None else None


class CompiledModule(pl.LightningModule):
    """A LightningModule made of ``model``, ``loss``, ``optimizer``, ``scheduler`` and
    torchmetrics ``metrics``; see :meth:`nano.Trainer.compile`."""

    def __init__(self, model: torch.nn.Module, loss: Optional[torch.nn.Module] = None,
                 optimizer: Optional[torch.optim.Optimizer] = None, scheduler: Any = None,
                 metrics: Optional[Sequence[Any]] = None):
        super().__init__()
        if not isinstance(model, torch.nn.Module):
            raise NanoValueError(f"Trainer.compile(model, ...): model must be an nn.Module, got "
                                 f"{type(model).__name__}")
        if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
            raise NanoValueError(f"Trainer.compile(..., optimizer=...) takes a torch optimizer "
                                 f"built on the model's parameters, got "
                                 f"{type(optimizer).__name__}")
        self.model = model
        self.loss = loss
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.metrics = torch.nn.ModuleList(metrics or [])
        _COMPILED[model] = self

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)

    def _loss(self, batch: Any, stage: str) -> Any:
        inputs, target = _split(batch)
        output = self(*inputs)
        loss = None
        if self.loss is not None and target is not None:
            loss = self.loss(output, target)
            self.log(f"{stage}/loss", loss, on_epoch=True, prog_bar=stage != "train")
        if stage != "train" and target is not None:
            for module in self.metrics:
                metric: Any = module  # a torchmetrics Metric
                metric.update(output, target)
                self.log(f"{stage}/{type(metric).__name__}", metric, on_epoch=True)
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        if self.loss is None:
            raise NanoValueError("this model was compiled without a loss: "
                                 "Trainer.compile(model, loss=nn.CrossEntropyLoss(), ...)")
        return self._loss(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> Any:
        return self._loss(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> Any:
        return self._loss(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
        inputs, _ = _split(batch)
        return self(*inputs)

    def configure_optimizers(self) -> Any:
        if self.optimizer is None:
            raise NanoValueError("this model was compiled without an optimizer: "
                                 "Trainer.compile(model, loss, optimizer=torch.optim.SGD("
                                 "model.parameters(), lr=0.01))")
        if self.scheduler is None:
            return self.optimizer
        return {"optimizer": self.optimizer, "lr_scheduler": self.scheduler}
