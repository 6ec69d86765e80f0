"""``InferenceOptimizer.quantize``: INT8 (and bf16/fp16) for every runtime, with accuracy control.

With a ``metric``, configurations are tried in turn (symmetric vs asymmetric
activations, first/last layers or norms kept in fp32, NNCF's accuracy control
for OpenVINO) and the FASTEST one within ``accuracy_criterion``
of the fp32 original is returned. If none passes, ``AccuracyCriterionError``
says what each trial measured and carries the best model found.
"""

from __future__ import annotations

import logging
import tempfile
import time
import warnings
from typing import Any, Callable, Optional, TYPE_CHECKING

import torch

from nano.errors import NanoError, NanoValueError
from nano.runtimes import registry
from nano.search.criterion import Criterion
from nano.runtimes.data import ForwardParams, as_batches, sample_call, split_batch
from nano.runtimes.int8_overflow import overflow_fix
from nano.search.judgement import OutputJudgement
from nano.search.measure import (check_metric, evaluate_metric, measure_latency,
                                 metric_style)
from nano.runtimes.methods import Method, normalize_precision
from nano.runtimes.registry import normalize_accelerator
from nano.runtimes.prepare import prepare
from nano.runtimes.calibration import calibration_samples
from nano.runtimes.quant_config import QuantConfig, trial_configs

if TYPE_CHECKING:
    from nano.runtimes.model import AcceleratedModel

logger = logging.getLogger(__name__)

class AccuracyCriterionError(NanoError, RuntimeError):
    """No INT8 configuration met the accuracy criterion.

    ``best_model`` is the most accurate candidate built, ``best_drop`` its
    measured drop, ``trials`` every (description, drop or error) pair.
    """

    def __init__(self, message: str, best_model=None, best_drop=None, trials=()):
        super().__init__(message)
        self.best_model = best_model
        self.best_drop = best_drop
        self.trials = list(trials)


def int8_method(accelerator: str, method: Optional[str], approach: str,
                use_ipex: bool = False) -> Method:
    """The INT8 Method for an accelerator and the BigDL-style ``method``/``approach``, read
    from the quantizer's spec; an accelerator without a quantizer is an error."""
    builder = registry.quantizer_for(accelerator, use_ipex).SPEC
    spec = builder.quantizer
    named = [v for v in spec.variants if v]  # the flavours BigDL's method= picks
    if named and spec.dynamic_variant:
        named.append(spec.dynamic_variant)
    if method is not None and method not in named:
        if not named:
            raise NanoValueError(f"method= picks an INT8 flavour; {accelerator} INT8 has none "
                                 f"(got {method!r})")
        raise NanoValueError(f"method for {accelerator} must be "
                             f"{', '.join(repr(v) for v in named)} or None, got {method!r}")
    if approach == "dynamic":
        if spec.dynamic_variant is None:
            raise NanoValueError(f"{accelerator} INT8 is static only: use approach='static'")
        variant = spec.dynamic_variant
    elif method is not None and method == spec.dynamic_variant:
        raise NanoValueError(f"method={method!r} is dynamic quantization: pass "
                             f"approach='dynamic'")
    else:
        variant = method or spec.variants[0]
    return Method(builder.accelerator, "int8", use_ipex=builder.use_ipex, variant=variant)


def _eval_data(model, validation_data, calib_data):
    data = validation_data if validation_data is not None else calib_data
    name = "validation_data" if validation_data is not None else "calib_data"
    params = ForwardParams.of(model)
    samples, targets = zip(*(split_batch(b, params, name)
                              for b in as_batches(data, name, params=params)))
    return list(samples), list(targets), data


