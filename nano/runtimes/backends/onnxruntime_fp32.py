"""ONNX Runtime: ``onnxruntime_fp32`` (the INT8 variants are built by ``onnxruntime_int8``).

The model is exported with the dynamo exporter (falling back to the legacy one)
into a single ``model.onnx`` that any ONNX Runtime loads without Nano.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any, Optional, Sequence, TYPE_CHECKING

import torch

from nano.errors import TraceError
from nano.launcher.openmp_binding import unbind_main_thread
from nano.noise import quiet_console, quiet_third_party
from nano.runtimes.availability import module_available
from nano.runtimes.backends.spec import BackendSpec, Flavour, ONNX_EXPORT
from nano.runtimes.control_flow import (EXPORT_LOGGERS, baked_decision, bounded_dim, classify,
                                        refusal)
from nano.runtimes.error_summary import summarize_error
from nano.runtimes.methods import Method
from nano.runtimes.model import AcceleratedModel
from nano.runtimes.model_files import restore_common
from nano.runtimes.prepare import export_dynamic_shapes
from nano.runtimes.sources import is_onnx_source

if TYPE_CHECKING:
    from nano.runtimes.prepare import BuildInputs

INSTALL_HINT = "pip install onnxruntime onnx onnxscript"
SPEC = BackendSpec(accelerator="onnxruntime", aliases=("ort", "onnx"), precisions=("fp32",),
                   candidates=(Flavour(),), converts=True, options=("session_options",),
                   reads_onnx=True, preload=ONNX_EXPORT)


def export_onnx(inputs: BuildInputs, path: str) -> None:
    """Export the prepared model to ``path`` as one self-contained ONNX file, checked
    against the original on fresh inputs (``nano.runtimes.verify``)."""
    from nano.runtimes.conversions import cache_path, publish
    from nano.runtimes.verify import check_conversion, tracer_warnings

    cached = cache_path(inputs, "onnx_fp32", ".onnx")
    if cached and os.path.exists(cached):  # exported and checked by an earlier build
        shutil.copyfile(cached, path)
        return
    with tracer_warnings() as warned:
        _export(inputs, path)
    if not is_onnx_source(inputs.model):
        with open(path, "rb") as f:
            exported = OnnxRuntimeModel(f.read(), Method("onnxruntime"), inputs.signature,
                                        inputs.output, inputs.thread_num)
        check_conversion(exported, inputs, "fp32", "the ONNX export", warned)
    if cached:
        publish(path, cached)


def _export(inputs, path: str) -> None:
    if is_onnx_source(inputs.model):  # it already is ONNX
        with open(path, "wb") as f:
            f.write(inputs.model.onnx_bytes)
        return
    from nano.runtimes.sources import ScriptModuleHolder

    flat = inputs.flat_module()
    sample = tuple(inputs.export_sample())
    names = list(inputs.signature.tensor_names)
    dims = inputs.dynamic_dims()
    if isinstance(inputs.model, ScriptModuleHolder):
        flat = inputs.model.script  # TorchScript exports only through the TorchScript exporter
    dynamic_shapes = (export_dynamic_shapes(dims),)  # FlatModule takes *inputs
    errors = []
    # the exporter logs a warning per torchvision op it cannot register (torchvision is not
    # needed here); Nano's own error says what failed
    with torch.no_grad(), quiet_third_party(*EXPORT_LOGGERS):
        try:
            if isinstance(inputs.model, ScriptModuleHolder):
                raise RuntimeError("torch.export cannot read TorchScript")
            with quiet_console():  # a failed export prints its FX graph (~40 lines)
                program = torch.onnx.export(flat, sample, path, input_names=names, dynamo=True,
                                            dynamic_shapes=dynamic_shapes, external_data=False,
                                            verbose=False, optimize=True)
            branch = bounded_dim(program.exported_program, inputs) if program else None
            if branch:
                raise TraceError(refusal("the ONNX export", branch))
            return
        except TraceError:
            raise
        except Exception as e:  # some models only export with the TorchScript-based exporter
            errors.append(summarize_error(e))
            branch = classify(e) or (None if isinstance(inputs.model, ScriptModuleHolder)
                                     else baked_decision(inputs))
            if branch:  # the TorchScript-based exporter would freeze it
                raise TraceError(refusal("the ONNX export", branch)) from None
        try:
            axes = {n: {d: f"{n}_dim{d}" for d in ds} for n, ds in zip(names, dims) if ds}
            torch.onnx.export(flat, sample, path, input_names=names, dynamo=False,
                              dynamic_axes=axes or None)
        except Exception as e:
            errors.append(summarize_error(e))
            raise RuntimeError(f"ONNX export failed: {errors[0]} (legacy exporter: {errors[1]})")


# SessionOptions attributes a user's options are saved with (enums by name)
_SESSION_FIELDS = ("intra_op_num_threads", "inter_op_num_threads", "execution_mode",
                   "graph_optimization_level", "enable_cpu_mem_arena", "enable_mem_pattern",
                   "enable_mem_reuse", "execution_order", "use_deterministic_compute",
                   "log_severity_level")


def session_options_dict(options: Any) -> dict:
    """A user's ``onnxruntime.SessionOptions`` as plain data (saved with the model)."""
    import onnxruntime as ort

    if not isinstance(options, ort.SessionOptions):
        raise TypeError(f"onnxruntime_session_options must be an onnxruntime.SessionOptions, got "
                        f"{type(options).__name__}")
    out = {}
    for name in _SESSION_FIELDS:
        value = getattr(options, name, None)
        if value is not None:
            out[name] = value.name if hasattr(value, "name") else value
    return out


