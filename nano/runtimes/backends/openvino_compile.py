"""``torch.compile`` with OpenVINO's backend: ``openvino_compile_fp32``.

Dynamo captures the graph; OpenVINO compiles the subgraphs it supports and the
rest runs as PyTorch, so models that ``openvino.convert_model`` rejects can
still run partly on OpenVINO. Like ``compile_*`` it is saved as a state dict
and compiled again on load (compiled code is not portable).

Measured with torch 2.13 and OpenVINO 2026.4: the backend's default path fails
on convolutions while dynamo builds its guards ("sources must not be empty for
symbol"), its ``aot_autograd`` path works under ``torch.no_grad`` (which every
call here runs in). Shapes are static: a new batch size compiles once more
(about a second for a ResNet-18), dynamic ones fell back to eager silently.
Its outputs are tensors over OpenVINO's output buffers, which the next call
overwrites (a list of kept predictions all became the last one), so each call's
outputs are cloned. fp32 only: under bf16 autocast the compiled ResNet-18 was wrong (relative error
10, caught by the fresh-input check), and OpenVINO's own bf16 hint without
autocast ran slower than f32 (13.6 vs 10.3 ms); ``openvino_bf16`` is the bf16 path.
"""

from __future__ import annotations

import warnings
from typing import Any, Optional, TYPE_CHECKING, cast

import torch

from nano.launcher.openmp_binding import unbind_main_thread
from nano.runtimes.availability import module_available
from nano.runtimes.backends.openvino_ir import compile_config
from nano.runtimes.backends.spec import BackendSpec, Flavour, DYNAMO
from nano.runtimes.backends.torch_common import TorchModuleModel, prepare_module
from nano.runtimes.methods import Method
from nano.runtimes.prepare import private_eval_copy
from nano.runtimes.structure import map_tensors

if TYPE_CHECKING:
    from nano.runtimes.prepare import BuildInputs
    from nano.runtimes.structure import InputSignature

INSTALL_HINT = "pip install openvino"
SPEC = BackendSpec(accelerator="openvino_compile", precisions=("fp32",), candidates=(Flavour(),),
                   options=("openvino_config",), preload=DYNAMO)


class OpenVINOCompiledModel(TorchModuleModel):
    """A module compiled by ``torch.compile(backend="openvino")``; saved as its state dict."""

    accelerator = "openvino_compile"

    def source_state(self) -> dict:
        return cast(_OwnedOutputs, self.module).source.state_dict()

    @classmethod
    def from_module(cls, module: torch.nn.Module, method: Method,
                    signature: Optional[InputSignature], output: Optional[dict],
                    thread_num: Optional[int]) -> "OpenVINOCompiledModel":
        _register_backend()
        # a fresh dynamo state: a graph cached for this class would ignore the new settings
        torch.compiler.reset()
        config = compile_config(method.precision, thread_num,
                                method.option_dict.get("openvino_config", ()))
        source = prepare_module(module, method)
        options: dict[str, Any] = {"aot_autograd": True, "config": config}
        unbind_main_thread()  # OpenVINO compiles on the first call, on this thread's mask
        compiled = torch.compile(source, backend="openvino", dynamic=False, options=options)
        return cls(_OwnedOutputs(compiled, source), method, signature, output, thread_num)


class _OwnedOutputs(torch.nn.Module):
    """Calls the compiled module and returns outputs that own their memory."""

    def __init__(self, compiled, source: torch.nn.Module):
        super().__init__()
        self.compiled = compiled
        self.source = source  # the uncompiled module, whose weights save() writes

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return map_tensors(torch.clone, self.compiled(*args, **kwargs))


def _register_backend() -> None:
    with warnings.catch_warnings():  # it touches a dynamo setting torch has deprecated
        warnings.simplefilter("ignore", FutureWarning)
        import openvino.torch  # noqa: F401 - registers backend="openvino"


def unavailable_reason(method: Method) -> Optional[str]:
    return module_available("openvino", INSTALL_HINT)


def without_sample(model: torch.nn.Module, method: Method,
                   thread_num: Optional[int] = None) -> OpenVINOCompiledModel:
    """Compile lazily: the first call compiles (no sample to do it now)."""
    return OpenVINOCompiledModel.from_module(private_eval_copy(model), method, None, None,
                                             thread_num)


def build(method: Method, inputs: BuildInputs) -> OpenVINOCompiledModel:
    """Compile and check against the original on fresh inputs (OpenVINO converts the
    subgraphs, so its numbers are proven like any conversion's)."""
    from nano.runtimes.verify import check_conversion

    model = OpenVINOCompiledModel.from_module(inputs.model, method, inputs.signature,
                                              inputs.output, inputs.thread_num)
    model(*inputs.args, **inputs.kwargs)  # compile now, not during the first user call
    check_conversion(model, inputs, method.precision, "the OpenVINO torch.compile graph")
    return model


MODEL_CLASS = OpenVINOCompiledModel
