"""Optional Intel Extension for PyTorch: used when importable, otherwise a warning and plain torch."""

from __future__ import annotations

import importlib
import warnings
from typing import Optional

import torch


def load_ipex():
    """Return the ``intel_extension_for_pytorch`` module, or None after a warning saying how to get it."""
    try:
        return importlib.import_module("intel_extension_for_pytorch")
    except Exception as e:  # ImportError, or an ABI mismatch with this torch
        warnings.warn(f"use_ipex=True but intel_extension_for_pytorch cannot be imported ({e}); "
                      f"install the IPEX release built for torch {torch.__version__.split('+')[0]} "
                      f"to use it. Training continues without IPEX.", stacklevel=3)
        return None


def ipex_optimize(module: torch.nn.Module, optimizer: Optional[torch.optim.Optimizer],
                  bf16: bool):
    """Apply ``ipex.optimize`` in place for training; returns ``(module, optimizer)`` unchanged if absent."""
    ipex = load_ipex()
    if ipex is None:
        return module, optimizer
    dtype = torch.bfloat16 if bf16 else torch.float32
    return ipex.optimize(module, optimizer=optimizer, dtype=dtype, inplace=True)