def session_options(threads: Optional[int], user: tuple = ()) -> Any:
    """ORT options for latency: one inter-op thread, the given intra-op threads, full graph
    opts; a user's ``onnxruntime_session_options`` (as ``session_options_dict``) replaces
    them, with ``threads`` still applied when given."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.inter_op_num_threads = 1
    # fatal only: an error reaches the caller as an exception (one line, see
    # AcceleratedModel.forward), not also as a red line of ORT's log on stderr
    opts.log_severity_level = 4
    for name, value in dict(user).items():
        enum = {"execution_mode": ort.ExecutionMode,
                "graph_optimization_level": ort.GraphOptimizationLevel,
                "execution_order": getattr(ort, "ExecutionOrder", None)}.get(name)
        setattr(opts, name, getattr(enum, value) if enum is not None and isinstance(value, str)
                else value)
    if threads:
        opts.intra_op_num_threads = threads
    return opts


class OnnxRuntimeModel(AcceleratedModel):
    """An ONNX Runtime InferenceSession behind the AcceleratedModel interface."""

    accelerator = "onnxruntime"
    artifact = "model.onnx"

    def __init__(self, onnx_bytes: bytes, method, signature, output, thread_num):
        super().__init__(method, signature, output, thread_num)
        import onnxruntime as ort

        self.onnx_bytes = onnx_bytes
        options = session_options(thread_num, method.option_dict.get("session_options", ()))
        unbind_main_thread()  # ORT's threads inherit the caller's mask
        self.session = ort.InferenceSession(onnx_bytes, options,
                                            providers=["CPUExecutionProvider"])
        self._input_names = [i.name for i in self.session.get_inputs()]

    @property
    def session_options(self) -> Any:
        """The ``onnxruntime.SessionOptions`` the session runs with (threads included), as
        BigDL-Nano's ONNX Runtime models exposed them."""
        return self.session.get_session_options()

    def run(self, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        feed = {name: t.detach().contiguous().numpy() for name, t in zip(self._input_names, inputs)}
        return [torch.from_numpy(o) for o in self.session.run(None, feed)]

    def save_artifacts(self, directory: str) -> dict:
        with open(os.path.join(directory, "model.onnx"), "wb") as f:
            f.write(self.onnx_bytes)
        return {}

    @classmethod
    def load_artifacts(cls, directory: str, meta: dict,
                       model: Optional[torch.nn.Module]) -> AcceleratedModel:
        with open(os.path.join(directory, "model.onnx"), "rb") as f:
            return cls(f.read(), *restore_common(meta))


def unavailable_reason(method: Method) -> Optional[str]:
    return module_available("onnxruntime", INSTALL_HINT) or module_available("onnx", INSTALL_HINT)


def build(method: Method, inputs: BuildInputs) -> OnnxRuntimeModel:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.onnx")
        export_onnx(inputs, path)
        with open(path, "rb") as f:
            data = f.read()
    return OnnxRuntimeModel(data, method, inputs.signature, inputs.output, inputs.thread_num)


MODEL_CLASS = OnnxRuntimeModel
