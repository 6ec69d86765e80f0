"""The accuracy-aware INT8 search behind ``InferenceOptimizer.quantize``.

- ``api``: tries ``QuantConfig`` trials on one runtime's quantizer and keeps the
  fastest within the accuracy criterion
- ``inc``: Intel Neural Compressor's autotune as the tuner for PyTorch INT8

The quantizers themselves are backends (``nano/runtimes/backends/*_int8.py``,
``openvino_nncf.py``), so ``load()`` and the isolated search never import this layer.
It imports ``nano.search`` (the judgement and measurement it shares with optimize())
and ``nano.runtimes``; only the facade imports it.
"""

from nano.search.criterion import Criterion
from nano.runtimes.quant_config import QuantConfig
from nano.quantize.api import AccuracyCriterionError

__all__ = ["AccuracyCriterionError", "Criterion", "QuantConfig"]
