"""IPEX INT8 (``int8_ipex``): IPEX's static quantization, traced and frozen, as BigDL-Nano's
``quantize(precision="int8", use_ipex=True)`` built it.

``ipex.quantization.prepare`` with IPEX's default static mapping (unsigned per-tensor
activations, signed per-channel weights), calibrated, converted, then traced and frozen so
IPEX fuses the INT8 kernels. Saved as TorchScript, which loads where IPEX imports.
"""

from __future__ import annotations

from typing import Optional, TYPE_CHECKING

import torch

from nano.runtimes.backends.ipex import INSTALL_HINT, ipex_unavailable
from nano.runtimes.backends.ipex_jit import IpexTorchScriptModel, build_checked
from nano.runtimes.backends.spec import BackendSpec, Flavour, QuantizerSpec
from nano.runtimes.int8_overflow import overflow_fix, scheme
from nano.runtimes.methods import Method
from nano.runtimes.structure import FlatModule

if TYPE_CHECKING:
    from nano.runtimes.prepare import BuildInputs

__all__ = ["INSTALL_HINT"]
# IPEX's default mapping fixes the schemes; no layer is kept in floating point
QUANTIZER = QuantizerSpec(fixed=(("symmetric", True),), keep_fp32=("none",))
SPEC = BackendSpec(accelerator="pytorch", use_ipex=True, serves=("jit",), precisions=("int8",),
                   candidates=(Flavour("int8"),), converts=True, quantizer=QUANTIZER)


class IpexInt8Model(IpexTorchScriptModel):
    """A frozen TorchScript trace of an IPEX-quantized module."""

    accelerator = "ipex_int8"


def unavailable_reason(method: Method) -> Optional[str]:
    return ipex_unavailable()


def _qconfig_mapping(ipex):
    """IPEX's default static mapping; where the CPU has no int8 dot product, with 7-bit
    activations (its u8 x s8 kernels add pairs in 16 bits there and saturate)."""
    if not overflow_fix():
        return ipex.quantization.default_static_qconfig_mapping
    from torch.ao.quantization import HistogramObserver, QConfig, QConfigMapping

    default = ipex.quantization.default_static_qconfig
    return QConfigMapping().set_global(QConfig(
        activation=HistogramObserver.with_args(reduce_range=True), weight=default.weight))


def build(method: Method, inputs: BuildInputs) -> IpexTorchScriptModel:
    import intel_extension_for_pytorch as ipex
    from intel_extension_for_pytorch.quantization import convert, prepare

    from nano.runtimes.backends.torchscript import trace_and_freeze
    from nano.runtimes.verify import flat_runner

    SPEC.quant_config(method)  # refuses knobs IPEX cannot turn
    sample = inputs.flat_sample()
    with torch.no_grad():
        prepared = prepare(FlatModule(inputs.model, inputs.signature), _qconfig_mapping(ipex),
                           example_inputs=tuple(sample), inplace=False)
        for flat in inputs.flat_calib():
            prepared(*flat)
        converted = convert(prepared)
    # the trace is checked against the eager INT8 module it records: how far INT8 is from
    # the original is the accuracy judgement's to say, on data like the calibration's
    model = build_checked(IpexInt8Model, lambda: trace_and_freeze(converted, sample, method),
                          method, inputs, "int8", "the IPEX INT8 trace",
                          reference=flat_runner(converted, inputs))
    model.int8_scheme = scheme()
    return model


MODEL_CLASS = IpexInt8Model
