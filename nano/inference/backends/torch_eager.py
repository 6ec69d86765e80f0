"""Plain PyTorch: ``original``, ``fp32_channels_last``, ``bf16`` (autocast), ``bf16_channels_last``."""

from __future__ import annotations

import os
from typing import Optional

import torch

from nano.inference.backends.torch_common import TorchModuleModel, prepare_module
from nano.inference.methods import Method
from nano.inference.model import restore_common
from nano.inference.prepare import private_eval_copy

INSTALL_HINT = "pip install torch"


class EagerModel(TorchModuleModel):
    """The user's module, run eagerly with the method's precision and memory format."""

    accelerator = "pytorch"
    needs_model_to_load = True

    def save_artifacts(self, directory: str) -> dict:
        torch.save(self.module.state_dict(), os.path.join(directory, "state_dict.pt"))
        return {}

    @classmethod
    def load_artifacts(cls, directory, meta, model):
        method, signature, output, threads = restore_common(meta)
        return build_from(model, method, signature, output, threads,
                          os.path.join(directory, "state_dict.pt"))


def build_from(model, method, signature, output, threads, state_dict: Optional[str] = None):
    """An EagerModel around a private copy of ``model`` (with weights from ``state_dict``)."""
    module = private_eval_copy(model)
    if state_dict:
        module.load_state_dict(torch.load(state_dict, map_location="cpu"))
    return EagerModel(prepare_module(module, method), method, signature, output, threads)


def unavailable_reason(method: Method) -> Optional[str]:
    if method.precision == "int8":
        return "int8 for plain PyTorch is built by the quantizer (compile_int8 / static_int8)"
    return None


def build(method: Method, inputs) -> EagerModel:
    return EagerModel(prepare_module(inputs.model, method), method, inputs.signature,
                      inputs.output, inputs.thread_num)


MODEL_CLASS = EagerModel
