"""Nano: make existing PyTorch code run fast on CPUs.

``import nano`` is cheap: the public names are imported on first use, so
heavy runtimes (ONNX Runtime, OpenVINO, Lightning) load only when needed.
"""

import logging
from importlib import import_module

__version__ = "0.1.0"

# Each module logs to logging.getLogger(__name__) under "nano"; silent unless the
# application configures logging (the CLIs print warnings to stderr).
logging.getLogger(__name__).addHandler(logging.NullHandler())

# public name -> module that defines it
_LAZY = {
    "InferenceOptimizer": "nano.optimizer",
    "Trainer": "nano.trainer.lightning_trainer",
    "TorchNano": "nano.trainer.torch_nano",
    "nano": "nano.trainer.torch_nano",
    "patch_cuda": "nano.cuda_patch",
    "unpatch_cuda": "nano.cuda_patch",
    "patch_torch": "nano.torch_patch",
    "unpatch_torch": "nano.torch_patch",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'nano' has no attribute {name!r}")
