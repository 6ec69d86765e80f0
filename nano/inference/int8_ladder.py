"""optimize()'s INT8 ladder: when a runtime's default INT8 fails the accuracy judgement,
the configurations tried next, until one passes.

The steps are the quantize() trial configurations after the default (asymmetric ranges,
which NNCF calls the MIXED preset; the first and last layers kept in fp32; norms and
softmax kept out of INT8), then, on OpenVINO, "measured": the layers that cost the most
accuracy on the held-out data kept in fp32 (NNCF's accuracy control, reverting layers
until the judgement passes). ONNX Runtime has no measured step: its exclusions are by
node, and a quantized activation between two excluded nodes keeps its INT8 rounding
(excluding both layers around an outlier left a 0.56 relative L2 error). Each step is a row of the table, named after its
configuration (``openvino_int8+asym``); the ladder stops at the first that passes (a
later step keeps more in floating point, so is expected slower), and after
LADDER_SECONDS of its trials in a default search.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from nano.inference.methods import Method
from nano.inference.quant_config import QuantConfig, trial_configs

# What the ladder of one runtime may cost in a default search (its trials' own seconds);
# "all" and "grid" searches climb every step.
LADDER_SECONDS = 240.0

MEASURED = (QuantConfig(keep_fp32="measured"),)


def _quantizer(method: Method):
    from nano.inference.backends import backend_for

    return backend_for(method).SPEC.quantizer


def is_default_int8(method: Method) -> bool:
    """``method`` is a runtime's INT8 candidate in its default configuration."""
    return (method.precision == "int8" and _quantizer(method) is not None
            and QuantConfig.from_options(method.option_dict) == QuantConfig())


def base_of(method: Method) -> Method:
    """The default INT8 candidate a ladder step belongs to (itself for a default one)."""
    from nano.inference.methods import runtime_options

    keep = {k: v for k, v in method.options if k in runtime_options()}
    return Method(method.accelerator, method.precision, method.channels_last, method.use_ipex,
                  method.variant).with_options(**keep)


def steps(method: Method) -> list[Method]:
    """The ladder after ``method``'s default configuration failed, in the order tried."""
    quantizer = _quantizer(method)
    dynamic = method.variant == quantizer.dynamic_variant
    # measuring needs the activation ranges calibration fixes: static INT8 only
    configs = [c for c in (*trial_configs(dynamic)[1:], *(() if dynamic else MEASURED))
               if quantizer.supports(c)]
    return [method.with_options(**dict(c.options())) for c in configs]


def is_step(method: Method) -> bool:
    """``method`` is a ladder step (an INT8 candidate in a configuration of the ladder)."""
    return method.precision == "int8" and base_of(method) != method


def stop_reason(method: Method, rows: list, exhaustive: bool,
                passes: Callable[[Any], bool]) -> Optional[str]:
    """Why ``method``, a ladder step, is not tried given the ``rows`` so far (the ladder
    reached a passing step, or spent its time), or None (also for any other method)."""
    if not is_step(method):
        return None
    base = base_of(method)
    ladder = [r for r in rows if base_of(r.method) == base and r.method != base]
    for r in ladder:
        if r.usable and passes(r):
            return f"not tried: {r.name} passed, and this step keeps more in floating point"
    spent = sum(r.cost_seconds for r in ladder)
    if not exhaustive and spent >= LADDER_SECONDS:
        return (f"not tried: the INT8 ladder of {base.name} spent {spent:.0f} s "
                f"(LADDER_SECONDS={LADDER_SECONDS:g} in a default search)")
    return None
