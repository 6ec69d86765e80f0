"""OpenVINO: ``openvino_fp32``, ``openvino_bf16``, ``openvino_fp16`` (INT8: ``openvino_nncf``).

Converted straight from torch with ``openvino.convert_model`` (ONNX as the
fallback). The inference precision is always pinned: OpenVINO's CPU default on
bf16-capable machines is bf16, so an unpinned "fp32" model would not be fp32. Where the
CPU has no native bf16/fp16, ``openvino_bf16``/``_fp16`` run in f32 (OpenVINO cannot
emulate them; ``trace()`` says so in its one-line warning).
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Optional, Sequence, TYPE_CHECKING

import torch

from nano.errors import NanoTypeError, NanoValueError, TraceError
from nano.launcher.capability import current
from nano.launcher.openmp_binding import unbind_main_thread
from nano.runtimes.availability import module_available
from nano.runtimes.backends.spec import BackendSpec, Flavour, DYNAMO
from nano.runtimes.control_flow import baked_decision, refusal
from nano.runtimes.error_summary import summarize_error
from nano.runtimes.methods import Method
from nano.runtimes.model import AcceleratedModel
from nano.runtimes.model_files import restore_common
from nano.runtimes.sources import is_onnx_source
from nano.runtimes.structure import unflatten_output

if TYPE_CHECKING:
    from nano.runtimes.prepare import BuildInputs

INSTALL_HINT = "pip install openvino"
SPEC = BackendSpec(accelerator="openvino", aliases=("ov",), precisions=("fp32", "bf16", "fp16"),
                   candidates=(Flavour(), Flavour("bf16"), Flavour("fp16")), converts=True,
                   options=("openvino_config",), reads_onnx=True, preload=DYNAMO)
# INT8 models leave the precision of their non-quantized ops to OpenVINO (bf16 where the CPU
# has it), as OpenVINO's own INT8 flow does; the accuracy check covers the result.
_HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": None}
_core = None


def core() -> Any:
    """One OpenVINO Core per process."""
    global _core
    if _core is None:
        import openvino as ov

        _core = ov.Core()
    return _core


def compile_config(precision: str, threads: Optional[int], user: tuple = ()) -> dict[str, str]:
    """The compile_model properties Nano uses: pinned precision, latency, the thread budget,
    then the user's ``openvino_config`` on top."""
    config = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1"}
    hint = _HINTS[precision]
    if current().emulates(precision):
        hint = "f32"  # no kernels for it on this CPU, and nothing to emulate it with
    if hint:
        config["INFERENCE_PRECISION_HINT"] = hint
    if threads:
        config["INFERENCE_NUM_THREADS"] = str(threads)
    config.update({str(k): str(v) for k, v in dict(user).items()})
    return config


def convert(inputs: BuildInputs, check: bool = True) -> Any:
    """Convert the prepared model to an ov.Model with the requested dynamic dims, checked
    against the original on fresh inputs (compiled at f32) unless ``check`` is False."""
    import openvino as ov

    from nano.runtimes.conversions import cache_path, publish
    from nano.runtimes.verify import check_conversion, tracer_warnings

    cached = cache_path(inputs, "openvino", ".xml") if check else None
    if cached and os.path.exists(cached):  # converted and checked by an earlier build
        return core().read_model(cached)
    if is_onnx_source(inputs.model):  # OpenVINO reads ONNX itself
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "model.onnx")
            with open(path, "wb") as f:
                f.write(inputs.model.onnx_bytes)
            model = ov.convert_model(path)
        warned: list = []
    else:
        with tracer_warnings() as warned:
            model = _convert_module(inputs)
    for port, name in zip(model.inputs, inputs.signature.tensor_names):
        port.get_tensor().set_names({name})
    if check:
        compiled = OpenVINOModel(model, Method("openvino", "fp32"), inputs.signature,
                                 inputs.output, inputs.thread_num)
        check_conversion(compiled, inputs, "fp32", "the OpenVINO conversion", warned)
    if cached:
        with tempfile.TemporaryDirectory() as tmp:
            ov.save_model(model, os.path.join(tmp, "model.xml"), compress_to_fp16=False)
            # the .bin first: the .xml is what a later build looks for
            publish(os.path.join(tmp, "model.bin"), cached[:-4] + ".bin")
            publish(os.path.join(tmp, "model.xml"), cached)
    return model



def _convert_module(inputs):
    import openvino as ov

    branch = baked_decision(inputs)
    if branch:  # convert_model traces the module: it would freeze the branch
        raise TraceError(refusal("the OpenVINO conversion", branch))
    sample = inputs.flat_sample()
    shapes = [ov.PartialShape([-1 if d in dyn else s for d, s in enumerate(t.shape)])
              for t, dyn in zip(sample, inputs.dynamic_dims())]
    try:
        with torch.no_grad():
            return ov.convert_model(inputs.flat_module(), example_input=tuple(sample),
                                    input=shapes)
    except Exception as direct_error:
        from nano.runtimes.backends.onnxruntime_fp32 import export_onnx

        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "model.onnx")
            try:
                export_onnx(inputs, path)
                return ov.convert_model(path)
            except Exception as onnx_error:
                raise RuntimeError(f"OpenVINO conversion failed: {summarize_error(direct_error)} "
                                   f"(via ONNX: {summarize_error(onnx_error)})") from None


