"""Optional Intel Extension for PyTorch: used when importable, otherwise a warning and plain torch."""

from __future__ import annotations

import importlib
import warnings
from typing import Any, Optional

import torch

from nano.runtimes.backends.ipex import weights_prepack


def load_ipex() -> Any:
    """Return the ``intel_extension_for_pytorch`` module, or None after a warning saying how
    to get it (the same probe as the ``*_ipex`` inference methods)."""
    from nano.runtimes.backends.ipex import ipex_unavailable

    reason = ipex_unavailable()
    if reason:
        warnings.warn(f"use_ipex=True but IPEX is unavailable ({reason}); install the IPEX "
                      f"release built for torch {torch.__version__.split('+')[0]} to use it. "
                      f"Training continues without IPEX.", stacklevel=3)
        return None
    return importlib.import_module("intel_extension_for_pytorch")


def ipex_optimize(module: torch.nn.Module, optimizer: Optional[torch.optim.Optimizer],
                  bf16: bool) -> tuple:
    """Apply ``ipex.optimize`` in place for training; returns ``(module, optimizer)`` unchanged if absent."""
    ipex = load_ipex()
    if ipex is None:
        return module, optimizer
    dtype = torch.bfloat16 if bf16 else torch.float32
    return ipex.optimize(module, optimizer=optimizer, dtype=dtype, inplace=True,
                         weights_prepack=weights_prepack(bf16))
