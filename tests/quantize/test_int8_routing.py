"""Which quantizer an accelerator's INT8 goes to: never a silent fallback."""

import pytest

from nano.errors import NanoValueError
from nano.quantize.api import int8_method


@pytest.mark.parametrize("accelerator, method, approach, name", [
    ("pytorch", None, "static", "compile_int8"),
    ("compile", None, "static", "compile_int8"),
    ("onnxruntime", None, "static", "onnxruntime_int8_qdq"),
    ("onnxruntime", "qlinear", "static", "onnxruntime_int8_qlinear"),
    ("onnxruntime", None, "dynamic", "onnxruntime_int8_integer"),
    ("pytorch", None, "dynamic", "compile_int8_dynamic"),
    ("openvino", None, "static", "openvino_int8"),
])
def test_each_accelerator_reaches_its_own_quantizer(accelerator, method, approach, name):
    assert int8_method(accelerator, method, approach).name == name


@pytest.mark.parametrize("accelerator, method, approach, message", [
    ("pytorch", "fx", "static", "pytorch INT8 has none"),
    ("onnxruntime", "integer", "static", "pass approach='dynamic'"),
    ("onnxruntime", "fx", "static", "must be 'qdq', 'qlinear', 'integer' or None"),
    ("openvino", None, "dynamic", "static only"),
])
def test_bigdl_method_and_approach_are_checked(accelerator, method, approach, message):
    with pytest.raises(NanoValueError, match=message):
        int8_method(accelerator, method, approach)


@pytest.mark.parametrize("accelerator", ["jit", "openvino_compile", "ipex"])
def test_an_accelerator_without_a_quantizer_is_refused(accelerator):
    with pytest.raises(NanoValueError, match="INT8"):
        int8_method(accelerator, None, "static")


def test_one_calibration_limit_and_sample_size_counts_samples():
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from nano.runtimes.calibration import CALIBRATION_BATCHES, calibration_samples
    from nano.quantize.api import _calib_batches

    loader = DataLoader(TensorDataset(torch.randn(400, 4)), batch_size=8)
    assert CALIBRATION_BATCHES == 16
    assert _calib_batches(loader, None) == CALIBRATION_BATCHES
    assert _calib_batches(loader, 200) == 25  # BigDL's sample_size counts samples
    assert _calib_batches(loader, 3) == 1
    model = torch.nn.Linear(4, 2)
    assert len(calibration_samples(model, loader)) == CALIBRATION_BATCHES
    assert len(calibration_samples(model, loader, limit=25)) == 25


def test_ipex_int8_routes_to_ipex_and_says_where_it_runs():
    import torch

    from nano import InferenceOptimizer
    from nano.runtimes.availability import MissingDependency
    from nano.runtimes.backends import ipex

    with pytest.raises(NanoValueError, match="no INT8 quantizer for accelerator 'onnxruntime' "
                                             "with use_ipex=True; INT8 runs with accelerator "
                                             "'jit', None with use_ipex=True"):
        InferenceOptimizer.quantize(torch.nn.Linear(4, 2), accelerator="onnxruntime",
                                    use_ipex=True, calib_data=torch.randn(8, 4))
    if ipex.ipex_unavailable():  # the main environment: IPEX needs torch 2.8
        with pytest.raises(MissingDependency, match="int8_ipex is unavailable: "):
            InferenceOptimizer.quantize(torch.nn.Linear(4, 2), use_ipex=True,
                                        calib_data=torch.randn(8, 4))
