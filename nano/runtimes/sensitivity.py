"""Which layers cost the most accuracy in INT8: each Conv/Linear layer alone simulated in
INT8 (its weights per channel, its input per tensor over the calibration range), the
model's outputs judged against the original's on held-out data.

The INT8 ladder's "measured" step on runtimes without an accuracy-control algorithm of
their own (ONNX Runtime, PyTorch PT2E) keeps the costliest layers in floating point.
One layer at a time is what a runtime's INT8 of that layer does to the output, without
the rest of the model's rounding in the way; it costs one pass over a few held-out
batches per layer (MiniLM's 36 layers: about 2 s here).
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any, Callable, Iterator

import torch

if TYPE_CHECKING:
    from nano.runtimes.prepare import HeldOut

_LAYER_KINDS = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear)

logger = logging.getLogger(__name__)

# held-out batches each layer is judged on: enough rows to rank, few enough to stay cheap
SENSITIVITY_BATCHES = 4
# the most layers a measured build keeps in floating point (then 1, 2, 4 and 8 are tried):
# on all-MiniLM-L6-v2, ONNX Runtime's static INT8 went from cosine 0.78 to 0.978 (4) and
# 0.990 (8) of its 36 layers
MOST_KEPT = 8


def quantizable_layers(model: torch.nn.Module) -> list[str]:
    """Names of the Conv/Linear modules, in definition order."""
    return [name for name, m in model.named_modules() if isinstance(m, _LAYER_KINDS)]


def input_ranges(model: torch.nn.Module, calib: list, names: list[str]
                 ) -> dict[str, tuple[float, float]]:
    """The (min, max) of each named layer's input over the calibration inputs
    (``(args, kwargs)`` pairs), as a MinMax calibration records it."""
    ranges: dict[str, tuple[float, float]] = {}
    modules = dict(model.named_modules())

    def observe(name):
        def hook(_module, args):
            if not args or not isinstance(args[0], torch.Tensor):  # called by keyword
                return
            x = args[0].detach()
            lo, hi = float(x.min()), float(x.max())
            old = ranges.get(name, (lo, hi))
            ranges[name] = (min(old[0], lo), max(old[1], hi))
        return hook

    handles = [modules[n].register_forward_pre_hook(observe(n)) for n in names]
    try:
        with torch.no_grad():
            for args, kwargs in calib:
                model(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()
    return ranges


def fake_quantize_activation(x: torch.Tensor, lo: float, hi: float,
                             symmetric: bool) -> torch.Tensor:
    """``x`` rounded through INT8 over the range [lo, hi]: signed and centred on zero when
    ``symmetric``, else unsigned with a zero point (as u8 activations run on x86)."""
    if symmetric:
        scale = max(abs(lo), abs(hi), 1e-12) / 127.0
        return torch.clamp(torch.round(x / scale), -128, 127) * scale
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = max(hi - lo, 1e-12) / 255.0
    zero = round(-lo / scale)
    return (torch.clamp(torch.round(x / scale) + zero, 0, 255) - zero) * scale


def fake_quantize_weight(w: torch.Tensor) -> torch.Tensor:
    """``w`` rounded through symmetric INT8 per output channel (dim 0)."""
    flat = w.reshape(w.shape[0], -1)
    scale = (flat.abs().amax(dim=1).clamp(min=1e-12) / 127.0).reshape(
        -1, *([1] * (w.dim() - 1)))
    return torch.clamp(torch.round(w / scale), -128, 127) * scale


@contextlib.contextmanager
def _simulated_int8(module: torch.nn.Module, lo: float, hi: float,
                    symmetric: bool) -> Iterator[None]:
    weight = module.weight
    assert isinstance(weight, torch.Tensor)
    original = weight.data
    weight.data = fake_quantize_weight(original)
    handle = module.register_forward_pre_hook(
        lambda _m, args: (fake_quantize_activation(args[0], lo, hi, symmetric), *args[1:]))
    try:
        yield
    finally:
        handle.remove()
        weight.data = original


def layer_costs(model: torch.nn.Module, calib: list, held: "HeldOut", symmetric: bool = True,
                batches: int = SENSITIVITY_BATCHES) -> list[tuple[str, float]]:
    """``(layer name, cost)`` for each Conv/Linear layer of ``model`` (eval mode), costliest
    first: the judgement's miss (error over its INT8 tolerance) of the outputs on up to
    ``batches`` held-out batches with that layer alone in INT8."""
    names = quantizable_layers(model)
    ranges = input_ranges(model, calib, names)
    modules = dict(model.named_modules())
    samples = held.samples[:batches]
    indexes = list(range(len(samples)))
    costs = []
    with torch.no_grad():
        for name in names:
            if name not in ranges:  # never called on these inputs: nothing to cost
                continue
            with _simulated_int8(modules[name], *ranges[name], symmetric):
                outputs = [model(*args, **kwargs) for args, kwargs in samples]
            costs.append((name, 1.0 - held.score(outputs, "int8", indexes)))
    return sorted(costs, key=lambda c: -c[1])


def kept_counts(layers: int, most: int) -> list[int]:
    """How many of the costliest layers each measured build keeps in floating point:
    1, 2, 4, ... up to ``most`` (and never every layer)."""
    counts, k = [], 1
    while k <= min(most, layers - 1):
        counts.append(k)
        k *= 2
    return counts


def keep_costliest(model: torch.nn.Module, calib: list, held: "HeldOut", symmetric: bool,
                   build_keeping: Callable[[list[str]], Any], most: int = MOST_KEPT) -> Any:
    """The first of ``build_keeping(layers)`` (a model built with ``layers`` kept in
    floating point) whose outputs on the held-out data pass (``HeldOut.accepts``), keeping
    the 1, 2, 4, ... costliest layers; the last one built when none passes (the search's
    judgement then rejects it, saying by how much)."""
    costs = layer_costs(model, calib, held, symmetric)
    if len(costs) < 2:
        raise RuntimeError(f"keep_fp32='measured' keeps the Conv/Linear layers that cost the "
                           f"most accuracy, and this model has {len(costs)} such layer(s) "
                           f"run by its inputs")
    built = None
    for k in kept_counts(len(costs), most):
        kept = [name for name, _ in costs[:k]]
        built = build_keeping(kept)
        outputs = [built(*args, **kwargs) for args, kwargs in held.samples]
        if held.accepts(outputs):
            logger.info("INT8 with %d layer(s) kept in floating point passes: %s", k, kept)
            return built
    logger.info("INT8 with up to %d layer(s) kept in floating point still fails", most)
    return built