def quantize(model: torch.nn.Module, *, precision: str = "int8",
             accelerator: Optional[str] = None, calib_data: Any = None,
             metric: Optional[Callable] = None, accuracy_criterion: Any = None,
             approach: str = "static", method: Optional[str] = None,
             max_trials: Optional[int] = None, timeout: Optional[float] = None,
             thread_num: Optional[int] = None, input_sample: Any = None,
             validation_data: Any = None, use_ipex: bool = False, channels_last: bool = False,
             dynamic_axes: Any = True, sample_size: Optional[int] = None,
             runtime: Optional[dict] = None) -> AcceleratedModel:
    """Return ``model`` quantized for ``accelerator`` (see InferenceOptimizer.quantize).

    ``runtime`` holds the runtime options of ``nano.runtimes.bigdl_forms.runtime_options``.
    """
    from nano.runtimes.bigdl_forms import runtime_options

    precision = normalize_precision(precision)
    acc = normalize_accelerator(accelerator)
    if approach not in ("static", "dynamic"):
        raise NanoValueError(f"approach must be 'static' or 'dynamic', got {approach!r}")
    if metric is not None:
        check_metric(metric)
    if max_trials is not None and max_trials < 1:
        raise NanoValueError(f"max_trials must be at least 1, got {max_trials}")
    if timeout is not None and timeout <= 0:
        raise NanoValueError(f"timeout must be positive, got {timeout}")
    if sample_size is not None and sample_size < 1:
        raise NanoValueError(f"sample_size must be at least 1, got {sample_size}")
    criterion = None
    if accuracy_criterion is not None and metric is None:
        raise NanoValueError("accuracy_criterion needs a metric to measure accuracy with")
    if metric is not None:
        criterion = Criterion.parse(accuracy_criterion)
    options = runtime_options(acc, **(runtime or {}))

    if precision in ("bf16", "fp16", "fp32"):
        fmethod = Method(acc, precision, channels_last, use_ipex).with_options(**options)
        sample = input_sample
        if sample is None and calib_data is not None:
            sample = _first_input(model, calib_data)
        if sample is None:  # plain PyTorch and scripted TorchScript need no sample
            return registry.build_without_sample(fmethod, model, thread_num)
        return registry.build(fmethod, prepare(model, sample, thread_num, dynamic_axes))

    if channels_last:
        raise NanoValueError("channels_last applies to precision='bf16' (and fp32 trace()); "
                             "the INT8 runtimes choose their own memory layout")
    dynamic = approach == "dynamic"
    qmethod = int8_method(acc, method, approach, use_ipex).with_options(**options)
    calib = None
    if not (dynamic and calib_data is None):
        calib = calibration_samples(model, calib_data, input_sample,
                                    limit=_calib_batches(calib_data, sample_size))
    if input_sample is not None:
        sample = input_sample
    elif calib:
        sample = calib[0]
    else:
        raise NanoValueError("dynamic INT8 needs input_sample (or calib_data) to export the "
                             "model")
    inputs = prepare(model, sample, thread_num, dynamic_axes, calib)
    quantizer = registry.backend_for(qmethod)
    configs = [c for c in trial_configs(dynamic) if quantizer.SPEC.quantizer.supports(c)]
    if criterion is None or metric is None:
        built = registry.build(_with(qmethod, configs[0]), inputs)
        _warn_on_drift(built, inputs)
        return built
    samples, targets, vdata = _eval_data(model, validation_data, calib_data)
    if all(t is None for t in targets) and _metric_needs_targets(metric):
        raise NanoValueError("the metric needs labels: pass validation_data with (input, "
                             "label) batches, or calib_data with labels")
    baseline = evaluate_metric(inputs.model, metric, samples, targets, vdata)  # a private copy
    # every trial quantizes the same fp32 conversion: export or convert it once
    with tempfile.TemporaryDirectory(prefix="nano-conversions-") as cache:
        inputs.conversion_cache = cache
        return _search(quantizer, qmethod, configs, inputs, criterion, baseline, metric,
                       samples, targets, vdata, max_trials, timeout)


