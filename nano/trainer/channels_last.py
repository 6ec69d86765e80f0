"""channels_last memory format for CNN training (NHWC is what oneDNN's CPU convolutions prefer)."""

from __future__ import annotations

import torch
from torch import nn

from nano.runtimes.structure import to_channels_last


def _convert_inputs(_module, args, kwargs):
    return to_channels_last(args), to_channels_last(kwargs)


def use_channels_last(module: nn.Module) -> nn.Module:
    """Store ``module``'s 4-D weights as channels_last and convert 4-D inputs on every call.

    In place; returns ``module``. Calling it twice has no further effect.
    """
    module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # not in torch's stubs
    if not getattr(module, "_nano_channels_last", False):
        module.register_forward_pre_hook(_convert_inputs, with_kwargs=True)
        setattr(module, "_nano_channels_last", True)
    return module
