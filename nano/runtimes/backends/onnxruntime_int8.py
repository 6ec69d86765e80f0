"""ONNX Runtime INT8: static QDQ (``onnxruntime_int8_qdq``), static QOperator
(``onnxruntime_int8_qlinear``) and dynamic (``onnxruntime_int8_integer``).

The fp32 export is pre-processed (shape inference + graph optimization, as ONNX
Runtime recommends) before quantization. Dynamic INT8 suits linear/transformer
models; on CNNs it was measured 2-3x slower than fp32, and optimize() keeps it
only if it wins.
"""

from __future__ import annotations

import ast
import os
import tempfile
from typing import Optional, TYPE_CHECKING

from nano.launcher.openmp_binding import unbind_main_thread
from nano.runtimes.availability import module_available
from nano.runtimes.backends.spec import BackendSpec, Flavour, QuantizerSpec, ONNX_EXPORT
from nano.runtimes.backends.onnxruntime_fp32 import INSTALL_HINT, OnnxRuntimeModel, export_onnx
from nano.runtimes.int8_overflow import overflow_fix, scheme
from nano.runtimes.methods import Method
from nano.runtimes.quant_config import QuantConfig
from nano.runtimes.sensitivity import keep_costliest

if TYPE_CHECKING:
    from nano.runtimes.prepare import BuildInputs

_COMPUTE_OPS = ["Conv", "MatMul", "Gemm"]
QUANTIZER = QuantizerSpec(variants=("qdq", "qlinear"), dynamic_variant="integer",
                          keep_fp32=("none", "first_last", "sensitive", "measured"))
SPEC = BackendSpec(
    accelerator="onnxruntime", precisions=("int8",), converts=True,
    candidates=(Flavour("int8", variant="qdq"), Flavour("int8", variant="qlinear"),
                Flavour("int8", variant="integer")),
    options=("session_options",),
    quantizer=QUANTIZER, preload=ONNX_EXPORT)


# So that a layer kept in fp32 reads its input unrounded: a QDQ pair per consumer (not one
# shared with a quantized consumer of the same tensor), and no quantized output of the layer
# before (ONNX Runtime rounds a Gemm's output to INT8 as part of the Gemm's quantization).
_KEEPING_EXTRA_OPTIONS = {"DedicatedQDQPair": True,
                          "OpTypesToExcludeOutputQuantization": _COMPUTE_OPS}


class _Reader:
    """ONNX Runtime CalibrationDataReader over Nano's flat calibration inputs."""

    def __init__(self, names, flats):
        self._items = iter([{n: t.detach().contiguous().numpy() for n, t in zip(names, flat)}
                            for flat in flats])

    def get_next(self) -> Optional[dict]:
        return next(self._items, None)


def graph_input_names(model_path: str) -> list[str]:
    """The model's real inputs (an ONNX file from elsewhere names them its own way)."""
    import onnx

    graph = onnx.load(model_path, load_external_data=False).graph
    weights = {t.name for t in graph.initializer}
    return [i.name for i in graph.input if i.name not in weights]


def first_last_compute_nodes(model_path: str) -> list[str]:
    """Names of the first and last Conv/MatMul/Gemm nodes (graph order is topological)."""
    import onnx

    nodes = [n.name for n in onnx.load(model_path, load_external_data=False).graph.node
             if n.op_type in _COMPUTE_OPS]
    return sorted({nodes[0], nodes[-1]}) if nodes else []


def unavailable_reason(method: Method) -> Optional[str]:
    reason = module_available("onnxruntime.quantization", INSTALL_HINT)
    if reason:
        return reason
    variants = [*QUANTIZER.variants, QUANTIZER.dynamic_variant]
    if method.variant not in variants:
        return f"unknown ONNX Runtime INT8 variant {method.variant!r}; valid: {variants}"
    return None


