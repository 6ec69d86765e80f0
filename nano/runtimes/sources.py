"""Models that arrive as files: TorchScript, exported programs (.pt2), ONNX, or ``module:factory``.

Each becomes an ``nn.Module`` that optimize() can copy and pickle into its
isolated workers. An ONNX file cannot be turned back into torch code, so it is
wrapped in a module that runs it with ONNX Runtime; only the ONNX Runtime and
OpenVINO methods apply to it (``applicable_accelerators``).
"""

from __future__ import annotations

import importlib
import io
import os
import sys
from typing import Any, TypeGuard

import torch

from nano.errors import NanoError
from nano.launcher.openmp_binding import unbind_main_thread


class SourceError(NanoError, ValueError):
    """The model file or factory cannot be used; the message says why."""


class ScriptModuleHolder(torch.nn.Module):
    """A TorchScript module that survives pickling (as its serialized bytes)."""

    def __init__(self, script_module):
        super().__init__()
        self.script = script_module

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.script(*args, **kwargs)

    def __reduce__(self):
        buf = io.BytesIO()
        torch.jit.save(self.script, buf)
        return (_load_script, (buf.getvalue(),))


def _load_script(data: bytes) -> ScriptModuleHolder:
    return ScriptModuleHolder(torch.jit.load(io.BytesIO(data), map_location="cpu"))


class ExportedProgramHolder(torch.nn.Module):
    """An exported program (.pt2) as a module that survives pickling (as its saved bytes):
    the module torch.export builds holds objects cloudpickle cannot copy."""

    def __init__(self, data: bytes):
        super().__init__()
        from nano.runtimes.backends.torch_common import load_exported_program

        self.data = data
        self.program = load_exported_program(io.BytesIO(data)).module()

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.program(*args, **kwargs)

    def train(self, mode: bool = True) -> "ExportedProgramHolder":
        # an exported module refuses train()/eval(); its graph is fixed either way
        self.training = mode
        return self

    def __reduce__(self):
        return (ExportedProgramHolder, (self.data,))

    def __deepcopy__(self, memo):
        return ExportedProgramHolder(self.data)


class OnnxSourceModule(torch.nn.Module):
    """An ONNX model run by ONNX Runtime, standing in for torch code we do not have."""

    def __init__(self, onnx_bytes: bytes):
        super().__init__()
        import onnxruntime as ort

        self.onnx_bytes = onnx_bytes
        unbind_main_thread()  # ORT's threads inherit the caller's mask
        self._session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self._session.get_inputs()]

    def forward(self, *inputs: torch.Tensor) -> Any:
        feed = {n: t.detach().contiguous().numpy() for n, t in zip(self.input_names, inputs)}
        outs = [torch.from_numpy(o) for o in self._session.run(None, feed)]
        return outs[0] if len(outs) == 1 else tuple(outs)

    def __reduce__(self):
        return (OnnxSourceModule, (self.onnx_bytes,))

    def __deepcopy__(self, memo):
        return OnnxSourceModule(self.onnx_bytes)


def is_onnx_source(model: Any) -> TypeGuard["OnnxSourceModule"]:
    """Whether ``model`` is an ONNX file standing in for torch code (nothing to trace)."""
    return isinstance(model, OnnxSourceModule)


def load_source(spec: str) -> torch.nn.Module:
    """A module from a file path (.pt/.pth TorchScript, .pt2, .onnx) or ``package.module:factory``."""
    if os.path.exists(spec):
        ext = os.path.splitext(spec)[1].lower()
        try:
            if ext in (".pt", ".pth", ".ts"):
                return ScriptModuleHolder(torch.jit.load(spec, map_location="cpu").eval())
            if ext == ".pt2":
                with open(spec, "rb") as f:
                    return ExportedProgramHolder(f.read())
            if ext == ".onnx":
                with open(spec, "rb") as f:
                    return OnnxSourceModule(f.read())
        except Exception as e:
            kind = {".pt2": "an exported program (torch.export.save)", ".onnx": "an ONNX model"
                    }.get(ext, "a TorchScript module (torch.jit.save)")
            raise SourceError(f"cannot read {spec} as {kind}; is the file damaged? "
                              f"{type(e).__name__}: {str(e).splitlines()[0]}") from None
        raise SourceError(f"{spec}: unknown model file type {ext!r}; use a TorchScript .pt, an "
                          f"exported program .pt2, an .onnx file, or package.module:factory")
    if ":" not in spec:
        raise SourceError(f"{spec!r} is neither an existing file nor package.module:factory")
    module_name, _, factory = spec.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as e:
        raise SourceError(f"cannot import {module_name!r}: {type(e).__name__}: {e}") from None
    fn = getattr(module, factory, None)
    if not callable(fn):
        raise SourceError(f"{module_name!r} has no callable {factory!r}")
    try:
        model = fn()
    except Exception as e:
        raise SourceError(f"{spec}() raised {type(e).__name__}: {e}") from None
    if not isinstance(model, torch.nn.Module):
        raise SourceError(f"{spec}() returned {type(model).__name__}, not a torch.nn.Module")
    return model.eval()
