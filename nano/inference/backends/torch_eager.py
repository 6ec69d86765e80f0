"""Plain PyTorch: ``original``, ``fp32_channels_last``, ``bf16`` (autocast), ``bf16_channels_last``."""

from __future__ import annotations

from typing import Optional

import torch

from nano.inference.backends.spec import BackendSpec, Flavour
from nano.inference.backends.torch_common import (TorchModuleModel, load_state_dict,
                                                  prepare_module, save_state_dict)
from nano.inference.methods import Method
from nano.inference.model import restore_common
from nano.inference.prepare import private_eval_copy

INSTALL_HINT = "pip install torch"
SPEC = BackendSpec(
    accelerator="pytorch", aliases=("torch",), precisions=("fp32", "bf16", "fp16"),
    candidates=(Flavour(), Flavour(channels_last=True), Flavour("bf16"),
                Flavour("bf16", channels_last=True)),
    channels_last=True)


class EagerModel(TorchModuleModel):
    """The user's module, run eagerly with the method's precision and memory format."""

    accelerator = "pytorch"
    needs_model_to_load = True

    def save_artifacts(self, directory: str) -> dict:
        save_state_dict(self, self.module.state_dict(), directory)
        return {}

    @classmethod
    def load_artifacts(cls, directory, meta, model):
        method, signature, output, threads = restore_common(meta)
        return cls(prepare_module(load_state_dict(model, directory), method), method, signature,
                   output, threads)


def without_sample(model: torch.nn.Module, method: Method,
                   thread_num: Optional[int] = None) -> EagerModel:
    """An EagerModel built with no input sample (BigDL's ``trace(model)`` and
    ``quantize(model, precision="bf16")``, and save() of a plain module): it calls the
    module as it is, handing bf16 outputs back as float32."""
    return EagerModel(prepare_module(private_eval_copy(model), method), method, None, None,
                      thread_num)


def unavailable_reason(method: Method) -> Optional[str]:
    return None


def build(method: Method, inputs) -> EagerModel:
    return EagerModel(prepare_module(inputs.model, method), method, inputs.signature,
                      inputs.output, inputs.thread_num)


MODEL_CLASS = EagerModel
