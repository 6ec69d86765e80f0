"""Learning-rate scaling for data-parallel training, shared by ``Trainer``, ``TorchNano`` and ``@nano``.

With N processes each step averages gradients over N times the samples, so the
usual fix (Goyal et al., "Accurate, Large Minibatch SGD") is to multiply the
learning rate by N, ramping up linearly over the first steps so early updates
do not diverge. At optimizer step ``t`` (0-based) the factor is::

    factor(t) = 1 + (N - 1) * min(1, (t + 1) / warmup_steps)

The factor is applied only for the duration of ``optimizer.step()`` (a step
pre-hook multiplies each group's lr, a post-hook divides it back), so the lr
the user's schedulers read and write stays the unscaled one.

The rule is SGD's: adaptive optimizers (Adam, AdamW, RMSprop, Adagrad, ...) divide
each update by a running gradient scale, so a larger batch does not call for a larger
lr there, and scaling it cost 12 points of accuracy on benchmarks/training.py (Adam,
2 processes: 0.839 against 0.962 unscaled). Their lr is left as it is unless
``AutoLR(adaptive=True)`` asks for it; only ``torch.optim.SGD`` (and subclasses) is
scaled by default. (BigDL-Nano scaled every optimizer.)

BigDL-Nano's ``auto_lr={"warmup_epochs": n}`` is ``AutoLR(warmup_epochs=n)``: the ramp
spans n epochs of optimizer steps, counted from the data loader when training starts.
Unlike BigDL-Nano, whose first step used the unscaled lr, Nano's first step already
uses ``1 + (N - 1) / warmup_steps`` times it (the ramp reaches N at the last warm-up
step instead of one step after it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional

import torch

logger = logging.getLogger(__name__)


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class AutoLR:
    """Scale lr by the world size, ramping linearly over ``warmup_steps`` optimizer steps
    (or ``warmup_epochs`` epochs of them, BigDL-Nano's form)."""

    warmup_steps: int = 100
    warmup_epochs: Optional[int] = None
    adaptive: bool = False  # also scale optimizers other than SGD

    def __post_init__(self):
        if not _whole(self.warmup_steps) or self.warmup_steps < 1:
            raise ValueError(f"AutoLR.warmup_steps must be a whole number >= 1, "
                             f"got {self.warmup_steps!r}")
        if self.warmup_epochs is not None and (not _whole(self.warmup_epochs)
                                               or self.warmup_epochs < 0):
            raise ValueError(f"AutoLR.warmup_epochs must be a whole number >= 0, "
                             f"got {self.warmup_epochs!r}")

    @classmethod
    def from_dict(cls, config: dict) -> "AutoLR":
        """The rule is SGD's: adaptive optimizers (Adam, AdamW, RMSprop, Adagrad, ...) divide
each update by a running gradient scale, so a larger batch does not call for a larger
lr there, and scaling it cost 12 points of accuracy on benchmarks/training.py (Adam,
2 processes: 0.839 against 0.962 unscaled). Their lr is left as it is unless
``AutoLR(adaptive=True)`` asks for it; only ``torch.optim.SGD`` (and subclasses) is
scaled by default. (BigDL-Nano scaled every optimizer.)

BigDL-Nano's ``auto_lr={"warmup_epochs": n}`` (or ``{"warmup_steps": n}``)."""
        unknown = sorted(set(config) - {"warmup_epochs", "warmup_steps", "adaptive"})
        if unknown:
            raise ValueError(f"auto_lr takes 'warmup_epochs' or 'warmup_steps', got {unknown}")
        return cls(**config)

    def per_epoch(self, steps_per_epoch: Optional[int]) -> "AutoLR":
        """This ramp with warmup_epochs turned into steps (``steps_per_epoch``: optimizer
        steps in one epoch of one process)."""
        if self.warmup_epochs is None:
            return self
        if not steps_per_epoch:
            raise ValueError("auto_lr={'warmup_epochs': n} counts steps from the training "
                             "DataLoader: pass it to setup() with the model (or use "
                             "AutoLR(warmup_steps=...))")
        return AutoLR(warmup_steps=max(1, self.warmup_epochs * steps_per_epoch),
                      adaptive=self.adaptive)

    def scales(self, optimizer: torch.optim.Optimizer) -> bool:
        """Whether ``optimizer``'s lr is scaled (SGD, or any with ``adaptive=True``)."""
        return self.adaptive or isinstance(optimizer, torch.optim.SGD)

    def factor(self, step: int, world_size: int) -> float:
        """The lr multiplier at optimizer step ``step`` (0-based)."""
        return 1.0 + (world_size - 1) * min(1.0, (step + 1) / self.warmup_steps)


@dataclass
class LRScaling:
    """The lr scaling attached to one optimizer, readable while training (BigDL-Nano's
    auto-lr tests read the warm-up length): ``steps`` optimizer steps taken so far, and
    ``factor``, the multiplier the last (or the running) step used."""

    world_size: int
    config: AutoLR
    steps: int = 0
    factor: float = 1.0

    @property
    def warmup_steps(self) -> int:
        """Optimizer steps until the lr reaches world_size times its own."""
        return self.config.warmup_steps


def lr_scaling(optimizer: torch.optim.Optimizer) -> Optional[LRScaling]:
    """The scaling auto_lr attached to ``optimizer`` (unwrapped from Fabric's wrapper), or
    None when its lr is not scaled (one process, an adaptive optimizer, auto_lr=False)."""
    inner = getattr(optimizer, "optimizer", optimizer)
    return getattr(inner, "_nano_lr_scaling", None)


def attach_lr_scaling(optimizer: torch.optim.Optimizer, world_size: int, config: AutoLR) -> None:
    """Make every ``optimizer.step()`` use lr x ``config.factor(step, world_size)``.

    Does nothing for one process, or for an adaptive optimizer unless ``config.adaptive``.
    Attaching twice to the same optimizer is a no-op.
    """
    if world_size <= 1 or lr_scaling(optimizer) is not None:
        return
    if not config.scales(optimizer):
        logger.info("auto_lr: %s's lr is not scaled (an adaptive optimizer; "
                    "AutoLR(adaptive=True) scales it)", type(optimizer).__name__)
        return
    state = LRScaling(world_size, config)
    setattr(optimizer, "_nano_lr_scaling", state)

    def before(opt, _args, _kwargs):
        state.factor = config.factor(state.steps, world_size)
        for group in opt.param_groups:
            group["lr"] = group["lr"] * state.factor

    def after(opt, _args, _kwargs):
        for group in opt.param_groups:
            group["lr"] = group["lr"] / state.factor
        state.steps += 1

    optimizer.register_step_pre_hook(before)
    optimizer.register_step_post_hook(after)
