"""Plain PyTorch: ``original``, ``fp32_channels_last``, ``bf16`` (autocast), ``bf16_channels_last``."""

from __future__ import annotations

from typing import Optional, TYPE_CHECKING

import torch

from nano.runtimes.backends.spec import BackendSpec, Flavour
from nano.runtimes.backends.torch_common import TorchModuleModel, prepare_module
from nano.runtimes.methods import Method
from nano.runtimes.prepare import private_eval_copy

if TYPE_CHECKING:
    from nano.runtimes.prepare import BuildInputs
    from nano.runtimes.structure import InputSignature

INSTALL_HINT = "pip install torch"
SPEC = BackendSpec(
    accelerator="pytorch", aliases=("torch",), precisions=("fp32", "bf16", "fp16"),
    candidates=(Flavour(), Flavour(channels_last=True), Flavour("bf16"),
                Flavour("bf16", channels_last=True)),
    channels_last=True)


class EagerModel(TorchModuleModel):
    """The user's module, run eagerly with the method's precision and memory format."""

    accelerator = "pytorch"

    @classmethod
    def from_module(cls, module: torch.nn.Module, method: Method,
                    signature: Optional[InputSignature], output: Optional[dict],
                    thread_num: Optional[int]) -> "EagerModel":
        return cls(prepare_module(module, method), method, signature, output, thread_num)


def without_sample(model: torch.nn.Module, method: Method,
                   thread_num: Optional[int] = None) -> EagerModel:
    """An EagerModel built with no input sample (BigDL's ``trace(model)`` and
    ``quantize(model, precision="bf16")``, and save() of a plain module): it calls the
    module as it is, handing bf16 outputs back as float32."""
    return EagerModel.from_module(private_eval_copy(model), method, None, None, thread_num)


def unavailable_reason(method: Method) -> Optional[str]:
    return None


def build(method: Method, inputs: BuildInputs) -> EagerModel:
    return EagerModel.from_module(inputs.model, method, inputs.signature, inputs.output,
                                  inputs.thread_num)


MODEL_CLASS = EagerModel