def sample_shapes(inputs: BuildInputs) -> list[list[int]]:
    """The shapes of the prepared sample's flat tensors: the shapes the model will serve."""
    return [list(t.shape) for t in inputs.flat_sample()]


class OpenVINOModel(AcceleratedModel):
    """An OpenVINO compiled model behind the AcceleratedModel interface.

    A model with dynamic dims is also compiled once with its inputs fixed to
    ``static_shapes`` (the sample's): calls with exactly those shapes run the
    static copy, which OpenVINO runs ~3% faster at batch 1 (measured on
    ResNet-18 INT8); any other shape runs the dynamic model.
    """

    accelerator = "openvino"
    artifact = "model.xml"

    def __init__(self, ov_model, method, signature, output, thread_num,
                 static_shapes: Optional[list] = None):
        super().__init__(method, signature, output, thread_num)
        self.ov_model = ov_model
        self.static_shapes = static_shapes
        config = compile_config(method.precision, thread_num,
                                method.option_dict.get("openvino_config", ()))
        unbind_main_thread()  # OpenVINO sizes and places its threads from the caller's mask
        self.compiled = core().compile_model(ov_model, "CPU", config)
        self.request = self.compiled.create_infer_request()
        self._static_key, self._static_request = None, None
        if static_shapes and ov_model.is_dynamic():
            try:
                fixed = ov_model.clone()
                fixed.reshape({i: shape for i, shape in enumerate(static_shapes)})
                self._static_request = core().compile_model(fixed, "CPU",
                                                            config).create_infer_request()
                self._static_key = tuple(tuple(s) for s in static_shapes)
            except RuntimeError:  # a model OpenVINO cannot reshape: the dynamic one serves all
                pass
        self._input_types = [port.get_element_type().to_dtype() for port in self.compiled.inputs]
        self._n_outputs = len(self.compiled.outputs)

    def run(self, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        # Bind the inputs' memory as tensors (no copy in, and none of infer()'s per-call
        # argument dispatch, which cost ~0.1 ms); outputs live in the request and are
        # overwritten by the next call, so they are copied out once here.
        import openvino as ov

        arrays = [t.detach().contiguous().numpy() for t in inputs]
        request = self.request
        if self._static_key == tuple(a.shape for a in arrays):
            request = self._static_request
        for i, (array, dtype) in enumerate(zip(arrays, self._input_types)):
            if array.dtype != dtype:
                array = arrays[i] = array.astype(dtype)
            request.set_input_tensor(i, ov.Tensor(array, shared_memory=True))
        request.infer()
        return [torch.from_numpy(request.get_output_tensor(i).data.copy())
                for i in range(self._n_outputs)]

    def async_predict(self, input_data: Any, num_requests: int = 0) -> list:
        """Run every input of ``input_data`` through OpenVINO's asynchronous queue of
        ``num_requests`` infer requests (0: OpenVINO's optimal number); outputs in input
        order. ``input_data``: a list of calls (tensors, lists or tuples of inputs, dicts of
        keyword inputs) or, as in BigDL-Nano, a DataLoader (each batch one call, a target
        in it left out as training batches are matched to the inputs)."""
        import openvino as ov
        from torch.utils.data import DataLoader

        from nano.runtimes.data import ForwardParams, split_batch
        from nano.runtimes.structure import normalize_sample

        if isinstance(input_data, DataLoader):
            params = ForwardParams.of(self)
            input_data = [split_batch(b, params, "input_data")[0] for b in input_data]
        if not isinstance(input_data, (list, tuple)):
            raise NanoTypeError(f"async_predict takes a list of inputs (one per call) or a "
                                f"DataLoader, got {type(input_data).__name__}")
        if num_requests < 0:
            raise NanoValueError(f"num_requests must be >= 0, got {num_requests}")
        signature, output = self.recorded_io()
        flats = [signature.flatten(*normalize_sample(item)) for item in input_data]
        results: list = [None] * len(flats)
        queue = ov.AsyncInferQueue(self.compiled, num_requests)

        def done(request, index):
            results[index] = [torch.from_numpy(request.get_output_tensor(i).data.copy())
                              for i in range(self._n_outputs)]

        queue.set_callback(done)
        for index, flat in enumerate(flats):
            arrays = [t.detach().contiguous().numpy().astype(dtype, copy=False)
                      for t, dtype in zip(flat, self._input_types)]
            queue.start_async(arrays, userdata=index)
        queue.wait_all()
        return [self.finish(unflatten_output(output, r)) for r in results]

    def save_artifacts(self, directory: str) -> dict:
        import openvino as ov

        ov.save_model(self.ov_model, os.path.join(directory, "model.xml"), compress_to_fp16=False)
        return {"static_shapes": self.static_shapes}

    @classmethod
    def load_artifacts(cls, directory: str, meta: dict,
                       model: Optional[torch.nn.Module]) -> AcceleratedModel:
        return cls(core().read_model(os.path.join(directory, "model.xml")), *restore_common(meta),
                   static_shapes=meta["extra"].get("static_shapes"))


def unavailable_reason(method: Method) -> Optional[str]:
    return module_available("openvino", INSTALL_HINT)


def build(method: Method, inputs: BuildInputs) -> OpenVINOModel:
    return OpenVINOModel(convert(inputs), method, inputs.signature, inputs.output,
                         inputs.thread_num, sample_shapes(inputs))


MODEL_CLASS = OpenVINOModel
