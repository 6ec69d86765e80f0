"""What a user would write by hand: a plain ONNX Runtime session and a plain OpenVINO compile.

Used by ``bigdl-nano-bench --baselines`` and the benchmarks to show the pick
against each runtime driven directly, with the same threads.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from typing import Callable

import torch

from nano.launcher.openmp_binding import unbind_main_thread


def hand_onnxruntime(model: torch.nn.Module, args: tuple, threads: int) -> Callable[[], object]:
    """Export with torch.onnx and run one InferenceSession with ``threads`` intra-op threads."""
    import onnxruntime as ort

    from nano.runtimes.sources import OnnxSourceModule, ScriptModuleHolder

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    if isinstance(model, OnnxSourceModule):
        data = model.onnx_bytes
    else:
        with tempfile.TemporaryDirectory() as tmp, torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            path = os.path.join(tmp, "hand.onnx")
            if isinstance(model, ScriptModuleHolder):  # only the TorchScript exporter reads it
                torch.onnx.export(model.script, tuple(args), path, dynamo=False)
            else:
                torch.onnx.export(model, tuple(args), path, dynamo=True, external_data=False,
                                  verbose=False)
            with open(path, "rb") as f:
                data = f.read()
    unbind_main_thread()  # as Nano's own sessions: the fastest by hand, not a handicap
    sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    feed = {i.name: a.numpy() for i, a in zip(sess.get_inputs(), args)}
    return lambda: sess.run(None, feed)


def hand_openvino(model: torch.nn.Module, args: tuple, threads: int,
                  precision: str = "default") -> Callable[[], object]:
    """convert_model + compile_model with ``threads``; ``precision`` "default" (OpenVINO's
    choice: bf16 on CPUs that have it) or "f32"."""
    import openvino as ov

    from nano.runtimes.sources import OnnxSourceModule

    if isinstance(model, OnnxSourceModule):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "hand.onnx")
            with open(path, "wb") as f:
                f.write(model.onnx_bytes)
            ov_model = ov.convert_model(path)
    else:
        with torch.no_grad():
            ov_model = ov.convert_model(model, example_input=tuple(args))
    config = {"INFERENCE_NUM_THREADS": str(threads)}
    if precision != "default":
        config["INFERENCE_PRECISION_HINT"] = precision
    unbind_main_thread()
    compiled = ov.Core().compile_model(ov_model, "CPU", config)
    arrays = [a.numpy() for a in args]
    return lambda: compiled(arrays)
