"""Build one generating candidate from a causal LM: the method table and its builders.

A method is ``<runtime>_<weights>``: PyTorch at fp32/bf16, torchao weight-only INT8,
OpenVINO at fp32/bf16/INT8/INT4, and ONNX Runtime at fp32/INT8/INT4 (written by
onnxruntime-genai's builder). Weight-only INT8 and INT4 need no calibration data: what makes
decode fast is reading fewer bytes of weights per token. OpenVINO and torchao keep
activations in floating point; ONNX Runtime rounds them to int8 per block of 128 for its
products, which agreed as well here and on an AVX2 CPU (``onnxruntime_export``).
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from typing import Optional

import torch

from nano.errors import NanoValueError
from nano.generation.causal_lm import check_causal_lm, eos_ids, pad_id
from nano.generation.lm_models import GeneratingModel, OnnxRuntimeLM, OpenVINOLM, TorchLM
from nano.launcher.capability import current
from nano.runtimes.availability import module_available


@dataclass(frozen=True)
class LMMethod:
    """One candidate: which runtime runs it, and the precision of its weights."""

    name: str
    runtime: str  # "pytorch", "openvino" or "onnxruntime"
    weights: str  # "fp32", "bf16", "int8", "int4"
    needs: str  # the module it imports


METHODS = {m.name: m for m in (
    LMMethod("pytorch_fp32", "pytorch", "fp32", "torch"),
    LMMethod("pytorch_bf16", "pytorch", "bf16", "torch"),
    LMMethod("torchao_int8", "pytorch", "int8", "torchao"),
    LMMethod("compile_fp32", "pytorch", "fp32", "torch"),
    LMMethod("compile_bf16", "pytorch", "bf16", "torch"),
    LMMethod("openvino_fp32", "openvino", "fp32", "openvino"),
    LMMethod("openvino_bf16", "openvino", "bf16", "openvino"),
    LMMethod("openvino_int8", "openvino", "int8", "nncf"),
    LMMethod("openvino_int4", "openvino", "int4", "nncf"),
    LMMethod("onnxruntime_fp32", "onnxruntime", "fp32", "onnxruntime_genai"),
    LMMethod("onnxruntime_int8", "onnxruntime", "int8", "onnxruntime_genai"),
    LMMethod("onnxruntime_int4", "onnxruntime", "int4", "onnxruntime_genai"),
)}

# Tried only when asked for: torch.compile with a static cache compiles for each prompt length
# and number of new tokens it meets (40 s each for a 0.43 B Llama here) for +7% decode
# tokens/s over eager (benchmarks/generation.py).
# onnxruntime_fp32 decoded at 1.23x eager fp32 there, where its INT8 and INT4 did 3.64x and 5.77x.
ON_REQUEST = ("compile_fp32", "compile_bf16", "onnxruntime_fp32")
DEFAULT_METHODS = tuple(m for m in METHODS if m not in ON_REQUEST)

# Asked for by name, refused in one line with what to use instead.
NOT_OFFERED = {
    "torchao_int4": "torchao has no packed INT4 kernel for CPUs in this version (its CPU INT4 "
                    "stores each weight in a byte, no smaller and slower than INT8): use "
                    "openvino_int4 or onnxruntime_int4",
    "pytorch_int4": "PyTorch has no INT4 weights of its own: use openvino_int4 or "
                    "onnxruntime_int4",
    "pytorch_int8": "PyTorch's weight-only INT8 is torchao_int8",
}


def lm_method(name: str) -> LMMethod:
    """The method called ``name``, or a one-line error listing the choices."""
    if name in NOT_OFFERED:
        raise NanoValueError(f"{name}: {NOT_OFFERED[name]}")
    if name not in METHODS:
        raise NanoValueError(f"unknown generation method {name!r}; choose from "
                             f"{', '.join(METHODS)}")
    return METHODS[name]


def unavailable_reason(method: LMMethod, model: Optional[torch.nn.Module] = None
                       ) -> Optional[str]:
    """Why ``method`` is not tried here (for ``model``, when given) by default, or None."""
    missing = module_available(method.needs, f"pip install {method.needs}")
    if missing:
        return missing
    if method.runtime == "onnxruntime" and model is not None:
        from nano.generation.onnxruntime_export import architecture_problem

        problem = architecture_problem(model)
        if problem:
            return problem
    cpu = current()
    if method.weights == "bf16" and not cpu.native("bf16"):
        return cpu.emulation_note("bf16")
    return None


def build_lm(model: torch.nn.Module, method: str,
             thread_num: Optional[int] = None) -> GeneratingModel:
    """The candidate ``method`` of ``model`` (the original is left as it is)."""
    check_causal_lm(model)
    spec = lm_method(method)
    missing = module_available(spec.needs, f"pip install {spec.needs}")
    if missing:
        raise NanoValueError(f"{method}: {missing}")
    if spec.weights == "bf16" and not current().native("bf16"):
        warnings.warn(f"{method}: {current().emulation_note('bf16')}", stacklevel=2)
    model = model.eval()
    if spec.runtime == "onnxruntime":
        return _build_onnxruntime(model, method, spec.weights, thread_num)
    if spec.runtime == "openvino":
        from nano.generation.openvino_export import compress_weights, export_stateful

        ov_model = compress_weights(export_stateful(model), spec.weights)
        return OpenVINOLM(method, ov_model, model.config, eos_ids(model), pad_id(model),
                          thread_num)
    if spec.weights == "fp32" and not method.startswith("compile_"):
        return TorchLM(method, model, thread_num)
    module = copy.deepcopy(model)  # compiling replaces its forward; the user's stays
    if spec.weights == "fp32":
        return TorchLM(method, module, thread_num)
    if spec.weights == "bf16":
        return TorchLM(method, module.to(torch.bfloat16), thread_num)
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    quantize_(module, Int8WeightOnlyConfig())
    return TorchLM(method, module, thread_num)


def _build_onnxruntime(model: torch.nn.Module, method: str, weights: str,
                       thread_num: Optional[int]) -> GeneratingModel:
    import tempfile

    from nano.generation.onnxruntime_export import architecture_problem, build_onnx

    problem = architecture_problem(model)
    if problem:
        raise NanoValueError(f"{method}: {problem}: use an openvino_* method")
    built = tempfile.TemporaryDirectory(prefix="nano-onnx-lm-")  # removed with the model
    try:
        build_onnx(model, weights, built.name)
        return OnnxRuntimeLM(method, built.name, model.config, eos_ids(model), pad_id(model),
                             thread_num, keep_alive=built)
    except BaseException:
        built.cleanup()
        raise
