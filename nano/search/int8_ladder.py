"""optimize()'s INT8 ladder: when a runtime's default INT8 fails the accuracy judgement,
the configurations tried next, until one passes.

The steps are the quantize() trial configurations after the default (asymmetric ranges,
which NNCF calls the MIXED preset; the first and last layers kept in fp32; norms and
softmax kept out of INT8), then "measured": the layers that cost the most accuracy kept
in fp32. OpenVINO measures with NNCF's accuracy control (reverting layers until the
judgement passes); ONNX Runtime and PT2E with ``nano.runtimes.sensitivity`` (each layer
alone in simulated INT8, then the 1, 2, 4, 8 costliest kept). Where the training data
has more batches than calibration used, the first step calibrates on them too (up to
MORE_CALIBRATION_BATCHES). Each step is a row of the
table, named after its configuration (``openvino_int8+asym``); the ladder stops at the
first that passes (a later step keeps more in floating point, so is expected slower).

A default search climbs a short ladder, and only for a near miss: DEFAULT_STEPS, when
the default INT8 missed by at most NEAR_MISS times what is allowed, within
LADDER_SECONDS. On all-MiniLM-L6-v2 the whole ladder cost 120 s and no step reached the
demo's cosine 0.99 (0.9865 to 0.9878), and ONNX Runtime's QOperator, at cosine 0.20,
got no nearer than 0.94. "all" and "grid" searches climb every step of every ladder.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from nano.runtimes.methods import Method
from nano.runtimes.quant_config import QuantConfig, trial_configs
from nano.runtimes.registry import backend_for, runtime_options

# The default search's ladder: these steps, for a miss of at most NEAR_MISS times the
# allowed error (or drop), within LADDER_SECONDS of its trials. The two steps were the
# ones that passed on the zoo (BERT's OpenVINO INT8 at cosine 0.979: first_last at 0.99996)
# and the nearest on MiniLM.
DEFAULT_STEPS = (QuantConfig(keep_fp32="first_last"),
                 QuantConfig(symmetric=False, keep_fp32="sensitive"))
NEAR_MISS = 4.0
LADDER_SECONDS = 60.0

MEASURED = (QuantConfig(keep_fp32="measured"),)
# first: it keeps every layer in INT8, so is as fast as the default
MORE_CALIBRATION = (QuantConfig(more_calibration=True),)


def _quantizer(method: Method):
    return backend_for(method).SPEC.quantizer


def is_default_int8(method: Method) -> bool:
    """``method`` is a runtime's INT8 candidate in its default configuration."""
    return (method.precision == "int8" and _quantizer(method) is not None
            and QuantConfig.among(method.option_dict) == QuantConfig())


def base_of(method: Method) -> Method:
    """The default INT8 candidate a ladder step belongs to (itself for a default one)."""
    keep = {k: v for k, v in method.options if k in runtime_options()}
    return Method(method.accelerator, method.precision, method.channels_last, method.use_ipex,
                  method.variant).with_options(**keep)


def steps(method: Method, exhaustive: bool = True, more_data: bool = False) -> list[Method]:
    """The ladder after ``method``'s default configuration failed, in the order tried
    (``exhaustive``: every step, else DEFAULT_STEPS; ``more_data``: the training data has
    batches past the calibration ones, for the more_calib step)."""
    quantizer = _quantizer(method)
    dynamic = method.variant == quantizer.dynamic_variant
    # static INT8 only: dynamic INT8 calibrates nothing, and measuring needs the
    # activation ranges calibration fixes
    more = MORE_CALIBRATION if more_data and not dynamic else ()
    configs = [c for c in (*more, *trial_configs(dynamic)[1:], *(() if dynamic else MEASURED))
               if quantizer.supports(c) and (exhaustive or c in DEFAULT_STEPS)]
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
