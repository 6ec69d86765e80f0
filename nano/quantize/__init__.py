"""INT8 quantization, one quantizer per runtime, behind ``InferenceOptimizer.quantize``.

- ``torch_pt2e``: PyTorch PT2E + X86InductorQuantizer + torch.compile (``compile_int8``)
- ``onnxruntime``: ONNX Runtime static QDQ / QOperator and dynamic
- ``openvino``: NNCF on the OpenVINO model, with NNCF accuracy control
- ``api``: the accuracy-aware search over ``config.QuantConfig`` trials
"""

from nano.inference.criterion import Criterion
from nano.quantize.api import AccuracyCriterionError
from nano.quantize.config import QuantConfig

__all__ = ["AccuracyCriterionError", "Criterion", "QuantConfig"]
