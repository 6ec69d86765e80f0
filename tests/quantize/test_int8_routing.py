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
    ("openvino", None, "static", "openvino_int8"),
])
def test_each_accelerator_reaches_its_own_quantizer(accelerator, method, approach, name):
    assert int8_method(accelerator, method, approach).name == name


@pytest.mark.parametrize("accelerator", ["jit", "openvino_compile", "ipex"])
def test_an_accelerator_without_a_quantizer_is_refused(accelerator):
    with pytest.raises(NanoValueError, match="INT8"):
        int8_method(accelerator, None, "static")
