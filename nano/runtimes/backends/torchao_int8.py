"""PyTorch INT8 for Linear-heavy models (``compile_int8_torchao``): torchao's dynamic int8
activations x int8 weights on every Linear, compiled by inductor.

PT2E's X86InductorQuantizer (``compile_int8``) annotates graph patterns and fails on
the graphs of HF BERT-family models; torchao's ``quantize_`` swaps each Linear's weight
for an int8 tensor subclass instead, which needs no pattern and no calibration (the
activation scales are taken per call). Saved as the user's fp32 state dict: loading
quantizes and compiles again (deterministic from the weights).
"""

from __future__ import annotations

from typing import Optional, TYPE_CHECKING, cast

import torch

from nano.runtimes.availability import module_available
from nano.runtimes.backends.spec import BackendSpec, Flavour, QuantizerSpec, INDUCTOR
from nano.runtimes.backends.torch_compile import CompiledModel
from nano.runtimes.int8_overflow import overflow_fix
from nano.runtimes.methods import Method
from nano.runtimes.model_files import ModelLoadError
from nano.launcher.capability import current

if TYPE_CHECKING:
    from nano.runtimes.prepare import BuildInputs
    from nano.runtimes.structure import InputSignature

INSTALL_HINT = "pip install torchao"
VARIANT = "torchao"
# dynamic activation scales, symmetric int8 weights, every Linear: no knob to turn
SPEC = BackendSpec(
    accelerator="compile", precisions=("int8",), candidates=(Flavour("int8", variant=VARIANT),),
    variants=(VARIANT,),
    quantizer=QuantizerSpec(variants=(VARIANT,), dynamic_variant=VARIANT,
                            fixed=(("symmetric", True),), keep_fp32=("none",)),
    preload=INDUCTOR)


class TorchaoInt8Model(CompiledModel):
    """A module whose Linear weights torchao quantized, compiled by inductor."""

    def __init__(self, module, method, signature, output, thread_num, fp32_state=None):
        super().__init__(module, method, signature, output, thread_num)
        self._fp32_state = fp32_state or {}

    def source_state(self) -> dict:
        return self._fp32_state

    @classmethod
    def from_module(cls, module: torch.nn.Module, method: Method,
                    signature: Optional[InputSignature], output: Optional[dict],
                    thread_num: Optional[int]) -> "TorchaoInt8Model":
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

        reason = saturation_reason()
        if reason:  # a saved model quantizes again when it loads: here it would be wrong
            raise ModelLoadError(f"{method.name} cannot run here: {reason}; optimize the "
                                 f"original model on this CPU instead")
        fp32_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        # exactly nn.Linear, called as a module: a subclass such as MultiheadAttention's
        # out_proj hands its weight to a functional kernel that takes plain tensors only
        quantize_(module, Int8DynamicActivationInt8WeightConfig(),
                  filter_fn=lambda m, _name: type(m) is torch.nn.Linear)
        if not any(type(m.weight.data) is not torch.Tensor
                   for m in module.modules() if isinstance(m, torch.nn.Linear)):
            raise RuntimeError("torchao quantized no Linear layer: the model would stay fp32")
        torch.compiler.reset()
        compiled = cast(torch.nn.Module, torch.compile(module))
        return cls(compiled, method, signature, output, thread_num, fp32_state)


def saturation_reason() -> Optional[str]:
    """Why torchao's INT8 cannot be right on this CPU, or None: without an int8 dot product
    its int8 x int8 kernels add pairs of products in 16 bits (a wide-activation MLP was 0.28
    off under AVX2), and it has no 7-bit scheme as the other runtimes do."""
    if not overflow_fix():
        return None
    return (f"torchao's int8 x int8 kernels saturate on a CPU without an int8 dot product "
            f"({current().kind}), and torchao has no 7-bit scheme")


def unavailable_reason(method: Method) -> Optional[str]:
    return module_available("torchao.quantization", INSTALL_HINT) or saturation_reason()


def build(method: Method, inputs: BuildInputs) -> TorchaoInt8Model:
    # dynamo guards what it traced (a changed branch recompiles), unlike a frozen trace
    model = TorchaoInt8Model.from_module(inputs.model, method, inputs.signature, inputs.output,
                                         inputs.thread_num)
    model(*inputs.args, **inputs.kwargs)  # compile now, not during the first user call
    return model


MODEL_CLASS = TorchaoInt8Model
