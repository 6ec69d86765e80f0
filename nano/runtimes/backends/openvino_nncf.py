"""OpenVINO INT8 (``openvino_int8``): NNCF post-training quantization of the OpenVINO model.

NNCF quantizes the converted OpenVINO model rather than the torch module: on a
torch module it first compiles a C++ extension (about a minute on 2 cores).
With a metric and a criterion, ``quantize_with_accuracy_control`` reverts the
layers that cost the most accuracy until the drop is within bounds.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, TYPE_CHECKING

import torch

from nano.runtimes.availability import module_available
from nano.runtimes.backends.spec import BackendSpec, Flavour, QuantizerSpec, DYNAMO
from nano.runtimes.backends.openvino_ir import OpenVINOModel, convert, sample_shapes
from nano.runtimes.int8_overflow import overflow_fix, scheme
from nano.runtimes.methods import Method
from nano.noise import quiet_console, quiet_third_party
from nano.runtimes.quant_config import QuantConfig

if TYPE_CHECKING:
    from nano.runtimes.prepare import BuildInputs

INSTALL_HINT = "pip install nncf openvino"
_COMPUTE_TYPES = ("Convolution", "MatMul", "GroupConvolution")
# NNCF quantizes weights per channel, statically; its accuracy control reverts the layers
# that cost accuracy
SPEC = BackendSpec(
    accelerator="openvino", precisions=("int8",), candidates=(Flavour("int8"),), converts=True,
    options=("openvino_config",),
    quantizer=QuantizerSpec(accuracy_control=True,
                            keep_fp32=("none", "first_last", "sensitive", "measured")),
    preload=DYNAMO)


# NNCF's accuracy control reverts one group of layers to fp32 per iteration; past this many
# the model is mostly floating point and no faster than OpenVINO fp32/bf16.
MAX_REVERTED_GROUPS = 8


def first_last_compute_ops(ov_model: Any) -> list[str]:
    """Friendly names of the first and last Convolution/MatMul ops, in topological order."""
    names = [op.get_friendly_name() for op in ov_model.get_ordered_ops()
             if op.get_type_name() in _COMPUTE_TYPES]
    return sorted({names[0], names[-1]}) if names else []


def _is_transformer(ov_model) -> bool:
    return any(op.get_type_name() in ("Softmax", "MVN") for op in ov_model.get_ordered_ops())


def nncf_arguments(config: QuantConfig, ov_model: Any, calib_count: int) -> dict:
    """The keyword arguments for nncf.quantize* that a QuantConfig stands for."""
    import nncf

    kwargs = {
        "preset": nncf.QuantizationPreset.PERFORMANCE if config.symmetric
        else nncf.QuantizationPreset.MIXED,
        "subset_size": calib_count,
    }
    if config.keep_fp32 == "sensitive" or _is_transformer(ov_model):
        kwargs["model_type"] = nncf.ModelType.TRANSFORMER  # keeps softmax/norms out of int8
    if config.keep_fp32 in ("first_last", "sensitive"):
        kwargs["ignored_scope"] = nncf.IgnoredScope(names=first_last_compute_ops(ov_model))
    if overflow_fix():
        # 7-bit weights in every layer where the CPU has no int8 dot product (NNCF's
        # default fixes the first layer only: a two-layer MLP stayed 0.16 off)
        from nncf.quantization.advanced_parameters import (AdvancedQuantizationParameters,
                                                           OverflowFix)
        kwargs["advanced_parameters"] = AdvancedQuantizationParameters(
            overflow_fix=OverflowFix.ENABLE)
    return kwargs


def unavailable_reason(method: Method) -> Optional[str]:
    return module_available("nncf", INSTALL_HINT) or module_available("openvino", INSTALL_HINT)


def build(method: Method, inputs: BuildInputs) -> OpenVINOModel:
    """Quantize with NNCF's post-training quantization; with keep_fp32="measured", NNCF's
    accuracy control keeps in fp32 the layers costing the most accuracy on the held-out
    data, until the outputs pass the default judgement (``nano.search.judgement``)."""
    if SPEC.quant_config(method).keep_fp32 == "measured":
        return _quantize(method, inputs, _judged_validation(inputs))
    return _quantize(method, inputs, None)


def metric_validation(metric: Callable, inputs: BuildInputs) -> Callable:
    """NNCF's validation_fn(compiled_model, data) -> float over ``(sample, target)`` items,
    on top of a Nano ``metric(pred, target)``."""
    from nano.runtimes.structure import concat_values
    from nano.runtimes.structure import unflatten_output

    def validate(compiled, data):
        preds, targets = [], []
        for sample, target in data:
            flat = inputs.signature.flatten(*sample)
            result = compiled([t.numpy() for t in flat])
            outs = [torch.from_numpy(result[o]) for o in compiled.outputs]
            preds.append(unflatten_output(inputs.output, outs))
            targets.append(target)
        value = metric(concat_values(preds), concat_values(targets))
        return float(value.item() if isinstance(value, torch.Tensor) else value)

    return validate


def _judged_validation(inputs: BuildInputs) -> tuple:
    """NNCF accuracy control's (data, validation_fn, max_drop, drop type) from the held-out
    data: against the user's metric and criterion where the search has them, else against
    the judgement, whose score is 1 at the original's outputs and 0 at the tolerance's
    edge, so an absolute drop of 1 is what the judgement allows."""
    from nano.runtimes.structure import unflatten_output

    held = inputs.require_held_out("keep_fp32='measured'")
    if held.metric is not None:
        return (list(zip(held.samples, held.targets or [])),
                metric_validation(held.metric, inputs), held.max_drop, held.drop_type)
    items = [([t.numpy() for t in inputs.signature.flatten(*sample)], i)
             for i, sample in enumerate(held.samples)]

    def validate(compiled, data) -> tuple:
        outputs, indexes = [], []
        for arrays, i in data:
            result = compiled(arrays)
            outputs.append(unflatten_output(inputs.output, [torch.from_numpy(result[o])
                                                            for o in compiled.outputs]))
            indexes.append(i)
        # per-sample scores too: NNCF ranks the layers by them
        return (held.score(outputs, "int8", indexes),
                [held.score([out], "int8", [i]) for out, i in zip(outputs, indexes)])

    return items, validate, 1.0, "absolute"


def build_with_accuracy_control(method: Method, inputs: BuildInputs,
                                validation: tuple) -> OpenVINOModel:
    """Quantize with NNCF's accuracy-control algorithm. ``validation`` = (data,
    fn(compiled_model, data) -> float, max_drop, drop_type)."""
    return _quantize(method, inputs, validation)


def _quantize(method: Method, inputs, validation: Optional[tuple]) -> OpenVINOModel:
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    config = SPEC.quant_config(method)
    ov_model = convert(inputs)
    flats = inputs.flat_calib()
    dataset = nncf.Dataset([[t.numpy() for t in flat] for flat in flats])
    kwargs = nncf_arguments(config, ov_model, len(flats))
    if validation is not None and "advanced_parameters" in kwargs:  # its name there
        kwargs["advanced_quantization_parameters"] = kwargs.pop("advanced_parameters")
    # its progress bars and INFO lines are for NNCF's own users; Nano reports the result
    with quiet_third_party("nncf"), quiet_console():
        if validation is None:
            quantized = nncf.quantize(ov_model, dataset, **kwargs)
        else:
            data, fn, max_drop, drop_type = validation
            quantized = nncf.quantize_with_accuracy_control(
                ov_model, dataset, nncf.Dataset(data), validation_fn=fn, max_drop=max_drop,
                drop_type=nncf.DropType.ABSOLUTE if drop_type == "absolute"
                else nncf.DropType.RELATIVE,
                advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(
                    max_num_iterations=MAX_REVERTED_GROUPS), **kwargs)
    model = OpenVINOModel(quantized, method, inputs.signature, inputs.output, inputs.thread_num,
                          sample_shapes(inputs))
    model.int8_scheme = scheme()
    return model


MODEL_CLASS = OpenVINOModel
