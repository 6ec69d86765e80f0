"""IPEX + TorchScript (``jit_fp32_ipex``, ``jit_bf16_ipex``): ``ipex.optimize``, then traced
and frozen, as BigDL-Nano's ``trace(accelerator="jit", use_ipex=True)`` built them.

The frozen graph holds IPEX's fused, prepacked operators, so a saved model loads only where
IPEX imports (the loader imports it first and says so when it cannot).
"""

from __future__ import annotations

import contextlib
import io
import os
from typing import Callable, Iterator, Optional, Sequence, TYPE_CHECKING

import torch

from nano.runtimes.backends.ipex import INSTALL_HINT, ipex_unavailable, weights_prepack
from nano.runtimes.backends.spec import BackendSpec, Flavour
from nano.runtimes.backends.torch_common import prepare_module
from nano.runtimes.backends.torchscript import TorchScriptModel, trace_and_freeze
from nano.runtimes.methods import Method
from nano.runtimes.model import AcceleratedModel
from nano.runtimes.model_files import ModelLoadError, restore_common
from nano.runtimes.structure import FlatModule, to_channels_last

if TYPE_CHECKING:
    from nano.runtimes.prepare import BuildInputs

__all__ = ["INSTALL_HINT"]
SPEC = BackendSpec(accelerator="jit", use_ipex=True, precisions=("fp32", "bf16"),
                   candidates=(Flavour(), Flavour("bf16")), converts=True, channels_last=True)


@contextlib.contextmanager
def onednn_fusion(enabled: bool) -> Iterator[None]:
    """IPEX's oneDNN graph fusion on or off for what runs inside (a process-wide switch
    IPEX reads when a graph first runs; put back afterwards)."""
    from intel_extension_for_pytorch.cpu.onednn_fusion import core

    previous = core.get_jit_opt()
    (core.enable_jit_opt if enabled else core.disable_jit_opt)()
    try:
        yield
    finally:
        (core.enable_jit_opt if previous else core.disable_jit_opt)()


class IpexTorchScriptModel(TorchScriptModel):
    """A frozen TorchScript trace of an ``ipex.optimize``-d (or IPEX-quantized) module.

    IPEX 2.8's oneDNN fusion fits a frozen graph to the input shapes of its first run: a
    residual CNN traced at batch 8 and run at batch 9 first gave outputs 0.11 off at batch
    8 ever after (Nano's fresh-values check refused it). So each input shape runs its own
    copy of the graph, loaded from the same bytes (at most MAX_SHAPES, the oldest dropped).
    ``fusion``: whether the graph runs with that fusion (see ``build_checked``).
    """

    accelerator = "jit_ipex"
    MAX_SHAPES = 8

    def __init__(self, module, method, signature, output, thread_num, scripted: bool = False,
                 fusion: bool = True):
        super().__init__(module, method, signature, output, thread_num, scripted)
        self._graph: Optional[bytes] = None  # serialized on the first second shape
        self._by_shape: dict = {}
        self.fusion = fusion

    def run(self, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        key = tuple((tuple(t.shape), t.dtype) for t in inputs)
        if key not in self._by_shape:
            if len(self._by_shape) >= self.MAX_SHAPES:
                self._by_shape.pop(next(iter(self._by_shape)))
            # the graph as built serves the first shape; later ones a fresh copy (saving
            # writes the frozen graph, not the run plan IPEX fitted to the first shape)
            self._by_shape[key] = self._fresh_copy() if self._by_shape else self.module
        self.module = self._by_shape[key]
        with onednn_fusion(self.fusion):
            return super().run(inputs)

    def _fresh_copy(self) -> torch.jit.ScriptModule:
        if self._graph is None:
            buffer = io.BytesIO()
            torch.jit.save(self.module, buffer)
            self._graph = buffer.getvalue()
        return torch.jit.load(io.BytesIO(self._graph))

    def save_artifacts(self, directory: str) -> dict:
        return {**super().save_artifacts(directory), "fusion": self.fusion}

    @classmethod
    def load_artifacts(cls, directory: str, meta: dict,
                       model: Optional[torch.nn.Module]) -> AcceleratedModel:
        reason = ipex_unavailable()  # imports IPEX, which registers the graph's operators
        if reason:
            raise ModelLoadError(f"{directory!r} is an IPEX TorchScript model and IPEX is "
                                 f"unavailable here: {reason}")
        method, signature, output, threads = restore_common(meta)
        module = torch.jit.load(os.path.join(directory, "model.pt"), map_location="cpu")
        return cls(module, method, signature, output, threads,
                   fusion=meta["extra"].get("fusion", True))


def build_checked(kind: type, traced: Callable[[], torch.jit.ScriptModule], method: Method,
                  inputs: BuildInputs, precision: str, what: str,
                  reference: Optional[Callable] = None) -> IpexTorchScriptModel:
    """``kind`` over the graph ``traced()`` makes, checked on fresh inputs against the
    original (or ``reference``, as ``check_conversion`` takes it): with IPEX's oneDNN fusion,
    else (IPEX 2.8's fused INT8 graph of a residual CNN
    failed with "could not set attribute to the op" here, and fused float graphs returned
    wrong values) with the fusion off, which ran right."""
    from nano.runtimes.error_summary import summarize_error
    from nano.runtimes.verify import check_conversion, tracer_warnings

    def checked(fusion: bool) -> IpexTorchScriptModel:
        with tracer_warnings() as warned:
            frozen = traced()
        model = kind(frozen, method, inputs.signature, inputs.output, inputs.thread_num,
                     fusion=fusion)
        check_conversion(model, inputs, precision, what, warned, reference)
        return model

    try:
        return checked(True)
    except Exception as fused:  # a wrong or failing fused graph: once more, unfused
        try:
            return checked(False)
        except Exception as e:
            raise RuntimeError(f"{what} failed with IPEX's oneDNN fusion "
                               f"({summarize_error(fused)}) and without it "
                               f"({summarize_error(e)})") from e


def unavailable_reason(method: Method) -> Optional[str]:
    return ipex_unavailable()


def build(method: Method, inputs: BuildInputs) -> IpexTorchScriptModel:
    """ipex.optimize a copy of the model for the method's dtype, trace it on the sample and
    freeze it; the result is checked against the original on fresh inputs."""
    import intel_extension_for_pytorch as ipex

    dtype = torch.bfloat16 if method.precision == "bf16" else torch.float32
    module = ipex.optimize(prepare_module(inputs.model, method), dtype=dtype,
                           weights_prepack=weights_prepack(method.precision == "bf16"))
    sample = inputs.flat_sample()
    if method.channels_last:
        sample = to_channels_last(sample)
    return build_checked(
        IpexTorchScriptModel,
        lambda: trace_and_freeze(FlatModule(module, inputs.signature), sample, method),
        method, inputs, method.precision, "the IPEX TorchScript trace")


MODEL_CLASS = IpexTorchScriptModel