def _calib_batches(calib_data, sample_size: Optional[int]) -> int:
    """How many batches hold ``sample_size`` samples (BigDL counted samples, Nano batches);
    without it, the one calibration limit."""
    from nano.runtimes.calibration import CALIBRATION_BATCHES

    if sample_size is None:
        return CALIBRATION_BATCHES
    batch_size = getattr(calib_data, "batch_size", None) or 1
    return max(1, -(-sample_size // batch_size))


def _metric_needs_targets(metric) -> bool:
    return metric_style(metric) == "pred"


def _first_input(model, data):
    if data is None:
        raise NanoValueError("input_sample (or calib_data) is required to build the model")
    return sample_call(model, data, "calib_data")


def _with(method: Method, config: QuantConfig) -> Method:
    """``method`` with ``config``'s settings added to its runtime options."""
    return method.with_options(**dict(config.options()))


def _warn_on_drift(built, inputs) -> None:
    with torch.no_grad():
        ref = inputs.model(*inputs.args, **inputs.kwargs)  # the private fp32 copy
        out = built(*inputs.args, **inputs.kwargs)
    verdict = OutputJudgement.decide(inputs.model, ref).judge([out], [ref])
    shortfall = verdict.shortfall("int8")
    if shortfall:
        warnings.warn(f"INT8 {shortfall} on the sample; check accuracy with metric= and "
                      f"accuracy_criterion=", stacklevel=3)


def _search(quantizer, qmethod, configs, inputs, criterion, baseline, metric, samples, targets,
            vdata, max_trials, timeout):
    """Try at most ``max_trials`` configurations; return the fastest passing model or raise
    AccuracyCriterionError."""
    from tqdm.auto import tqdm

    deadline = None if timeout is None else time.monotonic() + timeout
    trials, passing = [], []
    best = (None, float("inf"))
    todo = [(c, None) for c in configs]
    if quantizer.SPEC.quantizer.accuracy_control and metric_style(metric) == "pred":
        from nano.runtimes.backends.openvino_nncf import metric_validation

        # the runtime's own accuracy control right after the plain default (NNCF's reverts only
        # the layers that cost accuracy, which usually beats the coarser configurations after it)
        todo.insert(1, (configs[0], "accuracy_control"))
    todo = todo[: max_trials or len(todo)]
    tuned = _try_neural_compressor(quantizer, qmethod, inputs, criterion, baseline, metric, samples,
                                   targets, vdata, len(todo))
    if tuned is not None:
        return tuned
    for config, special in tqdm(todo, desc=f"quantize {qmethod.name}", disable=None):
        if deadline is not None and time.monotonic() > deadline:
            trials.append(("(stopped: timeout)", None))
            break
        label = config.describe() + (", NNCF accuracy control" if special else "")
        try:
            if special:
                validation = (list(zip(samples, targets)),
                              metric_validation(metric, inputs), criterion.value, criterion.kind)
                model = quantizer.build_with_accuracy_control(_with(qmethod, config), inputs,
                                                              validation)
            else:
                model = registry.build(_with(qmethod, config), inputs)
            value = evaluate_metric(model, metric, samples, targets, vdata)
        except Exception as e:  # a configuration the runtime cannot build is one failed trial
            from nano.runtimes.error_summary import summarize_error

            trials.append((label, f"failed: {type(e).__name__}: {summarize_error(e)}"))
            continue
        drop = criterion.drop(baseline, value)
        logger.debug("%s, %s: metric %.4g, drop %.4g", qmethod.name, label, value, drop)
        trials.append((label, drop))
        if drop < best[1]:
            best = (model, drop)
        if criterion.passes(baseline, value):
            args, kwargs = inputs.args, inputs.kwargs
            lat = measure_latency(lambda: model(*args, **kwargs), 30, 2.0)
            passing.append((lat.median, label, model))
    if passing:
        return min(passing, key=lambda p: p[0])[2]
    lines = "\n".join(f"  {label}: " + (f"drop {d:.4g}" if isinstance(d, float) else str(d))
                      for label, d in trials)
    raise AccuracyCriterionError(
        f"no {qmethod.name} configuration kept the {criterion.kind} accuracy drop within "
        f"{criterion.value:g} (original: {baseline:.4g}). Trials:\n{lines}\nThe most accurate "
        f"model is on this error's .best_model (drop {best[1]:.4g}).",
        best[0], None if best[0] is None else best[1], trials)


def _try_neural_compressor(quantizer, qmethod, inputs, criterion, baseline, metric, samples,
                           targets, vdata, max_trials):
    """PyTorch INT8 through Neural Compressor's autotune when it is installed and can express
    the criterion; None means use Nano's own trials."""
    from nano.quantize import inc

    if quantizer.SPEC.quantizer.tuner != "neural_compressor" or inc.unavailable_reason():
        return None
    if overflow_fix():  # its configurations have no 7-bit scheme: they would saturate here
        return None
    loss = inc.tolerable_loss(criterion, baseline)
    if loss is None:
        return None
    try:
        graph = inc.autotune_pt2e(inputs, loss, lambda m: evaluate_metric(
            m, metric, samples, targets, vdata), max_trials)
    except Exception as e:  # the tuner is an extra: fall back to Nano's trials
        warnings.warn(f"Neural Compressor autotune failed ({type(e).__name__}: {e}); using "
                      f"Nano's own trials", stacklevel=4)
        return None
    if graph is None:
        return None
    model = quantizer.wrap_converted(graph, _with(qmethod, QuantConfig()), inputs)
    value = evaluate_metric(model, metric, samples, targets, vdata)
    return model if criterion.passes(baseline, value) else None
