"""Helpers the torch-based backends (eager, TorchScript, compile, IPEX) share."""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator, Optional, TYPE_CHECKING

import torch

from nano.runtimes.methods import Method
from nano.runtimes.model import AcceleratedModel, torch_threads
from nano.runtimes.model_files import restore_common
from nano.runtimes.prepare import private_eval_copy
from nano.runtimes.structure import flatten_output, to_channels_last, unflatten_output

if TYPE_CHECKING:
    from nano.runtimes.structure import InputSignature

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(method: Method) -> contextlib.AbstractContextManager:
    """torch.autocast for a bf16/fp16 method, else a no-op context."""
    dtype = _DTYPES.get(method.precision)
    return torch.autocast("cpu", dtype=dtype) if dtype is not None else contextlib.nullcontext()


@contextlib.contextmanager
def low_precision_tracing(method: Method) -> Iterator[None]:
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


def prepare_module(model: torch.nn.Module, method: Method) -> torch.nn.Module:
    """Apply the method's memory format (to a copy: the prepared module is shared): 4-D
    weights channels_last, 5-D (Conv3d) weights channels_last_3d."""
    if method.channels_last:
        import copy

        model = copy.deepcopy(model)
        with torch.no_grad():
            for p in list(model.parameters()) + list(model.buffers()):
                converted = to_channels_last(p.data)
                if converted is not p.data:
                    p.data = converted
    return model


STATE_DICT_FILE = "state_dict.pt"


def save_state_dict(model: AcceleratedModel, state: dict, directory: str) -> None:
    """Write a state dict, in bf16 when the model is being saved with compression="bf16"."""
    if model.compression == "bf16":
        state = {k: v.to(torch.bfloat16) if v.is_floating_point() else v
                 for k, v in state.items()}
    torch.save(state, os.path.join(directory, STATE_DICT_FILE))


def load_state_dict(model: torch.nn.Module, directory: str) -> torch.nn.Module:
    """A private eval copy of ``model`` with the saved weights (cast back to its dtypes)."""
    module = private_eval_copy(model)
    module.load_state_dict(torch.load(os.path.join(directory, STATE_DICT_FILE),
                                      map_location="cpu"))
    return module


def load_exported_program(path: Any) -> torch.export.ExportedProgram:
    """``torch.export.load`` without the multi-line log torch writes before re-raising
    when the file is damaged; the caller's one-line error says it instead."""
    import logging

    from nano.noise import quiet_third_party

    with quiet_third_party("torch.export", level=logging.CRITICAL):
        return torch.export.load(path)


def outputs_as_float32(value: Any) -> Any:
    """bf16/fp16 floating outputs as float32 (for models built without a sample, whose
    original output dtypes were never recorded)."""
    if isinstance(value, torch.Tensor):
        return value.float() if value.dtype in (torch.bfloat16, torch.float16) else value
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return type(value)(outputs_as_float32(v) for v in value)
    if isinstance(value, dict) and type(value) is dict:
        return {k: outputs_as_float32(v) for k, v in value.items()}
    return value


class TorchModuleModel(AcceleratedModel):
    """An AcceleratedModel that runs a torch module in-process (eager, compiled, IPEX)."""

    state_dict_saved = True
    needs_model_to_load = True
    artifact = STATE_DICT_FILE

    def __init__(self, module: torch.nn.Module, method: Method, signature, output,
                 thread_num: Optional[int]):
        super().__init__(method, signature, output, thread_num)
        self.module = module

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.method.channels_last:
            args, kwargs = to_channels_last(args), to_channels_last(kwargs)
        with torch_threads(self.thread_num), torch.no_grad(), autocast(self.method), \
                low_precision_tracing(self.method):
            out = self.module(*args, **kwargs)
        if self.output is None:  # built without a sample
            return self.finish(outputs_as_float32(out))
        # same structure, floating outputs back in the original's dtypes and memory format
        return self.finish(unflatten_output(self.output,
                                            [t.contiguous() for t in flatten_output(out)]))

    # saving: the user's weights as a state dict; loading: this kind rebuilt over them

    def source_state(self) -> dict:
        """The weights save() writes: the user's module's, as before any runtime rewrote it."""
        return self.module.state_dict()

    def save_artifacts(self, directory: str) -> dict:
        save_state_dict(self, self.source_state(), directory)
        return {}

    @classmethod
    def load_artifacts(cls, directory: str, meta: dict,
                       model: Optional[torch.nn.Module]) -> AcceleratedModel:
        assert model is not None  # load_model refuses a state-dict kind without the module
        method, signature, output, threads = restore_common(meta)
        return cls.from_module(load_state_dict(model, directory), method, signature, output,
                               threads)

    @classmethod
    def from_module(cls, module: torch.nn.Module, method: Method,
                    signature: Optional[InputSignature], output: Optional[dict],
                    thread_num: Optional[int]) -> "TorchModuleModel":
        """This kind of model over ``module`` (a private copy of the user's)."""
        raise NotImplementedError
