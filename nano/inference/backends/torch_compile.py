"""``torch.compile`` (inductor with freezing): ``compile_fp32``, ``compile_bf16`` (+ channels_last).

Freezing turns weights into constants so inductor can fold and prepack them:
without it a ResNet-18 compiled slower than eager on CPU. The first call
compiles (seconds); ``build`` makes that call so latency excludes it.
"""

from __future__ import annotations

from typing import Optional, cast

import torch

from nano.inference.backends.spec import BackendSpec, Flavour
from nano.inference.backends.torch_common import (TorchModuleModel, load_state_dict,
                                                  prepare_module, save_state_dict)
from nano.inference.methods import Method
from nano.inference.model import restore_common

INSTALL_HINT = "pip install torch"
SPEC = BackendSpec(
    accelerator="compile", aliases=("inductor",), precisions=("fp32", "bf16"),
    candidates=(Flavour(), Flavour("bf16"), Flavour("bf16", channels_last=True)),
    channels_last=True)


class CompiledModel(TorchModuleModel):
    """A module compiled by inductor; saved as its state dict (compiled code is not portable)."""

    accelerator = "compile"
    needs_model_to_load = True

    def forward(self, *args, **kwargs):
        # Inductor reads ``freezing`` from its global config when it compiles (the
        # first call, and any recompile for a new shape); torch.compile's options
        # dict does not carry it. Patching per call leaves the user's config alone.
        with inductor_config().patch(freezing=True):
            return super().forward(*args, **kwargs)

    def save_artifacts(self, directory: str) -> dict:
        save_state_dict(self, getattr(self.module, "_orig_mod", self.module).state_dict(),
                        directory)
        return {}

    @classmethod
    def load_artifacts(cls, directory, meta, model):
        method, signature, output, threads = restore_common(meta)
        return _compile(prepare_module(load_state_dict(model, directory), method), method,
                        signature, output, threads)


def inductor_config():
    """torch._inductor.config: the only place the freezing switch lives."""
    import torch._inductor.config as config

    return config


def _compile(module, method, signature, output, threads) -> CompiledModel:
    # A fresh dynamo state: compiled graphs are cached per class, and a cached
    # graph would silently ignore a changed precision or memory format.
    torch.compiler.reset()
    compiled = cast(torch.nn.Module, torch.compile(module))  # an OptimizedModule
    return CompiledModel(compiled, method, signature, output, threads)


def unavailable_reason(method: Method) -> Optional[str]:
    return None


def without_sample(model, method: Method, thread_num: Optional[int] = None) -> CompiledModel:
    """Compile lazily: the first call compiles (no sample to do it now)."""
    from nano.inference.prepare import private_eval_copy

    return _compile(prepare_module(private_eval_copy(model), method), method, None, None,
                    thread_num)


def build(method: Method, inputs) -> CompiledModel:
    model = _compile(prepare_module(inputs.model, method), method, inputs.signature,
                     inputs.output, inputs.thread_num)
    if inputs.signature is not None:
        model(*inputs.args, **inputs.kwargs)  # compile now, not during the first user call
    return model


MODEL_CLASS = CompiledModel