def layer_nodes(model_path: str) -> dict[str, list[str]]:
    """The Conv/MatMul/Gemm nodes of each torch layer, by the layer's module name, from the
    name scopes the dynamo exporter records (``/layer/path/MatMul`` names of the TorchScript
    exporter otherwise)."""
    import onnx

    nodes: dict[str, list[str]] = {}
    for node in onnx.load(model_path, load_external_data=False).graph.node:
        if node.op_type not in _COMPUTE_OPS:
            continue
        meta = {p.key: p.value for p in node.metadata_props}
        if "pkg.torch.onnx.name_scopes" in meta:
            # ['', 'module', 'module.encoder', ..., 'module.encoder.layer.0.query', 'linear']
            scopes = ast.literal_eval(meta["pkg.torch.onnx.name_scopes"])
            scope = scopes[-2] if len(scopes) >= 2 else ""
        else:
            scope = node.name.strip("/").rsplit("/", 1)[0].replace("/", ".")
        # FlatModule holds the user's model as "module"
        nodes.setdefault(scope.removeprefix("module.").removeprefix("module"), []
                         ).append(node.name)
    return nodes


def build(method: Method, inputs: BuildInputs) -> OnnxRuntimeModel:
    from onnxruntime.quantization import quant_pre_process

    config = SPEC.quant_config(method)
    with tempfile.TemporaryDirectory() as tmp:
        fp32, pre = (os.path.join(tmp, f) for f in ("fp32.onnx", "pre.onnx"))
        export_onnx(inputs, fp32)
        try:
            quant_pre_process(fp32, pre, skip_symbolic_shape=True)
        except Exception:  # pre-processing is an optimization; quantize the export as is
            pre = fp32
        if config.keep_fp32 == "measured":
            held = inputs.require_held_out("keep_fp32='measured'")
            nodes = layer_nodes(fp32)  # pre-processing keeps node names, not their scopes

            def keeping(layers: list[str]) -> OnnxRuntimeModel:
                kept = [n for layer in layers for n in nodes.get(layer, [])]
                if not kept:  # else it would quietly be the default INT8 again
                    raise RuntimeError(f"the ONNX export has no nodes named after the layers "
                                       f"{layers} to keep in fp32")
                return _quantize(method, inputs, pre, tmp, config, kept)

            return keep_costliest(inputs.model, inputs.calib or [], held, config.symmetric,
                                  keeping)
        exclude = first_last_compute_nodes(pre) if config.keep_fp32 != "none" else None
        return _quantize(method, inputs, pre, tmp, config, exclude)


def _quantize(method: Method, inputs: BuildInputs, pre: str, tmp: str, config: QuantConfig,
              exclude: Optional[list[str]]) -> OnnxRuntimeModel:
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quantize_dynamic, quantize_static)

    out = os.path.join(tmp, "int8.onnx")
    unbind_main_thread()  # calibration runs ONNX Runtime sessions of its own
    # 7-bit weights where the CPU has no int8 dot product: u8 x s8 pairs are added in 16 bits
    # there (dynamic INT8's MLAS kernels too), and 8-bit weights saturate
    reduce_range = overflow_fix()
    # only the compute ops: quantizing ONNX Runtime's default op types (Add, Mul, ...) as
    # well took MiniLM's cosine from 0.78 to 0.20
    op_types = _COMPUTE_OPS if config.keep_fp32 in ("sensitive", "measured") else None
    if method.variant == QUANTIZER.dynamic_variant:
        quantize_dynamic(pre, out, per_channel=True, weight_type=QuantType.QInt8,
                         reduce_range=reduce_range, nodes_to_exclude=exclude,
                         op_types_to_quantize=op_types)
    else:
        quantize_static(
            pre, out, _Reader(graph_input_names(pre), inputs.flat_calib()),
            quant_format=QuantFormat.QDQ if method.variant == "qdq" else QuantFormat.QOperator,
            per_channel=True, reduce_range=reduce_range,
            # u8 activations x s8 weights is the fast (VNNI) path on x86; s8 x s8 was
            # several times slower here, QOperator convolutions most of all.
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8, nodes_to_exclude=exclude,
            op_types_to_quantize=op_types, calibrate_method=CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": config.symmetric, **(
                _KEEPING_EXTRA_OPTIONS if config.keep_fp32 == "measured" else {})})
    with open(out, "rb") as f:
        data = f.read()
    model = OnnxRuntimeModel(data, method, inputs.signature, inputs.output, inputs.thread_num)
    model.int8_scheme = scheme()
    return model


MODEL_CLASS = OnnxRuntimeModel
