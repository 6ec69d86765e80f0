"""Intel Neural Compressor 3.x as the accuracy-aware tuner for PyTorch INT8 (optional).

Neural Compressor's ``autotune`` walks a set of static INT8 configurations
over a PT2E-exported graph (on this torch it quantizes through torchao's
X86InductorQuantizer) and stops at the first that keeps the metric within a
relative loss. Nano then compiles the result like its own ``compile_int8``.
Install with ``pip install neural-compressor-pt py-cpuinfo``; without it
Nano's own trials are used.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Optional, TYPE_CHECKING

import torch

from nano.runtimes.availability import module_available
from nano.runtimes.prepare import export_dynamic_shapes
from nano.noise import quiet_third_party

if TYPE_CHECKING:
    from nano.runtimes.prepare import BuildInputs
    from nano.search.criterion import Criterion

INSTALL_HINT = "pip install neural-compressor neural-compressor-pt py-cpuinfo"
NEURAL_COMPRESSOR_LOGGERS = ("neural_compressor", "neural_compressor.common")


def unavailable_reason() -> Optional[str]:
    """Why Neural Compressor's torch tuner cannot be used here, or None."""
    return module_available("neural_compressor.torch.quantization", INSTALL_HINT)


def tolerable_loss(criterion: Criterion, baseline: float) -> Optional[float]:
    """The criterion as Neural Compressor's relative loss, or None if it cannot express it
    (it assumes higher is better)."""
    if not criterion.higher_is_better:
        return None
    if criterion.kind == "relative":
        return criterion.value
    return criterion.value / max(abs(baseline), 1e-12)


def autotune_pt2e(inputs: BuildInputs, loss: float, evaluate: Callable[[Any], float],
                  max_trials: int) -> Any:
    """Run Neural Compressor's autotune; return the converted graph module or None."""
    from neural_compressor.torch.export import export
    from neural_compressor.torch.quantization import StaticQuantConfig, TuningConfig, autotune

    sample = tuple(inputs.export_sample())
    shapes = export_dynamic_shapes(inputs.dynamic_dims())
    configs = [StaticQuantConfig(act_sym=False), StaticQuantConfig(act_sym=True),
               StaticQuantConfig(w_granularity="per_tensor")][:max_trials]
    calib = inputs.flat_calib()

    def run_fn(model):
        for flat in calib:
            model(*flat)

    def eval_fn(model):
        return evaluate(_FlatCaller(model, inputs))

    # its per-trial INFO/WARNING logs are for its own users; Nano reports the trials itself
    with warnings.catch_warnings(), quiet_third_party(*NEURAL_COMPRESSOR_LOGGERS):
        warnings.simplefilter("ignore")
        exported = export(inputs.flat_module(), example_inputs=sample, dynamic_shapes=(shapes,))
        return autotune(exported, TuningConfig(config_set=configs, tolerable_loss=loss,
                                               max_trials=len(configs)),
                        eval_fn=eval_fn, run_fn=run_fn, example_inputs=sample)


class _FlatCaller(torch.nn.Module):
    """Calls a flat-input graph like the original model (for the metric during tuning)."""

    def __init__(self, graph, inputs):
        super().__init__()
        self.graph = graph
        self.inputs = inputs

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        from nano.runtimes.structure import unflatten_output

        with torch.no_grad():
            out = self.graph(*self.inputs.signature.flatten(args, kwargs))
        return unflatten_output(self.inputs.output, list(out))
