"""bf16 autocast for Fabric-based training that still allows a plain ``loss.backward()``.

Fabric's own "bf16-mixed" plugin overrides ``backward`` (for fp16's grad
scaler, unused with bf16), which makes Fabric refuse ``loss.backward()``; a
plain loop under ``@nano`` must keep working unchanged, so this plugin only
autocasts the forward pass and returns fp32 outputs.
"""

from __future__ import annotations

from typing import Any
from contextlib import AbstractContextManager

import torch
from lightning.fabric.plugins import Precision


def _to_float32(value):
    if isinstance(value, torch.Tensor) and value.dtype == torch.bfloat16:
        return value.float()
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return type(value)(_to_float32(v) for v in value)
    if isinstance(value, dict):
        return {k: _to_float32(v) for k, v in value.items()}
    return value


class CpuBf16Autocast(Precision):
    """Forward passes under ``torch.autocast("cpu", torch.bfloat16)``; weights and grads stay fp32."""

    precision = "bf16-mixed"

    def forward_context(self) -> AbstractContextManager:
        return torch.autocast("cpu", dtype=torch.bfloat16)

    def convert_output(self, data: Any) -> Any:
        return _to_float32(data)
