"""Helpers the torch-based backends (eager, TorchScript, compile, IPEX) share."""

from __future__ import annotations

import contextlib
from typing import Any, Optional

import torch

from nano.inference.methods import Method
from nano.inference.model import AcceleratedModel, torch_threads
from nano.inference.structure import flatten_output, unflatten_output

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(method: Method):
    """torch.autocast for a bf16/fp16 method, else a no-op context."""
    dtype = _DTYPES.get(method.precision)
    return torch.autocast("cpu", dtype=dtype) if dtype is not None else contextlib.nullcontext()


@contextlib.contextmanager
def low_precision_tracing(method: Method):
    """Turn off the fused transformer fast path while a bf16/fp16 graph is traced or compiled.

    The fused kernel (``_transformer_encoder_layer_fwd``) has no autocast rule,
    so a traced or compiled encoder would silently stay fp32.
    """
    mha = getattr(torch.backends, "mha", None)
    if method.precision not in _DTYPES or mha is None:
        yield
        return
    previous = mha.get_fastpath_enabled()
    mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        mha.set_fastpath_enabled(previous)


def to_channels_last(value: Any) -> Any:
    """4-D tensors (also inside tuples, lists and dicts) converted to channels_last."""
    if isinstance(value, torch.Tensor):
        return value.contiguous(memory_format=torch.channels_last) if value.dim() == 4 else value
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return type(value)(to_channels_last(v) for v in value)
    if isinstance(value, dict) and type(value) is dict:
        return {k: to_channels_last(v) for k, v in value.items()}
    return value


def prepare_module(model: torch.nn.Module, method: Method) -> torch.nn.Module:
    """Apply the method's memory format (to a copy: the prepared module is shared)."""
    if method.channels_last:
        import copy

        model = copy.deepcopy(model).to(memory_format=torch.channels_last)
    return model


class TorchModuleModel(AcceleratedModel):
    """An AcceleratedModel that runs a torch module in-process (eager, compiled, IPEX)."""

    def __init__(self, module: torch.nn.Module, method: Method, signature, output,
                 thread_num: Optional[int]):
        super().__init__(method, signature, output, thread_num)
        self.module = module

    def forward(self, *args, **kwargs):
        if self.method.channels_last:
            args, kwargs = to_channels_last(args), to_channels_last(kwargs)
        with torch_threads(self.thread_num), torch.no_grad(), autocast(self.method), \
                low_precision_tracing(self.method):
            out = self.module(*args, **kwargs)
        # same structure, floating outputs back in the original's dtypes and memory format
        return unflatten_output(self.output, [t.contiguous() for t in flatten_output(out)])
