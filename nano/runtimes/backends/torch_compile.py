"""``torch.compile`` (inductor with freezing): ``compile_fp32``, ``compile_bf16`` (+ channels_last).

Freezing turns weights into constants so inductor can fold and prepack them:
without it a ResNet-18 compiled slower than eager on CPU. The first call
compiles (seconds); ``build`` makes that call so latency excludes it.
"""

from __future__ import annotations

from typing import Any, Optional, TYPE_CHECKING, cast

import torch

from nano.runtimes.backends.spec import BackendSpec, Flavour, INDUCTOR
from nano.runtimes.backends.torch_common import TorchModuleModel, prepare_module
from nano.runtimes.methods import Method

if TYPE_CHECKING:
    from nano.runtimes.prepare import BuildInputs
    from nano.runtimes.structure import InputSignature

INSTALL_HINT = "pip install torch"
SPEC = BackendSpec(
    accelerator="compile", aliases=("inductor",), precisions=("fp32", "bf16"),
    candidates=(Flavour(), Flavour("bf16"), Flavour("bf16", channels_last=True)),
    channels_last=True, preload=INDUCTOR)


class CompiledModel(TorchModuleModel):
    """A module compiled by inductor; saved as its state dict (compiled code is not portable)."""

    accelerator = "compile"

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        # Inductor reads ``freezing`` from its global config when it compiles (the
        # first call, and any recompile for a new shape); torch.compile's options
        # dict does not carry it. Patching per call leaves the user's config alone.
        with inductor_config().patch(freezing=True):
            return super().forward(*args, **kwargs)

    def source_state(self) -> dict:
        return getattr(self.module, "_orig_mod", self.module).state_dict()

    @classmethod
    def from_module(cls, module: torch.nn.Module, method: Method,
                    signature: Optional[InputSignature], output: Optional[dict],
                    thread_num: Optional[int]) -> "CompiledModel":
        # A fresh dynamo state: compiled graphs are cached per class, and a cached
        # graph would silently ignore a changed precision or memory format.
        torch.compiler.reset()
        compiled = cast(torch.nn.Module, torch.compile(prepare_module(module, method)))
        return cls(compiled, method, signature, output, thread_num)


def inductor_config() -> Any:
    """torch._inductor.config: the only place the freezing switch lives."""
    import torch._inductor.config as config

    return config


def unavailable_reason(method: Method) -> Optional[str]:
    return None


def without_sample(model: torch.nn.Module, method: Method,
                   thread_num: Optional[int] = None) -> CompiledModel:
    """Compile lazily: the first call compiles (no sample to do it now)."""
    from nano.runtimes.prepare import private_eval_copy

    return CompiledModel.from_module(private_eval_copy(model), method, None, None, thread_num)


def build(method: Method, inputs: BuildInputs) -> CompiledModel:
    model = CompiledModel.from_module(inputs.model, method, inputs.signature, inputs.output,
                                      inputs.thread_num)
    if inputs.signature is not None:
        model(*inputs.args, **inputs.kwargs)  # compile now, not during the first user call
    return model


MODEL_CLASS = CompiledModel
