"""Learning-rate scaling for data-parallel training, shared by ``Trainer``, ``TorchNano`` and ``@nano``.

With N processes each step averages gradients over N times the samples, so the
usual fix (Goyal et al., "Accurate, Large Minibatch SGD") is to multiply the
learning rate by N, ramping up linearly over the first steps so early updates
do not diverge. At optimizer step ``t`` (0-based) the factor is::

    factor(t) = 1 + (N - 1) * min(1, (t + 1) / warmup_steps)

The factor is applied only for the duration of ``optimizer.step()`` (a step
pre-hook multiplies each group's lr, a post-hook divides it back), so the lr
the user's schedulers read and write stays the unscaled one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class AutoLR:
    """Scale lr by the world size, ramping linearly over ``warmup_steps`` optimizer steps."""

    warmup_steps: int = 100

    def __post_init__(self):
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) \
                or self.warmup_steps < 1:
            raise ValueError(f"AutoLR.warmup_steps must be a whole number >= 1, "
                             f"got {self.warmup_steps!r}")

    def factor(self, step: int, world_size: int) -> float:
        """The lr multiplier at optimizer step ``step`` (0-based)."""
        return 1.0 + (world_size - 1) * min(1.0, (step + 1) / self.warmup_steps)


def attach_lr_scaling(optimizer: torch.optim.Optimizer, world_size: int, config: AutoLR) -> None:
    """Make every ``optimizer.step()`` use lr x ``config.factor(step, world_size)``.

    Does nothing for one process. Attaching twice to the same optimizer is a no-op.
    """
    if world_size <= 1 or getattr(optimizer, "_nano_lr_scaling", False):
        return
    setattr(optimizer, "_nano_lr_scaling", True)
    state = {"step": 0, "factor": 1.0}

    def before(opt, _args, _kwargs):
        state["factor"] = config.factor(state["step"], world_size)
        for group in opt.param_groups:
            group["lr"] = group["lr"] * state["factor"]

    def after(opt, _args, _kwargs):
        for group in opt.param_groups:
            group["lr"] = group["lr"] / state["factor"]
        state["step"] += 1

    optimizer.register_step_pre_hook(before)
    optimizer.register_step_post_hook(after)
