"""Learning-rate scaling for data-parallel training, shared by ``Trainer``, ``TorchNano`` and ``@nano``.

With N processes each step averages gradients over N times the samples, so the
usual fix (Goyal et al., "Accurate, Large Minibatch SGD") is to multiply the
learning rate by N, ramping up linearly over the first steps so early updates
do not diverge. At optimizer step ``t`` (0-based) the factor is, as in BigDL-Nano::

    factor(t) = 1 + (N - 1) * min(1, t / warmup_steps)      (N from the start if 0 steps)

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
The first step uses the user's own lr, so one step of N processes on 1/N of a batch
each gives exactly the weights one process gets on the whole batch (BigDL-Nano's
exactness tests); the wrapped optimizer's ``max_step`` is the ramp's length, as
BigDL-Nano's was.
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
    # BigDL-Nano's Trainer form (auto_lr=True or a dict): the scaled lr is the optimizer's
    # own, as a callback or training_step reads it; see VisibleScaling
    visible: bool = False
    # BigDL-Nano's Trainer default: the ramp spans this share of the run's optimizer steps
    # (Trainer only; TorchNano cannot know the run's length and uses warmup_steps)
    warmup_fraction: Optional[float] = None

    def __post_init__(self):
        if not _whole(self.warmup_steps) or self.warmup_steps < 0:
            raise ValueError(f"AutoLR.warmup_steps must be a whole number >= 0 (0: no ramp), "
                             f"got {self.warmup_steps!r}")
        if self.warmup_fraction is not None and not 0 <= self.warmup_fraction <= 1:
            raise ValueError(f"AutoLR.warmup_fraction must be between 0 and 1, "
                             f"got {self.warmup_fraction!r}")
        if self.warmup_epochs is not None and (not _whole(self.warmup_epochs)
                                               or self.warmup_epochs < 0):
            raise ValueError(f"AutoLR.warmup_epochs must be a whole number >= 0, "
                             f"got {self.warmup_epochs!r}")

    @classmethod
    def from_dict(cls, config: dict) -> "AutoLR":
        """BigDL-Nano's ``auto_lr={"warmup_epochs": n}`` (or ``{"warmup_steps": n}``)."""
        unknown = sorted(set(config) - {"warmup_epochs", "warmup_steps", "adaptive"})
        if unknown:
            raise ValueError(f"auto_lr takes 'warmup_epochs' or 'warmup_steps', got {unknown}")
        return cls(**config, visible=True)

    def per_epoch(self, steps_per_epoch: Optional[int]) -> "AutoLR":
        """This ramp with warmup_epochs turned into steps (``steps_per_epoch``: optimizer
        steps in one epoch of one process)."""
        if self.warmup_epochs is None:
            return self
        if not steps_per_epoch:
            raise ValueError("auto_lr={'warmup_epochs': n} counts steps from the training "
                             "DataLoader: pass it to setup() with the model (or use "
                             "AutoLR(warmup_steps=...))")
        return AutoLR(warmup_steps=self.warmup_epochs * steps_per_epoch,
                      adaptive=self.adaptive, visible=self.visible)

    def for_run(self, total_steps: Optional[int]) -> "AutoLR":
        """This ramp with warmup_fraction turned into steps of a run of ``total_steps``
        optimizer steps (unknown: warmup_steps as it is)."""
        if self.warmup_fraction is None or not total_steps:
            return self
        # at least one step: the first step of a short run uses the user's own lr
        return AutoLR(warmup_steps=max(1, int(total_steps * self.warmup_fraction)),
                      adaptive=self.adaptive, visible=self.visible)

    def scales(self, optimizer: torch.optim.Optimizer) -> bool:
        """Whether ``optimizer``'s lr is scaled (SGD, or any with ``adaptive=True``)."""
        return self.adaptive or isinstance(optimizer, torch.optim.SGD)

    def factor(self, step: int, world_size: int) -> float:
        """The lr multiplier at optimizer step ``step`` (0-based)."""
        if self.warmup_steps == 0:
            return float(world_size)
        return 1.0 + (world_size - 1) * min(1.0, step / self.warmup_steps)


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
    Attaching again to the same optimizer (a second ``setup()`` of it, as BigDL-Nano's
    load_state_dict test does) restarts the ramp without adding hooks twice.
    """
    if world_size <= 1:
        return
    attached = lr_scaling(optimizer)
    if attached is not None:
        attached.config, attached.steps = config, 0
        setattr(optimizer, "max_step", config.warmup_steps)
        return
    if not config.scales(optimizer):
        logger.info("auto_lr: %s's lr is not scaled (an adaptive optimizer; "
                    "AutoLR(adaptive=True) scales it)", type(optimizer).__name__)
        return
    state = LRScaling(world_size, config)
    setattr(optimizer, "_nano_lr_scaling", state)
    setattr(optimizer, "max_step", config.warmup_steps)  # BigDL-Nano's name for the ramp

    def before(opt, _args, _kwargs):
        state.factor = state.config.factor(state.steps, world_size)
        for group in opt.param_groups:
            group["lr"] = group["lr"] * state.factor

    def after(opt, _args, _kwargs):
        for group in opt.param_groups:
            group["lr"] = group["lr"] / state.factor
        state.steps += 1

    optimizer.register_step_pre_hook(before)
    optimizer.register_step_post_hook(after)


class VisibleScaling:
    """BigDL-Nano's lr scaling in ``Trainer`` (``auto_lr=True`` or a dict): the scaled lr is
    written into the optimizer, so a callback or ``training_step`` reading
    ``param_groups[i]["lr"]`` sees it. An optimizer with an lr scheduler gets its lr and the
    scheduler's ``base_lrs`` multiplied by the world size at once; one without ramps
    linearly from its own lr at the first step to world-size times it at ``warmup_steps``.
    (``AutoLR(...)`` given explicitly scales only inside ``optimizer.step()`` instead.)"""

    def __init__(self, optimizers: list, schedulers: list, world_size: int, config: AutoLR):
        self.world_size, self.config = world_size, config
        scaled = [o for o in optimizers if config.scales(o)]
        with_scheduler = {id(s.optimizer) for s in schedulers if hasattr(s, "optimizer")}
        for sched in schedulers:
            if getattr(sched, "optimizer", None) in scaled and hasattr(sched, "base_lrs"):
                sched.base_lrs = [lr * world_size for lr in sched.base_lrs]
        self.ramped = []
        for opt in scaled:
            if id(opt) in with_scheduler:
                for group in opt.param_groups:
                    group["lr"] *= world_size
                    if "initial_lr" in group:
                        group["initial_lr"] *= world_size
            else:
                self.ramped.append((opt, [group["lr"] for group in opt.param_groups]))
            opt.max_step = config.warmup_steps  # BigDL-Nano's name for the ramp's length

    def before_step(self, step: int) -> None:
        """Set each ramped optimizer's lr for optimizer step ``step`` (0-based)."""
        factor = self.config.factor(step, self.world_size)
        for opt, base in self.ramped:
            for group, lr in zip(opt.param_groups, base):
                group["lr"] = lr * factor
