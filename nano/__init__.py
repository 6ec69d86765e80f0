"""Nano: make existing PyTorch code run fast on CPUs.

``import nano`` is cheap: the public names are imported on first use, so
heavy runtimes (ONNX Runtime, OpenVINO, Lightning) load only when needed.
"""

from importlib import import_module

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "InferenceOptimizer": "nano.optimizer",
    "Trainer": "nano.trainer.lightning_trainer",
    "TorchNano": "nano.trainer.torch_nano",
    "nano": "nano.trainer.torch_nano",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'nano' has no attribute {name!r}")
